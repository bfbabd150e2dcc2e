"""Decode layer: captures become flow records, handshakes and certificates."""

import os as _os
import tempfile as _tempfile


def _numba_cache_dir() -> None:
    """Compiled kernels are cached on disk; pick a writable place before numba loads."""
    if "NUMBA_CACHE_DIR" in _os.environ and _os.access(_os.environ["NUMBA_CACHE_DIR"], _os.W_OK):
        return
    here = _os.path.dirname(__file__)
    if _os.access(here, _os.W_OK) and (not _os.path.isdir(_os.path.join(here, "__pycache__"))
                                        or _os.access(_os.path.join(here, "__pycache__"), _os.W_OK)):
        return
    candidates = [_os.path.join(_os.path.expanduser("~"), ".cache", "commpath", "numba"),
                  _os.path.join(_tempfile.gettempdir(), f"commpath-numba-{_os.getuid()}")]
    for path in candidates:
        try:
            _os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if _os.access(path, _os.W_OK):
            _os.environ["NUMBA_CACHE_DIR"] = path
            return


_numba_cache_dir()
