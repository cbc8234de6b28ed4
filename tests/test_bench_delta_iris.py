"""``python -m runners.bench delta_iris`` at the tiny size: every part writes its section with finite numbers, on
real Crafter frames; the speed part measures each row in its own memory-limited process."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from runners.bench_delta_iris import run
from runners.cli import UsageError
from world_models.delta_iris.benchmark import measure_in_subprocess

TINY = {"size": "tiny", "frames": "200", "tok_steps": "3", "tok_batch": "2", "wm_batch": "2", "imag_batch": "2",
        "cla_steps": "3", "cla_batch": "2", "cla_seeds": "2", "repeats": "1", "episodes": "2", "length": "20",
        "threads": "1"}


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows of ``text`` whose first cell is ``first_cell``."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if r[0] == first_cell]


def number(cell: str) -> float:
    """The first number of a cell such as ``1,234 ms (CPU 1,200 ms)``, ``0.10568`` or ``**0.00**``."""
    found = re.search(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", cell)
    assert found, f"no number in {cell!r}"
    return float(found.group().replace(",", ""))


def finite(cell: str) -> float:
    value = number(cell)
    assert math.isfinite(value), cell
    return value


def test_tiny_benchmark_writes_iris_cla_and_score_sections_with_finite_numbers(tmp_path: Path) -> None:
    out = tmp_path / "delta_iris.md"
    text = run(str(out), parts="iris,cla,score", cache=str(tmp_path / "cache"), **TINY)
    assert out.read_text() == text
    assert "## (c)" not in text  # only the parts asked for

    iris = section(text, "## (a)")
    for name in ("Δ-IRIS", "IRIS-style"):
        tokenizer, world_model = table_rows(iris, name)
        assert tokenizer[1] == ("4" if name == "Δ-IRIS" else "16")  # tokens per frame
        assert 0 < finite(tokenizer[6]) < 1 and 0 < finite(tokenizer[7]) < 1  # held-out MSE, L1 of [0, 1] pixels
        assert world_model[1] == ("6" if name == "Δ-IRIS" else "18")  # tokens per block
        assert finite(world_model[3]) > 0 and finite(world_model[4]) > 0 and finite(world_model[5]) > 0
    ratios = re.search(r"train step ([\d.]+)x faster .* imagination step ([\d.]+)x .* MSE ([\d.]+)x", iris)
    assert ratios and all(math.isfinite(float(g)) and float(g) > 0 for g in ratios.groups())

    cla = section(text, "## (b)")
    # tiny world model: 2 and 4 layers; CLA pairs every layer of 4: half the tensors and bytes
    (four_1,), (four_2,) = [r for r in table_rows(cla, "4") if r[1] == "1"], [r for r in table_rows(cla, "4")
                                                                           if r[1] == "2"]
    assert (number(four_1[2]), number(four_2[2])) == (8, 4)
    assert number(four_2[3]) * 2 == number(four_1[3])
    (loss_1,), (loss_2,) = table_rows(cla, "1")[-1:], table_rows(cla, "2")[-1:]
    assert all(finite(c) > 0 for c in loss_1[2:7] + loss_2[2:7])
    assert re.search(r"holds 0\.50x the cache .* held-out loss is [+-]\d+\.\d%", cla)
    # two initializations per factor: mean +- std in the cells, and the paired per-seed differences
    assert all(" +- " in c for c in loss_1[2:7] + loss_2[2:7])
    per_seed = re.search(r"Per seed: ([+-]\d+\.\d)%, ([+-]\d+\.\d)%;", cla)
    assert per_seed and "2 seeds (0..1: the initialization)" in cla

    score = section(text, "## (d)")
    assert number(table_rows(score, "**Crafter score (%)**")[0][1]) == pytest.approx(0.0, abs=100)
    assert finite(table_rows(score, "mean episode length")[0][1]) == 20  # truncated at length=20
    assert table_rows(score, "model")[0][2:] == ["not run (no model= given)", "not run (no ppo= given)"]
    assert 0 <= finite(table_rows(score, "collect_wood")[0][1]) <= 100

    # a second invocation measures one part again and keeps the others' sections
    again = run(str(out), parts="score", cache=str(tmp_path / "cache"), **TINY)
    assert section(again, "## (a)").strip() == iris.strip() and "## (b)" in again


@pytest.mark.slow  # eight processes of a few seconds each
def test_tiny_official_part_times_every_row_in_its_own_process(tmp_path: Path) -> None:
    text = run(str(tmp_path / "delta_iris.md"), parts="official", **TINY)
    speed = section(text, "## (c)")
    rows = [r for r in table_rows(speed, "imagination step") + table_rows(speed, "world-model train step")
            + table_rows(speed, "tokenizer train step")]
    assert len(rows) == 8  # imagination, world model: fp32, bf16; tokenizer: two batches x fp32, bf16
    nchw = table_rows(speed, "imagination step, NCHW") + table_rows(speed, "world-model train step, NCHW")
    assert [r[2] for r in nchw] == ["fp32", "fp32"]  # the layout before channels-last, beside it in the same run
    rows += nchw
    for row in rows:
        assert finite(row[3]) > 0 and finite(row[4]) > 0  # wall and CPU milliseconds
        assert 0 < finite(row[5]) < 100  # peak resident memory, GB


def test_a_measurement_over_its_memory_limit_reports_the_error_instead_of_failing() -> None:
    # an allocation refused at once; one refused inside torch (which may crash it): the paper tokenizer's fp32 step
    # at batch 32 needs ~30 GB, so 0.3 GB can never hold it (a small batch may or may not fit, depending on the
    # allocator)
    for limit, batch_size, seq_length in ((0.01, 2, 3), (0.3, 32, 21)):
        result = measure_in_subprocess("tokenizer", limit, batch_size=batch_size, seq_length=seq_length, repeats=1,
                                       warmup=0)
        assert "median_ms" not in result and re.search(r"out of memory", result["error"]), result


def test_bad_options_are_refused_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown part 'speed'; choose from: iris, cla, official, score"):
        run(str(tmp_path / "x.md"), parts="speed", **TINY)
    with pytest.raises(UsageError, match="size='huge'"):
        run(str(tmp_path / "x.md"), parts="iris", **{**TINY, "size": "huge"})
