"""The SB3 logger, TensorBoard format, set up so that a resumed run continues its curves at the same step.

A run killed after its last checkpoint has logged steps that the resumed run will log again. The TensorBoard
writer of a resumed run is opened with ``purge_step`` = the checkpoint's step: TensorBoard (and
:mod:`agents.common.tblog`) then drop the earlier events at or after that step, so the curve has neither a gap nor a
duplicate step.
"""

from __future__ import annotations

from pathlib import Path

from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat
from torch.utils.tensorboard import SummaryWriter


class ResumableTensorBoardFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard writer with ``purge_step`` for resumed runs."""

    def __init__(self, folder: str | Path, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        self._is_closed = False

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)
        self.writer.flush()


def configure_logger(folder: str | Path, purge_step: int | None = None, verbose: int = 0) -> Logger:
    """A logger writing TensorBoard events to ``folder`` (and a table to stdout when ``verbose``)."""
    formats: list[KVWriter] = [ResumableTensorBoardFormat(folder, purge_step)]
    if verbose:
        formats.append(HumanOutputFormat("stdout"))
    return Logger(folder=str(folder), output_formats=formats)


def log_text(logger: Logger, tag: str, text: str, step: int = 0) -> None:
    """Write a text entry (e.g. the config table) to the TensorBoard output of ``logger``."""
    for fmt in logger.output_formats:
        if isinstance(fmt, ResumableTensorBoardFormat):
            fmt.add_text(tag, text, step)
