"""Benchmark of DIAMOND on Atari 100k (issue 6, items 3, 5 and 6): ``python -m runners.bench diamond [parts=...]``.

Parts, each measured in one run on this machine and written to ``results/benchmarks/diamond.md``:

- speed: train steps of the denoiser, the reward/end model and the actor-critic, imagined frames per second and
  parameter counts at the paper's configuration, beside the authors' code
  (../shared/reference/OFFICIAL_TIMINGS.md, section 1; see :mod:`world_models.diamond.benchmark`).
- fidelity: a trained DIAMOND model (``model=``) on held-out real episodes played by its own policy (a seed its
  training never used): per-step MSE and PSNR of 1..15-step autoregressive predictions against the real frames,
  beside repeating the last real frame, and the reward/termination accuracy of its reward/end model
  (:mod:`world_models.diamond.fidelity`).
- ddpm: the paper's EDM-vs-DDPM comparison (Sec. 5.1): two denoisers of the same U-Net, one EDM and one DDPM, trained
  the same steps on the same random-policy Breakout frames, then the compounding error of their autoregressive
  rollouts on held-out episodes at 1, 3 and 10 denoising steps; plot ``results/plots/diamond_compounding.png``.
- score: returns over ``episodes`` evaluation episodes on each game of ``games=`` of a random policy, SB3 DQN trained
  on the same env steps as the DIAMOND model of that game (``dqn_seeds`` seeds) and the DIAMOND models given in
  ``model=`` (a game without one is reported as not trained).

``size=tiny`` shrinks every budget and network (tests). Trained denoisers and DQN runs are kept under ``cache``
(``runs/bench/diamond``) and reused when asked for again with the same budget.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from agents.common.checkpoint import read_meta
from agents.common.evaluation import RandomPolicy, evaluate
from agents.common.manifest import resolve_model
from agents.common.registry import load_agent
from agents.common.transformer import count_parameters
from envs.factory import make_vec_env
from runners.benchkit import describe_machine, mean_std, run_parts, train_all
from runners.cli import UsageError, parse_choice, parse_int
from runners.evaluate import load_for_eval
from world_models.diamond import DenoiserConfig, SamplerConfig, batch_from_segment, make_denoiser, make_sampler
from world_models.diamond.fidelity import (
    CompoundingError,
    collect_episodes,
    compounding_error,
    reward_end_accuracy,
    rollout_windows,
)

PARTS = ("speed", "fidelity", "ddpm", "score")
GAMES = ("breakout", "pong", "boxing")
ENV_DIR = Path(__file__).parent / "configs" / "env"
N_COND = 4  # conditioning frames of the denoiser
SHOW_STEPS = (1, 2, 3, 5, 10, 15)  # horizons shown in the tables
PLOTS = Path(__file__).resolve().parents[1] / "results" / "plots"
# SB3 DQN at a 10k-100k step budget: rl-zoo3's Atari hyperparameters (buffer 100k, lr 1e-4, batch 32, train_freq 4,
# final epsilon 0.01, exploration over the first 10%) with learning_starts and the target update scaled to the budget
DQN_OVERRIDES = ("env.preprocessing=sb3", "agent.buffer_size=100000", "agent.exploration_final_eps=0.01")


@dataclass
class Plan:
    size: str
    seed: int
    threads: int
    model: list[str]
    heldout_steps: int
    windows: int
    horizon: int
    ddpm_frames: int
    ddpm_steps: int
    ddpm_batch: int
    games: list[str]
    episodes: int
    length: int
    dqn_seeds: int
    dqn_steps: int | None
    repeats: int
    cache: Path

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"


def _load_note(start: float) -> str:
    cores = os.cpu_count() or 1
    end = os.getloadavg()[0]
    return (f"Load average at the start / end of this part: {start:.1f} / {end:.1f} on {cores} cores, this "
            f"benchmark's own threads and any training sharing the machine included.")


def _models(plan: Plan) -> dict[str, list[str]]:
    """The DIAMOND models of ``model=`` by the game they were trained on (several of one game: e.g. its seeds)."""
    out: dict[str, list[str]] = {}
    for ref in plan.model:
        env = read_meta(resolve_model(ref))["config"]["env"]["name"]
        out.setdefault(env, []).append(ref)
    return out


# ----------------------------------------------------------------------------------------------------------------
# speed
# ----------------------------------------------------------------------------------------------------------------
def part_speed(plan: Plan) -> str:
    from world_models.diamond import benchmark as bm

    return bm.speed_section(repeats=plan.repeats, threads=plan.threads,
                            log=lambda row: print(row, file=sys.stderr, flush=True), heading=False)


# ----------------------------------------------------------------------------------------------------------------
# fidelity
# ----------------------------------------------------------------------------------------------------------------
def _error_rows(errors: dict[str, CompoundingError], horizon: int) -> list[str]:
    shown = [k for k in SHOW_STEPS if k <= horizon]
    rows = ["| predictor | " + " | ".join(f"MSE / PSNR, step {k}" for k in shown) + " | steps where it beats "
            "repeat-last |", "|-|" + "-|" * (len(shown) + 1)]
    first = next(iter(errors.values()))
    for name, err in {**errors, "repeat the last real frame": None}.items():
        mse = first.mse_repeat_last if err is None else err.mse
        psnr = CompoundingError.psnr(mse)
        cells = " | ".join(f"{mse[k - 1]:.5f} / {psnr[k - 1]:.1f} dB" for k in shown)
        beats = "-" if err is None else f"{int(err.beats_repeat_last.sum())} of {horizon}"
        rows.append(f"| {name} | {cells} | {beats} |")
    return rows


def part_fidelity(plan: Plan) -> str:
    load_start = os.getloadavg()[0]
    models = _models(plan)
    if not models:
        return "Not measured: no DIAMOND model given (`model=<checkpoint dir or zoo:name>`)."
    sections = []
    for game, ref in ((game, ref) for game, refs in models.items() for ref in refs):
        model = load_agent(resolve_model(ref), device="cpu")
        meta = read_meta(resolve_model(ref))
        env_cfg = meta["config"]["env"]
        seed = 10_000 + plan.seed  # an env seed the training (seed 0..) never used
        buffer = collect_episodes(env_cfg, model, plan.heldout_steps, seed, deterministic=False)
        windows = rollout_windows(buffer, N_COND, plan.horizon, plan.windows)
        errors = {f"DIAMOND world model ({model.num_denoising_steps} Euler steps)":
                  compounding_error(model.policy.sampler, windows, N_COND, seed=plan.seed)}
        acc = reward_end_accuracy(model.policy.rew_end_model, buffer, model.rew_end_seq_length)
        n = errors[next(iter(errors))].windows
        sections.append("\n".join([
            f"### {game}: `{ref}` ({meta.get('num_timesteps', '?'):,} training env steps)", "",
            *_error_rows(errors, plan.horizon), "",
            "| reward/end model | transitions | reward-sign accuracy | non-zero rewards | their recall | "
            "terminations | end accuracy | end recall |", "|-|-|-|-|-|-|-|-|",
            f"| {ref} | {acc.transitions} | {acc.reward_accuracy:.3f} | {acc.nonzero_rewards} | "
            f"{acc.nonzero_reward_recall:.3f} | {acc.terminations} | {acc.end_accuracy:.3f} | {acc.end_recall:.3f} |",
            "",
            "| sampled, as imagination draws them | P(true sign) at the non-zero rewards | P(non-zero) at the others "
            "| P(end) at the terminations | P(end) at the others |", "|-|-|-|-|-|",
            f"| {ref} | {acc.nonzero_reward_prob:.3f} | {acc.false_reward_prob:.4f} | {acc.end_prob:.3f} | "
            f"{acc.false_end_prob:.4f} |",
            "",
            f"Held-out data: {plan.heldout_steps:,} steps of {buffer.num_episodes} episodes played by the model's "
            f"own policy (actions sampled, as the official collector) in a training env (a lost life ends the "
            f"episode, as in the world model's data), env seed {seed}; {n} windows of {N_COND} real frames + "
            f"{plan.horizon} predicted ones, evenly spaced over every window lying inside one episode.",
        ]))
    return "\n\n".join(sections) + (
        f"\n\nEach window's {plan.horizon} frames are predicted autoregressively from its {N_COND} real frames and "
        f"the real actions (a predicted frame becomes context, as in imagination). MSE: pixels in [0, 1], the mean "
        f"over the pixels of a frame then over the windows; PSNR = 10 log10(1 / MSE) of that mean. Repeat-last "
        f"predicts every step with the last real context frame. Reward/end: the argmax of the model's logits on "
        f"every real transition, in segments of the length it trains on from a fresh LSTM state (steps whose next "
        f"frame is missing, at the end of the unfinished last episode, are left out); recall = accuracy among the "
        f"transitions with a non-zero reward, resp. a termination. Sampled: imagination draws the sign and the "
        f"end from the softmax of the logits (as the official WorldModelEnv), so the mean probability of the true "
        f"sign at the real rewards is the fraction of them an imagined rollout catches on average, and the mean "
        f"probability of a reward (an end) at the other transitions the rate of false ones. One seed. "
        f"Torch threads: {plan.threads}. "
        f"{_load_note(load_start)}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# ddpm
# ----------------------------------------------------------------------------------------------------------------
def fit_denoiser(cfg: DenoiserConfig, buffer: Any, plan: Plan) -> tuple[torch.nn.Module, float, list[float]]:
    """A denoiser trained ``ddpm_steps`` steps of ``ddpm_batch`` segments drawn uniformly from ``buffer`` with the
    agent's optimizer (AdamW lr 1e-4, eps 1e-8, weight decay 1e-2, warm-up 100 steps, clip 1.0); cached."""
    key = f"{cfg.diffusion}-{plan.size}-{plan.ddpm_frames}f-{plan.ddpm_steps}x{plan.ddpm_batch}-s{plan.seed}"
    path = plan.cache / "ddpm" / f"{key}.safetensors"
    torch.manual_seed(plan.seed)
    denoiser = make_denoiser(cfg)
    if path.is_file():
        denoiser.load_state_dict(load_file(path))
        info = json.loads((path.with_suffix(".json")).read_text())
        return denoiser.eval(), info["seconds"], info["losses"]
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4, eps=1e-8, weight_decay=1e-2)
    rng = np.random.default_rng(plan.seed)
    losses, start = [], time.time()
    for step in range(1, plan.ddpm_steps + 1):
        for group in opt.param_groups:
            group["lr"] = 1e-4 * min(1.0, step / 100)
        seg = buffer.sample_segments(plan.ddpm_batch, cfg.seq_length, rng, False)
        loss, _ = denoiser.loss(batch_from_segment(seg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    seconds = time.time() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in denoiser.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "losses": losses}))
    return denoiser.eval(), seconds, losses


def part_ddpm(plan: Plan) -> str:
    load_start = os.getloadavg()[0]
    env_cfg = yaml.safe_load((ENV_DIR / "breakout.yaml").read_text())
    policy = RandomPolicy(make_vec_env(env_cfg, n_envs=1, seed=plan.seed).action_space)
    train = collect_episodes(env_cfg, policy, plan.ddpm_frames, plan.seed)
    heldout = collect_episodes(env_cfg, policy, plan.heldout_steps, 10_000 + plan.seed)
    windows = rollout_windows(heldout, N_COND, plan.horizon, plan.windows)
    num_actions = 4
    errors: dict[str, CompoundingError] = {}
    fits = []
    for diffusion in ("edm", "ddpm"):
        cfg = (DenoiserConfig.tiny if plan.tiny else DenoiserConfig.cpu)(num_actions, diffusion)
        denoiser, seconds, losses = fit_denoiser(cfg, train, plan)
        fits.append(f"{diffusion.upper()} {count_parameters(denoiser):,} parameters, loss {np.mean(losses[:20]):.4f}"
                    f" -> {np.mean(losses[-20:]):.4f} (means of the first / last 20 steps), {seconds:.0f} s")
        for steps in (1, 3, 10):
            sampler = make_sampler(denoiser, SamplerConfig(num_steps=steps))
            errors[f"{diffusion.upper()}, {steps} step{'s' if steps > 1 else ''}"] = compounding_error(
                sampler, windows, N_COND, seed=plan.seed)
    _plot_compounding(errors, plan)
    return "\n".join(_error_rows(errors, plan.horizon)) + (
        f"\n\nTraining: {plan.ddpm_frames:,} steps of a uniform random policy in Breakout (Atari 100k preprocessing, "
        f"a lost life ends the episode; env seed {plan.seed}); each denoiser ({'tiny' if plan.tiny else 'cpu'} "
        f"U-Net of the zoo, the same for both) trained {plan.ddpm_steps:,} steps of {plan.ddpm_batch} segments "
        f"drawn uniformly, AdamW lr 1e-4 (warm-up 100 steps), eps 1e-8, weight decay 1e-2, clip 1.0, seed "
        f"{plan.seed}: {'; '.join(fits)}. EDM: the paper's objective (its segments carry one autoregressive "
        f"target more, as the official config); DDPM: epsilon prediction, 1,000 training timesteps, linear betas, "
        f"sampled with the strided ancestral step of the official DDPM branch. Held-out: {plan.heldout_steps:,} "
        f"random-policy steps, env seed {10_000 + plan.seed}, {next(iter(errors.values())).windows} windows; errors "
        f"as in the fidelity part. The paper (Sec. 5.1, Fig. 3) trains far longer: at this budget both models are "
        f"undertrained, so read the ranking between 1, 3 and 10 steps, not the absolute errors. One seed. Plot: "
        f"`results/plots/diamond_compounding.png`. Torch threads: {plan.threads}. {_load_note(load_start)}\n"
    )


def _plot_compounding(errors: dict[str, CompoundingError], plan: Plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(1, plan.horizon + 1)
    for name, err in errors.items():
        ax.plot(steps, err.mse, marker="o", ms=3, ls="-" if name.startswith("EDM") else "--", label=name)
    ax.plot(steps, next(iter(errors.values())).mse_repeat_last, color="k", lw=1, label="repeat last real frame")
    ax.set(xlabel="prediction step", ylabel="MSE (pixels in [0, 1])", yscale="log",
           title=f"Compounding error, Breakout ({plan.ddpm_steps} training steps each)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = plan.cache / "diamond_compounding.png" if plan.tiny else PLOTS / "diamond_compounding.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------------------------------
def _eval(reference: str | None, env_cfg: dict[str, Any], plan: Plan, deterministic: bool) -> Any:
    overrides = {"env.max_episode_steps": str(plan.length)}
    if reference is None:
        from runners.evaluate import override_env_config

        cfg = override_env_config(env_cfg, overrides)
        env = make_vec_env(cfg, n_envs=1, seed=plan.seed + 1000, training=False)
        result = evaluate(RandomPolicy(env.action_space), env, plan.episodes, cfg)
    else:
        model, env, cfg = load_for_eval(reference, "cpu", plan.seed + 1000, overrides)
        result = evaluate(model, env, plan.episodes, cfg, deterministic=deterministic)
    env.close()
    return result


def _dqn_jobs(game: str, steps: int, plan: Plan) -> list[list[str]]:
    """The SB3 DQN runs of ``game``, cached under a name holding everything they depend on (a finished run is reused
    by a later invocation; one trained with another episode cap is not)."""
    starts, target = max(100, steps // 10), max(100, steps // 10)
    return [["agent=dqn", f"env={game}", f"seed={s}", f"total_timesteps={steps}", "eval_freq=0", f"save_freq={steps}",
             "eval_episodes=1", f"env.max_episode_steps={plan.length}",
             "progress_bar=false", f"torch_threads={plan.threads}", *DQN_OVERRIDES,
             f"agent.learning_starts={starts}", f"agent.target_update_interval={target}",
             f"run_dir={plan.cache / 'dqn' / f'{game}-{steps}-len{plan.length}-t{plan.threads}-s{s}'}"]
            for s in range(plan.dqn_seeds)]


def part_score(plan: Plan) -> str:
    load_start = os.getloadavg()[0]
    models = _models(plan)
    rows = ["| game | env steps | random | SB3 DQN | DIAMOND | DIAMOND ahead of DQN |", "|-|-|-|-|-|-|"]
    ahead = 0
    for game in plan.games:
        env_cfg = yaml.safe_load((ENV_DIR / f"{game}.yaml").read_text())
        refs = models.get(game, [])
        budgets = {int(read_meta(resolve_model(ref))["num_timesteps"]) for ref in refs}
        if len(budgets) > 1 and not plan.dqn_steps:
            raise ValueError(f"the {game} models {', '.join(refs)} were trained on different env steps "
                             f"({', '.join(map(str, sorted(budgets)))}); give one game's models of one budget, or "
                             "set dqn_steps=")
        steps = plan.dqn_steps or (budgets.pop() if budgets else None)
        random = _eval(None, env_cfg, plan, True)
        dqn_cell, dqn_mean = "not run (no DIAMOND model gives the budget; set dqn_steps=)", None
        if steps:
            jobs = _dqn_jobs(game, steps, plan)
            train_all(jobs, workers=1)
            # epsilon-greedy at its final epsilon (0.01), the usual Atari evaluation of DQN: the greedy policy of a
            # short run may never press FIRE in Breakout and sit out the whole episode
            means = [_eval(str(Path(job[-1].split("=", 1)[1]) / "final"), env_cfg, plan, False).mean for job in jobs]
            dqn_mean = float(np.mean(means))
            runs = ", ".join(f"{m:.1f}" for m in means)
            dqn_cell = f"{mean_std(means)} ({len(means)} seed{'s' * (len(means) > 1)}: {runs})"
        if refs:
            results = [_eval(ref, env_cfg, plan, deterministic=False) for ref in refs]
            if len(results) == 1:
                diamond_cell, diamond_mean = f"{results[0].mean:.1f} +- {results[0].std:.1f} (1 seed)", results[0].mean
            else:
                means = [r.mean for r in results]
                diamond_mean = float(np.mean(means))
                diamond_cell = (f"{mean_std(means)} ({len(means)} models: "
                                f"{', '.join(f'{m:.1f}' for m in means)})")
            better = dqn_mean is not None and diamond_mean > dqn_mean
            ahead += better
            verdict = "yes" if better else ("no" if dqn_mean is not None else "-")
        else:
            diamond_cell, verdict = "not trained here", "-"
        rows.append(f"| {game} | {f'{steps:,}' if steps else '-'} | {random.mean:.1f} +- {random.std:.1f} | "
                    f"{dqn_cell} | {diamond_cell} | {verdict} |")
    compared = sum(1 for g in plan.games if g in models)
    return "\n".join(rows) + (
        f"\n\nDIAMOND ahead of DQN on {ahead} of the {compared} games it was trained on here (target: at least 2 of "
        f"Breakout, Pong and Boxing at equal env steps; a game without a DIAMOND model counts as not measured). "
        f"Returns: mean +- std over {plan.episodes} evaluation episodes per model, or over the models' means "
        f"where a game has several (DQN's seeds; DIAMOND models of one game given together) (whole games: a lost "
        f"life does not "
        f"end them, at most {plan.length:,} agent steps each, env seed {plan.seed + 1000}); DIAMOND samples its "
        f"actions (the official test protocol), DQN acts epsilon-greedily at its final epsilon 0.01 "
        f"(`deterministic=false`; its greedy policy may never press FIRE), the random policy is uniform. SB3 DQN: "
        f"SB3's Atari preprocessing (84x84 grey, 4 stacked frames, reward clipping in training), rl-zoo3's Atari "
        f"hyperparameters (buffer 100k, lr 1e-4, batch 32, train_freq 4, target network, final epsilon 0.01 after "
        f"10% of the steps) with learning_starts and the target update interval at 10% of the budget, trained on "
        f"the same env steps as the DIAMOND model, seeds 0..{plan.dqn_seeds - 1}. Torch threads: {plan.threads}. "
        f"{_load_note(load_start)}\n"
    )


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def run(out_path: str, parts: str = ",".join(PARTS), size: str = "full", seed: str = "0", threads: str = "1",
        model: str = "runs/diamond/breakout-cpu-s0/final", heldout_steps: str = "3000", windows: str = "64",
        horizon: str = "15", ddpm_frames: str = "5000", ddpm_steps: str = "1500", ddpm_batch: str = "8",
        games: str = ",".join(GAMES), episodes: str = "10", length: str = "5000", dqn_seeds: str = "3",
        dqn_steps: str = "auto", repeats: str = "3", cache: str = "runs/bench/diamond") -> str:
    game_list = [g for g in games.split(",") if g]
    for g in game_list:
        if not (ENV_DIR / f"{g}.yaml").is_file():
            raise UsageError(f"games: unknown game '{g}'; Atari games with a config: "
                             f"{', '.join(sorted(p.stem for p in ENV_DIR.glob('*.yaml') if _is_atari(p)))}")
    plan = Plan(
        size=parse_choice("size", size, ("full", "tiny")), seed=parse_int("seed", seed, 0),
        threads=parse_int("threads", threads, 1), model=[m for m in model.split(",") if m and m != "none"],
        heldout_steps=parse_int("heldout_steps", heldout_steps, 20), windows=parse_int("windows", windows, 1),
        horizon=parse_int("horizon", horizon, 1), ddpm_frames=parse_int("ddpm_frames", ddpm_frames, 20),
        ddpm_steps=parse_int("ddpm_steps", ddpm_steps, 1), ddpm_batch=parse_int("ddpm_batch", ddpm_batch, 1),
        games=game_list, episodes=parse_int("episodes", episodes, 1), length=parse_int("length", length, 1),
        dqn_seeds=parse_int("dqn_seeds", dqn_seeds, 1),
        dqn_steps=None if dqn_steps == "auto" else parse_int("dqn_steps", dqn_steps, 100),
        repeats=parse_int("repeats", repeats, 1), cache=Path(cache),
    )
    torch.set_num_threads(plan.threads)
    header = [
        "# DIAMOND on Atari 100k (issue 6, items 3, 5 and 6)", "",
        f"Machine: {describe_machine()}.", "",
        "Command: `python -m runners.bench diamond` (parts: " + ", ".join(PARTS) + "; `parts=` chooses); see "
        "runners/bench_diamond.py. Every section states its own command, budget and the load of the machine while "
        "it ran.", "",
    ]
    titles = {
        "speed": "## (a) Speed beside the authors' code at the paper configuration",
        "fidelity": "## (b) World-model fidelity on held-out real episodes",
        "ddpm": "## (c) EDM against DDPM: compounding error at 1, 3 and 10 denoising steps",
        "score": "## (d) Scores beside a random policy and SB3 DQN at equal env steps",
    }
    functions = {"speed": lambda: part_speed(plan), "fidelity": lambda: part_fidelity(plan),
                 "ddpm": lambda: part_ddpm(plan), "score": lambda: part_score(plan)}
    options = {"size": size, "seed": seed, "threads": threads, "model": model, "heldout_steps": heldout_steps,
               "windows": windows, "horizon": horizon, "ddpm_frames": ddpm_frames, "ddpm_steps": ddpm_steps,
               "ddpm_batch": ddpm_batch, "games": games, "episodes": episodes, "length": length,
               "dqn_seeds": dqn_seeds, "dqn_steps": dqn_steps}
    chosen = [p for p in parts.split(",") if p]
    if unknown := sorted(set(chosen) - set(titles)):  # before anything is measured
        raise UsageError(f"unknown part '{unknown[0]}'; choose from: {', '.join(titles)}")
    text = ""
    for part in chosen:  # the report is rewritten after each part, so a long part never loses the earlier ones
        text = run_parts("diamond", out_path, part, header, titles, functions, options)
    return text


def _is_atari(path: Path) -> bool:
    return yaml.safe_load(path.read_text()).get("family") == "atari"
