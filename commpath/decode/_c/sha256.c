/* SHA-256 (FIPS 180-4) of many short messages in one call: the findings' fingerprints.
 *
 * hashlib costs about 1 us per message from Python (an object, a call, a slice of the digest):
 * 1 s of CPU for the million findings of a million-connection run. Here the loop is in C and each
 * message goes to OpenSSL's SHA-256 when the caller passes its functions (libcrypto uses the CPU's
 * SHA instructions: 0.1 us for a 60-byte message), else to the portable rounds below (0.6 us).
 * Tested against hashlib (tests/test_fingerprint_kernel.py).
 */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;
typedef uint32_t u32;
typedef uint8_t u8;

static const u32 K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(u32 h[8], const u8 block[64]) {
    u32 w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (u32)block[4 * i] << 24 | (u32)block[4 * i + 1] << 16 | (u32)block[4 * i + 2] << 8 | block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        u32 s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        u32 s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    u32 a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        u32 t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        u32 t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

/* OpenSSL's low-level SHA-256 (SHA256_Init, SHA256_Update, SHA256_Final): its one-shot SHA256 fetches
 * the algorithm from a provider on every call (0.5 us), these go straight to the block function. */
typedef struct {
    int (*init)(void *ctx);
    int (*update)(void *ctx, const void *data, size_t len);
    int (*final)(u8 *digest, void *ctx);
} OpenSSLSha256;

/* The first `keep` bytes (at most 32) of the SHA-256 of each message data[offsets[i]:offsets[i + 1]],
 * i < n, written to out[keep * i ...]; by `openssl` (OpenSSL's functions) when not NULL. */
void cp_sha256_many(const u8 *data, const i64 *offsets, i64 n, i64 keep, u8 *out, const OpenSSLSha256 *openssl) {
    /* SHA256_CTX is 112 bytes; room to spare, aligned */
    _Alignas(16) u8 ctx[256];
    for (i64 m = 0; m < n; m++) {
        const u8 *p = data + offsets[m];
        i64 len = offsets[m + 1] - offsets[m], left = len;
        if (openssl) {
            u8 digest[32];
            openssl->init(ctx);
            openssl->update(ctx, p, (size_t)len);
            openssl->final(digest, ctx);
            memcpy(out + keep * m, digest, (size_t)keep);
            continue;
        }
        u32 h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        for (; left >= 64; left -= 64, p += 64)
            compress(h, p);
        u8 tail[128] = {0};
        memcpy(tail, p, (size_t)left);
        tail[left] = 0x80;
        int blocks = left < 56 ? 1 : 2;
        uint64_t bits = (uint64_t)len * 8;
        for (int i = 0; i < 8; i++)
            tail[64 * blocks - 1 - i] = (u8)(bits >> (8 * i));
        for (int b = 0; b < blocks; b++)
            compress(h, tail + 64 * b);
        u8 digest[32];
        for (int i = 0; i < 8; i++) {
            digest[4 * i] = (u8)(h[i] >> 24); digest[4 * i + 1] = (u8)(h[i] >> 16);
            digest[4 * i + 2] = (u8)(h[i] >> 8); digest[4 * i + 3] = (u8)h[i];
        }
        memcpy(out + keep * m, digest, (size_t)keep);
    }
}
