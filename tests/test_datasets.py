"""The zoo's offline datasets: behaviour policies registered from a real (tiny) SAC run, D4RL layout, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs import datasets as ds


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    """A tiny SAC behaviour run on Hopper (checkpoints with evaluations and replay buffers) registered into a
    temporary zoo, exactly as `python -m runners.dataset env=hopper behaviour=<run>` does."""
    from runners.train import main as train_main

    root = tmp_path_factory.mktemp("behaviour")
    run = root / "sac-hopper"
    assert train_main(["agent=sac", "env=hopper", "preset=tiny", "total_timesteps=600", "agent.learning_starts=100",
                       "eval_freq=200", "save_freq=200", "eval_episodes=1", "keep_checkpoints=10",
                       "buffer_size=600", "progress_bar=false", "torch_threads=1", f"run_dir={run}"]) == 0
    zoo_dir = root / "zoo"
    zoo_dir.mkdir()
    names = ds.register_behaviour(run, "hopper", zoo_dir)
    return zoo_dir, run, names


def test_register_behaviour(zoo) -> None:
    from agents.common.manifest import read_manifest

    zoo_dir, run, names = zoo
    assert names == {"expert": "sac-hopper-expert", "medium": "sac-hopper-medium",
                     "medium-replay": "sac-hopper-medium-replay"}
    entries = read_manifest(zoo_dir)
    curve = ds.eval_curve(run)
    expert = json.loads((run / "results.json").read_text())["eval"]["mean_reward"]
    medium_step = entries["sac-hopper-medium"]["budget"]["env_steps"]
    assert medium_step in curve
    assert all(abs(curve[medium_step][0] - expert / 3) <= abs(r - expert / 3) for s, (r, _) in curve.items()
               if (run / "checkpoints" / f"step_{s:010d}").is_dir())
    assert not any(p.name == "replay_buffer.npz" for p in (zoo_dir / "sac-hopper-expert").iterdir())


def test_generated_dataset_layout_and_determinism(zoo) -> None:
    zoo_dir, _, _ = zoo
    a = ds.generate_dataset("hopper", "medium", size=300, seed=3, progress=False, zoo_dir=zoo_dir)
    b = ds.generate_dataset("hopper", "medium", size=300, seed=3, progress=False, zoo_dir=zoo_dir)
    c = ds.generate_dataset("hopper", "medium", size=300, seed=4, progress=False, zoo_dir=zoo_dir)
    for key, dtype in ds.FIELDS.items():
        assert a[key].dtype == dtype
        np.testing.assert_array_equal(a[key], b[key])
    assert a["observations"].shape == (300, 11) and a["actions"].shape == (300, 3) and len(a["rewards"]) == 300
    assert not np.array_equal(a["observations"], c["observations"])
    # episodes end exactly where a termination or a truncation is, and the last one is cut at the size limit
    ends = np.flatnonzero(a["terminals"] | a["timeouts"]) + 1
    np.testing.assert_array_equal(a["episode_starts"], np.concatenate([[0], ends[:-1]]))
    assert ends[-1] == 300 and not (a["terminals"] & a["timeouts"]).any()
    meta = json.loads(str(a["metadata"]))
    assert meta["quality"] == "medium" and meta["seed"] == 3 and "sac-hopper-medium" in meta["behaviour"]


def test_medium_expert_is_medium_then_expert(zoo) -> None:
    zoo_dir, _, _ = zoo
    kw = dict(size=200, seed=0, progress=False, zoo_dir=zoo_dir)
    medium, expert = ds.generate_dataset("hopper", "medium", **kw), ds.generate_dataset("hopper", "expert", **kw)
    both = ds.generate_dataset("hopper", "medium-expert", **kw)
    np.testing.assert_array_equal(both["observations"], np.concatenate([medium["observations"],
                                                                        expert["observations"]]))
    np.testing.assert_array_equal(both["episode_starts"], np.concatenate([medium["episode_starts"],
                                                                          expert["episode_starts"] + 200]))


def test_medium_replay_is_the_replay_buffer_prefix(zoo) -> None:
    from agents.common.buffers import read_npz
    from agents.common.manifest import read_manifest

    zoo_dir, run, _ = zoo
    step = read_manifest(zoo_dir)["sac-hopper-medium"]["budget"]["env_steps"]
    raw = read_npz(run / "checkpoints" / f"step_{step:010d}" / "replay_buffer.npz")
    data = ds.generate_dataset("hopper", "medium-replay", zoo_dir=zoo_dir, progress=False)
    n = int(raw["pos"])  # SB3 stores a step's transition after the callbacks that saved the checkpoint
    assert len(data["rewards"]) == n and step - 1 <= n <= step
    np.testing.assert_array_equal(data["observations"], raw["observations"][:n, 0].astype(np.float32))
    np.testing.assert_array_equal(data["actions"], raw["actions"][:n, 0])
    assert data["timeouts"][-1] or data["terminals"][-1]


def test_load_dataset_refusals(zoo, tmp_path) -> None:
    from gymnasium import spaces

    zoo_dir, _, _ = zoo
    path = tmp_path / "d.npz"
    ds.save_dataset(ds.generate_dataset("hopper", "expert", size=100, progress=False, zoo_dir=zoo_dir), path)
    box = spaces.Box(-1, 1, (6,))
    with pytest.raises(ValueError, match=r"actions of shape \(3,\); the env's action space has shape \(6,\)"):
        ds.load_dataset(path, action_space=box)
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, observations=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object"):
        ds.load_dataset(hostile)


def test_resolve_dataset_messages(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m runners.dataset env=hopper quality=medium"):
        ds.resolve_dataset("medium", "hopper", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'mediocre'; choose a quality"):
        ds.resolve_dataset("mediocre", "hopper", root=tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=ant", "quality=medium"], "env='ant'"),
        (["env=hopper", "quality=good"], "quality='good'"),
        (["env=hopper", "quality=medium", "size=0"], "size"),
        (["env=hopper", "quality=medium", "colour=red"], "unknown key 'colour'"),
    ],
)
def test_cli_bad_input(args: list[str], message: str, capsys) -> None:
    from runners.cli import run_main
    from runners.dataset import main

    assert run_main(main, args) == 2 and message in capsys.readouterr().err
