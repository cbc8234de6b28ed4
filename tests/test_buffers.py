"""Replay storage: SB3 ReplayBuffer persistence and the EpisodeBuffer (DIAMOND segments, Delta-IRIS counts)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from agents.common import buffers
from agents.common.buffers import (
    Episode,
    EpisodeBuffer,
    ReplayBuffer,
    load_replay_buffer,
    save_replay_buffer,
)

F, T = False, True


def make_episode(ep: int, length: int, obs_dtype=np.float32, terminated: bool = True) -> Episode:
    """Episode ``ep`` of ``length`` steps whose values name it: rew = 10*ep + t + 1, act = 100*ep + t, obs = [ep, t]."""
    t = np.arange(length)
    end = np.zeros(length, bool)
    trunc = np.zeros(length, bool)
    (end if terminated else trunc)[-1] = True
    obs = np.stack([np.full(length, ep), t], axis=1).astype(obs_dtype)
    return Episode(obs=obs, act=100 * ep + t, rew=(10 * ep + t + 1).astype(np.float32), end=end, trunc=trunc)


def make_buffer(lengths: list[int], capacity_steps: int | None = None) -> EpisodeBuffer:
    buffer = EpisodeBuffer((2,), np.float32, (), np.int64, capacity_steps=capacity_steps)
    for ep, length in enumerate(lengths):
        buffer.add_episode(make_episode(ep, length))
    return buffer


# ----------------------------------------------------------------------------------------------------------------
# Segments: padding and exact contents
# ----------------------------------------------------------------------------------------------------------------
def test_segment_at_episode_start_is_left_padded_with_mask_false() -> None:
    buffer = make_buffer([3])  # rew = [1, 2, 3]
    seg = buffer.get_segments([0], [-2], seq_len=5)
    np.testing.assert_array_equal(seg.mask, [[F, F, T, T, T]])
    np.testing.assert_array_equal(seg.rew, [[0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(seg.act, [[0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(seg.obs[0, :, 1], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(seg.end, [[F, F, F, F, T]])
    np.testing.assert_array_equal(seg.trunc, np.zeros((1, 5), bool))


def test_sampled_segments_without_beyond_end_pad_only_on_the_left() -> None:
    buffer = make_buffer([3])
    # seed 3 draws: ids [0 0 0 0], t = [0 0 0 1], u = [3 2 1 0]  ->  stops = min(3, t+1+u) = [3 3 2 2], starts = stops-5
    seg = buffer.sample_segments(4, 5, np.random.default_rng(3))
    np.testing.assert_array_equal(seg.starts, [-2, -2, -3, -3])
    np.testing.assert_array_equal(seg.mask, [[F, F, T, T, T], [F, F, T, T, T], [F, F, F, T, T], [F, F, F, T, T]])
    np.testing.assert_array_equal(seg.rew, [[0, 0, 1, 2, 3], [0, 0, 1, 2, 3], [0, 0, 0, 1, 2], [0, 0, 0, 1, 2]])
    many = buffer.sample_segments(500, 5, np.random.default_rng(0))
    assert many.mask[:, -1].all()  # the last position is always inside the episode


def test_can_sample_beyond_end_pads_on_the_right_too() -> None:
    buffer = make_buffer([3])
    seg = buffer.get_segments([0], [1], seq_len=5)
    np.testing.assert_array_equal(seg.mask, [[T, T, F, F, F]])
    np.testing.assert_array_equal(seg.rew, [[2, 3, 0, 0, 0]])
    # seed 3 draws: t = [0 0 0 1], u = [3 2 1 0]  ->  starts = t - u = [-3 -2 -1 1]
    seg = buffer.sample_segments(4, 5, np.random.default_rng(3), can_sample_beyond_end=True)
    np.testing.assert_array_equal(seg.starts, [-3, -2, -1, 1])
    np.testing.assert_array_equal(seg.mask, [[F, F, F, T, T], [F, F, T, T, T], [F, T, T, T, F], [T, T, F, F, F]])
    np.testing.assert_array_equal(seg.rew, [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 0], [2, 3, 0, 0, 0]])


def test_sampled_segment_contents_follow_the_rng_draws_exactly() -> None:
    lengths = np.array([4, 2, 6])
    buffer = make_buffer(lengths.tolist())
    seg = buffer.sample_segments(5, 3, np.random.default_rng(7))

    # Independent replay of the draws: episode ids, timestep in the episode, extra length u in [0, seq_len).
    rng = np.random.default_rng(7)
    ids = rng.choice(3, size=5, replace=True, p=np.full(3, 1 / 3))
    t = rng.integers(0, lengths[ids])
    u = rng.integers(0, 3, 5)
    np.testing.assert_array_equal(ids, [1, 2, 2, 0, 0])
    np.testing.assert_array_equal(t, [0, 5, 5, 0, 1])
    np.testing.assert_array_equal(u, [2, 0, 2, 0, 1])
    # By hand: stop = min(L, t + 1 + u), start = stop - 3.
    # b0: L=2 stop=min(2,3)=2 start=-1 | b1: L=6 stop=6 start=3 | b2: stop=min(6,8)=6 start=3
    # b3: L=4 stop=1 start=-2          | b4: stop=min(4,3)=3 start=0
    np.testing.assert_array_equal(seg.episode_ids, [1, 2, 2, 0, 0])
    np.testing.assert_array_equal(seg.starts, [-1, 3, 3, -2, 0])
    np.testing.assert_array_equal(seg.rew, [[0, 11, 12], [24, 25, 26], [24, 25, 26], [0, 0, 1], [1, 2, 3]])
    np.testing.assert_array_equal(seg.mask, [[F, T, T], [T, T, T], [T, T, T], [F, F, T], [T, T, T]])
    np.testing.assert_array_equal(seg.act, [[0, 100, 101], [203, 204, 205], [203, 204, 205], [0, 0, 0], [0, 1, 2]])
    np.testing.assert_array_equal(seg.end, [[F, F, T], [F, F, T], [F, F, T], [F, F, F], [F, F, F]])
    assert seg.obs.shape == (5, 3, 2) and seg.act.dtype == np.int64 and seg.rew.dtype == np.float32


def test_sample_steps_maps_uniform_step_draws_to_episode_and_timestep() -> None:
    buffer = make_buffer([4, 2, 6], capacity_steps=None)
    flat = np.random.default_rng(5).integers(0, 12, 50)
    ids, timesteps = buffer.sample_steps(50, np.random.default_rng(5))
    # steps 0-3 are episode 0, 4-5 episode 1, 6-11 episode 2
    expected = [(0, f) if f < 4 else (1, f - 4) if f < 6 else (2, f - 6) for f in flat.tolist()]
    assert list(zip(ids.tolist(), timesteps.tolist(), strict=True)) == expected


def test_find_steps_gives_episode_and_timestep_of_matching_steps() -> None:
    buffer = make_buffer([4, 2, 6])  # rew = 10 * ep + t + 1: episode 0 holds 1..4, episode 1 11, 12, episode 2 21..26
    ids, timesteps = buffer.find_steps("rew", lambda r: (r % 2 == 0) & (r > 3))
    assert list(zip(ids.tolist(), timesteps.tolist(), strict=True)) == [(0, 3), (1, 1), (2, 1), (2, 3), (2, 5)]
    ids, timesteps = buffer.find_steps("end", lambda e: e)  # each episode's last step
    assert ids.tolist() == [0, 1, 2] and timesteps.tolist() == [3, 1, 5]
    with pytest.raises(ValueError, match="key 'reward' is not a field of this buffer; fields: obs, act, rew"):
        buffer.find_steps("reward", lambda r: r > 0)


def test_event_windows_hold_their_event_among_their_transitions() -> None:
    from agents.common.episode_sampling import draw_event_segment_starts

    buffer = make_buffer([30, 25, 40])
    rare = buffer.find_steps("rew", lambda r: r == 17)  # one step: episode 1, t = 6
    ends = buffer.find_steps("end", lambda e: e)  # t = 29, 24, 39
    none = buffer.find_steps("rew", lambda r: r < 0)
    seq_len, rng = 5, np.random.default_rng(0)
    ids, starts = draw_event_segment_starts([none, rare, ends], 400, seq_len, rng)
    seg = buffer.get_segments(ids, starts, seq_len)
    hits = (seg.rew[:, :-1] == 17) | (seg.end[:, :-1] & seg.mask[:, :-1])  # the event is a transition t <= L - 2
    assert (hits.sum(axis=1) == 1).all()
    # the two kinds that exist are drawn equally often (binomial(400, 1/2): within 5 std), the empty kind never
    n_rare = int((seg.rew[:, :-1] == 17).any(axis=1).sum())
    assert abs(n_rare - 200) < 50
    # every place among the 4 transitions occurs: position = t_event - start
    positions = np.nonzero(hits)[1]
    assert sorted(set(positions.tolist())) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no events to draw windows around"):
        draw_event_segment_starts([none], 2, seq_len, rng)


# ----------------------------------------------------------------------------------------------------------------
# Episode weights: DIAMOND recency chunks, Delta-IRIS counts
# ----------------------------------------------------------------------------------------------------------------
def test_recency_weights_give_each_quarter_its_share_for_8_episodes() -> None:
    buffer = make_buffer([2] * 8)
    # 4 chunks of 2 episodes: 0.1/2 = 0.05 for each of the first 6, 0.7/2 = 0.35 for the last 2.
    expected = [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.35, 0.35]
    np.testing.assert_allclose(buffer.probabilities([0.1, 0.1, 0.1, 0.7]), expected)
    np.testing.assert_allclose(buffer.probabilities("recency"), expected)
    seg = buffer.sample_segments(40_000, 1, np.random.default_rng(0), weights="recency")
    freq = np.bincount(seg.episode_ids, minlength=8) / 40_000
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_recency_remainder_goes_to_the_newest_chunk_and_few_episodes_fall_back_to_length() -> None:
    # DIAMOND: 10 episodes in 4 chunks of sizes [2, 2, 2, 4]; 0.7 / 4 = 0.175 for each of the newest four.
    np.testing.assert_allclose(make_buffer([1] * 10).probabilities("recency"), [0.05] * 6 + [0.175] * 4)
    # Fewer episodes than chunks: proportional to length, 2/8, 2/8, 4/8.
    np.testing.assert_allclose(make_buffer([2, 2, 4]).probabilities("recency"), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(make_buffer([2, 2, 4]).probabilities(None), [1 / 3] * 3)
    with pytest.raises(ValueError, match="summing to 1"):
        make_buffer([1] * 8).probabilities([0.5, 0.6])
    with pytest.raises(ValueError, match="unknown sample weights 'recent'"):
        make_buffer([1]).probabilities("recent")


def test_count_based_probabilities_after_known_counts() -> None:
    buffer = make_buffer([3, 3, 3])
    buffer.count_draws([0, 0, 0, 1], counter_key="tokenizer")  # counts [3, 1, 0]
    # alpha 5: (1/4)^5, (1/2)^5, 1 = 1/1024, 32/1024, 1024/1024  ->  [1, 32, 1024] / 1057
    np.testing.assert_allclose(buffer.probabilities("count", "tokenizer", 5), np.array([1, 32, 1024]) / 1057)
    # alpha 1: 1/4, 1/2, 1 = [1, 2, 4] / 7
    np.testing.assert_allclose(buffer.probabilities("count", "tokenizer", 1), np.array([1, 2, 4]) / 7)
    # another component counts separately: still uniform
    np.testing.assert_allclose(buffer.probabilities("count", "world_model", 5), [1 / 3] * 3)


def test_sampling_updates_only_its_own_counter_and_new_episodes_start_at_zero() -> None:
    buffer = make_buffer([3, 3])
    seg = buffer.sample_segments(6, 2, np.random.default_rng(1), weights="count", counter_key="tokenizer")
    np.testing.assert_array_equal(buffer.counts("tokenizer"), np.bincount(seg.episode_ids, minlength=2))
    np.testing.assert_array_equal(buffer.counts("world_model"), [0, 0])
    buffer.add_episode(make_episode(2, 3))
    assert buffer.counts("tokenizer").tolist() == [*np.bincount(seg.episode_ids, minlength=2).tolist(), 0]


def test_extra_windows_are_drawn_after_the_sampled_ones_appended_and_counted() -> None:
    buffer = make_buffer([3, 4])
    plain = buffer.sample_segments(2, 2, np.random.default_rng(5), counter_key="a")
    drawn = []

    def extra(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        drawn.append(rng.integers(0, 2**31))  # the generator continues after the two sampled windows
        return np.array([1]), np.array([2])  # episode 1, steps 2 and 3: rew 13, 14

    seg = buffer.sample_segments(2, 2, np.random.default_rng(5), counter_key="b", extra=extra)
    np.testing.assert_array_equal(seg.episode_ids, [*plain.episode_ids, 1])
    np.testing.assert_array_equal(seg.rew[:2], plain.rew)
    np.testing.assert_array_equal(seg.rew[2], [13, 14])
    rng = np.random.default_rng(5)
    buffer.sample_segments(2, 2, rng, counter_key="c")
    assert drawn == [rng.integers(0, 2**31)]
    np.testing.assert_array_equal(buffer.counts("b"), np.bincount([*plain.episode_ids, 1], minlength=2))
    only = buffer.sample_segments(0, 2, np.random.default_rng(5), counter_key="d", extra=extra)  # all extra
    np.testing.assert_array_equal(only.episode_ids, [1])
    np.testing.assert_array_equal(only.rew, [[13, 14]])
    with pytest.raises(ValueError, match=r"batch_size=0, seq_len=2; both must be >= 1 \(batch_size >= 0 with"):
        buffer.sample_segments(0, 2, np.random.default_rng(5))


# ----------------------------------------------------------------------------------------------------------------
# Storage: eviction, growth, dtypes, incremental collection
# ----------------------------------------------------------------------------------------------------------------
def test_fifo_eviction_keeps_the_newest_whole_episodes() -> None:
    buffer = make_buffer([4, 4, 4], capacity_steps=10)  # 12 > 10: the oldest goes
    assert buffer.lengths.tolist() == [4, 4] and buffer.num_evicted == 1
    assert [buffer.episode(i).rew[0] for i in range(2)] == [11, 21]  # episodes 1 and 2
    buffer.count_draws([0, 1, 1])
    buffer.add_episode(make_episode(3, 5))  # 13 > 10: episode 1 goes, 4 + 5 = 9 stay
    assert buffer.lengths.tolist() == [4, 5] and buffer.num_steps == 9
    assert buffer.counts().tolist() == [2, 0]
    buffer.add_episode(make_episode(4, 15))  # longer than the capacity alone: only it stays
    assert buffer.lengths.tolist() == [15] and buffer.episode(0).rew[0] == 41 and buffer.num_evicted == 4


def test_growth_and_compaction_preserve_every_held_episode() -> None:
    rng = np.random.default_rng(0)
    buffer = EpisodeBuffer((2,), np.float32, (), np.int64, capacity_steps=30)
    added = []
    for ep in range(60):
        added.append(make_episode(ep, int(rng.integers(1, 10))))
        buffer.add_episode(added[-1])
        held = added[len(added) - buffer.num_episodes :]
        assert buffer.num_steps == sum(len(e) for e in held) <= 30 + 9
        for i, episode in enumerate(held):
            np.testing.assert_array_equal(buffer.episode(i).rew, episode.rew)
    assert len(buffer._data["rew"]) <= 4 * (30 + 9)  # capacity stays bounded


def test_uint8_frames_stay_uint8() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    buffer = EpisodeBuffer((3, 8, 8), np.uint8, (), np.int64)
    buffer.add_episode(Episode(frames, np.arange(4), np.zeros(4), np.zeros(4, bool), np.eye(4)[-1]))
    assert buffer.episode(0).obs.dtype == np.uint8 and buffer.episode(0).trunc.dtype == np.bool_
    np.testing.assert_array_equal(buffer.episode(0).obs, frames)
    seg = buffer.sample_segments(2, 6, np.random.default_rng(0))
    assert seg.obs.dtype == np.uint8 and seg.obs.shape == (2, 6, 3, 8, 8)
    assert buffer.to_d4rl_dict()["observations"].dtype == np.uint8
    with pytest.raises(ValueError, match="'obs' has dtype float64"):
        buffer.add_episode(Episode(frames / 255.0, np.arange(4), np.zeros(4), np.zeros(4, bool), np.zeros(4, bool)))


def test_extras_are_stored_and_segmented_per_step() -> None:
    buffer = EpisodeBuffer((2,), np.float32, (2,), np.float32, extras={"qpos": ((3,), np.float64)})
    qpos = np.arange(9.0).reshape(3, 3)
    buffer.add_episode(Episode(np.zeros((3, 2)), np.ones((3, 2)), np.ones(3), np.zeros(3), np.zeros(3), {"qpos": qpos}))
    seg = buffer.get_segments([0], [-1], 3)
    np.testing.assert_array_equal(seg.extras["qpos"], [[[0, 0, 0], [0, 1, 2], [3, 4, 5]]])
    with pytest.raises(ValueError, match=r"episode extras \[\]; this buffer stores \['qpos'\]"):
        buffer.add_episode(Episode(np.zeros((3, 2)), np.ones((3, 2)), np.ones(3), np.zeros(3), np.zeros(3)))


def test_add_step_from_a_vecenv_stores_whole_episodes_with_end_and_trunc_apart() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 15})
    buffer = EpisodeBuffer(env.observation_space.shape, np.float32, (), np.int64)
    obs, in_progress = env.reset(), np.zeros(2, int)
    rng = np.random.default_rng(0)
    for _ in range(60):
        actions = rng.integers(0, 2, 2)
        next_obs, rewards, dones, infos = env.step(actions)
        for i in range(2):
            trunc = bool(infos[i].get("TimeLimit.truncated", False))
            stored = buffer.add_step(i, obs[i], actions[i], rewards[i], bool(dones[i]) and not trunc, trunc)
            in_progress[i] = 0 if stored is not None else in_progress[i] + 1
        obs = next_obs
    assert buffer.num_steps + in_progress.sum() == 120
    assert any(buffer.episode(i).trunc[-1] for i in range(buffer.num_episodes))  # 15-step cap reached
    for i in range(buffer.num_episodes):
        ep = buffer.episode(i)
        assert len(ep) <= 15 and ep.end[-1] != ep.trunc[-1] and not (ep.end[:-1] | ep.trunc[:-1]).any()
        assert ep.obs.dtype == np.float32 and ep.act.dtype == np.int64 and ep.rew.sum() == len(ep)
    env.close()


# ----------------------------------------------------------------------------------------------------------------
# Persistence
# ----------------------------------------------------------------------------------------------------------------
def test_episode_buffer_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    buffer = EpisodeBuffer((3, 4, 4), np.uint8, (), np.int64, capacity_steps=12, extras={"qpos": ((2,), np.float64)})
    rng = np.random.default_rng(0)
    for length in [5, 4, 6, 3]:
        frames = rng.integers(0, 256, (length, 3, 4, 4), dtype=np.uint8)
        extras = {"qpos": rng.normal(size=(length, 2))}
        end = np.eye(length, dtype=bool)[-1]
        buffer.add_episode(Episode(frames, rng.integers(0, 6, length), rng.normal(size=length), end, ~end, extras))
    buffer.sample_segments(8, 4, rng, weights="count", counter_key="tokenizer")
    buffer.save(tmp_path / "episodes.npz")
    loaded = EpisodeBuffer.load(tmp_path / "episodes.npz")
    assert loaded.lengths.tolist() == buffer.lengths.tolist() == [6, 3]
    assert (loaded.capacity_steps, loaded.num_evicted) == (12, 2)
    np.testing.assert_array_equal(loaded.counts("tokenizer"), buffer.counts("tokenizer"))
    for i in range(2):
        a, b = buffer.episode(i), loaded.episode(i)
        for name in ("obs", "act", "rew", "end", "trunc"):
            assert getattr(a, name).dtype == getattr(b, name).dtype
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.extras["qpos"], b.extras["qpos"])
    sa, sb = (x.sample_segments(5, 4, np.random.default_rng(9)) for x in (buffer, loaded))
    np.testing.assert_array_equal(sa.obs, sb.obs)
    loaded.add_episode(buffer.episode(0))  # still growable after load
    assert loaded.lengths.tolist() == [3, 6]


def test_final_observation_and_pending_steps_round_trip_through_save_and_load(tmp_path: Path) -> None:
    buffer = EpisodeBuffer((4, 4, 3), np.uint8, (), np.int64, capacity_steps=7)
    frame = [np.full((4, 4, 3), v, np.uint8) for v in range(12)]
    for t in range(3):  # episode 0 (evicted later): terminated, final frame 100
        buffer.add_step(0, frame[t], t, 0.0, t == 2, False, final_obs=np.full((4, 4, 3), 100, np.uint8))
    for t in range(3):  # episode 1: terminated at t = 2, final frame 101
        buffer.add_step(0, frame[3 + t], t, 1.0, t == 2, False, final_obs=np.full((4, 4, 3), 101, np.uint8))
    buffer.add_episode(Episode(np.stack(frame[6:8]), np.arange(2), np.zeros(2), np.zeros(2), np.ones(2)))  # no final
    buffer.add_step(0, frame[8], 5, 1.0, False, False)  # episodes still being collected: env 0 (1 step), env 3 (2)
    buffer.add_step(3, frame[9], 1, 0.0, False, False)
    buffer.add_step(3, frame[10], 2, -1.0, False, False)
    assert buffer.num_episodes == 2 and buffer.pending_steps == {0: 1, 3: 2}
    assert buffer.episode(0).final_obs[0, 0, 0] == 101 and buffer.episode(1).final_obs is None
    buffer.save(tmp_path / "episodes.npz")
    loaded = EpisodeBuffer.load(tmp_path / "episodes.npz")
    np.testing.assert_array_equal(loaded.episode(0).final_obs, np.full((4, 4, 3), 101, np.uint8))
    assert loaded.episode(1).final_obs is None and loaded.pending_steps == {0: 1, 3: 2}
    seg = loaded.get_segments([0, 1], [1, 0], 3)
    assert seg.has_final_obs.tolist() == [True, False]
    assert (seg.final_obs[0] == 101).all() and (seg.final_obs[1] == 0).all()
    # the pending episodes go on where they stopped
    for name, x in (("saved", buffer), ("loaded", loaded)):
        x.add_step(3, frame[11], 3, 1.0, True, False, final_obs=np.full((4, 4, 3), 7, np.uint8))
        ep = x.episode(-1)
        assert ep.obs[:, 0, 0, 0].tolist() == [9, 10, 11] and ep.act.tolist() == [1, 2, 3], name
        assert ep.rew.tolist() == [0.0, -1.0, 1.0] and ep.final_obs[0, 0, 0] == 7, name
    # a file written before final observations and pending steps existed still loads, with neither
    with np.load(tmp_path / "episodes.npz", allow_pickle=False) as f:
        old = {k: v for k, v in f.items() if not k.startswith("pending.") and "final_obs" not in k}
    np.savez(tmp_path / "old.npz", **old)
    loaded = EpisodeBuffer.load(tmp_path / "old.npz")
    assert loaded.lengths.tolist() == [3, 2] and loaded.episode(0).final_obs is None and loaded.pending_steps == {}
    bad = dict(old, final_obs=np.zeros((2, 4, 4, 3), np.float32), has_final_obs=np.ones(2, bool))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="array 'final_obs' has shape .* dtype float32; expected .* dtype uint8"):
        EpisodeBuffer.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **dict(old, has_final_obs=np.ones(2, bool)))
    with pytest.raises(ValueError, match="'final_obs' and 'has_final_obs' come together"):
        EpisodeBuffer.load(tmp_path / "bad.npz")


def test_load_refuses_an_object_array(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, obs=np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="array 'obs' is an object array"):
        EpisodeBuffer.load(path)
    with pytest.raises(ValueError, match="array 'obs' is an object array"):
        load_replay_buffer(ReplayBuffer(4, spaces.Box(-1, 1, (3,)), spaces.Discrete(2)), path)
    (tmp_path / "pickled.npz").write_bytes(pickle.dumps({"obs": np.zeros(3)}))
    with pytest.raises(ValueError, match="is not an .npz archive; pickled or unknown content is never loaded"):
        EpisodeBuffer.load(tmp_path / "pickled.npz")


def test_empty_buffer_round_trips(tmp_path: Path) -> None:
    EpisodeBuffer((2,), np.float32, (), np.int64).save(tmp_path / "empty.npz")
    loaded = EpisodeBuffer.load(tmp_path / "empty.npz")
    assert (loaded.num_episodes, loaded.num_steps, loaded.capacity_steps) == (0, 0, None)
    with pytest.raises(ValueError, match="holds no episodes yet"):
        loaded.sample_segments(1, 2, np.random.default_rng(0))


def test_load_refuses_inconsistent_or_missing_arrays(tmp_path: Path) -> None:
    make_buffer([3, 2]).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz", allow_pickle=False) as f:
        good = dict(f)

    def write(**changes: np.ndarray | None) -> Path:
        arrays = {k: v for k, v in {**good, **changes}.items() if v is not None}
        np.savez(tmp_path / "bad.npz", **arrays)
        return tmp_path / "bad.npz"

    with pytest.raises(ValueError, match="lengths sum to 6 steps but 'obs' has shape"):
        EpisodeBuffer.load(write(lengths=np.array([3, 3]), episode_starts=np.array([0, 3])))
    with pytest.raises(ValueError, match="'episode_starts' do not match"):
        EpisodeBuffer.load(write(episode_starts=np.array([0, 2])))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['trunc'\]"):
        EpisodeBuffer.load(write(trunc=None))
    with pytest.raises(ValueError, match="'rew' has shape .* dtype float64; expected shape .* dtype float32"):
        EpisodeBuffer.load(write(rew=good["rew"].astype(np.float64)))


def test_failed_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_buffer([3]).save(tmp_path / "b.npz")

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(buffers.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        make_buffer([5, 5]).save(tmp_path / "b.npz")
    monkeypatch.undo()
    assert EpisodeBuffer.load(tmp_path / "b.npz").lengths.tolist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["b.npz"]


def test_d4rl_dict_round_trip_and_split_at_terminals_and_timeouts() -> None:
    buffer = EpisodeBuffer((2,), np.float32, (), np.int64, extras={"qpos": ((1,), np.float64)})
    for ep, length in enumerate([3, 2]):
        episode = make_episode(ep, length)
        episode.extras["qpos"] = np.arange(length, dtype=np.float64)[:, None]
        buffer.add_episode(episode)
    flat = buffer.to_d4rl_dict()
    assert flat["episode_starts"].tolist() == [0, 3] and flat["terminals"].tolist() == [F, F, T, F, T]
    again = EpisodeBuffer.from_d4rl_dict(flat)
    assert again.lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(again.to_d4rl_dict()["infos/qpos"], flat["infos/qpos"])
    # Without episode_starts: cut after each terminal (step 2) or timeout (step 4); the tail 5..6 is kept.
    n = 7
    data = {
        "observations": np.zeros((n, 1), np.float32),
        "actions": np.zeros((n, 1), np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.eye(n)[2],
        "timeouts": np.eye(n)[4],
    }
    split = EpisodeBuffer.from_d4rl_dict(data)
    assert split.lengths.tolist() == [3, 2, 2]
    assert split.episode(1).trunc.tolist() == [F, T] and split.episode(2).rew.tolist() == [5, 6]


# ----------------------------------------------------------------------------------------------------------------
# SB3 ReplayBuffer
# ----------------------------------------------------------------------------------------------------------------
def fill_replay_buffer(optimize_memory_usage: bool) -> ReplayBuffer:
    obs_space, act_space = spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32)
    rb = ReplayBuffer(
        6,
        obs_space,
        act_space,
        n_envs=2,
        optimize_memory_usage=optimize_memory_usage,
        handle_timeout_termination=not optimize_memory_usage,
    )
    rng = np.random.default_rng(0)
    for i in range(4):  # 3 slots of 2 envs: wraps around to pos 1, full
        rb.add(
            rng.normal(size=(2, 3)),
            rng.normal(size=(2, 3)),
            rng.normal(size=(2, 2)),
            rng.normal(size=2),
            np.array([i == 2, False]),
            [{"TimeLimit.truncated": i == 2}, {}],
        )
    return rb


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_replay_buffer_save_load_round_trip(tmp_path: Path, optimize_memory_usage: bool) -> None:
    rb = fill_replay_buffer(optimize_memory_usage)
    save_replay_buffer(rb, tmp_path / "rb.npz")
    fresh = ReplayBuffer(
        6,
        rb.observation_space,
        rb.action_space,
        n_envs=2,
        optimize_memory_usage=optimize_memory_usage,
        handle_timeout_termination=not optimize_memory_usage,
    )
    load_replay_buffer(fresh, tmp_path / "rb.npz")
    assert (fresh.pos, fresh.full) == (rb.pos, rb.full) == (1, True)
    names = ["observations", "actions", "rewards", "dones", "timeouts"]
    names += [] if optimize_memory_usage else ["next_observations"]
    for name in names:
        np.testing.assert_array_equal(getattr(fresh, name), getattr(rb, name))
    assert rb.timeouts.sum() == (0 if optimize_memory_usage else 1)


def test_replay_buffer_load_refuses_a_shape_mismatch(tmp_path: Path) -> None:
    save_replay_buffer(fill_replay_buffer(False), tmp_path / "rb.npz")
    other = ReplayBuffer(6, spaces.Box(-1, 1, (4,), np.float32), spaces.Box(-1, 1, (2,), np.float32), n_envs=2)
    with pytest.raises(ValueError, match=r"'observations' has shape \(3, 2, 3\) .* expected shape \(3, 2, 4\)"):
        load_replay_buffer(other, tmp_path / "rb.npz")
    assert not other.observations.any()  # nothing was assigned
    memory_optimized = ReplayBuffer(
        6,
        other.observation_space,
        other.action_space,
        n_envs=2,
        optimize_memory_usage=True,
        handle_timeout_termination=False,
    )
    with pytest.raises(ValueError, match="optimize_memory_usage=True"):
        load_replay_buffer(memory_optimized, tmp_path / "rb.npz")


def test_open_episodes_are_sampled_as_they_stand_and_replaced_by_their_longer_selves(tmp_path: Path) -> None:
    """publish_pending stores the episodes still going on (as the official DIAMOND/IRIS collectors store incomplete
    episodes); the next publication or the episode's end replaces that copy, keeping its sampling counts."""
    buffer = EpisodeBuffer((2,), np.float32, (), np.int64)
    buffer.add_episode(make_episode(0, 2))  # id 0, finished
    for t in range(3):  # env 0: 3 steps of a long episode, obs [9, t]
        buffer.add_step(0, [9, t], t, 1.0, False, False)
    assert buffer.publish_pending() == [1] and buffer.lengths.tolist() == [2, 3] and buffer.open_episodes == {0: 1}
    assert buffer.pending_steps == {0: 3}  # still being collected
    buffer.count_draws([1, 1, 0], "wm")
    seg = buffer.get_segments([1], [1], 3)  # the open episode's last step is neither an end nor a truncation
    assert seg.obs[0, :2, 1].tolist() == [1, 2] and seg.mask[0].tolist() == [T, T, F] and not seg.end.any()
    for t in range(3, 5):  # two more steps; env 1 finishes a 1-step episode meanwhile (id 2, after the open copy)
        buffer.add_step(0, [9, t], t, 1.0, False, False)
    buffer.add_step(1, [7, 0], 0, 5.0, True, False)
    assert buffer.lengths.tolist() == [2, 3, 1]  # the open copy is as it was published
    assert buffer.publish_pending() == [2] and buffer.lengths.tolist() == [2, 1, 5]  # replaced: now the newest
    assert buffer.counts("wm").tolist() == [1, 0, 2] and buffer.open_episodes == {0: 2}
    np.testing.assert_array_equal(buffer.episode(1).obs, [[7, 0]])  # the steps after the removed copy moved down
    assert buffer.episode(2).obs[:, 1].tolist() == [0, 1, 2, 3, 4] and buffer.num_steps == 8
    buffer.save(tmp_path / "episodes.npz")
    loaded = EpisodeBuffer.load(tmp_path / "episodes.npz")
    assert loaded.open_episodes == {0: 2} and loaded.pending_steps == {0: 5}
    for name, x in (("saved", buffer), ("loaded", loaded)):  # its end replaces the open copy: no duplicate
        assert x.add_step(0, [9, 5], 5, 1.0, True, False) == 2, name
        assert x.lengths.tolist() == [2, 1, 6] and x.open_episodes == {} and x.counts("wm").tolist() == [1, 0, 2]
        assert x.episode(2).end.tolist() == [F] * 5 + [T] and x.publish_pending() == [], name
    # an open id that names no held episode, or one longer than its pending steps, is refused
    with np.load(tmp_path / "episodes.npz", allow_pickle=False) as f:
        arrays = dict(f.items())
    np.savez(tmp_path / "bad.npz", **dict(arrays, **{"pending.open_episode": np.array([3], np.int64)}))
    with pytest.raises(ValueError, match=r"pending open_episode \[3\] must name distinct held episodes"):
        EpisodeBuffer.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **dict(arrays, **{"pending.lengths": np.array([1], np.int64),
                                                      **{f"pending.{k}": arrays[f"pending.{k}"][:1]
                                                         for k in ("obs", "act", "rew", "end", "trunc")}}))
    with pytest.raises(ValueError, match=r"no longer than their pending steps \[1\]"):
        EpisodeBuffer.load(tmp_path / "bad.npz")
