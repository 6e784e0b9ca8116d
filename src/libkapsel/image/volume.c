/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named volumes, as podman's "local" driver keeps them:
 *
 *   <store>/volumes/.lock          flock: create, rm and a container's attach exclude each other
 *   <store>/volumes/NAME/volume.json   the definition (podman's inspect keys), written atomically
 *   <store>/volumes/NAME/_data/    what the container sees
 *   <store>/containers/C/volumes   the names container C uses, one a line
 *
 * A volume is made in a temporary directory and renamed into place, so a name never shows a
 * half-made volume. Which containers use a volume is read from their directories: a container
 * removed (rm, --rm) drops its use with its directory, and nothing else has to be kept in step.
 *
 * Copy-up (podman's NeedsCopyUp): a new volume gets what the image has at the mount's
 * destination the first time a container mounts it. The image's tree is hostile input: it is
 * opened inside the container's root (RESOLVE_IN_ROOT), walked with O_NOFOLLOW, symlinks are
 * copied as links (never followed), only regular files, directories, symlinks and fifos are
 * copied, and the depth is bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/volume.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/image.h"
#include "image/runflags.h"

#define API __attribute__((visibility("default")))

#define VOLUMES_DIR "volumes"
#define DEF_FILE    "volume.json"
#define DATA_DIR    "_data"
#define USES_FILE   "volumes" /* in a container's directory */
#define COPY_DEPTH  128

bool kap_volume_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 128)
		return false;
	if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') ||
	      (name[0] >= '0' && name[0] <= '9')))
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
	       n;
}

static int check_name(const char *name, struct kapsel_error **err)
{
	if (!kap_volume_name_valid(name))
		return kap_error_plain(err, EINVAL,
				       "volume name \"%s\": expected [a-zA-Z0-9][a-zA-Z0-9_.-]* "
				       "(at most 128 characters)",
				       name ? name : "");
	return 0;
}

/* The volumes directory, opened, and its lock taken. */
struct vols {
	struct kap_store *store;
	int dirfd, lockfd;
	char *path; /* <store>/volumes */
};

static void vols_close(struct vols *v)
{
	if (v->lockfd >= 0)
		close(v->lockfd); /* drops the flock */
	if (v->dirfd >= 0)
		close(v->dirfd);
	if (v->store)
		kap_store_close(v->store);
	free(v->path);
	*v = (struct vols){.dirfd = -1, .lockfd = -1};
}

static int vols_lock_dir(struct kap_store *s, int *dirfd, int *lockfd, bool exclusive,
			 struct kapsel_error **err)
{
	const char *sp = kap_store_path(s);
	cleanup_close int sfd = open(sp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return kap_error(err, errno, "open store %s", sp);
	if (mkdirat(sfd, VOLUMES_DIR, 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create %s/%s", sp, VOLUMES_DIR);
	*dirfd = openat(sfd, VOLUMES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*dirfd < 0)
		return kap_error(err, errno, "open %s/%s", sp, VOLUMES_DIR);
	*lockfd = openat(*dirfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (*lockfd < 0 || flock(*lockfd, exclusive ? LOCK_EX : LOCK_SH) < 0)
		return kap_error(err, errno, "lock %s/%s/.lock", sp, VOLUMES_DIR);
	return 0;
}

static int vols_open(const char *store, bool exclusive, struct vols *v, struct kapsel_error **err)
{
	*v = (struct vols){.dirfd = -1, .lockfd = -1};
	int r = kap_store_open(store, &v->store, err);
	if (r < 0)
		return r;
	if (asprintf(&v->path, "%s/%s", kap_store_path(v->store), VOLUMES_DIR) < 0) {
		v->path = NULL;
		vols_close(v);
		return kap_error(err, ENOMEM, "volumes");
	}
	if ((r = vols_lock_dir(v->store, &v->dirfd, &v->lockfd, exclusive, err)) < 0)
		vols_close(v);
	return r;
}

static void format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t parse_time(const char *s)
{
	struct tm tm = {0};
	if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

static int def_write(int vdirfd, const char *name, const char *mountpoint, const char *created,
		     bool copy_up, struct kapsel_error **err)
{
	cleanup_json struct kap_json *d = kap_json_new_object();
	if (!d)
		return kap_error(err, ENOMEM, "volume %s", name);
	kap_json_set(d, "Name", kap_json_new_string(name));
	kap_json_set(d, "Driver", kap_json_new_string("local"));
	kap_json_set(d, "Mountpoint", kap_json_new_string(mountpoint));
	kap_json_set(d, "CreatedAt", kap_json_new_string(created));
	kap_json_set(d, "Labels", kap_json_new_object());
	kap_json_set(d, "Scope", kap_json_new_string("local"));
	kap_json_set(d, "Options", kap_json_new_object());
	kap_json_set(d, "NeedsCopyUp", kap_json_new_bool(copy_up));
	cleanup_free char *text = kap_json_dump(d, true);
	if (!text)
		return kap_error(err, ENOMEM, "volume %s", name);
	return kap_fs_write_atomic(vdirfd, DEF_FILE, text, strlen(text), 0600, true, err);
}

static int def_read(int dirfd, const char *name, struct kap_json **def, struct kapsel_error **err)
{
	cleanup_free char *text = NULL, *path = NULL;
	size_t len = 0;
	if (asprintf(&path, "%s/%s", name, DEF_FILE) < 0)
		return kap_error(err, ENOMEM, "volume %s", name);
	int r = kap_fs_read_file(dirfd, path, 1 << 20, &text, &len, NULL);
	if (r == -ENOENT || r == -ENOTDIR)
		return kap_error_plain(err, ENOENT, "no such volume %s", name);
	if (r < 0)
		return kap_error(err, -r, "volume %s: read %s", name, DEF_FILE);
	return kap_json_parse(text, len, DEF_FILE, def, err);
}

/* Under the exclusive lock. 1: made, 0: it existed already. */
static int volume_make(struct vols *v, const char *name, struct kapsel_error **err)
{
	if (faccessat(v->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	char tmp[64];
	unsigned char rnd[6] = {0};
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return kap_error(err, errno, "getrandom");
	snprintf(tmp, sizeof(tmp), ".tmp-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
	if (mkdirat(v->dirfd, tmp, 0700) < 0)
		return kap_error(err, errno, "create %s/%s", v->path, tmp);
	cleanup_close int tfd =
	    openat(v->dirfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	cleanup_free char *mountpoint = NULL;
	char created[40];
	format_time(time(NULL), created, sizeof(created));
	int r;
	if (tfd < 0)
		r = kap_error(err, errno, "open %s/%s", v->path, tmp);
	else if (mkdirat(tfd, DATA_DIR, 0755) < 0)
		r = kap_error(err, errno, "create %s/%s/%s", v->path, tmp, DATA_DIR);
	else if (asprintf(&mountpoint, "%s/%s/%s", v->path, name, DATA_DIR) < 0)
		r = kap_error(err, ENOMEM, "volume %s", name);
	else
		r = def_write(tfd, name, mountpoint, created, true, err);
	/* Not renameat2(RENAME_NOREPLACE): the lock already excludes a second maker. */
	if (r == 0 && renameat(v->dirfd, tmp, v->dirfd, name) < 0)
		r = kap_error(err, errno, "volume %s: rename into place", name);
	if (r < 0) {
		kap_fs_rm_rf(v->dirfd, tmp);
		return r;
	}
	return 1;
}

/* The containers whose directories record a use of name (NULL-terminated, caller frees). */
static int users_of(struct kap_store *s, const char *name, char ***out, struct kapsel_error **err)
{
	cleanup_strv char **v = calloc(1, sizeof(char *));
	size_t n = 0;
	if (!v)
		return kap_error(err, ENOMEM, "volume %s", name);
	cleanup_close int sfd = open(kap_store_path(s), O_PATH | O_DIRECTORY | O_CLOEXEC);
	cleanup_dir DIR *d = sfd >= 0 ? kap_fs_opendir_at(sfd, "containers", O_NOFOLLOW) : NULL;
	if (!d) {
		if (errno != ENOENT)
			return kap_error(err, errno, "open %s/containers", kap_store_path(s));
		*out = steal_ptr(v);
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		cleanup_free char *path = NULL, *text = NULL;
		if (asprintf(&path, "%s/%s", de->d_name, USES_FILE) < 0)
			return kap_error(err, ENOMEM, "volume %s", name);
		if (kap_fs_read_file(dirfd(d), path, 1 << 20, &text, NULL, NULL) < 0)
			continue;
		bool uses = false;
		for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && !uses;
		     l = strtok_r(NULL, "\n", &save))
			uses = !strcmp(l, name);
		if (!uses)
			continue;
		char **nv = realloc(v, (n + 2) * sizeof(char *));
		if (!nv)
			return kap_error(err, ENOMEM, "volume %s", name);
		v = nv;
		if (!(v[n] = strdup(de->d_name)))
			return kap_error(err, ENOMEM, "volume %s", name);
		v[++n] = NULL;
	}
	*out = steal_ptr(v);
	return 0;
}

/* ---- copy-up ---- */

static int copy_file(int sfd, int ddir, const char *name, const struct stat *st,
		     struct kapsel_error **err)
{
	cleanup_close int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return kap_error(err, errno, "copy-up: open %s", name);
	cleanup_close int out = openat(
	    ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st->st_mode & 07777);
	if (out < 0)
		return kap_error(err, errno, "copy-up: create %s", name);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (kap_fs_write_all(out, buf, (size_t)n) < 0)
			return kap_error(err, errno, "copy-up: write %s", name);
	if (n < 0)
		return kap_error(err, errno, "copy-up: read %s", name);
	return 0;
}

/* Owner, mode and times of dst name as st says; ids the user namespace cannot map (rootless)
 * stay the creator's. */
static int copy_attrs(int ddir, const char *name, const struct stat *st, struct kapsel_error **err)
{
	if (fchownat(ddir, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno != EPERM && errno != EINVAL)
		return kap_error(err, errno, "copy-up: chown %s", name);
	/* After chown, which clears set-id bits; never through a link (glibc does NOFOLLOW by
	 * way of an O_PATH fd). */
	if (!S_ISLNK(st->st_mode) &&
	    fchmodat(ddir, name, st->st_mode & 07777, AT_SYMLINK_NOFOLLOW) < 0)
		return kap_error(err, errno, "copy-up: chmod %s", name);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	if (utimensat(ddir, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kap_error(err, errno, "copy-up: set times of %s", name);
	return 0;
}

static int copy_tree(int sfd, int dfd, int depth, struct kapsel_error **err)
{
	if (depth > COPY_DEPTH)
		return kap_error_plain(err, ELOOP, "copy-up: deeper than %d directories",
				       COPY_DEPTH);
	int dup_fd = dup(sfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return kap_error(err, errno, "copy-up: read directory");
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		struct stat st;
		if (fstatat(sfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = kap_error(err, errno, "copy-up: stat %s", n);
			break;
		}
		/* What the volume already has stays (a copy-up that failed part way is
		 * completed by the next, never overwriting). */
		struct stat have;
		bool exists = fstatat(dfd, n, &have, AT_SYMLINK_NOFOLLOW) == 0;
		if (exists && !(S_ISDIR(have.st_mode) && S_ISDIR(st.st_mode)))
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (!exists && mkdirat(dfd, n, 0700) < 0) {
				r = kap_error(err, errno, "copy-up: mkdir %s", n);
				break;
			}
			cleanup_close int s2 =
			    openat(sfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			cleanup_close int d2 =
			    openat(dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0 || d2 < 0)
				r = kap_error(err, errno, "copy-up: open %s", n);
			else
				r = copy_tree(s2, d2, depth + 1, err);
		} else if (S_ISREG(st.st_mode)) {
			r = copy_file(sfd, dfd, n, &st, err);
		} else if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t len = readlinkat(sfd, n, target, sizeof(target) - 1);
			if (len < 0) {
				r = kap_error(err, errno, "copy-up: readlink %s", n);
				break;
			}
			target[len] = '\0';
			if (symlinkat(target, dfd, n) < 0)
				r = kap_error(err, errno, "copy-up: symlink %s", n);
		} else if (S_ISFIFO(st.st_mode)) {
			if (mkfifoat(dfd, n, st.st_mode & 07777) < 0)
				r = kap_error(err, errno, "copy-up: mkfifo %s", n);
		} else {
			continue; /* devices and sockets: not data */
		}
		if (r == 0 && !exists)
			r = copy_attrs(dfd, n, &st, err);
	}
	closedir(d);
	return r;
}

/* The image's content at dst (inside rootfd) into the volume's empty _data. */
static int copy_up(int rootfd, const char *dst, int datafd, struct kapsel_error **err)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_close int sfd = kap_fs_open_in_root(rootfd, dst, O_RDONLY | O_DIRECTORY, 0, &e);
	if (sfd < 0)
		return 0; /* nothing there (or not a directory): nothing to copy */
	struct stat st;
	if (fstat(sfd, &st) == 0) {
		if (fchown(datafd, st.st_uid, st.st_gid) < 0 && errno != EPERM && errno != EINVAL)
			return kap_error(err, errno, "copy-up %s: chown", dst);
		if (fchmod(datafd, st.st_mode & 07777) < 0)
			return kap_error(err, errno, "copy-up %s: chmod", dst);
	}
	int r = copy_tree(sfd, datafd, 0, err);
	return r < 0 ? kap_error_wrap(err, "volume at %s", dst) : 0;
}

int kap_volume_attach(struct kap_store *s, int cdirfd, const struct kap_run_mount *m, size_t n,
		      int rootfd, struct kapsel_error **err)
{
	bool any = false;
	for (size_t i = 0; i < n; i++)
		any = any || m[i].type == KAP_RUN_VOLUME;
	if (!any)
		return 0;
	struct vols v = {.store = NULL, .dirfd = -1, .lockfd = -1};
	if (asprintf(&v.path, "%s/%s", kap_store_path(s), VOLUMES_DIR) < 0)
		return kap_error(err, ENOMEM, "volumes");
	int r = vols_lock_dir(s, &v.dirfd, &v.lockfd, true, err);
	cleanup_free char *uses = NULL;
	size_t ulen = 0;
	FILE *uf = r == 0 ? open_memstream(&uses, &ulen) : NULL;
	if (r == 0 && !uf)
		r = kap_error(err, ENOMEM, "volumes");
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (m[i].type != KAP_RUN_VOLUME)
			continue;
		const char *name = m[i].src;
		if ((r = volume_make(&v, name, err)) < 0)
			break;
		fprintf(uf, "%s\n", name);
		cleanup_json struct kap_json *def = NULL;
		if ((r = def_read(v.dirfd, name, &def, err)) < 0)
			break;
		struct kap_json *cu = kap_json_get(def, "NeedsCopyUp");
		if (!cu || !kap_json_bool(cu))
			continue;
		/* podman: the copy happens once, at the first mount, unless nocopy. */
		cleanup_close int vdir =
		    openat(v.dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		cleanup_close int data =
		    vdir < 0
			? -EBADF
			: openat(vdir, DATA_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (data < 0) {
			r = kap_error(err, errno, "volume %s: open %s", name, DATA_DIR);
			break;
		}
		if (!m[i].nocopy && (r = copy_up(rootfd, m[i].dst, data, err)) < 0)
			break;
		const char *mp = kap_json_string(kap_json_get(def, "Mountpoint"));
		const char *created = kap_json_string(kap_json_get(def, "CreatedAt"));
		r = def_write(vdir, name, mp ? mp : "", created ? created : "", false, err);
	}
	if (uf && fclose(uf) != 0 && r == 0)
		r = kap_error(err, ENOMEM, "volumes");
	/* Recorded before the lock is dropped: from here on `volume rm` sees the use. */
	if (r == 0)
		r = kap_fs_write_atomic(cdirfd, USES_FILE, uses ? uses : "", ulen, 0600, false,
					err);
	v.store = NULL; /* the caller's */
	vols_close(&v);
	return r;
}

/* ---- the API ---- */

API int kapsel_volume_create(const char *store, const char *name, char **name_out,
			     struct kapsel_error **err)
{
	char gen[65];
	if (!name) {
		unsigned char rnd[32];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return kap_error(err, errno, "getrandom");
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(gen + 2 * i, 3, "%02x", rnd[i]);
		name = gen;
	}
	int r = check_name(name, err);
	if (r < 0)
		return r;
	struct vols v;
	if ((r = vols_open(store, true, &v, err)) < 0)
		return r;
	r = volume_make(&v, name, err);
	vols_close(&v);
	if (r == 0)
		return kap_error_plain(err, EEXIST, "volume %s already exists", name);
	if (r > 0 && name_out && !(*name_out = strdup(name)))
		return kap_error(err, ENOMEM, "volume %s", name);
	return r < 0 ? r : 0;
}

static void info_clear(struct kapsel_volume_info *i)
{
	free(i->name);
	free(i->driver);
	free(i->mountpoint);
	kap_strvp(&i->containers);
	*i = (struct kapsel_volume_info){0};
}

API void kapsel_volume_infos_free(struct kapsel_volume_info *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		info_clear(&v[i]);
	free(v);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct kapsel_volume_info *)a)->name,
		      ((const struct kapsel_volume_info *)b)->name);
}

static int info_fill(struct vols *v, const char *name, struct kapsel_volume_info *i,
		     struct kapsel_error **err)
{
	cleanup_json struct kap_json *def = NULL;
	int r = def_read(v->dirfd, name, &def, err);
	if (r < 0)
		return r;
	const char *mp = kap_json_string(kap_json_get(def, "Mountpoint"));
	const char *drv = kap_json_string(kap_json_get(def, "Driver"));
	i->created = parse_time(kap_json_string(kap_json_get(def, "CreatedAt")));
	if (!(i->name = strdup(name)) || !(i->mountpoint = strdup(mp ? mp : "")) ||
	    !(i->driver = strdup(drv ? drv : "local")))
		return kap_error(err, ENOMEM, "volume %s", name);
	return users_of(v->store, name, &i->containers, err);
}

API int kapsel_volume_list(const char *store, struct kapsel_volume_info **out, size_t *n,
			   struct kapsel_error **err)
{
	struct vols v;
	int r = vols_open(store, false, &v, err);
	if (r < 0)
		return r;
	struct kapsel_volume_info *list = NULL;
	size_t k = 0;
	DIR *d = kap_fs_opendir_at(v.dirfd, ".", 0);
	if (!d)
		r = kap_error(err, errno, "open %s", v.path);
	struct dirent *de;
	while (r == 0 && d && (de = readdir(d))) {
		if (!kap_volume_name_valid(de->d_name))
			continue; /* ".lock", ".tmp-*" */
		struct kapsel_volume_info *nl = realloc(list, (k + 1) * sizeof(*list));
		if (!nl) {
			r = kap_error(err, ENOMEM, "volumes");
			break;
		}
		list = nl;
		list[k] = (struct kapsel_volume_info){0};
		cleanup_error struct kapsel_error *e = NULL;
		int rr = info_fill(&v, de->d_name, &list[k], &e);
		if (rr == -ENOENT) {
			/* A directory without a definition is no volume; leave it be. */
			info_clear(&list[k]);
			continue;
		}
		k++;
		if (rr < 0) {
			*err = steal_ptr(e);
			r = rr;
		}
	}
	if (d)
		closedir(d);
	vols_close(&v);
	if (r < 0) {
		kapsel_volume_infos_free(list, k);
		return r;
	}
	if (k)
		qsort(list, k, sizeof(*list), by_name);
	*out = list;
	*n = k;
	return 0;
}

API int kapsel_volume_inspect(const char *store, const char *name, char **json,
			      struct kapsel_error **err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	struct vols v;
	if ((r = vols_open(store, false, &v, err)) < 0)
		return r;
	cleanup_json struct kap_json *def = NULL;
	cleanup_strv char **users = NULL;
	if ((r = def_read(v.dirfd, name, &def, err)) == 0 &&
	    (r = users_of(v.store, name, &users, err)) == 0) {
		size_t n = 0;
		while (users[n])
			n++;
		kap_json_set(def, "MountCount", kap_json_new_int64((int64_t)n));
		struct kap_json *c = kap_json_new_array();
		for (size_t i = 0; c && i < n; i++)
			kap_json_append(c, kap_json_new_string(users[i]));
		kap_json_set(def, "Containers", c);
		if (!(*json = kap_json_dump(def, true)))
			r = kap_error(err, ENOMEM, "volume %s", name);
	}
	vols_close(&v);
	return r;
}

API int kapsel_volume_rm(const char *store, const char *name, struct kapsel_error **err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	struct vols v;
	if ((r = vols_open(store, true, &v, err)) < 0)
		return r;
	cleanup_json struct kap_json *def = NULL;
	cleanup_strv char **users = NULL;
	if ((r = def_read(v.dirfd, name, &def, err)) == 0 &&
	    (r = users_of(v.store, name, &users, err)) == 0) {
		if (users[0])
			r = kap_error_plain(
			    err, EBUSY, "volume %s is in use by container %s (rm -f removes it)",
			    name, users[0]);
		else if ((r = kap_fs_rm_rf(v.dirfd, name)) < 0)
			r = kap_error(err, -r, "remove volume %s", name);
	}
	vols_close(&v);
	return r;
}
