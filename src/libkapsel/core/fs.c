/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
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

int kap_fs_rm_rf(int dir_fd, const char *name)
{
	if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	cleanup_dir DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		kap_fs_rm_rf(dirfd(d), de->d_name);
	}
	if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

const char *kap_fs_fd_path(int fd, char *buf)
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
	return buf;
}
