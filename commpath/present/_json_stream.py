"""report.json read one top-level key at a time, its arrays one element at a time.

A million connections' report.json is about 1.9 GB; ``json.load`` holds its text twice (bytes, then
str) and every flow and finding as a dict, over 10 GB. `commpath diff` needs each finding's keys and
the paths, `report` of an analyze folder only the captures and clock offsets. The json module has no
streaming reader, but its ``raw_decode`` decodes one value at a given place: the file is read in
windows of :data:`WINDOW` characters and the top level walked here, so memory holds one window,
one element and what the caller keeps of each.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from pathlib import Path

#: characters of the file held at once (more while one value is longer)
WINDOW = 1 << 22
_NOT_WS = re.compile(r"[^ \t\n\r]")
#: characters that may go on a number (nothing else in valid JSON follows a value directly)
_NUMBER_TAIL = frozenset("0123456789.eE+-")


class _Reader:
    def __init__(self, fh):
        self.fh = fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.eof = False
        self.json = json.JSONDecoder()

    def _more(self) -> bool:
        """Read the next window onto the text (the part already walked dropped); False at the end."""
        if self.eof:
            return False
        chunk = self.fh.read(WINDOW)
        self.text = self.text[self.pos:] + self.decoder.decode(chunk, final=not chunk)
        self.pos = 0
        self.eof = not chunk
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end), not consumed."""
        while True:
            m = _NOT_WS.search(self.text, self.pos)
            if m is not None:
                self.pos = m.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            raise ValueError(f"expected one of {chars!r} at character {self.pos} of the window, found {ch!r}")
        self.pos += 1
        return ch

    def value(self):
        """The next JSON value, decoded. A value is taken once a character that cannot continue it
        follows in the window (a number cut at its end, "1" of "1.5", would decode as a shorter one);
        else it is read again with more text."""
        self.peek()
        while True:
            try:
                obj, end = self.json.raw_decode(self.text, self.pos)
                if self.eof or (end < len(self.text) and self.text[end] not in _NUMBER_TAIL):
                    self.pos = end
                    return obj
            except json.JSONDecodeError:
                if self.eof:
                    raise
            if not self._more():
                obj, self.pos = self.json.raw_decode(self.text, self.pos)
                return obj


def read_sections(path: str | Path, each: dict[str, Callable] | None = None, keep: set[str] | None = None) -> dict:
    """The top-level object of ``path``: every key's value, or only ``keep``'s. A key of ``each`` whose
    value is an array has its elements passed one at a time to ``each[key]``; the list of what that
    returns (None left out) is the value kept. Other arrays not kept are walked element by element and
    dropped. ValueError (json.JSONDecodeError) when the file is not such an object."""
    each = each or {}
    out: dict = {}
    with open(path, "rb") as fh:
        r = _Reader(fh)
        r.expect("{")
        if r.peek() == "}":
            return out
        while True:
            key = r.value()
            if not isinstance(key, str):
                raise ValueError("a key of the top-level object is not a string")
            r.expect(":")
            wanted = keep is None or key in keep or key in each
            if r.peek() == "[" and (key in each or not wanted):
                fn = each.get(key) if wanted else None
                r.expect("[")
                items = []
                if r.peek() != "]":
                    while True:
                        item = r.value()
                        if fn is not None:
                            got = fn(item)
                            if got is not None:
                                items.append(got)
                        if r.expect(",]") == "]":
                            break
                else:
                    r.expect("]")
                if wanted:
                    out[key] = items
            else:
                v = r.value()
                if wanted:
                    out[key] = v
            if r.expect(",}") == "}":
                break
        if r.peek():
            raise ValueError("text after the top-level object")
    return out


__all__ = ["WINDOW", "read_sections"]
