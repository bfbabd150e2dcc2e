"""The compiled kernels: built from the bundled C sources with the system compiler, loaded with ctypes."""

import ctypes
from pathlib import Path

import numpy as np
import pytest

from commpath.decode import _flowtable as ft
from commpath.decode import _native
from commpath.decode._reassembly import META
from commpath.errors import CommpathError


def test_build_from_sources_gives_a_library_with_the_declared_layout(tmp_path):
    lib_path = _native.build(tmp_path)
    assert lib_path.name == _native.library_name() and lib_path.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [lib_path.name]      # no temporary file left behind
    lib = ctypes.CDLL(str(lib_path))
    out = np.zeros(4, np.int64)
    lib.cp_layout(ctypes.c_void_p(out.ctypes.data))
    assert out.tolist() == [ft.N_INT, ft.N_ADDR, ft.N_TIME, META]


def test_sources_compile_without_warnings(tmp_path, monkeypatch):
    monkeypatch.setattr(_native, "CFLAGS", _native.CFLAGS + _native.STRICT)
    assert _native.build(tmp_path).is_file()


def test_digest_names_the_sources_and_flags(monkeypatch):
    before = _native.digest()
    monkeypatch.setattr(_native, "CFLAGS", _native.CFLAGS + ("-DCHANGED",))
    assert _native.digest() != before


def test_no_compiler_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))          # neither cc nor gcc to be found
    with pytest.raises(CommpathError, match="needs a C compiler once.*install gcc"):
        _native.build(tmp_path / "lib")


def test_compiler_errors_are_reported_not_hidden(tmp_path, monkeypatch):
    bad = tmp_path / "src"
    bad.mkdir()
    (bad / "broken.c").write_text("int f(void) { return }\n")
    monkeypatch.setattr(_native, "SOURCE_DIR", bad)
    with pytest.raises(CommpathError, match="building commpath's kernels .* failed: .*broken.c"):
        _native.build(tmp_path / "lib")
    assert not any((tmp_path / "lib").iterdir())      # nothing half-written


def test_unwritable_first_place_falls_back_to_the_next(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = tmp_path / "cache"
    monkeypatch.setattr(_native, "_places", lambda: [blocker / "commpath", cache])
    _native.lib.cache_clear()
    try:
        lib = _native.lib()
        assert lib._name == str(cache / _native.library_name())
        assert _native.lib() is lib                           # built once, then the same library
    finally:
        _native.lib.cache_clear()


def test_kernel_arguments_are_checked():
    with pytest.raises(TypeError, match="C-contiguous int64"):
        _native.ptr(np.zeros(4, np.int32), np.int64)
    with pytest.raises(TypeError, match="contiguous: False"):
        _native.ptr(np.zeros(8, np.int64)[::2], np.int64)


def test_reading_pauses_the_cycle_collector_and_restores_it():
    import gc

    import commpath

    capture = sorted((Path(__file__).resolve().parents[1] / "captures").glob("*/*/*.pcap"))[0]
    seen = []
    commpath.read(capture, on_streams=lambda fs: seen.append(gc.isenabled()))
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        commpath.read(capture)
        assert not gc.isenabled()          # a caller's choice is left as it was
    finally:
        gc.enable()
    with pytest.raises(commpath.InputError):
        commpath.read(capture.parent / "missing.pcap")
    assert gc.isenabled()


def test_objects_made_while_paused_join_the_oldest_generation():
    """After a read no collection is pending over what it made: its objects are in the oldest generation,
    where a full collection still finds cycles among them; a program's own frozen objects stay frozen."""
    import gc

    import commpath

    capture = sorted((Path(__file__).resolve().parents[1] / "captures").glob("*/*/*.pcap"))[0]
    gc.collect()
    cap = commpath.read(capture)
    assert gc.get_count()[0] < 50 and gc.get_freeze_count() == 0
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(cap) in oldest and id(cap.streams) in oldest

    class Cycle:
        pass

    from commpath.decode.engine import collector_paused
    with collector_paused():
        ring = Cycle()
        ring.me = ring
    ring_id = id(ring)
    del ring
    assert ring_id in {id(o) for o in gc.get_objects(generation=2)}
    assert gc.collect() >= 1 and ring_id not in {id(o) for o in gc.get_objects()}

    kept = [Cycle() for _ in range(3)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        commpath.read(capture)
        assert gc.get_freeze_count() == frozen       # the program's permanent generation is left alone
    finally:
        gc.unfreeze()
    assert kept
