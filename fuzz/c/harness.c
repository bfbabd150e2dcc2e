/* libFuzzer entry points for the C kernels of commpath/decode/_c (one target per -DTARGET_*).
 *
 * Every input is copied into a buffer of exactly its size, so AddressSanitizer sees any read past
 * what the Python caller would hand the kernel. The argument shapes mirror the ctypes callers:
 * _hs_fast.py (cp_tls_walk, cp_tls_frames), _pcapfile.py (cp_index_pcap, cp_index_pcapng),
 * _packets.py (cp_parse_headers) and http.py (cp_http_chunks).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef uint8_t u8;

i64 cp_tls_walk(i64 n, const u8 *const *data, const i64 *lens, i64 max_appdata, i64 *out, u8 *keys);
i64 cp_tls_frames(i64 n, const i64 *w, const i64 *offs, const i64 *frames, const i64 *mark_ends, i64 *out,
                  i64 cap, i64 *out_ends);
void cp_index_pcap(const u8 *buf, i64 n, int big, double ticks, int32_t linktype, i64 snap_max, i64 cap,
                   i64 *off, int32_t *caplen, int32_t *wirelen, double *ts, int32_t *lt, i64 *out, void **cols);
void cp_index_pcapng(const u8 *buf, i64 n, i64 *state, int32_t *if_lt, double *if_ticks, i64 *if_offset,
                     i64 max_ifaces, i64 cap, i64 *off, int32_t *caplen, int32_t *wirelen, double *ts,
                     int32_t *lt, i64 *out);
void cp_parse_headers(const u8 *buf, i64 n, const i64 *off, const int32_t *caplen, const int32_t *linktype,
                      void **cols);
i64 cp_http_chunks(const u8 *d, i64 n, i64 pos, i64 budget);

static u8 *exact_copy(const u8 *data, size_t size) {
    u8 *p = malloc(size ? size : 1);
    if (size) memcpy(p, data, size);
    return p;
}

#define MAX_PACKETS 512
/* Element sizes of _packets.FIELDS, in its order: the header columns parse_one writes. */
static const size_t FIELD_SIZES[23] = {1, 1, 8, 8, 8, 8, 1, 4, 4, 1, 4, 8, 4, 4, 1, 4, 1, 8, 8, 8, 8, 4, 4};

static void **alloc_cols(void) {
    void **cols = calloc(23, sizeof(void *));
    for (int i = 0; i < 23; i++) cols[i] = calloc(MAX_PACKETS, FIELD_SIZES[i]);
    return cols;
}

static void free_cols(void **cols) {
    for (int i = 0; i < 23; i++) free(cols[i]);
    free(cols);
}

#if defined(TARGET_TLS_WALK)
/* Input: 2-byte big-endian length of the client bytes, the client bytes, then the server bytes;
 * the low bit of the first byte picks max_appdata 4 (no key log) or 32 (with one). */
#define OUT_ROOM 256      /* int64 per connection: the kernel's TW_FIELDS must fit */
#define KEY_ROOM 4096     /* bytes of key per connection: its TW_KEY_CAP must fit */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t cl = ((size_t)data[0] << 8 | data[1]) % (size - 1);
    const u8 *rest = data + 2;
    size_t sl = size - 2 - cl;
    u8 *c = exact_copy(rest, cl), *s = exact_copy(rest + cl, sl);
    const u8 *streams[2] = {c, s};
    i64 lens[2] = {(i64)cl, (i64)sl};
    i64 *out = calloc(OUT_ROOM, sizeof(i64));
    u8 *keys = calloc(KEY_ROOM, 1);
    i64 packed = cp_tls_walk(1, streams, lens, (data[0] & 1) ? 32 : 4, out, keys);
    if (packed / 65536 > OUT_ROOM || packed % 65536 > KEY_ROOM) abort();
    /* frames of the walked ranges: a mark every 97 bytes of each direction, as segments would give */
    i64 nc = (i64)cl / 97 + 1, ns = (i64)sl / 97 + 1, k = 0;
    i64 *offs = malloc((nc + ns) * sizeof(i64)), *frames = malloc((nc + ns) * sizeof(i64));
    for (i64 i = 0; i < nc; i++, k++) offs[k] = i * 97, frames[k] = 2 * i + 1;
    for (i64 i = 0; i < ns; i++, k++) offs[k] = i * 97, frames[k] = 2 * i + 2;
    i64 mark_ends[2] = {nc, nc + ns}, fout[256], fends[1];
    cp_tls_frames(1, out, offs, frames, mark_ends, fout, 256, fends);
    free(c), free(s), free(out), free(keys), free(offs), free(frames);
    return 0;
}
#elif defined(TARGET_PCAP)
/* Input: flags byte (bit 0 big-endian), 2-byte link type, then pcap records (no file header). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int big = data[0] & 1;
    int32_t linktype = data[1] << 8 | data[2];
    u8 *buf = exact_copy(data + 3, size - 3);
    i64 off[MAX_PACKETS], out[3];
    int32_t caplen[MAX_PACKETS], wirelen[MAX_PACKETS], lt[MAX_PACKETS];
    double ts[MAX_PACKETS];
    void **cols = alloc_cols();
    cp_index_pcap(buf, (i64)(size - 3), big, (data[0] & 2) ? 1e9 : 1e6, linktype, 262144, MAX_PACKETS, off,
                  caplen, wirelen, ts, lt, out, cols);
    free_cols(cols);
    free(buf);
    return 0;
}
#elif defined(TARGET_PCAPNG)
/* Input: pcapng blocks (section header included); the packets found are then parsed as headers. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    u8 *buf = exact_copy(data, size);
    i64 state[3] = {0, 0, 0}, if_offset[8], off[MAX_PACKETS], out[3];
    int32_t if_lt[8], caplen[MAX_PACKETS], wirelen[MAX_PACKETS], lt[MAX_PACKETS];
    double if_ticks[8], ts[MAX_PACKETS];
    cp_index_pcapng(buf, (i64)size, state, if_lt, if_ticks, if_offset, 8, MAX_PACKETS, off, caplen, wirelen,
                    ts, lt, out);
    if (out[0] < 0 || out[0] > MAX_PACKETS || out[1] > (i64)size) abort();
    void **cols = alloc_cols();
    cp_parse_headers(buf, out[0], off, caplen, lt, cols);
    free_cols(cols);
    free(buf);
    return 0;
}
#elif defined(TARGET_HTTP_CHUNKS)
/* Input: 2-byte start position, then the body bytes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t n = size - 2;
    i64 pos = (i64)(((size_t)data[0] << 8 | data[1]) % (n + 1));
    u8 *buf = exact_copy(data + 2, n);
    cp_http_chunks(buf, (i64)n, pos, 4096);
    free(buf);
    return 0;
}
#else
#error "define one TARGET_*"
#endif
