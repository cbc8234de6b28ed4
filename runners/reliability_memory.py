"""Peak memory (RSS) of training runs, issue 9 item 7: ``python -m runners.bench reliability part=memory``.

Each agent trains in a fresh ``python -m runners.train`` process (``device=cpu``, one torch thread, no periodic
evaluation): the tiny preset to its end, and the first ``seconds`` of its cpu preset. The resident set size of the
process and its children (psutil) is sampled every 0.2 s. The hour-long figure extrapolates the cpu segment
linearly from the slope of the second half of its training (after setup): RSS(1 h) = RSS(end) + slope *
(3600 s - elapsed). Replay and episode buffers are bounded (``buffer_size``/``buffer_capacity``) and filled from
zero, so the linear extrapolation is an upper bound for a run whose buffer fills within the hour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
MIN_FIT_S = 30.0  # seconds of steady training needed to fit a slope (the segment must be over 60 s of training)
COMMON = ["device=cpu", "torch_threads=1", "progress_bar=false", "eval_freq=0", "eval_episodes=1"]
NEEDLE_DEMOS = "datasets/needle/demos-50ep-64px-ke0-s0.npz"
# agent -> (env, extra arguments); {hopper} is a generated Hopper dataset, {needle} the recorded demonstrations
MEMORY_RUNS: dict[str, tuple[str, list[str]]] = {
    "dqn": ("cartpole", []),
    "ppo": ("cartpole", []),
    "sac": ("pendulum", []),
    **{agent: ("inverted_pendulum_512", []) for agent in ("stochdqn", "stochddqn", "fulldqn", "fullddqn")},
    "stochq": ("frozenlake", []),
    "dt": ("hopper", ["agent.dataset={hopper}"]),
    "radt": ("hopper", ["agent.dataset={hopper}"]),
    "act": ("needle", ["demos={needle}", "env.kwargs.image_size=64", "agent.image_size=64"]),
    "diamond": ("breakout", []),
    "delta_iris": ("crafter", []),
}
# The cpu segment is there to measure training. These cpu presets collect for longer than a segment before their first
# gradient step (diamond 1,000-2,000 Atari steps, delta_iris 10,000 Crafter steps), so the segment shortens that first
# collection and leaves the rest of the preset as it is; the row is labelled "cpu, short first collection".
CPU_SEGMENT_OVERRIDES: dict[str, list[str]] = {
    "diamond": ["agent.initial_collect_steps=200", "agent.initial_collect_max_steps=400"],
    "delta_iris": ["agent.num_steps_first_epoch=1000"],
}


@dataclass
class Measurement:
    agent: str
    preset: str
    elapsed_s: float
    steps: int
    peak_mb: float
    end_mb: float
    slope_mb_per_h: float
    error: str = ""

    @property
    def hour_mb(self) -> float:
        return max(self.peak_mb, self.end_mb + self.slope_mb_per_h * max(0.0, 3600 - self.elapsed_s) / 3600)

    def cells(self) -> str:
        if self.error:
            return f"| {self.agent} | {self.preset} | {self.elapsed_s} | failed: {self.error} | | | |"
        if not np.isfinite(self.slope_mb_per_h):  # ended (or was cut) before a second half of training to fit
            return f"| {self.agent} | {self.preset} | {self.elapsed_s} | {self.steps} | {self.peak_mb:.0f} | - | - |"
        return (f"| {self.agent} | {self.preset} | {self.elapsed_s} | {self.steps} | {self.peak_mb:.0f} | "
                f"{self.slope_mb_per_h:+.0f} | {self.hour_mb:.0f} |")


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def last_step(run_dir: Path) -> int:
    from agents.common.tblog import read_scalars

    try:
        return int(max((v[-1, 0] for v in read_scalars(run_dir).values() if len(v)), default=0))
    except (OSError, ValueError, KeyError):
        return 0


def measure(agent: str, preset: str, args: list[str], seconds: float, workdir: Path) -> Measurement:
    """Train ``agent`` with ``preset`` for at most ``seconds``, sampling the RSS of the process tree."""
    env, extra = MEMORY_RUNS[agent]
    run_dir = workdir / f"{agent}-{preset}"
    argv = [f"agent={agent}", f"env={env}", f"preset={preset}", *COMMON, *args, f"run_dir={run_dir}"]
    log = workdir / f"{agent}-{preset}.log"
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "runners.train", *argv], cwd=ROOT, stdout=out, stderr=out)
    process, started, samples, training_from = psutil.Process(child.pid), time.time(), [], None
    while child.poll() is None and time.time() - started < seconds:
        try:
            samples.append((time.time() - started, tree_rss(process) / 2**20))
        except psutil.Error:
            break
        if training_from is None and (run_dir / "tb").exists():  # imports and setup done: training has begun
            training_from = samples[-1][0]
        time.sleep(0.2)
    if child.poll() is None:
        child.kill()
    code = child.wait()
    elapsed = time.time() - started
    error = "" if code in (0, -9) else (log.read_text().strip().splitlines() or ["?"])[-1][:120]
    t, rss = (np.array(x) for x in zip(*samples, strict=True)) if samples else (np.zeros(1), np.zeros(1))
    begin = training_from if training_from is not None else t[-1]
    late = t >= begin + (t[-1] - begin) / 2  # the second half of training: setup and warm-up excluded
    fitted = t[late][-1] - t[late][0] if late.any() else 0.0
    # shorter windows are dominated by allocation during warm-up (lazily touched buffers, first batches)
    slope = float(np.polyfit(t[late], rss[late], 1)[0]) * 3600 if fitted >= MIN_FIT_S else float("nan")
    return Measurement(agent, preset, round(elapsed, 1), last_step(run_dir), float(rss.max()), float(rss[-1]),
                       slope, error)


def hopper_dataset(workdir: Path) -> str:
    """A 20k-step medium Hopper dataset, generated with runners.dataset (the behaviour policy of results/zoo)."""
    path = workdir / "hopper-medium-20k.npz"
    subprocess.run([sys.executable, "-m", "runners.dataset", "env=hopper", "quality=medium", "size=20000",
                    f"out={path}", "progress=false"], cwd=ROOT, check=False, capture_output=True)
    return str(path)


def measure_all(seconds: float, agents: list[str] | None = None) -> list[Measurement]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = {"hopper": hopper_dataset(workdir), "needle": str(ROOT / NEEDLE_DEMOS)}
        for agent in agents or list(MEMORY_RUNS):
            args = [a.format(**data) for a in MEMORY_RUNS[agent][1]]
            results.append(measure(agent, "tiny", args, seconds, workdir))
            shortened = CPU_SEGMENT_OVERRIDES.get(agent, [])
            cpu = measure(agent, "cpu", args + shortened, seconds, workdir)
            if shortened:
                cpu.preset = "cpu, short first collection"
            results.append(cpu)
    return results


def render(results: list[Measurement], seconds: float) -> str:
    lines = [
        "## 7. Memory (peak RSS)",
        "",
        f"Each agent trains in a fresh `runners.train` process (device=cpu, torch_threads=1, eval_freq=0): the tiny "
        f"preset to its end (or {seconds:.0f} s), and the first {seconds:.0f} s of the cpu preset. RSS of the process "
        "and its children sampled every 0.2 s (psutil). *1 h* extrapolates the cpu segment linearly from the slope "
        "of the second half of its training (after imports and setup; '-' where that half is under 30 s: too short "
        "to fit); buffers are bounded and filled from zero, so this is an upper bound once they are full.",
        "",
        "| agent | preset | s measured | steps reached | peak RSS (MiB) | slope (MiB/h) | 1 h, extrapolated (MiB) |",
        "|-|-|-|-|-|-|-|",
    ]
    lines += [m.cells() for m in results]
    load = os.getloadavg()[0]
    lines += ["", "`steps reached`: the last step logged to TensorBoard; 0 where no training step was logged "
              "within the segment (setup, dataset loading or the initial collection took longer): such a row's slope "
              f"is of setup, not training. Load average at the end: {load:.1f} on {os.cpu_count()} cores (other jobs "
              "shared the machine, so fewer steps were reached than on an idle one; memory does not depend on it)."]
    return "\n".join(lines) + "\n"
