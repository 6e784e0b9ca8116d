/* SPDX-License-Identifier: Apache-2.0 */
/* File-system helpers: bounded reads, atomic writes, and path resolution confined to a root. */
#pragma once
#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <kapsel/error.h>

/* Read at most `limit` bytes of dirfd/path (NUL-terminated); larger files are an error. */
int kap_fs_read_file(int dirfd, const char *path, size_t limit, char **out, size_t *len,
		     struct kapsel_error **err);
/* write(2) until done, retrying EINTR; -errno on failure. */
int kap_fs_write_all(int fd, const void *data, size_t len);
/* read(2) until len bytes, retrying EINTR; false at end of file or on an error. */
bool kap_fs_read_full(int fd, void *buf, size_t len);
/* Write tmp file + rename: readers never see a partial file. fsync when durable. */
int kap_fs_write_atomic(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
			bool durable, struct kapsel_error **err);
/* Write a whole buffer to dirfd/path (O_WRONLY|O_TRUNC, no create). For proc/sys/cgroup files. */
/* --pid-file: write pid atomically (temp file + rename), never following symlinks. */
int kap_fs_write_pid_file(const char *path, pid_t pid, struct kapsel_error **err);
int kap_fs_write_at(int dirfd, const char *path, const char *data, size_t len,
		    struct kapsel_error **err);
/*
 * Open `path` (relative; a leading '/' is ignored) inside root_fd with RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS: symlinks resolve as if root_fd were '/', so the result never escapes.
 */
int kap_fs_open_in_root(int root_fd, const char *path, int flags, mode_t mode,
			struct kapsel_error **err);
/*
 * Create every missing directory of `path` inside root_fd (confined as above) and return an
 * O_PATH fd to it. When `file` is true the last component is created as an empty file instead.
 */
int kap_fs_mkdir_in_root(int root_fd, const char *path, mode_t mode, bool file,
			 struct kapsel_error **err);
/* Remove dirfd/name recursively without following symlinks or crossing mounts. */
int kap_fs_rm_rf(int dirfd, const char *name);
/* opendir of path relative to dirfd (flags added to O_RDONLY | O_DIRECTORY | O_CLOEXEC):
 * NULL with errno set on failure, the fd never leaked. */
DIR *kap_fs_opendir_at(int dirfd, const char *path, int flags);
/* "/proc/self/fd/N" for handing O_PATH fds to mount(2). buf must hold 32 bytes. */
const char *kap_fs_fd_path(int fd, char *buf);
