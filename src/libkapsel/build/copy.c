/* SPDX-License-Identifier: Apache-2.0 */
/*
 * COPY and ADD: files from the build context (or another stage's rootfs) into the stage's
 * overlay. The context is hostile as far as the Containerfile names paths in it: sources are
 * resolved with RESOLVE_BENEATH (a `..` or a symlink leaving the context is an error, never a
 * read of the host), destinations with RESOLVE_IN_ROOT inside the rootfs; entries below a
 * source are created by name in directory fds, without following what the image has there.
 * The digest of what a COPY reads (names, modes, owners, sizes, contents, link targets;
 * .containerignore'd entries left out) is part of its cache key.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build/builder.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/syscalls.h"

/* ---- COPY / ADD ---- */

struct copy_ctx {
	struct builder *b;
	const struct kap_cf_instr *in;
	int rootfd;    /* the stage's merged rootfs (O_PATH) */
	bool from_ctx; /* sources from the context: .containerignore applies */
	bool chown;    /* --chown given (an extracted tar keeps its owners otherwise) */
	uid_t uid;
	gid_t gid;
	int chmod; /* -1: keep */
};

/* .containerignore / .dockerignore (docker's fileutils patterns, without `**`). */
static bool ignored(const struct builder *b, const char *rel)
{
	bool out = false;
	for (size_t i = 0; i < b->n_ignore; i++) {
		const char *p = b->ignore[i];
		bool neg = p[0] == '!';
		if (neg)
			p++;
		size_t pl = strlen(p);
		/* A pattern matching a directory excludes what is under it. */
		bool m =
		    fnmatch(p, rel, FNM_PATHNAME) == 0 || (!strncmp(rel, p, pl) && rel[pl] == '/');
		if (!m) {
			cleanup_free char *dup = strdup(rel);
			for (char *s = dup ? strrchr(dup, '/') : NULL; s && !m;
			     s = strrchr(dup, '/')) {
				*s = '\0';
				m = fnmatch(p, dup, FNM_PATHNAME) == 0;
			}
		}
		if (m)
			out = !neg;
	}
	return out;
}

int kap_build_load_ignore(struct builder *b)
{
	cleanup_free char *buf = NULL;
	size_t len;
	if (kap_fs_read_file(b->ctxfd, ".containerignore", 1 << 20, &buf, &len, NULL) < 0 &&
	    kap_fs_read_file(b->ctxfd, ".dockerignore", 1 << 20, &buf, &len, NULL) < 0)
		return 0;
	char *save = NULL;
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		while (*l == ' ' || *l == '\t')
			l++;
		size_t n = strlen(l);
		while (n && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\r'))
			l[--n] = '\0';
		if (!n || l[0] == '#')
			continue;
		bool neg = l[0] == '!';
		const char *p = l + neg;
		while (*p == '/')
			p++;
		while (!strncmp(p, "./", 2))
			p += 2;
		char *pat;
		if (asprintf(&pat, "%s%s", neg ? "!" : "", p) < 0 ||
		    kap_build_strv_add(&b->ignore, &b->n_ignore, pat) < 0)
			return kap_error(b->err, ENOMEM, ".containerignore");
		n = strlen(pat);
		while (n > 1 && pat[n - 1] == '/')
			pat[--n] = '\0';
	}
	return 0;
}

/* Lexically clean a source path; NULL when it climbs out of its root. */
static char *clean_rel(const char *p)
{
	char *out = calloc(1, strlen(p) + 2);
	if (!out)
		return NULL;
	size_t n = 0;
	while (*p) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		size_t l = (size_t)(e - p);
		if (l == 0 || (l == 1 && p[0] == '.')) {
		} else if (l == 2 && p[0] == '.' && p[1] == '.') {
			if (n == 0) {
				free(out);
				errno = EXDEV;
				return NULL;
			}
			while (n && out[n - 1] != '/')
				n--;
			if (n)
				n--;
		} else {
			if (n)
				out[n++] = '/';
			memcpy(out + n, p, l);
			n += l;
		}
		out[n] = '\0';
		p = e;
	}
	if (n == 0)
		strcpy(out, ".");
	return out;
}

static int copy_data(struct copy_ctx *c, int in, int out, const char *what)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return kap_error(c->b->err, errno, "copy %s", what);
		break;
	}
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kap_error(c->b->err, errno, "read %s", what);
		if (n == 0)
			return 0;
		if (kap_fs_write_all(out, buf, (size_t)n) < 0)
			return kap_error(c->b->err, errno, "write %s", what);
	}
}

static int set_meta(struct copy_ctx *c, int dirfd, const char *name, const struct stat *st)
{
	/* Ownership from --chown (default root), mode from --chmod or the source, mtime kept. */
	int r = fchownat(dirfd, name, c->uid, c->gid, AT_SYMLINK_NOFOLLOW);
	if (r == 0 && !S_ISLNK(st->st_mode))
		r = fchmodat(dirfd, name, c->chmod >= 0 ? (mode_t)c->chmod : st->st_mode & 07777,
			     0);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	if (r == 0)
		r = utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? kap_error(c->b->err, errno, "set owner, mode and mtime of %s", name) : 0;
}

static int copy_tree(struct copy_ctx *c, int srcdir, const char *srcrel, int dstdir, int depth);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Copy srcdir/name (not following a symlink) to dstdir/dname. */
static int copy_entry(struct copy_ctx *c, int srcdir, const char *name, const char *srcrel,
		      int dstdir, const char *dname, int depth)
{
	struct stat st;
	if (fstatat(srcdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return kap_error(c->b->err, errno, "stat %s", srcrel);
	if (c->from_ctx && ignored(c->b, srcrel))
		return 0;
	if (S_ISDIR(st.st_mode)) {
		if (mkdirat(dstdir, dname, 0755) < 0 && errno != EEXIST)
			return kap_error(c->b->err, errno, "create %s", dname);
		cleanup_close int sfd =
		    openat(srcdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		cleanup_close int dfd =
		    openat(dstdir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0 || dfd < 0)
			return kap_error(c->b->err, errno, "open %s", srcrel);
		int r = copy_tree(c, sfd, srcrel, dfd, depth + 1);
		return r < 0 ? r : set_meta(c, dstdir, dname, &st);
	}
	/* Whatever the image has at that name is replaced (a directory is not). */
	if (unlinkat(dstdir, dname, 0) < 0 && errno != ENOENT && errno != EISDIR)
		return kap_error(c->b->err, errno, "replace %s", dname);
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlinkat(srcdir, name, target, sizeof(target) - 1);
		if (n < 0)
			return kap_error(c->b->err, errno, "readlink %s", srcrel);
		target[n] = '\0';
		if (symlinkat(target, dstdir, dname) < 0)
			return kap_error(c->b->err, errno, "symlink %s", dname);
	} else if (S_ISREG(st.st_mode)) {
		cleanup_close int in = openat(srcdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		cleanup_close int out = openat(
		    dstdir, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (in < 0 || out < 0)
			return kap_error(c->b->err, errno, "copy %s", srcrel);
		int r = copy_data(c, in, out, srcrel);
		if (r < 0)
			return r;
	} else if (S_ISFIFO(st.st_mode)) {
		if (mkfifoat(dstdir, dname, 0600) < 0)
			return kap_error(c->b->err, errno, "mkfifo %s", dname);
	} else {
		return 0; /* devices and sockets of a context are not copied */
	}
	return set_meta(c, dstdir, dname, &st);
}

static int copy_tree(struct copy_ctx *c, int srcdir, const char *srcrel, int dstdir, int depth)
{
	if (depth > 256)
		return kap_error_plain(c->b->err, ELOOP, "%s: nested too deeply", srcrel);
	int dup = fcntl(srcdir, F_DUPFD_CLOEXEC, 3);
	cleanup_dir DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
	if (!d) {
		if (dup >= 0)
			close(dup);
		return kap_error(c->b->err, errno, "open %s", srcrel);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_free char *rel = NULL;
		if (asprintf(&rel, "%s%s%s", strcmp(srcrel, ".") ? srcrel : "",
			     strcmp(srcrel, ".") ? "/" : "", de->d_name) < 0)
			return kap_error(c->b->err, ENOMEM, "copy");
		int r = copy_entry(c, srcdir, de->d_name, rel, dstdir, de->d_name, depth);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A resolved source file (a symlink naming it was followed) -> dstdir/dname. */
static int copy_file_fd(struct copy_ctx *c, int sfd, const struct stat *st, const char *rel,
			int dstdir, const char *dname)
{
	if (!S_ISREG(st->st_mode))
		return kap_error_plain(c->b->err, EINVAL, "source %s is not a regular file", rel);
	if (unlinkat(dstdir, dname, 0) < 0 && errno != ENOENT)
		return kap_error(c->b->err, errno, "replace %s", dname);
	cleanup_close int out =
	    openat(dstdir, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return kap_error(c->b->err, errno, "create %s", dname);
	int r = copy_data(c, sfd, out, rel);
	return r < 0 ? r : set_meta(c, dstdir, dname, st);
}

/* ---- the digest of what COPY reads from the context (the cache key's "extra") ---- */

static int hash_fd(struct builder *b, struct kap_sha256 *h, int fd, const char *rel, int depth)
{
	struct stat st;
	char line[256];
	if (fstat(fd, &st) < 0)
		return kap_error(b->err, errno, "stat %s", rel);
	int n = snprintf(line, sizeof(line), "%c %o %u %u %lld\n", S_ISDIR(st.st_mode) ? 'D' : 'F',
			 (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
			 S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size);
	kap_sha256_update(h, rel, strlen(rel) + 1);
	kap_sha256_update(h, line, (size_t)n);
	if (S_ISREG(st.st_mode)) {
		char buf[1 << 16];
		off_t off = 0;
		ssize_t k;
		while ((k = pread(fd, buf, sizeof(buf), off)) > 0) {
			kap_sha256_update(h, buf, (size_t)k);
			off += k;
		}
		return k < 0 ? kap_error(b->err, errno, "read %s", rel) : 0;
	}
	if (!S_ISDIR(st.st_mode))
		return 0;
	if (depth > 256)
		return kap_error_plain(b->err, ELOOP, "%s: nested too deeply", rel);
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	cleanup_dir DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
	if (!d) {
		if (dup >= 0)
			close(dup);
		return kap_error(b->err, errno, "open %s", rel);
	}
	cleanup_strv char **names = NULL;
	size_t nn = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    kap_build_strv_add(&names, &nn, strdup(de->d_name)) < 0)
			return kap_error(b->err, ENOMEM, "hash %s", rel);
	if (nn)
		qsort(names, nn, sizeof(*names), cmp_str);
	for (size_t i = 0; i < nn; i++) {
		cleanup_free char *child = NULL;
		if (asprintf(&child, "%s%s%s", strcmp(rel, ".") ? rel : "",
			     strcmp(rel, ".") ? "/" : "", names[i]) < 0)
			return kap_error(b->err, ENOMEM, "hash");
		if (ignored(b, child))
			continue;
		struct stat cst;
		if (fstatat(fd, names[i], &cst, AT_SYMLINK_NOFOLLOW) < 0)
			return kap_error(b->err, errno, "stat %s", child);
		if (S_ISLNK(cst.st_mode)) {
			char target[4096];
			ssize_t tl = readlinkat(fd, names[i], target, sizeof(target) - 1);
			if (tl < 0)
				return kap_error(b->err, errno, "readlink %s", child);
			kap_sha256_update(h, child, strlen(child) + 1);
			kap_sha256_update(h, "L ", 2);
			kap_sha256_update(h, target, (size_t)tl);
		} else if (S_ISDIR(cst.st_mode) || S_ISREG(cst.st_mode)) {
			cleanup_close int cfd =
			    openat(fd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0)
				return kap_error(b->err, errno, "open %s", child);
			int r = hash_fd(b, h, cfd, child, depth + 1);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* Resolve a context source as COPY will (same checks, same errors): an fd to it. */
static int open_context_source(struct builder *b, const struct kap_cf_instr *in, const char *word,
			       char **rel_out)
{
	cleanup_free char *rel = clean_rel(word);
	if (!rel)
		return errno == EXDEV
			   ? kap_build_ierr(b, in, "source %s is outside the build context", word)
			   : kap_error(b->err, ENOMEM, "COPY");
	int fd = kap_openat2(b->ctxfd, rel, O_RDONLY | O_CLOEXEC, 0,
			     RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
	if (fd < 0 && errno == EXDEV)
		return kap_build_ierr(b, in, "source %s is outside the build context", word);
	if (fd < 0)
		return kap_build_ierr(b, in, "source %s: %s", word, strerror(errno));
	if (strcmp(rel, ".") && ignored(b, rel)) {
		close(fd);
		return kap_build_ierr(b, in, "source %s is excluded by .containerignore", word);
	}
	if (rel_out)
		*rel_out = steal_ptr(rel);
	return fd;
}

static int hash_context(struct builder *b, const struct kap_cf_instr *in, char *const *words,
			size_t n_src, char *out)
{
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		return kap_error(b->err, ENOMEM, "COPY");
	int r = 0;
	for (size_t i = 0; i < n_src && r == 0; i++) {
		cleanup_free char *rel = NULL;
		cleanup_close int fd = open_context_source(b, in, words[i], &rel);
		if (fd < 0)
			r = fd;
		else
			r = hash_fd(b, h, fd, rel, 0);
	}
	kap_sha256_final(h, out);
	return r;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Context sources with wildcards (`COPY *.txt /dst/`): fnmatch(3) over the entries of the
 * directory named before the last '/' (itself without wildcards), sorted, ignored entries
 * left out; no match is an error, as in docker. out: the sources, then the destination.
 */
static int expand_globs(struct builder *b, const struct kap_cf_instr *in, char **words,
			size_t n_src, char ***out, size_t *n_out)
{
	char **v = NULL;
	size_t n = 0;
	int r = 0;
	for (size_t i = 0; i < n_src && r == 0; i++) {
		const char *w = words[i];
		const char *slash = strrchr(w, '/');
		const char *pat = slash ? slash + 1 : w;
		if (!strpbrk(pat, "*?[")) {
			if (strpbrk(w, "*?["))
				r = kap_build_ierr(b, in,
						   "source %s: wildcards only in the last path "
						   "component",
						   w);
			else if (kap_build_strv_add(&v, &n, strdup(w)) < 0)
				r = kap_error(b->err, ENOMEM, "COPY");
			continue;
		}
		cleanup_free char *dir = slash ? strndup(w, (size_t)(slash - w)) : strdup(".");
		if (!dir) {
			r = kap_error(b->err, ENOMEM, "COPY");
			break;
		}
		if (strpbrk(dir, "*?[")) {
			r = kap_build_ierr(
			    b, in, "source %s: wildcards only in the last path component", w);
			break;
		}
		cleanup_free char *rel = NULL;
		int fd = open_context_source(b, in, *dir ? dir : "/", &rel);
		if (fd < 0) {
			r = fd;
			break;
		}
		DIR *d = fdopendir(fd);
		if (!d) {
			close(fd);
			r = kap_error(b->err, errno, "open %s", dir);
			break;
		}
		size_t first = n;
		struct dirent *de;
		while ((de = readdir(d)) && r == 0) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
			    fnmatch(pat, de->d_name, FNM_PERIOD) != 0)
				continue;
			char *m;
			if (asprintf(&m, "%s%s%s", slash ? dir : "", slash ? "/" : "", de->d_name) <
			    0) {
				r = kap_error(b->err, ENOMEM, "COPY");
				break;
			}
			cleanup_free char *mrel = clean_rel(m);
			if (mrel && ignored(b, mrel)) {
				free(m);
				continue;
			}
			if (kap_build_strv_add(&v, &n, m) < 0)
				r = kap_error(b->err, ENOMEM, "COPY");
		}
		closedir(d);
		if (r == 0 && n == first)
			r = kap_build_ierr(b, in, "source %s: no file in the context matches", w);
		if (r == 0)
			qsort(v + first, n - first, sizeof(*v), cmp_strp);
	}
	if (r == 0 && kap_build_strv_add(&v, &n, strdup(words[n_src])) < 0)
		r = kap_error(b->err, ENOMEM, "COPY");
	if (r < 0) {
		kap_strvp(&v);
		return r;
	}
	*out = v;
	*n_out = n;
	return 0;
}

static bool is_url(const char *s)
{
	return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8) || !strncmp(s, "git@", 4);
}

/* A local tar ADD unpacks: by content (ustar magic) or, compressed, by name. */
static bool looks_like_tar(int fd, const char *name, enum kap_compression *comp)
{
	unsigned char buf[512];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	if (n < 4)
		return false;
	*comp = kap_compression_detect(buf, (size_t)n);
	if (*comp != KAP_COMP_NONE)
		return strstr(name, ".tar") || strstr(name, ".tgz");
	return n == 512 && !memcmp(buf + 257, "ustar", 5);
}

/*
 * ADD --chown of a local tar: every entry the archive wrote, read again from the tar, gets
 * the owner (buildah does the same; the tar's own owners stay without --chown). Each path
 * resolves beneath the extraction directory without following a symlink the tar made, so an
 * entry cannot point the chown outside it.
 */
static int chown_extracted(struct copy_ctx *c, int sfd, enum kap_compression comp, int ddir,
			   const char *src)
{
	if (lseek(sfd, 0, SEEK_SET) < 0)
		return kap_error(c->b->err, errno, "rewind %s", src);
	struct kap_tar *t;
	int r = kap_tar_open(sfd, comp, &t, c->b->err);
	if (r < 0)
		return r;
	const char *path;
	char type;
	int64_t size;
	while ((r = kap_tar_next(t, &path, &type, &size, c->b->err)) > 0) {
		const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		if (!*path || !strcmp(path, ".") || !strncmp(base, ".wh.", 4))
			continue;
		int fd = kap_openat2(ddir, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0,
				     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
		if (fd < 0 && errno == ENOENT)
			continue; /* a later entry of the tar replaced or removed it */
		if (fd < 0) {
			r = kap_error(c->b->err, errno, "%s: %s", src, path);
			break;
		}
		r = fchownat(fd, "", c->uid, c->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
		close(fd);
		if (r < 0) {
			r = kap_error(c->b->err, errno, "chown %s: %s", src, path);
			break;
		}
	}
	kap_tar_close(t);
	return r < 0 ? r : 0;
}

static int add_tar(struct copy_ctx *c, int sfd, enum kap_compression comp, int ddir,
		   const char *src)
{
	struct kap_unpack_opts uo = {0};
	int r = kap_unpack_layer(sfd, comp, ddir, &uo, NULL, c->b->err);
	if (r < 0 || !c->chown)
		return r;
	return chown_extracted(c, sfd, comp, ddir, src);
}

int kap_build_copy(struct builder *b, const struct kap_cf_instr *in, struct stage *st)
{
	bool add = in->kind == KAP_CF_ADD;
	const char *from = kap_cf_flag(in, "from");
	int r;
	cleanup_strv char **words = calloc(in->n_args + 1, sizeof(char *));
	if (!words)
		return kap_error(b->err, ENOMEM, "COPY");
	for (size_t i = 0; i < in->n_args; i++)
		if ((r = kap_build_expand(b, st, in, in->args[i], &words[i])) < 0)
			return r;
	size_t n_src = in->n_args - 1;
	for (size_t i = 0; i < n_src; i++)
		if (is_url(words[i]))
			return kap_build_ierr(
			    b, in, "remote source %s: not supported (builds have no network)",
			    words[i]);
	bool several = n_src > 1;
	if (!from) {
		char **globbed;
		size_t n;
		if ((r = expand_globs(b, in, words, n_src, &globbed, &n)) < 0)
			return r;
		several = several || n - 1 > 1;
		kap_strvp(&words);
		words = globbed;
		n_src = n - 1;
	}
	const char *dest = words[n_src];

	/* The source root: the context, or another stage's (or image's) rootfs. Its identity
	 * (the files' digest, or that stage's chain) goes into the step's cache key. */
	__attribute__((cleanup(kap_build_stage_clear))) struct stage tmp_stage = {0};
	struct stage *src = NULL;
	char extra[KAP_DIGEST_LEN + 1];
	if (from) {
		cleanup_free char *f = NULL;
		if ((r = kap_build_expand(b, st, in, from, &f)) < 0)
			return r;
		src = kap_build_find_stage(b, f);
		if (src == st)
			return kap_build_ierr(b, in, "--from=%s names the stage being built", f);
		if (!src) {
			if (strchr(f, '/') == NULL && strchr(f, ':') == NULL &&
			    kap_store_lookup(b->s, f, NULL, (char[KAP_DIGEST_LEN + 1]){0}, NULL) <
				0)
				return kap_build_ierr(b, in, "--from=%s: no such stage or image",
						      f);
			if ((r = kap_build_load_image(b, f, &tmp_stage)) < 0)
				return kap_build_iwrap(b, in, r);
			src = &tmp_stage;
		}
		memcpy(extra, src->chain, sizeof(extra));
	} else if ((r = hash_context(b, in, words, n_src, extra)) < 0) {
		return r;
	}
	if ((r = kap_build_chain_advance(b, st, in, extra)) < 0)
		return r;
	if ((r = kap_build_from_cache(b, st, in->text)) != 0)
		return r < 0 ? r : 0;
	cleanup_close int fromfd = -EBADF;
	if (src) {
		fromfd = kap_build_mount(b, src, "from-", &b->from_mounted);
		if (fromfd < 0)
			return fromfd;
	}

	cleanup_close int rootfd = kap_build_mount(b, st, "", &b->mounted);
	if (rootfd < 0)
		return rootfd;
	struct copy_ctx c = {.b = b, .in = in, .rootfd = rootfd, .from_ctx = !from, .chmod = -1};
	const char *chmod = kap_cf_flag(in, "chmod");
	if (chmod)
		c.chmod = (int)strtol(chmod, NULL, 8);
	const char *chown = kap_cf_flag(in, "chown");
	if (chown) {
		cleanup_free char *spec = NULL;
		if ((r = kap_build_expand(b, st, in, chown, &spec)) < 0)
			return r;
		struct kap_exec_user u = {0};
		if ((r = kap_bundle_resolve_user(rootfd, spec, &u, b->err)) < 0)
			return kap_build_iwrap(b, in, r);
		c.uid = u.uid;
		c.gid = u.gid;
		c.chown = true;
		kap_exec_user_clear(&u);
	}

	/* Destination: relative to WORKDIR; a directory when it ends in '/' or takes several
	 * sources (reference "COPY"). */
	const char *wd = kap_json_string(kap_json_get(kap_build_cfg_config(st), "WorkingDir"));
	cleanup_free char *dpath = NULL;
	if (asprintf(&dpath, "%s%s%s", dest[0] == '/' ? "" : (wd && *wd ? wd : "/"),
		     dest[0] == '/' ? "" : "/", dest) < 0)
		return kap_error(b->err, ENOMEM, "COPY");
	size_t dl = strlen(dest);
	bool dest_dir = (dl && dest[dl - 1] == '/') || several || !strcmp(dest, ".");
	if (!dest_dir) {
		int probe = kap_fs_open_in_root(rootfd, dpath, O_PATH | O_DIRECTORY, 0, NULL);
		if (probe >= 0) {
			dest_dir = true;
			close(probe);
		}
	}

	for (size_t i = 0; i < n_src; i++) {
		/* Sources resolve beneath the context (no symlink out of it); in a stage's
		 * rootfs, inside it. */
		cleanup_free char *rel = NULL;
		cleanup_close int sfd = -EBADF;
		if (from) {
			if (!(rel = clean_rel(words[i])))
				return kap_error(b->err, ENOMEM, "COPY");
			sfd = kap_openat2(fromfd, rel, O_RDONLY | O_CLOEXEC, 0,
					  RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
			if (sfd < 0)
				return kap_build_ierr(b, in, "source %s: %s", words[i],
						      strerror(errno));
		} else if ((sfd = open_context_source(b, in, words[i], &rel)) < 0) {
			return sfd;
		}
		struct stat sst;
		if (fstat(sfd, &sst) < 0)
			return kap_error(b->err, errno, "stat %s", words[i]);

		const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
		if (S_ISDIR(sst.st_mode) || dest_dir) {
			cleanup_close int dfd =
			    kap_fs_mkdir_in_root(rootfd, dpath, 0755, false, b->err);
			if (dfd < 0)
				return kap_build_iwrap(b, in, dfd);
			cleanup_close int ddir =
			    openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (ddir < 0)
				return kap_error(b->err, errno, "open %s", dpath);
			enum kap_compression comp;
			if (S_ISDIR(sst.st_mode)) {
				r = copy_tree(&c, sfd, rel, ddir, 0);
			} else if (add && looks_like_tar(sfd, base, &comp)) {
				r = add_tar(&c, sfd, comp, ddir, words[i]);
			} else {
				r = copy_file_fd(&c, sfd, &sst, rel, ddir, base);
			}
		} else {
			cleanup_free char *dparent = strdup(dpath);
			char *sl = dparent ? strrchr(dparent, '/') : NULL;
			if (!dparent || !sl)
				return kap_error(b->err, ENOMEM, "COPY");
			*sl = '\0';
			cleanup_close int dfd = kap_fs_mkdir_in_root(
			    rootfd, *dparent ? dparent : "/", 0755, false, b->err);
			if (dfd < 0)
				return kap_build_iwrap(b, in, dfd);
			cleanup_close int ddir =
			    openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (ddir < 0)
				return kap_error(b->err, errno, "open %s", dparent);
			enum kap_compression comp;
			if (add && looks_like_tar(sfd, base, &comp)) {
				r = add_tar(&c, sfd, comp, ddir, words[i]);
			} else {
				r = copy_file_fd(&c, sfd, &sst, rel, ddir, sl + 1);
			}
		}
		if (r < 0)
			return kap_build_iwrap(b, in, r);
	}
	if ((r = kap_build_umount(b, "", &b->mounted)) < 0 ||
	    (r = kap_build_umount(b, "from-", &b->from_mounted)) < 0)
		return r;
	return kap_build_commit_layer(b, st, in->text);
}
