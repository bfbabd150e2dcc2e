"""Connection tracking over whole chunks: a compiled open-addressing table of flows."""

from __future__ import annotations

import numba
import numpy as np

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
            old = getattr(self, name)
            new = np.zeros((cap, old.shape[1]), old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def _grow_slots(self) -> None:
        self.slots = np.full(self.slots.shape[0] * 2, -1, np.int64)
        _rehash(self.fa, self.fi, self.counts[0], self.slots)

    def update(self, h, wirelen, caplen, ts, frame0, buf, limit, udp_timeout, pkt_flow, pkt_dir, arena, harvest):
        """Account every packet of a chunk; keep stream payload in ``arena``.

        ``harvest(flow_indices)`` is called whenever the arena's queue of completed flows
        needs emptying or it runs out of slots; it must release their slots.
        """
        start = 0
        n = len(wirelen)
        counts = self.counts
        while start < n:
            counts[2] = arena.ndone
            counts[3] = arena.nfree
            start = _update(
                h.status, h.ipver, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, h.proto, h.sport, h.dport,
                h.flags, h.seq, h.pl_cap, h.pl_wire, h.frag, h.tunnel, h.tun_src_hi, h.tun_src_lo,
                h.tun_dst_hi, h.tun_dst_lo, h.vni, h.vlan, wirelen, caplen, ts, frame0,
                self.fi, self.fa, self.ft, counts, self.slots, limit, udp_timeout,
                SERVICE_PORTS, pkt_flow, pkt_dir, start,
                buf, h.pl_off, arena.data, arena.cov, arena.meta, arena.marks, arena.free, arena.done)
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
                            harvest(arena.idle_victims(self.fi, self.ft[:, TS1], self.n))


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(x):
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@numba.njit(cache=True, nogil=True, inline="always")
def _endpoint_hash(hi, lo, port):
    return _mix(hi ^ _mix(lo ^ (np.uint64(port) << np.uint64(40))))


@numba.njit(cache=True, nogil=True)
def _tuple_hash(ahi, alo, ap, bhi, blo, bp, proto):
    return _mix(_endpoint_hash(ahi, alo, ap) + _endpoint_hash(bhi, blo, bp) + np.uint64(proto))


@numba.njit(cache=True, nogil=True)
def _rehash(fa, fi, nflows, slots):
    """Rebuild the slot table: each tuple points at its latest flow."""
    mask = slots.shape[0] - 1
    for f in range(nflows):
        hh = _tuple_hash(fa[f, SRC_HI], fa[f, SRC_LO], fi[f, SPORT], fa[f, DST_HI], fa[f, DST_LO], fi[f, DPORT], fi[f, PROTO])
        j = np.int64(hh & np.uint64(mask))
        while slots[j] != -1:
            g = slots[j]
            if (fi[g, PROTO] == fi[f, PROTO] and fa[g, SRC_HI] == fa[f, SRC_HI] and fa[g, SRC_LO] == fa[f, SRC_LO]
                    and fa[g, DST_HI] == fa[f, DST_HI] and fa[g, DST_LO] == fa[f, DST_LO]
                    and fi[g, SPORT] == fi[f, SPORT] and fi[g, DPORT] == fi[f, DPORT]) or \
               (fi[g, PROTO] == fi[f, PROTO] and fa[g, SRC_HI] == fa[f, DST_HI] and fa[g, SRC_LO] == fa[f, DST_LO]
                    and fa[g, DST_HI] == fa[f, SRC_HI] and fa[g, DST_LO] == fa[f, SRC_LO]
                    and fi[g, SPORT] == fi[f, DPORT] and fi[g, DPORT] == fi[f, SPORT]):
                break
            j = (j + 1) & mask
        slots[j] = f


@numba.njit(cache=True, nogil=True)
def _store(buf, src, rel, take, frame, slot, a_data, a_cov, a_int, a_fr):
    """Copy a segment's bytes to its offset in the slot; advance the contiguous prefix."""
    if rel >= a_int[slot, 1]:
        # beyond everything seen so far: all bytes are new, copy them in one go
        a_data[slot, rel:rel + take] = buf[src:src + take]
        o = rel
        stop = rel + take
        while o < stop and (o & 7) != 0:
            a_cov[slot, o >> 3] |= np.uint8(1 << (o & 7))
            o += 1
        if stop - o >= 8:
            a_cov[slot, o >> 3:stop >> 3] = 0xFF
            o = stop & ~7
        while o < stop:
            a_cov[slot, o >> 3] |= np.uint8(1 << (o & 7))
            o += 1
        new_bytes = take > 0
    else:
        new_bytes = False
        for b in range(take):
            o = rel + b
            m = np.uint8(1 << (o & 7))
            if (a_cov[slot, o >> 3] & m) == 0:
                a_cov[slot, o >> 3] |= m
                a_data[slot, o] = buf[src + b]
                new_bytes = True
    if new_bytes and a_int[slot, 2] < a_fr.shape[1]:
        k = a_int[slot, 2]
        a_fr[slot, k, 0] = rel
        a_fr[slot, k, 1] = frame
        a_int[slot, 2] = k + 1
    if rel + take > a_int[slot, 1]:
        a_int[slot, 1] = rel + take
    c = a_int[slot, 0]
    if c < rel:
        return
    limit = a_data.shape[1]
    while c < limit:
        if (c & 7) == 0 and c + 8 <= limit and a_cov[slot, c >> 3] == 0xFF:
            c += 8
        elif (a_cov[slot, c >> 3] & np.uint8(1 << (c & 7))) != 0:
            c += 1
        else:
            break
    a_int[slot, 0] = c


@numba.njit(cache=True, nogil=True, inline="always")
def _is_service(port, service_ports):
    if port < 1024:
        return True
    lo = 0
    hi = service_ports.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if service_ports[mid] < port:
            lo = mid + 1
        else:
            hi = mid
    return lo < service_ports.shape[0] and service_ports[lo] == port


@numba.njit(cache=True, nogil=True)
def _update(status, ipver, src_hi, src_lo, dst_hi, dst_lo, proto, sport, dport, tflags, seq, pl_cap,
            pl_wire, frag, tunnel, tsh, tsl, tdh, tdl, vni, vlan, wirelen, caplen, ts, frame0,
            fi, fa, ft, counts, slots, limit, udp_timeout, service_ports, pkt_flow, pkt_dir, start,
            buf, pl_off, a_data, a_cov, a_int, a_fr, a_free, done):
    n = status.shape[0]
    nflows = counts[0]
    ntuples = counts[1]
    mask = slots.shape[0] - 1
    for i in range(start, n):
        pkt_flow[i] = -1
        if status[i] != 0:
            continue
        if nflows >= fi.shape[0] or ntuples * 2 >= slots.shape[0] or counts[2] + 2 >= done.shape[0] \
                or (pl_cap[i] > 0 and counts[3] == 0):
            counts[0] = nflows
            counts[1] = ntuples
            return i
        sh = src_hi[i]
        sl = src_lo[i]
        dh = dst_hi[i]
        dl = dst_lo[i]
        sp = np.int64(sport[i])
        dp = np.int64(dport[i])
        pr = np.int64(proto[i])
        fl = np.int64(tflags[i])
        hh = _tuple_hash(sh, sl, sp, dh, dl, dp, pr)
        j = np.int64(hh & np.uint64(mask))
        f = -1
        d = 0
        while slots[j] != -1:
            g = slots[j]
            if fi[g, PROTO] == pr:
                if fa[g, SRC_HI] == sh and fa[g, SRC_LO] == sl and fa[g, DST_HI] == dh and fa[g, DST_LO] == dl \
                        and fi[g, SPORT] == sp and fi[g, DPORT] == dp:
                    f = g
                    d = 0
                    break
                if fa[g, SRC_HI] == dh and fa[g, SRC_LO] == dl and fa[g, DST_HI] == sh and fa[g, DST_LO] == sl \
                        and fi[g, SPORT] == dp and fi[g, DPORT] == sp:
                    f = g
                    d = 1
                    break
            j = (j + 1) & mask
        new = f < 0
        is_syn = pr == 6 and (fl & 0x12) == 0x02
        is_synack = pr == 6 and (fl & 0x12) == 0x12
        if not new:
            if is_syn:
                ff = fi[f, FLAGS]
                if not ((ff & 1) != 0 and d == 0 and np.uint32(seq[i] + np.uint32(1)) == np.uint32(fi[f, BASE0])):
                    new = True
            elif pr != 6 and ts[i] - ft[f, TS1] > udp_timeout:
                new = True
        if new:
            g = nflows
            nflows += 1
            if f < 0:
                ntuples += 1
            slots[j] = g
            f = g
            # orientation: src is the initiator
            if is_syn:
                rev = False
                init = 0
            elif is_synack:
                rev = True
                init = 1
            else:
                s_srv = _is_service(sp, service_ports)
                d_srv = _is_service(dp, service_ports)
                if s_srv and not d_srv:
                    rev = True
                    init = 2
                elif d_srv and not s_srv:
                    rev = False
                    init = 2
                elif sp != dp:
                    rev = sp < dp
                    init = 2
                else:
                    rev = False
                    init = 3
            for c in range(N_INT):
                fi[f, c] = 0
            fi[f, SLOT0] = -1
            fi[f, SLOT1] = -1
            a_hi, a_lo, b_hi, b_lo, a_port, b_port = sh, sl, dh, dl, sp, dp
            ta_hi, ta_lo, tb_hi, tb_lo = tsh[i], tsl[i], tdh[i], tdl[i]
            d = 0
            if rev:       # the packet travels responder -> initiator
                a_hi, a_lo, b_hi, b_lo, a_port, b_port = dh, dl, sh, sl, dp, sp
                ta_hi, ta_lo, tb_hi, tb_lo = tdh[i], tdl[i], tsh[i], tsl[i]
                d = 1
            fa[f, SRC_HI] = a_hi
            fa[f, SRC_LO] = a_lo
            fa[f, DST_HI] = b_hi
            fa[f, DST_LO] = b_lo
            fi[f, SPORT] = a_port
            fi[f, DPORT] = b_port
            fa[f, TSRC_HI] = ta_hi
            fa[f, TSRC_LO] = ta_lo
            fa[f, TDST_HI] = tb_hi
            fa[f, TDST_LO] = tb_lo
            fi[f, PROTO] = pr
            fi[f, IPVER] = ipver[i]
            fi[f, FIRST_FRAME] = frame0 + i
            fi[f, INIT] = init
            fi[f, TUNNEL] = tunnel[i]
            fi[f, VNI] = vni[i]
            fi[f, VLAN] = vlan[i]
            ft[f, TS0] = ts[i]
        # ---- account the packet
        fi[f, LAST_FRAME] = frame0 + i
        ft[f, TS1] = ts[i]
        fi[f, PK0 + d] += 1
        fi[f, BY0 + d] += wirelen[i]
        fi[f, PL0 + d] += pl_wire[i]
        if frag[i] == 1:
            fi[f, FRAGS] += 1
        if caplen[i] < wirelen[i]:
            fi[f, TRUNC] += 1
        pkt_flow[i] = f
        pkt_dir[i] = d
        if pr != 6:
            continue
        ff = fi[f, FLAGS]
        if is_syn:
            ff |= F_SYN | F_BASE0
            fi[f, BASE0] = np.int64(np.uint32(seq[i] + np.uint32(1)))
        elif is_synack:
            ff |= F_SYNACK
            bit = F_BASE0 if d == 0 else F_BASE1
            ff |= bit
            fi[f, BASE0 + d] = np.int64(np.uint32(seq[i] + np.uint32(1)))
        else:
            if (fl & TH_ACK) != 0 and d == 0 and (ff & F_SYNACK) != 0 and (ff & F_SYN) != 0:
                ff |= F_HS_DONE
            bit = F_BASE0 if d == 0 else F_BASE1
            if (ff & bit) == 0 and pl_cap[i] > 0:
                ff |= bit
                fi[f, BASE0 + d] = np.int64(seq[i])
        if fl & TH_FIN:
            ff |= F_FIN0 if d == 0 else F_FIN1
        if fl & TH_RST:
            ff |= F_RST
        # ---- payload within the first ``limit`` bytes of this direction, written in place
        bit = F_BASE0 if d == 0 else F_BASE1
        if pl_cap[i] > 0 and (ff & bit) != 0 and limit > 0 and (ff & F_HARVESTED) == 0:
            rel = np.int64(np.uint32(seq[i] - np.uint32(fi[f, BASE0 + d])))
            if rel < limit:
                take = limit - rel
                if take > pl_cap[i]:
                    take = pl_cap[i]
                slot = fi[f, SLOT0 + d]
                if slot < 0:
                    counts[3] -= 1
                    slot = a_free[counts[3]]
                    fi[f, SLOT0 + d] = slot
                    a_int[slot, 0] = 0      # contiguous bytes from offset 0
                    a_int[slot, 1] = 0      # highest byte end seen
                    a_int[slot, 2] = 0      # frame marks used
                    a_int[slot, 3] = f
                    for c in range(a_cov.shape[1]):
                        a_cov[slot, c] = 0
                _store(buf, pl_off[i], rel, take, frame0 + i, slot, a_data, a_cov, a_int, a_fr)
        # ---- a flow whose streams are complete is queued for harvesting
        if (ff & (F_HARVESTED | F_DONE_QUEUED)) == 0:
            complete = (ff & F_RST) != 0 or (ff & (F_FIN0 | F_FIN1)) == (F_FIN0 | F_FIN1)
            if not complete and fi[f, SLOT0] >= 0 and fi[f, SLOT1] >= 0:
                complete = a_int[fi[f, SLOT0], 0] >= limit and a_int[fi[f, SLOT1], 0] >= limit
            if complete:
                ff |= F_DONE_QUEUED
                done[counts[2]] = f
                counts[2] += 1
        fi[f, FLAGS] = ff
    counts[0] = nflows
    counts[1] = ntuples
    return n
