/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel cp`: files between the host and an image container, both ways, running or stopped
 * (podman-cp(1), docker's cp semantics for what lands where).
 *
 * The container's files are hostile: any of them may be a symlink such as /etc/x ->
 * /../../../etc/shadow, planted to make a copy read or write the host. So every path inside the
 * container is resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) against an fd of
 * its root (openat2(2): ".." and absolute symlinks stop at that root), and below the top entry
 * the walk goes name by name in directory fds with O_NOFOLLOW: a symlink in the tree is copied
 * as a symlink and never followed, on either side. Entries are created with O_EXCL (a name
 * that exists is unlinked first, so a link the container swaps in is replaced, not written
 * through).
 *
 * The root is /proc/PID/root of the container's init while it runs: its own mount namespace,
 * volumes and the rootless overlay (which exists only there) included. A stopped container has
 * no mounted rootfs, so a child process mounts its overlay in a private mount namespace, where
 * nothing else sees it and where it goes away with the child, and does the copy there.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/tools.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/syscalls.h"
#include "image/ctr-ref.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

/* Directory levels a copy descends; each holds two fds. */
#define CP_MAX_DEPTH 256

struct cp {
	int ctr_root;	 /* the container's root (O_PATH) */
	bool into;	 /* host -> container */
	bool archive;	 /* keep owners */
	bool chown_root; /* not archive, into the container: owners become its root */
	uid_t root_uid;	 /* the container's root, as the host sees it */
	gid_t root_gid;
	const char *what; /* the user's CONTAINER:PATH, for messages */
	struct kapsel_error **err;
};

API bool kapsel_cp_is_container_path(const char *arg)
{
	/* podman: "NAME:PATH"; a local path with a colon is written ./a:b or /a:b. */
	const char *colon = strchr(arg, ':');
	return colon && colon != arg && memchr(arg, '/', (size_t)(colon - arg)) == NULL;
}

/* Open path on the host (relative to the cwd) or inside the container's root, confined. */
static int open_side(const struct cp *c, bool ctr, const char *path, int flags)
{
	if (!ctr)
		return openat(AT_FDCWD, *path ? path : ".", flags | O_CLOEXEC);
	while (*path == '/')
		path++;
	return kap_openat2(c->ctr_root, *path ? path : ".", (uint64_t)(flags | O_CLOEXEC), 0,
			   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

/* "a/b/c" -> dir "a/b", base "c"; "/c" -> "/", "c"; "c" -> "", "c". Trailing '/' dropped. */
static int split_path(const char *path, char **dir, char **base)
{
	cleanup_free char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		p[--n] = '\0';
	char *slash = strrchr(p, '/');
	if (!slash) {
		*dir = strdup("");
		*base = strdup(p);
	} else if (slash == p) {
		*dir = strdup("/");
		*base = strdup(p[1] ? p + 1 : ".");
	} else {
		*slash = '\0';
		*dir = strdup(p);
		*base = strdup(slash + 1);
	}
	if (!*dir || !*base) {
		free(*dir);
		free(*base);
		return -ENOMEM;
	}
	return 0;
}

static bool ends_with_slash(const char *p)
{
	size_t n = strlen(p);
	return n > 0 && p[n - 1] == '/';
}

/* "DIR/." (podman-cp(1): copy the directory's contents, not the directory itself). */
static bool contents_only(const char *p)
{
	size_t n = strlen(p);
	return (n == 1 && p[0] == '.') || (n >= 2 && !strcmp(p + n - 2, "/."));
}

static int copy_entry(struct cp *c, int sdir, const char *sname, const struct stat *st, int ddir,
		      const char *dname, int depth);

/* Owner, mode and times of the entry just written at ddir/dname (fd: it, opened, or -1). */
static int set_meta(struct cp *c, int fd, int ddir, const char *dname, const struct stat *st)
{
	bool link = S_ISLNK(st->st_mode);
	uid_t uid = st->st_uid;
	gid_t gid = st->st_gid;
	if (c->chown_root) {
		uid = c->root_uid;
		gid = c->root_gid;
	}
	/* Out of the container without -a: the caller owns what it created already. */
	bool do_chown = c->archive || c->chown_root;
	if (do_chown) {
		int r = fd >= 0 ? fchown(fd, uid, gid)
				: fchownat(ddir, dname, uid, gid, AT_SYMLINK_NOFOLLOW);
		/* A rootless caller cannot give files away: they stay the user's (its root). */
		if (r < 0 && !(errno == EPERM && geteuid() != 0))
			return kap_error(c->err, errno, "chown %s", dname);
	}
	/* After chown, which clears set-id bits. */
	if (!link && (fd >= 0 ? fchmod(fd, st->st_mode & 07777)
			      : fchmodat(ddir, dname, st->st_mode & 07777, 0)) < 0)
		return kap_error(c->err, errno, "chmod %s", dname);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	if ((fd >= 0 ? futimens(fd, ts) : utimensat(ddir, dname, ts, AT_SYMLINK_NOFOLLOW)) < 0)
		return kap_error(c->err, errno, "set times of %s", dname);
	return 0;
}

/* Make room for a new non-directory ddir/dname: an existing one is replaced, never followed. */
static int clear_name(struct cp *c, int ddir, const char *dname)
{
	struct stat st;
	if (fstatat(ddir, dname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : kap_error(c->err, errno, "stat %s", dname);
	if (S_ISDIR(st.st_mode))
		return kap_error_plain(c->err, EISDIR,
				       "cannot overwrite directory %s with a non-directory", dname);
	if (unlinkat(ddir, dname, 0) < 0)
		return kap_error(c->err, errno, "replace %s", dname);
	return 0;
}

static int copy_data(struct cp *c, int in, int out, const char *name)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return kap_error(c->err, errno, "copy %s", name);
		break;
	}
	/* Across file systems older kernels refuse copy_file_range: plain read/write. */
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kap_error(c->err, errno, "read %s", name);
		}
		int r = kap_fs_write_all(out, buf, (size_t)n);
		if (r < 0)
			return kap_error(c->err, -r, "write %s", name);
	}
}

static int copy_dir(struct cp *c, int sdir, const char *sname, const struct stat *st, int ddir,
		    const char *dname, bool merge_only, int depth)
{
	if (depth > CP_MAX_DEPTH)
		return kap_error_plain(c->err, ELOOP, "%s: more than %d directory levels", sname,
				       CP_MAX_DEPTH);
	struct stat dst;
	if (fstatat(ddir, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(dst.st_mode)) {
		if (unlinkat(ddir, dname, 0) < 0)
			return kap_error(c->err, errno, "replace %s", dname);
	}
	/* 0700 while it fills (a read-only source directory still receives its entries). */
	if (mkdirat(ddir, dname, 0700) < 0 && errno != EEXIST)
		return kap_error(c->err, errno, "create directory %s", dname);
	cleanup_close int in = openat(sdir, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return kap_error(c->err, errno, "open directory %s", sname);
	cleanup_close int out =
	    openat(ddir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (out < 0)
		return kap_error(c->err, errno, "open directory %s", dname);
	int lfd = dup(in);
	cleanup_dir DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
	if (!d) {
		if (lfd >= 0)
			close(lfd);
		return kap_error(c->err, errno, "list %s", sname);
	}
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat cst;
		if (fstatat(in, de->d_name, &cst, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* removed while we copy */
			return kap_error(c->err, errno, "stat %s/%s", sname, de->d_name);
		}
		int r = copy_entry(c, in, de->d_name, &cst, out, de->d_name, depth + 1);
		if (r < 0)
			return kap_error_wrap(c->err, "%s", sname);
		errno = 0;
	}
	if (errno)
		return kap_error(c->err, errno, "list %s", sname);
	/* An existing destination keeps its own metadata ("DIR/." into it). */
	return merge_only ? 0 : set_meta(c, out, -1, NULL, st);
}

static int copy_entry(struct cp *c, int sdir, const char *sname, const struct stat *st, int ddir,
		      const char *dname, int depth)
{
	int r;
	switch (st->st_mode & S_IFMT) {
	case S_IFDIR:
		return copy_dir(c, sdir, sname, st, ddir, dname, false, depth);
	case S_IFREG: {
		cleanup_close int in = openat(sdir, sname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (in < 0)
			return kap_error(c->err, errno, "open %s", sname);
		/*
		 * On the host an existing file is written in place, as cp(1) does (the user's
		 * own /dev/null stays a device, a hard link stays linked). In the container the
		 * name is replaced: a device node there may be one the image planted.
		 */
		struct stat old;
		bool in_place = !c->into && fstatat(ddir, dname, &old, AT_SYMLINK_NOFOLLOW) == 0 &&
				(S_ISREG(old.st_mode) || S_ISCHR(old.st_mode));
		cleanup_close int out = -EBADF;
		if (in_place) {
			out = openat(ddir, dname, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
		} else {
			if ((r = clear_name(c, ddir, dname)) < 0)
				return r;
			out = openat(ddir, dname,
				     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		}
		if (out < 0)
			return kap_error(c->err, errno, "create %s", dname);
		if ((r = copy_data(c, in, out, sname)) < 0)
			return r;
		if (in_place && S_ISCHR(old.st_mode))
			return 0;
		return set_meta(c, out, -1, NULL, st);
	}
	case S_IFLNK: {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(sdir, sname, target, PATH_MAX);
		if (n < 0)
			return kap_error(c->err, errno, "read link %s", sname);
		target[n] = '\0';
		if ((r = clear_name(c, ddir, dname)) < 0)
			return r;
		if (symlinkat(target, ddir, dname) < 0)
			return kap_error(c->err, errno, "create link %s", dname);
		return set_meta(c, -1, ddir, dname, st);
	}
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
		if ((r = clear_name(c, ddir, dname)) < 0)
			return r;
		if (mknodat(ddir, dname, st->st_mode & (S_IFMT | 0600), st->st_rdev) < 0)
			return kap_error(c->err, errno, "create %s", dname);
		return set_meta(c, -1, ddir, dname, st);
	default:
		return 0; /* sockets mean nothing away from their listener; podman skips them too */
	}
}

/* The copy itself, once the container's root is open. */
static int do_copy(struct cp *c, bool src_ctr, const char *src, const char *dst)
{
	bool dst_ctr = !src_ctr;
	const char *src_name = src_ctr ? c->what : src;
	const char *dst_name = dst_ctr ? c->what : dst;
	bool contents = contents_only(src);

	cleanup_free char *sdirpath = NULL, *sbase = NULL;
	if (split_path(src, &sdirpath, &sbase) < 0)
		return kap_error(c->err, ENOMEM, "cp");
	/* The source: its parent resolved (confined on the container's side), then the entry
	 * itself by name without following it. ".", ".." and "/" name a directory whole. */
	cleanup_close int sdir = -EBADF;
	const char *sname = sbase;
	if (contents || !strcmp(sbase, ".") || !strcmp(sbase, "..")) {
		sdir = open_side(c, src_ctr, src, O_PATH | O_DIRECTORY);
		sname = ".";
	} else {
		sdir = open_side(c, src_ctr, sdirpath, O_PATH | O_DIRECTORY);
	}
	if (sdir < 0)
		return kap_error(c->err, errno, "%s", src_name);
	struct stat sst;
	if (fstatat(sdir, sname, &sst, AT_SYMLINK_NOFOLLOW) < 0)
		return kap_error(c->err, errno, "%s", src_name);
	if (ends_with_slash(src) && !S_ISDIR(sst.st_mode))
		return kap_error_plain(c->err, ENOTDIR, "%s: Not a directory", src_name);
	if (!strcmp(sname, "."))
		contents = true; /* the directory itself has no name to give a new destination */

	/* The destination, as docker and podman place it. */
	struct stat dstst;
	cleanup_close int dfd = open_side(c, dst_ctr, dst, O_PATH);
	bool exists = dfd >= 0 && fstat(dfd, &dstst) == 0;
	if (!exists && errno != ENOENT)
		return kap_error(c->err, errno, "%s", dst_name);
	if (exists && S_ISDIR(dstst.st_mode)) {
		cleanup_close int dd = open_side(c, dst_ctr, dst, O_RDONLY | O_DIRECTORY);
		if (dd < 0)
			return kap_error(c->err, errno, "%s", dst_name);
		if (contents)
			return copy_dir(c, sdir, sname, &sst, dd, ".", true, 0);
		return copy_entry(c, sdir, sname, &sst, dd, sname, 0);
	}
	if (exists && S_ISDIR(sst.st_mode))
		return kap_error_plain(
		    c->err, ENOTDIR, "%s: cannot copy a directory onto a non-directory", dst_name);
	if (!exists && ends_with_slash(dst) && !S_ISDIR(sst.st_mode))
		return kap_error_plain(c->err, ENOENT, "%s: No such directory", dst_name);
	/* A new (or replaced) entry named by the destination's last component. */
	cleanup_free char *ddirpath = NULL, *dbase = NULL;
	if (split_path(dst, &ddirpath, &dbase) < 0)
		return kap_error(c->err, ENOMEM, "cp");
	if (!strcmp(dbase, ".") || !strcmp(dbase, ".."))
		return kap_error_plain(c->err, EINVAL, "%s: not a name to create", dst_name);
	cleanup_close int dd = open_side(c, dst_ctr, ddirpath, O_RDONLY | O_DIRECTORY);
	if (dd < 0)
		return kap_error(c->err, errno, "%s", dst_name);
	return copy_entry(c, sdir, sname, &sst, dd, dbase, 0);
}

/* The host ids of the container's root: uid_map/gid_map's line for id 0 (identity without). */
static void root_ids(pid_t pid, uid_t *uid, gid_t *gid)
{
	*uid = 0;
	*gid = 0;
	if (pid <= 0)
		return;
	const char *files[] = {"uid_map", "gid_map"};
	for (int i = 0; i < 2; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
		cleanup_fclose FILE *f = fopen(path, "re");
		unsigned long in, out, len;
		while (f && fscanf(f, "%lu %lu %lu", &in, &out, &len) == 3) {
			if (in == 0 && len > 0) {
				if (i == 0)
					*uid = (uid_t)out;
				else
					*gid = (gid_t)out;
				break;
			}
		}
	}
}

/* The stopped container's rootfs: its image layers under its upper dir. */
static int mount_stopped(const struct kap_ctr_ref *r, bool rootless, struct kapsel_error **err)
{
	struct kap_store *s = NULL;
	int rc = kap_store_open(r->store, &s, err);
	if (rc < 0)
		return rc;
	struct kap_manifest man = {0};
	struct kap_image_config cfg = {0};
	if (!r->manifest) {
		kap_store_close(s);
		return kap_error_plain(err, EINVAL, "container %s: no image recorded", r->name);
	}
	if ((rc = kap_store_load_image(s, r->manifest, &man, &cfg, err)) < 0) {
		kap_store_close(s);
		return kap_error_wrap(err, "container %s", r->name);
	}
	kap_manifest_clear(&man);
	size_t n = cfg.n_diff_ids;
	cleanup_strv char **lowers = calloc(n + 2, sizeof(char *));
	for (size_t i = 0; lowers && i < n; i++) {
		/* Top layer first, as overlay wants them. */
		lowers[n - 1 - i] = kap_store_layer_path(s, cfg.diff_ids[i]);
		if (!lowers[n - 1 - i]) {
			rc = kap_error_plain(err, ENOENT, "container %s: layer %s not in the store",
					     r->name, cfg.diff_ids[i]);
			break;
		}
	}
	kap_image_config_clear(&cfg);
	kap_store_close(s);
	if (!lowers)
		return kap_error(err, ENOMEM, "container %s", r->name);
	if (rc < 0)
		return rc;
	if (n == 0 && asprintf(&lowers[0], "%s/empty", r->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", r->name);
	cleanup_free char *upper = NULL, *work = NULL, *merged = NULL;
	if (asprintf(&upper, "%s/upper", r->cdir) < 0 || asprintf(&work, "%s/work", r->cdir) < 0 ||
	    asprintf(&merged, "%s/merged", r->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", r->name);
	return kap_overlay_mount(lowers, n ? n : 1, upper, work, merged, rootless, err);
}

/*
 * In a child: a private mount namespace (rootless: inside a user namespace mapping root to the
 * caller, as `kapsel run` made the container's files), the overlay mounted there, the copy.
 * The error comes back over a pipe as "errno message".
 */
static int copy_stopped(struct cp *c, const struct kap_ctr_ref *r, bool src_ctr, const char *src,
			const char *dst)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return kap_error(c->err, errno, "cp: pipe");
	uid_t uid = geteuid();
	gid_t gid = getegid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(fds[0]);
		close(fds[1]);
		return kap_error(c->err, e, "cp: fork");
	}
	if (pid == 0) {
		close(fds[0]);
		struct kapsel_error *e = NULL;
		int rc = 0;
		bool rootless = uid != 0;
		if (unshare(CLONE_NEWNS | (rootless ? CLONE_NEWUSER : 0)) < 0) {
			rc = kap_error(&e, errno, "cp: new mount namespace");
		} else if (rootless) {
			char map[64];
			int len = snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
			if ((rc = kap_fs_write_at(AT_FDCWD, "/proc/self/setgroups", "deny", 4,
						  &e)) == 0 &&
			    (rc = kap_fs_write_at(AT_FDCWD, "/proc/self/uid_map", map, (size_t)len,
						  &e)) == 0) {
				len = snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
				rc = kap_fs_write_at(AT_FDCWD, "/proc/self/gid_map", map,
						     (size_t)len, &e);
			}
		}
		/* Nothing mounted here may propagate back to the host. */
		if (rc == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			rc = kap_error(&e, errno, "cp: make / private");
		if (rc == 0)
			rc = mount_stopped(r, rootless, &e);
		cleanup_free char *merged = NULL;
		if (rc == 0 && asprintf(&merged, "%s/merged", r->cdir) < 0)
			rc = kap_error(&e, ENOMEM, "cp");
		if (rc == 0 && (c->ctr_root = open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
			rc = kap_error(&e, errno, "open %s", merged);
		if (rc == 0) {
			c->err = &e;
			rc = do_copy(c, src_ctr, src, dst);
		}
		if (rc < 0 && e) {
			char msg[1024];
			int len = snprintf(msg, sizeof(msg), "%d %s", e->code, e->msg);
			kap_fs_write_all(
			    fds[1], msg,
			    (size_t)(len < (int)sizeof(msg) ? len : (int)sizeof(msg) - 1));
		}
		_exit(rc < 0 ? 1 : 0);
	}
	close(fds[1]);
	char msg[1024];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof(msg) - 1 && ((n = read(fds[0], msg + got, sizeof(msg) - 1 - got)) > 0 ||
					 (n < 0 && errno == EINTR)))
		if (n > 0)
			got += (size_t)n;
	msg[got] = '\0';
	close(fds[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	int code = EIO;
	char *text = msg;
	if (got && sscanf(msg, "%d", &code) == 1 && (text = strchr(msg, ' ')))
		text++;
	else
		text = NULL;
	if (code <= 0)
		code = EIO;
	if (!text)
		return kap_error_plain(c->err, code, "cp: copy process failed (status %d)", status);
	return kap_error_plain(c->err, code, "%s", text);
}

API int kapsel_image_cp(const char *store, const char *src, const char *dst, bool archive,
			struct kapsel_error **err)
{
	bool src_ctr = kapsel_cp_is_container_path(src);
	bool dst_ctr = kapsel_cp_is_container_path(dst);
	if (src_ctr == dst_ctr)
		return kap_error_plain(err, EINVAL,
				       src_ctr ? "cp: copying between containers is not supported"
					       : "cp: one of SRC and DST must be CONTAINER:PATH");
	const char *spec = src_ctr ? src : dst;
	const char *colon = strchr(spec, ':');
	cleanup_free char *name = strndup(spec, (size_t)(colon - spec));
	if (!name)
		return kap_error(err, ENOMEM, "cp");
	const char *cpath = colon + 1;
	if (!*cpath)
		return kap_error_plain(err, EINVAL, "cp: %s: no path in the container", spec);
	const char *host = src_ctr ? dst : src;
	if (!*host)
		return kap_error_plain(err, EINVAL, "cp: empty host path");
	/* podman's "-" is a tar stream on stdin or stdout; kapsel copies files only. */
	if (!strcmp(host, "-"))
		return kap_error_plain(err, EINVAL,
				       "cp: \"-\" (a tar stream) is not supported; name a file or "
				       "directory (./- for a file called -)");

	struct kap_ctr_ref r;
	int rc = kap_ctr_ref_open(store, name, &r, err);
	if (rc < 0)
		return rc;
	struct cp c = {
	    .ctr_root = -EBADF, .into = dst_ctr, .archive = archive, .what = spec, .err = err};
	c.chown_root = dst_ctr && !archive;
	/* The container's init: its files as they are now. A container between its init's exit
	 * and the monitor's cleanup still has the overlay mounted by the host: wait for that. */
	for (int i = 0; i < 100 && !r.pid && !strcmp(r.state, "running"); i++) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
		kap_ctr_ref_clear(&r);
		if ((rc = kap_ctr_ref_open(store, name, &r, err)) < 0)
			return rc;
	}
	if (r.pid > 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/root", (int)r.pid);
		c.ctr_root = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (c.ctr_root < 0) {
			rc = kap_error(err, errno, "container %s: open %s", name, path);
		} else {
			root_ids(r.pid, &c.root_uid, &c.root_gid);
			rc = do_copy(&c, src_ctr, src_ctr ? cpath : src, src_ctr ? dst : cpath);
			close(c.ctr_root);
		}
	} else if (!strcmp(r.state, "running")) {
		rc = kap_error_plain(err, EBUSY, "container %s is stopping; try again", name);
	} else {
		/* Held for the copy: rm and a cleanup of the container wait for it. */
		if (flock(r.cdirfd, LOCK_EX) < 0)
			rc = kap_error(err, errno, "lock container %s", name);
		else
			rc = copy_stopped(&c, &r, src_ctr, src_ctr ? cpath : src,
					  src_ctr ? dst : cpath);
	}
	kap_ctr_ref_clear(&r);
	return rc;
}
