"""The capture agent's container image, written as an OCI archive from this machine's own files.

``python -m commpath.capture.cluster_image --out commpath-agent.tar`` needs no Docker daemon and
no registry: the image's one layer holds this interpreter (binary, shared libraries, the standard
library without its tests, GUI and packaging parts), PyYAML, the ``commpath`` modules the agent
imports (``commpath.capture``, the catalog), ``dumpcap`` and ``ip``, each with the shared
libraries ``ldd`` names. The archive is an OCI image layout in a tar that
``ctr images import`` reads and ``skopeo copy oci-archive:commpath-agent.tar docker://REGISTRY/...``
pushes (the archive itself is written by ``oci``, which the real lab's images share). The layer is
gzip-compressed and written file by file, so memory stays small.

dumpcap, not tcpdump, is the engine in the pod: started as root with only NET_RAW and NET_ADMIN,
tcpdump cannot give up root (``-Z root`` needs CAP_SETUID) nor hand its file to the ``tcpdump`` user
(CAP_CHOWN), while dumpcap needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import CommpathError
from . import oci

DEFAULT_NAME = f"commpath.local/commpath-agent:{__version__}"
#: Parts of the standard library the agent never imports (tests alone are two thirds of it).
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "site-packages",
               "distutils", "unittest", "venv", "sqlite3", "dbm", "curses", "xmlrpc", "wsgiref", "__phello__"}
STDLIB_SKIP_PREFIX = ("config-",)
#: Extension modules for the parts skipped above and for GUI/terminal libraries.
DYNLOAD_SKIP = re.compile(r"^(_tkinter|_curses|_curses_panel|_sqlite3|_dbm|_gdbm|readline|_test|xx|_xx|_ctypes_test)")
TOOLS = ("dumpcap", "ip")
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
PREFIX = "usr/local"
LIBDIR = "lib/x86_64-linux-gnu"
#: Loaded with dlopen, so ldd does not name it: glibc needs it to end a thread (dumpcap does).
DLOPENED = ("libgcc_s.so.1",)


def _ldd(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (resolved), the dynamic loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 and parts[2].startswith("/") else (
            parts[0] if parts and parts[0].startswith("/") else None)
        if path:
            libs.append(Path(path))
    return libs


class _Rootfs:
    """Files of the image: path in the image -> (source file, mode); directories are implied."""

    def __init__(self, stage: Path):
        self.stage = stage
        self.files: dict[str, tuple[Path, int]] = {}
        self.data: dict[str, tuple[bytes, int]] = {}
        self.strip = shutil.which("strip")

    def add_elf(self, dest: str, src: Path, mode: int = 0o755) -> None:
        """A binary or shared library without its debug symbols (libpython: 23 MB -> 5 MB) when binutils'
        strip is there, else as it is."""
        src = Path(src).resolve()
        if self.strip:
            target = self.stage / "elf" / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            if subprocess.run([self.strip, "--strip-unneeded", str(target)], capture_output=True,
                              timeout=120).returncode == 0:
                src = target
        self.add(dest, src, mode)

    def add(self, dest: str, src: Path, mode: int | None = None) -> None:
        src = Path(src).resolve()
        self.files[dest.lstrip("/")] = (src, mode if mode is not None else (0o755 if os.access(src, os.X_OK) else 0o644))

    def add_text(self, dest: str, text: str, mode: int = 0o644) -> None:
        self.data[dest.lstrip("/")] = (text.encode(), mode)

    def add_binary(self, dest: str, src: Path) -> None:
        self.add_elf(dest, src)
        self.add_libs(src)

    def add_libs(self, binary: Path) -> None:
        for lib in _ldd(binary):
            if lib.name.startswith("ld-linux"):
                self.add(f"lib64/{lib.name}", lib, 0o755)
            elif f"{LIBDIR}/{lib.name}" not in self.files:
                self.add_elf(f"{LIBDIR}/{lib.name}", lib, 0o644)

    def add_tree(self, dest: str, src: Path, skip=lambda rel: False) -> None:
        for path in sorted(Path(src).rglob("*")):
            rel = path.relative_to(src)
            if path.is_file() and not skip(rel) and "__pycache__" not in rel.parts:
                self.add(f"{dest}/{rel}", path)

    def size(self) -> int:
        return sum(src.stat().st_size for src, _ in self.files.values()) + sum(len(d) for d, _ in self.data.values())


def _python(fs: _Rootfs, stage: Path) -> None:
    """The interpreter at /usr/local/bin/python3 with its standard library beside it (sys.prefix is found
    from the binary's place), and each module compiled to bytecode (the root file system is read-only)."""
    exe = Path(sys.executable).resolve()
    fs.add_binary(f"{PREFIX}/bin/python3", exe)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = lambda rel: rel.parts[0] in STDLIB_SKIP or rel.parts[0].startswith(STDLIB_SKIP_PREFIX)  # noqa: E731
    fs.add_tree(f"{PREFIX}/lib/{PY}", stdlib, lambda rel: skip(rel) or rel.parts[0] == "lib-dynload")
    dynload = stdlib / "lib-dynload"
    for so in sorted(dynload.glob("*.so")):
        if not DYNLOAD_SKIP.match(so.name):
            fs.add_elf(f"{PREFIX}/lib/{PY}/lib-dynload/{so.name}", so, 0o644)
            fs.add_libs(so)
    import yaml
    site = f"{PREFIX}/lib/{PY}/site-packages"
    fs.add_tree(f"{site}/yaml", Path(yaml.__file__).parent, lambda rel: rel.suffix == ".so")
    for so in Path(yaml.__file__).parent.glob("_yaml*.so"):
        fs.add_elf(f"{site}/yaml/{so.name}", so, 0o644)
        fs.add_libs(so)
    pkg = Path(__file__).resolve().parents[1]
    for rel in ("__init__.py", "_version.py", "errors.py"):
        fs.add(f"{site}/commpath/{rel}", pkg / rel)
    fs.add_tree(f"{site}/commpath/capture", pkg / "capture", lambda rel: rel.suffix != ".py")
    fs.add_tree(f"{site}/commpath/cfg", pkg / "cfg", lambda rel: rel.suffix != ".yaml")
    _compile(fs, stage)


def _compile(fs: _Rootfs, stage: Path) -> None:
    """Bytecode for every .py of the image, where the interpreter looks for it (__pycache__)."""
    from importlib.util import cache_from_source

    for dest, (src, _) in list(fs.files.items()):
        if not dest.endswith(".py"):
            continue
        pyc = cache_from_source("/" + dest)
        target = stage / pyc.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            py_compile.compile(str(src), cfile=str(target), dfile="/" + dest, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            continue            # a file of the standard library that does not compile (test data): left as source
        fs.add(pyc, target, 0o644)


def rootfs() -> tuple[_Rootfs, tempfile.TemporaryDirectory]:
    """Everything the agent image holds; the temporary folder keeps the compiled bytecode until written."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise CommpathError(f"agent image: {', '.join(missing)} not installed (apt install wireshark-common iproute2)")
    if not shutil.which("ldd"):
        raise CommpathError("agent image: ldd is needed to find the shared libraries (apt install libc-bin)")
    stage = tempfile.TemporaryDirectory(prefix="commpath-image-")
    fs = _Rootfs(Path(stage.name))
    _python(fs, Path(stage.name))
    for tool in TOOLS:
        fs.add_binary(f"usr/bin/{tool}", Path(shutil.which(tool)))
    libc = next(src for dest, (src, _) in fs.files.items() if dest.endswith("/libc.so.6"))
    for name in DLOPENED:
        for where in (Path(f"/{LIBDIR}"), Path(f"/usr/{LIBDIR}"), libc.parent):
            if (where / name).exists():
                fs.add_elf(f"{LIBDIR}/{name}", where / name, 0o644)
                break
    fs.add_text("etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\n")
    fs.add_text("etc/group", "root:x:0:\n")
    return fs, stage


def build(out: Path, name: str = DEFAULT_NAME) -> dict:
    """Write the OCI archive; returns its name, digests and sizes (files, layer, archive)."""
    fs, stage = rootfs()
    with stage:
        rootfs_bytes = fs.size()
        info = oci.write_archive(
            Path(out), name, fs.files, data=fs.data, dirs=oci.MOUNT_POINTS + ("captures", "etc/commpath"),
            compress=True,
            image_config={"Entrypoint": [f"/{PREFIX}/bin/python3", "-m", "commpath.capture.cluster_pod"],
                          "Cmd": ["run"], "WorkingDir": "/",
                          "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1",
                                  "PYTHONUNBUFFERED=1"]},
            labels={"org.opencontainers.image.title": "commpath capture agent",
                    "org.opencontainers.image.version": __version__})
    return {"name": name, "archive": str(out), "manifest_digest": info["manifest_digest"],
            "files": len(fs.files) + len(fs.data), "rootfs_bytes": rootfs_bytes, "layer_bytes": info["layer_bytes"],
            "layer_gzip_bytes": info["layer_stored_bytes"], "archive_bytes": info["archive_bytes"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m commpath.capture.cluster_image", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="commpath-agent.tar", help="the OCI archive to write")
    p.add_argument("--name", default=DEFAULT_NAME, help="the image's name (what `ctr images import` calls it)")
    args = p.parse_args(argv)
    try:
        info = build(Path(args.out), args.name)
    except CommpathError as exc:
        print(f"commpath: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1))
    print(f"agent image {info['name']}: {info['archive']} ({info['archive_bytes'] / 1e6:.1f} MB; "
          f"{info['layer_bytes'] / 1e6:.1f} MB unpacked). Push it with "
          f"`skopeo copy oci-archive:{info['archive']} docker://REGISTRY/commpath-agent:{__version__}`, "
          f"or import it on a node with `ctr -n k8s.io images import {info['archive']}`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
