"""Container images of the real lab, built locally as OCI archives (no registry is reachable).

``pause``: a static pause binary compiled from ``images/pause.c``; ``labpod``: Debian's busybox-static
plus the lab's ``labpod`` program. Each archive is an OCI image layout in a tar, named by the
``io.containerd.image.name`` annotation that ``ctr images import`` reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from ...errors import CommpathError

PAUSE_IMAGE = "commpath.local/pause:1"
LABPOD_IMAGE = "commpath.local/labpod:1"
METRICS_SERVER_IMAGE = "commpath.local/metrics-server:1"
KONNECTIVITY_AGENT_IMAGE = "commpath.local/konnectivity-agent:1"
PAUSE_SOURCE = Path(__file__).with_name("images") / "pause.c"
BUSYBOX = Path("/bin/busybox")


def _layer(files: dict[str, tuple[Path, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, (src, mode) in sorted(files.items()):
            data = src.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
        for d in ("tmp", "etc", "var/run/secrets"):   # mount points the runtime expects
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            tar.addfile(info)
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def oci_archive(out: Path, name: str, files: dict[str, tuple[Path, int]], entrypoint: list[str]) -> Path:
    """Write an OCI image layout tar holding one single-layer linux/amd64 image called ``name``."""
    blobs: dict[str, bytes] = {}
    layer = _layer(files)
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(blobs, layer)}
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(blobs, json.dumps(manifest, sort_keys=True).encode()),
                     "platform": {"architecture": "amd64", "os": "linux"},
                     "annotations": {"io.containerd.image.name": name,
                                     "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        entries = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
                   "index.json": json.dumps(index).encode()}
        entries.update({f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()})
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out


def build_images(workdir: Path, labpod: Path, metrics_server: Path | None = None,
                 konnectivity_agent: Path | None = None) -> dict[str, Path]:
    """Compile pause, then write the archives into ``workdir``; returns image name -> archive."""
    gcc = shutil.which("gcc")
    if not gcc:
        raise CommpathError("real lab: gcc is needed to compile the pause binary (apt install gcc libc6-dev)")
    if not BUSYBOX.exists():
        raise CommpathError(f"real lab: {BUSYBOX} is missing (apt install busybox-static)")
    workdir.mkdir(parents=True, exist_ok=True)
    pause = workdir / "pause"
    res = subprocess.run([gcc, "-static", "-O2", "-o", str(pause), str(PAUSE_SOURCE)], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise CommpathError(f"real lab: compiling {PAUSE_SOURCE} failed: {res.stderr.strip()[-300:]}")
    images = {
        PAUSE_IMAGE: oci_archive(workdir / "pause.tar", PAUSE_IMAGE, {"pause": (pause, 0o755)}, ["/pause"]),
        LABPOD_IMAGE: oci_archive(workdir / "labpod.tar", LABPOD_IMAGE,
                                  {"bin/busybox": (BUSYBOX, 0o755), "bin/sh": (BUSYBOX, 0o755),
                                   "bin/labpod": (labpod, 0o755)}, ["/bin/labpod", "serve"]),
    }
    if metrics_server is not None:
        images[METRICS_SERVER_IMAGE] = oci_archive(workdir / "metrics-server.tar", METRICS_SERVER_IMAGE,
                                                   {"bin/metrics-server": (metrics_server, 0o755)},
                                                   ["/bin/metrics-server"])
    if konnectivity_agent is not None:
        images[KONNECTIVITY_AGENT_IMAGE] = oci_archive(workdir / "konnectivity-agent.tar", KONNECTIVITY_AGENT_IMAGE,
                                                       {"bin/konnectivity-agent": (konnectivity_agent, 0o755)},
                                                       ["/bin/konnectivity-agent"])
    return images
