"""World-model fidelity measurements (world_models/diamond/fidelity.py) and ``runners.bench diamond`` on tiny budgets.

The error arithmetic is pinned on hand-made frames; the benchmark parts run end to end on real Breakout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.episode_buffer import EpisodeBuffer
from world_models.diamond import WorldModelBatch
from world_models.diamond.fidelity import CompoundingError, compounding_error, reward_end_accuracy, rollout_windows

N = 2  # context frames in the hand-made windows


def windows_of(context_value: float, next_values: list[float]) -> WorldModelBatch:
    """One window: ``N`` frames of ``context_value`` then one frame per entry of ``next_values`` (pixels in [-1, 1])."""
    values = [context_value] * N + next_values
    obs = torch.stack([torch.full((3, 4, 4), v) for v in values])[None]
    act = torch.arange(len(values))[None]
    zeros = torch.zeros(1, len(values))
    return WorldModelBatch(obs, act, zeros, zeros.bool(), zeros.bool(), torch.ones(1, len(values)).bool())


class ConstantSampler:
    """Predicts a frame of one value whatever the context; records the actions it was conditioned on."""

    def __init__(self, value: float) -> None:
        self.value, self.acts = value, []

    def sample_next_obs(self, obs_cond: torch.Tensor, act_cond: torch.Tensor) -> torch.Tensor:
        self.acts.append(act_cond[0].tolist())
        return torch.full_like(obs_cond[:, -1], self.value)


def test_errors_are_in_unit_pixel_units_and_psnr_follows_by_hand() -> None:
    """Context black (-1), then white (+1), then black again. Repeat-last (black) errs by a whole unit-range pixel
    on the white step: MSE ((1 - (-1)) / 2)^2 = 1, PSNR 0 dB; on the black step 0 (PSNR capped at 100 dB). A grey
    (0) predictor errs by half a range everywhere: MSE 0.25, PSNR 10 log10(4) = 6.02 dB."""
    err = compounding_error(ConstantSampler(0.0), windows_of(-1.0, [1.0, -1.0]), N)
    np.testing.assert_allclose(err.mse, [0.25, 0.25])
    np.testing.assert_allclose(err.mse_repeat_last, [1.0, 0.0])
    np.testing.assert_allclose(CompoundingError.psnr(err.mse), [10 * math.log10(4)] * 2)
    np.testing.assert_allclose(CompoundingError.psnr(err.mse_repeat_last), [0.0, 100.0])
    assert err.beats_repeat_last.tolist() == [True, False]
    assert err.windows == 1


def test_predicted_frames_become_context_and_the_real_actions_follow() -> None:
    """Step k conditions on the actions of the last N steps before it: (0, 1), then (1, 2), then (2, 3)."""
    sampler = ConstantSampler(0.5)
    compounding_error(sampler, windows_of(0.0, [0.0, 0.0, 0.0]), N)
    assert sampler.acts == [[0, 1], [1, 2], [2, 3]]


def test_windows_lie_inside_one_episode_and_are_evenly_spread() -> None:
    """Episodes of 10 and 3 steps, windows of N + 3 = 5 frames: only the first episode holds any (starts 0..5);
    3 of them evenly spaced: starts 0, 2 (2.5 rounded half to even) and 5."""
    buffer = EpisodeBuffer((4, 4, 3), np.uint8, (), np.int64)
    for length in (10, 3):
        for t in range(length):
            buffer.add_step(0, np.full((4, 4, 3), t, np.uint8), t, 0.0, t == length - 1, False)
    batch = rollout_windows(buffer, N, 3, max_windows=3)
    first_pixel = batch.obs[:, 0, 0, 0, 0].add(1).mul(127.5).round().int().tolist()  # the start of each window
    assert first_pixel == [0, 2, 5]
    assert bool(batch.mask.all())
    with pytest.raises(ValueError, match="no episode"):
        rollout_windows(buffer, N, 20, max_windows=3)


class FixedRewEnd(torch.nn.Module):
    """Logits of a reward/end model fixed by hand: predicts reward +1 on every transition and the end on none."""

    def transitions(self, batch: WorldModelBatch) -> tuple[torch.Tensor, ...]:
        b, t = batch.act.shape[0], batch.act.shape[1] - 1
        logits_rew = torch.tensor([0.0, 0.0, 1.0]).expand(b, t, 3)
        logits_end = torch.tensor([1.0, 0.0]).expand(b, t, 2)
        return logits_rew, logits_end, batch.rew[:, :-1].sign().long() + 1, batch.end[:, :-1], batch.mask[:, :-1]


def test_reward_end_accuracy_counts_every_real_transition_once() -> None:
    """One terminated episode of 7 steps, rewards (0, 1, 0, 1, 1, 0, 0), the last step terminal (with its final
    frame), read in segments of 4 frames (3 transitions): all 7 transitions counted once. Always predicting +1
    and never the end: reward accuracy 3/7, recall on the 3 non-zero rewards 1, end accuracy 6/7, end recall 0."""
    buffer = EpisodeBuffer((4, 4, 3), np.uint8, (), np.int64)
    rewards = [0, 1, 0, 1, 1, 0, 0]
    for t, r in enumerate(rewards):
        buffer.add_step(0, np.zeros((4, 4, 3), np.uint8), 0, float(r), t == 6, False,
                        final_obs=np.zeros((4, 4, 3), np.uint8) if t == 6 else None)
    acc = reward_end_accuracy(FixedRewEnd(), buffer, seq_length=4)
    assert (acc.transitions, acc.nonzero_rewards, acc.terminations) == (7, 3, 1)
    assert acc.reward_accuracy == pytest.approx(3 / 7)
    assert acc.nonzero_reward_recall == 1.0
    assert acc.end_accuracy == pytest.approx(6 / 7)
    assert acc.end_recall == 0.0
    # sampled: softmax(0, 0, 1) gives +1 the probability e / (e + 2) and a non-zero sign (1 + e) / (e + 2);
    # softmax(1, 0) gives the end 1 / (1 + e), at the terminal step and at the 6 others alike
    e = math.e
    assert acc.nonzero_reward_prob == pytest.approx(e / (e + 2))
    assert acc.false_reward_prob == pytest.approx((1 + e) / (e + 2))
    assert acc.end_prob == pytest.approx(1 / (1 + e)) and acc.false_end_prob == pytest.approx(1 / (1 + e))


@pytest.mark.slow
def test_bench_diamond_fidelity_and_ddpm_parts_run_on_real_breakout(tmp_path: Path) -> None:
    """A tiny DIAMOND run (150 random steps, one epoch of 50, a final epoch), then the fidelity and EDM-vs-DDPM parts
    on tiny budgets: every predictor row is there, with finite errors, and the report keeps both sections."""
    from runners import train
    from runners.bench_diamond import run
    from runners.cli import run_main

    run_dir = tmp_path / "diamond"
    assert run_main(train.main, ["agent=diamond", "env=breakout", "preset=tiny", "total_timesteps=200",
                                 "progress_bar=false", "torch_threads=1", f"run_dir={run_dir}"]) == 0
    out = tmp_path / "diamond.md"
    text = run(str(out), parts="fidelity,ddpm", size="tiny", model=str(run_dir / "final"), heldout_steps="200",
               windows="3", horizon="3", ddpm_frames="200", ddpm_steps="3", ddpm_batch="2", cache=str(tmp_path / "c"))
    assert out.read_text() == text
    for row in ("DIAMOND world model (3 Euler steps)", "EDM, 1 step", "EDM, 10 steps", "DDPM, 3 steps",
                "repeat the last real frame", "reward-sign accuracy"):
        assert row in text
    mse = [float(cell.split("/")[0]) for line in text.splitlines() if line.startswith("| EDM")
           for cell in line.split("|")[2:5]]
    assert len(mse) == 9 and all(np.isfinite(mse)), mse
    assert (tmp_path / "c" / "diamond_compounding.png").is_file()
