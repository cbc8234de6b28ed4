"""Issue 9, item 3: hostile files are refused with one clear line; nothing is executed, nothing is overwritten.

Every fault is applied to a copy of a real checkpoint written by ``runners.train`` for each agent of
``conftest.TINY_RUNS`` (SB3 baselines, StochDQN and its siblings, tabular StochQ, DT/RADT, ACT, DIAMOND, Δ-IRIS),
then loaded through the command line (``runners.evaluate`` / ``runners.train resume=``) or the library
(``resolve_model``, ``load_dataset``, ``EpisodeBuffer.load``, ``load_demos``). A fault "resealed" is one whose author
also rewrote the sha256 in meta.json (and meta.json's own hash), as someone crafting a malicious checkpoint would:
the later checks must still refuse it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agents.common.checkpoint import META_FILE, MODEL_FILE, CheckpointError, _canonical_sha, sha256_file
from agents.common.episode_buffer import EpisodeBuffer
from agents.common.manifest import MANIFEST_NAME, directory_files, resolve_model, write_entry
from agents.common.persistence import EPISODE_BUFFER_FILE, REPLAY_FILE
from envs.datasets import load_dataset
from envs.needle.demos import load_demos
from runners import evaluate, train
from runners.cli import run_main
from tests.reliability.conftest import AGENTS, TinyRuns, copy_run, tree_digest

# agents whose periodic checkpoints hold a buffer of transitions -> its file (the world-model agents: episodes)
BUFFER_FILES = {**dict.fromkeys(("dqn", "sac", "stochdqn", "stochddqn", "fulldqn", "fullddqn"), REPLAY_FILE),
                **dict.fromkeys(("diamond", "delta_iris"), EPISODE_BUFFER_FILE)}


class Payload:
    """Unpickling it creates the file ``Payload.marker``: a pickle that must never be loaded."""

    marker: Path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Payload.marker,))


@pytest.fixture
def payload(tmp_path: Path) -> bytes:
    Payload.marker = tmp_path.parent / f"{tmp_path.name}-EXECUTED"
    return pickle.dumps(Payload())


def reseal(ckpt: Path, mutate: Callable[[dict], None] = lambda meta: None) -> None:
    """Apply ``mutate`` to meta.json, then rewrite every file hash and meta_sha256 as a forger would."""
    meta = json.loads((ckpt / META_FILE).read_text())
    mutate(meta)
    meta["files"] = {name: sha256_file(ckpt / name) if (ckpt / name).exists() else digest
                     for name, digest in meta["files"].items()}
    meta["meta_sha256"] = _canonical_sha(meta)
    (ckpt / META_FILE).write_text(json.dumps(meta))


def edit_meta(ckpt: Path, mutate: Callable[[dict], None]) -> None:
    meta = json.loads((ckpt / META_FILE).read_text())
    mutate(meta)
    (ckpt / META_FILE).write_text(json.dumps(meta))


def rewrite_header(ckpt: Path, mutate: Callable[[dict], None], header_length: int | None = None) -> None:
    """Rewrite the JSON header of model.safetensors (the tensor bytes stay), then reseal the hashes."""
    blob = (ckpt / MODEL_FILE).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    mutate(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    length = len(raw) if header_length is None else header_length
    (ckpt / MODEL_FILE).write_bytes(struct.pack("<Q", length) + raw + blob[8 + n :])
    reseal(ckpt)


def policy_matrix(header: dict) -> str:
    """The first 2-D weight of the policy in a safetensors header."""
    return next(k for k, v in sorted(header.items()) if k.startswith("policy.") and len(v.get("shape", ())) == 2)


def flatten_shape(header: dict) -> None:
    key = policy_matrix(header)
    header[key]["shape"] = [int(np.prod(header[key]["shape"]))]  # same bytes, the wrong shape


def offsets_past_the_end(header: dict) -> None:
    key = policy_matrix(header)
    start, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [start, end + 10_000_000]


def overlapping_offsets(header: dict) -> None:
    key = policy_matrix(header)
    start, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [0, end - start]  # claims the bytes of another tensor


# --------------------------------------------------------------------------------------------------------------
# Checkpoint faults: each returns the start of the one error line expected from runners.evaluate
# --------------------------------------------------------------------------------------------------------------
def truncated(c: Path, outside: Path, payload: bytes) -> str:
    blob = (c / MODEL_FILE).read_bytes()
    (c / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    return f"{c / MODEL_FILE} does not match its sha256 in {c / META_FILE}: truncated or modified"


def truncated_resealed(c: Path, outside: Path, payload: bytes) -> str:
    truncated(c, outside, payload)
    reseal(c)
    return f"{c / MODEL_FILE} is not a valid safetensors file:"


def one_byte_flipped(c: Path, outside: Path, payload: bytes) -> str:
    blob = bytearray((c / MODEL_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (c / MODEL_FILE).write_bytes(bytes(blob))
    return f"{c / MODEL_FILE} does not match its sha256 in {c / META_FILE}: truncated or modified"


def meta_byte_flipped(c: Path, outside: Path, payload: bytes) -> str:
    text = (c / META_FILE).read_text()
    (c / META_FILE).write_text(text.replace('"num_timesteps": ', '"num_timesteps": 1', 1))
    return f"{c / META_FILE} was modified after it was written"


def header_lies_about_a_shape(c: Path, outside: Path, payload: bytes) -> str:
    rewrite_header(c, flatten_shape)
    return f"'{c}' does not fit a {{cls}} built from its config:"


def header_lies_about_offsets(c: Path, outside: Path, payload: bytes) -> str:
    rewrite_header(c, offsets_past_the_end)
    return f"{c / MODEL_FILE} is not a valid safetensors file:"


def header_offsets_overlap(c: Path, outside: Path, payload: bytes) -> str:
    rewrite_header(c, overlapping_offsets)
    return f"{c / MODEL_FILE} is not a valid safetensors file:"


def header_length_lies(c: Path, outside: Path, payload: bytes) -> str:
    rewrite_header(c, lambda header: None, header_length=2**40)
    return f"{c / MODEL_FILE} is not a valid safetensors file:"


def meta_wrong_type(c: Path, outside: Path, payload: bytes) -> str:
    edit_meta(c, lambda m: m.update(num_timesteps="100"))
    return f"{c / META_FILE}: 'num_timesteps' is str, expected int"


def meta_extra_key(c: Path, outside: Path, payload: bytes) -> str:
    edit_meta(c, lambda m: m.update(exec="__import__('os').system('touch /tmp/x')"))
    return f"{c / META_FILE} has unknown keys ['exec']; allowed:"


def meta_unknown_hyperparameter(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m["hyperparams"].update(bogus=1))
    return f"'{c}': its hyperparameters do not build a {{cls}}:"


def meta_hyperparameter_wrong_type(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m["hyperparams"].update(policy_kwargs="many"))
    return f"'{c}': its hyperparameters do not build a {{cls}}:"


def meta_counter_wrong_type(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m["state"].update(num_timesteps="x"))
    return f"'{c}' does not fit a {{cls}} built from its config: state.num_timesteps is str; expected a number"


def meta_foreign_agent(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m.update(agent="evil"))
    return f"'{c}' holds unknown agent 'evil'; choose one of:"


def meta_is_a_pickle(c: Path, outside: Path, payload: bytes) -> str:
    (c / META_FILE).write_bytes(payload)
    return f"{c / META_FILE} is not valid JSON"


def model_is_a_pickle(c: Path, outside: Path, payload: bytes) -> str:
    (c / MODEL_FILE).write_bytes(payload)
    reseal(c)
    return f"{c / MODEL_FILE} is not a valid safetensors file:"


def meta_lists_a_path_outside(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m["files"].update({"../outside.bin": sha256_file(outside)}))
    return f"{c / META_FILE} lists '../outside.bin', a path outside {c}"


def meta_lists_an_absolute_path(c: Path, outside: Path, payload: bytes) -> str:
    reseal(c, lambda m: m["files"].update({str(outside): sha256_file(outside)}))
    return f"{c / META_FILE} lists '{outside}', a path outside {c}"


def model_is_a_symlink_outside(c: Path, outside: Path, payload: bytes) -> str:
    outside.write_bytes((c / MODEL_FILE).read_bytes())  # even the right bytes: read from outside the checkpoint
    (c / MODEL_FILE).unlink()
    (c / MODEL_FILE).symlink_to(outside)
    reseal(c)
    return f"{c / MODEL_FILE} is a symbolic link to '{outside}', outside {c}; refused"


CHECKPOINT_FAULTS = [truncated, truncated_resealed, one_byte_flipped, meta_byte_flipped, header_lies_about_a_shape,
                     header_lies_about_offsets, header_offsets_overlap, header_length_lies, meta_wrong_type,
                     meta_extra_key, meta_unknown_hyperparameter, meta_hyperparameter_wrong_type,
                     meta_counter_wrong_type, meta_foreign_agent, meta_is_a_pickle, model_is_a_pickle,
                     meta_lists_a_path_outside, meta_lists_an_absolute_path, model_is_a_symlink_outside]


def assert_one_line(err: str, start: str) -> None:
    err = err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"error: {start}"), f"\n{err}\nexpected the start: error: {start}"


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("agent", AGENTS)
def test_hostile_checkpoint_is_refused_with_one_line_and_nothing_run_or_written(
    runs: TinyRuns, agent: str, fault: Callable, tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = copy_run(runs[agent] / "final", tmp_path, "ckpt")
    cls = json.loads((ckpt / META_FILE).read_text())["class"]
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    start = fault(ckpt, outside, payload).replace("{cls}", cls)
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert run_main(evaluate.main, [f"model={ckpt}", "episodes=1", "device=cpu"]) == 2
    assert_one_line(capsys.readouterr().err, start)
    assert tree_digest(tmp_path) == before
    assert not Payload.marker.exists()


@pytest.mark.parametrize("agent", AGENTS)
def test_a_pickle_file_given_as_a_checkpoint_is_never_unpickled(
    runs: TinyRuns, agent: str, tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{agent}.zip"  # what SB3 itself would write: a pickled archive
    path.write_bytes(payload)
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert run_main(evaluate.main, [f"model={path}"]) == 2
    assert_one_line(capsys.readouterr().err, f"'{path}' is a file, not a zoo checkpoint directory")
    assert tree_digest(tmp_path) == before and not Payload.marker.exists()


# --------------------------------------------------------------------------------------------------------------
# Replay and episode buffers inside a checkpoint: refused on resume, before the run directory is touched
# --------------------------------------------------------------------------------------------------------------
def replay_is_a_pickle(path: Path, payload: bytes) -> str:
    path.write_bytes(payload)
    return f"'{path}' is not an .npz archive; pickled or unknown content is never loaded"


def replay_object_array(path: Path, payload: bytes) -> str:
    arrays = dict(np.load(path, allow_pickle=False))
    first = sorted(arrays)[0]
    arrays[first] = np.array([Payload()], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return f"'{path}': array '{first}' is an object array; only numeric and bool arrays are allowed"


@pytest.mark.parametrize("fault", [replay_is_a_pickle, replay_object_array], ids=lambda f: f.__name__)
@pytest.mark.parametrize("agent", sorted(BUFFER_FILES))
def test_resume_refuses_a_poisoned_replay_buffer_and_leaves_the_run_untouched(
    runs: TinyRuns, agent: str, fault: Callable, tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(runs[agent], tmp_path)
    newest = sorted((run / "checkpoints").iterdir())[-1]
    start = fault(newest / BUFFER_FILES[agent], payload)
    reseal(newest)
    before = tree_digest(run)
    capsys.readouterr()
    assert run_main(train.main, [f"resume={run}", "progress_bar=false"]) == 2
    assert_one_line(capsys.readouterr().err, start)
    assert tree_digest(run) == before and not Payload.marker.exists()


# --------------------------------------------------------------------------------------------------------------
# The zoo manifest (a temporary zoo directory)
# --------------------------------------------------------------------------------------------------------------
def zoo_with(entry_dir: Path, zoo: Path, name: str, **changes: object) -> dict:
    zoo.mkdir(exist_ok=True)
    entry = {"name": name, "path": name, "files": directory_files(entry_dir), "agent": "x", "env": "x",
             "budget": {}, "score": {}, "date": "2024-01-01", "size_bytes": 0, "command": "", **changes}
    write_entry(entry, zoo)
    return entry


def move_into(zoo: Path, ckpt: Path) -> Path:
    zoo.mkdir()
    return Path(ckpt.rename(zoo / "m"))


def manifest_wrong_sha256(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    target = move_into(zoo, ckpt)
    files = directory_files(target)
    files[MODEL_FILE] = hashlib.sha256(b"another model").hexdigest()
    zoo_with(target, zoo, "m", files=files)
    return f"{target / MODEL_FILE} does not match its sha256 in {zoo / MANIFEST_NAME} (entry 'm')"


def manifest_path_climbs_out(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    zoo_with(ckpt, zoo, "m", path="../../etc/passwd")
    return f"zoo entry 'm' has path '../../etc/passwd' outside {zoo}; refused"


def manifest_absolute_path(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    zoo_with(ckpt, zoo, "m", path=str(ckpt))
    return f"zoo entry 'm' has path '{ckpt}' outside {zoo}; refused"


def manifest_entry_is_a_symlink_outside(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    zoo.mkdir()
    (zoo / "m").symlink_to(ckpt, target_is_directory=True)
    zoo_with(ckpt, zoo, "m")
    return f"zoo entry 'm' has path 'm' outside {zoo}; refused"


def manifest_lists_a_file_outside(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    target = move_into(zoo, ckpt)
    zoo_with(target, zoo, "m", files={**directory_files(target), "../../etc/passwd": "0" * 64})
    return f"{zoo / MANIFEST_NAME} (entry 'm') lists '../../etc/passwd', a path outside {target}"


def manifest_file_is_a_symlink_outside(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    target = move_into(zoo, ckpt)
    outside.write_bytes((target / MODEL_FILE).read_bytes())
    (target / MODEL_FILE).unlink()
    (target / MODEL_FILE).symlink_to(outside)
    zoo_with(target, zoo, "m")
    return f"{target / MODEL_FILE} is a symbolic link to '{outside}', outside {target}; refused"


def manifest_is_a_pickle(zoo: Path, ckpt: Path, outside: Path, payload: bytes) -> str:
    zoo.mkdir()
    (zoo / MANIFEST_NAME).write_bytes(payload)
    return f"{zoo / MANIFEST_NAME} is not a valid zoo manifest"


MANIFEST_FAULTS = [manifest_wrong_sha256, manifest_path_climbs_out, manifest_absolute_path,
                   manifest_entry_is_a_symlink_outside, manifest_lists_a_file_outside,
                   manifest_file_is_a_symlink_outside, manifest_is_a_pickle]


@pytest.mark.parametrize("fault", MANIFEST_FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("agent", ["ppo", "dt", "act"])
def test_hostile_zoo_manifest_entry_is_refused_before_loading(
    runs: TinyRuns, agent: str, fault: Callable, tmp_path: Path, payload: bytes
) -> None:
    ckpt = copy_run(runs[agent] / "final", tmp_path, "ckpt")
    zoo, outside = tmp_path / "zoo", tmp_path / "outside.bin"
    start = fault(zoo, ckpt, outside, payload)
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError) as refused:
        resolve_model("zoo:m", zoo)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(start), f"\n{message}\nexpected the start: {start}"
    assert tree_digest(tmp_path) == before and not Payload.marker.exists()


# --------------------------------------------------------------------------------------------------------------
# Datasets and demonstrations (.npz): read with allow_pickle=False
# --------------------------------------------------------------------------------------------------------------
def object_array_copy(source: Path, path: Path, key: str) -> Path:
    arrays = dict(np.load(source, allow_pickle=False))
    arrays[key] = np.array([Payload()] * len(arrays[key]), dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_dataset_with_an_object_array_is_refused(runs: TinyRuns, tmp_path: Path, payload: bytes) -> None:
    path = object_array_copy(runs.data("hopper"), tmp_path / "hostile.npz", "observations")
    before = tree_digest(tmp_path)
    with pytest.raises(ValueError, match=r"^'.*hostile\.npz': array 'observations' is an object array; only numeric"):
        load_dataset(path)
    assert tree_digest(tmp_path) == before and not Payload.marker.exists()


def test_a_pickle_named_like_a_dataset_is_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "hopper-medium.npz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=r"^'.*hopper-medium\.npz' is not an \.npz archive; pickled or unknown"):
        load_dataset(path)
    assert not Payload.marker.exists()


def test_episode_buffer_and_demonstrations_with_an_object_array_are_refused(
    runs: TinyRuns, tmp_path: Path, payload: bytes
) -> None:
    demos = runs.data("needle")
    path = object_array_copy(demos, tmp_path / "demos.npz", "obs")
    (tmp_path / "demos.json").write_bytes(demos.with_suffix(".json").read_bytes())
    before = tree_digest(tmp_path)
    for load in (EpisodeBuffer.load, load_demos):
        with pytest.raises(ValueError, match=r"^'.*demos\.npz': array 'obs' is an object array; only numeric"):
            load(path)
    assert tree_digest(tmp_path) == before and not Payload.marker.exists()


@pytest.mark.parametrize("agent", ["dt", "radt", "act"])
def test_training_on_a_hostile_dataset_exits_2_before_writing_a_run(
    runs: TinyRuns, agent: str, tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    source = runs.data("needle" if agent == "act" else "hopper")
    key = "obs" if agent == "act" else "observations"
    path = object_array_copy(source, tmp_path / "hostile.npz", key)
    if agent == "act":
        (tmp_path / "hostile.json").write_bytes(source.with_suffix(".json").read_bytes())
    args = [a.replace(str(source), str(path)) for a in runs.args(agent, tmp_path / "run")]
    capsys.readouterr()
    assert run_main(train.main, args) == 2
    assert_one_line(capsys.readouterr().err, f"'{path}': array '{key}' is an object array")
    assert not (tmp_path / "run").exists() and not Payload.marker.exists()
