"""Container images of the real lab, built locally as OCI archives (no registry is reachable).

``pause``: a static pause binary compiled from ``images/pause.c``; ``labpod``: Debian's busybox-static
plus the lab's ``labpod`` program. Each archive is an OCI image layout in a tar, named by the
``io.containerd.image.name`` annotation that ``ctr images import`` reads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ...capture import oci
from ...errors import CommpathError

PAUSE_IMAGE = "commpath.local/pause:1"
LABPOD_IMAGE = "commpath.local/labpod:1"
METRICS_SERVER_IMAGE = "commpath.local/metrics-server:1"
KONNECTIVITY_AGENT_IMAGE = "commpath.local/konnectivity-agent:1"
PAUSE_SOURCE = Path(__file__).with_name("images") / "pause.c"
BUSYBOX = Path("/bin/busybox")


def oci_archive(out: Path, name: str, files: dict[str, tuple[Path, int]], entrypoint: list[str]) -> Path:
    """Write an OCI image layout tar holding one single-layer linux/amd64 image called ``name``."""
    oci.write_archive(out, name, files, {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"})
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
