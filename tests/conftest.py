"""Test-session settings: one torch thread per pytest-xdist worker (the suite runs 2 workers on 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the runners started as subprocesses
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
