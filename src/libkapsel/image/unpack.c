/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One layer tar stream -> a directory, safely (OCI image-spec layer.md).
 *
 * The pipeline: read(2) the blob in 1 MiB chunks -> decompress (ISA-L igzip for gzip, libzstd
 * for zstd, libarchive's gzip filter when ISA-L is missing) -> SHA-256 of the uncompressed bytes
 * (the diff_id) -> libarchive, in tar mode only, through a read callback. libarchive only parses;
 * every entry is written here, relative to the layer directory:
 *
 *  - paths: a leading '/' is stripped, "." components dropped, ".." rejected;
 *  - a parent is opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
 *    RESOLVE_NO_MAGICLINKS): a tar written from a real tree never goes through a symlink of its
 *    own layer, so an entry that does is hostile and rejected; the last component is created
 *    with O_EXCL / O_NOFOLLOW / AT_SYMLINK_NOFOLLOW calls relative to that parent fd;
 *  - hardlinks only to entries already in this layer (their parent resolved the same way);
 *  - whiteouts become overlayfs whiteouts (layer.md#whiteouts; kernel overlayfs.rst): `.wh.NAME`
 *    a 0/0 character device NAME, `.wh..wh..opq` the xattr trusted.overlay.opaque=y (user.* when
 *    rootless, for overlay's userxattr mode); trusted.overlay.* and user.overlay.* from the
 *    layer itself are dropped, so a layer cannot forge overlay metadata;
 *  - directory modes and times are applied at the end, deepest first, so a read-only directory
 *    can still be filled and its mtime is not disturbed by its children.
 *
 * An error names the entry; the caller removes the partial directory.
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/syscalls.h"
#include "image/image.h"

#define CHUNK		  (1u << 20)
#define DEFAULT_MAX_ENTRY (UINT64_C(64) << 30)
#define RESOLVE_CONFINED  (RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
#define RESOLVE_ATTEMPTS  8

/* ---- lazily bound libraries ---- */
static struct {
	void *h;
	__typeof__(archive_read_new) *read_new;
	__typeof__(archive_read_free) *read_free;
	__typeof__(archive_read_support_format_tar) *support_format_tar;
	__typeof__(archive_read_support_format_raw) *support_format_raw;
	__typeof__(archive_read_support_filter_gzip) *support_filter_gzip;
	__typeof__(archive_read_open) *read_open;
	__typeof__(archive_read_next_header) *next_header;
	__typeof__(archive_read_data_block) *data_block;
	__typeof__(archive_read_data) *read_data;
	__typeof__(archive_error_string) *error_string;
	__typeof__(archive_set_error) *set_error;
	__typeof__(archive_filter_code) *filter_code;
	__typeof__(archive_entry_pathname) *pathname;
	__typeof__(archive_entry_hardlink) *hardlink;
	__typeof__(archive_entry_symlink) *symlink;
	__typeof__(archive_entry_filetype) *filetype;
	__typeof__(archive_entry_perm) *perm;
	__typeof__(archive_entry_uid) *uid;
	__typeof__(archive_entry_gid) *gid;
	__typeof__(archive_entry_size) *size;
	__typeof__(archive_entry_mtime) *mtime;
	__typeof__(archive_entry_mtime_nsec) *mtime_nsec;
	__typeof__(archive_entry_atime) *atime;
	__typeof__(archive_entry_atime_nsec) *atime_nsec;
	__typeof__(archive_entry_atime_is_set) *atime_is_set;
	__typeof__(archive_entry_rdevmajor) *rdevmajor;
	__typeof__(archive_entry_rdevminor) *rdevminor;
	__typeof__(archive_entry_xattr_reset) *xattr_reset;
	__typeof__(archive_entry_xattr_next) *xattr_next;
} ar;

static struct {
	void *h;
	__typeof__(isal_inflate_init) *init;
	__typeof__(isal_inflate_reset) *reset;
	__typeof__(isal_inflate) *inflate;
} isal;

static struct {
	void *h;
	__typeof__(ZSTD_createDStream) *create;
	__typeof__(ZSTD_freeDStream) *free_stream;
	__typeof__(ZSTD_initDStream) *init;
	__typeof__(ZSTD_decompressStream) *decompress;
	__typeof__(ZSTD_isError) *is_error;
	__typeof__(ZSTD_getErrorName) *error_name;
} zstd;

static bool gzip_fallback_forced;
static int isal_missing;

void kap_unpack_force_gzip_fallback(bool on)
{
	gzip_fallback_forced = on;
}

static int bind_archive(struct kapsel_error **err)
{
	if (ar.h)
		return 0;
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("archive_read_new", ar.read_new),
	    KAP_DL_SYM("archive_read_free", ar.read_free),
	    KAP_DL_SYM("archive_read_support_format_tar", ar.support_format_tar),
	    KAP_DL_SYM("archive_read_support_format_raw", ar.support_format_raw),
	    KAP_DL_SYM("archive_read_support_filter_gzip", ar.support_filter_gzip),
	    KAP_DL_SYM("archive_read_open", ar.read_open),
	    KAP_DL_SYM("archive_read_next_header", ar.next_header),
	    KAP_DL_SYM("archive_read_data_block", ar.data_block),
	    KAP_DL_SYM("archive_read_data", ar.read_data),
	    KAP_DL_SYM("archive_error_string", ar.error_string),
	    KAP_DL_SYM("archive_set_error", ar.set_error),
	    KAP_DL_SYM("archive_filter_code", ar.filter_code),
	    KAP_DL_SYM("archive_entry_pathname", ar.pathname),
	    KAP_DL_SYM("archive_entry_hardlink", ar.hardlink),
	    KAP_DL_SYM("archive_entry_symlink", ar.symlink),
	    KAP_DL_SYM("archive_entry_filetype", ar.filetype),
	    KAP_DL_SYM("archive_entry_perm", ar.perm),
	    KAP_DL_SYM("archive_entry_uid", ar.uid),
	    KAP_DL_SYM("archive_entry_gid", ar.gid),
	    KAP_DL_SYM("archive_entry_size", ar.size),
	    KAP_DL_SYM("archive_entry_mtime", ar.mtime),
	    KAP_DL_SYM("archive_entry_mtime_nsec", ar.mtime_nsec),
	    KAP_DL_SYM("archive_entry_atime", ar.atime),
	    KAP_DL_SYM("archive_entry_atime_nsec", ar.atime_nsec),
	    KAP_DL_SYM("archive_entry_atime_is_set", ar.atime_is_set),
	    KAP_DL_SYM("archive_entry_rdevmajor", ar.rdevmajor),
	    KAP_DL_SYM("archive_entry_rdevminor", ar.rdevminor),
	    KAP_DL_SYM("archive_entry_xattr_reset", ar.xattr_reset),
	    KAP_DL_SYM("archive_entry_xattr_next", ar.xattr_next),
	};
	return kap_dl_bind("libarchive.so.13", "libarchive13", &ar.h, syms, KAP_ARRAY_SIZE(syms),
			   err);
}

static bool bind_isal(void)
{
	if (isal.h)
		return true;
	if (__atomic_load_n(&isal_missing, __ATOMIC_RELAXED))
		return false;
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("isal_inflate_init", isal.init),
	    KAP_DL_SYM("isal_inflate_reset", isal.reset),
	    KAP_DL_SYM("isal_inflate", isal.inflate),
	};
	struct kapsel_error *e = NULL;
	if (kap_dl_bind("libisal.so.2", "libisal2", &isal.h, syms, KAP_ARRAY_SIZE(syms), &e) < 0) {
		kap_debug("%s; inflating gzip with libarchive instead", e->msg);
		kapsel_error_free(e);
		__atomic_store_n(&isal_missing, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

static int bind_zstd(struct kapsel_error **err)
{
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("ZSTD_createDStream", zstd.create),
	    KAP_DL_SYM("ZSTD_freeDStream", zstd.free_stream),
	    KAP_DL_SYM("ZSTD_initDStream", zstd.init),
	    KAP_DL_SYM("ZSTD_decompressStream", zstd.decompress),
	    KAP_DL_SYM("ZSTD_isError", zstd.is_error),
	    KAP_DL_SYM("ZSTD_getErrorName", zstd.error_name),
	};
	return kap_dl_bind("libzstd.so.1", "libzstd1", &zstd.h, syms, KAP_ARRAY_SIZE(syms), err);
}

enum kap_compression kap_compression_detect(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	if (len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
		return KAP_COMP_GZIP;
	if (len >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd)
		return KAP_COMP_ZSTD;
	return KAP_COMP_NONE;
}

/* ---- the decompressing, hashing stream ---- */

/*
 * SHA-256 of the uncompressed stream runs on its own thread: it costs as much as writing the
 * files (measured: 330 MB, 20k entries on tmpfs, 0.18 s of 0.43 s), and the two overlap. Chunks
 * rotate through NBUF buffers; a buffer is refilled only once the hasher is done with it, and
 * libarchive only holds on to the latest one (archive_read_open: valid until the next read).
 */
#define NBUF 4

struct hasher {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	const unsigned char *ptr[NBUF];
	size_t len[NBUF];
	uint64_t head, tail; /* chunks hashed, chunks queued */
	bool started, stop;
	struct kap_sha256 *sha;
};

struct stream {
	int fd;
	enum kap_compression c;
	unsigned char *in, *out;
	unsigned char *bufs[NBUF];
	struct hasher hash;
	size_t in_len, in_pos;
	bool in_eof, done, failed;
	struct inflate_state *isal;
	ZSTD_DStream *zs;
	size_t zs_last;
	struct archive *gz;	/* libarchive gzip fallback */
	struct kap_sha256 *sha; /* owned by hash.thread while it runs */
	uint64_t total;
	int errnum;
	char errmsg[256];
};

static void *hasher_main(void *arg)
{
	struct hasher *h = arg;
	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (h->head == h->tail && !h->stop)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->head == h->tail)
			break;
		unsigned i = (unsigned)(h->head % NBUF);
		pthread_mutex_unlock(&h->mu);
		kap_sha256_update(h->sha, h->ptr[i], h->len[i]);
		pthread_mutex_lock(&h->mu);
		h->head++;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Wait until buffer `slot` may be overwritten: everything queued up to it is hashed. */
static void hasher_wait_slot(struct hasher *h, uint64_t seq)
{
	if (!h->started)
		return;
	pthread_mutex_lock(&h->mu);
	while (h->head + NBUF <= seq)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
}

static void hasher_push(struct hasher *h, const unsigned char *p, size_t len)
{
	if (!h->started) {
		kap_sha256_update(h->sha, p, len);
		return;
	}
	pthread_mutex_lock(&h->mu);
	unsigned i = (unsigned)(h->tail % NBUF);
	h->ptr[i] = p;
	h->len[i] = len;
	h->tail++;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* Stop the thread once everything queued is hashed; the digest is complete after this. */
static void hasher_stop(struct hasher *h)
{
	if (!h->started)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	h->started = false;
}

__attribute__((format(printf, 3, 4))) static ssize_t stream_fail(struct stream *s, int errnum,
								 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	s->errnum = errnum;
	s->failed = true;
	return -1;
}

/* Refill s->in when it is used up; false at the end of the input or on error. */
static ssize_t read_input(struct stream *s)
{
	for (;;) {
		ssize_t n = read(s->fd, s->in, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return stream_fail(s, errno, "read layer: %s", strerror(errno));
		s->in_len = (size_t)n, s->in_pos = 0;
		if (n == 0)
			s->in_eof = true;
		return n;
	}
}

static ssize_t gz_fallback_read(struct archive *a, void *ctx, const void **buf)
{
	struct stream *s = ctx;
	ssize_t n = read_input(s);
	if (n < 0) {
		ar.set_error(a, s->errnum, "%s", s->errmsg);
		return -1;
	}
	*buf = s->in;
	return n;
}

static ssize_t produce_isal(struct stream *s)
{
	struct inflate_state *st = s->isal;
	int stuck = 0;
	for (;;) {
		if (st->avail_in == 0 && !s->in_eof) {
			ssize_t n = read_input(s);
			if (n < 0)
				return -1;
			st->next_in = s->in;
			st->avail_in = (uint32_t)n;
		}
		if (st->block_state == ISAL_BLOCK_FINISH) {
			/* One gzip member done; RFC 1952 §2.2 allows several back to back. */
			if (st->avail_in == 0) {
				if (s->in_eof) {
					s->done = true;
					return 0;
				}
				continue;
			}
			if (st->next_in[0] != 0x1f)
				return stream_fail(s, EBADMSG,
						   "corrupt gzip stream: trailing data after the "
						   "compressed data");
			uint8_t *next = st->next_in;
			uint32_t avail = st->avail_in;
			isal.reset(st);
			st->crc_flag = ISAL_GZIP;
			st->next_in = next;
			st->avail_in = avail;
		}
		uint32_t before = st->avail_in;
		st->next_out = s->out;
		st->avail_out = CHUNK;
		int ret = isal.inflate(st);
		if (ret < 0)
			return stream_fail(s, EBADMSG, "corrupt gzip stream (%s)",
					   ret == ISAL_INCORRECT_CHECKSUM ? "checksum mismatch"
					   : ret == ISAL_INVALID_WRAPPER  ? "not gzip"
									  : "invalid deflate data");
		size_t n = CHUNK - st->avail_out;
		if (n)
			return (ssize_t)n;
		if (st->block_state == ISAL_BLOCK_FINISH)
			continue;
		if (st->avail_in == 0 && s->in_eof)
			return stream_fail(s, EBADMSG, "truncated gzip stream");
		if (st->avail_in == before && st->avail_in && ++stuck > 4)
			return stream_fail(s, EBADMSG, "corrupt gzip stream");
	}
}

static ssize_t produce_zstd(struct stream *s)
{
	for (;;) {
		if (s->in_pos == s->in_len && !s->in_eof && read_input(s) < 0)
			return -1;
		bool end = s->in_pos == s->in_len && s->in_eof;
		/* At the end of the input, 0 from the last call means the last frame is complete
		 * and flushed (a new call would start a frame and ask for more). */
		if (end && s->zs_last == 0) {
			s->done = true;
			return 0;
		}
		ZSTD_inBuffer ib = {s->in, s->in_len, s->in_pos};
		ZSTD_outBuffer ob = {s->out, CHUNK, 0};
		size_t ret = zstd.decompress(s->zs, &ob, &ib);
		s->in_pos = ib.pos;
		if (zstd.is_error(ret))
			return stream_fail(s, EBADMSG, "corrupt zstd stream: %s",
					   zstd.error_name(ret));
		s->zs_last = ret;
		if (ob.pos)
			return (ssize_t)ob.pos;
		if (end && ret != 0)
			return stream_fail(s, EBADMSG, "truncated zstd stream");
	}
}

/* The next chunk of uncompressed bytes: > 0, 0 at the end, -1 on error (s->errmsg). */
static ssize_t stream_read(struct stream *s, const void **buf)
{
	ssize_t n;
	if (s->failed)
		return -1;
	if (s->done)
		return 0;
	uint64_t seq = s->hash.tail;
	hasher_wait_slot(&s->hash, seq);
	s->out = s->bufs[seq % NBUF];
	*buf = s->out;
	switch (s->c) {
	case KAP_COMP_NONE:
		for (;;) {
			n = read(s->fd, s->out, CHUNK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return stream_fail(s, errno, "read layer: %s", strerror(errno));
			break;
		}
		if (n == 0)
			s->done = true;
		break;
	case KAP_COMP_GZIP:
		if (s->isal) {
			n = produce_isal(s);
		} else {
			n = ar.read_data(s->gz, s->out, CHUNK);
			if (n < 0 && !s->failed)
				stream_fail(s, EBADMSG, "corrupt gzip stream: %s",
					    ar.error_string(s->gz));
			if (n == 0)
				s->done = true;
		}
		break;
	case KAP_COMP_ZSTD:
		n = produce_zstd(s);
		break;
	default:
		return stream_fail(s, EINVAL, "unknown compression");
	}
	if (n > 0) {
		if (s->sha)
			hasher_push(&s->hash, s->out, (size_t)n);
		else
			s->hash.tail++; /* rotate buffers all the same */
		s->total += (uint64_t)n;
	}
	return n;
}

static void stream_clear(struct stream *s)
{
	hasher_stop(&s->hash);
	free(s->in);
	for (int i = 0; i < NBUF; i++)
		free(s->bufs[i]);
	free(s->isal);
	if (s->zs)
		zstd.free_stream(s->zs);
	if (s->gz)
		ar.read_free(s->gz);
	if (s->sha) {
		char discard[KAP_DIGEST_LEN + 1];
		kap_sha256_final(s->sha, discard);
	}
	memset(s, 0, sizeof(*s));
	s->fd = -EBADF;
}

static int stream_init(struct stream *s, int fd, enum kap_compression c, bool hash,
		       struct kapsel_error **err)
{
	int r;
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->c = c;
	s->zs_last = 1;
	if ((r = bind_archive(err)) < 0)
		return r;
	s->in = malloc(CHUNK);
	for (int i = 0; i < NBUF; i++)
		if (!(s->bufs[i] = malloc(CHUNK)))
			return kap_error(err, ENOMEM, "unpack");
	s->out = s->bufs[0];
	if (!s->in)
		return kap_error(err, ENOMEM, "unpack");
	if (hash && !(s->sha = kap_sha256_new()))
		return kap_error(err, ENOMEM, "unpack");
	s->hash.sha = s->sha;
	if (hash) {
		pthread_mutex_init(&s->hash.mu, NULL);
		pthread_cond_init(&s->hash.cv, NULL);
		/* No thread (say, EAGAIN): hash inline, as correct and only slower. */
		s->hash.started = pthread_create(&s->hash.thread, NULL, hasher_main, &s->hash) == 0;
		if (!s->hash.started) {
			pthread_mutex_destroy(&s->hash.mu);
			pthread_cond_destroy(&s->hash.cv);
		}
	}
	if (c == KAP_COMP_GZIP && !gzip_fallback_forced && bind_isal()) {
		s->isal = malloc(sizeof(*s->isal));
		if (!s->isal)
			return kap_error(err, ENOMEM, "unpack");
		isal.init(s->isal);
		s->isal->crc_flag = ISAL_GZIP;
	} else if (c == KAP_COMP_GZIP) {
		s->gz = ar.read_new();
		if (!s->gz)
			return kap_error(err, ENOMEM, "unpack");
		ar.support_filter_gzip(s->gz);
		ar.support_format_raw(s->gz);
		struct archive_entry *e;
		if (ar.read_open(s->gz, s, NULL, gz_fallback_read, NULL) != ARCHIVE_OK ||
		    ar.next_header(s->gz, &e) != ARCHIVE_OK)
			return kap_error_plain(err, EBADMSG, "corrupt gzip stream: %s",
					       s->failed ? s->errmsg : ar.error_string(s->gz));
		/* The raw format passes anything through; only a recognised gzip is accepted. */
		if (ar.filter_code(s->gz, 0) != ARCHIVE_FILTER_GZIP)
			return kap_error_plain(err, EBADMSG, "corrupt gzip stream: not gzip");
	} else if (c == KAP_COMP_ZSTD) {
		if ((r = bind_zstd(err)) < 0)
			return r;
		s->zs = zstd.create();
		if (!s->zs || zstd.is_error(zstd.init(s->zs)))
			return kap_error(err, ENOMEM, "zstd");
	} else if (c != KAP_COMP_NONE) {
		return kap_error_plain(err, EINVAL, "unknown compression %d", (int)c);
	}
	return 0;
}

static ssize_t archive_read_cb(struct archive *a, void *ctx, const void **buf)
{
	struct stream *s = ctx;
	ssize_t n = stream_read(s, buf);
	if (n < 0)
		ar.set_error(a, s->errnum, "%s", s->errmsg);
	return n;
}

/* ---- path handling ---- */

/*
 * Normalise an entry path into out (relative, no "." or empty components); "" is the layer's
 * root. ".." anywhere is rejected: a layer has no business naming its parent.
 */
static int clean_path(const char *in, char *out, size_t size)
{
	size_t n = 0;
	if (strlen(in) >= PATH_MAX)
		return -ENAMETOOLONG;
	for (const char *p = in; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		size_t len = (size_t)(e - p);
		if (len == 1 && p[0] == '.') {
			p = e;
			continue;
		}
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return -EXDEV;
		if (len > NAME_MAX)
			return -ENAMETOOLONG;
		if (n + len + 2 > size)
			return -ENAMETOOLONG;
		if (n)
			out[n++] = '/';
		memcpy(out + n, p, len);
		n += len;
		p = e;
	}
	out[n] = '\0';
	return 0;
}

struct dir_fixup {
	char *path;
	mode_t mode;
	struct timespec ts[2];
};

struct unpacker {
	int root;
	const struct kap_unpack_opts *o;
	uint64_t max_size;
	int parent_fd; /* cache: consecutive entries mostly share a parent */
	char parent_path[PATH_MAX];
	struct dir_fixup *dirs;
	size_t n_dirs, cap_dirs;
	const char *entry; /* for messages */
};

static int open_confined(int root, const char *rel, int flags)
{
	for (int i = 0; i < RESOLVE_ATTEMPTS; i++) {
		int fd = kap_openat2(root, *rel ? rel : ".", (uint64_t)(flags | O_CLOEXEC), 0,
				     RESOLVE_CONFINED);
		if (fd >= 0 || errno != EAGAIN)
			return fd;
	}
	return -1;
}

static int entry_error(struct unpacker *u, struct kapsel_error **err, int errnum, const char *what)
{
	if (errnum == ELOOP)
		return kap_error_plain(
		    err, ELOOP, "layer entry \"%s\": path goes through a symlink of the layer",
		    u->entry);
	return kap_error(err, errnum, "layer entry \"%s\": %s", u->entry, what);
}

/* An O_PATH fd to directory `parent` (relative, "" = root), creating missing components. */
static int get_parent(struct unpacker *u, const char *parent, struct kapsel_error **err)
{
	if (u->parent_fd >= 0 && !strcmp(u->parent_path, parent))
		return u->parent_fd;
	if (u->parent_fd >= 0)
		close(u->parent_fd);
	u->parent_fd = -EBADF;
	int fd = open_confined(u->root, parent, O_PATH | O_DIRECTORY);
	if (fd < 0 && errno == ENOENT) {
		/* Tars may omit parent directories; create them as tar does (0755). */
		cleanup_close int cur = open_confined(u->root, "", O_PATH | O_DIRECTORY);
		if (cur < 0)
			return entry_error(u, err, errno, "open layer root");
		char comp[NAME_MAX + 1];
		for (const char *p = parent; *p;) {
			const char *e = strchrnul(p, '/');
			memcpy(comp, p, (size_t)(e - p));
			comp[e - p] = '\0';
			int next = open_confined(cur, comp, O_PATH | O_DIRECTORY);
			if (next < 0 && errno == ENOENT) {
				if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST)
					return entry_error(u, err, errno,
							   "create parent directory");
				next = open_confined(cur, comp, O_PATH | O_DIRECTORY);
			}
			if (next < 0)
				return entry_error(u, err, errno, "open parent directory");
			close(cur);
			cur = next;
			p = *e ? e + 1 : e;
		}
		fd = steal_fd(cur);
	}
	if (fd < 0)
		return entry_error(u, err, errno, "open parent directory");
	u->parent_fd = fd;
	snprintf(u->parent_path, sizeof(u->parent_path), "%s", parent);
	return fd;
}

static void split_path(char *path, const char **parent, const char **name)
{
	char *slash = strrchr(path, '/');
	if (slash) {
		*slash = '\0';
		*parent = path;
		*name = slash + 1;
	} else {
		*parent = "";
		*name = path;
	}
}

/* Make room for a new entry `name` in pfd: whatever is there goes (a directory recursively). */
static int remove_existing(int pfd, const char *name)
{
	struct stat st;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return kap_fs_rm_rf(pfd, name);
	return unlinkat(pfd, name, 0) < 0 ? -errno : 0;
}

static bool xattr_allowed(const char *name, bool rootless)
{
	if (!strncmp(name, "user.", 5))
		return strncmp(name, "user.overlay.", 13) != 0;
	if (!strncmp(name, "trusted.", 8))
		return !rootless && strncmp(name, "trusted.overlay.", 16) != 0;
	return !strcmp(name, "security.capability");
}

/* fd: an fd on the inode (regular file, directory), or -1 with pfd/name (anything else). */
static int apply_xattrs(struct unpacker *u, struct archive_entry *e, int fd, int pfd,
			const char *name, struct kapsel_error **err)
{
	const char *key;
	const void *value;
	size_t size;
	char proc[PATH_MAX + 64];
	if (ar.xattr_reset(e) == 0)
		return 0;
	while (ar.xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
		if (!xattr_allowed(key, u->o->rootless)) {
			kap_debug("layer entry \"%s\": xattr %s ignored", u->entry, key);
			continue;
		}
		int r;
		if (fd >= 0) {
			r = fsetxattr(fd, key, value, size, 0);
		} else {
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", pfd, name);
			r = lsetxattr(proc, key, value, size, 0);
		}
		if (r < 0 &&
		    (errno == EOPNOTSUPP || (errno == EPERM && (fd < 0 || u->o->rootless)))) {
			kap_debug("layer entry \"%s\": xattr %s not supported here", u->entry, key);
			continue;
		}
		if (r < 0)
			return kap_error(err, errno, "layer entry \"%s\": set xattr %s", u->entry,
					 key);
	}
	return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = ar.mtime(e);
	ts[1].tv_nsec = ar.mtime_nsec(e);
	if (ar.atime_is_set(e)) {
		ts[0].tv_sec = ar.atime(e);
		ts[0].tv_nsec = ar.atime_nsec(e);
	} else {
		ts[0] = ts[1];
	}
	if (ts[0].tv_nsec < 0 || ts[0].tv_nsec > 999999999)
		ts[0].tv_nsec = 0;
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999)
		ts[1].tv_nsec = 0;
}

static int entry_owner(struct unpacker *u, struct archive_entry *e, uid_t *uid, gid_t *gid,
		       struct kapsel_error **err)
{
	int64_t a = ar.uid(e), b = ar.gid(e);
	if (a < 0 || a > (int64_t)UINT32_MAX - 1 || b < 0 || b > (int64_t)UINT32_MAX - 1)
		return kap_error_plain(err, EINVAL, "layer entry \"%s\": invalid owner %lld:%lld",
				       u->entry, (long long)a, (long long)b);
	*uid = (uid_t)a;
	*gid = (gid_t)b;
	return 0;
}

/*
 * Rootless, ownership is kept only in a user namespace with subordinate ranges (uid_count):
 * there the kernel stores the shifted host id. An id beyond the ranges has no host id to be
 * stored as; say which, rather than the kernel's bare EINVAL.
 */
static int set_owner(struct unpacker *u, int fd, int pfd, const char *name, uid_t uid, gid_t gid,
		     struct kapsel_error **err)
{
	const struct kap_unpack_opts *o = u->o;
	if (o->rootless && !o->uid_count)
		return 0;
	if (o->uid_count && (uid >= o->uid_count || gid >= o->gid_count)) {
		bool g = uid < o->uid_count;
		return kap_error_plain(
		    err, ERANGE, "layer entry \"%s\": %s %u is outside the user namespace's %s",
		    u->entry, g ? "gid" : "uid", g ? (unsigned)gid : (unsigned)uid,
		    (g ? o->gid_range : o->uid_range) ? (g ? o->gid_range : o->uid_range) : "ids");
	}
	int r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? entry_error(u, err, errno, "chown") : 0;
}

static int write_regular(struct unpacker *u, struct archive *a, struct archive_entry *e, int pfd,
			 const char *name, struct kapsel_error **err)
{
	int64_t size = ar.size(e);
	if (size < 0 || (uint64_t)size > u->max_size)
		return kap_error_plain(
		    err, EFBIG, "layer entry \"%s\": size %lld exceeds the limit of %llu bytes",
		    u->entry, (long long)size, (unsigned long long)u->max_size);
	cleanup_close int fd = -EBADF;
	for (int i = 0; i < 2 && fd < 0; i++) {
		fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST && i == 0) {
			int r = remove_existing(pfd, name);
			if (r < 0)
				return entry_error(u, err, -r, "replace existing entry");
		}
	}
	if (fd < 0)
		return entry_error(u, err, errno, "create file");
	uint64_t pos = 0;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = ar.data_block(a, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_OK)
			return kap_error_plain(err, EBADMSG, "layer entry \"%s\": read data: %s",
					       u->entry, ar.error_string(a));
		if (off < 0 || (uint64_t)off < pos || (uint64_t)off + len > u->max_size)
			return kap_error_plain(err, EFBIG,
					       "layer entry \"%s\": invalid data offset", u->entry);
		if ((uint64_t)off != pos && lseek(fd, off, SEEK_SET) < 0)
			return entry_error(u, err, errno, "seek");
		int w = kap_fs_write_all(fd, buf, len);
		if (w < 0)
			return entry_error(u, err, -w, "write");
		pos = (uint64_t)off + len;
	}
	/* A sparse file may end in a hole. */
	if (pos < (uint64_t)size && ftruncate(fd, size) < 0)
		return entry_error(u, err, errno, "truncate");
	uid_t uid;
	gid_t gid;
	int r;
	if ((r = entry_owner(u, e, &uid, &gid, err)) < 0)
		return r;
	/* chown clears setuid/setgid and security.capability: owner, then mode, then xattrs. */
	if ((r = set_owner(u, fd, -1, NULL, uid, gid, err)) < 0)
		return r;
	if (fchmod(fd, ar.perm(e) & 07777) < 0)
		return entry_error(u, err, errno, "chmod");
	if ((r = apply_xattrs(u, e, fd, pfd, name, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (futimens(fd, ts) < 0)
		return entry_error(u, err, errno, "set times");
	return 0;
}

static int add_dir_fixup(struct unpacker *u, const char *path, mode_t mode,
			 const struct timespec ts[2], bool existed, struct kapsel_error **err)
{
	if (existed) {
		/* The same directory again (or an implicit parent made explicit): latest wins. */
		for (size_t i = u->n_dirs; i-- > 0;) {
			if (!strcmp(u->dirs[i].path, path)) {
				u->dirs[i].mode = mode;
				u->dirs[i].ts[0] = ts[0];
				u->dirs[i].ts[1] = ts[1];
				return 0;
			}
		}
	}
	if (u->n_dirs == u->cap_dirs) {
		size_t cap = u->cap_dirs ? u->cap_dirs * 2 : 64;
		struct dir_fixup *d = realloc(u->dirs, cap * sizeof(*d));
		if (!d)
			return kap_error(err, ENOMEM, "unpack");
		u->dirs = d;
		u->cap_dirs = cap;
	}
	char *copy = strdup(path);
	if (!copy)
		return kap_error(err, ENOMEM, "unpack");
	u->dirs[u->n_dirs++] = (struct dir_fixup){copy, mode, {ts[0], ts[1]}};
	return 0;
}

static int write_dir(struct unpacker *u, struct archive_entry *e, const char *path, int pfd,
		     const char *name, struct kapsel_error **err)
{
	bool existed = false;
	cleanup_close int fd = -EBADF;
	if (!*path) {
		fd = openat(u->root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		existed = true;
	} else {
		if (mkdirat(pfd, name, 0700) < 0) {
			if (errno != EEXIST)
				return entry_error(u, err, errno, "create directory");
			struct stat st;
			if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISDIR(st.st_mode)) {
				existed = true;
			} else {
				int r = remove_existing(pfd, name);
				if (r < 0 || mkdirat(pfd, name, 0700) < 0)
					return entry_error(u, err, r < 0 ? -r : errno,
							   "create directory");
			}
		}
		fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return entry_error(u, err, errno, "open directory");
	uid_t uid;
	gid_t gid;
	int r;
	if ((r = entry_owner(u, e, &uid, &gid, err)) < 0)
		return r;
	if ((r = set_owner(u, fd, -1, NULL, uid, gid, err)) < 0)
		return r;
	if ((r = apply_xattrs(u, e, fd, pfd, name, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	return add_dir_fixup(u, path, ar.perm(e) & 07777, ts, existed, err);
}

/* Create a non-directory, non-regular node with `make`, replacing what is there. */
static int make_node(struct unpacker *u, int pfd, const char *name, mode_t mode, dev_t dev,
		     const char *target, struct kapsel_error **err)
{
	for (int i = 0;; i++) {
		int r = target ? symlinkat(target, pfd, name) : mknodat(pfd, name, mode, dev);
		if (r == 0)
			return 0;
		if (errno != EEXIST || i > 0)
			return entry_error(u, err, errno,
					   target ? "create symlink" : "create device node");
		if ((r = remove_existing(pfd, name)) < 0)
			return entry_error(u, err, -r, "replace existing entry");
	}
}

static int finish_node(struct unpacker *u, struct archive_entry *e, int pfd, const char *name,
		       bool is_link, struct kapsel_error **err)
{
	uid_t uid;
	gid_t gid;
	int r;
	if ((r = entry_owner(u, e, &uid, &gid, err)) < 0)
		return r;
	if ((r = set_owner(u, -1, pfd, name, uid, gid, err)) < 0)
		return r;
	/* Only this process writes the private layer dir, and the node was just made: the
	 * name is the node (fchmodat has no working AT_SYMLINK_NOFOLLOW before Linux 6.6). */
	if (!is_link && fchmodat(pfd, name, ar.perm(e) & 07777, 0) < 0)
		return entry_error(u, err, errno, "chmod");
	if ((r = apply_xattrs(u, e, -1, pfd, name, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_error(u, err, errno, "set times");
	return 0;
}

static int write_hardlink(struct unpacker *u, const char *link, int pfd, const char *name,
			  const char *path, struct kapsel_error **err)
{
	char target[PATH_MAX];
	int r = clean_path(link, target, sizeof(target));
	if (r == -EXDEV || (r == 0 && !*target))
		return kap_error_plain(err, EXDEV,
				       "layer entry \"%s\": hardlink to \"%s\" outside the layer",
				       u->entry, link);
	if (r < 0)
		return entry_error(u, err, -r, "hardlink target");
	if (!strcmp(target, path))
		return 0;
	const char *tparent, *tname;
	split_path(target, &tparent, &tname);
	cleanup_close int tfd = open_confined(u->root, tparent, O_PATH | O_DIRECTORY);
	struct stat st;
	if (tfd < 0 || fstatat(tfd, tname, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ELOOP)
			return entry_error(u, err, errno, "hardlink target");
		return kap_error_plain(
		    err, ENOENT, "layer entry \"%s\": hardlink target \"%s\" is not in the layer",
		    u->entry, link);
	}
	if (S_ISDIR(st.st_mode))
		return kap_error_plain(
		    err, EPERM, "layer entry \"%s\": hardlink to directory \"%s\"", u->entry, link);
	for (int i = 0;; i++) {
		if (linkat(tfd, tname, pfd, name, 0) == 0)
			return 0;
		if (errno != EEXIST || i > 0)
			return entry_error(u, err, errno, "create hardlink");
		if ((r = remove_existing(pfd, name)) < 0)
			return entry_error(u, err, -r, "replace existing entry");
	}
}

/* overlayfs.rst "whiteouts and opaque directories". */
static int write_whiteout(struct unpacker *u, int pfd, const char *name, struct kapsel_error **err)
{
	const char *victim = name + 4;
	if (!strcmp(name, ".wh..wh..opq")) {
		cleanup_close int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		const char *key = u->o->rootless ? "user.overlay.opaque" : "trusted.overlay.opaque";
		if (dfd < 0 || fsetxattr(dfd, key, "y", 1, 0) < 0)
			return entry_error(u, err, errno, "mark directory opaque");
		return 0;
	}
	if (!strncmp(name, ".wh..wh.", 8)) {
		/* aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the tree. */
		kap_debug("layer entry \"%s\": aufs metadata ignored", u->entry);
		return 0;
	}
	if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
		return kap_error_plain(err, EINVAL, "layer entry \"%s\": invalid whiteout",
				       u->entry);
	int r = remove_existing(pfd, victim);
	if (r < 0)
		return entry_error(u, err, -r, "remove whited-out entry");
	if (mknodat(pfd, victim, S_IFCHR | 0, makedev(0, 0)) < 0)
		return entry_error(u, err, errno, "create whiteout");
	return 0;
}

static int write_entry(struct unpacker *u, struct archive *a, struct archive_entry *e,
		       struct kapsel_error **err)
{
	const char *raw = ar.pathname(e);
	u->entry = raw ? raw : "";
	if (!raw || !*raw)
		return kap_error_plain(err, EINVAL, "layer entry with an empty path");
	char path[PATH_MAX];
	int r = clean_path(raw, path, sizeof(path));
	if (r == -EXDEV)
		return kap_error_plain(err, EXDEV,
				       "layer entry \"%s\": path escapes the layer (..)", raw);
	if (r < 0)
		return entry_error(u, err, -r, "path");

	const char *hardlink = ar.hardlink(e);
	mode_t type = ar.filetype(e);
	char split[PATH_MAX];
	memcpy(split, path, strlen(path) + 1);
	const char *parent, *name;
	split_path(split, &parent, &name);

	if (!*path) {
		if (hardlink || type != AE_IFDIR)
			return kap_error_plain(
			    err, EINVAL, "layer entry \"%s\": the layer root must be a directory",
			    raw);
		return write_dir(u, e, path, u->root, ".", err);
	}
	int pfd = get_parent(u, parent, err);
	if (pfd < 0)
		return pfd;
	if (!strncmp(name, ".wh.", 4))
		return write_whiteout(u, pfd, name, err);
	if (hardlink)
		return write_hardlink(u, hardlink, pfd, name, path, err);

	switch (type) {
	case AE_IFREG:
		return write_regular(u, a, e, pfd, name, err);
	case AE_IFDIR:
		return write_dir(u, e, path, pfd, name, err);
	case AE_IFLNK: {
		const char *target = ar.symlink(e);
		if (!target || !*target)
			return kap_error_plain(err, EINVAL,
					       "layer entry \"%s\": empty symlink target", raw);
		if ((r = make_node(u, pfd, name, 0, 0, target, err)) < 0)
			return r;
		return finish_node(u, e, pfd, name, true, err);
	}
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		dev_t dev = 0;
		if (type != AE_IFIFO) {
			dev = makedev(ar.rdevmajor(e), ar.rdevminor(e));
			/* A 0/0 character device is an overlay whiteout in device form. */
			bool whiteout = type == AE_IFCHR && dev == 0;
			if (u->o->rootless && !whiteout)
				return kap_error_plain(
				    err, EPERM,
				    "layer entry \"%s\": device nodes are not allowed rootless",
				    raw);
		}
		if ((r = make_node(u, pfd, name, type | 0600, dev, NULL, err)) < 0)
			return r;
		return finish_node(u, e, pfd, name, false, err);
	}
	default:
		return kap_error_plain(err, ENOTSUP,
				       "layer entry \"%s\": unsupported entry type 0%o", raw,
				       (unsigned)type);
	}
}

/* Directory modes and times last, deepest (latest created) first. */
static int apply_dir_fixups(struct unpacker *u, struct kapsel_error **err)
{
	for (size_t i = u->n_dirs; i-- > 0;) {
		struct dir_fixup *d = &u->dirs[i];
		u->entry = *d->path ? d->path : ".";
		cleanup_close int fd = open_confined(u->root, d->path, O_RDONLY | O_DIRECTORY);
		if (fd < 0) {
			/* Replaced later by a non-directory or removed by a whiteout. */
			if (errno == ENOTDIR || errno == ENOENT || errno == ELOOP)
				continue;
			return entry_error(u, err, errno, "open directory");
		}
		if (fchmod(fd, d->mode) < 0)
			return entry_error(u, err, errno, "chmod");
		if (futimens(fd, d->ts) < 0)
			return entry_error(u, err, errno, "set times");
	}
	return 0;
}

static void unpacker_clear(struct unpacker *u)
{
	if (u->parent_fd >= 0)
		close(u->parent_fd);
	for (size_t i = 0; i < u->n_dirs; i++)
		free(u->dirs[i].path);
	free(u->dirs);
}

static int stream_error(struct stream *s, struct archive *a, struct kapsel_error **err,
			const char *after)
{
	if (s->failed)
		return kap_error_plain(err, s->errnum ? s->errnum : EIO, "layer: %s%s%s%s",
				       s->errmsg, after ? " (after entry \"" : "",
				       after ? after : "", after ? "\")" : "");
	const char *msg = a ? ar.error_string(a) : NULL;
	return kap_error_plain(err, EBADMSG, "layer: invalid tar stream%s%s%s: %s",
			       after ? " after entry \"" : "", after ? after : "",
			       after ? "\"" : "", msg ? msg : "unknown error");
}

int kap_unpack_layer(int fd, enum kap_compression c, int dirfd, const struct kap_unpack_opts *o,
		     char *diff_id_out, struct kapsel_error **err)
{
	static const struct kap_unpack_opts defaults;
	struct stream s;
	struct unpacker u = {.root = dirfd, .o = o ? o : &defaults, .parent_fd = -EBADF};
	u.max_size = u.o->max_entry_size ? u.o->max_entry_size : DEFAULT_MAX_ENTRY;
	struct archive *a = NULL;
	char *last = NULL;
	int r = stream_init(&s, fd, c, true, err);
	if (r < 0)
		goto out;
	a = ar.read_new();
	if (!a) {
		r = kap_error(err, ENOMEM, "unpack");
		goto out;
	}
	ar.support_format_tar(a);
	if (ar.read_open(a, &s, NULL, archive_read_cb, NULL) != ARCHIVE_OK) {
		r = stream_error(&s, a, err, NULL);
		goto out;
	}
	for (;;) {
		struct archive_entry *e;
		int ar_r = ar.next_header(a, &e);
		if (ar_r == ARCHIVE_EOF)
			break;
		if (ar_r < ARCHIVE_WARN) {
			r = stream_error(&s, a, err, last);
			goto out;
		}
		if (ar_r == ARCHIVE_WARN)
			kap_debug("layer entry \"%s\": %s", ar.pathname(e) ? ar.pathname(e) : "",
				  ar.error_string(a));
		if ((r = write_entry(&u, a, e, err)) < 0)
			goto out;
		if (s.failed) {
			r = stream_error(&s, a, err, u.entry);
			goto out;
		}
		free(last);
		last = strdup(u.entry);
	}
	/* The diff_id covers the whole stream, including what follows the end-of-archive
	 * blocks (tar pads to its record size). */
	const void *buf;
	ssize_t n;
	while ((n = stream_read(&s, &buf)) > 0)
		;
	if (n < 0) {
		r = stream_error(&s, NULL, err, last);
		goto out;
	}
	if ((r = apply_dir_fixups(&u, err)) < 0)
		goto out;
	if (diff_id_out) {
		hasher_stop(&s.hash);
		kap_sha256_final(s.sha, diff_id_out);
		s.sha = NULL;
	}
	r = 0;
out:
	free(last);
	if (a)
		ar.read_free(a);
	unpacker_clear(&u);
	stream_clear(&s);
	return r;
}

/* ---- sequential tar reading for archive.c (oci-archive, docker-archive) ---- */
struct kap_tar {
	struct stream s;
	struct archive *a;
	struct archive_entry *e;
	char path[PATH_MAX];
	uint64_t pos;
};

int kap_tar_open(int fd, enum kap_compression c, struct kap_tar **out, struct kapsel_error **err)
{
	struct kap_tar *t = calloc(1, sizeof(*t));
	if (!t)
		return kap_error(err, ENOMEM, "read archive");
	int r = stream_init(&t->s, fd, c, false, err);
	if (r < 0)
		goto fail;
	t->a = ar.read_new();
	if (!t->a) {
		r = kap_error(err, ENOMEM, "read archive");
		goto fail;
	}
	ar.support_format_tar(t->a);
	if (ar.read_open(t->a, &t->s, NULL, archive_read_cb, NULL) != ARCHIVE_OK) {
		r = stream_error(&t->s, t->a, err, NULL);
		goto fail;
	}
	*out = t;
	return 0;
fail:
	kap_tar_close(t);
	return r;
}

int kap_tar_next(struct kap_tar *t, const char **path, char *type, int64_t *size,
		 struct kapsel_error **err)
{
	struct archive_entry *e;
	int r = ar.next_header(t->a, &e);
	if (r == ARCHIVE_EOF)
		return 0;
	if (r < ARCHIVE_WARN)
		return kap_error_plain(err, EBADMSG, "archive: %s",
				       t->s.failed ? t->s.errmsg : ar.error_string(t->a));
	const char *raw = ar.pathname(e);
	r = clean_path(raw ? raw : "", t->path, sizeof(t->path));
	if (r == -EXDEV)
		return kap_error_plain(err, EXDEV, "archive entry \"%s\": path escapes (..)", raw);
	if (r < 0)
		return kap_error(err, -r, "archive entry \"%s\"", raw ? raw : "");
	t->e = e;
	mode_t ft = ar.filetype(e);
	*type = ar.hardlink(e)	 ? 'h'
		: ft == AE_IFREG ? 'f'
		: ft == AE_IFDIR ? 'd'
		: ft == AE_IFLNK ? 'l'
				 : 'o';
	*size = ar.size(e);
	*path = t->path;
	t->pos = 0;
	return 1;
}

ssize_t kap_tar_read(struct kap_tar *t, const void **buf, struct kapsel_error **err)
{
	size_t len;
	la_int64_t off;
	int r = ar.data_block(t->a, buf, &len, &off);
	if (r == ARCHIVE_EOF)
		return 0;
	if (r < ARCHIVE_OK)
		return kap_error_plain(err, EBADMSG, "archive entry \"%s\": %s", t->path,
				       t->s.failed ? t->s.errmsg : ar.error_string(t->a));
	if (off < 0 || (uint64_t)off != t->pos)
		return kap_error_plain(err, ENOTSUP,
				       "archive entry \"%s\": sparse files unsupported", t->path);
	t->pos += len;
	return (ssize_t)len;
}

int kap_tar_link(struct kap_tar *t, char **target, bool *hard, struct kapsel_error **err)
{
	const char *h = t->e ? ar.hardlink(t->e) : NULL;
	const char *l = t->e ? ar.symlink(t->e) : NULL;
	if (!h && !l)
		return kap_error_plain(err, EINVAL, "archive entry \"%s\": not a link", t->path);
	*hard = h != NULL;
	if (!(*target = strdup(h ? h : l)))
		return kap_error(err, ENOMEM, "archive entry \"%s\"", t->path);
	return 0;
}

void kap_tar_close(struct kap_tar *t)
{
	if (!t)
		return;
	if (t->a)
		ar.read_free(t->a);
	stream_clear(&t->s);
	free(t);
}
