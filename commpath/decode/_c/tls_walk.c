/* TLS handshakes, the common case: records, handshake messages and hello fields of many connections.
 *
 * cp_tls_walk reads both directions of each connection the way commpath/decode/tls.py does and
 * writes, per connection, TW_FIELDS int64 values (offsets into the connection's own bytes, flags,
 * counts). Anything the careful Python parser would report (a truncated field, an odd extension,
 * a plaintext alert, a HelloRetryRequest, a message split across records, ...) gives a non-zero
 * status instead, and Python parses that connection itself. Nothing here allocates.
 */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
typedef uint8_t u8;

/* Field indices of one connection's output (mirrored in _hs_fast.py). */
enum {
    TW_STATUS, TW_CH_OFF, TW_CH_LEN, TW_CH_VERSION, TW_CH_SID_OFF, TW_CH_SID_LEN, TW_CS_OFF, TW_CS_LEN,
    TW_SNI_OFF, TW_SNI_LEN, TW_ALPN_OFF, TW_ALPN_LEN, TW_SV_OFF, TW_SV_LEN, TW_SIG_OFF, TW_SIG_LEN,
    TW_CH_FLAGS, TW_KEY_LEN, TW_SH_VERSION, TW_SH_SELECTED, TW_SH_CIPHER, TW_SH_ALPN_OFF, TW_SH_ALPN_LEN,
    TW_SH_PSK, TW_TLS13, TW_CERT_OFF, TW_CERT_LEN, TW_CR_OFF, TW_CR_LEN, TW_CCERT_OFF, TW_CCERT_LEN,
    TW_FLAGS, TW_N_CLIENT_APP, TW_N_SERVER_APP, TW_APP0, TW_APP1, TW_APP2, TW_APP_COMPLETE,
    TW_C_ENC_ALERTS, TW_S_ENC_ALERTS, TW_N_RANGES_C, TW_N_RANGES_S,
    TW_SH_EXT_OFF, TW_SH_EXT_LEN, TW_SKX_OFF, TW_SKX_LEN,
    TW_SH_SID_OFF, TW_SH_SID_LEN, TW_CH_TICKET_OFF, TW_CH_TICKET_LEN, TW_NST_OFF, TW_NST_LEN, TW_RANGES,
    TW_FIELDS = TW_RANGES + 4 * 8       /* up to 8 (start, last byte) ranges per direction */
};
#define TW_MAX_RANGES 8
#define TW_MAX_EXT 64                   /* extension types of a ClientHello the walk takes */
#define TW_KEY_CAP 1024                 /* bytes of ClientHello key per connection */
#define TW_MAX_RECORDS 256
#define TW_MAX_MESSAGES 64

/* TW_CH_FLAGS */
#define CHF_EARLY_DATA 1
#define CHF_PSK 2
#define CHF_ALPS 4
/* TW_FLAGS */
#define F_SAW_CKE 1
#define F_FULL 2
#define F_SHD 4
#define F_SERVER_CCS 8
#define F_CLIENT_CCS 16
#define F_SID_MATCH 32

/* Bail-out reasons (status): the careful parser takes the connection. */
enum { TW_OK, TW_SSLV2, TW_RECORDS, TW_NO_RECORDS, TW_MESSAGES, TW_SERVER_HELLO, TW_CLIENT_HELLO,
       TW_SPLIT, TW_ALERT, TW_TLS13_MORE, TW_RANGES_FULL, TW_EXTS, TW_CERTS };

typedef struct { i64 off, len; int type; int cut; } rec_t;
typedef struct { i64 off; i64 len; int type; int split; } msg_t;   /* off: body offset in the stream */

static inline int u16(const u8 *b) { return (b[0] << 8) | b[1]; }

static int version_rank(int v) {
    if ((v >> 8) == 0x7F) return 0x0304;
    switch (v) {
    case 0xFEFF: return 0x0302;
    case 0xFEFD: return 0x0303;
    case 0xFEFC: return 0x0304;
    case 0x0002: return 0x0200;
    default: return v;
    }
}

/* read_records: 0 or a status. The last record may be cut (its body ends at n). */
static int records(const u8 *d, i64 n, i64 max_appdata, rec_t *out, int *count) {
    i64 pos = 0, appdata = 0;
    int k = 0;
    while (pos + 5 <= n) {
        if (k >= TW_MAX_RECORDS) return TW_RECORDS;
        int ctype = d[pos], version = u16(d + pos + 1);
        i64 length = u16(d + pos + 3);
        if (ctype < 20 || ctype > 24 || ((version >> 8) != 3 && (version >> 8) != 0xFE)) return TW_RECORDS;
        if (length > (1 << 14) + 2048) return TW_RECORDS;
        i64 end = pos + 5 + length;
        if (end > n) {
            out[k].off = pos; out[k].len = n - pos - 5; out[k].type = ctype; out[k].cut = 1; k++;
            break;
        }
        out[k].off = pos; out[k].len = length; out[k].type = ctype; out[k].cut = 0; k++;
        pos = end;
        if (ctype == 23 && ++appdata >= max_appdata) break;
    }
    *count = k;
    return TW_OK;
}

/* handshake_messages: messages of the handshake records before the stop; *stop = that index.
 * A message whose bytes are not contiguous in the stream is marked split; a cut one fails. */
static int messages(const u8 *d, const rec_t *recs, int nrec, int after_ccs, msg_t *out, int *count, int *stop) {
    int k = 0, i;
    *stop = nrec;
    /* walk the concatenated bodies of the handshake records: (record index, offset in its body) */
    int parts[TW_MAX_RECORDS];
    int np = 0;
    for (i = 0; i < nrec; i++) {
        int t = recs[i].type;
        if (t == 22) parts[np++] = i;
        else if ((t == 20 && !after_ccs) || t == 23) { *stop = i; break; }
    }
    i64 total = 0;
    for (i = 0; i < np; i++) total += recs[parts[i]].len;
    /* position in the concatenation -> (part, offset in part) */
    int p = 0;
    i64 in = 0, pos = 0;
    while (pos + 4 <= total) {
        if (k >= TW_MAX_MESSAGES) return TW_MESSAGES;
        /* read the 4 header bytes, possibly across parts */
        u8 hdr[4];
        int hp = p;
        i64 hin = in;
        for (int b = 0; b < 4; b++) {
            while (hin >= recs[parts[hp]].len) { hp++; hin = 0; }
            hdr[b] = d[recs[parts[hp]].off + 5 + hin];
            hin++;
        }
        i64 blen = ((i64)hdr[1] << 16) | ((i64)hdr[2] << 8) | hdr[3];
        if (pos + 4 + blen > total) return TW_MESSAGES;              /* incomplete message */
        /* body starts at (hp, hin) unless that part is exhausted */
        while (hp < np && hin >= recs[parts[hp]].len && blen > 0) { hp++; hin = 0; }
        out[k].type = hdr[0];
        out[k].len = blen;
        if (blen == 0) {
            out[k].off = 0; out[k].split = 0;
        } else {
            out[k].off = recs[parts[hp]].off + 5 + hin;
            out[k].split = hin + blen > recs[parts[hp]].len;
        }
        k++;
        pos += 4 + blen;
        /* advance (p, in) to pos */
        i64 adv = 4 + blen;
        while (adv > 0 && p < np) {
            i64 left = recs[parts[p]].len - in;
            if (adv < left) { in += adv; adv = 0; }
            else { adv -= left; p++; in = 0; }
        }
    }
    /* fewer than 4 bytes left: ignored, as by the Python parser */
    *count = k;
    return TW_OK;
}

/* The extension block at body[pos:]; fills types (big-endian into ext) and the first body of
 * each wanted type. Returns 0 or a status. */
typedef struct { i64 off, len; } span_t;

static int ext_block(const u8 *d, i64 body, i64 n, i64 pos, u8 *ext, int *next, span_t *want, const int *wanted,
                     int nwanted, int *psk_or_alps) {
    *next = 0;
    if (pos == n) return TW_OK;
    if (pos + 2 > n) return TW_EXTS;
    i64 len = u16(d + body + pos);
    i64 start = pos + 2, stop = start + len;
    if (stop > n) return TW_EXTS;
    i64 p = start;
    int count = 0;
    while (p + 4 <= stop) {
        int etype = u16(d + body + p);
        i64 elen = u16(d + body + p + 2);
        if (count >= TW_MAX_EXT) return TW_EXTS;
        ext[2 * count] = (u8)(etype >> 8);
        ext[2 * count + 1] = (u8)etype;
        count++;
        i64 nxt = p + 4 + elen;
        for (int w = 0; w < nwanted; w++) {
            if (etype == wanted[w] && want[w].off < 0) {
                want[w].off = body + p + 4;
                want[w].len = (nxt < stop ? nxt : stop) - (p + 4);
            }
        }
        if (etype == 42) *psk_or_alps |= CHF_EARLY_DATA;
        else if (etype == 41) *psk_or_alps |= CHF_PSK;
        else if (etype == 17513 || etype == 17613) *psk_or_alps |= CHF_ALPS;
        p = nxt;
    }
    if (p != stop) return TW_EXTS;
    *next = count;
    return TW_OK;
}

/* Append a 2-byte length and the bytes d[off:off+len] (nothing when off < 0) to the key. */
static int key_put(u8 *key, i64 *at, const u8 *d, i64 off, i64 len) {
    if (off < 0) len = 0;
    if (*at + 2 + len > TW_KEY_CAP) return TW_EXTS;
    key[*at] = (u8)(len >> 8);
    key[*at + 1] = (u8)len;
    if (len) memcpy(key + *at + 2, d + off, (size_t)len);
    *at += 2 + len;
    return TW_OK;
}

/* The ClientHello; key receives what its JA4, JA3, offered versions and ALPN derive from:
 * legacy version, then (2-byte length, bytes) of supported_versions, cipher suites, extension
 * types, the ALPN extension body, signature_algorithms, supported_groups and ec_point_formats. */
static int client_hello(const u8 *d, i64 body, i64 n, i64 *o, u8 *key) {
    u8 ext[2 * TW_MAX_EXT];
    if (n < 35) return TW_CLIENT_HELLO;
    const u8 *b = d + body;
    o[TW_CH_VERSION] = u16(b);
    i64 pos = 35 + b[34];
    o[TW_CH_SID_OFF] = body + 35;
    o[TW_CH_SID_LEN] = b[34];
    if (pos + 2 > n) return TW_CLIENT_HELLO;
    i64 cs = u16(b + pos);
    pos += 2;
    if (pos + cs + 1 > n) return TW_CLIENT_HELLO;
    o[TW_CS_OFF] = body + pos;
    o[TW_CS_LEN] = cs;
    pos += cs;
    pos += 1 + b[pos];
    if (pos > n) return TW_CLIENT_HELLO;
    static const int wanted[7] = {0, 16, 43, 13, 10, 11, 35};
    span_t want[7] = {{-1, 0}, {-1, 0}, {-1, 0}, {-1, 0}, {-1, 0}, {-1, 0}, {-1, 0}};
    int flags = 0, next = 0;
    int st = ext_block(d, body, n, pos, ext, &next, want, wanted, 7, &flags);
    if (st) return st;
    o[TW_CH_FLAGS] = flags;
    o[TW_SNI_OFF] = o[TW_ALPN_OFF] = o[TW_SV_OFF] = o[TW_SIG_OFF] = -1;
    /* server_name: one host_name entry filling the extension */
    if (want[0].off >= 0 && want[0].len > 0) {
        const u8 *e = d + want[0].off;
        i64 m = want[0].len;
        if (!(m >= 5 && e[2] == 0 && u16(e) == m - 2 && u16(e + 3) == m - 5)) return TW_EXTS;
        o[TW_SNI_OFF] = want[0].off + 5;
        o[TW_SNI_LEN] = m - 5;
    }
    if (want[1].off >= 0 && want[1].len > 0) {
        const u8 *e = d + want[1].off;
        i64 m = want[1].len, p = 2;
        if (!(m >= 2 && u16(e) == m - 2)) return TW_EXTS;
        while (p < m) {
            i64 q = p + 1 + e[p];
            if (q > m) break;
            p = q;
        }
        if (p != m) return TW_EXTS;
        o[TW_ALPN_OFF] = want[1].off;
        o[TW_ALPN_LEN] = m;
    }
    if (want[2].off >= 0 && want[2].len > 0) {
        const u8 *e = d + want[2].off;
        if (!(e[0] < want[2].len)) return TW_EXTS;
        o[TW_SV_OFF] = want[2].off + 1;
        o[TW_SV_LEN] = e[0];
    }
    if (want[3].off >= 0 && want[3].len > 0) {
        const u8 *e = d + want[3].off;
        i64 m = want[3].len;
        if (!(m >= 2 && u16(e) <= m - 2)) return TW_EXTS;
        o[TW_SIG_OFF] = want[3].off + 2;
        o[TW_SIG_LEN] = u16(e);
    }
    /* supported_groups: a 2-byte length filling the extension; ec_point_formats: a 1-byte one */
    i64 groups_off = -1, groups_len = 0, formats_off = -1, formats_len = 0;
    if (want[4].off >= 0) {
        const u8 *e = d + want[4].off;
        i64 m = want[4].len;
        if (!(m >= 2 && u16(e) == m - 2 && (m & 1) == 0)) return TW_EXTS;
        groups_off = want[4].off + 2;
        groups_len = m - 2;
    }
    if (want[5].off >= 0) {
        const u8 *e = d + want[5].off;
        i64 m = want[5].len;
        if (!(m >= 1 && e[0] == m - 1)) return TW_EXTS;
        formats_off = want[5].off + 1;
        formats_len = m - 1;
    }
    o[TW_CH_TICKET_OFF] = want[6].off;          /* session_ticket: what a resumption offers */
    o[TW_CH_TICKET_LEN] = want[6].len;
    i64 at = 2;
    key[0] = (u8)(o[TW_CH_VERSION] >> 8);
    key[1] = (u8)o[TW_CH_VERSION];
    if ((st = key_put(key, &at, d, o[TW_SV_OFF], o[TW_SV_LEN]))
            || (st = key_put(key, &at, d, o[TW_CS_OFF], o[TW_CS_LEN]))
            || (st = key_put(key, &at, ext, 0, 2 * (i64)next))
            || (st = key_put(key, &at, d, o[TW_ALPN_OFF], o[TW_ALPN_LEN]))
            || (st = key_put(key, &at, d, o[TW_SIG_OFF], o[TW_SIG_LEN]))
            || (st = key_put(key, &at, d, groups_off, groups_len))
            || (st = key_put(key, &at, d, formats_off, formats_len)))
        return st;
    o[TW_KEY_LEN] = at;
    return TW_OK;
}

/* ServerHello; *hrr set for a HelloRetryRequest. */
static const u8 HRR_RANDOM[32] = {
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C};

static int server_hello(const u8 *d, i64 body, i64 n, i64 *o, i64 *sid_off, i64 *sid_len) {
    if (n < 35) return TW_SERVER_HELLO;
    const u8 *b = d + body;
    if (memcmp(b + 2, HRR_RANDOM, 32) == 0) return TW_SERVER_HELLO;
    o[TW_SH_VERSION] = u16(b);
    i64 pos = 35 + b[34];
    if (pos + 3 > n) return TW_SERVER_HELLO;
    *sid_off = body + 35;
    *sid_len = b[34];
    o[TW_SH_CIPHER] = u16(b + pos);
    static const int wanted[2] = {43, 16};
    span_t want[2] = {{-1, 0}, {-1, 0}};
    u8 types[2 * TW_MAX_EXT];
    int flags = 0, next = 0;
    int st = ext_block(d, body, n, pos + 3, types, &next, want, wanted, 2, &flags);
    if (st) return st;
    /* the extension entries (checked whole by ext_block), for JA3S, JA4S and the key-share group */
    o[TW_SH_EXT_OFF] = pos + 3 < n ? body + pos + 5 : -1;
    o[TW_SH_EXT_LEN] = pos + 3 < n ? u16(b + pos + 3) : 0;
    o[TW_SH_SELECTED] = (want[0].off >= 0 && want[0].len >= 2) ? u16(d + want[0].off) : 0;
    o[TW_SH_ALPN_OFF] = -1;
    o[TW_SH_ALPN_LEN] = 0;
    if (want[1].off >= 0 && want[1].len >= 3) {
        i64 l = d[want[1].off + 2];
        if (l > want[1].len - 3) l = want[1].len - 3;
        o[TW_SH_ALPN_OFF] = want[1].off + 3;
        o[TW_SH_ALPN_LEN] = l;
    }
    o[TW_SH_PSK] = (flags & CHF_PSK) != 0;
    return TW_OK;
}

/* First record protected by negotiated keys (_first_encrypted). */
static int first_encrypted(const rec_t *r, int n, int tls13) {
    for (int i = 0; i < n; i++) {
        if (r[i].type == 23) return i;
        if (r[i].type == 20 && !tls13) return i + 1;
    }
    return n;
}

/* Encrypted alerts of one direction; a plaintext one (or a plaintext-zone record that is not
 * two bytes) fails. */
static int alerts(const rec_t *r, int n, int tls13, i64 *count) {
    int enc = first_encrypted(r, n, tls13);
    *count = 0;
    for (int i = 0; i < n; i++) {
        if (r[i].type != 21) continue;
        if (i < enc) return TW_ALERT;
        (*count)++;
    }
    return TW_OK;
}

/* Byte ranges (start, last byte) of the handshake, CCS and alert records, contiguous ones merged. */
static int ranges(const rec_t *r, int n, i64 *out, i64 *count) {
    int k = 0;
    i64 end = -1;
    for (int i = 0; i < n; i++) {
        int t = r[i].type;
        if (t != 20 && t != 21 && t != 22) continue;
        i64 last = r[i].off + 4 + r[i].len;
        if (k > 0 && r[i].off == end) {
            out[2 * (k - 1) + 1] = last;
        } else {
            if (k >= TW_MAX_RANGES) return TW_RANGES_FULL;
            out[2 * k] = r[i].off;
            out[2 * k + 1] = last;
            k++;
        }
        end = r[i].off + 5 + r[i].len;
    }
    *count = k;
    return TW_OK;
}

static int walk_one(const u8 *cd, i64 cn, const u8 *sd, i64 sn, i64 max_appdata, i64 *o, u8 *key) {
    rec_t cr[TW_MAX_RECORDS], sr[TW_MAX_RECORDS];
    msg_t cm[TW_MAX_MESSAGES], sm[TW_MAX_MESSAGES];
    int ncr = 0, nsr = 0, ncm = 0, nsm = 0, cstop = 0, sstop = 0, st, i;
    if (cn >= 5 && (cd[0] & 0x80) && cd[2] == 1 && (cd[3] == 0 || cd[3] == 2 || cd[3] == 3)) return TW_SSLV2;
    if ((st = records(cd, cn, max_appdata, cr, &ncr))) return st;
    if ((st = records(sd, sn, max_appdata, sr, &nsr))) return st;
    if (ncr == 0 || nsr == 0) return TW_NO_RECORDS;

    /* server: exactly one ServerHello, no cut message */
    if ((st = messages(sd, sr, nsr, 0, sm, &nsm, &sstop))) return st;
    int sh_index = -1;
    for (i = 0; i < nsm; i++) {
        if (sm[i].type == 2) {
            if (sh_index >= 0) return TW_SERVER_HELLO;
            sh_index = i;
        }
    }
    if (sh_index < 0 || sm[sh_index].split) return TW_SERVER_HELLO;
    i64 sh_sid_off = 0, sh_sid_len = 0;
    if ((st = server_hello(sd, sm[sh_index].off, sm[sh_index].len, o, &sh_sid_off, &sh_sid_len))) return st;
    o[TW_SH_SID_OFF] = sh_sid_off;
    o[TW_SH_SID_LEN] = sh_sid_len;
    int version = o[TW_SH_SELECTED] ? (int)o[TW_SH_SELECTED] : (int)o[TW_SH_VERSION];
    int tls13 = version_rank(version) >= 0x0304;
    o[TW_TLS13] = tls13;
    if (tls13) {
        int more = sstop;
        while (more < nsr && sr[more].type != 23) more++;
        for (i = sstop; i < more; i++)
            if (sr[i].type == 22) return TW_TLS13_MORE;
        sstop = more;
    }

    /* client: the first message is a whole ClientHello */
    if ((st = messages(cd, cr, ncr, tls13, cm, &ncm, &cstop))) return st;
    int ch_index = -1;
    for (i = 0; i < ncm; i++)
        if (cm[i].type == 1) { ch_index = i; break; }
    if (ch_index < 0 || cm[ch_index].split) return TW_CLIENT_HELLO;
    o[TW_CH_OFF] = cm[ch_index].off;
    o[TW_CH_LEN] = cm[ch_index].len;
    if ((st = client_hello(cd, cm[ch_index].off, cm[ch_index].len, o, key))) return st;

    /* alerts (encrypted ones only) and frames */
    if ((st = alerts(cr, ncr, tls13, &o[TW_C_ENC_ALERTS]))) return st;
    if ((st = alerts(sr, nsr, tls13, &o[TW_S_ENC_ALERTS]))) return st;
    if ((st = ranges(cr, ncr, o + TW_RANGES, &o[TW_N_RANGES_C]))) return st;
    if ((st = ranges(sr, nsr, o + TW_RANGES + 2 * TW_MAX_RANGES, &o[TW_N_RANGES_S]))) return st;

    int flags = 0;
    for (i = 0; i < ncr; i++) if (cr[i].type == 20) flags |= F_CLIENT_CCS;
    for (i = 0; i < nsr; i++) if (sr[i].type == 20) flags |= F_SERVER_CCS;
    o[TW_CERT_OFF] = o[TW_CR_OFF] = o[TW_CCERT_OFF] = o[TW_SKX_OFF] = o[TW_NST_OFF] = -1;
    if (tls13) {
        int k = 0;
        for (i = cstop; i < ncr; i++) {
            if (cr[i].type != 23) continue;
            if (k < 3) o[TW_APP0 + k] = cr[i].len;
            if (k < 2 && !cr[i].cut) o[TW_APP_COMPLETE] |= 1 << k;
            k++;
        }
        for (; k < 3; k++) o[TW_APP0 + k] = -1;
        o[TW_N_CLIENT_APP] = 0;
        for (i = cstop; i < ncr; i++) o[TW_N_CLIENT_APP] += cr[i].type == 23;
        for (i = sstop; i < nsr; i++) o[TW_N_SERVER_APP] += sr[i].type == 23;
    } else {
        int ncert = 0, ncreq = 0;
        for (i = 0; i < nsm; i++) {
            int t = sm[i].type;
            if (t == 11 || t == 12 || t == 14) flags |= F_FULL;
            if (t == 14) flags |= F_SHD;
            if (t == 11) {
                if (ncert++ || sm[i].split) return TW_CERTS;
                o[TW_CERT_OFF] = sm[i].off; o[TW_CERT_LEN] = sm[i].len;
            } else if (t == 13) {
                if (ncreq++ || sm[i].split) return TW_CERTS;
                o[TW_CR_OFF] = sm[i].off; o[TW_CR_LEN] = sm[i].len;
            } else if (t == 4 && o[TW_NST_OFF] < 0) {      /* NewSessionTicket: what a full handshake issues */
                if (sm[i].split) return TW_CERTS;
                o[TW_NST_OFF] = sm[i].off; o[TW_NST_LEN] = sm[i].len;
            } else if (t == 12 && o[TW_SKX_OFF] < 0) {
                if (sm[i].split) return TW_CERTS;       /* its curve is read in Python: contiguous only */
                o[TW_SKX_OFF] = sm[i].off; o[TW_SKX_LEN] = sm[i].len;
            }
        }
        for (i = 0; i < ncm; i++) {
            if (cm[i].type == 11) {
                if (cm[i].split) return TW_CERTS;
                o[TW_CCERT_OFF] = cm[i].off; o[TW_CCERT_LEN] = cm[i].len;
            } else if (cm[i].type == 16) {
                flags |= F_SAW_CKE;
            }
        }
        if (o[TW_CH_SID_LEN] > 0 && sh_sid_len == o[TW_CH_SID_LEN]
                && memcmp(cd + o[TW_CH_SID_OFF], sd + sh_sid_off, (size_t)sh_sid_len) == 0)
            flags |= F_SID_MATCH;
    }
    o[TW_FLAGS] = flags;
    return TW_OK;
}

/* n connections: data[2i], data[2i+1] = client and server bytes (lens alike); out: n * TW_FIELDS
 * int64 (zeroed by the caller); keys: n * TW_KEY_CAP bytes. Returns TW_FIELDS * 65536 + TW_KEY_CAP. */
i64 cp_tls_walk(i64 n, const u8 *const *data, const i64 *lens, i64 max_appdata, i64 *out, u8 *keys) {
    for (i64 i = 0; i < n; i++) {
        i64 *o = out + i * TW_FIELDS;
        /* the next connections' hellos are read soon: fetch their first lines meanwhile */
        if (i + 2 < n) {
            for (int side = 0; side < 2; side++) {
                const u8 *next = data[2 * (i + 2) + side];
                i64 len = lens[2 * (i + 2) + side];
                for (i64 at = 0; at < len && at < 2048; at += 64) __builtin_prefetch(next + at);
            }
        }
        int st = walk_one(data[2 * i], lens[2 * i], data[2 * i + 1], lens[2 * i + 1], max_appdata, o,
                          keys + i * TW_KEY_CAP);
        o[TW_STATUS] = st;
    }
    return TW_FIELDS * 65536 + TW_KEY_CAP;
}

/* First index in offs[lo, hi) whose value is greater than x (hi if none). */
static i64 upper_bound(const i64 *offs, i64 lo, i64 hi, i64 x) {
    while (lo < hi) {
        i64 mid = lo + (hi - lo) / 2;
        if (offs[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The frames of n walked connections' handshakes. w: their walk output (n * TW_FIELDS); offs/frames:
 * every direction's (offset, frame) marks sorted by offset, one direction after another (2k: connection
 * k's client, 2k + 1: its server), mark_ends[j]: where direction j's end. For each byte range of the
 * walk, the marks from the one at or before its start to the last at or before its end (the frames
 * that carried it); each connection's frames sorted and distinct, one connection after another into
 * out (room for cap), out_ends[k]: where connection k's end. Returns the total, or -1 without room. */
i64 cp_tls_frames(i64 n, const i64 *w, const i64 *offs, const i64 *frames, const i64 *mark_ends, i64 *out,
                  i64 cap, i64 *out_ends) {
    i64 at = 0;
    for (i64 k = 0; k < n; k++) {
        const i64 *o = w + k * TW_FIELDS;
        i64 first = at;
        for (int side = 0; side < 2; side++) {
            i64 j = 2 * k + side;
            i64 lo = j ? mark_ends[j - 1] : 0, hi = mark_ends[j];
            i64 count = o[side ? TW_N_RANGES_S : TW_N_RANGES_C];
            const i64 *r = o + TW_RANGES + side * 2 * TW_MAX_RANGES;
            if (count > TW_MAX_RANGES) count = TW_MAX_RANGES;
            if (hi <= lo) continue;
            for (i64 q = 0; q < count; q++) {
                i64 a = upper_bound(offs, lo, hi, r[2 * q]) - 1, e = upper_bound(offs, lo, hi, r[2 * q + 1]);
                if (a < lo) a = lo;
                if (e - a > cap - at) return -1;
                for (; a < e; a++) out[at++] = frames[a];
            }
        }
        for (i64 a = first + 1; a < at; a++) {          /* insertion sort: a handful of frames */
            i64 v = out[a], b = a - 1;
            while (b >= first && out[b] > v) {
                out[b + 1] = out[b];
                b--;
            }
            out[b + 1] = v;
        }
        i64 kept = first;
        for (i64 a = first; a < at; a++)
            if (a == first || out[a] != out[kept - 1]) out[kept++] = out[a];
        at = kept;
        out_ends[k] = at;
    }
    return at;
}
