"""Read a run directory back: its resolved ``config.yaml`` and the scalars SB3's logger wrote to ``tb/``.

A run directory (``runs/<agent>/<env>/<date>_<seed>/``) holds the resolved config and a ``tb/`` folder of
TensorBoard event files whose global step is the number of env steps. A resumed run appends a new events file
to the same folder, written by ``SummaryWriter(purge_step=<resume step>)``; TensorBoard's ``EventAccumulator``
(``purge_orphaned_data=True``) then drops what the earlier file logged at steps >= the resume step, exactly as
the TensorBoard UI shows it. Every tag comes back as one ``[n, 2]`` array of ``(step, value)`` rows, sorted by
step, one row per step (the value logged last wins).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # tensorboard is slow to import; only the readers below need it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TB_DIR = "tb"
CONFIG_FILE = "config.yaml"


@dataclass
class Run:
    """One training run read back from disk.

    :param path: the run directory
    :param agent: ``agent.id`` of its config (e.g. ``"dqn"``)
    :param env: ``env.name`` of its config (e.g. ``"cartpole"``)
    :param seed: ``seed`` of its config (``None`` when the config has none)
    :param scalars: tag -> ``[n, 2]`` array of ``(step, value)``, sorted by step, unique steps
    """

    path: Path
    agent: str
    env: str
    seed: int | None
    scalars: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def last_step(self) -> int:
        """The last env step at which the run logged anything (0 when it logged nothing)."""
        return max((int(a[-1, 0]) for a in self.scalars.values() if len(a)), default=0)


def missing_tag_message(run_dir: str | Path, tag: str, available: Sequence[str]) -> str:
    """One line naming the run, the missing tag and the tags the run does have."""
    have = ", ".join(sorted(available)) or "(no scalars at all)"
    return f"run {run_dir} has no scalar '{tag}'; it has: {have}"


def _event_files(tb_dir: Path) -> list[Path]:
    return sorted(p for p in tb_dir.glob("*tfevents*") if p.is_file()) if tb_dir.is_dir() else []


def _accumulate(tb_dir: Path) -> EventAccumulator:
    from tensorboard.backend.event_processing import event_accumulator as ea

    size_guidance = {
        ea.SCALARS: 0,  # 0 = keep every event
        ea.TENSORS: 0,  # new-style scalars (and text) are stored as tensors
        ea.IMAGES: 1,
        ea.AUDIO: 1,
        ea.HISTOGRAMS: 1,
        ea.COMPRESSED_HISTOGRAMS: 1,
    }
    accumulator = ea.EventAccumulator(str(tb_dir), size_guidance=size_guidance, purge_orphaned_data=True)
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # a resumed run's purge is expected, not worth a warning per run
    try:
        accumulator.Reload()
    finally:
        tb_logger.setLevel(level)
    return accumulator


def _to_array(events: Sequence[tuple[int, float]]) -> np.ndarray:
    """``(step, value)`` pairs in logging order -> sorted ``[n, 2]`` array with the last value of each step."""
    by_step: dict[int, float] = {}
    for step, value in events:
        by_step[int(step)] = float(value)
    steps = sorted(by_step)
    return np.array([[s, by_step[s]] for s in steps], dtype=np.float64).reshape(len(steps), 2)


def _all_scalars(accumulator: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.util import tensor_util

    tags = accumulator.Tags()
    found = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags.get("scalars", [])}
    for tag in tags.get("tensors", []):  # add_scalar(..., new_style=True) writes a 0-d tensor of the scalars plugin
        if tag in found or accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        found[tag] = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in accumulator.Tensors(tag)]
    return {tag: events for tag, events in found.items() if events}  # a tag whose every event was purged is gone


def read_scalars(run_dir: str | Path, tags: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read the scalars of a run's ``tb/`` folder (resumed runs included, orphaned steps purged).

    :param run_dir: the run directory (the one holding ``tb/``)
    :param tags: the tags to return; ``None`` returns every scalar tag
    :return: tag -> ``[n, 2]`` float64 array of ``(step, value)``, strictly increasing steps
    :raises ValueError: when ``tb/`` holds no events file, or a requested tag was never logged
        (the message lists the tags the run has)
    """
    run_dir = Path(run_dir)
    tb_dir = run_dir / TB_DIR
    if not _event_files(tb_dir):
        raise ValueError(f"no TensorBoard events under {tb_dir}; is it a run directory?")
    found = _all_scalars(_accumulate(tb_dir))
    if tags is None:
        return {tag: _to_array(events) for tag, events in sorted(found.items())}
    for tag in tags:
        if tag not in found:
            raise ValueError(missing_tag_message(run_dir, tag, list(found)))
    return {tag: _to_array(found[tag]) for tag in tags}


def read_config(run_dir: str | Path) -> DictConfig:
    """Load a run's resolved ``config.yaml`` (plain YAML through OmegaConf; nothing is unpickled)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"no {CONFIG_FILE} in {run_dir}; is it a run directory?")
    config = OmegaConf.load(path)
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path} is not a mapping of config keys")
    return config


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory: who ran (``agent.id``), where (``env.name``), with which seed, and all its scalars.

    :raises ValueError: when the directory has no ``config.yaml``, the config lacks ``agent.id`` or ``env.name``,
        or ``tb/`` holds no events
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    agent = OmegaConf.select(config, "agent.id", default=None)
    env = OmegaConf.select(config, "env.name", default=None)
    for key, value in (("agent.id", agent), ("env.name", env)):
        if value is None:
            raise ValueError(f"{run_dir / CONFIG_FILE} has no {key}; is it a config written by runners.train?")
    seed = OmegaConf.select(config, "seed", default=None)
    return Run(
        path=run_dir,
        agent=str(agent),
        env=str(env),
        seed=None if seed is None else int(seed),
        scalars=read_scalars(run_dir),
    )
