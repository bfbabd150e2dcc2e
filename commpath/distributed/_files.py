"""Captures where they lie: local paths or fsspec URLs (``s3://``, ``gs://``, ...), listed and fetched."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..decode.engine import CAPTURE_SUFFIXES
from ..errors import InputError


@dataclass(frozen=True)
class Source:
    """One capture file of a run: its name (a path or URL, as the ``capture`` column shows it),
    the manifest of its host, and its size in bytes."""

    name: str
    manifest: dict = field(default_factory=dict, hash=False, compare=False)
    size: int = 0

    @property
    def host(self) -> str | None:
        return self.manifest.get("host")


def is_url(name) -> bool:
    """A URL with a scheme (``s3://b/k``, ``file:///x``), as opposed to a local path."""
    return "://" in str(name)


def filesystem(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, path inside it) of ``url``."""
    import fsspec
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise InputError(url, f"cannot open this URL: {exc}") from None


def expand(inputs, storage_options: dict | None = None) -> list[Source]:
    """Every capture named or found below a named folder, in the order and with the manifests
    that ``commpath.read`` uses for local paths (URLs: sorted by path components likewise)."""
    from ..decode.engine import _expand   # the engine's own listing: one order and one manifest rule
    out: list[Source] = []
    for item in inputs:
        if not is_url(item):
            out += [Source(str(p), m, os.path.getsize(p)) for p, m in _expand([item])]
            continue
        fs, root = filesystem(str(item), storage_options)
        protocol = str(item).split("://", 1)[0]
        try:
            isdir = fs.isdir(root)
            files = (sorted((p for p in fs.find(root) if p.lower().endswith(CAPTURE_SUFFIXES)),
                            key=lambda p: PurePosixPath(p).parts) if isdir else [root] if fs.exists(root) else None)
        except OSError as exc:
            raise InputError(item, f"cannot list: {exc}") from None
        if files is None:
            raise InputError(item, "no such file or folder")
        if not files:
            raise InputError(item, "folder holds no capture files (*.pcap, *.pcapng, *.gz)")
        stop = root.rstrip("/") if isdir else str(PurePosixPath(root).parent)
        for p in files:
            out.append(Source(f"{protocol}://{p}", _remote_manifest(fs, p, stop), int(fs.size(p) or 0)))
    return out


def _remote_manifest(fs, path: str, stop: str) -> dict:
    """The manifest.json of the folder holding ``path`` (or its parent), as the engine looks for it."""
    for folder in (PurePosixPath(path).parent, PurePosixPath(path).parent.parent):
        m = f"{folder}/manifest.json"
        try:
            if fs.isfile(m):
                return json.loads(fs.cat_file(m))
        except (OSError, ValueError):
            return {}
        if str(folder) == stop:
            break
    return {}


@contextmanager
def local_copy(name: str, storage_options: dict | None = None, folder: str | None = None):
    """A local path holding the capture ``name``: itself, or a temporary copy of a remote object
    (streamed to disk, not held in memory), removed afterwards."""
    if not is_url(name):
        yield Path(name)
        return
    fs, path = filesystem(name, storage_options)
    tmp = tempfile.mkdtemp(prefix="commpath-", dir=folder)
    local = Path(tmp) / PurePosixPath(path).name
    try:
        try:
            fs.get_file(path, str(local))
        except (OSError, ValueError) as exc:
            raise InputError(name, f"cannot fetch: {exc}") from None
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload_folder(local: str | Path, url: str, storage_options: dict | None = None) -> None:
    """Copy the files of a local folder to ``url``; ``report.json`` last, since a folder reads back as
    an analysis once it is there."""
    fs, root = filesystem(url, storage_options)
    fs.makedirs(root, exist_ok=True)
    for p in sorted(Path(local).iterdir(), key=lambda p: (p.name == "report.json", p.name)):
        if p.is_file():
            try:
                fs.put_file(str(p), f"{root.rstrip('/')}/{p.name}")
            except OSError as exc:
                raise InputError(url, f"cannot write: {exc}") from None
