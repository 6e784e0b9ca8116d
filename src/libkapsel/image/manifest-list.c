/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifest lists (image-spec image-index.md) in the store, as podman's `manifest` commands keep
 * them: an OCI image index stored as a content-addressed blob like any manifest, with a name in
 * images.json pointing at it. Every change writes a new index blob and moves the name; the old
 * blob goes with the targeted GC when nothing else names it.
 *
 * Pull and load never name an index (they tag the platform manifest they picked), so a name
 * that resolves to an index is always a list made here; the index a pull came through is kept
 * as an unnamed blob, which `manifest add --all` finds by the manifest it lists.
 *
 * One entry per platform: a second manifest for an os/arch/variant the list has is refused
 * (skopeo and podman pick the first match, so the second would never be pulled), while adding
 * a manifest the list already has replaces its entry (so a re-run with --arch fixes a platform).
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

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "image/image.h"

#define API	  __attribute__((visibility("default")))
#define INDEX_MAX (1u << 20) /* larger blobs are layers, not indexes worth scanning */

static void store_closep(struct kap_store **s)
{
	if (*s)
		kap_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(store_closep)))

int kap_store_read_index(struct kap_store *s, const char *digest, struct kap_json **doc,
			 struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	*doc = NULL;
	int r = kap_store_read_blob(s, digest, &buf, &len, err);
	if (r < 0)
		return r;
	cleanup_json struct kap_json *d = NULL;
	if ((r = kap_json_parse(buf, len, "manifest", &d, err)) < 0)
		return r;
	if (kap_json_type(d) != KAP_JSON_OBJECT || !kap_manifest_is_index(NULL, d))
		return 0;
	/* Validated as an index (descriptors, digests) before anyone walks it. */
	struct kap_index idx;
	if ((r = kap_index_parse(buf, len, &idx, err)) < 0)
		return kap_error_wrap(err, "index %.19s", digest);
	kap_index_clear(&idx);
	*doc = steal_ptr(d);
	return 1;
}

bool kap_store_is_index(struct kap_store *s, const char *digest)
{
	cleanup_json struct kap_json *doc = NULL;
	return kap_store_read_index(s, digest, &doc, NULL) == 1;
}

/* The stored list a user means, and its index document. */
static int list_find(struct kap_store *s, const char *list, char **name, char *digest,
		     struct kap_json **doc, struct kapsel_error **err)
{
	int r = kap_image_find(s, list, name, digest, err);
	if (r < 0)
		return r;
	if ((r = kap_store_read_index(s, digest, doc, err)) < 0)
		return r;
	if (r == 0)
		return kap_error_plain(err, EINVAL, "%s is an image, not a manifest list", list);
	if (name && !*name)
		return kap_error_plain(err, EINVAL,
				       "%s: name the manifest list, not its ID (it is stored "
				       "under its name)",
				       list);
	return 0;
}

/* Store doc as the list's new index, move the name to it, drop the old blob if unnamed. */
static int list_save(struct kap_store *s, const char *name, const struct kap_json *doc,
		     const char *old, char *digest_out, struct kapsel_error **err)
{
	cleanup_free char *buf = kap_json_dump(doc, false);
	char digest[KAP_DIGEST_LEN + 1];
	if (!buf)
		return kap_error(err, ENOMEM, "manifest list %s", name);
	int r = kap_store_put_blob(s, buf, strlen(buf), digest, err);
	if (r < 0 || (r = kap_store_tag(s, name, digest, err)) < 0)
		return r;
	if (old && strcmp(old, digest)) {
		char *v[] = {(char *)old};
		cleanup_error struct kapsel_error *e = NULL;
		(void)kap_store_gc_some(s, v, 1, NULL, 0, &e); /* prune gets it otherwise */
	}
	if (digest_out)
		memcpy(digest_out, digest, KAP_DIGEST_LEN + 1);
	return 0;
}

static struct kap_json *new_index(void)
{
	struct kap_json *doc = kap_json_new_object();
	if (!doc)
		return NULL;
	kap_json_set(doc, "schemaVersion", kap_json_new_int64(2));
	kap_json_set(doc, "mediaType", kap_json_new_string(KAP_MT_OCI_INDEX));
	kap_json_set(doc, "manifests", kap_json_new_array());
	return doc;
}

static const char *platform_field(const struct kap_json *entry, const char *key)
{
	struct kap_json *v = kap_json_get(kap_json_get(entry, "platform"), key);
	return kap_json_type(v) == KAP_JSON_STRING ? kap_json_string(v) : NULL;
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* "linux/arm64/v8" of an entry, for messages. */
static void platform_string(const struct kap_json *e, char *out, size_t len)
{
	const char *os = platform_field(e, "os"), *arch = platform_field(e, "architecture");
	const char *variant = platform_field(e, "variant");
	snprintf(out, len, "%s/%s%s%s", os ? os : "?", arch ? arch : "?", variant ? "/" : "",
		 variant ? variant : "");
}

/*
 * Add entry (a descriptor object; the list takes it) to the list's manifests, replacing the
 * entry of the same digest; -EEXIST for another manifest of the same platform.
 */
static int list_put_entry(struct kap_json *doc, const char *list, struct kap_json *entry,
			  struct kapsel_error **err)
{
	cleanup_json struct kap_json *e = entry;
	struct kap_json *old = kap_json_get(doc, "manifests");
	const char *digest = kap_json_string(kap_json_get(e, "digest"));
	const char *os = platform_field(e, "os"), *arch = platform_field(e, "architecture");
	/* Docker's attestation entries say unknown/unknown: several are normal. */
	bool real = os && arch && strcmp(os, "unknown") && strcmp(arch, "unknown");
	struct kap_json *fresh = kap_json_new_array();
	if (!fresh)
		return kap_error(err, ENOMEM, "manifest list %s", list);
	for (size_t i = 0; i < kap_json_array_len(old); i++) {
		struct kap_json *o = kap_json_array_at(old, i);
		const char *od = kap_json_string(kap_json_get(o, "digest"));
		if (od && !strcmp(od, digest))
			continue;
		if (real && same(os, platform_field(o, "os")) &&
		    same(arch, platform_field(o, "architecture")) &&
		    same(platform_field(e, "variant"), platform_field(o, "variant"))) {
			char p[192];
			platform_string(e, p, sizeof(p));
			kap_json_put(fresh);
			return kap_error_plain(err, EEXIST,
					       "manifest list %s already has %s for %s (adding "
					       "%.19s): remove it first with `kapsel manifest "
					       "remove %s %s`",
					       list, od ? od : "an entry", p, digest, list,
					       od ? od : "DIGEST");
		}
		kap_json_append(fresh, kap_json_get_ref(o));
	}
	kap_json_append(fresh, steal_ptr(e));
	kap_json_set(doc, "manifests", fresh);
	return 0;
}

/* The index descriptor of a stored image manifest, its platform from its config unless o
 * overrides it (image-spec image-index.md "platform"). */
static int manifest_entry(struct kap_store *s, const char *image, const char *digest,
			  const struct kapsel_manifest_add_options *o, struct kap_json **out,
			  struct kapsel_error **err)
{
	cleanup_free char *buf = NULL, *cbuf = NULL;
	size_t len, clen;
	cleanup_json struct kap_json *doc = NULL, *cfg = NULL;
	struct kap_manifest m = {0};
	int r = kap_store_read_blob(s, digest, &buf, &len, err);
	if (r < 0 || (r = kap_manifest_parse(buf, len, &m, err)) < 0 ||
	    (r = kap_json_parse(buf, len, "manifest", &doc, err)) < 0 ||
	    (r = kap_store_read_blob(s, m.config.digest, &cbuf, &clen, err)) < 0 ||
	    (r = kap_json_parse(cbuf, clen, "image config", &cfg, err)) < 0) {
		kap_manifest_clear(&m);
		return kap_error_wrap(err, "image %s", image);
	}
	const char *mt = kap_json_string(kap_json_get(doc, "mediaType"));
	if (!mt)
		mt = !strcmp(m.config.media_type, KAP_MT_DOCKER_CONFIG) ? KAP_MT_DOCKER_MANIFEST
									: KAP_MT_OCI_MANIFEST;
	kap_manifest_clear(&m);
	struct kap_json *v;
	const char *os = o && o->os ? o->os : NULL, *arch = o && o->arch ? o->arch : NULL;
	const char *variant = o && o->variant ? o->variant : NULL;
	if (!os && kap_json_type(v = kap_json_get(cfg, "os")) == KAP_JSON_STRING)
		os = kap_json_string(v);
	if (!arch && kap_json_type(v = kap_json_get(cfg, "architecture")) == KAP_JSON_STRING)
		arch = kap_json_string(v);
	if (!variant && !(o && o->arch) &&
	    kap_json_type(v = kap_json_get(cfg, "variant")) == KAP_JSON_STRING)
		variant = kap_json_string(v);
	if (!os || !*os || !arch || !*arch)
		return kap_error_plain(err, EINVAL,
				       "image %s: its config names no os or architecture; give "
				       "--os and --arch",
				       image);
	struct kap_json *e = kap_json_new_object(), *p = kap_json_new_object();
	if (!e || !p) {
		kap_json_put(e);
		kap_json_put(p);
		return kap_error(err, ENOMEM, "manifest add");
	}
	kap_json_set(e, "mediaType", kap_json_new_string(mt));
	kap_json_set(e, "digest", kap_json_new_string(digest));
	kap_json_set(e, "size", kap_json_new_int64((int64_t)len));
	kap_json_set(p, "architecture", kap_json_new_string(arch));
	kap_json_set(p, "os", kap_json_new_string(os));
	if (variant && *variant)
		kap_json_set(p, "variant", kap_json_new_string(variant));
	kap_json_set(e, "platform", p);
	*out = e;
	return 0;
}

static bool is_named(const struct kap_store_image *list, size_t n, const char *digest)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].manifest_digest, digest))
			return true;
	return false;
}

/*
 * The unnamed index a pull or load came through that lists manifest `digest` (the newest
 * when several do): pull names the platform manifest and keeps the index as a blob.
 */
static int pulled_index(struct kap_store *s, const char *digest, char *out,
			struct kapsel_error **err)
{
	struct kap_store_image *names = NULL;
	size_t n = 0;
	int r = kap_store_list(s, &names, &n, err);
	if (r < 0)
		return r;
	cleanup_free char *dir = NULL;
	if (asprintf(&dir, "%s/blobs/sha256", kap_store_path(s)) < 0) {
		kap_store_images_free(names, n);
		return kap_error(err, ENOMEM, "manifest add");
	}
	DIR *d = opendir(dir);
	if (!d) {
		kap_store_images_free(names, n);
		return kap_error(err, errno, "open %s", dir);
	}
	struct timespec best = {0};
	bool found = false;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		char blob[KAP_DIGEST_LEN + 1];
		if (strlen(de->d_name) != 64 ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_size > INDEX_MAX || st.st_size < 2)
			continue;
		snprintf(blob, sizeof(blob), "sha256:%s", de->d_name);
		if (!strcmp(blob, digest) || is_named(names, n, blob))
			continue;
		cleanup_free char *buf = NULL;
		size_t len;
		cleanup_close int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
		char first = 0;
		if (fd < 0 || pread(fd, &first, 1, 0) != 1 || first != '{')
			continue;
		if (kap_store_read_blob(s, blob, &buf, &len, NULL) < 0 || !strstr(buf, digest))
			continue;
		struct kap_index idx;
		if (kap_index_parse(buf, len, &idx, NULL) < 0)
			continue;
		bool lists = false;
		for (size_t i = 0; i < idx.n_manifests; i++)
			lists |= !strcmp(idx.manifests[i].digest, digest);
		kap_index_clear(&idx);
		if (lists &&
		    (!found || st.st_mtim.tv_sec > best.tv_sec ||
		     (st.st_mtim.tv_sec == best.tv_sec && st.st_mtim.tv_nsec > best.tv_nsec))) {
			best = st.st_mtim;
			memcpy(out, blob, sizeof(blob));
			found = true;
		}
	}
	closedir(d);
	kap_store_images_free(names, n);
	return found ? 1 : 0;
}

/* Add image (a stored image, or with o->all every entry of the index it names) to doc. */
static int add_image(struct kap_store *s, const char *list, struct kap_json *doc, const char *image,
		     const struct kapsel_manifest_add_options *o, struct kapsel_error **err)
{
	char digest[KAP_DIGEST_LEN + 1], idigest[KAP_DIGEST_LEN + 1];
	cleanup_json struct kap_json *idoc = NULL;
	int r;
	if ((r = kap_image_ensure_default(s, image, err)) < 0 ||
	    (r = kap_image_find(s, image, NULL, digest, err)) < 0 ||
	    (r = kap_store_read_index(s, digest, &idoc, err)) < 0)
		return r;
	bool all = o && o->all;
	if (r == 0 && all) {
		/* A pulled multi-platform image: its name is on the manifest pull picked. */
		if ((r = pulled_index(s, digest, idigest, err)) < 0)
			return r;
		if (r == 0)
			return kap_error_plain(err, EINVAL,
					       "manifest add --all: %s is a single image, not a "
					       "pulled index (add it without --all)",
					       image);
		if ((r = kap_store_read_index(s, idigest, &idoc, err)) < 0)
			return r;
		memcpy(digest, idigest, sizeof(digest));
	}
	if (!idoc) {
		struct kap_json *e;
		if ((r = manifest_entry(s, image, digest, o, &e, err)) < 0)
			return r;
		return list_put_entry(doc, list, e, err);
	}
	struct kap_json *ms = kap_json_get(idoc, "manifests");
	if (all) {
		/* As listed: entries whose manifest the store lacks fail at push, naming it. */
		r = 0;
		for (size_t i = 0; r == 0 && i < kap_json_array_len(ms); i++)
			r = list_put_entry(doc, list, kap_json_get_ref(kap_json_array_at(ms, i)),
					   err);
		return r;
	}
	/* An index without --all: the entry for the platform asked (default linux/amd64). */
	cleanup_free char *buf = NULL;
	size_t len;
	struct kap_index idx;
	const struct kap_descriptor *sel;
	char platform[192];
	snprintf(platform, sizeof(platform), "%s/%s%s%s", o && o->os ? o->os : "linux",
		 o && o->arch ? o->arch : "amd64", o && o->variant ? "/" : "",
		 o && o->variant ? o->variant : "");
	if ((r = kap_store_read_blob(s, digest, &buf, &len, err)) < 0 ||
	    (r = kap_index_parse(buf, len, &idx, err)) < 0)
		return r;
	if ((r = kap_index_select(&idx, platform, &sel, err)) < 0) {
		kap_index_clear(&idx);
		return kap_error_wrap(err, "manifest add %s", image);
	}
	for (size_t i = 0; i < kap_json_array_len(ms); i++) {
		struct kap_json *e = kap_json_array_at(ms, i);
		if (!strcmp(kap_json_string(kap_json_get(e, "digest")), sel->digest)) {
			r = list_put_entry(doc, list, kap_json_get_ref(e), err);
			break;
		}
	}
	kap_index_clear(&idx);
	return r;
}

API int kapsel_manifest_create(const char *store, const char *list, char *const *images, size_t n,
			       bool all, char *digest_out, struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_image_local_name(list, &name, err);
	if (r < 0)
		return kap_error_wrap(err, "manifest create");
	if ((r = kap_store_open(store, &s, err)) < 0)
		return r;
	if (kap_store_resolve(s, name, digest, NULL) == 0)
		return kap_error_plain(
		    err, EEXIST,
		    "manifest create %s: the name is in use (by %s); remove it "
		    "first",
		    name, kap_store_is_index(s, digest) ? "a manifest list" : "an image");
	cleanup_json struct kap_json *doc = new_index();
	if (!doc)
		return kap_error(err, ENOMEM, "manifest create");
	struct kapsel_manifest_add_options o = {.all = all};
	for (size_t i = 0; i < n; i++)
		if ((r = add_image(s, name, doc, images[i], &o, err)) < 0)
			return r;
	return list_save(s, name, doc, NULL, digest_out, err);
}

API int kapsel_manifest_add(const char *store, const char *list, const char *image,
			    const struct kapsel_manifest_add_options *o, char *digest_out,
			    struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	cleanup_json struct kap_json *doc = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = list_find(s, list, &name, digest, &doc, err)) < 0 ||
	    (r = add_image(s, name, doc, image, o, err)) < 0)
		return r;
	return list_save(s, name, doc, digest, digest_out, err);
}

API int kapsel_manifest_remove(const char *store, const char *list, const char *entry,
			       char *digest_out, struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	cleanup_json struct kap_json *doc = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = list_find(s, list, &name, digest, &doc, err)) < 0)
		return r;
	struct kap_json *old = kap_json_get(doc, "manifests"), *fresh = kap_json_new_array();
	if (!fresh)
		return kap_error(err, ENOMEM, "manifest remove");
	size_t hits = 0;
	const char *want = !strncmp(entry, "sha256:", 7) ? entry : NULL;
	for (size_t i = 0; i < kap_json_array_len(old); i++) {
		struct kap_json *e = kap_json_array_at(old, i);
		const char *d = kap_json_string(kap_json_get(e, "digest"));
		/* The full digest, or (as podman shows them) its hex alone. */
		if (d && (want ? !strcmp(d, want) : !strcmp(d + 7, entry))) {
			hits++;
			continue;
		}
		kap_json_append(fresh, kap_json_get_ref(e));
	}
	kap_json_set(doc, "manifests", fresh);
	if (!hits)
		return kap_error_plain(err, ENOENT, "manifest remove: %s does not list %s", name,
				       entry);
	return list_save(s, name, doc, digest, digest_out, err);
}

API int kapsel_manifest_inspect(const char *store, const char *list, char **json,
				struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_json struct kap_json *doc = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_store_lock(s, false, err)) < 0)
		return r;
	r = list_find(s, list, NULL, digest, &doc, err);
	kap_store_unlock(s);
	if (r < 0)
		return r;
	if (!(*json = kap_json_dump(doc, true)))
		return kap_error(err, ENOMEM, "manifest inspect");
	return 0;
}

API int kapsel_manifest_delete(const char *store, const char *list, struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	cleanup_free char *name = NULL;
	cleanup_json struct kap_json *doc = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = list_find(s, list, &name, digest, &doc, err)) < 0)
		return r;
	kap_store_close(steal_ptr(s));
	/* rmi of a list removes the list alone: the images it names keep their names. */
	return kapsel_image_remove(store, name, false, err);
}
