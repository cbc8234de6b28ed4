"""Test-session settings: one torch thread per pytest-xdist worker (the suite runs 2 workers on 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the runners started as subprocesses
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def _xdist_group(item: pytest.Item) -> str | None:
    """The tests that share an expensive fixture: those of one agent in tests/reliability (its tiny and long
    reference runs), and those of a module that builds a module- or session-scoped fixture of its own (a trained run,
    a dataset, recorded frames)."""
    module, callspec = item.nodeid.split("::")[0], getattr(item, "callspec", None)
    if "reliability" in module and callspec is not None and "agent" in callspec.params:
        return f"agent-{callspec.params['agent']}"
    for defs in item._fixtureinfo.name2fixturedefs.values():
        if any(d.scope in ("module", "session") and d.baseid == module for d in defs):
            return module
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist's ``--dist loadgroup`` (``make test``), each group of :func:`_xdist_group` runs on one worker,
    so that its fixture is built once per test session rather than once per worker.

    pytest-xdist 3.8 tells the scheduler a test's group by appending ``@<group>`` to its id, by assigning the
    ``_nodeid`` that pytest 9 no longer reads (pytest 9 keeps the id in ``_id``); under pytest 9 this hook appends it.
    """
    rename = getattr(config.option, "loadgroup", False) and not hasattr(items[0] if items else None, "_nodeid")
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            if rename:
                from _pytest.nodes import coerce_node_id

                item._id = coerce_node_id(f"{item.nodeid}@{group}")
