/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A container's root filesystem: overlayfs with the image's unpacked layers as lower
 * directories and a per-container upper/work pair (Documentation/filesystems/overlayfs.rst).
 *
 * mount(2) passes options in one page, so an image with many layers under a long store path
 * does not fit in "lowerdir=a:b:c". Linux 6.8 added "lowerdir+" to the new mount API: one
 * fsconfig() per layer, no length limit, no ':' escaping. On older kernels we fall back to
 * mount(2), with the layers named relative to their common parent directory (after fchdir
 * there) when the absolute form is too long, as containers/storage does.
 *
 * Rootless (mounted from a user namespace, Linux 5.11+), overlay keeps whiteouts' and opaque
 * directories' metadata in user.overlay.* instead of trusted.overlay.*, which only the initial
 * namespace's CAP_SYS_ADMIN may write: the "userxattr" option, matching how the store unpacks
 * layers for a non-root user.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "image/image.h"

/* Overlay's last words about a failed fsconfig (the fs context log), for the error message. */
static const char *fs_log(int fsfd, char *buf, size_t len)
{
	ssize_t n = read(fsfd, buf, len - 1);
	if (n <= 0)
		return "";
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

/* 0 on success; -EINVAL/-ENOSYS when "lowerdir+" is unknown to this kernel (fall back). */
static int mount_new_api(char *const *lowers, size_t n, const char *upper, const char *work,
			 const char *merged, bool userxattr, struct kapsel_error **err)
{
	char log[512];
	cleanup_close int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return -errno;
	/*
	 * Before 6.5 overlay had no parameter parser of its own: the VFS's legacy one accepts
	 * any key (it only appends "key=value" to a mount(2) data string), so "lowerdir+" would
	 * pass here and the mount fail at create (ENODATA on Debian 12's 6.1). A key no kernel
	 * knows tells the two apart.
	 */
	if (fsconfig(fsfd, FSCONFIG_SET_FLAG, "kapsel-probe", NULL, 0) == 0)
		return -EINVAL;
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", lowers[0], 0) < 0)
		return -errno; /* before 6.8: unknown parameter */
	for (size_t i = 1; i < n; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
			return kap_error(err, errno, "overlay lowerdir %s %s", lowers[i],
					 fs_log(fsfd, log, sizeof(log)));
	if (userxattr && fsconfig(fsfd, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
		return kap_error(err, errno, "overlay for %s: userxattr %s", merged,
				 fs_log(fsfd, log, sizeof(log)));
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)
		return kap_error(err, errno, "overlay upperdir %s %s", upper,
				 fs_log(fsfd, log, sizeof(log)));
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return kap_error(err, errno, "create overlay for %s %s", merged,
				 fs_log(fsfd, log, sizeof(log)));
	cleanup_close int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
	if (mfd < 0)
		return kap_error(err, errno, "fsmount overlay for %s", merged);
	if (move_mount(mfd, "", AT_FDCWD, merged, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return kap_error(err, errno, "mount overlay on %s", merged);
	return 0;
}

static int mount_legacy(char *const *lowers, size_t n, const char *upper, const char *work,
			const char *merged, bool userxattr, struct kapsel_error **err)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t lim = page > 0 ? (size_t)page - 1 : 4095;
	/* ':' separates layers and ',' options in the data string; our store never makes them. */
	for (size_t i = 0; i < n; i++)
		if (strpbrk(lowers[i], ":,"))
			return kap_error_plain(
			    err, EINVAL, "overlay: layer path %s contains ':' or ','", lowers[i]);
	if (strpbrk(upper, ":,") || strpbrk(work, ":,"))
		return kap_error_plain(err, EINVAL, "overlay: %s contains ':' or ','", upper);

	/* Relative names work when every layer shares one parent directory. */
	const char *slash = strrchr(lowers[0], '/');
	size_t plen = slash ? (size_t)(slash - lowers[0]) : 0;
	bool relative = plen > 0;
	for (size_t i = 0; relative && i < n; i++)
		relative = !strncmp(lowers[i], lowers[0], plen) && lowers[i][plen] == '/' &&
			   !strchr(lowers[i] + plen + 1, '/');

	for (int pass = 0; pass < 2; pass++) {
		bool rel = pass == 1;
		if (rel && !relative)
			break;
		size_t len =
		    strlen("lowerdir=,upperdir=,workdir=,userxattr") + strlen(upper) + strlen(work);
		for (size_t i = 0; i < n; i++)
			len += strlen(rel ? lowers[i] + plen + 1 : lowers[i]) + 1;
		if (len > lim)
			continue;
		cleanup_free char *data = malloc(len + 1);
		if (!data)
			return kap_error(err, ENOMEM, "overlay options");
		char *p = stpcpy(data, "lowerdir=");
		for (size_t i = 0; i < n; i++) {
			if (i)
				*p++ = ':';
			p = stpcpy(p, rel ? lowers[i] + plen + 1 : lowers[i]);
		}
		snprintf(p, len + 1 - (size_t)(p - data), ",upperdir=%s,workdir=%s%s", upper, work,
			 userxattr ? ",userxattr" : "");
		if (!rel) {
			if (mount("overlay", merged, "overlay", MS_NODEV, data) < 0)
				return kap_error(err, errno, "mount overlay on %s", merged);
			return 0;
		}
		/* The kernel resolves relative lowerdirs against our cwd: go there and back. */
		cleanup_free char *parent = strndup(lowers[0], plen);
		cleanup_close int here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (!parent || here < 0)
			return kap_error(err, errno ? errno : ENOMEM, "overlay: current directory");
		if (chdir(parent) < 0)
			return kap_error(err, errno, "overlay: chdir %s", parent);
		int r = mount("overlay", merged, "overlay", MS_NODEV, data) < 0 ? -errno : 0;
		if (fchdir(here) < 0)
			kap_warn("overlay: return to the working directory: %s", strerror(errno));
		if (r < 0)
			return kap_error(err, -r, "mount overlay on %s", merged);
		return 0;
	}
	return kap_error_plain(err, E2BIG,
			       "overlay: %zu layers do not fit in mount options on this kernel "
			       "(Linux 6.8 or later has no such limit)",
			       n);
}

int kap_overlay_mount(char *const *lowers, size_t n, const char *upper, const char *work,
		      const char *merged, bool userxattr, struct kapsel_error **err)
{
	if (n == 0)
		return kap_error_plain(err, EINVAL, "overlay on %s: no lower directory", merged);
	int r = mount_new_api(lowers, n, upper, work, merged, userxattr, err);
	if (r == 0 || (r != -EINVAL && r != -ENOSYS && r != -EPERM && r != -ENODEV))
		return r;
	if (err && *err)
		return r; /* a real failure after "lowerdir+" was accepted */
	kap_debug("overlay: no \"lowerdir+\" (%s), using mount(2) options", strerror(-r));
	return mount_legacy(lowers, n, upper, work, merged, userxattr, err);
}

static bool is_mount_point(const char *path)
{
	struct stat a, b;
	cleanup_free char *parent = NULL;
	if (lstat(path, &a) < 0 || asprintf(&parent, "%s/..", path) < 0 || stat(parent, &b) < 0)
		return false;
	/* Any mount on `merged` (overlay has its own st_dev) differs from its parent dir. */
	return a.st_dev != b.st_dev;
}

int kap_overlay_umount(const char *merged, struct kapsel_error **err)
{
	if (!is_mount_point(merged))
		return 0;
	if (umount2(merged, UMOUNT_NOFOLLOW) == 0)
		return 0;
	/* Busy (a process still has a file open in it): detach now, freed when it closes. */
	if (errno == EBUSY && umount2(merged, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
		return 0;
	if (errno == EINVAL || errno == ENOENT)
		return 0;
	return kap_error(err, errno, "unmount %s", merged);
}
