"""Connection tracking over whole chunks: a compiled open-addressing table of flows (``cp_flow_update``)."""

from __future__ import annotations

from functools import cache

import numpy as np

from ._native import kernels, ptr

# Columns of the int64 flow matrix.
(SPORT, DPORT, PROTO, IPVER, FIRST_FRAME, LAST_FRAME, PK0, PK1, BY0, BY1, PL0, PL1, FLAGS,
 BASE0, BASE1, INIT, TUNNEL, VNI, VLAN, FRAGS, TRUNC, SLOT0, SLOT1, N_INT) = range(24)
# Columns of the uint64 address matrix.
SRC_HI, SRC_LO, DST_HI, DST_LO, TSRC_HI, TSRC_LO, TDST_HI, TDST_LO, N_ADDR = range(9)
# Columns of the float64 time matrix.
TS0, TS1, N_TIME = range(3)

# FLAGS bits.
F_SYN, F_SYNACK, F_HS_DONE, F_FIN0, F_FIN1, F_RST, F_BASE0, F_BASE1 = 1, 2, 4, 8, 16, 32, 64, 128
F_HARVESTED, F_DONE_QUEUED = 256, 512

# INIT values: how the initiator was chosen.
INIT_NAMES = {0: "syn", 1: "synack", 2: "port", 3: "first-packet", 4: "payload"}

# TCP flag bits.
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

#: Responder ports that mark a service even above 1024 (Kubernetes and common peers).
SERVICE_PORTS = np.array(sorted({
    1080, 1194, 1433, 1521, 2049, 2379, 2380, 3000, 3128, 3306, 4789, 5000, 5432, 5671, 5672,
    6081, 6379, 6443, 8000, 8008, 8080, 8081, 8088, 8132, 8443, 8472, 8888, 9000, 9090, 9093,
    9100, 9200, 9443, 10248, 10249, 10250, 10255, 10256, 10257, 10259, 11211, 27017, 51820,
}), dtype=np.int64)


class FlowTable:
    """Growable flow matrices plus the hash table that finds the current flow of a 5-tuple."""

    def __init__(self, capacity: int = 4096):
        _check_layout()
        self.fi = np.zeros((capacity, N_INT), np.int64)
        self.fa = np.zeros((capacity, N_ADDR), np.uint64)
        self.ft = np.zeros((capacity, N_TIME), np.float64)
        self.slots = np.full(capacity * 4, -1, np.int64)
        self.counts = np.zeros(4, np.int64)   # flows, distinct tuples, queued done, free slots

    @property
    def n(self) -> int:
        return int(self.counts[0])

    def _grow_flows(self) -> None:
        cap = self.fi.shape[0] * 2
        for name in ("fi", "fa", "ft"):
            try:    # realloc in place (mremap): the old and the new table never coexist at the largest size
                getattr(self, name).resize((cap, getattr(self, name).shape[1]))
            except ValueError:      # a view of it is alive: a copy leaves that view valid
                old = getattr(self, name)
                new = np.zeros((cap, old.shape[1]), old.dtype)
                new[: old.shape[0]] = old
                setattr(self, name, new)

    def _grow_slots(self) -> None:
        self.slots = np.full(self.slots.shape[0] * 2, -1, np.int64)
        kernels().cp_rehash(ptr(self.fa, np.uint64), ptr(self.fi, np.int64), int(self.counts[0]),
                            ptr(self.slots, np.int64), len(self.slots))

    def update(self, h, wirelen, caplen, ts, frame0, buf, limit, udp_timeout, pkt_flow, pkt_dir, arena, harvest):
        """Account every packet of a chunk; keep stream payload in ``arena``.

        ``harvest(flow_indices)`` is called whenever the arena's queue of completed flows
        needs emptying or it runs out of slots; it must release their slots.
        """
        start = 0
        n = len(wirelen)
        counts = self.counts
        update = kernels().cp_flow_update
        packets = (h.cols, ptr(wirelen, np.int32), ptr(caplen, np.int32), ptr(ts, np.float64), n, int(frame0))
        ports = (int(limit), float(udp_timeout), ptr(SERVICE_PORTS, np.int64), len(SERVICE_PORTS),
                 ptr(pkt_flow, np.int64), ptr(pkt_dir, np.int8))
        while start < n:
            counts[2] = arena.ndone
            counts[3] = arena.nfree
            start = update(*packets, ptr(self.fi, np.int64), ptr(self.fa, np.uint64), ptr(self.ft, np.float64),
                           len(self.fi), ptr(counts, np.int64), ptr(self.slots, np.int64), len(self.slots),
                           *ports, start, ptr(buf, np.uint8), ptr(arena.data, np.uint8), arena.data.shape[1],
                           ptr(arena.cov, np.uint8), arena.cov.shape[1], ptr(arena.meta, np.int64),
                           ptr(arena.marks, np.int64), arena.marks.shape[1], ptr(arena.free, np.int64),
                           ptr(arena.done, np.int64), len(arena.done))
            arena.ndone = int(counts[2])
            arena.nfree = int(counts[3])
            if start < n:
                if counts[0] >= self.fi.shape[0]:
                    self._grow_flows()
                if counts[1] * 2 >= self.slots.shape[0]:
                    self._grow_slots()
                if arena.ndone + 2 >= len(arena.done) or arena.nfree == 0:
                    harvest(arena.take_done())
                    if arena.nfree < len(arena.free) // 4:
                        if arena.can_grow():
                            arena.grow()
                        else:       # at the memory budget: the least recently active flows go first
                            harvest(arena.idle_victims(self.ft[:, TS1]))


@cache
def _check_layout() -> None:
    """The kernel's matrix layout must be the one declared here."""
    out = np.zeros(4, np.int64)
    kernels().cp_layout(ptr(out, np.int64))
    from ._reassembly import META
    if tuple(out.tolist()) != (N_INT, N_ADDR, N_TIME, META):
        raise RuntimeError(f"compiled kernels disagree with _flowtable's layout: {out.tolist()}")
