/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image store (docs/DESIGN.md "images"):
 *
 *   <store>/blobs/sha256/<hex>   content-addressed blobs, verified before they are renamed here
 *   <store>/layers/<hex>/        one unpacked layer per diff_id, shared by every image
 *   <store>/idmapped/<key>/<hex>/  the same layer with owners shifted into a user's subordinate
 *                                ranges (rootless; key names the mapping, image/subid.h)
 *   <store>/images.json          name -> manifest digest, replaced atomically
 *   <store>/refs/<container>     manifest digest a container uses (rmi refuses, prune keeps)
 *   <store>/tmp/                 blobs and layers being written; each entry flock()ed by its
 *                                writer, so a crashed writer's leftovers are recognisable
 *   <store>/lock                 flock: shared for readers, exclusive for images.json writers
 *   <store>/gc.lock              flock: shared ("pinned") by a handle from its first write until
 *                                it tags, exclusive for prune, so prune never deletes content
 *                                another process has written but not tagged yet
 *
 * The store directory is 0700: layers hold the image's setuid binaries, which host users must
 * not be able to run, and device nodes. kap_store_open makes an existing store 0700, and uses
 * the rootless fallback under /tmp (no HOME) only when the user owns every part of it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"
#include "image/subid.h"

#define SMALL_BLOB_MAX (16u << 20)
#define INDEX_MAX      (64u << 20)
#define TMP_STALE_S    60

struct kap_store {
	char *path;
	int dfd;
	int lock_fd;
	int lock_depth;
	bool lock_excl;
	int gc_fd;
	bool pinned;
};

const char *kap_store_path(const struct kap_store *s)
{
	return s->path;
}

static int mkdir_p(const char *path, mode_t last_mode, struct kapsel_error **err)
{
	cleanup_free char *copy = strdup(path);
	if (!copy)
		return kap_error(err, ENOMEM, "create %s", path);
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			return kap_error(err, errno, "create %s", copy);
		*p = '/';
	}
	if (mkdir(copy, last_mode) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create %s", copy);
	return 0;
}

#define TMP_FALLBACK "/tmp/.local/share/kapsel"

static char *default_path(bool *in_tmp)
{
	char *p = NULL;
	*in_tmp = false;
	if (geteuid() == 0)
		return strdup("/var/lib/kapsel");
	const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	if (xdg && *xdg == '/') {
		if (asprintf(&p, "%s/kapsel", xdg) < 0)
			return NULL;
	} else if (home && *home) {
		if (asprintf(&p, "%s/.local/share/kapsel", home) < 0)
			return NULL;
	} else {
		*in_tmp = true;
		p = strdup(TMP_FALLBACK);
	}
	return p;
}

char *kap_store_default_path(void)
{
	bool in_tmp;
	return default_path(&in_tmp);
}

/*
 * Without HOME the store falls back to TMP_FALLBACK, and /tmp is everyone's: another user who
 * made /tmp/.local first could rename our store away and put theirs (with their layers, setuid
 * files included) in its place, or read ours. Walk the path from /tmp without following
 * symlinks, creating what is missing 0700, and use it only if every directory below /tmp is
 * ours and writable by no one else.
 */
static int check_tmp_fallback(struct kapsel_error **err)
{
	static const char *const parts[] = {".local", "share", "kapsel"};
	cleanup_close int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open /tmp");
	char path[sizeof(TMP_FALLBACK)] = "/tmp";
	for (size_t i = 0; i < KAP_ARRAY_SIZE(parts); i++) {
		strcat(path, "/");
		strcat(path, parts[i]);
		if (mkdirat(fd, parts[i], 0700) < 0 && errno != EEXIST)
			return kap_error(err, errno, "store fallback %s (HOME is not set)", path);
		int next = openat(fd, parts[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return kap_error(err, errno, "store fallback %s (HOME is not set)", path);
		close(fd);
		fd = next;
		struct stat st;
		if (fstat(fd, &st) < 0)
			return kap_error(err, errno, "store fallback %s", path);
		if (st.st_uid != geteuid())
			return kap_error_plain(err, EPERM,
					       "store fallback %s is owned by uid %u, not %u: "
					       "set HOME or XDG_DATA_HOME",
					       path, (unsigned)st.st_uid, (unsigned)geteuid());
		if (st.st_mode & 022)
			return kap_error_plain(
			    err, EPERM,
			    "store fallback %s is writable by others (mode %04o): "
			    "set HOME or XDG_DATA_HOME",
			    path, (unsigned)(st.st_mode & 07777));
	}
	return 0;
}

static bool tmp_entry_locked(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return false;
	return errno == EWOULDBLOCK;
}

/* Remove leftovers of writers that died: unlocked, and (unless `all`) older than a minute, so
 * an entry whose creator has not taken its lock yet is spared. */
static void clean_tmp(struct kap_store *s, bool all)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(s->dfd, "tmp", O_NOFOLLOW);
	if (!d)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		cleanup_close int efd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		struct stat st;
		if (efd < 0 || fstat(efd, &st) < 0)
			continue;
		if (!all && now - st.st_mtime < TMP_STALE_S)
			continue;
		if (tmp_entry_locked(efd))
			continue;
		kap_debug("store: removing stale %s/tmp/%s", s->path, de->d_name);
		kap_fs_rm_rf(dirfd(d), de->d_name);
	}
}

/* kap_fs_write_atomic's ".NAME.tmp.PID" of a writer that died before its rename: images.json
 * is written under the exclusive store lock and refs/ under the shared one, so with the
 * exclusive lock held (prune) every such file is a leftover. */
static void clean_atomic_leftovers(struct kap_store *s, const char *dir)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(s->dfd, dir, O_NOFOLLOW);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp.") &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			kap_debug("store: removed stale %s/%s/%s", s->path, dir, de->d_name);
}

int kap_store_open(const char *path, struct kap_store **out, struct kapsel_error **err)
{
	bool in_tmp = false;
	cleanup_free char *p = path ? strdup(path) : default_path(&in_tmp);
	if (!p)
		return kap_error(err, ENOMEM, "open store");
	int r = in_tmp ? check_tmp_fallback(err) : mkdir_p(p, 0700, err);
	if (r < 0)
		return r;
	struct kap_store *s = calloc(1, sizeof(*s));
	if (!s)
		return kap_error(err, ENOMEM, "open store");
	s->lock_fd = s->gc_fd = s->dfd = -EBADF;
	s->path = steal_ptr(p);
	s->dfd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dfd < 0) {
		r = kap_error(err, errno, "open store %s", s->path);
		goto fail;
	}
	/* A store others can enter hands them the layers' setuid binaries and 0666 device nodes.
	 * A directory the user made for --store (0755 by umask) is the usual cause, so fix it
	 * rather than refuse, as containers/storage creates its graph root 0700. */
	struct stat st;
	if (fstat(s->dfd, &st) < 0) {
		r = kap_error(err, errno, "stat store %s", s->path);
		goto fail;
	}
	if (st.st_mode & 077) {
		if (fchmod(s->dfd, 0700) < 0) {
			r = kap_error(err, errno, "store %s is mode %04o; chmod 0700", s->path,
				      (unsigned)(st.st_mode & 07777));
			goto fail;
		}
		kap_warn("store %s was mode %04o, others could reach its layers: now 0700", s->path,
			 (unsigned)(st.st_mode & 07777));
	}
	static const char *const dirs[] = {"blobs", "blobs/sha256", "layers", "tmp", "refs"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(dirs); i++) {
		if (mkdirat(s->dfd, dirs[i], 0700) < 0 && errno != EEXIST) {
			r = kap_error(err, errno, "create %s/%s", s->path, dirs[i]);
			goto fail;
		}
	}
	s->lock_fd = openat(s->dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	s->gc_fd = openat(s->dfd, "gc.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lock_fd < 0 || s->gc_fd < 0) {
		r = kap_error(err, errno, "open %s/lock", s->path);
		goto fail;
	}
	clean_tmp(s, false);
	*out = s;
	return 0;
fail:
	kap_store_close(s);
	return r;
}

void kap_store_close(struct kap_store *s)
{
	if (!s)
		return;
	if (s->dfd >= 0)
		close(s->dfd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->gc_fd >= 0)
		close(s->gc_fd);
	free(s->path);
	free(s);
}

static int flock_retry(int fd, int op)
{
	int r;
	while ((r = flock(fd, op)) < 0 && errno == EINTR)
		;
	return r;
}

int kap_store_lock(struct kap_store *s, bool exclusive, struct kapsel_error **err)
{
	if (s->lock_depth > 0 && (s->lock_excl || !exclusive)) {
		s->lock_depth++;
		return 0;
	}
	if (flock_retry(s->lock_fd, exclusive ? LOCK_EX : LOCK_SH) < 0)
		return kap_error(err, errno, "lock %s/lock", s->path);
	s->lock_excl = exclusive;
	s->lock_depth++;
	return 0;
}

void kap_store_unlock(struct kap_store *s)
{
	if (s->lock_depth <= 0)
		return;
	if (--s->lock_depth == 0) {
		flock(s->lock_fd, LOCK_UN);
		s->lock_excl = false;
	}
}

static int pin(struct kap_store *s, struct kapsel_error **err)
{
	if (s->pinned)
		return 0;
	if (flock_retry(s->gc_fd, LOCK_SH) < 0)
		return kap_error(err, errno, "lock %s/gc.lock", s->path);
	s->pinned = true;
	return 0;
}

static void unpin(struct kap_store *s)
{
	if (s->pinned)
		flock(s->gc_fd, LOCK_UN);
	s->pinned = false;
}

static int blob_name(const char *digest, char out[96], struct kapsel_error **err)
{
	int r = kap_digest_validate(digest, "blob", err);
	if (r < 0)
		return r;
	snprintf(out, 96, "blobs/sha256/%s", digest + 7);
	return 0;
}

bool kap_store_has_blob(struct kap_store *s, const char *digest)
{
	char name[96];
	struct stat st;
	return blob_name(digest, name, NULL) == 0 &&
	       fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int kap_store_open_blob(struct kap_store *s, const char *digest, struct kapsel_error **err)
{
	char name[96];
	int r = blob_name(digest, name, err);
	if (r < 0)
		return r;
	int fd = openat(s->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kap_error(err, errno, "open blob %s", digest);
	return fd;
}

int kap_store_read_blob(struct kap_store *s, const char *digest, char **buf, size_t *len,
			struct kapsel_error **err)
{
	char name[96];
	int r = blob_name(digest, name, err);
	if (r < 0)
		return r;
	cleanup_free char *data = NULL;
	size_t n = 0;
	cleanup_error struct kapsel_error *e = NULL;
	if ((r = kap_fs_read_file(s->dfd, name, SMALL_BLOB_MAX, &data, &n, &e)) < 0)
		return kap_error_plain(err, -r, "blob %s: %s", digest, e->msg);
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		return kap_error(err, ENOMEM, "blob %s", digest);
	char got[KAP_DIGEST_LEN + 1];
	kap_sha256_update(h, data, n);
	kap_sha256_final(h, got);
	if (strcmp(got, digest))
		return kap_error_plain(err, EBADMSG,
				       "blob %s in %s is corrupt (its content hashes to %s)",
				       digest, s->path, got);
	*buf = steal_ptr(data);
	if (len)
		*len = n;
	return 0;
}

/* ---- temp entries ---- */
static int tmp_name(char out[64], const char *kind)
{
	unsigned int rnd = 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	rnd = (unsigned int)(ts.tv_nsec ^ (ts.tv_sec << 12)) ^ (unsigned int)random();
	return snprintf(out, 64, "%s-%d-%08x", kind, getpid(), rnd);
}

struct kap_blob_writer {
	struct kap_store *s;
	int fd;
	char name[64]; /* in tmp/ */
	struct kap_sha256 *h;
	char expect[KAP_DIGEST_LEN + 1];
	int64_t expect_size;
	uint64_t written;
	char digest[KAP_DIGEST_LEN + 1];
	bool checked;
};

int kap_blob_writer_new(struct kap_store *s, const char *expect_digest, int64_t expect_size,
			struct kap_blob_writer **out, struct kapsel_error **err)
{
	int r;
	if (expect_digest && (r = kap_digest_validate(expect_digest, "blob", err)) < 0)
		return r;
	if ((r = pin(s, err)) < 0)
		return r;
	struct kap_blob_writer *w = calloc(1, sizeof(*w));
	if (!w || !(w->h = kap_sha256_new())) {
		free(w);
		return kap_error(err, ENOMEM, "write blob");
	}
	w->s = s;
	w->expect_size = expect_size;
	if (expect_digest)
		memcpy(w->expect, expect_digest, KAP_DIGEST_LEN + 1);
	char path[80];
	for (int i = 0; i < 16; i++) {
		tmp_name(w->name, "blob");
		snprintf(path, sizeof(path), "tmp/%s", w->name);
		w->fd = openat(s->dfd, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd >= 0 || errno != EEXIST)
			break;
	}
	if (w->fd < 0 || flock(w->fd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "create %s/tmp/%s", s->path, w->name);
		kap_blob_writer_abort(w);
		return r;
	}
	*out = w;
	return 0;
}

int kap_blob_writer_fd(const struct kap_blob_writer *w)
{
	return w->fd;
}

int kap_blob_writer_write(struct kap_blob_writer *w, const void *data, size_t len,
			  struct kapsel_error **err)
{
	if (w->checked)
		return kap_error_plain(err, EINVAL, "blob writer: write after check");
	if (w->expect_size >= 0 && w->written + len > (uint64_t)w->expect_size)
		return kap_error_plain(err, EFBIG, "blob %s: more data than its size %lld",
				       *w->expect ? w->expect : "", (long long)w->expect_size);
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(w->fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kap_error(err, errno, "write %s/tmp/%s", w->s->path, w->name);
		p += n;
		left -= (size_t)n;
	}
	kap_sha256_update(w->h, data, len);
	w->written += len;
	return 0;
}

int kap_blob_writer_check(struct kap_blob_writer *w, char *digest_out, struct kapsel_error **err)
{
	if (!w->checked) {
		kap_sha256_final(w->h, w->digest);
		w->h = NULL;
		w->checked = true;
	}
	if (*w->expect && strcmp(w->expect, w->digest))
		return kap_error_plain(err, EBADMSG, "blob %s: digest mismatch (content is %s)",
				       w->expect, w->digest);
	if (w->expect_size >= 0 && w->written != (uint64_t)w->expect_size)
		return kap_error_plain(
		    err, EBADMSG, "blob %s: size mismatch (expected %lld bytes, got %llu)",
		    w->digest, (long long)w->expect_size, (unsigned long long)w->written);
	if (digest_out)
		memcpy(digest_out, w->digest, KAP_DIGEST_LEN + 1);
	return 0;
}

int kap_blob_writer_finish(struct kap_blob_writer *w, char *digest_out, struct kapsel_error **err)
{
	int r = kap_blob_writer_check(w, digest_out, err);
	if (r < 0)
		goto out;
	char from[80], to[96];
	snprintf(from, sizeof(from), "tmp/%s", w->name);
	snprintf(to, sizeof(to), "blobs/sha256/%s", w->digest + 7);
	/* Durable before it is visible under its digest: a blob name promises its content. */
	if (fdatasync(w->fd) < 0) {
		r = kap_error(err, errno, "sync %s/%s", w->s->path, from);
		goto out;
	}
	if (renameat(w->s->dfd, from, w->s->dfd, to) < 0) {
		r = kap_error(err, errno, "rename %s into %s/blobs", from, w->s->path);
		goto out;
	}
	*w->name = '\0';
out:
	kap_blob_writer_abort(w);
	return r;
}

int kap_blob_writer_commit(struct kap_blob_writer *w, struct kapsel_error **err)
{
	return kap_blob_writer_finish(w, NULL, err);
}

void kap_blob_writer_abort(struct kap_blob_writer *w)
{
	if (!w)
		return;
	if (*w->name) {
		char path[80];
		snprintf(path, sizeof(path), "tmp/%s", w->name);
		unlinkat(w->s->dfd, path, 0);
	}
	if (w->fd >= 0)
		close(w->fd);
	if (w->h) {
		char discard[KAP_DIGEST_LEN + 1];
		kap_sha256_final(w->h, discard);
	}
	free(w);
}

int kap_store_put_blob(struct kap_store *s, const void *data, size_t len, char *digest_out,
		       struct kapsel_error **err)
{
	struct kap_blob_writer *w;
	int r = kap_blob_writer_new(s, NULL, (int64_t)len, &w, err);
	if (r < 0)
		return r;
	if ((r = kap_blob_writer_write(w, data, len, err)) < 0) {
		kap_blob_writer_abort(w);
		return r;
	}
	return kap_blob_writer_finish(w, digest_out, err);
}

/* ---- layers ---- */
struct kap_layer_stage {
	struct kap_store *s;
	char name[64];
	int fd;
	char diff_id[KAP_DIGEST_LEN + 1];
};

static bool rootless(void)
{
	if (geteuid() != 0)
		return true;
	/* Root in a user namespace cannot make devices either: only the initial namespace maps
	 * the whole range "0 0 4294967295". */
	char buf[128] = "";
	cleanup_close int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		return false;
	buf[n] = '\0';
	unsigned long a, b, c;
	return !(sscanf(buf, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 &&
		 c == 4294967295UL);
}

bool kap_store_has_layer(struct kap_store *s, const char *diff_id)
{
	if (kap_digest_validate(diff_id, "diff_id", NULL) < 0)
		return false;
	char name[96];
	struct stat st;
	snprintf(name, sizeof(name), "layers/%s", diff_id + 7);
	return fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

void kap_store_layer_discard(struct kap_layer_stage *st)
{
	if (!st)
		return;
	if (*st->name) {
		int tfd = openat(st->s->dfd, "tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (tfd >= 0) {
			kap_fs_rm_rf(tfd, st->name);
			close(tfd);
		}
	}
	if (st->fd >= 0)
		close(st->fd);
	free(st);
}

static int stage_with(struct kap_store *s, int blob_fd, enum kap_compression c, const char *diff_id,
		      const struct kap_unpack_opts *o, struct kap_layer_stage **out,
		      struct kapsel_error **err)
{
	int r;
	if (diff_id && (r = kap_digest_validate(diff_id, "diff_id", err)) < 0)
		return r;
	if ((r = pin(s, err)) < 0)
		return r;
	struct kap_layer_stage *st = calloc(1, sizeof(*st));
	if (!st)
		return kap_error(err, ENOMEM, "unpack layer");
	st->s = s;
	st->fd = -EBADF;
	char path[80];
	for (int i = 0; i < 16; i++) {
		tmp_name(st->name, "layer");
		snprintf(path, sizeof(path), "tmp/%s", st->name);
		if (mkdirat(s->dfd, path, 0755) == 0)
			break;
		if (errno != EEXIST) {
			r = kap_error(err, errno, "create %s/%s", s->path, path);
			*st->name = '\0';
			goto fail;
		}
	}
	st->fd = openat(s->dfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->fd < 0 || flock(st->fd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "open %s/%s", s->path, path);
		goto fail;
	}
	char got[KAP_DIGEST_LEN + 1];
	if ((r = kap_unpack_layer(blob_fd, c, st->fd, o, got, err)) < 0)
		goto fail;
	if (diff_id && strcmp(got, diff_id)) {
		r = kap_error_plain(err, EBADMSG,
				    "layer diff_id mismatch: the image config says %s, the "
				    "uncompressed layer is %s",
				    diff_id, got);
		goto fail;
	}
	memcpy(st->diff_id, got, sizeof(got));
	*out = st;
	return 0;
fail:
	kap_store_layer_discard(st);
	return r;
}

int kap_store_layer_stage(struct kap_store *s, int blob_fd, enum kap_compression c,
			  const char *diff_id, struct kap_layer_stage **out,
			  struct kapsel_error **err)
{
	struct kap_unpack_opts o = {.rootless = rootless()};
	return stage_with(s, blob_fd, c, diff_id, &o, out, err);
}

int kap_store_layer_commit(struct kap_layer_stage *st, struct kapsel_error **err)
{
	char from[80], to[96];
	snprintf(from, sizeof(from), "tmp/%s", st->name);
	snprintf(to, sizeof(to), "layers/%s", st->diff_id + 7);
	int r = 0;
	/* has_layer trusts any directory under layers/, so its content must be on disk before
	 * the rename makes it one: after a power cut a layer is complete or absent (and its temp
	 * directory is prune's). One syncfs per layer costs less than an fsync per file. */
	if (syncfs(st->fd) < 0) {
		r = kap_error(err, errno, "sync %s/%s", st->s->path, from);
		kap_store_layer_discard(st);
		return r;
	}
	if (renameat(st->s->dfd, from, st->s->dfd, to) == 0)
		*st->name = '\0';
	else if (errno != EEXIST && errno != ENOTEMPTY)
		r = kap_error(err, errno, "rename %s into %s/layers", from, st->s->path);
	/* EEXIST/ENOTEMPTY: another process unpacked the same layer first; ours goes. */
	kap_store_layer_discard(st);
	return r;
}

int kap_store_adopt_layer(struct kap_store *s, int dirfd, const char *name, const char *diff_id,
			  struct kapsel_error **err)
{
	int r = kap_digest_validate(diff_id, "diff_id", err);
	if (r < 0)
		return r;
	char to[96];
	snprintf(to, sizeof(to), "layers/%s", diff_id + 7);
	/* As kap_store_layer_commit: on disk before the rename makes it a layer. */
	if (syncfs(dirfd) < 0)
		return kap_error(err, errno, "sync %s", name);
	if (renameat(dirfd, name, s->dfd, to) == 0)
		return 0;
	if (errno == EEXIST || errno == ENOTEMPTY)
		return 0; /* the same content is there already; the caller removes its copy */
	return kap_error(err, errno, "rename %s into %s/layers", name, s->path);
}

int kap_store_unpack_layer(struct kap_store *s, const char *blob_digest, enum kap_compression c,
			   const char *diff_id, struct kapsel_error **err)
{
	int r = kap_digest_validate(diff_id, "diff_id", err);
	if (r < 0)
		return r;
	if (kap_store_has_layer(s, diff_id))
		return 0;
	cleanup_close int fd = kap_store_open_blob(s, blob_digest, err);
	if (fd < 0)
		return fd;
	struct kap_layer_stage *st;
	if ((r = kap_store_layer_stage(s, fd, c, diff_id, &st, err)) < 0)
		return kap_error_wrap(err, "layer %s", blob_digest);
	return kap_store_layer_commit(st, err);
}

static bool valid_key(const char *key)
{
	return strlen(key) == 16 && strspn(key, "0123456789abcdef") == 16;
}

int kap_store_idmapped_layer(struct kap_store *s, const char *key, const struct kap_unpack_opts *o,
			     const char *blob_digest, enum kap_compression c, const char *diff_id,
			     char **path, struct kapsel_error **err)
{
	int r = kap_digest_validate(diff_id, "diff_id", err);
	if (r < 0)
		return r;
	if (!valid_key(key))
		return kap_error_plain(err, EINVAL, "id mapping key \"%s\" is not valid", key);
	char dir[64], to[160];
	snprintf(dir, sizeof(dir), "idmapped/%s", key);
	snprintf(to, sizeof(to), "%s/%s", dir, diff_id + 7);
	struct stat sb;
	if (fstatat(s->dfd, to, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(sb.st_mode)) {
		/* 0700 as the store: the copies hold the image's setuid binaries too. */
		if ((mkdirat(s->dfd, "idmapped", 0700) < 0 && errno != EEXIST) ||
		    (mkdirat(s->dfd, dir, 0700) < 0 && errno != EEXIST))
			return kap_error(err, errno, "create %s/%s", s->path, dir);
		cleanup_close int fd = kap_store_open_blob(s, blob_digest, err);
		if (fd < 0)
			return fd;
		struct kap_layer_stage *st;
		if ((r = stage_with(s, fd, c, diff_id, o, &st, err)) < 0)
			return kap_error_wrap(err, "layer %s", blob_digest);
		char from[80];
		snprintf(from, sizeof(from), "tmp/%s", st->name);
		/* As kap_store_layer_commit: on disk before the rename makes it a layer. */
		if (syncfs(st->fd) < 0)
			r = kap_error(err, errno, "sync %s/%s", s->path, from);
		else if (renameat(s->dfd, from, s->dfd, to) == 0)
			*st->name = '\0';
		else if (errno != EEXIST && errno != ENOTEMPTY)
			r = kap_error(err, errno, "rename %s into %s/%s", from, s->path, dir);
		kap_store_layer_discard(st);
		if (r < 0)
			return r;
	}
	if (asprintf(path, "%s/%s", s->path, to) < 0)
		return kap_error(err, ENOMEM, "layer %s", diff_id);
	return 0;
}

char *kap_store_layer_path(struct kap_store *s, const char *diff_id)
{
	if (!kap_store_has_layer(s, diff_id))
		return NULL;
	char *p = NULL;
	if (asprintf(&p, "%s/layers/%s", s->path, diff_id + 7) < 0)
		return NULL;
	return p;
}

/* ---- images.json ---- */
void kap_store_images_free(struct kap_store_image *imgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(imgs[i].name);
	free(imgs);
}

static int index_read(struct kap_store *s, struct kap_store_image **out, size_t *n,
		      struct kapsel_error **err)
{
	*out = NULL;
	*n = 0;
	cleanup_free char *buf = NULL;
	size_t len;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(s->dfd, "images.json", INDEX_MAX, &buf, &len, &e);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return kap_error_plain(err, -r, "%s/images.json: %s", s->path, e->msg);
	cleanup_json struct kap_json *doc = NULL;
	if ((r = kap_json_parse(buf, len, "images.json", &doc, err)) < 0)
		return r;
	struct kap_json *images = kap_json_get(doc, "images");
	if (kap_json_type(images) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s/images.json: images: expected object",
				       s->path);
	size_t count = 0;
	struct kap_json_iter it;
	const char *key;
	struct kap_json *val;
	for (it = kap_json_iter(images); kap_json_iter_next(&it, &key, &val);)
		count++;
	struct kap_store_image *list = calloc(count ? count : 1, sizeof(*list));
	if (!list)
		return kap_error(err, ENOMEM, "images.json");
	size_t i = 0;
	for (it = kap_json_iter(images); kap_json_iter_next(&it, &key, &val);) {
		struct kap_json *d = kap_json_get(val, "digest");
		if (kap_json_type(d) != KAP_JSON_STRING ||
		    kap_digest_validate(kap_json_string(d), key, NULL) < 0) {
			kap_store_images_free(list, i);
			return kap_error_plain(
			    err, EINVAL, "%s/images.json: images.%s.digest: invalid", s->path, key);
		}
		list[i].name = strdup(key);
		memcpy(list[i].manifest_digest, kap_json_string(d), KAP_DIGEST_LEN + 1);
		if (!list[i++].name) {
			kap_store_images_free(list, i);
			return kap_error(err, ENOMEM, "images.json");
		}
	}
	*out = list;
	*n = i;
	return 0;
}

static int index_write(struct kap_store *s, const struct kap_store_image *list, size_t n,
		       struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = kap_json_new_object();
	struct kap_json *images = kap_json_new_object();
	if (!doc || !images) {
		kap_json_put(images);
		return kap_error(err, ENOMEM, "images.json");
	}
	kap_json_set(doc, "images", images);
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o = kap_json_new_object();
		if (!o)
			return kap_error(err, ENOMEM, "images.json");
		kap_json_set(o, "digest", kap_json_new_string(list[i].manifest_digest));
		kap_json_set(images, list[i].name, o);
	}
	cleanup_free char *text = kap_json_dump(doc, true);
	if (!text)
		return kap_error(err, ENOMEM, "images.json");
	return kap_fs_write_atomic(s->dfd, "images.json", text, strlen(text), 0600, true, err);
}

int kap_store_list(struct kap_store *s, struct kap_store_image **out, size_t *n,
		   struct kapsel_error **err)
{
	int r = kap_store_lock(s, false, err);
	if (r < 0)
		return r;
	r = index_read(s, out, n, err);
	kap_store_unlock(s);
	return r;
}

int kap_store_tag(struct kap_store *s, const char *name, const char *manifest_digest,
		  struct kapsel_error **err)
{
	int r;
	if ((r = kap_digest_validate(manifest_digest, "manifest", err)) < 0)
		return r;
	if (!name || !*name || strlen(name) > 4096)
		return kap_error_plain(err, EINVAL, "tag: invalid image name");
	if ((r = kap_store_lock(s, true, err)) < 0)
		return r;
	struct kap_store_image *list = NULL;
	size_t n = 0;
	if ((r = index_read(s, &list, &n, err)) < 0)
		goto out;
	size_t i;
	for (i = 0; i < n && strcmp(list[i].name, name); i++)
		;
	if (i == n) {
		struct kap_store_image *nl = realloc(list, (n + 1) * sizeof(*nl));
		char *copy = strdup(name);
		if (!nl || !copy) {
			free(copy);
			if (nl)
				list = nl;
			r = kap_error(err, ENOMEM, "tag %s", name);
			goto out;
		}
		list = nl;
		list[n++].name = copy;
	}
	memcpy(list[i].manifest_digest, manifest_digest, KAP_DIGEST_LEN + 1);
	r = index_write(s, list, n, err);
	/* Tagged content is referenced: prune may run again. */
	if (r == 0)
		unpin(s);
out:
	kap_store_images_free(list, n);
	kap_store_unlock(s);
	return r;
}

int kap_store_resolve(struct kap_store *s, const char *name, char *manifest_digest,
		      struct kapsel_error **err)
{
	struct kap_store_image *list;
	size_t n, i;
	int r = kap_store_list(s, &list, &n, err);
	if (r < 0)
		return r;
	for (i = 0; i < n && strcmp(list[i].name, name); i++)
		;
	if (i < n)
		memcpy(manifest_digest, list[i].manifest_digest, KAP_DIGEST_LEN + 1);
	else
		r = kap_error_plain(err, ENOENT, "image \"%s\" not found in %s", name, s->path);
	kap_store_images_free(list, n);
	return r;
}

int kap_store_untag(struct kap_store *s, const char *name, struct kapsel_error **err)
{
	int r = kap_store_lock(s, true, err);
	if (r < 0)
		return r;
	struct kap_store_image *list = NULL;
	size_t n = 0;
	if ((r = index_read(s, &list, &n, err)) < 0)
		goto out;
	size_t i;
	for (i = 0; i < n && strcmp(list[i].name, name); i++)
		;
	if (i == n) {
		r = kap_error_plain(err, ENOENT, "image \"%s\" not found in %s", name, s->path);
		goto out;
	}
	free(list[i].name);
	list[i] = list[n - 1];
	n--;
	r = index_write(s, list, n, err);
out:
	kap_store_images_free(list, n);
	kap_store_unlock(s);
	return r;
}

/* ---- containers using images ---- */
static bool container_name_ok(const char *c)
{
	return c && *c && strlen(c) < 256 && !strchr(c, '/') && strcmp(c, ".") && strcmp(c, "..");
}

int kap_store_add_user(struct kap_store *s, const char *container, const char *manifest_digest,
		       struct kapsel_error **err)
{
	int r;
	if (!container_name_ok(container))
		return kap_error_plain(err, EINVAL, "invalid container name \"%s\"",
				       container ? container : "");
	if ((r = kap_digest_validate(manifest_digest, "manifest", err)) < 0)
		return r;
	cleanup_close int rfd = openat(s->dfd, "refs", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		return kap_error(err, errno, "open %s/refs", s->path);
	if ((r = kap_store_lock(s, false, err)) < 0)
		return r;
	r = kap_fs_write_atomic(rfd, container, manifest_digest, KAP_DIGEST_LEN, 0600, false, err);
	kap_store_unlock(s);
	return r;
}

int kap_store_remove_user(struct kap_store *s, const char *container)
{
	if (!container_name_ok(container))
		return -EINVAL;
	char path[300];
	snprintf(path, sizeof(path), "refs/%s", container);
	if (unlinkat(s->dfd, path, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Every (container, digest) in refs/; digests of unreadable entries are skipped. */
static int users_read(struct kap_store *s, char ***names, char ***digests, size_t *n,
		      struct kapsel_error **err)
{
	*names = *digests = NULL;
	*n = 0;
	cleanup_dir DIR *d = kap_fs_opendir_at(s->dfd, "refs", 0);
	if (!d)
		return kap_error(err, errno, "open %s/refs", s->path);
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char buf[KAP_DIGEST_LEN + 1];
		cleanup_close int f =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		ssize_t len = f >= 0 ? read(f, buf, KAP_DIGEST_LEN) : -1;
		if (len != KAP_DIGEST_LEN)
			continue;
		buf[len] = '\0';
		if (kap_digest_validate(buf, "ref", NULL) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			char **a = realloc(*names, (cap + 1) * sizeof(char *));
			if (a)
				*names = a;
			char **b = realloc(*digests, (cap + 1) * sizeof(char *));
			if (b)
				*digests = b;
			if (!a || !b)
				return kap_error(err, ENOMEM, "refs");
		}
		(*names)[*n] = strdup(de->d_name);
		(*digests)[*n] = strdup(buf);
		(*n)++;
		(*names)[*n] = (*digests)[*n] = NULL;
		if (!(*names)[*n - 1] || !(*digests)[*n - 1])
			return kap_error(err, ENOMEM, "refs");
	}
	return 0;
}

int kap_store_users(struct kap_store *s, const char *manifest_digest, char ***names, size_t *n,
		    struct kapsel_error **err)
{
	cleanup_strv char **all = NULL;
	cleanup_strv char **digests = NULL;
	size_t count;
	*names = NULL;
	*n = 0;
	int r = users_read(s, &all, &digests, &count, err);
	if (r < 0)
		return r;
	char **out = calloc(count + 1, sizeof(char *));
	if (!out)
		return kap_error(err, ENOMEM, "refs");
	for (size_t i = 0; i < count; i++)
		if (!strcmp(digests[i], manifest_digest))
			out[(*n)++] = steal_ptr(all[i]);
	*names = out;
	return 0;
}

/* ---- images: manifests through indexes ---- */
int kap_store_resolve_manifest(struct kap_store *s, const char *digest, char *resolved,
			       struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r = kap_store_read_blob(s, digest, &buf, &len, err);
	if (r < 0)
		return r;
	cleanup_json struct kap_json *doc = NULL;
	if ((r = kap_json_parse(buf, len, "manifest", &doc, err)) < 0)
		return r;
	if (!kap_manifest_is_index(NULL, doc)) {
		memcpy(resolved, digest, KAP_DIGEST_LEN + 1);
		return 0;
	}
	struct kap_index idx;
	if ((r = kap_index_parse(buf, len, &idx, err)) < 0)
		return r;
	const struct kap_descriptor *d;
	if ((r = kap_index_select(&idx, NULL, &d, err)) == 0)
		memcpy(resolved, d->digest, KAP_DIGEST_LEN + 1);
	kap_index_clear(&idx);
	return r;
}

int kap_store_load_image(struct kap_store *s, const char *manifest_digest, struct kap_manifest *m,
			 struct kap_image_config *cfg, struct kapsel_error **err)
{
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_resolve_manifest(s, manifest_digest, digest, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = NULL;
	size_t len;
	if ((r = kap_store_read_blob(s, digest, &buf, &len, err)) < 0)
		return r;
	if ((r = kap_manifest_parse(buf, len, m, err)) < 0)
		return kap_error_wrap(err, "image %s", digest);
	free(buf);
	buf = NULL;
	if ((r = kap_store_read_blob(s, m->config.digest, &buf, &len, err)) < 0 ||
	    (r = kap_image_config_parse(buf, len, cfg, err)) < 0) {
		kap_manifest_clear(m);
		return r;
	}
	if (cfg->n_diff_ids != m->n_layers) {
		kap_manifest_clear(m);
		kap_image_config_clear(cfg);
		return kap_error_plain(err, EINVAL,
				       "image %s: %zu layers but %zu diff_ids in its config",
				       digest, m->n_layers, cfg->n_diff_ids);
	}
	return 0;
}

static bool is_hex_prefix(const char *s)
{
	size_t n = strlen(s);
	if (n < 4 || n > 64)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

int kap_store_lookup(struct kap_store *s, const char *input, char **name_out, char *manifest_digest,
		     struct kapsel_error **err)
{
	struct kap_store_image *list;
	size_t n;
	if (name_out)
		*name_out = NULL;
	if (!input || !*input)
		return kap_error_plain(err, EINVAL, "empty image name");
	int r = kap_store_list(s, &list, &n, err);
	if (r < 0)
		return r;
	const struct kap_store_image *hit = NULL;
	for (size_t i = 0; i < n && !hit; i++)
		if (!strcmp(list[i].name, input))
			hit = &list[i];
	struct kap_ref ref;
	if (!hit && kap_ref_parse(input, &ref, NULL) == 0) {
		cleanup_free char *canon = kap_ref_string(&ref);
		kap_ref_clear(&ref);
		for (size_t i = 0; canon && i < n && !hit; i++)
			if (!strcmp(list[i].name, canon))
				hit = &list[i];
	}
	if (hit) {
		memcpy(manifest_digest, hit->manifest_digest, KAP_DIGEST_LEN + 1);
		if (name_out && !(*name_out = strdup(hit->name)))
			r = kap_error(err, ENOMEM, "lookup");
		kap_store_images_free(list, n);
		return r;
	}
	const char *hex = !strncmp(input, "sha256:", 7) ? input + 7 : input;
	const char *found = NULL;
	bool ambiguous = false;
	if (is_hex_prefix(hex)) {
		for (size_t i = 0; i < n; i++) {
			struct kap_manifest m;
			struct kap_image_config c;
			bool match = !strncmp(list[i].manifest_digest + 7, hex, strlen(hex));
			/* A manifest list's ID is its own digest, not an image config's: the
			 * images it lists keep their IDs unambiguous. */
			if (!match && !kap_store_is_index(s, list[i].manifest_digest) &&
			    kap_store_load_image(s, list[i].manifest_digest, &m, &c, NULL) == 0) {
				match = !strncmp(m.config.digest + 7, hex, strlen(hex));
				kap_manifest_clear(&m);
				kap_image_config_clear(&c);
			}
			if (!match)
				continue;
			if (found && strcmp(found, list[i].manifest_digest))
				ambiguous = true;
			found = list[i].manifest_digest;
		}
	}
	if (found && !ambiguous)
		memcpy(manifest_digest, found, KAP_DIGEST_LEN + 1);
	kap_store_images_free(list, n);
	if (ambiguous)
		return kap_error_plain(err, EINVAL, "image ID \"%s\" is ambiguous", input);
	if (!found)
		return kap_error_plain(err, ENOENT, "image \"%s\" not found in %s", input, s->path);
	return 0;
}

/* ---- garbage collection ---- */
struct strset {
	char **v;
	size_t n, cap;
	bool sorted;
};

static int strset_add(struct strset *set, const char *s)
{
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 64;
		char **v = realloc(set->v, cap * sizeof(char *));
		if (!v)
			return -ENOMEM;
		set->v = v;
		set->cap = cap;
	}
	if (!(set->v[set->n] = strdup(s)))
		return -ENOMEM;
	set->n++;
	set->sorted = false;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool strset_has(struct strset *set, const char *s)
{
	if (!set->n)
		return false;
	if (!set->sorted) {
		qsort(set->v, set->n, sizeof(char *), cmp_str);
		set->sorted = true;
	}
	return bsearch(&s, set->v, set->n, sizeof(char *), cmp_str) != NULL;
}

static void strset_clear(struct strset *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->v[i]);
	free(set->v);
	memset(set, 0, sizeof(*set));
}

/* Mark a manifest (or index, and the manifests of it that are present) and its content. */
static int mark(struct kap_store *s, const char *digest, struct strset *blobs,
		struct strset *layers, int depth, struct kapsel_error **err)
{
	if (depth > 2 || strset_has(blobs, digest))
		return 0;
	if (strset_add(blobs, digest) < 0)
		return kap_error(err, ENOMEM, "prune");
	cleanup_free char *buf = NULL;
	size_t len;
	int r = kap_store_read_blob(s, digest, &buf, &len, err);
	if (r < 0)
		return r;
	cleanup_json struct kap_json *doc = NULL;
	if ((r = kap_json_parse(buf, len, digest, &doc, err)) < 0)
		return r;
	if (kap_manifest_is_index(NULL, doc)) {
		struct kap_index idx;
		if ((r = kap_index_parse(buf, len, &idx, err)) < 0)
			return r;
		for (size_t i = 0; i < idx.n_manifests && r == 0; i++)
			if (kap_store_has_blob(s, idx.manifests[i].digest))
				r = mark(s, idx.manifests[i].digest, blobs, layers, depth + 1, err);
		kap_index_clear(&idx);
		return r;
	}
	struct kap_manifest m;
	if ((r = kap_manifest_parse(buf, len, &m, err)) < 0)
		return r;
	r = strset_add(blobs, m.config.digest);
	for (size_t i = 0; i < m.n_layers && r == 0; i++)
		r = strset_add(blobs, m.layers[i].digest);
	if (r < 0) {
		kap_manifest_clear(&m);
		return kap_error(err, ENOMEM, "prune");
	}
	free(buf);
	buf = NULL;
	struct kap_image_config c;
	if ((r = kap_store_read_blob(s, m.config.digest, &buf, &len, err)) == 0 &&
	    (r = kap_image_config_parse(buf, len, &c, err)) == 0) {
		for (size_t i = 0; i < c.n_diff_ids && r == 0; i++)
			if (strset_add(layers, c.diff_ids[i]) < 0)
				r = kap_error(err, ENOMEM, "prune");
		kap_image_config_clear(&c);
	}
	kap_manifest_clear(&m);
	return r;
}

static int64_t tree_size(int dfd, const char *name, int depth)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (!S_ISDIR(st.st_mode))
		return S_ISREG(st.st_mode) ? st.st_size : 0;
	if (depth > 256)
		return 0;
	cleanup_dir DIR *d = kap_fs_opendir_at(dfd, name, O_NOFOLLOW);
	if (!d)
		return 0;
	int64_t total = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			total += tree_size(dirfd(d), de->d_name, depth + 1);
	return total;
}

static bool in_list(char *const *v, size_t n, const char *hex)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] && strlen(v[i]) == KAP_DIGEST_LEN && !strcmp(v[i] + 7, hex))
			return true;
	return false;
}

/*
 * rm -rf, also of a layer shifted into the user's subordinate ranges (idmapped/): files the
 * user does not own on the host, removed by a child that is root of the namespace mapping
 * them (image/subid.h), whose capabilities reach exactly those ids.
 */
static int remove_layer(int dfd, const char *name)
{
	int r = kap_fs_rm_rf(dfd, name);
	if (r == 0 || geteuid() == 0)
		return r;
	pid_t pid = fork();
	if (pid < 0)
		return r;
	if (pid == 0) {
		struct kap_idmap m;
		if (kap_subid_lookup(&m, NULL) < 0 || !m.n_uids ||
		    kap_subid_enter(&m, false, NULL) < 0)
			_exit(1);
		_exit(kap_fs_rm_rf(dfd, name) < 0);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : r;
}

/* Delete what is in dir (blobs/sha256 or layers) and not referenced (and, when `only` is
 * given, listed there). */
static int64_t sweep(struct kap_store *s, const char *dir, struct strset *keep, char *const *only,
		     size_t n_only, bool filter)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(s->dfd, dir, O_NOFOLLOW);
	if (!d)
		return 0;
	int64_t freed = 0;
	struct dirent *de;
	char digest[8 + 256];
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(digest, sizeof(digest), "sha256:%s", de->d_name);
		if (strset_has(keep, digest))
			continue;
		if (filter && !in_list(only, n_only, de->d_name))
			continue;
		int64_t size = tree_size(dirfd(d), de->d_name, 0);
		if (remove_layer(dirfd(d), de->d_name) == 0) {
			kap_debug("store: removed %s/%s", dir, de->d_name);
			freed += size;
		}
	}
	return freed;
}

/* The shifted copies go with their layer: sweep every mapping's directory the same way. */
static int64_t sweep_idmapped(struct kap_store *s, struct strset *keep, char *const *only,
			      size_t n_only, bool filter)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(s->dfd, "idmapped", O_NOFOLLOW);
	if (!d)
		return 0;
	int64_t freed = 0;
	struct dirent *de;
	char dir[64];
	while ((de = readdir(d))) {
		if (!valid_key(de->d_name))
			continue;
		snprintf(dir, sizeof(dir), "idmapped/%s", de->d_name);
		freed += sweep(s, dir, keep, only, n_only, filter);
		unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR); /* when empty */
	}
	return freed;
}

static int64_t gc(struct kap_store *s, bool filter, char *const *digests, size_t n_digests,
		  char *const *diff_ids, size_t n_diff_ids, struct kapsel_error **err)
{
	int64_t r = kap_store_lock(s, true, err);
	if (r < 0)
		return r;
	/* Wait for writers of other handles (content not tagged yet) to finish. */
	if (flock_retry(s->gc_fd, LOCK_EX) < 0) {
		kap_store_unlock(s);
		return kap_error(err, errno, "lock %s/gc.lock", s->path);
	}
	struct strset blobs = {0}, layers = {0};
	struct kap_store_image *list = NULL;
	size_t n = 0, n_users = 0;
	char **users = NULL, **user_digests = NULL;
	if ((r = index_read(s, &list, &n, err)) < 0 ||
	    (r = users_read(s, &users, &user_digests, &n_users, err)) < 0)
		goto out;
	for (size_t i = 0; i < n && r == 0; i++)
		if ((r = mark(s, list[i].manifest_digest, &blobs, &layers, 0, err)) < 0)
			kap_error_wrap(err, "prune: image %s", list[i].name);
	for (size_t i = 0; i < n_users && r == 0; i++)
		if ((r = mark(s, user_digests[i], &blobs, &layers, 0, err)) < 0)
			kap_error_wrap(err, "prune: container %s", users[i]);
	if (r < 0)
		goto out;
	r = sweep(s, "blobs/sha256", &blobs, digests, n_digests, filter);
	r += sweep(s, "layers", &layers, diff_ids, n_diff_ids, filter);
	r += sweep_idmapped(s, &layers, diff_ids, n_diff_ids, filter);
	if (!filter) {
		clean_tmp(s, true);
		clean_atomic_leftovers(s, ".");
		clean_atomic_leftovers(s, "refs");
	}
out:
	kap_store_images_free(list, n);
	kap_strvp(&users);
	kap_strvp(&user_digests);
	strset_clear(&blobs);
	strset_clear(&layers);
	flock(s->gc_fd, s->pinned ? LOCK_SH : LOCK_UN);
	kap_store_unlock(s);
	return r;
}

int64_t kap_store_prune(struct kap_store *s, struct kapsel_error **err)
{
	return gc(s, false, NULL, 0, NULL, 0, err);
}

int64_t kap_store_gc_some(struct kap_store *s, char *const *digests, size_t n_digests,
			  char *const *diff_ids, size_t n_diff_ids, struct kapsel_error **err)
{
	return gc(s, true, digests, n_digests, diff_ids, n_diff_ids, err);
}
