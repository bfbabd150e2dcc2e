"""A benchmark's process set up as the `commpath` command sets itself up (cli.run), in this tree or an older one."""

from __future__ import annotations


def set_up_as_the_command() -> None:
    """The command's allocator threshold and garbage collector threshold, before its main()."""
    try:
        from commpath._process import collect_less, unmap_large_blocks
    except ImportError:         # an older tree (--baseline): the allocator only
        from commpath.cli import _unmap_large_blocks as unmap_large_blocks
        collect_less = None
    unmap_large_blocks()
    if collect_less is not None:
        collect_less()
