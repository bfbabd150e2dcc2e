"""Compiled kernels: the C sources of ``_c/`` built once into a shared library and loaded with ctypes."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from ..errors import CommpathError

SOURCE_DIR = Path(__file__).resolve().parent / "_c"
CFLAGS = ("-O2", "-std=c11", "-fPIC", "-shared", "-fno-strict-aliasing", "-Wall")
#: The tests build with these too: the sources stay free of warnings (users' compilers may add new ones).
STRICT = ("-Werror",)


def sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.c"))


def digest() -> str:
    """Names the build: the sources, their headers, the flags and the machine."""
    h = hashlib.sha256(" ".join((*CFLAGS, platform.machine(), platform.system())).encode())
    for path in sorted(SOURCE_DIR.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def library_name() -> str:
    return f"libcommpath-{digest()}.so"


def _places() -> list[Path]:
    """Where a built library may already be: beside the sources, then the user's cache."""
    cache_root = os.environ.get("COMMPATH_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [SOURCE_DIR, Path(cache_root) / "commpath", Path(tempfile.gettempdir()) / f"commpath-{os.getuid()}"]


def build(target_dir: Path) -> Path:
    """Compile the sources into ``target_dir``; the file appears whole or not at all."""
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if cc is None:
        raise CommpathError("commpath needs a C compiler once, to build its kernels: install gcc "
                            "(apt install gcc libc6-dev)")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / library_name()
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target_dir)
    os.close(fd)
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", tmp, *map(str, sources())], capture_output=True, text=True)
        if done.returncode != 0:
            raise CommpathError(f"building commpath's kernels with {cc} failed: {done.stderr.strip()[:2000]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if target_dir == SOURCE_DIR:       # builds of earlier sources of this tree are of no more use
        for old in target_dir.glob("libcommpath-*.so"):
            if old != target:
                old.unlink(missing_ok=True)
    return target


#: ctypes signatures of kernels.c (and sha256.c): p pointer, i int64, I int, d double; then the result type.
_KERNELS = {
    "cp_index_pcap": ("p i I d I i i p p p p p p p", None),
    "cp_index_pcapng": ("p i p p p p i i p p p p p p", None),
    "cp_parse_headers": ("p i p p p p", None),
    "cp_layout": ("p", None),
    "cp_ipv4_texts": ("p i p p", None),
    "cp_rehash": ("p p i p i", None),
    "cp_pack_marks": ("p i p i p i p p p", None),
    "cp_select_tls": ("p p i p i p p i p p p p p p p", ctypes.c_int64),
    "cp_flow_update": ("p p p p i i p p p i p p i i d p i p p i p p i p i p p i p p i", ctypes.c_int64),
    "cp_sha256_many": ("p p i i p p", None),      # sha256.c
}
_CTYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "I": ctypes.c_int, "d": ctypes.c_double}


def ptr(a, dtype) -> int:
    """The address of a C-contiguous array of ``dtype``, for a kernel argument (checked: C trusts it)."""
    if a.dtype != dtype or not a.flags.c_contiguous:
        raise TypeError(f"kernel argument must be C-contiguous {dtype.__name__}, not {a.dtype} "
                        f"(contiguous: {a.flags.c_contiguous})")
    return a.ctypes.data


@cache
def kernels() -> ctypes.CDLL:
    """The library with the signatures of kernels.c declared."""
    library = lib()
    for name, (args, result) in _KERNELS.items():
        fn = getattr(library, name)
        fn.argtypes = [_CTYPES[c] for c in args.split()]
        fn.restype = result
    return library


@cache
def lib() -> ctypes.CDLL:
    """The kernels' library, built on first use if no current build exists."""
    name = library_name()
    for place in _places():
        if (place / name).is_file():
            return ctypes.CDLL(str(place / name))
    last: Exception | None = None
    for place in _places():
        try:
            return ctypes.CDLL(str(build(place)))
        except PermissionError as exc:     # a read-only install: the user's cache instead
            last = exc
        except OSError as exc:
            last = exc
    raise CommpathError(f"cannot build commpath's kernels: {last}")


@cache
def openssl_sha256():
    """libcrypto's SHA256_Init, SHA256_Update and SHA256_Final (the library Python's hashlib uses), as the
    three-pointer struct sha256.c takes; None without them."""
    import ctypes.util
    name = ctypes.util.find_library("crypto")
    try:
        crypto = ctypes.CDLL(name) if name else None
        addresses = [ctypes.cast(getattr(crypto, f"SHA256_{f}"), ctypes.c_void_p).value
                     for f in ("Init", "Update", "Final")] if crypto else None
    except (OSError, AttributeError):
        return None
    return (ctypes.c_void_p * 3)(*addresses) if addresses else None


def sha256_prefixes(data, offsets, keep: int = 32, openssl: bool = True):
    """The first ``keep`` bytes of the SHA-256 of each message ``data[offsets[i]:offsets[i + 1]]``, as
    one uint8 array of ``keep`` bytes per message (``data``: uint8, ``offsets``: int64, both C-contiguous);
    hashed by OpenSSL when it is there and ``openssl``, else by the kernel's own rounds."""
    import numpy as np
    if not 0 < keep <= 32:
        raise ValueError(f"keep must be 1..32 bytes, not {keep}")
    n = len(offsets) - 1
    if n > 0 and (offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any()):
        raise ValueError("message offsets outside the data")
    out = np.empty(max(n, 0) * keep, np.uint8)
    if n > 0:
        data = data if len(data) else np.zeros(1, np.uint8)
        functions = openssl_sha256() if openssl else None
        kernels().cp_sha256_many(ptr(data, np.uint8), ptr(offsets, np.int64), n, keep, ptr(out, np.uint8),
                                 ctypes.addressof(functions) if functions else None)
    return out
