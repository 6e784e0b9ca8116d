/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Names and history of stored images: `kapsel tag`, `kapsel untag`, `kapsel image history`.
 * A name is an entry of images.json (store.c, which locks it); the blobs stay where they are,
 * so untagging the last name leaves an image for `kapsel image prune` as podman does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/image.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

static void store_closep(struct kap_store **s)
{
	if (*s)
		kap_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(store_closep)))

int kap_image_local_name(const char *in, char **out, struct kapsel_error **err)
{
	cleanup_free char *full = NULL;
	const char *slash = strchr(in, '/');
	/* podman: a name without a registry part is a local image, localhost/NAME. */
	bool has_registry =
	    slash && (memchr(in, '.', (size_t)(slash - in)) ||
		      memchr(in, ':', (size_t)(slash - in)) || !strncmp(in, "localhost/", 10));
	if (!has_registry && asprintf(&full, "localhost/%s", in) < 0)
		return kap_error(err, ENOMEM, "name %s", in);
	struct kap_ref ref;
	int r = kap_ref_parse(full ? full : in, &ref, err);
	if (r < 0)
		return r;
	if (ref.digest) {
		kap_ref_clear(&ref);
		return kap_error_plain(err, EINVAL, "name %s: a digest cannot be a name", in);
	}
	*out = kap_ref_string(&ref);
	kap_ref_clear(&ref);
	return *out ? 0 : kap_error(err, ENOMEM, "name %s", in);
}

int kap_image_find(struct kap_store *s, const char *image, char **name, char *digest,
		   struct kapsel_error **err)
{
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_store_lookup(s, image, name, digest, &e);
	if (r == -ENOENT) {
		cleanup_free char *local = NULL;
		if (kap_image_local_name(image, &local, NULL) == 0 &&
		    kap_store_lookup(s, local, name, digest, NULL) == 0)
			return 0;
	}
	if (r < 0)
		*err = steal_ptr(e);
	return r;
}

static int lookup(struct kap_store *s, const char *image, char *digest, struct kapsel_error **err)
{
	return kap_image_find(s, image, NULL, digest, err);
}

API int kapsel_image_tag(const char *store, const char *image, const char *name,
			 struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	cleanup_free char *canon = NULL;
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_image_ensure_default(s, image, err)) < 0 ||
	    (r = lookup(s, image, digest, err)) < 0 ||
	    (r = kap_image_local_name(name, &canon, err)) < 0)
		return r;
	return kap_store_tag(s, canon, digest, err);
}

API int kapsel_image_untag(const char *store, const char *image, char *const *names, size_t n,
			   struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = lookup(s, image, digest, err)) < 0)
		return r;
	struct kap_store_image *list;
	size_t nl;
	if ((r = kap_store_list(s, &list, &nl, err)) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		cleanup_free char *canon = NULL;
		char other[KAP_DIGEST_LEN + 1];
		if ((r = kap_image_local_name(names[i], &canon, err)) < 0)
			break;
		bool mine = kap_store_resolve(s, canon, other, NULL) == 0 && !strcmp(other, digest);
		if (!mine) {
			r = kap_error_plain(err, ENOENT, "%s is not a name of image %s", names[i],
					    image);
			break;
		}
		r = kap_store_untag(s, canon, err);
	}
	/* No names given: every name of the image goes. */
	for (size_t i = 0; n == 0 && i < nl && r == 0; i++)
		if (!strcmp(list[i].manifest_digest, digest))
			r = kap_store_untag(s, list[i].name, err);
	kap_store_images_free(list, nl);
	return r;
}

API int kapsel_image_history(const char *store, const char *image,
			     struct kapsel_history_entry **out, size_t *n,
			     struct kapsel_error **err)
{
	cleanup_store struct kap_store *s = NULL;
	char digest[KAP_DIGEST_LEN + 1], resolved[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_image_ensure_default(s, image, err)) < 0 ||
	    (r = lookup(s, image, digest, err)) < 0 ||
	    (r = kap_store_resolve_manifest(s, digest, resolved, err)) < 0)
		return r;
	cleanup_free char *mbuf = NULL, *cbuf = NULL;
	size_t mlen, clen;
	struct kap_manifest m = {0};
	if ((r = kap_store_read_blob(s, resolved, &mbuf, &mlen, err)) < 0 ||
	    (r = kap_manifest_parse(mbuf, mlen, &m, err)) < 0)
		return r;
	cleanup_json struct kap_json *cfg = NULL;
	if ((r = kap_store_read_blob(s, m.config.digest, &cbuf, &clen, err)) < 0 ||
	    (r = kap_json_parse(cbuf, clen, "image config", &cfg, err)) < 0) {
		kap_manifest_clear(&m);
		return r;
	}
	struct kap_json *hist = kap_json_get(cfg, "history");
	size_t nh = hist && kap_json_type(hist) == KAP_JSON_ARRAY ? kap_json_array_len(hist) : 0;
	/* Without a history (allowed by config.md), one line per layer. */
	size_t total = nh ? nh : m.n_layers;
	struct kapsel_history_entry *v = calloc(total + 1, sizeof(*v));
	if (!v) {
		kap_manifest_clear(&m);
		return kap_error(err, ENOMEM, "history");
	}
	size_t layer = 0;
	for (size_t i = 0; i < total; i++) {
		struct kapsel_history_entry *e = &v[total - 1 - i]; /* newest first */
		struct kap_json *h = nh ? kap_json_array_at(hist, i) : NULL;
		const char *created = h ? kap_json_string(kap_json_get(h, "created")) : NULL;
		const char *by = h ? kap_json_string(kap_json_get(h, "created_by")) : NULL;
		const char *comment = h ? kap_json_string(kap_json_get(h, "comment")) : NULL;
		struct kap_json *empty = h ? kap_json_get(h, "empty_layer") : NULL;
		e->empty_layer =
		    empty && kap_json_type(empty) == KAP_JSON_BOOL && kap_json_bool(empty);
		if (!e->empty_layer && layer < m.n_layers)
			e->size = m.layers[layer++].size;
		e->created = strdup(created ? created : "");
		e->created_by = strdup(by ? by : "");
		e->comment = strdup(comment ? comment : "");
		if (!e->created || !e->created_by || !e->comment) {
			kapsel_history_free(v, total);
			kap_manifest_clear(&m);
			return kap_error(err, ENOMEM, "history");
		}
	}
	kap_manifest_clear(&m);
	*out = v;
	*n = total;
	return 0;
}

API void kapsel_history_free(struct kapsel_history_entry *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].created);
		free(v[i].created_by);
		free(v[i].comment);
	}
	free(v);
}
