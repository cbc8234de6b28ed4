"""``python -m runners.bench optimizers`` at the tiny size: every part writes its table (both optimizers, every
learning rate of the search, the best of each in bold), a verdict and its plot; with ``alpha=0`` AdEMAMix is AdamW,
so both optimizers must give the very same numbers, run for run; finished runs are reused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runners.bench_optimizers import SIZES, run
from runners.cli import UsageError

TITLES = {"denoiser": "## (i)", "radt": "## (ii)", "stochdqn": "## (iii)"}


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table(text: str) -> dict[tuple[str, str], list[str]]:
    """(optimizer, learning rate) -> the row's cells, bold marks removed."""
    rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| optimizer")]
    return {(r[0], r[1]): r for r in rows}


def test_tiny_benchmark_with_alpha_zero_gives_adamw_s_numbers_for_both(tmp_path: Path) -> None:
    out, plots = tmp_path / "optimizers.md", tmp_path / "plots"
    options = {"size": "tiny", "seeds": "2", "alpha": "0", "runs": str(tmp_path / "runs"), "plots": str(plots)}
    text = run(str(out), **options)
    assert out.read_text() == text
    for part, title in TITLES.items():
        body = section(text, title)
        assert f"parts={part} size=tiny seeds=2 alpha=0`" in body  # the command that reproduces it
        rows = table(body)
        lrs = [f"{lr:g}" for lr in SIZES["tiny"][part].lrs]
        assert set(rows) == {(name, lr) for name in ("AdamW", "AdEMAMix") for lr in lrs}
        for lr in lrs:  # alpha = 0: AdEMAMix's update is AdamW's to the last bit, for the same seed
            adamw, ademamix = rows[("AdamW", lr)], rows[("AdEMAMix", lr)]
            assert adamw[2] == ademamix[2] and adamw[3] == ademamix[3], (part, adamw, ademamix)
            assert "diverged" not in adamw[2] and len(adamw[3].split(", ")) == 2  # two seeds
        bold = [line for line in body.splitlines() if line.startswith("| **")]
        assert sorted(line.split("**")[1] for line in bold) == ["AdEMAMix", "AdamW"]  # one best lr each
        assert "was ahead in" in body
        png = plots / f"optimizers_{part}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every run's result is on disk and is reused: the second call trains nothing and writes the same tables
    results = sorted((tmp_path / "runs").glob("*/*.json"))
    assert len(results) == 3 * 2 * 2 * 2  # parts x optimizers x learning rates x seeds
    first = json.loads(results[0].read_text())
    assert first["curve"][0][0] == 0 and first["curve"][-1][0] == first["steps"]
    mtimes = [p.stat().st_mtime_ns for p in results]
    again = run(str(out), parts="denoiser", **options)
    assert [p.stat().st_mtime_ns for p in results] == mtimes
    strip = re.compile(r"\(\d{4}-.*? UTC, \d+ s\)")
    assert strip.sub("", section(again, TITLES["denoiser"])) == strip.sub("", section(text, TITLES["denoiser"]))


def test_ademamix_with_its_slow_ema_differs_from_adamw(tmp_path: Path) -> None:
    text = run(str(tmp_path / "o.md"), parts="denoiser", size="tiny", seeds="1", runs=str(tmp_path / "runs"),
               plots=str(tmp_path / "plots"))
    rows = table(section(text, TITLES["denoiser"]))
    lr = f"{SIZES['tiny']['denoiser'].lrs[-1]:g}"
    assert rows[("AdamW", lr)][3] != rows[("AdEMAMix", lr)][3]
    spec = json.loads(next((tmp_path / "runs").glob("*/ademamix_*_s0.json")).read_text())
    assert spec["optimizer"] == "ademamix" and spec["steps"] == SIZES["tiny"]["denoiser"].steps


@pytest.mark.parametrize(
    ("options", "message"),
    [({"size": "huge"}, "size='huge'; choose one of: default, tiny"), ({"scale": "0"}, "scale=0 must be > 0"),
     ({"parts": "denoiser,lbfgs"}, "unknown part 'lbfgs'")],
)
def test_bad_options_are_refused(options: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises((UsageError, ValueError), match=re.escape(message)):
        run(str(tmp_path / "o.md"), runs=str(tmp_path / "runs"), plots=str(tmp_path / "plots"),
            **{"size": "tiny", **options})
