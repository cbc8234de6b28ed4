"""Real file-system faults for the tests: a small tmpfs that can be filled up or remounted read-only.

Mounting needs the privilege to mount (root in a container that allows it); where it is missing, the test that asked
for the tmpfs is skipped with the reason, and the injected-error tests beside it still run.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(parent: Path, size: str = "256m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``parent/mnt`` for the duration of the block."""
    mount_point = parent / "mnt"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(mount_point: Path) -> Path:
    """Write zeros into ``mount_point`` until the OS says the disk is full; returns the file written."""
    filler = mount_point / "filler"
    block = bytes(1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def remount(mount_point: Path, mode: str) -> None:
    """Remount the tmpfs ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True, capture_output=True)
