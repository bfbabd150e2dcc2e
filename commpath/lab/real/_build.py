"""Builds the real lab's Kubernetes binaries from upstream modules into a cache keyed by release and go.mod.

The cold build compiles kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
kubectl, the Konnectivity server and agent, metrics-server and the lab's own pod program (`labpod`) in
one `go build` of one module graph, so that shared packages compile once; Go's build cache and module
cache make later builds incremental, and the binaries folder ``~/.cache/commpath-k8s/<release>/bin-<digest>``
(the digest of go.mod, go.sum, labpod's source and the linker flags) makes a warm start a directory check.
Keying the folder by digest lets work trees with different go.mod files share the cache without
rebuilding each other's binaries.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...errors import CommpathError

GO_MODULE = Path(__file__).with_name("go")
CACHE = Path(os.environ.get("COMMPATH_K8S_CACHE", Path.home() / ".cache" / "commpath-k8s"))
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
#: binary name -> package of the other upstream commands (`go build -o DIR/` names a binary after its package)
ADDONS = {"konnectivity-server": "sigs.k8s.io/apiserver-network-proxy/cmd/server",
          "konnectivity-agent": "sigs.k8s.io/apiserver-network-proxy/cmd/agent",
          "metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"}
LOCAL_COMMANDS = ("labpod",)
BUILD_TIMEOUT = 3600.0


def release() -> str:
    """The Kubernetes release go.mod requires, e.g. ``v1.36.3``."""
    m = re.search(r"^(?:require\s+)?\s*k8s\.io/kubernetes (v\S+)", (GO_MODULE / "go.mod").read_text(), re.M)
    if not m:
        raise CommpathError(f"{GO_MODULE / 'go.mod'}: no `require k8s.io/kubernetes vX.Y.Z` line")
    return m.group(1)


def digest() -> str:
    h = hashlib.sha256(_ldflags(release()).encode())
    for f in [GO_MODULE / "go.mod", GO_MODULE / "go.sum", *sorted((GO_MODULE / "cmd").rglob("*.go"))]:
        h.update(f.relative_to(GO_MODULE).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE / release() / f"bin-{digest()}"


def _ldflags(rel: str) -> str:
    major, minor = rel.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):   # the user agent uses the latter
        flags += [f"-X {pkg}.gitVersion={rel}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}",
                  f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


def build_env() -> dict:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise CommpathError("the real lab needs the Go toolchain (go 1.26 in /usr/local/go/bin)")
    path = os.pathsep.join([str(Path(go).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-trimpath -mod=readonly")


def _fresh(target: Path) -> bool:
    stamp = target / ".digest"
    return (stamp.exists() and stamp.read_text().strip() == digest()
            and all((target / n).exists() for n in _names()))


def _names() -> tuple[str, ...]:
    return COMMANDS + tuple(ADDONS) + LOCAL_COMMANDS


def binaries(log=None) -> dict[str, Path]:
    """Name -> path of every lab binary, building them first if the cache does not hold this go.mod's.

    A build holds a lock, so a caller arriving while another process builds (scripts/test.sh starts
    the cold build beside the other tests) waits for it instead of building twice."""
    target = bin_dir()
    if not _fresh(target) and _fresh(target.with_name("bin")):
        target = target.with_name("bin")        # built before folders were keyed by digest, from this go.mod
    if not _fresh(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f"build-{digest()}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _fresh(target):
                build(log)
    return {n: target / n for n in _names()}


def build(log=None) -> float:
    """Build every binary into the cache; returns the seconds it took."""
    say = log or (lambda msg: print(f"real-lab: {msg}", file=sys.stderr, flush=True))
    rel, target = release(), bin_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    env = build_env()
    pkgs = ([f"k8s.io/kubernetes/cmd/{c}" for c in COMMANDS] + list(ADDONS.values())
            + [f"./cmd/{c}" for c in LOCAL_COMMANDS])
    say(f"building Kubernetes {rel} ({', '.join(COMMANDS + tuple(ADDONS))}) into {target}; a cold build takes long")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bin.", dir=target.parent) as tmp:
        log_path = target.parent / f"build-{digest()}.log"
        with open(log_path, "w") as fh:
            res = subprocess.run(["nice", "-n", "15", "go", "build", "-ldflags", _ldflags(rel), "-o", tmp + "/", *pkgs],
                                 cwd=GO_MODULE, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        if res.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise CommpathError(f"real lab: go build failed ({log_path}): {' | '.join(tail)}")
        for name, pkg in ADDONS.items():
            os.rename(Path(tmp, pkg.rsplit("/", 1)[1]), Path(tmp, name))
        Path(tmp, ".digest").write_text(digest() + "\n")
        old = target.with_name(f"bin.old.{os.getpid()}")
        if target.exists():
            target.rename(old)
        os.rename(tmp, target)
        os.makedirs(tmp)  # TemporaryDirectory removes it again
        shutil.rmtree(old, ignore_errors=True)
    seconds = time.monotonic() - t0
    say(f"built {rel} in {seconds:.0f}s")
    return seconds


if __name__ == "__main__":      # scripts/test.sh: build (or find) the binaries ahead of tests/test_real_lab.py
    print("\n".join(str(p) for p in binaries().values()))
