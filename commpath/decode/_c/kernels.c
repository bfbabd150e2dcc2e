/* The decode engine's hot loops: record indexing, packet headers, connection tracking.
 *
 * One function per batch, called through ctypes with numpy arrays (C-contiguous).
 * Python keeps the orchestration (files, growing tables, harvesting streams).
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

typedef int64_t i64;
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint8_t u8;

/* How far ahead of the record being read the index kernels fetch the file's bytes. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4096
#endif

/* ------------------------------------------------------------------ packet headers */

/* Per-packet output columns, in the order of _packets.FIELDS. */
typedef struct {
    int8_t *status, *ipver;
    u64 *src_hi, *src_lo, *dst_hi, *dst_lo;
    u8 *proto;
    int32_t *sport, *dport;
    u8 *flags;
    u32 *seq;
    i64 *pl_off;
    int32_t *pl_cap, *pl_wire;
    int8_t *frag;
    u32 *ip_id;
    int8_t *tunnel;
    u64 *tsh, *tsl, *tdh, *tdl;
    int32_t *vni, *vlan;
} Headers;

#define V4_MAPPED 0xFFFF00000000ULL

static inline i64 be16(const u8 *b, i64 p) { return ((i64)b[p] << 8) | (i64)b[p + 1]; }

static inline i64 be32(const u8 *b, i64 p) {
    return ((i64)b[p] << 24) | ((i64)b[p + 1] << 16) | ((i64)b[p + 2] << 8) | (i64)b[p + 3];
}

static inline u64 be64(const u8 *b, i64 p) {
    u64 v = 0;
    for (int j = 0; j < 8; j++)
        v = (v << 8) | (u64)b[p + j];
    return v;
}

/* Walk 802.1Q/QinQ tags from the ethertype at p; sets *pp to the next offset. */
static inline i64 ethertype_skip(const u8 *b, i64 p, i64 end, int32_t *vlan, i64 *pp) {
    i64 et = be16(b, p);
    p += 2;
    int depth = 0;
    while ((et == 0x8100 || et == 0x88A8 || et == 0x9100) && p + 4 <= end && depth < 4) {
        if (*vlan < 0)
            *vlan = (int32_t)(be16(b, p) & 0x0FFF);
        et = be16(b, p + 2);
        p += 4;
        depth++;
    }
    *pp = p;
    return et;
}

static inline void enter_tunnel(const Headers *h, i64 i, int kind, i64 vni, u64 sh, u64 sl, u64 dh, u64 dl) {
    if (h->tunnel[i] == 0) { /* the outermost overlay counts */
        h->tunnel[i] = (int8_t)kind;
        h->vni[i] = (int32_t)vni;
        h->tsh[i] = sh;
        h->tsl[i] = sl;
        h->tdh[i] = dh;
        h->tdl[i] = dl;
    }
}

static void parse_one(const u8 *buf, i64 p, i64 end, int32_t lt, const Headers *h, i64 i) {
    h->status[i] = 1;
    h->ipver[i] = 0;
    h->proto[i] = 0;
    h->sport[i] = 0;
    h->dport[i] = 0;
    h->flags[i] = 0;
    h->seq[i] = 0;
    h->pl_off[i] = 0;
    h->pl_cap[i] = 0;
    h->pl_wire[i] = 0;
    h->frag[i] = 0;
    h->ip_id[i] = 0;
    h->tunnel[i] = 0;
    h->tsh[i] = h->tsl[i] = h->tdh[i] = h->tdl[i] = 0;
    h->vni[i] = -1;
    h->vlan[i] = -1;
    h->src_hi[i] = h->src_lo[i] = h->dst_hi[i] = h->dst_lo[i] = 0;

    /* ---- link layer -> network protocol (ethertype) at p */
    i64 et = -1;
    if (lt == 1) {
        if (p + 14 > end) { h->status[i] = 3; return; }
        et = ethertype_skip(buf, p + 12, end, &h->vlan[i], &p);
    } else if (lt == 113) {
        if (p + 16 > end) { h->status[i] = 3; return; }
        et = ethertype_skip(buf, p + 14, end, &h->vlan[i], &p);
    } else if (lt == 276) {
        if (p + 20 > end) { h->status[i] = 3; return; }
        et = be16(buf, p);
        p += 20;
        if (et == 0x8100 || et == 0x88A8)
            et = ethertype_skip(buf, p - 2, end, &h->vlan[i], &p);
    } else if (lt == 101 || lt == 12 || lt == 14 || lt == 228 || lt == 229) {
        if (p >= end) { h->status[i] = 3; return; }
        int v = buf[p] >> 4;
        et = v == 4 ? 0x0800 : (v == 6 ? 0x86DD : -1);
    } else if (lt == 0 || lt == 108) {
        if (p + 4 > end) { h->status[i] = 3; return; }
        i64 af;
        if (lt == 108) {
            af = be32(buf, p);
        } else {
            af = (i64)buf[p] | ((i64)buf[p + 1] << 8) | ((i64)buf[p + 2] << 16) | ((i64)buf[p + 3] << 24);
            if (af > 0xFFFF)
                af = be32(buf, p);
        }
        p += 4;
        et = af == 2 ? 0x0800 : ((af == 10 || af == 24 || af == 28 || af == 30) ? 0x86DD : -1);
    } else {
        h->status[i] = 2;
        return;
    }

    /* ---- network and transport layers; overlays loop back here */
    int layers = 0;
    int o_ver = 0;
    u64 o_sh = 0, o_sl = 0, o_dh = 0, o_dl = 0;
    i64 o_sp = 0, o_dp = 0, o_off = 0;
    int32_t o_cap = 0, o_wire = 0, o_vlan = -1;
    while (layers < 4) {
        layers++;
        i64 proto = -1, l4 = 0, l4_end = 0, ipid = 0;
        int frag = 0, ver = 0;
        u64 sh = 0, sl = 0, dh = 0, dl = 0;
        if (et == 0x0800) {
            if (p + 20 > end || (buf[p] >> 4) != 4) { h->status[i] = 3; break; }
            i64 ihl = (i64)(buf[p] & 15) * 4;
            i64 tot = be16(buf, p + 2);
            if (ihl < 20 || tot < ihl || p + ihl > end) { h->status[i] = 3; break; }
            i64 fo = be16(buf, p + 6);
            i64 mf = (fo >> 13) & 1;
            i64 foff = fo & 0x1FFF;
            if (foff != 0)
                frag = 2;
            else if (mf)
                frag = 1;
            proto = buf[p + 9];
            sh = 0;
            sl = V4_MAPPED | (u64)be32(buf, p + 12);
            dh = 0;
            dl = V4_MAPPED | (u64)be32(buf, p + 16);
            ver = 4;
            ipid = be16(buf, p + 4);
            l4 = p + ihl;
            l4_end = p + tot;
        } else if (et == 0x86DD) {
            if (p + 40 > end || (buf[p] >> 4) != 6) { h->status[i] = 3; break; }
            i64 plen = be16(buf, p + 4);
            proto = buf[p + 6];
            sh = be64(buf, p + 8);
            sl = be64(buf, p + 16);
            dh = be64(buf, p + 24);
            dl = be64(buf, p + 32);
            ver = 6;
            ipid = 0;
            l4 = p + 40;
            l4_end = l4 + plen;
            int hops = 0;
            while (hops < 8 && (proto == 0 || proto == 43 || proto == 60 || proto == 44 || proto == 51)) {
                hops++;
                if (l4 + 8 > end) { proto = -2; break; }
                i64 nxt = buf[l4], ln;
                if (proto == 44) {
                    i64 fo = be16(buf, l4 + 2);
                    ipid = be32(buf, l4 + 4);
                    if ((fo >> 3) != 0)
                        frag = 2;
                    else if (fo & 1)
                        frag = 1;
                    ln = 8;
                } else if (proto == 51) {
                    ln = ((i64)buf[l4 + 1] + 2) * 4;
                } else {
                    ln = ((i64)buf[l4 + 1] + 1) * 8;
                }
                proto = nxt;
                l4 += ln;
            }
            if (proto == -2) { h->status[i] = 3; break; }
        } else {
            h->status[i] = 1;
            break;
        }
        /* record the network header of this layer */
        h->ipver[i] = (int8_t)ver;
        h->src_hi[i] = sh;
        h->src_lo[i] = sl;
        h->dst_hi[i] = dh;
        h->dst_lo[i] = dl;
        h->proto[i] = (u8)proto;
        h->frag[i] = (int8_t)frag;
        h->ip_id[i] = (u32)ipid;
        i64 wire_end = l4_end;
        if (l4_end > end)
            l4_end = end;
        if (frag == 2) {
            h->status[i] = 4;
            h->pl_wire[i] = (int32_t)(wire_end > l4 ? wire_end - l4 : 0);
            break;
        }
        if (proto == 4 || proto == 41) { /* IP in IP */
            int kind = (ver == 4 && proto == 4) ? 3 : (ver == 4 ? 4 : (proto == 4 ? 5 : 6));
            enter_tunnel(h, i, kind, -1, sh, sl, dh, dl);
            et = proto == 4 ? 0x0800 : 0x86DD;
            p = l4;
            continue;
        }
        if (proto == 6) {
            /* ports, sequence number and flags suffice: a snaplen may cut the options */
            if (l4 + 14 > l4_end) { h->status[i] = 3; break; }
            i64 doff = (i64)(buf[l4 + 12] >> 4) * 4;
            if (doff < 20 || l4 + doff > wire_end) { h->status[i] = 3; break; }
            h->sport[i] = (int32_t)be16(buf, l4);
            h->dport[i] = (int32_t)be16(buf, l4 + 2);
            h->seq[i] = (u32)be32(buf, l4 + 4);
            h->flags[i] = buf[l4 + 13];
            h->pl_off[i] = l4 + doff;
            i64 cap = l4_end - (l4 + doff);
            h->pl_cap[i] = (int32_t)(cap > 0 ? cap : 0);
            i64 wl = wire_end - (l4 + doff);
            h->pl_wire[i] = (int32_t)(wl > 0 ? wl : 0);
            h->status[i] = 0;
            break;
        }
        if (proto == 17) {
            if (l4 + 4 > end || l4 + 8 > wire_end) { h->status[i] = 3; break; }
            i64 sp = be16(buf, l4), dp = be16(buf, l4 + 2);
            h->sport[i] = (int32_t)sp;
            h->dport[i] = (int32_t)dp;
            i64 po = l4 + 8;
            h->pl_off[i] = po;
            i64 cap = l4_end - po;
            h->pl_cap[i] = (int32_t)(cap > 0 ? cap : 0);
            i64 wl = wire_end - po;
            if (frag == 1 && l4 + 6 <= end) /* the first fragment carries the datagram's length */
                wl = be16(buf, l4 + 4) - 8;
            h->pl_wire[i] = (int32_t)(wl > 0 ? wl : 0);
            h->status[i] = 0;
            if (frag != 0)
                break;
            if (o_ver == 0) {
                o_ver = ver;
                o_sh = sh;
                o_sl = sl;
                o_dh = dh;
                o_dl = dl;
                o_sp = sp;
                o_dp = dp;
                o_off = po;
                o_cap = h->pl_cap[i];
                o_wire = h->pl_wire[i];
                o_vlan = h->vlan[i];
            }
            /* VXLAN: flags byte 0x08, inner Ethernet after 8 bytes */
            if ((dp == 4789 || dp == 8472 || sp == 4789 || sp == 8472) && po + 8 + 14 <= end && (buf[po] & 0x08) != 0) {
                enter_tunnel(h, i, 1, be32(buf, po + 4) >> 8, sh, sl, dh, dl);
                et = ethertype_skip(buf, po + 8 + 12, end, &h->vlan[i], &p);
                continue;
            }
            if ((dp == 6081 || sp == 6081) && po + 8 <= end && (buf[po] >> 6) == 0) {
                i64 optlen = (i64)(buf[po] & 0x3F) * 4;
                i64 ptype = be16(buf, po + 2);
                i64 inner = po + 8 + optlen;
                if (inner <= end && (ptype == 0x6558 || ptype == 0x0800 || ptype == 0x86DD)) {
                    enter_tunnel(h, i, 2, be32(buf, po + 4) >> 8, sh, sl, dh, dl);
                    if (ptype == 0x6558) {
                        if (inner + 14 > end) { h->status[i] = 3; break; }
                        et = ethertype_skip(buf, inner + 12, end, &h->vlan[i], &p);
                    } else {
                        et = ptype;
                        p = inner;
                    }
                    continue;
                }
            }
            break;
        }
        if (proto == 50) { /* ESP: a flow by address pair */
            if (l4 + 8 <= end)
                h->dport[i] = 0;
            h->status[i] = 0;
            break;
        }
        h->status[i] = 5;
        break;
    }
    if (layers >= 4 && h->status[i] == 1)
        h->status[i] = 3;
    if (h->status[i] != 0 && h->status[i] != 4 && o_ver != 0 && h->tunnel[i] != 0 && h->tunnel[i] <= 2) {
        /* the overlay carries no TCP/UDP connection (ARP, ICMP, ...): the tunnel itself is the flow */
        h->status[i] = 0;
        h->ipver[i] = (int8_t)o_ver;
        h->src_hi[i] = o_sh;
        h->src_lo[i] = o_sl;
        h->dst_hi[i] = o_dh;
        h->dst_lo[i] = o_dl;
        h->proto[i] = 17;
        h->sport[i] = (int32_t)o_sp;
        h->dport[i] = (int32_t)o_dp;
        h->pl_off[i] = o_off;
        h->pl_cap[i] = o_cap;
        h->pl_wire[i] = o_wire;
        h->frag[i] = 0;
        h->flags[i] = 0;
        h->vlan[i] = o_vlan;
        h->tunnel[i] = 0;
        h->vni[i] = -1;
    }
}

static inline Headers headers_of(void **cols) {
    Headers h = {
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8], cols[9], cols[10],
        cols[11], cols[12], cols[13], cols[14], cols[15], cols[16], cols[17], cols[18], cols[19], cols[20],
        cols[21], cols[22],
    };
    return h;
}

/* Parse every packet of a chunk; cols are the output arrays in the order of _packets.FIELDS. */
void cp_parse_headers(const u8 *buf, i64 n, const i64 *off, const int32_t *caplen, const int32_t *linktype,
                      void **cols) {
    Headers h = headers_of(cols);
    for (i64 i = 0; i < n; i++) {
        if (i + 8 < n) /* the headers of packets to come, fetched while this one is parsed */
            __builtin_prefetch(buf + off[i + 8]);
        parse_one(buf, off[i], off[i] + caplen[i], linktype[i], &h, i);
    }
}

/* ------------------------------------------------------------------ capture files */

static inline u32 rd32(const u8 *b, i64 p, int big) {
    if (big)
        return ((u32)b[p] << 24) | ((u32)b[p + 1] << 16) | ((u32)b[p + 2] << 8) | (u32)b[p + 3];
    return ((u32)b[p + 3] << 24) | ((u32)b[p + 2] << 16) | ((u32)b[p + 1] << 8) | (u32)b[p];
}

static inline u32 rd16(const u8 *b, i64 p, int big) {
    if (big)
        return ((u32)b[p] << 8) | (u32)b[p + 1];
    return ((u32)b[p + 1] << 8) | (u32)b[p];
}

/* Complete pcap records in buf[:n]. out = (records, bytes consumed, error). With cols (not NULL),
 * each packet's headers are parsed as soon as it is found, while its bytes are in the cache. */
void cp_index_pcap(const u8 *buf, i64 n, int big, double ticks, int32_t linktype, i64 snap_max, i64 cap,
                   i64 *off, int32_t *caplen, int32_t *wirelen, double *ts, int32_t *lt, i64 *out, void **cols) {
    Headers h;
    if (cols)
        h = headers_of(cols);
    i64 pos = 0, k = 0, err = 0, fetched = 0;
    while (pos + 16 <= n && k < cap) {
        /* each record's place depends on the one before: fetch every line ahead of it */
        for (; fetched < pos + PREFETCH_AHEAD && fetched < n; fetched += 64)
            __builtin_prefetch(buf + fetched);
        u32 incl = rd32(buf, pos + 8, big);
        u32 orig = rd32(buf, pos + 12, big);
        if ((i64)incl > snap_max) {
            err = 1;
            break;
        }
        if (pos + 16 + (i64)incl > n)
            break;
        u32 sec = rd32(buf, pos, big);
        u32 frac = rd32(buf, pos + 4, big);
        off[k] = pos + 16;
        caplen[k] = (int32_t)incl;
        wirelen[k] = (int32_t)(orig >= incl ? orig : incl);
        ts[k] = (double)sec + (double)frac / ticks;
        lt[k] = linktype;
        if (cols)
            parse_one(buf, pos + 16, pos + 16 + (i64)incl, linktype, &h, k);
        k++;
        pos += 16 + (i64)incl;
    }
    out[0] = k;
    out[1] = pos;
    out[2] = err;
}

/* Complete pcapng packet blocks in buf[:n]. state = [big_endian, n_interfaces, seen_shb];
 * the interface tables are updated in place. out = (records, bytes consumed, error). */
void cp_index_pcapng(const u8 *buf, i64 n, i64 *state, int32_t *if_lt, double *if_ticks, i64 *if_offset,
                     i64 max_ifaces, i64 cap, i64 *off, int32_t *caplen, int32_t *wirelen, double *ts,
                     int32_t *lt, i64 *out) {
    i64 pos = 0, k = 0, err = 0;
    while (pos + 12 <= n && k < cap) {
        int big = state[0] == 1;
        u32 btype = rd32(buf, pos, big);
        if (btype == 0x0A0D0D0A) {
            u32 bom_le = rd32(buf, pos + 8, 0);
            if (bom_le == 0x1A2B3C4D)
                state[0] = 0;
            else if (bom_le == 0x4D3C2B1A)
                state[0] = 1;
            else {
                err = 3;
                break;
            }
            big = state[0] == 1;
            state[1] = 0;
            state[2] = 1;
        }
        u32 blen = rd32(buf, pos + 4, big);
        if (blen < 12 || (blen & 3) != 0 || blen > 64u * 1024 * 1024) {
            err = 2;
            break;
        }
        if (pos + (i64)blen > n)
            break;
        if (rd32(buf, pos + blen - 4, big) != blen) {
            err = 2;
            break;
        }
        if (btype == 1) { /* interface description */
            i64 nif = state[1];
            if (nif < max_ifaces) {
                if_lt[nif] = (int32_t)rd16(buf, pos + 8, big);
                if_ticks[nif] = 1000000.0;
                if_offset[nif] = 0;
                i64 opt = pos + 16;
                i64 end = pos + blen - 4;
                while (opt + 4 <= end) {
                    u32 code = rd16(buf, opt, big);
                    u32 olen = rd16(buf, opt + 2, big);
                    if (code == 0 || opt + 4 + (i64)olen > end)
                        break;
                    if (code == 9 && olen >= 1) {
                        u8 v = buf[opt + 4];
                        if (v & 0x80)
                            if_ticks[nif] = pow(2.0, (double)(v & 0x7F));
                        else
                            if_ticks[nif] = pow(10.0, (double)v);
                    } else if (code == 14 && olen >= 8) {
                        i64 hi = (i64)rd32(buf, opt + 4, big);
                        i64 lo = (i64)rd32(buf, opt + 8, big);
                        if (big)
                            if_offset[nif] = (i64)(((u64)hi << 32) | (u64)lo);
                        else
                            if_offset[nif] = (i64)(((u64)lo << 32) | (u64)hi);
                    }
                    opt += 4 + ((olen + 3) & ~3u);
                }
            }
            state[1] = nif + 1;
        } else if (btype == 6 || btype == 2) { /* enhanced / obsolete packet block */
            if (blen < 32) {
                err = 2;
                break;
            }
            i64 ifid = btype == 6 ? (i64)rd32(buf, pos + 8, big) : (i64)rd16(buf, pos + 8, big);
            double hi = (double)rd32(buf, pos + 12, big);
            double lo = (double)rd32(buf, pos + 16, big);
            u32 incl = rd32(buf, pos + 20, big);
            u32 orig = rd32(buf, pos + 24, big);
            if (incl > blen - 32) {
                err = 2;
                break;
            }
            double t = 1000000.0;
            i64 ofs = 0;
            int32_t ltype = -1;
            if (ifid < state[1] && ifid < max_ifaces) {
                t = if_ticks[ifid];
                ofs = if_offset[ifid];
                ltype = if_lt[ifid];
            }
            off[k] = pos + 28;
            caplen[k] = (int32_t)incl;
            wirelen[k] = (int32_t)(orig >= incl ? orig : incl);
            ts[k] = (hi * 4294967296.0 + lo) / t + (double)ofs;
            lt[k] = ltype;
            k++;
        } else if (btype == 3) { /* simple packet block */
            if (blen < 16) {
                err = 2;
                break;
            }
            u32 orig = rd32(buf, pos + 8, big);
            u32 incl = blen - 16;
            if (orig < incl)
                incl = orig;
            off[k] = pos + 12;
            caplen[k] = (int32_t)incl;
            wirelen[k] = (int32_t)orig;
            ts[k] = NAN;
            lt[k] = state[1] > 0 ? if_lt[0] : -1;
            k++;
        }
        pos += blen;
    }
    out[0] = k;
    out[1] = pos;
    out[2] = err;
}

/* ------------------------------------------------------------------ connection tracking */

/* Columns of the int64 flow matrix (_flowtable.py declares the same). */
enum { SPORT, DPORT, PROTO, IPVER, FIRST_FRAME, LAST_FRAME, PK0, PK1, BY0, BY1, PL0, PL1, FLAGS,
       BASE0, BASE1, INIT, TUNNEL, VNI, VLAN, FRAGS, TRUNC, SLOT0, SLOT1, N_INT };
/* Columns of the uint64 address matrix and of the float64 time matrix. */
enum { SRC_HI, SRC_LO, DST_HI, DST_LO, TSRC_HI, TSRC_LO, TDST_HI, TDST_LO, N_ADDR };
enum { TS0, TS1, N_TIME };
/* FLAGS bits. */
enum { F_SYN = 1, F_SYNACK = 2, F_HS_DONE = 4, F_FIN0 = 8, F_FIN1 = 16, F_RST = 32, F_BASE0 = 64,
       F_BASE1 = 128, F_HARVESTED = 256, F_DONE_QUEUED = 512 };
enum { TH_FIN = 0x01, TH_SYN = 0x02, TH_RST = 0x04, TH_ACK = 0x10 };
/* Columns of a stream arena slot's int64 meta row. */
enum { A_CONTIG, A_MAXEND, A_MARKS, A_OWNER, N_META };

/* ------------------------------------------------------------------ address texts */

/* Dotted quads of the low 32 bits of each value (IPv4, stored IPv4-mapped), as an Arrow string
 * array's offsets (n + 1) and data (at most 15 bytes an address): a million distinct addresses
 * in a few milliseconds, where casting their octets to text in Arrow took 0.3 s. */
void cp_ipv4_texts(const u64 *mapped, i64 n, u8 *out, int32_t *offsets) {
    i64 at = 0;
    offsets[0] = 0;
    for (i64 i = 0; i < n; i++) {
        u32 a = (u32)mapped[i];
        for (int k = 3; k >= 0; k--) {
            u32 o = (a >> (8 * k)) & 0xFF;
            if (o >= 100) {
                out[at++] = (u8)('0' + o / 100);
                out[at++] = (u8)('0' + o / 10 % 10);
            } else if (o >= 10) {
                out[at++] = (u8)('0' + o / 10);
            }
            out[at++] = (u8)('0' + o % 10);
            if (k)
                out[at++] = '.';
        }
        offsets[i + 1] = (int32_t)at;
    }
}

/* The layout the Python side checks against its own constants. */
void cp_layout(i64 *out) {
    out[0] = N_INT;
    out[1] = N_ADDR;
    out[2] = N_TIME;
    out[3] = N_META;
}

static inline u64 mix(u64 x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}

static inline u64 endpoint_hash(u64 hi, u64 lo, i64 port) { return mix(hi ^ mix(lo ^ ((u64)port << 40))); }

static inline u64 tuple_hash(u64 ahi, u64 alo, i64 ap, u64 bhi, u64 blo, i64 bp, i64 proto) {
    return mix(endpoint_hash(ahi, alo, ap) + endpoint_hash(bhi, blo, bp) + (u64)proto);
}

/* Rebuild the slot table: each tuple points at its latest flow. */
void cp_rehash(const u64 *fa, const i64 *fi, i64 nflows, i64 *slots, i64 nslots) {
    i64 mask = nslots - 1;
    for (i64 f = 0; f < nflows; f++) {
        const i64 *r = fi + f * N_INT;
        const u64 *a = fa + f * N_ADDR;
        i64 j = (i64)(tuple_hash(a[SRC_HI], a[SRC_LO], r[SPORT], a[DST_HI], a[DST_LO], r[DPORT], r[PROTO]) & (u64)mask);
        while (slots[j] != -1) {
            const i64 *g = fi + slots[j] * N_INT;
            const u64 *ga = fa + slots[j] * N_ADDR;
            if (g[PROTO] == r[PROTO] &&
                ((ga[SRC_HI] == a[SRC_HI] && ga[SRC_LO] == a[SRC_LO] && ga[DST_HI] == a[DST_HI] &&
                  ga[DST_LO] == a[DST_LO] && g[SPORT] == r[SPORT] && g[DPORT] == r[DPORT]) ||
                 (ga[SRC_HI] == a[DST_HI] && ga[SRC_LO] == a[DST_LO] && ga[DST_HI] == a[SRC_HI] &&
                  ga[DST_LO] == a[SRC_LO] && g[SPORT] == r[DPORT] && g[DPORT] == r[SPORT])))
                break;
            j = (j + 1) & mask;
        }
        slots[j] = f;
    }
}

/* The stream arena the flow kernel writes payload into: one fixed-size slot per direction. */
typedef struct {
    u8 *data;     /* slots x width bytes */
    i64 width;
    u8 *cov;      /* slots x cov_width coverage bits */
    i64 cov_width;
    i64 *meta;    /* slots x N_META */
    i64 *marks;   /* slots x nmarks x (offset, frame) */
    i64 nmarks;
    i64 *free;    /* stack of free slots; counts[3] is its height */
    i64 *done;    /* flows whose streams are complete; counts[2] is their number */
    i64 done_cap;
} Arena;

/* Copy a segment's bytes to its offset in the slot; advance the contiguous prefix. */
static void store(const u8 *buf, i64 src, i64 rel, i64 take, i64 frame, i64 slot, const Arena *a) {
    u8 *data = a->data + slot * a->width;
    u8 *cov = a->cov + slot * a->cov_width;
    i64 *meta = a->meta + slot * N_META;
    int new_bytes = 0;
    if (rel >= meta[A_MAXEND]) { /* beyond everything seen so far: all bytes are new */
        memcpy(data + rel, buf + src, (size_t)take);
        i64 o = rel, stop = rel + take;
        while (o < stop && (o & 7) != 0) {
            cov[o >> 3] |= (u8)(1 << (o & 7));
            o++;
        }
        if (stop - o >= 8) {
            memset(cov + (o >> 3), 0xFF, (size_t)((stop >> 3) - (o >> 3)));
            o = stop & ~(i64)7;
        }
        while (o < stop) {
            cov[o >> 3] |= (u8)(1 << (o & 7));
            o++;
        }
        new_bytes = take > 0;
    } else {
        for (i64 b = 0; b < take; b++) {
            i64 o = rel + b;
            u8 m = (u8)(1 << (o & 7));
            if ((cov[o >> 3] & m) == 0) {
                cov[o >> 3] |= m;
                data[o] = buf[src + b];
                new_bytes = 1;
            }
        }
    }
    if (new_bytes && meta[A_MARKS] < a->nmarks) {
        i64 k = meta[A_MARKS];
        a->marks[(slot * a->nmarks + k) * 2] = rel;
        a->marks[(slot * a->nmarks + k) * 2 + 1] = frame;
        meta[A_MARKS] = k + 1;
    }
    if (rel + take > meta[A_MAXEND])
        meta[A_MAXEND] = rel + take;
    i64 c = meta[A_CONTIG];
    if (c < rel)
        return;
    i64 limit = a->width;
    while (c < limit) {
        if ((c & 7) == 0 && c + 8 <= limit && cov[c >> 3] == 0xFF)
            c += 8;
        else if ((cov[c >> 3] & (u8)(1 << (c & 7))) != 0)
            c += 1;
        else
            break;
    }
    meta[A_CONTIG] = c;
}

static inline int is_service(i64 port, const i64 *service_ports, i64 nservice) {
    if (port < 1024)
        return 1;
    i64 lo = 0, hi = nservice;
    while (lo < hi) {
        i64 mid = (lo + hi) / 2;
        if (service_ports[mid] < port)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nservice && service_ports[lo] == port;
}

/* Account packets start.. of a chunk into the flow table and the stream arena.
 * counts = [flows, distinct tuples, queued done, free slots]. Returns the index of the first
 * packet not accounted: the table, the slot table, the done queue or the arena needs Python. */
i64 cp_flow_update(void **cols, const int32_t *wirelen, const int32_t *caplen, const double *ts, i64 n,
                   i64 frame0, i64 *fi, u64 *fa, double *ft, i64 fcap, i64 *counts, i64 *slots, i64 nslots,
                   i64 limit, double udp_timeout, const i64 *service_ports, i64 nservice, i64 *pkt_flow,
                   int8_t *pkt_dir, i64 start, const u8 *buf, u8 *a_data, i64 a_width, u8 *a_cov,
                   i64 a_cov_width, i64 *a_meta, i64 *a_marks, i64 a_nmarks, i64 *a_free, i64 *a_done,
                   i64 a_done_cap) {
    const Headers h = headers_of(cols);
    const Arena a = {a_data, a_width, a_cov, a_cov_width, a_meta, a_marks, a_nmarks, a_free, a_done, a_done_cap};
    i64 nflows = counts[0], ntuples = counts[1];
    i64 mask = nslots - 1;
    for (i64 i = start; i < n; i++) {
        pkt_flow[i] = -1;
        if (h.status[i] != 0)
            continue;
        if (nflows >= fcap || ntuples * 2 >= nslots || counts[2] + 2 >= a.done_cap ||
            (h.pl_cap[i] > 0 && counts[3] == 0)) {
            counts[0] = nflows;
            counts[1] = ntuples;
            return i;
        }
        u64 sh = h.src_hi[i], sl = h.src_lo[i], dh = h.dst_hi[i], dl = h.dst_lo[i];
        i64 sp = h.sport[i], dp = h.dport[i], pr = h.proto[i], fl = h.flags[i];
        i64 j = (i64)(tuple_hash(sh, sl, sp, dh, dl, dp, pr) & (u64)mask);
        i64 f = -1;
        int d = 0;
        while (slots[j] != -1) {
            i64 g = slots[j];
            const i64 *r = fi + g * N_INT;
            const u64 *ga = fa + g * N_ADDR;
            if (r[PROTO] == pr) {
                if (ga[SRC_HI] == sh && ga[SRC_LO] == sl && ga[DST_HI] == dh && ga[DST_LO] == dl &&
                    r[SPORT] == sp && r[DPORT] == dp) {
                    f = g;
                    d = 0;
                    break;
                }
                if (ga[SRC_HI] == dh && ga[SRC_LO] == dl && ga[DST_HI] == sh && ga[DST_LO] == sl &&
                    r[SPORT] == dp && r[DPORT] == sp) {
                    f = g;
                    d = 1;
                    break;
                }
            }
            j = (j + 1) & mask;
        }
        int is_new = f < 0;
        int is_syn = pr == 6 && (fl & 0x12) == 0x02;
        int is_synack = pr == 6 && (fl & 0x12) == 0x12;
        if (!is_new) {
            if (is_syn) {
                i64 ff = fi[f * N_INT + FLAGS];
                if (!((ff & F_SYN) != 0 && d == 0 && (u32)(h.seq[i] + 1u) == (u32)fi[f * N_INT + BASE0]))
                    is_new = 1;
            } else if (pr != 6 && ts[i] - ft[f * N_TIME + TS1] > udp_timeout) {
                is_new = 1;
            }
        }
        i64 *r;
        if (is_new) {
            i64 g = nflows++;
            if (f < 0)
                ntuples++;
            slots[j] = g;
            f = g;
            /* orientation: src is the initiator */
            int rev, init;
            if (is_syn) {
                rev = 0;
                init = 0;
            } else if (is_synack) {
                rev = 1;
                init = 1;
            } else {
                int s_srv = is_service(sp, service_ports, nservice);
                int d_srv = is_service(dp, service_ports, nservice);
                if (s_srv && !d_srv) {
                    rev = 1;
                    init = 2;
                } else if (d_srv && !s_srv) {
                    rev = 0;
                    init = 2;
                } else if (sp != dp) {
                    rev = sp < dp;
                    init = 2;
                } else {
                    rev = 0;
                    init = 3;
                }
            }
            r = fi + f * N_INT;
            u64 *fr = fa + f * N_ADDR;
            memset(r, 0, sizeof(i64) * N_INT);
            r[SLOT0] = -1;
            r[SLOT1] = -1;
            if (rev) { /* the packet travels responder -> initiator */
                fr[SRC_HI] = dh; fr[SRC_LO] = dl; fr[DST_HI] = sh; fr[DST_LO] = sl;
                r[SPORT] = dp; r[DPORT] = sp;
                fr[TSRC_HI] = h.tdh[i]; fr[TSRC_LO] = h.tdl[i]; fr[TDST_HI] = h.tsh[i]; fr[TDST_LO] = h.tsl[i];
                d = 1;
            } else {
                fr[SRC_HI] = sh; fr[SRC_LO] = sl; fr[DST_HI] = dh; fr[DST_LO] = dl;
                r[SPORT] = sp; r[DPORT] = dp;
                fr[TSRC_HI] = h.tsh[i]; fr[TSRC_LO] = h.tsl[i]; fr[TDST_HI] = h.tdh[i]; fr[TDST_LO] = h.tdl[i];
                d = 0;
            }
            r[PROTO] = pr;
            r[IPVER] = h.ipver[i];
            r[FIRST_FRAME] = frame0 + i;
            r[INIT] = init;
            r[TUNNEL] = h.tunnel[i];
            r[VNI] = h.vni[i];
            r[VLAN] = h.vlan[i];
            ft[f * N_TIME + TS0] = ts[i];
        }
        r = fi + f * N_INT;
        /* ---- account the packet */
        r[LAST_FRAME] = frame0 + i;
        ft[f * N_TIME + TS1] = ts[i];
        r[PK0 + d] += 1;
        r[BY0 + d] += wirelen[i];
        r[PL0 + d] += h.pl_wire[i];
        if (h.frag[i] == 1)
            r[FRAGS] += 1;
        if (caplen[i] < wirelen[i])
            r[TRUNC] += 1;
        pkt_flow[i] = f;
        pkt_dir[i] = (int8_t)d;
        if (pr != 6)
            continue;
        i64 ff = r[FLAGS];
        i64 bit = d == 0 ? F_BASE0 : F_BASE1;
        if (is_syn) {
            ff |= F_SYN | F_BASE0;
            r[BASE0] = (i64)(u32)(h.seq[i] + 1u);
        } else if (is_synack) {
            ff |= F_SYNACK | bit;
            r[BASE0 + d] = (i64)(u32)(h.seq[i] + 1u);
        } else {
            if ((fl & TH_ACK) != 0 && d == 0 && (ff & F_SYNACK) != 0 && (ff & F_SYN) != 0)
                ff |= F_HS_DONE;
            if ((ff & bit) == 0 && h.pl_cap[i] > 0) {
                ff |= bit;
                r[BASE0 + d] = (i64)h.seq[i];
            }
        }
        if (fl & TH_FIN)
            ff |= d == 0 ? F_FIN0 : F_FIN1;
        if (fl & TH_RST)
            ff |= F_RST;
        /* ---- payload within the first ``limit`` bytes of this direction, written in place; a segment
         * past the limit only raises the highest end seen, so a hole before the limit is known as one */
        if (h.pl_cap[i] > 0 && (ff & bit) != 0 && limit > 0 && (ff & F_HARVESTED) == 0) {
            i64 rel = (i64)(u32)(h.seq[i] - (u32)r[BASE0 + d]);
            if (rel < ((i64)1 << 31)) { /* at or after the direction's first byte (sequence arithmetic) */
                i64 take = limit - rel;
                if (take > h.pl_cap[i])
                    take = h.pl_cap[i];
                i64 slot = r[SLOT0 + d];
                if (slot < 0) {
                    counts[3] -= 1;
                    slot = a.free[counts[3]];
                    r[SLOT0 + d] = slot;
                    i64 *meta = a.meta + slot * N_META;
                    /* the previous owner set coverage bits below its highest end only (a new slot's
                     * meta and bits are zero): clearing those keeps a large limit cheap per connection */
                    i64 used = meta[A_MAXEND] < a.width ? meta[A_MAXEND] : a.width;
                    memset(a.cov + slot * a.cov_width, 0, (size_t)((used + 7) >> 3));
                    meta[A_CONTIG] = 0;   /* contiguous bytes from offset 0 */
                    meta[A_MAXEND] = 0;   /* highest byte end seen */
                    meta[A_MARKS] = 0;    /* frame marks used */
                    meta[A_OWNER] = f;
                }
                if (take > 0) {
                    store(buf, h.pl_off[i], rel, take, frame0 + i, slot, &a);
                } else {
                    i64 *meta = a.meta + slot * N_META;
                    if (rel + h.pl_cap[i] > meta[A_MAXEND])
                        meta[A_MAXEND] = rel + h.pl_cap[i];
                }
            }
        }
        /* ---- a flow whose streams are complete is queued for harvesting */
        if ((ff & (F_HARVESTED | F_DONE_QUEUED)) == 0) {
            int complete = (ff & F_RST) != 0 || (ff & (F_FIN0 | F_FIN1)) == (F_FIN0 | F_FIN1);
            if (!complete && r[SLOT0] >= 0 && r[SLOT1] >= 0)
                complete = a.meta[r[SLOT0] * N_META + A_CONTIG] >= limit && a.meta[r[SLOT1] * N_META + A_CONTIG] >= limit;
            if (complete) {
                ff |= F_DONE_QUEUED;
                a.done[counts[2]] = f;
                counts[2] += 1;
            }
        }
        r[FLAGS] = ff;
    }
    counts[0] = nflows;
    counts[1] = ntuples;
    return n;
}

/* ------------------------------------------------------------------ harvesting streams */

/* The marks of a harvested batch: each slot's (offset, frame) marks sorted by offset (stable, in
 * place), those that start inside its contiguous bytes (at most limit) copied one slot after
 * another to offs/frames; mend[j]: where slot j's marks end there (a slot of -1 has none). */
void cp_pack_marks(i64 *marks, i64 nmarks, const i64 *meta, i64 limit, const i64 *slots, i64 n, i64 *offs,
                   i64 *frames, i64 *mend) {
    i64 at = 0;
    for (i64 j = 0; j < n; j++) {
        i64 slot = slots[j];
        if (slot < 0) {                 /* no slot: no marks */
            mend[j] = at;
            continue;
        }
        i64 contig = meta[slot * N_META + A_CONTIG];
        if (contig > limit) contig = limit;
        i64 *m = marks + slot * nmarks * 2;
        i64 used = meta[slot * N_META + A_MARKS];
        if (used > nmarks) used = nmarks;
        for (i64 a = 1; a < used; a++) {
            i64 o = m[a * 2], fr = m[a * 2 + 1], b = a - 1;
            while (b >= 0 && m[b * 2] > o) {
                m[(b + 1) * 2] = m[b * 2];
                m[(b + 1) * 2 + 1] = m[b * 2 + 1];
                b--;
            }
            m[(b + 1) * 2] = o;
            m[(b + 1) * 2 + 1] = fr;
        }
        for (i64 k = 0; k < used && m[k * 2] < contig; k++) {
            offs[at] = m[k * 2];
            frames[at] = m[k * 2 + 1];
            at++;
        }
        mend[j] = at;
    }
}

/* Of n harvested flows, those whose initiator's bytes open with a TLS record carrying a ClientHello
 * (0x16 0x03 <=0x04 .. .. 0x01) and whose responder's do not start "SSH-" or "PRI " (the protocol
 * detection says "tls", not turned): their positions in flows go to sel. For each selected flow k,
 * its two directions j = 2k (initiator), 2k + 1 (responder): start[j] = slot * limit (0 without a
 * slot), len[j] (contiguous bytes, at most limit), flags[j] (1: a gap cut them, 2: the limit did), and
 * their marks packed as cp_pack_marks does (offs/frames, mend[j]). Returns how many were selected. */
i64 cp_select_tls(const i64 *fi, const i64 *flows, i64 n, const u8 *data, i64 limit, const i64 *meta,
                  i64 *marks, i64 nmarks, i64 *sel, i64 *start, i64 *len, i64 *flags, i64 *offs, i64 *frames,
                  i64 *mend) {
    i64 k = 0, at = 0;
    for (i64 i = 0; i < n; i++) {
        const i64 *r = fi + flows[i] * N_INT;
        i64 s0 = r[SLOT0], s1 = r[SLOT1];
        if (s0 < 0 || meta[s0 * N_META + A_CONTIG] < 6) continue;
        const u8 *h = data + s0 * limit;
        if (h[0] != 0x16 || h[1] != 3 || h[2] > 4 || h[5] != 1) continue;
        if (s1 >= 0 && meta[s1 * N_META + A_CONTIG] >= 4) {
            const u8 *t = data + s1 * limit;
            if (memcmp(t, "SSH-", 4) == 0 || memcmp(t, "PRI ", 4) == 0) continue;
        }
        sel[k] = i;
        i64 both[2] = {s0, s1};
        for (int side = 0; side < 2; side++) {
            i64 j = 2 * k + side, slot = both[side];
            if (slot < 0) {
                start[j] = 0;
                len[j] = 0;
                flags[j] = 0;
            } else {
                const i64 *m = meta + slot * N_META;
                i64 contig = m[A_CONTIG];
                start[j] = slot * limit;
                len[j] = contig < limit ? contig : limit;
                flags[j] = (m[A_MAXEND] > contig && contig < limit ? 1 : 0) | (contig >= limit ? 2 : 0);
            }
            cp_pack_marks(marks, nmarks, meta, limit, &slot, 1, offs + at, frames + at, mend + j);
            mend[j] += at;
            at = mend[j];
        }
        k++;
    }
    return k;
}

