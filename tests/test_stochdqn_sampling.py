"""The random subset R and candidate set C = R ∪ M of stochastic maximization (Fourati et al., ICML 2024)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.stochdqn.sampling import SubsetSampler, next_u64, sample_distinct, subset_size

# chi-square critical value at p = 0.999 with 9 degrees of freedom, from a table (scipy: chi2.ppf(0.999, 9)).
CHI2_999_DF9 = 27.877


def chi_square(counts: np.ndarray, expected: float) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize(
    ("n_actions", "size"),
    [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (512, 9), (513, 10), (1000, 10), (4096, 12), (2**20, 20), (2**62, 62)],
)
def test_subset_size_is_ceil_log2_n_exact_at_powers_of_two(n_actions: int, size: int) -> None:
    assert subset_size(n_actions) == size


def test_subset_size_refuses_an_empty_action_space() -> None:
    with pytest.raises(ValueError, match="n_actions must be in"):
        subset_size(0)


@pytest.mark.parametrize("n_actions", [2, 3, 512, 1000, 4096, 2**20, 2**40])
def test_subset_has_ceil_log2_n_distinct_valid_actions(n_actions: int) -> None:
    sampler = SubsetSampler(n_actions, rng=np.random.default_rng(0))
    rows = sampler.sample(64)
    assert rows.dtype == np.int64
    assert rows.shape == (64, subset_size(n_actions))
    assert rows.min() >= 0 and rows.max() < n_actions
    assert all(len(set(row.tolist())) == rows.shape[1] for row in rows)


def test_sampling_2_pow_62_actions_allocates_nothing_of_size_n() -> None:
    # An array of 2**62 int64 would be 32 EiB: this only passes if memory is O(k) per row.
    rows = sample_distinct(2**62, 62, 4, np.random.default_rng(1))
    assert rows.shape == (4, 62)
    assert rows.min() >= 0 and rows.max() < 2**62
    assert all(len(set(row.tolist())) == 62 for row in rows)
    assert sample_distinct(2**63 - 1, 63, 1, 1).max() < 2**63 - 1


def test_taking_all_n_actions_returns_each_action_once() -> None:
    rows = sample_distinct(5, 5, 3, 0)
    assert [sorted(row) for row in rows.tolist()] == [[0, 1, 2, 3, 4]] * 3


def test_each_action_is_in_the_subset_with_probability_k_over_n() -> None:
    # N=10, k=3, 20000 rows: each action expected 20000 * 3/10 = 6000 times. Marginal counts of draws without
    # replacement vary less than a multinomial's, so the df=9 critical value is conservative.
    rows = sample_distinct(10, 3, 20_000, np.random.default_rng(2))
    counts = np.bincount(rows.ravel(), minlength=10)
    assert counts.sum() == 60_000
    assert chi_square(counts, 6000.0) < CHI2_999_DF9


def test_each_of_the_ten_pairs_of_five_actions_is_equally_likely() -> None:
    # N=5, k=2: C(5, 2) = 10 subsets, each expected 20000 / 10 = 2000 times; df = 10 - 1 = 9.
    rows = np.sort(sample_distinct(5, 2, 20_000, np.random.default_rng(3)), axis=1)
    pairs = list(itertools.combinations(range(5), 2))
    counts = np.array([np.sum((rows[:, 0] == a) & (rows[:, 1] == b)) for a, b in pairs])
    assert counts.sum() == 20_000
    assert chi_square(counts, 2000.0) < CHI2_999_DF9


def test_k_larger_than_n_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"k=4 distinct indices from n=3"):
        sample_distinct(3, 4, 1, 0)
    with pytest.raises(ValueError, match=r"subset_size must be in \[1, n_actions=3\], got 4"):
        SubsetSampler(3, subset_size=4, rng=np.random.default_rng(0))


def test_xoshiro256starstar_matches_the_reference_outputs_from_state_1_2_3_4() -> None:
    # By hand: s1 = 2 -> rotl(2 * 5, 7) * 9 = 1280 * 9 = 11520; the step leaves s1 = 2 ^ (3 ^ 1) = 0 -> 0;
    # then s1 = 262149 -> rotl(1310745, 7) * 9 = 167775360 * 9 = 1509978240.
    state = np.array([1, 2, 3, 4], dtype=np.uint64)
    assert [int(next_u64(state)) for _ in range(3)] == [11520, 0, 1509978240]
    assert state.tolist() != [1, 2, 3, 4]


def test_same_generator_seed_gives_identical_subsets_and_different_seeds_differ() -> None:
    first = SubsetSampler(2**20, rng=np.random.default_rng(7)).sample(8)
    again = SubsetSampler(2**20, rng=np.random.default_rng(7)).sample(8)
    other = SubsetSampler(2**20, rng=np.random.default_rng(8)).sample(8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_seeding_advances_the_agents_generator() -> None:
    rng = np.random.default_rng(7)
    a = SubsetSampler(4096, rng=rng).sample(4)
    b = SubsetSampler(4096, rng=rng).sample(4)
    assert not np.array_equal(a, b)


def test_each_sample_call_advances_the_state_and_draws_a_fresh_subset() -> None:
    sampler = SubsetSampler(4096, rng=np.random.default_rng(0))
    before = sampler.get_state()
    first = sampler.sample(4)
    after = sampler.get_state()
    assert after != before
    assert not np.array_equal(first, sampler.sample(4))


def test_a_state_array_passed_in_is_advanced_in_place() -> None:
    state = np.array([1, 2, 3, 4], dtype=np.uint64)
    first = sample_distinct(1000, 10, 2, state)
    assert state.tolist() != [1, 2, 3, 4]
    assert not np.array_equal(first, sample_distinct(1000, 10, 2, state))


def test_restored_state_replays_the_same_subsets() -> None:
    sampler = SubsetSampler(2**20, rng=np.random.default_rng(0))
    saved = sampler.get_state()
    assert all(isinstance(w, int) and 0 <= w < 2**64 for w in saved) and len(saved) == 4
    first = sampler.sample(5)
    sampler.set_state(saved)
    np.testing.assert_array_equal(sampler.sample(5), first)
    with pytest.raises(ValueError, match="not be all zeros"):
        sampler.set_state([0, 0, 0, 0])


def assert_candidates_are_r_union_m(cands: np.ndarray, mask: np.ndarray, subsets: np.ndarray, memory: list) -> None:
    for row, valid, subset, mem in zip(cands, mask, subsets, memory, strict=True):
        kept = row[valid].tolist()
        assert len(kept) == len(set(kept))  # no duplicates among masked-in entries
        assert set(kept) == set(subset.tolist()) | {a for a in mem if a >= 0}
        assert kept[: len(subset)] == subset.tolist()  # R first, in draw order
        assert (row[~valid] == row[0]).all()  # padding repeats the first candidate, a valid index
        assert valid[: len(kept)].all() and not valid[len(kept) :].any()


def test_candidates_merge_shared_memory_with_each_rows_subset_without_duplicates() -> None:
    # N=8, k=3: with memory [0, 1, 1, -1, 7] a row holds 3 random actions plus those of {0, 1, 7} not drawn.
    memory = np.array([0, 1, 1, -1, 7])
    sampler = SubsetSampler(8, rng=np.random.default_rng(0))
    saved = sampler.get_state()
    cands, mask = sampler.candidates(200, memory)
    sampler.set_state(saved)
    subsets = sampler.sample(200)
    assert cands.shape == mask.shape == (200, 3 + 5)
    assert cands.dtype == np.int64 and mask.dtype == np.bool_
    assert_candidates_are_r_union_m(cands, mask, subsets, [memory.tolist()] * 200)
    # The union has 3 + |{0, 1, 7} \ R| entries: at most 6, at least 3, so at least 2 padded slots per row.
    assert mask.sum(axis=1).min() >= 3 and mask.sum(axis=1).max() == 6


def test_candidates_take_per_row_memory() -> None:
    memory = np.array([[5, 9], [9, 9], [-1, -1]])
    sampler = SubsetSampler(16, rng=np.random.default_rng(4))
    saved = sampler.get_state()
    cands, mask = sampler.candidates(3, memory)
    sampler.set_state(saved)
    subsets = sampler.sample(3)
    assert cands.shape == (3, 4 + 2)
    assert_candidates_are_r_union_m(cands, mask, subsets, memory.tolist())
    assert mask[2].sum() == 4  # empty memory row: R only


def test_candidates_refuse_memory_outside_the_action_space_or_of_the_wrong_batch() -> None:
    sampler = SubsetSampler(16, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be < n_actions=16, got 16"):
        sampler.candidates(2, np.array([3, 16]))
    with pytest.raises(ValueError, match="batch=2 rows"):
        sampler.candidates(2, np.zeros((3, 1), dtype=np.int64))
