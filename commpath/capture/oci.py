"""OCI image archives (an image layout in a tar, one linux/amd64 image of one layer) written without Docker.

Shared by the capture agent's image (``cluster_image``) and the real lab's pod images, which ``ctr images
import`` reads by the ``io.containerd.image.name`` annotation. The layer is streamed file by file to a
temporary file (optionally gzip-compressed), so memory stays small whatever the image's size; names,
modes and times are fixed, so the same files give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: Mount points a container runtime expects to find in the image.
MOUNT_POINTS = ("tmp", "etc", "proc", "sys", "dev", "var/run/secrets")


class _Digest(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink=None):
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        if self.sink is not None:
            self.sink.write(b)
        return len(b)


def _parents(paths, extra) -> list[str]:
    out: set[str] = set(extra)
    for p in paths:
        parent = Path(p).parent
        while str(parent) not in (".", "/"):
            out.add(str(parent))
            parent = parent.parent
    return sorted(out)


def write_layer(out, files: dict[str, tuple[Path, int]], data: dict[str, tuple[bytes, int]] | None = None,
                dirs=MOUNT_POINTS) -> None:
    """The layer tar into the stream ``out``: every parent directory and ``dirs`` (0o755, ``tmp`` 0o1777), then
    ``files`` (image path -> (source file, mode)) and ``data`` (image path -> (bytes, mode)), in sorted order."""
    data = data or {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for d in _parents(list(files) + list(data), dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            tar.addfile(info)
        for name, (src, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = Path(src).stat().st_size, mode, 0
            with open(src, "rb") as fh:
                tar.addfile(info, fh)
        for name, (blob, mode) in sorted(data.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), mode, 0
            tar.addfile(info, io.BytesIO(blob))


def write_archive(out: Path, name: str, files: dict[str, tuple[Path, int]], image_config: dict, *,
                  data: dict[str, tuple[bytes, int]] | None = None, dirs=MOUNT_POINTS, compress: bool = False,
                  labels: dict[str, str] | None = None) -> dict:
    """Write the OCI archive ``out`` of the image ``name`` (``registry/repo:tag``); ``image_config`` is the
    image's run configuration (Entrypoint, Cmd, Env, WorkingDir...). The archive appears whole or not at all.
    Returns the manifest digest and the sizes (layer unpacked and as stored, archive)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="commpath-oci-", dir=out.parent) as tmp:
        layer_file = Path(tmp) / "layer"
        with open(layer_file, "wb") as fh:
            stored = _Digest(fh)
            if compress:
                with gzip.GzipFile(fileobj=stored, mode="wb", mtime=0, compresslevel=6) as gz:
                    plain = _Digest(gz)
                    write_layer(plain, files, data, dirs)
            else:
                plain = stored
                write_layer(plain, files, data, dirs)
        blobs: dict[str, bytes] = {}

        def blob(content: bytes) -> dict:
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
            blobs[digest] = content
            return {"digest": digest, "size": len(content)}
        layer_desc = {"mediaType": LAYER_TAR_GZIP if compress else LAYER_TAR,
                      "digest": "sha256:" + stored.sha.hexdigest(), "size": stored.size}
        run = dict(image_config)
        if labels:
            run["Labels"] = dict(labels)
        config = {"architecture": "amd64", "os": "linux", "config": run,
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + plain.sha.hexdigest()]}}
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **blob(json.dumps(config, sort_keys=True).encode())}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         **blob(json.dumps(manifest, sort_keys=True).encode()),
                         "platform": {"architecture": "amd64", "os": "linux"},
                         "annotations": {"io.containerd.image.name": name,
                                         "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        part = out.with_name(out.name + ".part")
        with tarfile.open(part, "w") as tar:
            small = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
                     "index.json": json.dumps(index).encode(),
                     **{f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()}}
            for path, content in small.items():
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(content), 0o644, 0
                tar.addfile(info, io.BytesIO(content))
            info = tarfile.TarInfo(f"blobs/sha256/{stored.sha.hexdigest()}")
            info.size, info.mode, info.mtime = stored.size, 0o644, 0
            with open(layer_file, "rb") as fh:
                tar.addfile(info, fh)
        part.replace(out)
    return {"manifest_digest": manifest_desc["digest"], "layer_bytes": plain.size, "layer_stored_bytes": stored.size,
            "archive_bytes": out.stat().st_size}
