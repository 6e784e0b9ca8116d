/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/syscalls.h"

int kap_fs_read_file(int dirfd, const char *path, size_t limit, char **out, size_t *len,
		     struct kapsel_error **err)
{
	cleanup_close int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open %s", path);
	size_t cap = 4096, n = 0;
	cleanup_free char *buf = malloc(cap + 1);
	if (!buf)
		return kap_error(err, ENOMEM, "read %s", path);
	for (;;) {
		if (n == cap) {
			if (cap >= limit)
				return kap_error_plain(err, EFBIG, "%s: larger than %zu bytes",
						       path, limit);
			cap = cap * 2 > limit ? limit : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				return kap_error(err, ENOMEM, "read %s", path);
			buf = nb;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kap_error(err, errno, "read %s", path);
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*out = steal_ptr(buf);
	if (len)
		*len = n;
	return 0;
}

int kap_fs_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

bool kap_fs_read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t k = read(fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		len -= (size_t)k;
	}
	return true;
}

int kap_fs_write_atomic(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
			bool durable, struct kapsel_error **err)
{
	char tmp[256];
	if (snprintf(tmp, sizeof(tmp), ".%s.tmp.%d", name, getpid()) >= (int)sizeof(tmp))
		return kap_error_plain(err, ENAMETOOLONG, "%s: name too long", name);
	/* The temp name is predictable: never follow or reuse what someone planted there. */
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	cleanup_close int fd = openat(dirfd, tmp, flags, mode);
	if (fd < 0 && errno == EEXIST && unlinkat(dirfd, tmp, 0) == 0)
		fd = openat(dirfd, tmp, flags, mode);
	if (fd < 0)
		return kap_error(err, errno, "create %s", tmp);
	int r = kap_fs_write_all(fd, data, len);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return kap_error(err, -r, "write %s", name);
	}
	return 0;
}

DIR *kap_fs_opendir_at(int dirfd, const char *path, int flags)
{
	int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | flags);
	if (fd < 0)
		return NULL;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return d;
}

int kap_fs_write_pid_file(const char *path, pid_t pid, struct kapsel_error **err)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d", pid);
	cleanup_free char *copy = strdup(path);
	if (!copy)
		return kap_error(err, ENOMEM, "--pid-file");
	char *slash = strrchr(copy, '/');
	const char *name = slash ? slash + 1 : copy;
	cleanup_close int dfd = -EBADF;
	if (slash) {
		*slash = '\0';
		dfd = open(slash == copy ? "/" : copy, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return kap_error(err, errno, "--pid-file: open directory of %s", path);
	}
	if (!*name)
		return kap_error_plain(err, EINVAL, "--pid-file %s: not a file name", path);
	/* A temp file beside it, renamed over it: a planted symlink is replaced, not followed. */
	int r = kap_fs_write_atomic(slash ? dfd : AT_FDCWD, name, buf, (size_t)n, 0644, false, err);
	return r < 0 ? kap_error_wrap(err, "--pid-file") : 0;
}

int kap_fs_write_at(int dirfd, const char *path, const char *data, size_t len,
		    struct kapsel_error **err)
{
	cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kap_error(err, errno, "open %s", path);
	/* Kernel interface files take one write(2); a short write is an error there. */
	ssize_t w = write(fd, data, len);
	if (w < 0)
		return kap_error(err, errno, "write '%.*s' to %s", (int)(len > 64 ? 64 : len), data,
				 path);
	return 0;
}

static const char *skip_slashes(const char *p)
{
	while (*p == '/')
		p++;
	return *p ? p : ".";
}

int kap_fs_open_in_root(int root_fd, const char *path, int flags, mode_t mode,
			struct kapsel_error **err)
{
	int fd = kap_openat2(root_fd, skip_slashes(path), (uint64_t)(flags | O_CLOEXEC), mode,
			     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
	if (fd < 0)
		return kap_error(err, errno, "open %s in root", path);
	return fd;
}

static int mkdir_in_root(int root_fd, const char *path, mode_t mode, bool file, int depth,
			 struct kapsel_error **err)
{
	if (depth > 40)
		return kap_error_plain(err, ELOOP, "create %s in root: too many symlinks", path);
	cleanup_free char *copy = strdup(path);
	cleanup_free char *built = calloc(1, strlen(path) + 2);
	if (!copy || !built)
		return kap_error(err, ENOMEM, "mkdir %s", path);
	char *save = NULL;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		bool last = (save == NULL || *save == '\0');
		if (strcmp(c, ".") == 0)
			continue;
		size_t parent_len = strlen(built);
		strcat(built, "/");
		strcat(built, c);
		const char *rel = skip_slashes(built);
		const uint64_t resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
		int fd = kap_openat2(root_fd, rel, O_PATH | O_CLOEXEC, 0, resolve);
		if (fd >= 0) {
			close(fd);
			continue;
		}
		if (errno != ENOENT)
			return kap_error(err, errno, "open %s in root", built);
		/* Missing: create it in its (confined) parent. A dangling symlink is followed,
		 * confined too, and its target created: what the path means inside the root. */
		built[parent_len] = '\0';
		cleanup_close int parent = kap_openat2(
		    root_fd, skip_slashes(built), O_PATH | O_DIRECTORY | O_CLOEXEC, 0, resolve);
		if (parent < 0)
			return kap_error(err, errno, "open %s in root", *built ? built : "/");
		char target[4096];
		ssize_t n = readlinkat(parent, c, target, sizeof(target) - 1);
		if (n >= 0) {
			target[n] = '\0';
			cleanup_free char *next = NULL;
			if (asprintf(&next, "%s%s%s/%s", target[0] == '/' ? "" : built,
				     target[0] == '/' ? "" : "/", target, last ? "" : save) < 0)
				return kap_error(err, ENOMEM, "mkdir %s", path);
			if (last && !file)
				return mkdir_in_root(root_fd, next, mode, false, depth + 1, err);
			if (last) {
				/* strip the trailing "/" added above */
				next[strlen(next) - 1] = '\0';
				return mkdir_in_root(root_fd, next, mode, true, depth + 1, err);
			}
			return mkdir_in_root(root_fd, next, mode, file, depth + 1, err);
		}
		if (last && file) {
			fd = openat(parent, c, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
			if (fd < 0 && errno != EEXIST)
				return kap_error(err, errno, "create %s/%s in root", built, c);
			if (fd >= 0)
				close(fd);
		} else if (mkdirat(parent, c, mode) < 0 && errno != EEXIST) {
			return kap_error(err, errno, "mkdir %s/%s in root", built, c);
		}
		strcat(built, "/");
		strcat(built, c);
	}
	return kap_fs_open_in_root(root_fd, path, O_PATH, 0, err);
}

int kap_fs_mkdir_in_root(int root_fd, const char *path, mode_t mode, bool file,
			 struct kapsel_error **err)
{
	return mkdir_in_root(root_fd, path, mode, file, 0, err);
}

/*
 * kap_fs_rm_rf walks iteratively in a bounded number of fds.
 *
 * A recursive walk holds one fd per level, so a layer 1,500 directories deep (anyone can make
 * one) outlived `rmi` under `ulimit -n 1024`. Here only the top directory and the deepest
 * RM_HELD - 1 levels keep an open stream; a shallower level is reopened through ".." of its
 * child when the walk climbs back to it. ".." names whatever the child's parent is *now*: had
 * someone renamed a directory of the tree elsewhere meanwhile, ".." would lead out of the tree.
 * So a reopened level must be the directory we came down from (same mount, device and inode)
 * and must still hold the child under the name we took; otherwise the walk starts again from
 * the top, whose fd it never lets go of. Every descent opens one name O_NOFOLLOW|O_DIRECTORY:
 * no symlink is followed, and a directory on another mount (a bind mount of host files) is not
 * entered; only the removal of its mount point fails.
 */
#define RM_HELD	    16
#define RM_RESTARTS 64

struct rm_ident {
	uint64_t mnt; /* mount id (STATX_MNT_ID), or the device where the kernel lacks it */
	uint64_t dev, ino;
};

struct rm_level {
	DIR *d; /* NULL while dropped to stay within RM_HELD streams */
	struct rm_ident id;
	char *name;  /* entry name in the level above; NULL for the top */
	char **skip; /* entries given up on here, so a reopened stream does not retry them */
	size_t n_skip;
};

static int rm_ident(int fd, const char *name, struct rm_ident *id)
{
	struct statx stx;
	int flags = *name ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH;
	if (statx(fd, name, flags, STATX_INO | STATX_MNT_ID, &stx) < 0)
		return -errno;
	id->dev = ((uint64_t)stx.stx_dev_major << 32) | stx.stx_dev_minor;
	id->ino = stx.stx_ino;
	id->mnt = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : id->dev;
	return 0;
}

static bool rm_ident_eq(const struct rm_ident *a, const struct rm_ident *b)
{
	return a->mnt == b->mnt && a->dev == b->dev && a->ino == b->ino;
}

static bool rm_skipped(const struct rm_level *l, const char *name)
{
	for (size_t i = 0; i < l->n_skip; i++)
		if (!strcmp(l->skip[i], name))
			return true;
	return false;
}

/* Note a failure (the caller gets the first) and do not come back to the entry. */
static int rm_give_up(struct rm_level *l, const char *name, int error, int *first)
{
	if (!*first)
		*first = error;
	char **v = realloc(l->skip, (l->n_skip + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	l->skip = v;
	if (!(v[l->n_skip] = strdup(name)))
		return -ENOMEM;
	l->n_skip++;
	return 0;
}

static void rm_level_clear(struct rm_level *l)
{
	if (l->d)
		closedir(l->d);
	free(l->name);
	for (size_t i = 0; i < l->n_skip; i++)
		free(l->skip[i]);
	free(l->skip);
	memset(l, 0, sizeof(*l));
}

struct rm_walk {
	struct rm_level *lv;
	size_t n, cap;
	int first; /* first error */
};

/* Enter directory `name` of the deepest level. 0 (entered or given up on), or -ENOMEM. */
static int rm_descend(struct rm_walk *w, const char *name)
{
	struct rm_level *cur = &w->lv[w->n - 1];
	int fd = openat(dirfd(cur->d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	/* ENOTDIR: unlinkat's EPERM was about a file (immutable, say), and that is the error. */
	if (fd < 0)
		return rm_give_up(cur, name, errno == ENOTDIR ? -EPERM : -errno, &w->first);
	struct rm_level next = {0};
	int r = rm_ident(fd, "", &next.id);
	if (r == 0 && (next.id.mnt != w->lv[0].id.mnt || next.id.dev != w->lv[0].id.dev))
		r = -EXDEV;
	if (r < 0) {
		close(fd);
		return rm_give_up(cur, name, r, &w->first);
	}
	if (w->n == w->cap) {
		struct rm_level *lv = realloc(w->lv, w->cap * 2 * sizeof(*lv));
		if (!lv) {
			close(fd);
			return -ENOMEM;
		}
		w->lv = lv;
		w->cap *= 2;
	}
	if (!(next.name = strdup(name)) || !(next.d = fdopendir(fd))) {
		free(next.name);
		close(fd);
		return -ENOMEM;
	}
	w->lv[w->n++] = next;
	/* Keep the top and the deepest RM_HELD - 1 streams. */
	if (w->n > RM_HELD) {
		struct rm_level *drop = &w->lv[w->n - RM_HELD];
		if (drop->d) {
			closedir(drop->d);
			drop->d = NULL;
		}
	}
	return 0;
}

/* Climb from the deepest level to the one above, reopening that through ".." when its stream
 * was dropped. 0, or -ESTALE when the tree moved under us. */
static int rm_climb(struct rm_walk *w)
{
	struct rm_level *child = &w->lv[w->n - 1], *parent = &w->lv[w->n - 2];
	if (!parent->d) {
		int fd =
		    openat(dirfd(child->d), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct rm_ident pid, cid;
		if (fd < 0)
			return -ESTALE;
		if (rm_ident(fd, "", &pid) < 0 || !rm_ident_eq(&pid, &parent->id) ||
		    rm_ident(fd, child->name, &cid) < 0 || !rm_ident_eq(&cid, &child->id) ||
		    !(parent->d = fdopendir(fd))) {
			close(fd);
			return -ESTALE;
		}
	}
	closedir(child->d);
	child->d = NULL;
	if (unlinkat(dirfd(parent->d), child->name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
		int r = rm_give_up(parent, child->name, -errno, &w->first);
		if (r < 0)
			return r;
	}
	rm_level_clear(child);
	w->n--;
	return 0;
}

/* Remove everything below the directory open as top_fd (the walk owns the fd). */
static int rm_empty(int top_fd)
{
	struct rm_walk w = {.cap = RM_HELD};
	int restarts = 0, r = 0;
	if (!(w.lv = calloc(w.cap, sizeof(*w.lv)))) {
		close(top_fd);
		return -ENOMEM;
	}
	if ((r = rm_ident(top_fd, "", &w.lv[0].id)) < 0 || !(w.lv[0].d = fdopendir(top_fd))) {
		r = r < 0 ? r : -errno;
		close(top_fd);
		free(w.lv);
		return r;
	}
	w.n = 1;
	while (r == 0) {
		struct rm_level *cur = &w.lv[w.n - 1];
		errno = 0;
		struct dirent *de = readdir(cur->d);
		if (!de && errno) {
			/* An unreadable level ends as if exhausted; its rmdir will say why. */
			if (!w.first)
				w.first = -errno;
		}
		if (de) {
			const char *e = de->d_name;
			if (!strcmp(e, ".") || !strcmp(e, "..") || rm_skipped(cur, e))
				continue;
			if (unlinkat(dirfd(cur->d), e, 0) == 0 || errno == ENOENT)
				continue;
			if (errno == EISDIR || errno == EPERM)
				r = rm_descend(&w, e);
			else
				r = rm_give_up(cur, e, -errno, &w.first);
			continue;
		}
		if (w.n == 1)
			break;
		if ((r = rm_climb(&w)) != -ESTALE)
			continue;
		/* Moved under us: drop what we thought we knew and start over from the top. */
		if (++restarts > RM_RESTARTS)
			break;
		while (w.n > 1)
			rm_level_clear(&w.lv[--w.n]);
		rewinddir(w.lv[0].d);
		r = 0;
	}
	if (r < 0 && !w.first)
		w.first = r;
	while (w.n > 0)
		rm_level_clear(&w.lv[--w.n]);
	free(w.lv);
	return w.first;
}

int kap_fs_rm_rf(int dir_fd, const char *name)
{
	if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = rm_empty(fd);
	if (unlinkat(dir_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
		return 0;
	return r < 0 ? r : -errno;
}

const char *kap_fs_fd_path(int fd, char *buf)
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
	return buf;
}
