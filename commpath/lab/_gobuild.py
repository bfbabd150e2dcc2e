"""Builds the lab's Go TLS peers with the local Go toolchain (stdlib only), cached by source hash."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import CommpathError

SOURCE = Path(__file__).with_name("peer") / "main.go"
CACHE = Path(os.environ.get("COMMPATH_LAB_CACHE", Path.home() / ".cache" / "commpath-lab"))


def peer_binary() -> Path:
    """Path of the built `labpeer`, building it once per source version."""
    go = shutil.which("go")
    if not go:
        raise CommpathError("the lab needs the Go toolchain (apt install golang-go) to build its TLS peers")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target = CACHE / f"labpeer-{digest}"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="commpath-gobuild-") as tmp:
        shutil.copy(SOURCE, Path(tmp) / "main.go")
        env = dict(os.environ, GOTOOLCHAIN="local", GOCACHE=str(Path(tmp) / "cache"), GOPATH=str(Path(tmp) / "gopath"),
                   GO111MODULE="off", CGO_ENABLED="0", GOFLAGS="", GOPROXY="off")
        out = Path(tmp) / "labpeer"
        res = subprocess.run([go, "build", "-o", str(out), "main.go"], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=1200)
        if res.returncode != 0:
            raise CommpathError(f"{SOURCE}: go build failed: {res.stderr.strip().splitlines()[-1:]}")
        fd, partial = tempfile.mkstemp(prefix=f"{target.name}.", dir=CACHE)  # concurrent builds: rename is atomic
        os.close(fd)
        shutil.copy(out, partial)
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    return target
