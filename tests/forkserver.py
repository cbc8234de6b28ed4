"""One fork server per pytest worker for the tests that start processes: ``runners.train`` children
(``reliability/train_child.py``) and the ranks of a data-parallel update (``test_distributed.py``).

The server imports the zoo once, ``torch._dynamo`` included (torch imports it on the first call of an optimizer
method, about a second per interpreter), so that each process forked from it starts in milliseconds instead of
paying the imports again as a fresh interpreter would.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.context import BaseContext

import torch

from agents.common.registry import REGISTRY

# every registered agent's module, from its spec, so that an agent added to the registry is preloaded too
PRELOAD = ["torch._dynamo", "runners.train", "envs.factory",
           *sorted({spec.target.split(":")[0] for spec in REGISTRY.values()})]


def context() -> BaseContext:
    """The forkserver context; its server is started, with :data:`PRELOAD` imported, by the first process."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # before the fork server imports MuJoCo
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def spawn_ranks(fn: Callable[..., None], args: tuple, nprocs: int = 2) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)`` with processes forked from the fork server: ``fn(rank,
    *args)`` in each, an error in one raised here."""
    context()
    torch.multiprocessing.start_processes(fn, args=args, nprocs=nprocs, join=True, start_method="forkserver")
