"""The SB3 logger, TensorBoard format, set up so that a resumed run continues its curves at the same step.

A run killed after its last checkpoint has logged steps that the resumed run will log again. The TensorBoard
writer of a resumed run is opened with ``purge_step`` = the checkpoint's step: TensorBoard (and
:mod:`agents.common.tblog`) then drop the earlier events at or after that step, so the curve has neither a gap nor a
duplicate step.

TensorBoard writes its events from a thread of its own. When the disk refuses a write (full, read-only, over quota),
that thread dies with the OSError, which the next write from the training loop raises again, where the trainer turns
it into its one-line message; the thread's own traceback would come first on stderr, so it is kept quiet (any other
exception of the thread still reaches ``threading.excepthook``).
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.tensorboard import SummaryWriter

# errno of a write the disk refuses: full, read-only, over quota
DISK_FAULTS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _is_writer_disk_fault(args: Any) -> bool:
    """Whether a thread's uncaught exception is TensorBoard's writer thread meeting a disk that refuses writes."""
    error = args.exc_value
    return isinstance(args.thread, _AsyncWriterThread) and isinstance(error, OSError) and error.errno in DISK_FAULTS


def _quiet_writer_disk_faults() -> None:
    """Wrap ``threading.excepthook`` (once; again if something replaced it since) so that it drops the writer thread's
    disk faults and passes every other exception on."""
    previous = threading.excepthook
    if getattr(previous, "quiets_writer_disk_faults", False):
        return

    def hook(args: Any) -> None:
        if not _is_writer_disk_fault(args):
            previous(args)

    hook.quiets_writer_disk_faults = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class ResumableTensorBoardFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard writer with ``purge_step`` for resumed runs."""

    def __init__(self, folder: str | Path, purge_step: int | None = None) -> None:
        _quiet_writer_disk_faults()
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
