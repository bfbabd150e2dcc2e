"""Whether a BPF capture filter passes a TCP packet between two addresses, by libpcap's own matcher.

libpcap compiles and runs the filter (``pcap_compile`` + ``pcap_offline_filter``, as tcpdump does),
through ctypes: no maintained Python binding exposes ``pcap_offline_filter``, scapy compiles filters
by running tcpdump and has no matcher, and a subprocess per question would cost more than the answer.
Only the few bytes of headers that a filter can test are built here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ipaddress
import struct

DLT_EN10MB = 1
_NETMASK_UNKNOWN = 0xFFFFFFFF


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class FilterError(ValueError):
    """The filter does not compile (libpcap's message)."""


@functools.lru_cache(maxsize=1)
def _libpcap():
    name = ctypes.util.find_library("pcap")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_offline_filter.argtypes = [ctypes.POINTER(_BpfProgram), ctypes.POINTER(_PktHdr), ctypes.c_char_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def available() -> bool:
    """Whether libpcap can be loaded here."""
    return _libpcap() is not None


def tcp_syn(src: str, dst: str, sport: int, dport: int) -> bytes | None:
    """An Ethernet frame carrying a TCP SYN from src:sport to dst:dport; None when the families differ."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version != b.version:
        return None
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    if a.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, a.packed, b.packed)
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, a.packed, b.packed)
        ethertype = 0x86DD
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + ip + tcp


class Matcher:
    """A compiled filter: ``passes(frame)`` says whether the capture would have kept the frame."""

    def __init__(self, expression: str):
        lib = _libpcap()
        if lib is None:
            raise FilterError("libpcap is not installed")
        self._lib = lib
        self._pcap = lib.pcap_open_dead(DLT_EN10MB, 262144)
        self._prog = _BpfProgram()
        if lib.pcap_compile(self._pcap, ctypes.byref(self._prog), expression.encode(), 1, _NETMASK_UNKNOWN) != 0:
            message = lib.pcap_geterr(self._pcap).decode(errors="replace")
            lib.pcap_close(self._pcap)
            self._pcap = None
            raise FilterError(message)

    def passes(self, frame: bytes) -> bool:
        hdr = _PktHdr(0, 0, len(frame), len(frame))
        return self._lib.pcap_offline_filter(ctypes.byref(self._prog), ctypes.byref(hdr), frame) != 0

    def close(self) -> None:
        if self._pcap is not None:
            self._lib.pcap_freecode(ctypes.byref(self._prog))
            self._lib.pcap_close(self._pcap)
            self._pcap = None

    def __enter__(self) -> "Matcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["FilterError", "Matcher", "available", "tcp_syn"]
