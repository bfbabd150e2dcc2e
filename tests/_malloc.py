"""What glibc's allocator does with a block of a given size: mapped on its own, or from the heap."""

from __future__ import annotations


def mapped_apart(size: int) -> bool:
    """Whether glibc maps a block of ``size`` bytes on its own (its mmapped bytes grow) rather than
    giving it from the heap. Self-contained: sent by value to Dask workers."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblkhd - before >= size
    finally:
        libc.free(block)


def large_blocks_apart_from(low: int, high: int) -> bool:
    """A block of ``low`` bytes comes from the heap, one of ``high`` bytes is mapped on its own."""
    return not mapped_apart(low) and mapped_apart(high)
