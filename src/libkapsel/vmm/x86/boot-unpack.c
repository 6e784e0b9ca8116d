/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's fast way into a bzImage (docs/vm.md, Booting a bzImage on the soft CPU): the
 * vmlinux inside is unpacked on the host and booted through its PVH entry, instead of having the
 * soft CPU run the kernel's own decompressor. On the soft CPU that decompressor is most of the
 * boot (measured: Debian's 6.1 kernel, 8 MB of xz, 44 s of a 59 s boot to init; liblzma does it
 * in about 1 s). The payload is where the setup header says (payload_offset, payload_length,
 * boot protocol 2.08+); Linux appends the decompressed size as a little-endian 32-bit word
 * (arch/x86/boot/compressed/Makefile, *_with_size). xz (liblzma) and zstd (libzstd) payloads
 * are unpacked, both bound with dlopen on first use (core/dl.h); anything else, or an image
 * without a PVH entry note, is left to the kernel's decompressor.
 */
#include <errno.h>
#include <lzma.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <zstd.h>

#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "core/log.h"
#include "vmm/x86/boot.h"

#define BZ_VERSION_OFF 0x206
#define BZ_PAYLOAD_OFF 0x248
#define BZ_PAYLOAD_LEN 0x24c
#define BZ_MIN_PAYLOAD 0x0208 /* the payload fields */
#define UNPACK_MAX     (1ULL << 30)
#define XZ_MEMLIMIT    (256ULL << 20)

static struct {
	void *h;
	__typeof__(lzma_stream_buffer_decode) *decode;
} xz;

static struct {
	void *h;
	__typeof__(ZSTD_decompress) *decompress;
	__typeof__(ZSTD_isError) *is_error;
	__typeof__(ZSTD_getErrorName) *error_name;
} zs;

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int unpack_xz(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		     struct kapsel_error **err)
{
	const struct kap_dl_sym syms[] = {KAP_DL_SYM("lzma_stream_buffer_decode", xz.decode)};
	int r = kap_dl_bind("liblzma.so.5", "liblzma5", &xz.h, syms, 1, err);
	if (r < 0)
		return r;
	uint64_t limit = XZ_MEMLIMIT;
	size_t in_pos = 0, out_pos = 0;
	lzma_ret lr = xz.decode(&limit, 0, NULL, in, &in_pos, in_len, out, &out_pos, out_len);
	if (lr != LZMA_OK)
		return kap_error_plain(err, EINVAL, "bzImage: its xz payload does not decode (%s)",
				       lr == LZMA_BUF_ERROR	 ? "longer than the size it states"
				       : lr == LZMA_DATA_ERROR	 ? "corrupt data"
				       : lr == LZMA_FORMAT_ERROR ? "not xz"
				       : lr == LZMA_MEMLIMIT_ERROR ? "dictionary over 256 MiB"
								   : "liblzma error");
	if (out_pos != out_len)
		return kap_error_plain(err, EINVAL,
				       "bzImage: its xz payload holds %zu bytes, not the %zu it "
				       "states",
				       out_pos, out_len);
	return 0;
}

static int unpack_zstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
		       struct kapsel_error **err)
{
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("ZSTD_decompress", zs.decompress),
	    KAP_DL_SYM("ZSTD_isError", zs.is_error),
	    KAP_DL_SYM("ZSTD_getErrorName", zs.error_name),
	};
	int r = kap_dl_bind("libzstd.so.1", "libzstd1", &zs.h, syms, KAP_ARRAY_SIZE(syms), err);
	if (r < 0)
		return r;
	size_t n = zs.decompress(out, out_len, in, in_len);
	if (zs.is_error(n))
		return kap_error_plain(err, EINVAL,
				       "bzImage: its zstd payload does not decode (%s)",
				       zs.error_name(n));
	if (n != out_len)
		return kap_error_plain(err, EINVAL,
				       "bzImage: its zstd payload holds %zu bytes, not the %zu it "
				       "states",
				       n, out_len);
	return 0;
}

int kap_boot_unpack_bzimage(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len,
			    struct kap_boot_image *img, struct kapsel_error **err)
{
	*out = NULL;
	*out_len = 0;
	if (len < BZ_PAYLOAD_LEN + 4 ||
	    (uint32_t)(buf[BZ_VERSION_OFF] | buf[BZ_VERSION_OFF + 1] << 8) < BZ_MIN_PAYLOAD)
		return 0;
	uint32_t setup_sects = buf[0x1f1] ? buf[0x1f1] : 4;
	uint64_t pm = ((uint64_t)setup_sects + 1) * 512;
	uint64_t off = le32(buf + BZ_PAYLOAD_OFF), plen = le32(buf + BZ_PAYLOAD_LEN);
	if (plen < 8 || pm > len || off > len - pm || plen > len - pm - off)
		return 0; /* the kernel's decompressor would not find it either: let it say so */
	const uint8_t *p = buf + pm + off;
	bool is_xz = !memcmp(p,
			     "\xfd"
			     "7zXZ",
			     6);
	bool is_zstd = !memcmp(p, "\x28\xb5\x2f\xfd", 4);
	if (!is_xz && !is_zstd)
		return 0;
	size_t in_len = (size_t)plen - 4, n = le32(p + in_len);
	if (n == 0 || n > UNPACK_MAX)
		return kap_error_plain(err, EINVAL,
				       "bzImage: its payload states a size of %zu bytes (1 GiB at "
				       "most)",
				       n);
	uint8_t *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return kap_error(err, errno, "bzImage: %zu bytes for the unpacked kernel", n);
	struct kapsel_error *e = NULL;
	int r = is_xz ? unpack_xz(p, in_len, m, n, &e) : unpack_zstd(p, in_len, m, n, &e);
	if (r == -ENOENT) {
		/* No liblzma or libzstd on this host: the kernel decompresses itself. */
		kap_debug("vm: %s; the soft CPU runs the kernel's decompressor", e->msg);
		kapsel_error_free(e);
		munmap(m, n);
		return 0;
	}
	if (r < 0) {
		*err = e;
		munmap(m, n);
		return r;
	}
	struct kap_boot_image unpacked;
	e = NULL;
	if (kap_boot_parse(m, n, &unpacked, &e) < 0 || unpacked.kind != KAP_BOOT_PVH) {
		kap_debug("vm: the bzImage's vmlinux has no PVH entry (%s); the soft CPU runs the "
			  "kernel's decompressor",
			  e ? e->msg : kap_boot_kind_name(unpacked.kind));
		kapsel_error_free(e);
		munmap(m, n);
		return 0;
	}
	*img = unpacked;
	*out = m;
	*out_len = n;
	return 1;
}
