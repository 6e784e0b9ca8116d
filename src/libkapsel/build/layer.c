/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An overlay upper directory -> one OCI layer blob (image-spec layer.md), gzip- (or zstd-)
 * compressed,
 * written into the store with both digests computed while the bytes go out: the diff_id over
 * the tar stream, the blob digest over the compressed one.
 *
 * The upper directory is overlayfs's record of a change (Documentation/filesystems/
 * overlayfs.rst): a deleted entry is a 0/0 character device ("whiteout"), a directory that
 * replaced a lower one carries trusted.overlay.opaque=y. layer.md spells the same as
 * `.wh.<name>` files and a `.wh..wh..opq` entry. redirect_dir and metacopy would record
 * renames and metadata-only copies that a tar cannot express; kapsel mounts without them and a
 * layer that has them is refused rather than written wrong.
 *
 * Reproducible: entries are written in byte order of their names, owner names are left out,
 * hardlinks point at the first name in that order, and with SOURCE_DATE_EPOCH every mtime
 * later than it is clamped to it (reproducible-builds.org/specs/source-date-epoch).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>

#include "build/build.h"
#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "image/image.h"

static struct {
	void *h;
	__typeof__(deflateInit2_) *init2;
	__typeof__(deflate) *deflate;
	__typeof__(deflateEnd) *end;
} z;

/* ISA-L's igzip at level 1 deflates several times faster than zlib's default level, for a
 * somewhat larger blob (bench/build measures the whole build); zlib is the fallback without
 * libisal2. */
static struct {
	void *h;
	__typeof__(isal_deflate_init) *init;
	__typeof__(isal_deflate) *deflate;
} isal;
static int isal_missing;

static bool bind_isal(void)
{
	if (isal.h)
		return true;
	if (__atomic_load_n(&isal_missing, __ATOMIC_RELAXED))
		return false;
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("isal_deflate_init", isal.init),
	    KAP_DL_SYM("isal_deflate", isal.deflate),
	};
	struct kapsel_error *e = NULL;
	if (kap_dl_bind("libisal.so.2", "libisal2", &isal.h, syms, KAP_ARRAY_SIZE(syms), &e) < 0) {
		kapsel_error_free(e);
		__atomic_store_n(&isal_missing, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

static int bind_zlib(struct kapsel_error **err)
{
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("deflateInit2_", z.init2),
	    KAP_DL_SYM("deflate", z.deflate),
	    KAP_DL_SYM("deflateEnd", z.end),
	};
	if (z.h)
		return 0;
	return kap_dl_bind("libz.so.1", "zlib1g", &z.h, syms, KAP_ARRAY_SIZE(syms), err);
}

/* --compression zstd (layer.md "zstd Media Types"): libzstd's streaming compressor at its
 * default level, bound at first use like the decompressor in unpack.c. */
static struct {
	void *h;
	__typeof__(ZSTD_createCStream) *create;
	__typeof__(ZSTD_freeCStream) *free_stream;
	__typeof__(ZSTD_initCStream) *init;
	__typeof__(ZSTD_compressStream) *compress;
	__typeof__(ZSTD_endStream) *end;
	__typeof__(ZSTD_isError) *is_error;
	__typeof__(ZSTD_getErrorName) *error_name;
} zst;

static int bind_zstd(struct kapsel_error **err)
{
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("ZSTD_createCStream", zst.create),
	    KAP_DL_SYM("ZSTD_freeCStream", zst.free_stream),
	    KAP_DL_SYM("ZSTD_initCStream", zst.init),
	    KAP_DL_SYM("ZSTD_compressStream", zst.compress),
	    KAP_DL_SYM("ZSTD_endStream", zst.end),
	    KAP_DL_SYM("ZSTD_isError", zst.is_error),
	    KAP_DL_SYM("ZSTD_getErrorName", zst.error_name),
	};
	if (zst.h)
		return 0;
	return kap_dl_bind("libzstd.so.1", "libzstd1", &zst.h, syms, KAP_ARRAY_SIZE(syms), err);
}

#define OUT_CHUNK (256u << 10)

struct tw {
	struct kap_blob_writer *w;
	struct kap_sha256 *diff;
	z_stream zs;
	bool z_ready;
	bool use_isal;
	ZSTD_CStream *zc; /* set: zstd instead of gzip */
	int64_t zc_out;	  /* compressed bytes written */
	struct isal_zstream is;
	unsigned char *isal_level_buf;
	unsigned char out[OUT_CHUNK];
	int64_t clamp;		 /* -1: none */
	const char *const *skip; /* paths left out */
	/* hardlinks: (dev, ino) -> first name */
	struct link {
		dev_t dev;
		ino_t ino;
		char *name;
	} * links;
	size_t n_links;
	struct kapsel_error **err;
};

static int isal_deflate_chunk(struct tw *t, const void *data, size_t len, bool finish)
{
	t->is.next_in = (uint8_t *)(uintptr_t)data;
	t->is.avail_in = (uint32_t)len;
	t->is.end_of_stream = finish;
	do {
		t->is.next_out = t->out;
		t->is.avail_out = OUT_CHUNK;
		if (isal.deflate(&t->is) != COMP_OK)
			return kap_error_plain(t->err, EIO, "gzip: isal_deflate failed");
		size_t have = OUT_CHUNK - t->is.avail_out;
		if (have) {
			int r = kap_blob_writer_write(t->w, t->out, have, t->err);
			if (r < 0)
				return r;
		}
	} while (t->is.avail_in || t->is.avail_out == 0 ||
		 (finish && t->is.internal_state.state != ZSTATE_END));
	return 0;
}

static int zstd_chunk(struct tw *t, const void *data, size_t len, bool finish)
{
	ZSTD_inBuffer in = {data, len, 0};
	for (;;) {
		ZSTD_outBuffer out = {t->out, OUT_CHUNK, 0};
		size_t left = finish ? zst.end(t->zc, &out) : zst.compress(t->zc, &out, &in);
		if (zst.is_error(left))
			return kap_error_plain(t->err, EIO, "zstd: %s", zst.error_name(left));
		if (out.pos) {
			int r = kap_blob_writer_write(t->w, t->out, out.pos, t->err);
			if (r < 0)
				return r;
			t->zc_out += (int64_t)out.pos;
		}
		if (finish ? left == 0 : in.pos == in.size)
			return 0;
	}
}

static int tw_deflate(struct tw *t, const void *data, size_t len, int flush)
{
	if (t->zc)
		return zstd_chunk(t, data, len, flush == Z_FINISH);
	if (t->use_isal)
		return isal_deflate_chunk(t, data, len, flush == Z_FINISH);
	t->zs.next_in = (unsigned char *)(uintptr_t)data;
	t->zs.avail_in = (unsigned)len;
	do {
		t->zs.next_out = t->out;
		t->zs.avail_out = OUT_CHUNK;
		int zr = z.deflate(&t->zs, flush);
		if (zr == Z_STREAM_ERROR)
			return kap_error_plain(t->err, EIO, "gzip: deflate failed");
		size_t have = OUT_CHUNK - t->zs.avail_out;
		if (have) {
			int r = kap_blob_writer_write(t->w, t->out, have, t->err);
			if (r < 0)
				return r;
		}
	} while (t->zs.avail_out == 0 || (flush == Z_FINISH && t->zs.avail_in));
	return 0;
}

static int tw_write(struct tw *t, const void *data, size_t len)
{
	kap_sha256_update(t->diff, data, len);
	while (len) {
		size_t n = len > (1u << 30) ? (1u << 30) : len;
		int r = tw_deflate(t, data, n, Z_NO_FLUSH);
		if (r < 0)
			return r;
		data = (const char *)data + n;
		len -= n;
	}
	return 0;
}

static int tw_pad(struct tw *t, uint64_t size)
{
	static const char zero[512];
	size_t pad = (512 - size % 512) % 512;
	return pad ? tw_write(t, zero, pad) : 0;
}

static void octal(char *field, size_t width, uint64_t v)
{
	/* ustar numeric fields: octal, NUL-terminated; GNU base-256 when it does not fit. */
	if (v < (UINT64_C(1) << (3 * (width - 1)))) {
		snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
		return;
	}
	memset(field, 0, width);
	field[0] = (char)0x80;
	for (size_t i = width - 1; i > 0 && v; i--, v >>= 8)
		field[i] = (char)(v & 0xff);
}

/* One PAX record "<len> key=value\n", the length counting itself (POSIX pax format). */
static int pax_add(char **buf, size_t *len, const char *key, const char *val, size_t vlen)
{
	size_t body = 1 + strlen(key) + 1 + vlen + 1;
	size_t total = body + 1;
	while (total != body + (size_t)snprintf(NULL, 0, "%zu", total))
		total = body + (size_t)snprintf(NULL, 0, "%zu", total);
	char *nb = realloc(*buf, *len + total + 1);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	int n = snprintf(nb + *len, total + 1, "%zu %s=", total, key);
	memcpy(nb + *len + n, val, vlen);
	nb[*len + total - 1] = '\n';
	*len += total;
	return 0;
}

static int header(struct tw *t, const char *name, const char *link, char type,
		  const struct stat *st, uint64_t size, const char *pax, size_t pax_len)
{
	char h[512] = {0};
	int r;
	if (pax_len) {
		/* The extended header covering the next entry ('x'). */
		struct stat xs = {.st_mode = 0644, .st_mtime = 0};
		if ((r = header(t, "PaxHeader", NULL, 'x', &xs, pax_len, NULL, 0)) < 0 ||
		    (r = tw_write(t, pax, pax_len)) < 0 || (r = tw_pad(t, pax_len)) < 0)
			return r;
	}
	snprintf(h, 100, "%s", name);
	octal(h + 100, 8, st->st_mode & 07777);
	octal(h + 108, 8, st->st_uid);
	octal(h + 116, 8, st->st_gid);
	octal(h + 124, 12, size);
	int64_t mt = st->st_mtime;
	if (t->clamp >= 0 && mt > t->clamp)
		mt = t->clamp;
	octal(h + 136, 12, mt < 0 ? 0 : (uint64_t)mt);
	memset(h + 148, ' ', 8);
	h[156] = type;
	if (link)
		snprintf(h + 157, 100, "%s", link);
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	if (type == '3' || type == '4') {
		octal(h + 329, 8, major(st->st_rdev));
		octal(h + 337, 8, minor(st->st_rdev));
	}
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
	h[155] = ' ';
	return tw_write(t, h, sizeof(h));
}

/* The xattrs a layer carries (SCHILY.xattr.*, as tar and containers/storage write them);
 * overlay's own bookkeeping stays out. */
static int add_xattrs(struct tw *t, int dirfd, const char *name, char **pax, size_t *pax_len,
		      const char *path)
{
	char p[64 + 256];
	snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, name);
	char list[4096];
	ssize_t n = llistxattr(p, list, sizeof(list));
	if (n < 0)
		return errno == ENOTSUP || errno == ENODATA
			   ? 0
			   : kap_error(t->err, errno, "xattrs of %s", path);
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(list + off) + 1) {
		const char *k = list + off;
		if (!strncmp(k, "trusted.overlay.", 16)) {
			if (!strcmp(k, "trusted.overlay.redirect") ||
			    !strcmp(k, "trusted.overlay.metacopy"))
				return kap_error_plain(
				    t->err, ENOTSUP, "%s: overlay %s cannot be written as a layer",
				    path, k + 16);
			continue;
		}
		char val[4096];
		ssize_t vl = lgetxattr(p, k, val, sizeof(val));
		if (vl < 0)
			return kap_error(t->err, errno, "xattr %s of %s", k, path);
		char key[300];
		snprintf(key, sizeof(key), "SCHILY.xattr.%s", k);
		if (pax_add(pax, pax_len, key, val, (size_t)vl) < 0)
			return kap_error(t->err, ENOMEM, "layer");
	}
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int copy_file(struct tw *t, int dirfd, const char *name, uint64_t size, const char *path)
{
	cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kap_error(t->err, errno, "open %s", path);
	static __thread char buf[1u << 20];
	uint64_t left = size;
	while (left) {
		ssize_t n = read(fd, buf, left < sizeof(buf) ? left : sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kap_error(t->err, errno, "read %s", path);
		if (n == 0)
			return kap_error_plain(t->err, EIO, "%s: changed size while being read",
					       path);
		int r = tw_write(t, buf, (size_t)n);
		if (r < 0)
			return r;
		left -= (uint64_t)n;
	}
	return tw_pad(t, size);
}

static int walk(struct tw *t, int dirfd, const char *prefix, int depth);

static int entry(struct tw *t, int dirfd, const char *prefix, const char *name, int depth)
{
	cleanup_free char *path = NULL, *pax = NULL;
	size_t pax_len = 0;
	struct stat st;
	int r;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return kap_error(t->err, errno, "stat %s%s", prefix, name);
	bool dir = S_ISDIR(st.st_mode);
	if (asprintf(&path, "%s%s%s", prefix, name, dir ? "/" : "") < 0)
		return kap_error(t->err, ENOMEM, "layer");

	for (const char *const *sk = t->skip; sk && *sk; sk++) {
		size_t pl = strlen(prefix), sl = strlen(*sk);
		if (sl == pl + strlen(name) && !strncmp(*sk, prefix, pl) && !strcmp(*sk + pl, name))
			return 0;
	}
	if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
		/* overlay whiteout -> .wh.<name> (layer.md "Whiteouts") */
		cleanup_free char *wh = NULL;
		if (asprintf(&wh, "%s.wh.%s", prefix, name) < 0)
			return kap_error(t->err, ENOMEM, "layer");
		struct stat ws = {.st_mode = 0600, .st_mtime = st.st_mtime};
		if (strlen(wh) > 99 && pax_add(&pax, &pax_len, "path", wh, strlen(wh)) < 0)
			return kap_error(t->err, ENOMEM, "layer");
		return header(t, wh, NULL, '0', &ws, 0, pax, pax_len);
	}
	if (strlen(path) > 99 && pax_add(&pax, &pax_len, "path", path, strlen(path)) < 0)
		return kap_error(t->err, ENOMEM, "layer");
	if (!S_ISLNK(st.st_mode) && (r = add_xattrs(t, dirfd, name, &pax, &pax_len, path)) < 0)
		return r;

	if (dir) {
		if ((r = header(t, path, NULL, '5', &st, 0, pax, pax_len)) < 0)
			return r;
		char p[64 + 256], v[8];
		snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, name);
		ssize_t vl = lgetxattr(p, "trusted.overlay.opaque", v, sizeof(v));
		if (vl == 1 && v[0] == 'y') {
			/* layer.md "Opaque Whiteout": the lower directory's content is hidden. */
			cleanup_free char *opq = NULL;
			if (asprintf(&opq, "%s.wh..wh..opq", path) < 0)
				return kap_error(t->err, ENOMEM, "layer");
			cleanup_free char *opax = NULL;
			size_t opax_len = 0;
			if (strlen(opq) > 99 &&
			    pax_add(&opax, &opax_len, "path", opq, strlen(opq)) < 0)
				return kap_error(t->err, ENOMEM, "layer");
			struct stat os = {.st_mode = 0600, .st_mtime = st.st_mtime};
			if ((r = header(t, opq, NULL, '0', &os, 0, opax, opax_len)) < 0)
				return r;
		}
		cleanup_close int sub =
		    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			return kap_error(t->err, errno, "open %s", path);
		return walk(t, sub, path, depth + 1);
	}
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return kap_error(t->err, errno, "readlink %s", path);
		target[n] = '\0';
		if (n > 99 && pax_add(&pax, &pax_len, "linkpath", target, (size_t)n) < 0)
			return kap_error(t->err, ENOMEM, "layer");
		return header(t, path, target, '2', &st, 0, pax, pax_len);
	}
	if (S_ISREG(st.st_mode)) {
		if (st.st_nlink > 1) {
			for (size_t i = 0; i < t->n_links; i++) {
				if (t->links[i].dev != st.st_dev || t->links[i].ino != st.st_ino)
					continue;
				const char *to = t->links[i].name;
				if (strlen(to) > 99 &&
				    pax_add(&pax, &pax_len, "linkpath", to, strlen(to)) < 0)
					return kap_error(t->err, ENOMEM, "layer");
				return header(t, path, to, '1', &st, 0, pax, pax_len);
			}
			struct link *nl = realloc(t->links, (t->n_links + 1) * sizeof(*nl));
			if (!nl)
				return kap_error(t->err, ENOMEM, "layer");
			t->links = nl;
			nl[t->n_links] = (struct link){st.st_dev, st.st_ino, strdup(path)};
			if (!nl[t->n_links++].name)
				return kap_error(t->err, ENOMEM, "layer");
		}
		if (pax_len == 0 && (uint64_t)st.st_size >= (UINT64_C(1) << 33)) {
			char sz[32];
			snprintf(sz, sizeof(sz), "%lld", (long long)st.st_size);
			if (pax_add(&pax, &pax_len, "size", sz, strlen(sz)) < 0)
				return kap_error(t->err, ENOMEM, "layer");
		}
		if ((r = header(t, path, NULL, '0', &st, (uint64_t)st.st_size, pax, pax_len)) < 0)
			return r;
		return copy_file(t, dirfd, name, (uint64_t)st.st_size, path);
	}
	if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
		char type = S_ISCHR(st.st_mode) ? '3' : S_ISBLK(st.st_mode) ? '4' : '6';
		return header(t, path, NULL, type, &st, 0, pax, pax_len);
	}
	return 0; /* sockets have no tar form; tar and buildah skip them too */
}

static int walk(struct tw *t, int dirfd, const char *prefix, int depth)
{
	if (depth > 256)
		return kap_error_plain(t->err, ELOOP, "%s: directories nested too deeply", prefix);
	int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (dup < 0)
		return kap_error(t->err, errno, "open %s", prefix);
	cleanup_dir DIR *d = fdopendir(dup);
	if (!d) {
		close(dup);
		return kap_error(t->err, errno, "open %s", prefix);
	}
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*nn));
		if (!nn || !(nn[n] = strdup(de->d_name))) {
			names = nn ? nn : names;
			r = kap_error(t->err, ENOMEM, "layer");
			goto out;
		}
		names = nn;
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n && r == 0; i++)
		r = entry(t, dirfd, prefix, names[i], depth);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

int kap_build_layer(struct kap_store *s, int upperfd, int64_t clamp_mtime, const char *const *skip,
		    struct kap_built_layer *out, struct kapsel_error **err)
{
	return kap_build_layer_as(s, upperfd, clamp_mtime, skip, false, out, err);
}

int kap_build_layer_as(struct kap_store *s, int upperfd, int64_t clamp_mtime,
		       const char *const *skip, bool zstd, struct kap_built_layer *out,
		       struct kapsel_error **err)
{
	bool use_isal = !zstd && bind_isal();
	int r = zstd ? bind_zstd(err) : use_isal ? 0 : bind_zlib(err);
	if (r < 0)
		return r;
	struct tw *t = calloc(1, sizeof(*t));
	if (!t)
		return kap_error(err, ENOMEM, "layer");
	t->clamp = clamp_mtime;
	t->skip = skip;
	t->err = err;
	if (!(t->diff = kap_sha256_new())) {
		free(t);
		return kap_error(err, ENOMEM, "layer");
	}
	if (zstd) {
		/* Level 3, libzstd's default; no content size or dictionary in the frame, so
		 * the same tar gives the same bytes. */
		if (!(t->zc = zst.create()) || zst.is_error(zst.init(t->zc, 3))) {
			r = kap_error_plain(err, ENOMEM, "zstd: ZSTD_initCStream failed");
			goto out;
		}
	} else if (use_isal) {
		t->use_isal = true;
		isal.init(&t->is);
		t->is.level = 1;
		t->is.level_buf_size = ISAL_DEF_LVL1_DEFAULT;
		t->isal_level_buf = malloc(ISAL_DEF_LVL1_DEFAULT);
		t->is.level_buf = t->isal_level_buf;
		/* A generic gzip header (RFC 1952: mtime 0, no name): reproducible. */
		t->is.gzip_flag = IGZIP_GZIP;
		if (!t->isal_level_buf) {
			r = kap_error(err, ENOMEM, "layer");
			goto out;
		}
	} else if (z.init2(&t->zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
			   (int)sizeof(z_stream)) != Z_OK) {
		r = kap_error_plain(err, ENOMEM, "gzip: deflateInit2 failed");
		goto out;
	} else {
		t->z_ready = true;
	}
	if ((r = kap_blob_writer_new(s, NULL, -1, &t->w, err)) < 0)
		goto out;
	if ((r = walk(t, upperfd, "", 0)) < 0)
		goto out;
	static const char end[1024];
	if ((r = tw_write(t, end, sizeof(end))) < 0 || (r = tw_deflate(t, NULL, 0, Z_FINISH)) < 0)
		goto out;
	out->size = t->zc	  ? t->zc_out
		    : t->use_isal ? (int64_t)t->is.total_out
				  : (int64_t)t->zs.total_out;
	out->zstd = zstd;
	kap_sha256_final(steal_ptr(t->diff), out->diff_id);
	r = kap_blob_writer_finish(steal_ptr(t->w), out->digest, err);
out:
	if (t->w)
		kap_blob_writer_abort(t->w);
	if (t->diff) {
		char dummy[KAP_DIGEST_LEN + 1];
		kap_sha256_final(t->diff, dummy);
	}
	if (t->z_ready)
		z.end(&t->zs);
	if (t->zc)
		zst.free_stream(t->zc);
	free(t->isal_level_buf);
	for (size_t i = 0; i < t->n_links; i++)
		free(t->links[i].name);
	free(t->links);
	free(t);
	return r;
}
