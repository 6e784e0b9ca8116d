/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Streaming SHA-256 (OCI image-spec descriptor.md#digests: sha256 is the one algorithm every
 * implementation must support, and the only one kapsel accepts). libcrypto is bound on first use
 * (core/dl.h) for its SHA-NI code; should it be missing, a portable implementation (FIPS 180-4
 * §6.2) keeps digests working, only slower.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "image/image.h"

static struct {
	void *h;
	__typeof__(EVP_MD_CTX_new) *ctx_new;
	__typeof__(EVP_MD_CTX_free) *ctx_free;
	__typeof__(EVP_sha256) *sha256;
	__typeof__(EVP_DigestInit_ex) *init;
	__typeof__(EVP_DigestUpdate) *update;
	__typeof__(EVP_DigestFinal_ex) *final;
	int failed;
} crypto;

static bool crypto_bind(void)
{
	if (crypto.h)
		return true;
	if (__atomic_load_n(&crypto.failed, __ATOMIC_RELAXED))
		return false;
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("EVP_MD_CTX_new", crypto.ctx_new),
	    KAP_DL_SYM("EVP_MD_CTX_free", crypto.ctx_free),
	    KAP_DL_SYM("EVP_sha256", crypto.sha256),
	    KAP_DL_SYM("EVP_DigestInit_ex", crypto.init),
	    KAP_DL_SYM("EVP_DigestUpdate", crypto.update),
	    KAP_DL_SYM("EVP_DigestFinal_ex", crypto.final),
	};
	struct kapsel_error *err = NULL;
	if (kap_dl_bind("libcrypto.so.3", "libssl3", &crypto.h, syms, KAP_ARRAY_SIZE(syms), &err) <
	    0) {
		kapsel_error_free(err);
		__atomic_store_n(&crypto.failed, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

/* ---- portable fallback, FIPS 180-4 §6.2 ---- */
struct sha256_soft {
	uint32_t h[8];
	uint64_t len;
	unsigned char buf[64];
	size_t n;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void soft_block(struct sha256_soft *s, const unsigned char *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 =
		    h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
	s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void soft_update(struct sha256_soft *s, const unsigned char *p, size_t len)
{
	s->len += len;
	if (s->n) {
		size_t take = 64 - s->n < len ? 64 - s->n : len;
		memcpy(s->buf + s->n, p, take);
		s->n += take, p += take, len -= take;
		if (s->n < 64)
			return;
		soft_block(s, s->buf);
		s->n = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		soft_block(s, p);
	memcpy(s->buf, p, len);
	s->n = len;
}

static void soft_final(struct sha256_soft *s, unsigned char out[32])
{
	uint64_t bits = s->len * 8;
	unsigned char pad[72] = {0x80};
	size_t padlen = (s->n < 56 ? 56 : 120) - s->n;
	for (int i = 0; i < 8; i++)
		pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
	soft_update(s, pad, padlen + 8);
	for (int i = 0; i < 8; i++)
		for (int k = 0; k < 4; k++)
			out[4 * i + k] = (unsigned char)(s->h[i] >> (24 - 8 * k));
}

struct kap_sha256 {
	EVP_MD_CTX *ctx; /* NULL: the portable code below */
	struct sha256_soft soft;
};

struct kap_sha256 *kap_sha256_new(void)
{
	struct kap_sha256 *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	if (crypto_bind()) {
		h->ctx = crypto.ctx_new();
		if (h->ctx && crypto.init(h->ctx, crypto.sha256(), NULL) == 1)
			return h;
		if (h->ctx)
			crypto.ctx_free(h->ctx);
		h->ctx = NULL;
	}
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(h->soft.h, iv, sizeof(iv));
	return h;
}

void kap_sha256_update(struct kap_sha256 *h, const void *data, size_t len)
{
	if (!len)
		return;
	if (h->ctx)
		crypto.update(h->ctx, data, len);
	else
		soft_update(&h->soft, data, len);
}

void kap_sha256_final(struct kap_sha256 *h, char *out)
{
	unsigned char md[32];
	unsigned int mdlen = 32;
	if (h->ctx) {
		crypto.final(h->ctx, md, &mdlen);
		crypto.ctx_free(h->ctx);
	} else {
		soft_final(&h->soft, md);
	}
	free(h);
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[md[i] >> 4];
		out[8 + 2 * i] = hex[md[i] & 15];
	}
	out[KAP_DIGEST_LEN] = '\0';
}

int kap_digest_validate(const char *digest, const char *what, struct kapsel_error **err)
{
	if (!digest)
		return kap_error_plain(err, EINVAL, "%s: missing digest", what);
	size_t len = strnlen(digest, KAP_DIGEST_LEN + 1);
	const char *colon = memchr(digest, ':', len);
	if (!colon)
		return kap_error_plain(err, EINVAL,
				       "%s: invalid digest \"%.80s\" (expected sha256:<64 hex>)",
				       what, digest);
	if ((size_t)(colon - digest) != 6 || strncmp(digest, "sha256", 6) != 0)
		return kap_error_plain(
		    err, ENOTSUP, "%s: unsupported digest algorithm \"%.*s\" (only sha256)", what,
		    (int)(colon - digest) > 32 ? 32 : (int)(colon - digest), digest);
	if (len != KAP_DIGEST_LEN)
		return kap_error_plain(err, EINVAL,
				       "%s: invalid digest \"%.80s\" (expected 64 hex digits)",
				       what, digest);
	for (const char *p = colon + 1; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return kap_error_plain(err, EINVAL,
					       "%s: invalid digest \"%s\" (expected lowercase hex)",
					       what, digest);
	return 0;
}
