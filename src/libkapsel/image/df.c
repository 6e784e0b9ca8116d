/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel system df`: the store's images, containers and local volumes, how many are in use,
 * their size and what removing the unused ones would give back (podman-system-df(1)). An image
 * is active while a container uses it; a container while it runs; a volume while a container's
 * config mounts it. Sizes are apparent sizes, as podman reports them; nothing crosses a mount
 * or follows a symlink while walking.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/image.h>
#include <kapsel/tools.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/ctr-ref.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

/* Walks deeper than this are counted up to there (a size, not a copy). */
#define DU_MAX_DEPTH 128

static int64_t du_at(int dfd, const char *name, dev_t dev, int depth)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (!S_ISDIR(st.st_mode))
		return S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ? st.st_size : 0;
	if (st.st_dev != dev || depth > DU_MAX_DEPTH)
		return 0;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	cleanup_dir DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 0;
	}
	int64_t sum = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			sum += du_at(dirfd(d), de->d_name, dev, depth + 1);
	return sum;
}

static int64_t du(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return 0;
	return du_at(AT_FDCWD, path, st.st_dev, 0);
}

/* The mount sources of a container's config.json (NULL-terminated; NULL when unreadable). */
static char **mount_sources(const char *cdir)
{
	cleanup_free char *path = NULL;
	if (asprintf(&path, "%s/config.json", cdir) < 0)
		return NULL;
	cleanup_json struct kap_json *j = NULL;
	if (kap_json_parse_file(path, &j, NULL) < 0)
		return NULL;
	struct kap_json *mounts = kap_json_get(j, "mounts");
	size_t n = mounts ? kap_json_array_len(mounts) : 0;
	char **v = calloc(n + 1, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; v && i < n; i++) {
		struct kap_json *src = kap_json_get(kap_json_array_at(mounts, i), "source");
		const char *s = src ? kap_json_string(src) : NULL;
		if (s && (v[k] = strdup(s)))
			k++;
	}
	return v;
}

static bool uses_path(char **sources, const char *dir)
{
	size_t n = strlen(dir);
	for (char **s = sources; s && *s; s++)
		if (!strncmp(*s, dir, n) && ((*s)[n] == '\0' || (*s)[n] == '/'))
			return true;
	return false;
}

static void free_strv(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

API int kapsel_system_df(const char *store, struct kapsel_df *out, struct kapsel_error **err)
{
	*out = (struct kapsel_df){0};
	cleanup_free char *sp = store && *store ? strdup(store) : kap_store_default_path();
	if (!sp)
		return kap_error(err, ENOMEM, "store");

	/* Containers, with what each uses. */
	cleanup_strv char **names = NULL;
	int rc = kap_ctr_ref_names(sp, &names, err);
	if (rc < 0)
		return rc;
	size_t nc = 0;
	while (names[nc])
		nc++;
	cleanup_strv char **manifests = calloc(nc + 1, sizeof(char *));
	char ***sources = calloc(nc + 1, sizeof(char **));
	if (!manifests || !sources) {
		free(sources);
		return kap_error(err, ENOMEM, "system df");
	}
	size_t nm = 0;
	/* Declared before the first goto: cleanup must never see them uninitialised. */
	cleanup_free char *vdir = NULL;
	cleanup_dir DIR *d = NULL;
	for (size_t i = 0; i < nc; i++) {
		struct kap_ctr_ref r;
		cleanup_error struct kapsel_error *e = NULL;
		if (kap_ctr_ref_open(sp, names[i], &r, &e) < 0)
			continue; /* removed meanwhile */
		cleanup_free char *upper = NULL;
		int64_t size = asprintf(&upper, "%s/upper", r.cdir) < 0 ? 0 : du(upper);
		out->containers.total++;
		out->containers.size += size;
		if (r.pid > 0)
			out->containers.active++;
		else
			out->containers.reclaimable += size;
		if (r.manifest && (manifests[nm] = strdup(r.manifest)))
			nm++;
		sources[i] = mount_sources(r.cdir);
		kap_ctr_ref_clear(&r);
	}

	/* Images: one per ID (an image with two names is counted once). */
	struct kapsel_image_info *imgs = NULL;
	size_t ni = 0;
	if ((rc = kapsel_image_list(sp, &imgs, &ni, err)) < 0)
		goto out;
	for (size_t i = 0; i < ni; i++) {
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = !strcmp(imgs[k].full_id, imgs[i].full_id);
		if (seen)
			continue;
		bool used = false;
		for (size_t k = 0; k < ni && !used; k++) {
			if (strcmp(imgs[k].full_id, imgs[i].full_id))
				continue;
			for (size_t m = 0; m < nm && !used; m++)
				used = imgs[k].digest && !strcmp(manifests[m], imgs[k].digest);
		}
		out->images.total++;
		out->images.size += imgs[i].size;
		if (used)
			out->images.active++;
		else
			out->images.reclaimable += imgs[i].size;
	}
	kapsel_image_info_free(imgs, ni);

	/* Local volumes: <store>/volumes/<name>, when the store has any. */
	if (asprintf(&vdir, "%s/volumes", sp) < 0) {
		rc = kap_error(err, ENOMEM, "system df");
		goto out;
	}
	d = opendir(vdir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		cleanup_free char *path = NULL;
		if (asprintf(&path, "%s/%s", vdir, de->d_name) < 0)
			continue;
		int64_t size = du(path);
		bool used = false;
		for (size_t i = 0; i < nc && !used; i++)
			used = uses_path(sources[i], path);
		out->volumes.total++;
		out->volumes.size += size;
		if (used)
			out->volumes.active++;
		else
			out->volumes.reclaimable += size;
	}
	rc = 0;
out:
	for (size_t i = 0; i < nc; i++)
		free_strv(sources[i]);
	free(sources);
	return rc;
}
