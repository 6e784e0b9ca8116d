/* SPDX-License-Identifier: Apache-2.0 */
/* The public image-store API (include/kapsel/image.h) over store.c and archive.c. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/image.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

static void store_closep(struct kap_store **s)
{
	kap_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(store_closep)))

API void kapsel_image_names_free(char **names)
{
	kap_strvp(&names);
}

API void kapsel_image_info_free(struct kapsel_image_info *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++) {
		free(list[i].name);
		free(list[i].repository);
		free(list[i].tag);
		free(list[i].digest);
		free(list[i].created);
	}
	free(list);
}

static int split_name(const char *name, char **repo, char **tag)
{
	struct kap_ref r;
	if (kap_ref_parse(name, &r, NULL) == 0) {
		int n = asprintf(repo, "%s/%s", r.registry, r.repository);
		*tag = strdup(r.tag ? r.tag : "<none>");
		kap_ref_clear(&r);
		return n < 0 || !*tag ? -ENOMEM : 0;
	}
	*repo = strdup(name);
	*tag = strdup("<none>");
	return !*repo || !*tag ? -ENOMEM : 0;
}

API int kapsel_image_list(const char *store, struct kapsel_image_info **list, size_t *n,
			  struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	struct kap_store_image *imgs = NULL;
	size_t count = 0;
	*list = NULL;
	*n = 0;
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_store_list(s, &imgs, &count, err)) < 0)
		return r;
	struct kapsel_image_info *out = calloc(count ? count : 1, sizeof(*out));
	if (!out) {
		kap_store_images_free(imgs, count);
		return kap_error(err, ENOMEM, "images");
	}
	size_t k = 0;
	for (size_t i = 0; i < count; i++) {
		struct kap_manifest m;
		struct kap_image_config c;
		cleanup_error struct kapsel_error *e = NULL;
		if (kap_store_is_index(s, imgs[i].manifest_digest)) {
			/* A manifest list (podman lists them too): its own ID and size. */
			struct kapsel_image_info *info = &out[k++];
			struct stat st;
			cleanup_free char *path = NULL;
			info->name = strdup(imgs[i].name);
			info->digest = strdup(imgs[i].manifest_digest);
			info->created = strdup("");
			snprintf(info->id, sizeof(info->id), "%.12s", imgs[i].manifest_digest + 7);
			snprintf(info->full_id, sizeof(info->full_id), "%.64s",
				 imgs[i].manifest_digest + 7);
			if (asprintf(&path, "%s/blobs/sha256/%s", kap_store_path(s),
				     imgs[i].manifest_digest + 7) > 0 &&
			    stat(path, &st) == 0)
				info->size = st.st_size;
			r = split_name(imgs[i].name, &info->repository, &info->tag);
			if (r < 0 || !info->name || !info->digest || !info->created) {
				kapsel_image_info_free(out, k);
				kap_store_images_free(imgs, count);
				return kap_error(err, ENOMEM, "images");
			}
			continue;
		}
		if (kap_store_load_image(s, imgs[i].manifest_digest, &m, &c, &e) < 0) {
			/* One broken image must not hide the others. */
			kap_warn("image %s: %s", imgs[i].name, e->msg);
			continue;
		}
		struct kapsel_image_info *info = &out[k++];
		info->name = strdup(imgs[i].name);
		info->digest = strdup(imgs[i].manifest_digest);
		info->created = strdup(c.created ? c.created : "");
		snprintf(info->id, sizeof(info->id), "%.12s", m.config.digest + 7);
		snprintf(info->full_id, sizeof(info->full_id), "%.64s", m.config.digest + 7);
		info->size = m.config.size;
		for (size_t j = 0; j < m.n_layers; j++)
			info->size += m.layers[j].size;
		r = split_name(imgs[i].name, &info->repository, &info->tag);
		kap_manifest_clear(&m);
		kap_image_config_clear(&c);
		if (r < 0 || !info->name || !info->digest || !info->created) {
			kapsel_image_info_free(out, k);
			kap_store_images_free(imgs, count);
			return kap_error(err, ENOMEM, "images");
		}
	}
	kap_store_images_free(imgs, count);
	*list = out;
	*n = k;
	return 0;
}

API int kapsel_image_load(const char *store, const char *path, char ***names,
			  struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	return kap_archive_load(s, path, names, err);
}

API int kapsel_image_save(const char *store, char *const *images, size_t n, const char *path,
			  struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	if (!n)
		return kap_error_plain(err, EINVAL, "save: no image given");
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	return kap_archive_save(s, images, n, path, err);
}

/* The blobs and diff_ids of an image, for the targeted GC after rmi. */
static int image_content(struct kap_store *s, const char *digest, char ***blobs, size_t *nb,
			 char ***layers, size_t *nl, struct kapsel_error **err)
{
	struct kap_manifest m;
	struct kap_image_config c;
	char resolved[KAP_DIGEST_LEN + 1];
	if (kap_store_is_index(s, digest)) {
		/* A manifest list: itself only, as podman's rmi; the images it names stay. */
		*nb = *nl = 0;
		*blobs = calloc(2, sizeof(char *));
		*layers = calloc(1, sizeof(char *));
		if (!*blobs || !*layers || !((*blobs)[0] = strdup(digest)))
			return kap_error(err, ENOMEM, "rmi");
		*nb = 1;
		return 0;
	}
	int r = kap_store_resolve_manifest(s, digest, resolved, err);
	if (r < 0 || (r = kap_store_load_image(s, digest, &m, &c, err)) < 0)
		return r;
	*blobs = calloc(m.n_layers + 4, sizeof(char *));
	*layers = calloc(c.n_diff_ids + 1, sizeof(char *));
	*nb = *nl = 0;
	if (*blobs && *layers) {
		(*blobs)[(*nb)++] = strdup(digest);
		(*blobs)[(*nb)++] = strdup(resolved);
		(*blobs)[(*nb)++] = strdup(m.config.digest);
		for (size_t i = 0; i < m.n_layers; i++)
			(*blobs)[(*nb)++] = strdup(m.layers[i].digest);
		for (size_t i = 0; i < c.n_diff_ids; i++)
			(*layers)[(*nl)++] = strdup(c.diff_ids[i]);
	} else {
		r = kap_error(err, ENOMEM, "rmi");
	}
	kap_manifest_clear(&m);
	kap_image_config_clear(&c);
	return r;
}

API int kapsel_image_remove(const char *store, const char *image, bool force,
			    struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	/* Exclusive across lookup, checks and untag: a racing `run` cannot slip in between. */
	if ((r = kap_store_lock(s, true, err)) < 0)
		return r;
	cleanup_error struct kapsel_error *cerr = NULL;
	cleanup_strv char **users = NULL;
	cleanup_strv char **blobs = NULL;
	cleanup_strv char **layers = NULL;
	size_t n_users = 0, nb = 0, nl = 0;
	struct kap_store_image *list = NULL;
	size_t n = 0;
	if ((r = kap_image_find(s, image, &name, digest, err)) < 0 ||
	    (r = kap_store_users(s, digest, &users, &n_users, err)) < 0 ||
	    (r = kap_store_list(s, &list, &n, err)) < 0)
		goto out;
	size_t n_names = 0;
	for (size_t i = 0; i < n; i++)
		n_names += !strcmp(list[i].manifest_digest, digest);
	if (n_users && !force) {
		r = kap_error_plain(err, EBUSY,
				    "image \"%s\" is in use by container %s (remove the container "
				    "or use --force)",
				    image, users[0]);
		goto out;
	}
	if (!name && n_names > 1 && !force) {
		r = kap_error_plain(err, EBUSY,
				    "image ID \"%s\" has %zu names: remove them by name or use "
				    "--force",
				    image, n_names);
		goto out;
	}
	if (image_content(s, digest, &blobs, &nb, &layers, &nl, &cerr) < 0)
		kap_warn("rmi %s: %s; its blobs stay until prune", image, cerr->msg);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (name ? !strcmp(list[i].name, name) : !strcmp(list[i].manifest_digest, digest))
			r = kap_store_untag(s, list[i].name, err);
	if (r == 0 && nb + nl > 0) {
		int64_t freed = kap_store_gc_some(s, blobs, nb, layers, nl, err);
		if (freed < 0)
			r = (int)freed;
	}
out:
	kap_store_images_free(list, n);
	kap_store_unlock(s);
	return r;
}

static struct kap_json *strv_json(char **v)
{
	if (!v)
		return NULL;
	struct kap_json *a = kap_json_new_array();
	for (char **p = v; a && *p; p++)
		kap_json_append(a, kap_json_new_string(*p));
	return a;
}

API int kapsel_image_inspect(const char *store, const char *image, char **json,
			     struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	char digest[KAP_DIGEST_LEN + 1], resolved[KAP_DIGEST_LEN + 1];
	struct kap_manifest m;
	struct kap_image_config c;
	struct kap_store_image *list = NULL;
	size_t n = 0;
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_store_lookup(s, image, &name, digest, err)) < 0 ||
	    (r = kap_store_resolve_manifest(s, digest, resolved, err)) < 0 ||
	    (r = kap_store_list(s, &list, &n, err)) < 0)
		return r;
	if ((r = kap_store_load_image(s, digest, &m, &c, err)) < 0) {
		kap_store_images_free(list, n);
		return r;
	}
	cleanup_json struct kap_json *o = kap_json_new_object();
	struct kap_json *tags = kap_json_new_array(), *cfg = kap_json_new_object();
	struct kap_json *rootfs = kap_json_new_object(), *layers = kap_json_new_array();
	struct kap_json *diffs = kap_json_new_array();
	if (!o || !tags || !cfg || !rootfs || !layers || !diffs) {
		kap_json_put(tags), kap_json_put(cfg), kap_json_put(rootfs);
		kap_json_put(layers), kap_json_put(diffs);
		r = kap_error(err, ENOMEM, "inspect");
		goto out;
	}
	int64_t size = m.config.size;
	kap_json_set(o, "Id", kap_json_new_string(m.config.digest + 7));
	kap_json_set(o, "Digest", kap_json_new_string(resolved));
	if (strcmp(resolved, digest))
		kap_json_set(o, "IndexDigest", kap_json_new_string(digest));
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].manifest_digest, digest))
			kap_json_append(tags, kap_json_new_string(list[i].name));
	kap_json_set(o, "RepoTags", tags);
	kap_json_set(o, "Created", kap_json_new_string(c.created));
	kap_json_set(o, "Architecture", kap_json_new_string(c.architecture));
	kap_json_set(o, "Os", kap_json_new_string(c.os));
	if (c.env)
		kap_json_set(cfg, "Env", strv_json(c.env));
	if (c.entrypoint)
		kap_json_set(cfg, "Entrypoint", strv_json(c.entrypoint));
	if (c.cmd)
		kap_json_set(cfg, "Cmd", strv_json(c.cmd));
	if (c.working_dir)
		kap_json_set(cfg, "WorkingDir", kap_json_new_string(c.working_dir));
	if (c.user)
		kap_json_set(cfg, "User", kap_json_new_string(c.user));
	if (c.stop_signal)
		kap_json_set(cfg, "StopSignal", kap_json_new_string(c.stop_signal));
	/* As the image config has them (image-spec config.md): "80/tcp": {}, a set. */
	if (c.exposed_ports) {
		struct kap_json *ports = kap_json_new_object();
		for (size_t i = 0; ports && c.exposed_ports[i]; i++)
			kap_json_set(ports, c.exposed_ports[i], kap_json_new_object());
		kap_json_set(cfg, "ExposedPorts", ports);
	}
	/* podman shows the labels in Config and again at the top (always, {} for none). */
	struct kap_json *labels = kap_json_new_object();
	for (size_t i = 0; labels && i < c.n_labels; i++)
		kap_json_set(labels, c.labels_keys[i], kap_json_new_string(c.labels_values[i]));
	if (c.n_labels)
		kap_json_set(cfg, "Labels", kap_json_get_ref(labels));
	kap_json_set(o, "Labels", labels);
	kap_json_set(o, "Config", cfg);
	kap_json_set(rootfs, "Type", kap_json_new_string("layers"));
	for (size_t i = 0; i < m.n_layers; i++) {
		struct kap_json *l = kap_json_new_object();
		if (!l)
			continue;
		kap_json_set(l, "Digest", kap_json_new_string(m.layers[i].digest));
		kap_json_set(l, "MediaType", kap_json_new_string(m.layers[i].media_type));
		kap_json_set(l, "Size", kap_json_new_int64(m.layers[i].size));
		kap_json_set(l, "DiffID", kap_json_new_string(c.diff_ids[i]));
		kap_json_append(layers, l);
		kap_json_append(diffs, kap_json_new_string(c.diff_ids[i]));
		size += m.layers[i].size;
	}
	kap_json_set(rootfs, "Layers", diffs);
	kap_json_set(o, "RootFS", rootfs);
	kap_json_set(o, "Layers", layers);
	kap_json_set(o, "Size", kap_json_new_int64(size));
	if (!(*json = kap_json_dump(o, true)))
		r = kap_error(err, ENOMEM, "inspect");
out:
	kap_manifest_clear(&m);
	kap_image_config_clear(&c);
	kap_store_images_free(list, n);
	return r;
}

API int64_t kapsel_image_prune(const char *store, struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	return kap_store_prune(s, err);
}

/* The layout directory built with kapsel (images/meson.build): the path baked in at build
 * time, else next to the binary (build tree or installed share/kapsel). */
static char *find_default_layout(void)
{
	char exe[PATH_MAX];
	struct stat st;
	const char *baked =
#ifdef KAPSEL_DEFAULT_IMAGE_DIR
	    KAPSEL_DEFAULT_IMAGE_DIR;
#else
	    NULL;
#endif
	const char *env = getenv("KAPSEL_DEFAULT_IMAGE_DIR");
	if (env && *env && stat(env, &st) == 0 && S_ISDIR(st.st_mode))
		return strdup(env);
	if (baked && stat(baked, &st) == 0 && S_ISDIR(st.st_mode))
		return strdup(baked);
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	static const char *const rel[] = {"busybox-oci", "../share/kapsel/busybox-oci",
					  "../../images/busybox-oci"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(rel); i++) {
		char *p = NULL;
		if (asprintf(&p, "%s/%s", exe, rel[i]) < 0)
			return NULL;
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
			return p;
		free(p);
	}
	return NULL;
}

int kap_image_ensure_default(struct kap_store *s, const char *name, struct kapsel_error **err)
{
	if (name) {
		struct kap_ref ref;
		if (kap_ref_parse(name, &ref, NULL) < 0)
			return 0;
		cleanup_free char *canon = kap_ref_string(&ref);
		kap_ref_clear(&ref);
		if (!canon || strcmp(canon, KAPSEL_DEFAULT_IMAGE))
			return 0;
	}
	char digest[KAP_DIGEST_LEN + 1];
	if (kap_store_resolve(s, KAPSEL_DEFAULT_IMAGE, digest, NULL) == 0)
		return 0;
	cleanup_free char *dir = find_default_layout();
	if (!dir)
		return kap_error_plain(
		    err, ENOENT,
		    "%s is not in the store and the embedded image was not found "
		    "(build kapsel with busybox-static installed, or `kapsel load` "
		    "an image)",
		    KAPSEL_DEFAULT_IMAGE);
	kap_debug("loading the embedded default image from %s", dir);
	cleanup_strv char **names = NULL;
	int r = kap_archive_load(s, dir, &names, err);
	if (r < 0)
		return r;
	if (kap_store_resolve(s, KAPSEL_DEFAULT_IMAGE, digest, err) < 0)
		return kap_error_wrap(err, "embedded image %s", dir);
	return 1;
}

API int kapsel_image_ensure_default(const char *store, struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	return kap_image_ensure_default(s, NULL, err);
}
