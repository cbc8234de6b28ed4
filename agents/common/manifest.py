"""The zoo's shipped checkpoints: ``results/zoo/manifest.json``, verified by sha256 before anything is loaded.

Each entry names a checkpoint directory under ``results/zoo/`` and records the sha256 of every file in it, the
agent and env, the budget it was trained on (env steps, wall time, machine), its evaluated score (mean +- std
over N episodes) and the date. ``model=zoo:<name>`` on any runner resolves through :func:`resolve_model`,
which refuses a name not in the manifest, a path that leaves ``results/zoo/``, and any file whose hash differs.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from agents.common.checkpoint import CheckpointError, atomic_write_text, sha256_file, verify_files

ZOO_DIR = Path(__file__).resolve().parents[2] / "results" / "zoo"
MANIFEST_NAME = "manifest.json"
ENTRY_KEYS = {"name", "path", "files", "agent", "env", "budget", "score", "date", "size_bytes", "command"}


def machine() -> str:
    """The machine a budget or a timing was measured on, e.g. ``x86_64, 2 CPU cores, Linux, no GPU``."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, {gpu}"


def manifest_path(zoo_dir: Path = ZOO_DIR) -> Path:
    return zoo_dir / MANIFEST_NAME


def read_manifest(zoo_dir: Path = ZOO_DIR) -> dict[str, dict[str, Any]]:
    """Entries by name. A manifest that is not valid JSON, or an entry with missing or unknown keys, is refused."""
    path = manifest_path(zoo_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = data["checkpoints"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a valid zoo manifest ({e.__class__.__name__})") from None
    result: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise CheckpointError(f"{path}: entry {keys} must have exactly the keys {sorted(ENTRY_KEYS)}")
        result[entry["name"]] = entry
    return result


def entry_dir(entry: dict[str, Any], zoo_dir: Path = ZOO_DIR) -> Path:
    """The entry's directory, refused if its path leaves the zoo directory."""
    relative = Path(entry["path"])
    resolved = (zoo_dir / relative).resolve()
    if relative.is_absolute() or not resolved.is_relative_to(zoo_dir.resolve()):
        raise CheckpointError(f"zoo entry '{entry['name']}' has path '{entry['path']}' outside {zoo_dir}; refused")
    return resolved


def verify_entry(entry: dict[str, Any], zoo_dir: Path = ZOO_DIR) -> Path:
    """Check every file of an entry against its manifest sha256; returns the checkpoint directory."""
    directory = entry_dir(entry, zoo_dir)
    if not entry["files"]:
        raise CheckpointError(f"zoo entry '{entry['name']}' lists no files")
    verify_files(directory, entry["files"], f"{manifest_path(zoo_dir)} (entry '{entry['name']}')")
    return directory


def resolve_model(reference: str, zoo_dir: Path = ZOO_DIR) -> Path:
    """``zoo:<name>`` -> its verified directory; anything else is a checkpoint path (verified when loaded)."""
    if not reference.startswith("zoo:"):
        return Path(reference)
    name = reference[4:]
    entries = read_manifest(zoo_dir)
    if name not in entries:
        raise CheckpointError(f"unknown zoo checkpoint '{name}'; choose one of: {', '.join(sorted(entries)) or 'none'}")
    return verify_entry(entries[name], zoo_dir)


def write_entry(entry: dict[str, Any], zoo_dir: Path = ZOO_DIR) -> None:
    """Add or replace an entry (atomically rewriting the manifest)."""
    entries = read_manifest(zoo_dir)
    entries[entry["name"]] = entry
    body = {"format_version": 1, "checkpoints": [entries[k] for k in sorted(entries)]}
    atomic_write_text(manifest_path(zoo_dir), json.dumps(body, indent=1) + "\n")


def directory_files(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
