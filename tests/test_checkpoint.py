"""Safe checkpoints: DQN, PPO and SAC round trips, and every tampered, foreign or half-written checkpoint refused."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import stable_baselines3
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file
from safetensors.torch import save as safetensors_save

from agents.baselines import DQN, PPO, SAC
from agents.common.checkpoint import (
    META_FILE,
    MODEL_FILE,
    CheckpointError,
    _canonical_sha,
    dedupe_shared,
    join_tensors,
    save_checkpoint,
    sha256_file,
    split_tensors,
)
from agents.common.manifest import MANIFEST_NAME, directory_files, read_manifest, resolve_model, write_entry
from agents.common.persistence import REPLAY_FILE
from agents.common.registry import load_agent
from tests.filesystems import fill, remount, small_tmpfs

ENV_IDS = {"dqn": "CartPole-v1", "ppo": "CartPole-v1", "sac": "Pendulum-v1"}
TRAINED_STEPS = {"dqn": 200, "ppo": 64, "sac": 100}


# ----------------------------------------------------------------------------------------------------------------
# Tiny trained models, built once per module
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dqn() -> DQN:
    env = gymnasium.make(ENV_IDS["dqn"])
    return DQN("MlpPolicy", env, learning_starts=50, buffer_size=500, seed=0).learn(TRAINED_STEPS["dqn"])


@pytest.fixture(scope="module")
def ppo() -> PPO:
    env = gymnasium.make(ENV_IDS["ppo"])
    return PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0).learn(TRAINED_STEPS["ppo"])


@pytest.fixture(scope="module")
def sac() -> SAC:
    env = gymnasium.make(ENV_IDS["sac"])
    small = {"net_arch": [64, 64]}  # SB3's 256x256 default makes 20 updates cost seconds on 2 cores
    model = SAC("MlpPolicy", env, learning_starts=80, buffer_size=500, batch_size=32, policy_kwargs=small, seed=0)
    return model.learn(TRAINED_STEPS["sac"])


@pytest.fixture(scope="module")
def dqn_checkpoint(dqn: DQN, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DQN saved with its replay buffer; tests tamper with copies of it (:func:`copy_of`), never with it."""
    return dqn.save(tmp_path_factory.mktemp("saved") / "dqn", replay_buffer=True)


def copy_of(checkpoint: Path, parent: Path, name: str = "ckpt") -> Path:
    return Path(shutil.copytree(checkpoint, parent / name))


def observations(env_id: str, n: int = 32) -> np.ndarray:
    """``n`` observations of a random-action rollout of the real env, reset whenever an episode ends."""
    env = gymnasium.make(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    batch = []
    for _ in range(n):
        batch.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(batch)


def assert_acts_like(model: Any, loaded: Any, env_id: str = "CartPole-v1") -> None:
    obs = observations(env_id)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Recursively equal: tensors exactly (dtype and values), dict keys with their types, a tuple equal to a list."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a, key=str)} != {sorted(b, key=str)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}.{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def reseal(checkpoint: Path, **meta_changes: Any) -> None:
    """Recompute every file's sha256 and meta_sha256 after a change, as a forger would: only the change is wrong."""
    meta = json.loads((checkpoint / META_FILE).read_text())
    meta.update(meta_changes)
    meta["files"] = {name: sha256_file(checkpoint / name) for name in meta["files"]}
    meta["meta_sha256"] = _canonical_sha(meta)
    (checkpoint / META_FILE).write_text(json.dumps(meta))


class TouchOnUnpickle:
    """Pickles to a call of ``Path.touch(marker)``: unpickling it leaves the marker file as proof that it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.marker,)


# ----------------------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agent_id", ["dqn", "ppo", "sac"])
def test_round_trip_restores_actions_counters_optimizers_and_replay_buffer(
    agent_id: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model = request.getfixturevalue(agent_id)
    model.save(tmp_path / "ckpt", replay_buffer=True)
    for env in (gymnasium.make(ENV_IDS[agent_id]), None):  # with its env, and for evaluation only
        loaded = type(model).load(tmp_path / "ckpt", env=env)
        assert_acts_like(model, loaded, ENV_IDS[agent_id])
        assert loaded.num_timesteps == model.num_timesteps == TRAINED_STEPS[agent_id]
        assert loaded._n_updates == model._n_updates > 0
    state_dicts, variables = model._get_torch_save_params()
    for name in state_dicts:
        original = model._attr(name)
        if isinstance(original, torch.optim.Optimizer):
            assert original.state, f"{name} has taken no step: nothing to compare"
        assert_same_state(original.state_dict(), loaded._attr(name).state_dict(), name)
    for name in variables:
        assert torch.equal(model._attr(name), loaded._attr(name)), name
    if agent_id == "ppo":  # on-policy: no replay buffer to restore
        return
    buffer, restored = model.replay_buffer, loaded.replay_buffer
    assert (restored.pos, restored.full) == (buffer.pos, buffer.full) == (TRAINED_STEPS[agent_id], False)
    for field in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(buffer, field))


def test_shared_memory_is_stored_once_under_the_first_name_and_a_slice_as_a_copy() -> None:
    weight = torch.arange(6.0).reshape(2, 3)
    tensors = {"b.weight": weight, "a.weight": weight, "c.weight": weight.detach(), "d.row": weight[1],
               "e.other": torch.ones(2), "f.empty": torch.empty(0), "g.empty": torch.empty(0)}
    stored, aliases = dedupe_shared(tensors)
    assert aliases == {"b.weight": "a.weight", "c.weight": "a.weight"}  # same view: one tensor, two aliases
    assert set(stored) == {"a.weight", "d.row", "e.other", "f.empty", "g.empty"}
    assert stored["a.weight"] is weight and stored["e.other"] is tensors["e.other"]
    assert torch.equal(stored["d.row"], torch.tensor([3.0, 4.0, 5.0]))  # another view of stored memory: copied
    assert stored["d.row"].untyped_storage().data_ptr() != weight.untyped_storage().data_ptr()
    assert safetensors_load(safetensors_save(stored))["d.row"].tolist() == [3.0, 4.0, 5.0]  # safetensors accepts it


@pytest.fixture(scope="module")
def ppo_cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[PPO, Path]:
    """SB3 PPO's CnnPolicy on real Crafter frames: one features extractor under three names in its state dict."""
    import envs  # noqa: F401  (registers zoo/Crafter-v1)

    env = gymnasium.make("zoo/Crafter-v1", size=(64, 64), length=50)
    model = PPO("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0).learn(32)
    return model, model.save(tmp_path_factory.mktemp("saved") / "ppo_cnn")


def test_ppo_cnn_policy_with_a_shared_features_extractor_round_trips(ppo_cnn_checkpoint: tuple[PPO, Path]) -> None:
    model, ckpt = ppo_cnn_checkpoint
    aliases = json.loads((ckpt / META_FILE).read_text())["tensor_aliases"]
    assert aliases["policy.pi_features_extractor.cnn.0.weight"] == "policy.features_extractor.cnn.0.weight"
    assert aliases["policy.vf_features_extractor.linear.0.bias"] == "policy.features_extractor.linear.0.bias"
    assert not set(aliases) & set(load_file(ckpt / MODEL_FILE))  # each shared tensor is stored once
    loaded = PPO.load(ckpt)
    assert loaded.policy.pi_features_extractor is loaded.policy.features_extractor  # still one module
    assert_same_state(model.policy.state_dict(), loaded.policy.state_dict(), "policy")
    assert_same_state(model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict(), "optimizer")
    assert_acts_like(model, loaded, "zoo/Crafter-v1")


@pytest.mark.parametrize("target", ["policy.missing", "policy.features_extractor.cnn.0.weight"],
                         ids=["missing_target", "alias_also_stored"])
def test_tensor_alias_that_names_no_other_stored_tensor_is_refused(
    target: str, ppo_cnn_checkpoint: tuple[PPO, Path], tmp_path: Path
) -> None:
    ckpt = copy_of(ppo_cnn_checkpoint[1], tmp_path)
    alias = "policy.features_extractor.cnn.0.bias" if target.endswith("weight") else "policy.pi_features_extractor.x"
    aliases = {**json.loads((ckpt / META_FILE).read_text())["tensor_aliases"], alias: target}
    reseal(ckpt, tensor_aliases=aliases)
    with pytest.raises(CheckpointError, match=rf"tensor alias '{re.escape(alias)}' -> '{re.escape(target)}' must "
                                              r"name a tensor stored in model.safetensors under another name"):
        PPO.load(ckpt)


def test_split_join_of_an_optimizer_state_keeps_int_keys_and_exact_tensors(dqn: DQN) -> None:
    state = dqn.policy.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    tree = json.loads(json.dumps(split_tensors(state, "opt", tensors)))  # through JSON and safetensors, as saved
    joined = join_tensors(tree, safetensors_load(safetensors_save(tensors)))
    assert sorted(joined["state"]) == [0, 1, 2, 3, 4, 5]  # q_net 4 -> 64 -> 64 -> 2: a weight and a bias each
    assert joined["param_groups"][0]["params"] == [0, 1, 2, 3, 4, 5]
    assert_same_state(state, joined)


# ----------------------------------------------------------------------------------------------------------------
# Tampered files
# ----------------------------------------------------------------------------------------------------------------
def test_flipped_byte_in_the_tensor_data_is_refused(dqn_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    data = bytearray((ckpt / MODEL_FILE).read_bytes())
    data_start = 8 + struct.unpack("<Q", data[:8])[0]  # u64 header length, JSON header, then the tensor bytes
    data[data_start + 100] ^= 0x01
    (ckpt / MODEL_FILE).write_bytes(data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its sha256"):
        DQN.load(ckpt)


def test_truncated_model_file_is_refused_even_with_resealed_hashes(dqn_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    (ckpt / MODEL_FILE).write_bytes((ckpt / MODEL_FILE).read_bytes()[:-64])
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its sha256"):
        DQN.load(ckpt)
    reseal(ckpt)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a valid safetensors file"):
        DQN.load(ckpt)


def test_flipped_byte_in_meta_json_is_refused(dqn_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    raw = bytearray((ckpt / META_FILE).read_bytes())
    raw[raw.index(b'"num_timesteps": 200') + len(b'"num_timesteps": 20')] ^= 0x01  # '0' -> '1': valid JSON, 201
    (ckpt / META_FILE).write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"was modified after it was written \(its meta_sha256 does not match"):
        DQN.load(ckpt)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evil": "payload"}, r"has unknown keys \['evil'\]; allowed: \['action_space', "),
        ({"num_timesteps": "200"}, r"'num_timesteps' is str, expected int"),
    ],
    ids=["unknown_key", "wrong_type"],
)
def test_meta_json_with_an_unknown_key_or_a_wrong_type_is_refused_naming_the_key(
    change: dict[str, Any], message: str, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    reseal(ckpt, **change)
    with pytest.raises(CheckpointError, match=message):
        DQN.load(ckpt)


def test_pickles_are_refused_without_being_unpickled(dqn: DQN, dqn_checkpoint: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists()  # the payload is live: unpickling it runs Path.touch
    marker = tmp_path / "marker"
    payload = pickle.dumps(TouchOnUnpickle(marker))
    bare = tmp_path / "model.pkl"
    bare.write_bytes(payload)
    stable_baselines3.DQN.save(dqn, tmp_path / "sb3_dqn.zip")  # SB3's own format: a zip of cloudpickled data
    for path in (bare, tmp_path / "sb3_dqn.zip"):
        for load in (DQN.load, load_agent):
            with pytest.raises(CheckpointError, match=r"is a file, not a zoo checkpoint directory .* never loaded"):
                load(path)
    for name, message in [
        (MODEL_FILE, r"model\.safetensors is not a valid safetensors file"),
        (REPLAY_FILE, r"replay_buffer\.npz' is not an \.npz archive; pickled or unknown content is never loaded"),
    ]:
        ckpt = copy_of(dqn_checkpoint, tmp_path, f"with_pickled_{name}")
        (ckpt / name).write_bytes(payload)
        reseal(ckpt)  # every hash matches: only the content of `name` is a pickle
        with pytest.raises(ValueError, match=message):
            DQN.load(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "policy.q_net.q_net.0.weight",
            r"size mismatch for q_net\.q_net\.0\.weight: copying a param with shape torch\.Size\(\[4, 64\]\) from "
            r"checkpoint, the shape in current model is torch\.Size\(\[64, 4\]\)",
        ),
        (
            "policy.optimizer.state.0.exp_avg",
            r"policy\.optimizer\.state\.0\.exp_avg has shape \(4, 64\); its parameter has shape \(64, 4\)",
        ),
    ],
    ids=["policy_weight", "optimizer_moment"],
)
def test_safetensors_header_with_a_wrong_shape_is_refused_naming_the_tensor(
    key: str, message: str, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    tensors = load_file(ckpt / MODEL_FILE)
    tensors[key] = tensors[key].T.contiguous()  # the same bytes, a transposed shape in the header
    save_file(tensors, ckpt / MODEL_FILE)
    reseal(ckpt)
    with pytest.raises(CheckpointError, match=r"does not fit a DQN built from its config: .*" + message):
        DQN.load(ckpt)


def test_saved_variable_of_a_wrong_shape_is_refused_not_broadcast(sac: SAC, tmp_path: Path) -> None:
    ckpt = sac.save(tmp_path / "ckpt")
    tensors = load_file(ckpt / MODEL_FILE)
    tensors["log_ent_coef"] = tensors["log_ent_coef"].reshape(())  # copy_ would broadcast () into (1,)
    save_file(tensors, ckpt / MODEL_FILE)
    reseal(ckpt)
    with pytest.raises(CheckpointError, match=r"log_ent_coef has shape \(\), expected \(1,\)"):
        SAC.load(ckpt)


def test_ppo_checkpoint_loaded_as_dqn_is_refused_naming_both_agents(ppo: PPO, tmp_path: Path) -> None:
    ppo.save(tmp_path / "ppo")
    with pytest.raises(CheckpointError, match="holds a 'ppo' agent, not 'dqn'"):
        DQN.load(tmp_path / "ppo")
    assert isinstance(load_agent(tmp_path / "ppo"), PPO)  # the registry reads the agent from meta.json


def test_replay_buffer_file_not_listed_in_meta_json_is_not_read(dqn: DQN, dqn_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = dqn.save(tmp_path / "ckpt")  # without its replay buffer
    shutil.copy(dqn_checkpoint / REPLAY_FILE, ckpt / REPLAY_FILE)
    assert DQN.load(ckpt).replay_buffer.pos == 0


# ----------------------------------------------------------------------------------------------------------------
# Interrupted writes
# ----------------------------------------------------------------------------------------------------------------
def test_crash_between_the_two_renames_falls_back_to_previous(dqn: DQN, dqn_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    os.rename(ckpt, tmp_path / "ckpt.previous")  # the old one moved aside, the new one not yet in place
    loaded = DQN.load(ckpt)
    assert_acts_like(dqn, loaded)
    assert loaded.replay_buffer.pos == 200
    dqn.save(ckpt)  # the next save completes and removes the fallback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_interrupted_save_keeps_the_previous_checkpoint_and_no_temporary_directory(
    dqn: DQN, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = copy_of(dqn_checkpoint, tmp_path)

    def disk_full(path: Path) -> None:
        raise OSError(f"no space left to write {path.name}")

    with pytest.raises(OSError, match="no space left to write extra.npz"):
        save_checkpoint(ckpt, {"w": torch.zeros(2)}, {"agent": "dqn"}, {"extra.npz": disk_full})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert_acts_like(dqn, DQN.load(ckpt))


def test_save_into_a_read_only_directory_fails_and_keeps_the_previous_checkpoint(
    dqn: DQN, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    if os.geteuid() == 0:  # chmod does not stop root: a file system mounted read-only does
        with small_tmpfs(tmp_path) as mount_point:
            ckpt = copy_of(dqn_checkpoint, mount_point)
            remount(mount_point, "ro")
            with pytest.raises(OSError, match="Read-only file system"):
                dqn.save(ckpt)
            assert sorted(p.name for p in mount_point.iterdir()) == ["ckpt"]
            assert_acts_like(dqn, DQN.load(ckpt))
        return
    ckpt = copy_of(dqn_checkpoint, tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError):
            dqn.save(ckpt)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    finally:
        tmp_path.chmod(0o755)
    assert_acts_like(dqn, DQN.load(ckpt))


def test_a_real_full_disk_is_an_os_error_and_keeps_the_previous_checkpoint(
    dqn: DQN, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    """safetensors reports the OS's ENOSPC as its own SafetensorError; the checkpoint writer raises it as OSError."""
    with small_tmpfs(tmp_path) as mount_point:
        ckpt = copy_of(dqn_checkpoint, mount_point)
        fill(mount_point)
        with pytest.raises(OSError) as error:
            dqn.save(ckpt)
        assert error.value.errno == errno.ENOSPC
        assert sorted(p.name for p in mount_point.iterdir()) == ["ckpt", "filler"]
        assert_acts_like(dqn, DQN.load(ckpt))


# ----------------------------------------------------------------------------------------------------------------
# The zoo manifest
# ----------------------------------------------------------------------------------------------------------------
def add_to_zoo(checkpoint: Path, zoo_dir: Path, name: str = "dqn_cartpole") -> dict[str, Any]:
    """Copy a checkpoint into ``zoo_dir`` and record it in the manifest, as ``runners/zoo.py`` would."""
    directory = copy_of(checkpoint, zoo_dir, name)
    entry = {
        "name": name,
        "path": name,
        "files": directory_files(directory),
        "agent": "dqn",
        "env": "CartPole-v1",
        "budget": {"env_steps": 200, "wall_time_s": 1.0, "machine": "test"},
        "score": {"mean": 9.5, "std": 0.5, "episodes": 4},
        "date": "2026-01-01",
        "size_bytes": sum(p.stat().st_size for p in directory.iterdir()),
        "command": "python -m runners.train agent=dqn env=CartPole-v1",
    }
    write_entry(entry, zoo_dir)
    return entry


def test_valid_zoo_entry_resolves_and_loads(dqn: DQN, dqn_checkpoint: Path, tmp_path: Path) -> None:
    add_to_zoo(dqn_checkpoint, tmp_path)
    path = resolve_model("zoo:dqn_cartpole", tmp_path)
    assert path == (tmp_path / "dqn_cartpole").resolve()
    loaded = load_agent(path)
    assert isinstance(loaded, DQN) and loaded.num_timesteps == 200
    assert_acts_like(dqn, loaded)


@pytest.mark.parametrize("where", ["../outside", "absolute"])
def test_zoo_entry_whose_path_leaves_the_zoo_directory_is_refused(
    where: str, dqn_checkpoint: Path, tmp_path: Path
) -> None:
    zoo = tmp_path / "zoo"
    entry = add_to_zoo(dqn_checkpoint, zoo)
    outside = copy_of(dqn_checkpoint, tmp_path, "outside")  # a valid checkpoint, in the wrong place
    path = str(outside) if where == "absolute" else where
    write_entry({**entry, "path": path}, zoo)
    with pytest.raises(CheckpointError, match=re.escape(f"zoo entry 'dqn_cartpole' has path '{path}' outside")):
        resolve_model("zoo:dqn_cartpole", zoo)


def test_zoo_entry_with_a_wrong_sha256_is_refused(dqn_checkpoint: Path, tmp_path: Path) -> None:
    entry = add_to_zoo(dqn_checkpoint, tmp_path)
    write_entry({**entry, "files": {**entry["files"], MODEL_FILE: "0" * 64}}, tmp_path)
    message = r"model\.safetensors does not match its sha256 in .*manifest\.json \(entry .dqn_cartpole.\)"
    with pytest.raises(CheckpointError, match=message):
        resolve_model("zoo:dqn_cartpole", tmp_path)


def test_unknown_zoo_name_lists_the_allowed_names(dqn_checkpoint: Path, tmp_path: Path) -> None:
    add_to_zoo(dqn_checkpoint, tmp_path)
    add_to_zoo(dqn_checkpoint, tmp_path, "dqn_copy")
    allowed = "unknown zoo checkpoint 'ppo_pong'; choose one of: dqn_cartpole, dqn_copy"
    with pytest.raises(CheckpointError, match=allowed):
        resolve_model("zoo:ppo_pong", tmp_path)


def test_zoo_entry_with_an_extra_key_is_refused(dqn_checkpoint: Path, tmp_path: Path) -> None:
    add_to_zoo(dqn_checkpoint, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    manifest["checkpoints"][0]["url"] = "https://example.com/weights.pkl"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"entry \[.*'url'\] must have exactly the keys \['agent', 'budget'"):
        read_manifest(tmp_path)
    with pytest.raises(CheckpointError, match="must have exactly the keys"):
        resolve_model("zoo:dqn_cartpole", tmp_path)
