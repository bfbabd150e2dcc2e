/* HTTP/1.1 chunked bodies: the plain "<hex>\r\n" chunk lines walked in C (commpath/decode/http.py).
 *
 * cp_http_chunks follows chunk lines of 1 to 15 hex digits from data[pos]; at any other line it
 * hands back where it stopped, and Python's own parse goes on from there (chunk extensions,
 * spaces, long sizes). The result packs (position << 16 | lines walked) << 2 | status.
 */
#include <stdint.h>

typedef int64_t i64;
typedef uint8_t u8;

enum { HC_CONTINUE = 0, HC_LAST = 1, HC_CUT = 2 };   /* LAST: position of the "0" line's CR LF */

static inline int hex_value(u8 c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

i64 cp_http_chunks(const u8 *d, i64 n, i64 pos, i64 budget) {
    i64 used = 0;
    int status = HC_CONTINUE;
    while (used < budget && used < 0xFFFF) {
        i64 p = pos, size = 0;
        int v;
        while (p < n && p - pos < 16 && (v = hex_value(d[p])) >= 0) {
            size = (size << 4) | v;
            p++;
        }
        i64 digits = p - pos;
        if (digits < 1 || digits > 15 || p + 1 >= n || d[p] != '\r' || d[p + 1] != '\n')
            break;                                   /* not a plain line: Python reads it */
        used++;
        if (size == 0) {
            pos = p;
            status = HC_LAST;
            break;
        }
        pos = p + 2 + size + 2;
        if (pos > n) {
            status = HC_CUT;
            break;
        }
    }
    return ((pos << 16 | used) << 2) | status;
}
