/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container's filesystem view: rootfs bind, config mounts, a default /dev, pivot_root and
 * the masked / read-only paths (runtime-spec config.md#root, config-linux.md#default-devices,
 * #masked-paths, #readonly-paths).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"

/* runtime-spec config-linux.md#default-devices */
static const struct {
	const char *path;
	unsigned major, minor;
} default_devices[] = {
    {"/dev/null", 1, 3},   {"/dev/zero", 1, 5},	   {"/dev/full", 1, 7},
    {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
};

static bool has_mount_at(const struct kap_spec *spec, const char *dest)
{
	for (size_t i = 0; i < spec->n_mounts; i++) {
		const char *d = spec->mounts[i].destination;
		while (d[0] == '/' && d[1] == '/')
			d++;
		if (!strcmp(d, dest))
			return true;
	}
	return false;
}

/*
 * Create one device node inside rootfd. In a user namespace mknod is not allowed: bind the host
 * node onto an empty file instead (what runc does). That is also true when the runtime itself
 * already runs in one (rootless `kapsel run`), whatever the config says.
 */
static int make_device(int rootfd, int devdir, bool userns, const char *path, char type,
		       unsigned major, unsigned minor, mode_t mode, uid_t uid, gid_t gid,
		       struct kapsel_error **err)
{
	const char *rel = path;
	while (*rel == '/')
		rel++;
	cleanup_free char *dir = strdup(rel);
	if (!dir)
		return kap_error(err, ENOMEM, "device %s", path);
	char *slash = strrchr(dir, '/');
	const char *base = rel;
	if (slash) {
		*slash = '\0';
		base = slash + 1;
	} else {
		strcpy(dir, ".");
	}
	char p[32];
	cleanup_close int own = -EBADF;
	int realdir = devdir;
	/* Nodes directly in /dev (all the default ones) use the /dev fd opened once. */
	if (devdir < 0 || strcmp(dir, "dev") != 0) {
		cleanup_close int dfd = kap_fs_mkdir_in_root(rootfd, dir, 0755, false, err);
		if (dfd < 0)
			return kap_error_wrap(err, "linux.devices %s", path);
		/* O_PATH fds don't allow mknodat: reopen as a real directory fd. */
		own = open(kap_fs_fd_path(dfd, p), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
		if (own < 0)
			return kap_error(err, errno, "open parent of %s", path);
		realdir = own;
	}
	if (type == 'p') {
		if (mkfifoat(realdir, base, mode & 07777) < 0 && errno != EEXIST)
			return kap_error(err, errno, "mkfifo %s", path);
		return 0;
	}
	if (userns) {
		int f = openat(realdir, base, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0000);
		if (f < 0 && errno != EEXIST && errno != EISDIR)
			return kap_error(err, errno, "create %s", path);
		if (f >= 0)
			close(f);
		cleanup_close int tfd = openat(realdir, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (tfd < 0)
			return kap_error(err, errno, "open %s", path);
		/* The host's node: /dev/char/M:m where udev made it, else the same path. */
		char host[4096];
		snprintf(host, sizeof(host), "/dev/%s/%u:%u", type == 'b' ? "block" : "char", major,
			 minor);
		if (access(host, F_OK) < 0)
			snprintf(host, sizeof(host), "%s", path);
		if (mount(host, kap_fs_fd_path(tfd, p), NULL, MS_BIND, NULL) < 0)
			return kap_error(err, errno, "bind %s onto %s", host, path);
		return 0;
	}
	mode_t kind = type == 'b' ? S_IFBLK : S_IFCHR;
	dev_t dev = makedev(major, minor);
	bool fresh = true;
	/* setup_dev runs with umask 0, so a new node gets exactly `mode`. */
	if (mknodat(realdir, base, kind | (mode & 07777), dev) < 0) {
		if (errno != EEXIST)
			return kap_error(err, errno, "mknod %s", path);
		fresh = false;
		struct stat st;
		if (fstatat(realdir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    (st.st_mode & S_IFMT) != kind || st.st_rdev != dev) {
			/* Something else sits there (the image's own file): replace it. */
			if (unlinkat(realdir, base, 0) < 0 ||
			    mknodat(realdir, base, kind | (mode & 07777), dev) < 0)
				return kap_error(err, errno, "mknod %s", path);
		}
	}
	if (fresh && uid == 0 && gid == 0)
		return 0;
	/*
	 * chmod and chown through an O_PATH fd of the node itself, checked after opening: the
	 * name can be swapped for a symlink to a host file between mknod and here (the rootfs is
	 * the bundle's, writable by whoever made it), and a path-based chmod would follow it.
	 */
	cleanup_close int nfd = openat(realdir, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (nfd < 0 || fstat(nfd, &st) < 0)
		return kap_error(err, errno, "open %s", path);
	if ((st.st_mode & S_IFMT) != kind || st.st_rdev != dev)
		return kap_error_plain(err, EEXIST, "%s: replaced by something else during setup",
				       path);
	if (!fresh && fchmodat(AT_FDCWD, kap_fs_fd_path(nfd, p), mode & 07777, 0) < 0)
		return kap_error(err, errno, "chmod %s", path);
	if (fchownat(nfd, "", uid, gid, AT_EMPTY_PATH) < 0)
		return kap_error(err, errno, "chown %s", path);
	return 0;
}

static int setup_dev(struct kap_init_ctx *ctx, int rootfd, struct kapsel_error **err)
{
	const struct kap_spec *spec = ctx->spec;
	bool userns =
	    ctx->new_ns[KAP_NS_USER] || spec->namespaces[KAP_NS_USER].path || kap_userns_nested();
	cleanup_close int devpath = kap_fs_mkdir_in_root(rootfd, "dev", 0755, false, err);
	if (devpath < 0)
		return kap_error_wrap(err, "/dev");
	char p[32];
	cleanup_close int devdir =
	    open(kap_fs_fd_path(devpath, p), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (devdir < 0)
		return kap_error(err, errno, "open /dev in rootfs");
	mode_t old_umask = umask(0);
	int r = 0;
	for (size_t i = 0; r == 0 && i < KAP_ARRAY_SIZE(default_devices); i++) {
		bool overridden = false;
		for (size_t j = 0; j < spec->n_devices; j++)
			if (!strcmp(spec->devices[j].path, default_devices[i].path))
				overridden = true;
		if (!overridden)
			r = make_device(rootfd, devdir, userns, default_devices[i].path, 'c',
					default_devices[i].major, default_devices[i].minor, 0666, 0,
					0, err);
	}
	for (size_t j = 0; r == 0 && j < spec->n_devices; j++) {
		const struct kap_device *d = &spec->devices[j];
		char type = d->type == 'u' ? 'c' : d->type;
		r = make_device(rootfd, devdir, userns, d->path, type, (unsigned)d->major,
				(unsigned)d->minor, d->has_mode ? d->mode : 0666,
				d->has_uid ? d->uid : 0, d->has_gid ? d->gid : 0, err);
	}
	umask(old_umask);
	if (r < 0)
		return -1;
	if (!has_mount_at(spec, "/dev/pts")) {
		struct kap_mount m = {.destination = "/dev/pts",
				      .type = "devpts",
				      .source = "devpts",
				      .flags = MS_NOSUID | MS_NOEXEC,
				      .data = "newinstance,ptmxmode=0666,mode=0620"};
		if (kap_mount_one(ctx, rootfd, &m, err) < 0)
			return -1;
	}
	if (!has_mount_at(spec, "/dev/shm")) {
		struct kap_mount m = {.destination = "/dev/shm",
				      .type = "tmpfs",
				      .source = "shm",
				      .flags = MS_NOSUID | MS_NOEXEC | MS_NODEV,
				      .data = "mode=1777,size=65536k"};
		if (kap_mount_one(ctx, rootfd, &m, err) < 0)
			return -1;
	}
	static const struct {
		const char *target, *link;
	} links[] = {
	    {"/proc/self/fd", "dev/fd"},       {"/proc/self/fd/0", "dev/stdin"},
	    {"/proc/self/fd/1", "dev/stdout"}, {"/proc/self/fd/2", "dev/stderr"},
	    {"pts/ptmx", "dev/ptmx"},
	};
	int dev = devdir;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(links); i++) {
		const char *name = links[i].link + 4;
		if (symlinkat(links[i].target, dev, name) < 0 && errno != EEXIST)
			return kap_error(err, errno, "symlink /%s", links[i].link);
		if (errno == EEXIST && !strcmp(name, "ptmx")) {
			/* An image may ship a ptmx device node: the pts instance must win. */
			struct stat st;
			if (fstatat(dev, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    !S_ISLNK(st.st_mode) &&
			    (unlinkat(dev, name, 0) < 0 ||
			     symlinkat(links[i].target, dev, name) < 0))
				return kap_error(err, errno, "replace /dev/ptmx");
		}
		errno = 0;
	}
	if (spec->process && spec->process->terminal) {
		int f = openat(dev, "console", O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (f >= 0)
			close(f);
	}
	return 0;
}

int kap_rootfs_prepare(struct kap_init_ctx *ctx, int *rootfd, struct kapsel_error **err)
{
	const struct kap_spec *spec = ctx->spec;
	/* Without a mount namespace of its own the container shares the runtime's: changing the
	 * propagation of "/" or stacking a bind on the rootfs would change the host's mount
	 * tree. The config's mounts still land under the rootfs (kap_mount_one confines them),
	 * and stay there, visible to the host, as the spec's inheritance means. */
	if (spec->namespaces[KAP_NS_MNT].enabled) {
		/* Our mount events must never propagate to the host. */
		if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
			return kap_error(err, errno, "make / rslave");
		/* A bind of the rootfs onto itself makes it a mount point, as pivot_root
		 * requires. */
		if (mount(ctx->rootfs, ctx->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
			return kap_error(err, errno, "root.path: bind %s", ctx->rootfs);
		if (mount(NULL, ctx->rootfs, NULL, MS_PRIVATE, NULL) < 0)
			return kap_error(err, errno, "make %s private", ctx->rootfs);
	}
	int fd = open(ctx->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "root.path: open %s", ctx->rootfs);
	*rootfd = fd;
	for (size_t i = 0; i < spec->n_mounts; i++)
		if (kap_mount_one(ctx, fd, &spec->mounts[i], err) < 0)
			return -1;
	return setup_dev(ctx, fd, err);
}

int kap_rootfs_pivot(struct kap_init_ctx *ctx, int rootfd, struct kapsel_error **err)
{
	if (fchdir(rootfd) < 0)
		return kap_error(err, errno, "chdir to rootfs");
	if (!ctx->spec->namespaces[KAP_NS_MNT].enabled) {
		/* pivot_root would swap the root of the runtime's (the host's) mount namespace:
		 * chroot is all there is, as in runc and crun (docs/security.md). */
		if (chroot(".") < 0)
			return kap_error(err, errno, "chroot to %s", ctx->rootfs);
		if (chdir("/") < 0)
			return kap_error(err, errno, "chdir /");
		return 0;
	}
	if (ctx->no_pivot) {
		if (mount(ctx->rootfs, "/", NULL, MS_MOVE, NULL) < 0)
			return kap_error(err, errno, "move rootfs to /");
		if (chroot(".") < 0)
			return kap_error(err, errno, "chroot to rootfs");
		if (chdir("/") < 0)
			return kap_error(err, errno, "chdir /");
		return 0;
	}
	cleanup_close int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0)
		return kap_error(err, errno, "open /");
	/* pivot_root(".", "."): the old root ends up stacked under the new one; detach it. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return kap_error(err, errno, "pivot_root to %s", ctx->rootfs);
	if (fchdir(oldroot) < 0)
		return kap_error(err, errno, "chdir to old root");
	if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		return kap_error(err, errno, "make old root rslave");
	if (umount2(".", MNT_DETACH) < 0)
		return kap_error(err, errno, "detach old root");
	if (chdir("/") < 0)
		return kap_error(err, errno, "chdir /");
	return 0;
}

static int remount_ro(const char *path, struct kapsel_error **err)
{
	struct statvfs sv;
	if (statvfs(path, &sv) < 0)
		return kap_error(err, errno, "statvfs %s", path);
	unsigned long keep = 0;
	if (sv.f_flag & ST_NOSUID)
		keep |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		keep |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		keep |= MS_NOEXEC;
	if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, NULL) < 0)
		return kap_error(err, errno, "remount %s read-only", path);
	return 0;
}

/* After pivot_root, "/" is the container's root: paths cannot resolve outside it. */
int kap_rootfs_finalize(struct kap_init_ctx *ctx, struct kapsel_error **err)
{
	const struct kap_spec *spec = ctx->spec;
	for (char **p = spec->readonly_paths; p && *p; p++) {
		if (mount(*p, *p, NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			return kap_error(err, errno, "linux.readonlyPaths: bind %s", *p);
		}
		if (remount_ro(*p, err) < 0)
			return kap_error_wrap(err, "linux.readonlyPaths");
	}
	for (char **p = spec->masked_paths; p && *p; p++) {
		struct stat st;
		if (stat(*p, &st) < 0) {
			if (errno == ENOENT)
				continue;
			return kap_error(err, errno, "linux.maskedPaths: stat %s", *p);
		}
		int r = S_ISDIR(st.st_mode)
			    ? mount("tmpfs", *p, "tmpfs", MS_RDONLY, "size=0k,nr_inodes=1")
			    : mount("/dev/null", *p, NULL, MS_BIND, NULL);
		if (r < 0)
			return kap_error(err, errno, "linux.maskedPaths: mask %s", *p);
	}
	if (spec->root_readonly && remount_ro("/", err) < 0)
		return kap_error_wrap(err, "root.readonly");
	if (spec->rootfs_propagation && mount(NULL, "/", NULL, spec->rootfs_propagation, NULL) < 0)
		return kap_error(err, errno, "linux.rootfsPropagation");
	return 0;
}
