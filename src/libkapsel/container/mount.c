/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One entry of config.json "mounts" (runtime-spec config.md#mounts). The destination is created
 * and opened inside the rootfs with RESOLVE_IN_ROOT, and the mount goes onto that fd through
 * /proc/self/fd/N, so a symlink planted in the image can never redirect a mount to the host.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"

#define CGROUP2_SUPER_MAGIC 0x63677270

static int do_mount(const char *src, int fd, const char *type, unsigned long flags,
		    const char *data, const char *dest, struct kapsel_error **err)
{
	char p[32];
	if (mount(src, kap_fs_fd_path(fd, p), type, flags, data) < 0)
		return kap_error(err, errno, "mount %s%s%s on %s", src ? src : "",
				 type ? " type " : "", type ? type : "", dest);
	return 0;
}

/* Flags that a bind remount must repeat, else the kernel refuses (locked in a user ns). */
static unsigned long current_mount_flags(int fd)
{
	struct statvfs sv;
	unsigned long f = 0;
	if (fstatvfs(fd, &sv) < 0)
		return 0;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_RDONLY)
		f |= MS_RDONLY;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

static int remount_bind(int fd, unsigned long flags, unsigned long clear, const char *dest,
			struct kapsel_error **err)
{
	unsigned long cur = current_mount_flags(fd);
	unsigned long want = ((cur & ~clear) | flags) &
			     (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME |
			      MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME | MS_NOSYMFOLLOW);
	return do_mount(NULL, fd, NULL, MS_BIND | MS_REMOUNT | want, NULL, dest, err);
}

/* Host-side cgroup dirs of this process: bind each hierarchy's container cgroup. */
static int mount_cgroup_v1(struct kap_init_ctx *ctx, int rootfd, const struct kap_mount *m,
			   int destfd, struct kapsel_error **err)
{
	unsigned long flags = m->flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME);
	if (do_mount("tmpfs", destfd, "tmpfs", flags, "mode=755", m->destination, err) < 0)
		return -1;
	cleanup_fclose FILE *mi = fopen("/proc/self/mountinfo", "re");
	if (!mi)
		return kap_error(err, errno, "open /proc/self/mountinfo");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, mi) > 0) {
		/* id parent maj:min root mountpoint opts ... - fstype source superopts */
		char mnt[1024], fstype[64], super[512];
		char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %1023s", mnt) != 1 ||
		    sscanf(dash + 3, "%63s %*s %511s", fstype, super) != 2)
			continue;
		bool v2 = !strcmp(fstype, "cgroup2");
		if ((!v2 && strcmp(fstype, "cgroup")) || strncmp(mnt, "/sys/fs/cgroup/", 15))
			continue;
		const char *name = mnt + 15;
		if (!*name || strchr(name, '/'))
			continue;
		/* Find this hierarchy's line in /proc/self/cgroup: "N:ctrls:/path". */
		const char *path = NULL;
		size_t plen = 0;
		for (const char *l = ctx->cgroup_self; *l;) {
			const char *nl = strchrnul(l, '\n');
			const char *c1 = memchr(l, ':', (size_t)(nl - l));
			const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(nl - c1 - 1)) : NULL;
			if (c2) {
				size_t clen = (size_t)(c2 - c1 - 1);
				bool match = false;
				if (v2)
					match = clen == 0;
				else {
					/* every controller of the line appears in superopts */
					char ctrls[256];
					snprintf(ctrls, sizeof(ctrls), "%.*s", (int)clen, c1 + 1);
					match = clen > 0;
					char *save = NULL;
					for (char *c = strtok_r(ctrls, ",", &save); c && match;
					     c = strtok_r(NULL, ",", &save))
						match = strstr(super, c) != NULL;
				}
				if (match) {
					path = c2 + 1;
					plen = (size_t)(nl - path);
					break;
				}
			}
			l = *nl ? nl + 1 : nl;
		}
		if (!path)
			continue;
		char src[2048], dst[1100];
		snprintf(src, sizeof(src), "%s%.*s", mnt, (int)plen, path);
		snprintf(dst, sizeof(dst), "%s/%s", m->destination, name);
		cleanup_close int fd = kap_fs_mkdir_in_root(rootfd, dst, 0755, false, err);
		if (fd < 0)
			return fd;
		if (do_mount(src, fd, NULL, MS_BIND | MS_REC, NULL, dst, err) < 0)
			return -1;
		cleanup_close int nfd = kap_fs_open_in_root(rootfd, dst, O_PATH, 0, err);
		if (nfd < 0 || remount_bind(nfd, m->flags, m->clear_flags, dst, err) < 0)
			return -1;
	}
	/* The tmpfs itself follows the requested flags (ro for podman's default). */
	if (m->flags & MS_RDONLY) {
		cleanup_close int nfd = kap_fs_open_in_root(rootfd, m->destination, O_PATH, 0, err);
		if (nfd < 0)
			return nfd;
		return do_mount(NULL, nfd, NULL, MS_REMOUNT | flags | MS_RDONLY, "mode=755",
				m->destination, err);
	}
	return 0;
}

static int mount_cgroup(struct kap_init_ctx *ctx, int rootfd, const struct kap_mount *m, int destfd,
			struct kapsel_error **err)
{
	struct statfs sf;
	if (statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
		unsigned long flags =
		    m->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME);
		if (do_mount("cgroup2", destfd, "cgroup2", flags, NULL, m->destination, NULL) == 0)
			return 0;
		/* No cgroup ns of our own (or no permission): bind the container's cgroup. */
		return mount_cgroup_v1(ctx, rootfd, m, destfd, err);
	}
	return mount_cgroup_v1(ctx, rootfd, m, destfd, err);
}

int kap_mount_one(struct kap_init_ctx *ctx, int rootfd, const struct kap_mount *m,
		  struct kapsel_error **err)
{
	const char *type = m->type && *m->type ? m->type : NULL;
	bool bind = m->bind || (type && !strcmp(type, "bind"));
	cleanup_free char *src = NULL;
	bool is_file = false;

	if (bind) {
		if (!m->source)
			return kap_error_plain(err, EINVAL, "mounts %s: bind mount without source",
					       m->destination);
		/* Relative sources are relative to the bundle (runc chdirs there). */
		if (m->source[0] != '/') {
			if (asprintf(&src, "%s/%s", ctx->bundle, m->source) < 0)
				return kap_error(err, ENOMEM, "mount");
		} else if (!(src = strdup(m->source)))
			return kap_error(err, ENOMEM, "mount");
		struct stat st;
		if (stat(src, &st) < 0)
			return kap_error(err, errno, "mounts %s: source %s", m->destination, src);
		is_file = !S_ISDIR(st.st_mode);
	}
	cleanup_close int fd = kap_fs_mkdir_in_root(rootfd, m->destination, 0755, is_file, err);
	if (fd < 0)
		return kap_error_wrap(err, "mounts %s", m->destination);

	if (bind) {
		if (do_mount(src, fd, NULL, MS_BIND | (m->recursive ? MS_REC : 0), NULL,
			     m->destination, err) < 0)
			return -1;
	} else if (type && !strcmp(type, "cgroup")) {
		if (mount_cgroup(ctx, rootfd, m, fd, err) < 0)
			return -1;
	} else {
		unsigned long flags = m->flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
		int r = do_mount(m->source ? m->source : type, fd, type, flags, m->data,
				 m->destination, err);
		if (r < 0 && type && !strcmp(type, "sysfs") && !ctx->new_ns[KAP_NS_NET]) {
			/* sysfs can only be mounted by the owner of the net ns: bind the host's,
			 * read-only, as runc does without a network namespace. */
			kapsel_error_free(*err);
			*err = NULL;
			if (do_mount("/sys", fd, NULL, MS_BIND | MS_REC, NULL, m->destination,
				     err) < 0)
				return -1;
			cleanup_close int nfd =
			    kap_fs_open_in_root(rootfd, m->destination, O_PATH, 0, err);
			if (nfd < 0 ||
			    remount_bind(nfd, flags | MS_RDONLY, 0, m->destination, err) < 0)
				return -1;
		} else if (r < 0) {
			return -1;
		}
	}
	if (!bind && !m->propagation)
		return 0;
	/* Reopen: the fd above points below the new mount; these apply to the mount itself. */
	cleanup_close int nfd = kap_fs_open_in_root(rootfd, m->destination, O_PATH, 0, err);
	if (nfd < 0)
		return nfd;
	if (bind && (m->flags & ~(MS_BIND | MS_REC))) {
		if (remount_bind(nfd, m->flags & ~(MS_BIND | MS_REC), m->clear_flags,
				 m->destination, err) < 0)
			return -1;
	}
	if (m->propagation &&
	    do_mount(NULL, nfd, NULL, m->propagation, NULL, m->destination, err) < 0)
		return -1;
	return 0;
}
