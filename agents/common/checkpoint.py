"""Safe checkpoints: tensors in safetensors, everything else in JSON, nothing ever unpickled.

A checkpoint is a directory::

    <path>/model.safetensors   every tensor (network weights, optimizer moments, torch RNG state)
    <path>/meta.json           agent id, config, spaces, step counters, library versions, sha256 of each file
    <path>/<extra>.npz         optional arrays (replay buffer, episode buffer), read with allow_pickle=False

Writes are atomic: the checkpoint is assembled in a hidden temporary directory beside its destination and
renamed into place; an existing checkpoint at the destination is moved aside only once the new one is
complete, and removed only after the new one is in place. A crash at any point leaves the previous checkpoint
readable (at its path, or, between the two renames, at ``<path>.previous``, which :func:`load_checkpoint`
falls back to). Every file's sha256 is recorded in ``meta.json``, and ``meta.json`` carries the sha256 of its
own canonical content, so a truncated file, a flipped byte or a swapped file is refused before any tensor is
read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
PREVIOUS_SUFFIX = ".previous"

# meta.json schema: key -> allowed JSON types. Unknown keys are refused, so a file cannot smuggle in fields.
META_SCHEMA: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "agent": (str,),
    "class": (str,),
    "hyperparams": (dict,),
    "config": (dict, type(None)),
    "observation_space": (dict,),
    "action_space": (dict,),
    "num_timesteps": (int,),
    "state": (dict,),
    "files": (dict,),
    "versions": (dict,),
    "created": (str,),
    "meta_sha256": (str,),
}
# keys a meta.json may hold, with their allowed JSON types, written only when they apply
META_OPTIONAL: dict[str, tuple[type, ...]] = {
    "tensor_aliases": (dict,),  # name -> the stored tensor it shares memory with (tied or shared weights)
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, tampered with, or not a zoo checkpoint at all."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _canonical_sha(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Nested state (optimizer state dicts, RNG states) <-> JSON tree + flat tensor dict
# --------------------------------------------------------------------------------------------------------------
def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor/ndarray in a nested structure by a reference, collecting the tensors in ``tensors``.

    Dicts with non-string keys (optimizer states are keyed by int) are encoded as ``{"__items__": [[k, v], ...]}``
    so that the key types survive JSON.
    """
    if isinstance(obj, torch.Tensor | np.ndarray):
        tensor = torch.as_tensor(obj).detach().cpu().contiguous()
        tensors[prefix] = tensor.clone() if tensor.dim() == 0 else tensor
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{prefix}' in a checkpoint; only tensors and JSON values")


def join_tensors(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            key = tree["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"meta.json refers to tensor '{key}' which is not in {MODEL_FILE}")
            return tensors[key]
        if set(tree) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in tree["__items__"]}
        return {k: join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree


# --------------------------------------------------------------------------------------------------------------
# Atomic writes: single files and checkpoint directories
# --------------------------------------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write one file through ``write(f)`` into a temporary file beside ``path``, fsync it, and rename it into place.

    A crash or an exception at any point leaves the previous file at ``path`` intact; an exception leaves no
    temporary file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def dedupe_shared(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store and the aliases of those that share memory with one of them.

    A module reachable under several names (SB3's shared features extractor is ``features_extractor``,
    ``pi_features_extractor`` and ``vf_features_extractor``; tied weights) appears once per name in a state dict;
    safetensors refuses shared memory. The same view of the same memory is stored once, under the first name in
    sorted order, and the other names become aliases of it; a different view of memory already stored (a slice of
    another tensor) is stored as a copy."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[tuple[str, int]] = set()
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.numel() == 0:
            stored[name] = tensor
            continue
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        view = (*storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if view in views:
            aliases[name] = views[view]
            continue
        views[view] = name
        stored[name] = tensor.clone() if storage in storages else tensor
        storages.add(storage)
    return stored, aliases


OS_ERROR_IN_SAFETENSORS = re.compile(r"\(os error (\d+)\)")


def write_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """safetensors' ``save_file``, with the operating system's refusals (a full disk, a read-only file system) raised
    as the ``OSError`` they are: safetensors reports them as a ``SafetensorError`` whose message ends in
    ``(os error N)``, which a caller guarding its saves with ``except OSError`` would not catch."""
    try:
        save_file(dict(tensors), str(path))
    except SafetensorError as e:
        found = OS_ERROR_IN_SAFETENSORS.search(str(e))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from e


def save_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    extra_writers: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically. ``extra_writers`` maps a file name to a function writing it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        stored, aliases = dedupe_shared(tensors)
        write_tensors({k: v.contiguous() for k, v in stored.items()}, tmp / MODEL_FILE)
        for name, writer in (extra_writers or {}).items():
            writer(tmp / name)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        full_meta = {**meta, "format_version": FORMAT_VERSION, "files": files,
                     **({"tensor_aliases": aliases} if aliases else {})}
        full_meta["meta_sha256"] = _canonical_sha(full_meta)
        with open(tmp / META_FILE, "w") as f:
            json.dump(full_meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        previous = path.with_name(path.name + PREVIOUS_SUFFIX)
        if path.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(path, previous)
        os.replace(tmp, path)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


UNFINISHED_SAVE = re.compile(r"^\..+\.tmp-\d+$")  # the temporary directory of save_checkpoint: .<name>.tmp-<pid>


def remove_unfinished_saves(directory: str | Path, name: str = "*") -> None:
    """Remove what :func:`save_checkpoint` left in ``directory`` for checkpoints named ``name`` (a glob) when its
    process was killed mid-write: the temporary directories, never a complete checkpoint."""
    for stale in Path(directory).glob(f".{name}.tmp-*"):
        if UNFINISHED_SAVE.match(stale.name) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Verified loading
# --------------------------------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """The directory to read for the checkpoint at ``path``: ``path`` itself, or ``<path>.previous`` when a crash
    between the two renames of :func:`save_checkpoint` left only that. Anything else is refused."""
    path = Path(path)
    if path.is_dir():
        return path
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if not path.exists() and previous.is_dir():
        return previous  # a crash happened between the two renames of save_checkpoint
    if path.is_file():
        raise CheckpointError(
            f"'{path}' is a file, not a zoo checkpoint directory ({MODEL_FILE} + {META_FILE}); "
            "pickled files such as SB3 .zip archives are never loaded"
        )
    raise CheckpointError(f"no checkpoint at '{path}'")


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and validate meta.json of a checkpoint directory (schema, self-hash, file hashes)."""
    path = resolve_checkpoint(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"'{path}' has no {META_FILE}; not a zoo checkpoint")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e.__class__.__name__}); the file is corrupt") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} must hold a JSON object, found {type(meta).__name__}")
    schema = {**META_SCHEMA, **META_OPTIONAL}
    unknown = sorted(set(meta) - set(schema))
    if unknown:
        raise CheckpointError(f"{meta_path} has unknown keys {unknown}; allowed: {sorted(schema)}")
    for key, types in schema.items():
        if key not in meta:
            if key in META_OPTIONAL:
                continue
            raise CheckpointError(f"{meta_path} lacks '{key}'")
        if not isinstance(meta[key], types) or (int in types and isinstance(meta[key], bool)):
            allowed = " or ".join(t.__name__ for t in types)
            raise CheckpointError(f"{meta_path}: '{key}' is {type(meta[key]).__name__}, expected {allowed}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: format_version {meta['format_version']}, this zoo reads {FORMAT_VERSION}")
    if _canonical_sha(meta) != meta["meta_sha256"]:
        raise CheckpointError(f"{meta_path} was modified after it was written (its meta_sha256 does not match)")
    if MODEL_FILE not in meta["files"]:
        raise CheckpointError(f"{meta_path} lists no {MODEL_FILE}")
    verify_files(path, meta["files"], str(meta_path))
    return meta


def verify_files(directory: Path, files: Mapping[str, str], listed_in: str) -> None:
    """Check that each file named in ``files`` lies directly in ``directory`` and has the listed sha256."""
    for name, expected in files.items():
        file = directory / name
        if Path(name).name != name:
            raise CheckpointError(f"{listed_in} lists '{name}', a path outside {directory}")
        if file.is_symlink() and not file.resolve().is_relative_to(directory.resolve()):
            raise CheckpointError(f"{file} is a symbolic link to '{file.resolve()}', outside {directory}; refused")
        if not file.is_file():
            raise CheckpointError(f"'{directory}' is incomplete: {name}, listed in {listed_in}, is missing")
        if sha256_file(file) != expected:
            raise CheckpointError(f"{file} does not match its sha256 in {listed_in}: truncated or modified")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Verify then read a checkpoint: returns (tensors, meta). Raises CheckpointError with one clear line."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    data = (path / MODEL_FILE).read_bytes()
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / MODEL_FILE} is not a valid safetensors file: {e}") from None
    for alias, name in meta.get("tensor_aliases", {}).items():
        if not isinstance(name, str) or name not in tensors or alias in tensors:
            raise CheckpointError(f"{path / META_FILE}: tensor alias '{alias}' -> {name!r} must name a tensor stored "
                                  f"in {MODEL_FILE} under another name")
        tensors[alias] = tensors[name]
    return {k: v.to(device) for k, v in tensors.items()}, meta


def verify_checkpoint(path: str | Path) -> bool:
    """True when the checkpoint at ``path`` is complete and untampered."""
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True
