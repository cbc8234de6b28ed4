"""The speed half of ``python -m runners.bench diamond`` (``world_models/diamond/benchmark.py``): the networks it
times are the paper's, every timing function runs at a tiny size, and the table's ratio is official / ours."""

from __future__ import annotations

import pytest

from world_models.diamond import benchmark as bm

TINY = {"batch_size": 2, "size": "tiny", "threads": 1, "repeats": 1, "warmup": 0}


def test_the_timed_networks_have_the_official_parameter_counts_actor_critic_included() -> None:
    # the world model's counts are pinned in test_diamond_world_model.py; this pins what the benchmark builds
    assert bm.parameter_counts("paper") == {"denoiser": 4_405_955, "rew_end_model": 5_900_864,
                                            "actor_critic": 3_229_637} == bm.OFFICIAL_PARAMETERS


@pytest.mark.parametrize("fn, variants, names", [
    (bm.time_denoiser_train_step, ["eager"], ["eager"]),
    (bm.time_rew_end_train_step, ["eager"], ["eager"]),
    (bm.time_imagined_frame, ["eager", "inference_mode"], ["eager", "inference_mode"]),
    (bm.time_predictions, ["eager", "contiguous"], ["rew_end_predict/eager", "actor_critic_predict/eager",
                                                  "rew_end_predict/contiguous", "actor_critic_predict/contiguous"]),
])
def test_every_timing_function_runs_its_variants_at_a_tiny_size(fn: object, variants: list[str],
                                                                 names: list[str]) -> None:
    timings = fn(variants=variants, **TINY)["timings"]  # type: ignore[operator]
    assert list(timings) == names
    for t in timings.values():
        assert t["median_ms"] > 0 and t["cpu_ms"] > 0 and len(t["runs_ms"]) == 1


def test_the_actor_critic_step_imagines_and_updates_the_policy() -> None:
    timings = bm.time_actor_critic_train_step(horizon=2, **TINY)["timings"]
    assert timings["eager"]["median_ms"] > 0 and timings["eager"]["cpu_ms"] > 0


def test_a_row_gives_official_over_ours_and_leaves_bf16_out_of_the_verdict() -> None:
    result = {"timings": {"eager": {"median_ms": 4116.0, "runs_ms": [4116.0], "cpu_ms": 8000.0},
                          "bf16": {"median_ms": 2058.0, "runs_ms": [2058.0], "cpu_ms": 4000.0},
                          "compiled": {"median_ms": 2744.0, "runs_ms": [2744.0], "cpu_ms": 5000.0,
                                       "compile_s": 75.0}},
              "peak_rss_gb": 3.25}
    rows, ratios = bm._rows("(a) denoiser train step", "denoiser", 32, result)  # official 8,232 ms
    assert ratios == pytest.approx({"eager": 2.0, "compiled": 3.0})
    assert rows[0] == ("| (a) denoiser train step | 32 | fp32, channels-last (default) | 4,116 ms (4,116) | 8,000 ms | "
                       "3.2 GB | 8,232 ms | 2.00x |")
    assert "compile 75 s apart" in rows[2] and rows[1].endswith("| 4.00x |")


def test_bad_options_exit_with_status_2_and_what_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    assert bm._main(["repeats=three"]) == 2
    assert "bad argument 'repeats=three'; usage:" in capsys.readouterr().err
    assert bm._main(["size=huge"]) == 2
    assert "size='huge' (choose one of: paper, cpu, tiny)" in capsys.readouterr().err
