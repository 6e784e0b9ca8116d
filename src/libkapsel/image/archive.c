/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local image sources: an OCI image layout directory (image-spec image-layout.md), the same as a
 * tarball (oci-archive), and a docker-archive as `docker save` / `podman save` write it
 * (manifest.json listing Config and Layers paths, RepoTags). `save` writes an oci-archive.
 *
 * Loading is all or nothing. Every blob is copied into a store temp file while its digest is
 * computed; every layer is unpacked into a store temp directory and its diff_id checked; only
 * when the whole input has been verified are blobs and layers renamed into place and the names
 * tagged. A hostile or broken archive leaves the store as it was.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

#define SMALL_MAX     (16u << 20)
#define MAX_FILES     100000
#define ANNOT_REFNAME "org.opencontainers.image.ref.name"
#define ANNOT_CTRD    "io.containerd.image.name"

struct staged_blob {
	char digest[KAP_DIGEST_LEN + 1];
	struct kap_blob_writer *w; /* NULL: already in the store */
	int64_t size;
	bool used;
};

struct file_entry { /* docker-archive: path in the tarball -> blob, or a link */
	char *path;
	char *link; /* symlink target (relative to the entry's directory) or hardlink target */
	bool hard;
	char digest[KAP_DIGEST_LEN + 1];
};

struct staged_layer {
	char diff_id[KAP_DIGEST_LEN + 1];
	struct kap_layer_stage *st;
};

struct loader {
	struct kap_store *s;
	const char *path;
	int dirfd; /* layout directory, or -1 for tarballs */
	struct staged_blob *blobs;
	size_t n_blobs;
	struct file_entry *files;
	size_t n_files;
	struct staged_layer *layers;
	size_t n_layers;
	char *oci_layout, *index_json, *manifest_json;
	size_t index_len, manifest_len;
	char **names;	/* to tag */
	char **digests; /* ... with these manifests */
	size_t n_names;
};

static void loader_clear(struct loader *l)
{
	for (size_t i = 0; i < l->n_blobs; i++)
		kap_blob_writer_abort(l->blobs[i].w);
	free(l->blobs);
	for (size_t i = 0; i < l->n_files; i++) {
		free(l->files[i].path);
		free(l->files[i].link);
	}
	free(l->files);
	for (size_t i = 0; i < l->n_layers; i++)
		kap_store_layer_discard(l->layers[i].st);
	free(l->layers);
	free(l->oci_layout);
	free(l->index_json);
	free(l->manifest_json);
	for (size_t i = 0; i < l->n_names; i++) {
		free(l->names[i]);
		free(l->digests[i]);
	}
	free(l->names);
	free(l->digests);
	if (l->dirfd >= 0)
		close(l->dirfd);
}

static void *grow(void *v, size_t n, size_t size)
{
	/* Doubling at powers of two: callers grow by one. */
	if (n && (n & (n - 1)))
		return v;
	return realloc(v, (n ? n * 2 : 8) * size);
}

static struct staged_blob *find_blob(struct loader *l, const char *digest)
{
	for (size_t i = 0; i < l->n_blobs; i++)
		if (!strcmp(l->blobs[i].digest, digest))
			return &l->blobs[i];
	return NULL;
}

static int add_blob(struct loader *l, const char *digest, struct kap_blob_writer *w, int64_t size,
		    struct staged_blob **out, struct kapsel_error **err)
{
	struct staged_blob *b = grow(l->blobs, l->n_blobs, sizeof(*b));
	if (!b) {
		kap_blob_writer_abort(w);
		return kap_error(err, ENOMEM, "load");
	}
	l->blobs = b;
	b = &l->blobs[l->n_blobs++];
	memset(b, 0, sizeof(*b));
	memcpy(b->digest, digest, KAP_DIGEST_LEN + 1);
	b->w = w;
	b->size = size;
	if (out)
		*out = b;
	return 0;
}

/* Copy `len` bytes from fd (or the tar entry) into a new staged blob. */
static int stage_stream(struct loader *l, int fd, struct kap_tar *t, const char *expect,
			int64_t size, char *digest_out, struct kapsel_error **err)
{
	struct kap_blob_writer *w;
	int r = kap_blob_writer_new(l->s, expect, size, &w, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = t ? NULL : malloc(1u << 20);
	if (!t && !buf) {
		kap_blob_writer_abort(w);
		return kap_error(err, ENOMEM, "load");
	}
	for (;;) {
		const void *data = buf;
		ssize_t n;
		if (t) {
			n = kap_tar_read(t, &data, err);
		} else {
			while ((n = read(fd, buf, 1u << 20)) < 0 && errno == EINTR)
				;
			if (n < 0)
				r = kap_error(err, errno, "read %s", expect ? expect : "blob");
		}
		if (n < 0) {
			kap_blob_writer_abort(w);
			return (int)(r < 0 ? r : n);
		}
		if (n == 0)
			break;
		if ((r = kap_blob_writer_write(w, data, (size_t)n, err)) < 0) {
			kap_blob_writer_abort(w);
			return r;
		}
	}
	char digest[KAP_DIGEST_LEN + 1];
	if ((r = kap_blob_writer_check(w, digest, err)) < 0) {
		kap_blob_writer_abort(w);
		return r;
	}
	if (digest_out)
		memcpy(digest_out, digest, sizeof(digest));
	if (find_blob(l, digest)) {
		kap_blob_writer_abort(w); /* the same content twice */
		return 0;
	}
	return add_blob(l, digest, w, size, NULL, err);
}

/* A blob the import needs: staged already, in the store, or (layout dirs) copied now. */
static int need_blob(struct loader *l, const char *digest, struct staged_blob **out,
		     struct kapsel_error **err)
{
	int r = kap_digest_validate(digest, "blob", err);
	if (r < 0)
		return r;
	struct staged_blob *b = find_blob(l, digest);
	if (!b && kap_store_has_blob(l->s, digest)) {
		if ((r = add_blob(l, digest, NULL, -1, &b, err)) < 0)
			return r;
	}
	if (!b && l->dirfd >= 0) {
		char rel[96];
		snprintf(rel, sizeof(rel), "blobs/sha256/%s", digest + 7);
		cleanup_error struct kapsel_error *e = NULL;
		cleanup_close int fd =
		    kap_fs_open_in_root(l->dirfd, rel, O_RDONLY | O_NOFOLLOW, 0, &e);
		if (fd < 0)
			return kap_error_plain(err, ENOENT, "%s: blob %s: %s", l->path, digest,
					       e->msg);
		if ((r = stage_stream(l, fd, NULL, digest, -1, NULL, err)) < 0)
			return r;
		b = find_blob(l, digest);
	}
	if (!b)
		return kap_error_plain(err, ENOENT, "%s: blob %s is missing", l->path, digest);
	b->used = true;
	*out = b;
	return 0;
}

/* An fd positioned at the start of the blob's content. */
static int blob_fd(struct loader *l, struct staged_blob *b, struct kapsel_error **err)
{
	if (!b->w)
		return kap_store_open_blob(l->s, b->digest, err);
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", kap_blob_writer_fd(b->w));
	int fd = open(proc, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "reopen staged blob %s", b->digest);
	return fd;
}

static int read_small(struct loader *l, const char *digest, char **buf, size_t *len,
		      struct kapsel_error **err)
{
	struct staged_blob *b;
	int r = need_blob(l, digest, &b, err);
	if (r < 0)
		return r;
	if (!b->w)
		return kap_store_read_blob(l->s, digest, buf, len, err);
	cleanup_close int fd = blob_fd(l, b, err);
	if (fd < 0)
		return fd;
	char proc[64];
	return kap_fs_read_file(AT_FDCWD, kap_fs_fd_path(fd, proc), SMALL_MAX, buf, len, err);
}

static bool have_layer(struct loader *l, const char *diff_id)
{
	for (size_t i = 0; i < l->n_layers; i++)
		if (!strcmp(l->layers[i].diff_id, diff_id))
			return true;
	return kap_store_has_layer(l->s, diff_id);
}

static int stage_layer(struct loader *l, const struct kap_descriptor *d, const char *diff_id,
		       bool sniff, struct kapsel_error **err)
{
	struct staged_blob *b;
	int r = need_blob(l, d->digest, &b, err);
	if (r < 0 || have_layer(l, diff_id))
		return r;
	enum kap_compression c = KAP_COMP_NONE;
	cleanup_close int fd = blob_fd(l, b, err);
	if (fd < 0)
		return fd;
	if (sniff) {
		unsigned char magic[4];
		ssize_t n = pread(fd, magic, sizeof(magic), 0);
		c = kap_compression_detect(magic, n > 0 ? (size_t)n : 0);
	} else if ((r = kap_layer_compression(d->media_type, &c, err)) < 0) {
		return r;
	}
	struct staged_layer *sl = grow(l->layers, l->n_layers, sizeof(*sl));
	if (!sl)
		return kap_error(err, ENOMEM, "load");
	l->layers = sl;
	sl = &l->layers[l->n_layers];
	memset(sl, 0, sizeof(*sl));
	if ((r = kap_store_layer_stage(l->s, fd, c, diff_id, &sl->st, err)) < 0)
		return kap_error_wrap(err, "%s: layer %s", l->path, d->digest);
	memcpy(sl->diff_id, diff_id, KAP_DIGEST_LEN + 1);
	l->n_layers++;
	return 0;
}

/* A manifest and everything it references, staged and verified. */
static int import_manifest(struct loader *l, const char *digest, bool sniff,
			   struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	struct kap_manifest m;
	struct kap_image_config c;
	int r = read_small(l, digest, &buf, &len, err);
	if (r < 0)
		return r;
	if ((r = kap_manifest_parse(buf, len, &m, err)) < 0)
		return kap_error_wrap(err, "%s: manifest %s", l->path, digest);
	free(buf);
	buf = NULL;
	if ((r = read_small(l, m.config.digest, &buf, &len, err)) < 0 ||
	    (r = kap_image_config_parse(buf, len, &c, err)) < 0) {
		kap_manifest_clear(&m);
		return r < 0 && err && *err ? kap_error_wrap(err, "%s", l->path) : r;
	}
	if (c.n_diff_ids != m.n_layers)
		r = kap_error_plain(err, EINVAL, "%s: image %s: %zu layers but %zu diff_ids",
				    l->path, digest, m.n_layers, c.n_diff_ids);
	for (size_t i = 0; r == 0 && i < m.n_layers; i++)
		r = stage_layer(l, &m.layers[i], c.diff_ids[i], sniff, err);
	kap_manifest_clear(&m);
	kap_image_config_clear(&c);
	return r;
}

static int add_name(struct loader *l, const char *name, const char *digest,
		    struct kapsel_error **err)
{
	for (size_t i = 0; i < l->n_names; i++)
		if (!strcmp(l->names[i], name)) {
			/* Later entries win, as a later `tag` would. */
			free(l->digests[i]);
			l->digests[i] = strdup(digest);
			return l->digests[i] ? 0 : kap_error(err, ENOMEM, "load");
		}
	char **a = grow(l->names, l->n_names, sizeof(char *));
	if (a)
		l->names = a;
	char **b = grow(l->digests, l->n_names, sizeof(char *));
	if (b)
		l->digests = b;
	if (!a || !b)
		return kap_error(err, ENOMEM, "load");
	l->names[l->n_names] = strdup(name);
	l->digests[l->n_names] = strdup(digest);
	l->n_names++;
	if (!l->names[l->n_names - 1] || !l->digests[l->n_names - 1])
		return kap_error(err, ENOMEM, "load");
	return 0;
}

/* "localhost/<file name without extensions>", for images that carry no name. */
static char *fallback_repo(const char *path)
{
	const char *base = strrchr(path, '/');
	char buf[128];
	size_t n = 0;
	base = base && base[1] ? base + 1 : path;
	for (const char *p = base; *p && *p != '.' && n < sizeof(buf) - 1; p++) {
		char ch = *p;
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
			ch = '-';
		buf[n++] = ch;
	}
	while (n && buf[n - 1] == '-')
		n--;
	buf[n] = '\0';
	const char *start = buf;
	while (*start == '-')
		start++;
	char *out = NULL;
	if (asprintf(&out, "localhost/%s", *start ? start : "image") < 0)
		return NULL;
	return out;
}

/* Canonical store name from a reference, or NULL if it does not parse. */
static char *canonical(const char *ref)
{
	struct kap_ref r;
	if (kap_ref_parse(ref, &r, NULL) < 0)
		return NULL;
	char *s = kap_ref_string(&r);
	kap_ref_clear(&r);
	return s;
}

static int load_oci(struct loader *l, struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int r = kap_json_parse(l->index_json, l->index_len, "index.json", &doc, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", l->path);
	struct kap_index idx;
	if ((r = kap_index_parse(l->index_json, l->index_len, &idx, err)) < 0)
		return kap_error_wrap(err, "%s: index.json", l->path);
	struct kap_json *list = kap_json_get(doc, "manifests");
	for (size_t i = 0; r == 0 && i < idx.n_manifests; i++) {
		const struct kap_descriptor *d = &idx.manifests[i];
		char digest[KAP_DIGEST_LEN + 1];
		memcpy(digest, d->digest, sizeof(digest));
		if (!strcmp(d->media_type, KAP_MT_OCI_INDEX) ||
		    !strcmp(d->media_type, KAP_MT_DOCKER_LIST)) {
			cleanup_free char *buf = NULL;
			size_t len;
			struct kap_index sub;
			const struct kap_descriptor *sel;
			if ((r = read_small(l, digest, &buf, &len, err)) < 0)
				break;
			if ((r = kap_index_parse(buf, len, &sub, err)) < 0)
				break;
			if ((r = kap_index_select(&sub, NULL, &sel, err)) == 0)
				memcpy(digest, sel->digest, sizeof(digest));
			kap_index_clear(&sub);
			if (r < 0)
				break;
		}
		if ((r = import_manifest(l, digest, false, err)) < 0)
			break;
		struct kap_json *ann = kap_json_get(kap_json_array_at(list, i), "annotations");
		struct kap_json *full = kap_json_get(ann, ANNOT_CTRD);
		struct kap_json *tag = kap_json_get(ann, ANNOT_REFNAME);
		const char *fs =
		    kap_json_type(full) == KAP_JSON_STRING ? kap_json_string(full) : NULL;
		const char *ts =
		    kap_json_type(tag) == KAP_JSON_STRING ? kap_json_string(tag) : NULL;
		cleanup_free char *name = NULL;
		if (fs) {
			name = canonical(fs);
		} else if (ts && strpbrk(ts, "/:@")) {
			/* image-layout.md allows a full reference in ref.name (skopeo, buildah). */
			name = canonical(ts);
		} else {
			cleanup_free char *repo = fallback_repo(l->path);
			char *joined = NULL;
			if (repo && asprintf(&joined, "%s:%s", repo, ts ? ts : "latest") >= 0)
				name = canonical(joined);
			free(joined);
		}
		if (!name) {
			r = kap_error_plain(err, EINVAL,
					    "%s: manifests[%zu]: invalid image name \"%s\"",
					    l->path, i,
					    fs	 ? fs
					    : ts ? ts
						 : "");
			break;
		}
		r = add_name(l, name, digest, err);
	}
	kap_index_clear(&idx);
	return r;
}

static struct file_entry *find_file(struct loader *l, const char *path)
{
	for (size_t i = 0; i < l->n_files; i++)
		if (!strcmp(l->files[i].path, path))
			return &l->files[i];
	return NULL;
}

/* docker-archive paths, following the symlinks docker writes for shared layers. */
static int file_digest(struct loader *l, const char *path, char *digest, struct kapsel_error **err)
{
	char cur[PATH_MAX];
	snprintf(cur, sizeof(cur), "%s", path);
	for (int hops = 0; hops < 16; hops++) {
		struct file_entry *f = find_file(l, cur);
		if (!f)
			break;
		if (!f->link) {
			memcpy(digest, f->digest, KAP_DIGEST_LEN + 1);
			return 0;
		}
		char next[PATH_MAX * 2];
		const char *slash = strrchr(cur, '/');
		if (f->hard || f->link[0] == '/' || !slash)
			snprintf(next, sizeof(next), "%s", f->link + (f->link[0] == '/'));
		else
			snprintf(next, sizeof(next), "%.*s/%s", (int)(slash - cur), cur, f->link);
		/* Normalise "dir/../other/layer.tar". */
		char norm[PATH_MAX] = "";
		size_t n = 0;
		for (char *save = NULL, *c = strtok_r(next, "/", &save); c;
		     c = strtok_r(NULL, "/", &save)) {
			if (!strcmp(c, "."))
				continue;
			if (!strcmp(c, "..")) {
				char *s = strrchr(norm, '/');
				n = s ? (size_t)(s - norm) : 0;
				norm[n] = '\0';
				continue;
			}
			int w = snprintf(norm + n, sizeof(norm) - n, "%s%s", n ? "/" : "", c);
			if (w < 0 || (size_t)w >= sizeof(norm) - n)
				break;
			n += (size_t)w;
		}
		snprintf(cur, sizeof(cur), "%s", norm);
	}
	return kap_error_plain(err, ENOENT, "%s: \"%s\" is not in the archive", l->path, path);
}

static int load_docker(struct loader *l, struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int r = kap_json_parse(l->manifest_json, l->manifest_len, "manifest.json", &doc, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", l->path);
	if (kap_json_type(doc) != KAP_JSON_ARRAY)
		return kap_error_plain(err, EINVAL, "%s: manifest.json: expected an array",
				       l->path);
	for (size_t i = 0; i < kap_json_array_len(doc); i++) {
		struct kap_json *e = kap_json_array_at(doc, i);
		char path[48];
		snprintf(path, sizeof(path), "manifest.json[%zu]", i);
		cleanup_free char *config = NULL;
		cleanup_strv char **layers = NULL, **tags = NULL;
		if ((r = kap_json_read_string(e, path, "Config", &config, err)) < 0 ||
		    (r = kap_json_read_strv(e, path, "Layers", &layers, err)) < 0 ||
		    (r = kap_json_read_strv(e, path, "RepoTags", &tags, err)) < 0)
			return kap_error_wrap(err, "%s", l->path);
		if (!config || !layers)
			return kap_error_plain(
			    err, EINVAL, "%s: %s: Config and Layers are required", l->path, path);
		/* An OCI manifest for it: config and layer blobs are the files' contents. */
		cleanup_json struct kap_json *m = kap_json_new_object();
		struct kap_json *cfg = kap_json_new_object(), *arr = kap_json_new_array();
		if (!m || !cfg || !arr) {
			kap_json_put(cfg);
			kap_json_put(arr);
			return kap_error(err, ENOMEM, "load");
		}
		kap_json_set(m, "schemaVersion", kap_json_new_int64(2));
		kap_json_set(m, "mediaType", kap_json_new_string(KAP_MT_OCI_MANIFEST));
		kap_json_set(m, "config", cfg);
		kap_json_set(m, "layers", arr);
		char digest[KAP_DIGEST_LEN + 1];
		struct staged_blob *b;
		if ((r = file_digest(l, config, digest, err)) < 0 ||
		    (r = need_blob(l, digest, &b, err)) < 0)
			return r;
		kap_json_set(cfg, "mediaType", kap_json_new_string(KAP_MT_OCI_CONFIG));
		kap_json_set(cfg, "digest", kap_json_new_string(digest));
		kap_json_set(cfg, "size", kap_json_new_int64(b->size));
		for (char **p = layers; *p; p++) {
			if ((r = file_digest(l, *p, digest, err)) < 0 ||
			    (r = need_blob(l, digest, &b, err)) < 0)
				return r;
			cleanup_close int fd = blob_fd(l, b, err);
			if (fd < 0)
				return fd;
			unsigned char magic[4];
			ssize_t n = pread(fd, magic, sizeof(magic), 0);
			enum kap_compression c =
			    kap_compression_detect(magic, n > 0 ? (size_t)n : 0);
			static const char *const types[] = {
			    [KAP_COMP_NONE] = "application/vnd.oci.image.layer.v1.tar",
			    [KAP_COMP_GZIP] = "application/vnd.oci.image.layer.v1.tar+gzip",
			    [KAP_COMP_ZSTD] = "application/vnd.oci.image.layer.v1.tar+zstd",
			};
			struct kap_json *d = kap_json_new_object();
			if (!d)
				return kap_error(err, ENOMEM, "load");
			kap_json_set(d, "mediaType", kap_json_new_string(types[c]));
			kap_json_set(d, "digest", kap_json_new_string(digest));
			kap_json_set(d, "size", kap_json_new_int64(b->size));
			kap_json_append(arr, d);
		}
		cleanup_free char *text = kap_json_dump(m, false);
		if (!text)
			return kap_error(err, ENOMEM, "load");
		char mdigest[KAP_DIGEST_LEN + 1];
		struct kap_blob_writer *w;
		if ((r = kap_blob_writer_new(l->s, NULL, (int64_t)strlen(text), &w, err)) < 0)
			return r;
		if ((r = kap_blob_writer_write(w, text, strlen(text), err)) < 0 ||
		    (r = kap_blob_writer_check(w, mdigest, err)) < 0) {
			kap_blob_writer_abort(w);
			return r;
		}
		if (find_blob(l, mdigest))
			kap_blob_writer_abort(w);
		else if ((r = add_blob(l, mdigest, w, (int64_t)strlen(text), NULL, err)) < 0)
			return r;
		if ((r = import_manifest(l, mdigest, true, err)) < 0)
			return r;
		size_t named = 0;
		for (char **t = tags; t && *t; t++) {
			cleanup_free char *name = canonical(*t);
			if (!name)
				return kap_error_plain(err, EINVAL,
						       "%s: %s: invalid RepoTag \"%s\"", l->path,
						       path, *t);
			if ((r = add_name(l, name, mdigest, err)) < 0)
				return r;
			named++;
		}
		if (!named) {
			cleanup_free char *repo = fallback_repo(l->path);
			cleanup_free char *name = NULL;
			if (!repo || asprintf(&name, "%s:latest", repo) < 0)
				return kap_error(err, ENOMEM, "load");
			if ((r = add_name(l, name, mdigest, err)) < 0)
				return r;
		}
	}
	return 0;
}

static int read_entry_small(struct kap_tar *t, const char *path, int64_t size, char **out,
			    size_t *len, struct kapsel_error **err)
{
	if (size < 0 || size > (int64_t)SMALL_MAX)
		return kap_error_plain(err, EFBIG, "archive entry \"%s\": too large", path);
	char *buf = malloc((size_t)size + 1);
	if (!buf)
		return kap_error(err, ENOMEM, "load");
	size_t n = 0;
	for (;;) {
		const void *data;
		ssize_t got = kap_tar_read(t, &data, err);
		if (got < 0) {
			free(buf);
			return (int)got;
		}
		if (got == 0)
			break;
		if (n + (size_t)got > (size_t)size) {
			free(buf);
			return kap_error_plain(err, EFBIG, "archive entry \"%s\": too large", path);
		}
		memcpy(buf + n, data, (size_t)got);
		n += (size_t)got;
	}
	buf[n] = '\0';
	free(*out);
	*out = buf;
	*len = n;
	return 0;
}

static bool is_blob_path(const char *p)
{
	if (strncmp(p, "blobs/sha256/", 13) || strlen(p) != 13 + 64)
		return false;
	for (p += 13; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static int read_tarball(struct loader *l, int fd, struct kapsel_error **err)
{
	unsigned char magic[4];
	ssize_t n = pread(fd, magic, sizeof(magic), 0);
	struct kap_tar *t;
	int r = kap_tar_open(fd, kap_compression_detect(magic, n > 0 ? (size_t)n : 0), &t, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", l->path);
	for (;;) {
		const char *path;
		char type;
		int64_t size;
		if ((r = kap_tar_next(t, &path, &type, &size, err)) <= 0)
			break;
		if (type == 'd')
			continue;
		if (l->n_files + l->n_blobs > MAX_FILES) {
			r = kap_error_plain(err, E2BIG, "more than %d files", MAX_FILES);
			break;
		}
		if (type == 'f' && !strcmp(path, "oci-layout"))
			r = read_entry_small(t, path, size, &l->oci_layout, &(size_t){0}, err);
		else if (type == 'f' && !strcmp(path, "index.json"))
			r = read_entry_small(t, path, size, &l->index_json, &l->index_len, err);
		else if (type == 'f' && !strcmp(path, "manifest.json"))
			r = read_entry_small(t, path, size, &l->manifest_json, &l->manifest_len,
					     err);
		else if (type == 'f' && is_blob_path(path)) {
			char digest[KAP_DIGEST_LEN + 1];
			snprintf(digest, sizeof(digest), "sha256:%s", path + 13);
			if (find_blob(l, digest) || kap_store_has_blob(l->s, digest))
				continue;
			r = stage_stream(l, -1, t, digest, size, NULL, err);
		} else if (type == 'f' || type == 'l' || type == 'h') {
			/* docker-archive: "<hex>.json", "<id>/layer.tar", "<hex>.tar"; links. */
			struct file_entry *f = grow(l->files, l->n_files, sizeof(*f));
			if (!f) {
				r = kap_error(err, ENOMEM, "load");
				break;
			}
			l->files = f;
			f = &l->files[l->n_files];
			memset(f, 0, sizeof(*f));
			if (!(f->path = strdup(path))) {
				r = kap_error(err, ENOMEM, "load");
				break;
			}
			l->n_files++;
			if (type == 'f') {
				r = stage_stream(l, -1, t, NULL, size, f->digest, err);
			} else {
				r = kap_tar_link(t, &f->link, &f->hard, err);
			}
		}
		if (r < 0)
			break;
	}
	kap_tar_close(t);
	if (r < 0)
		return kap_error_wrap(err, "%s", l->path);
	return 0;
}

static int commit(struct loader *l, struct kapsel_error **err)
{
	int r = 0;
	for (size_t i = 0; i < l->n_blobs && r == 0; i++) {
		struct staged_blob *b = &l->blobs[i];
		if (!b->w || !b->used)
			continue;
		r = kap_blob_writer_finish(steal_ptr(b->w), NULL, err);
	}
	for (size_t i = 0; i < l->n_layers && r == 0; i++)
		r = kap_store_layer_commit(steal_ptr(l->layers[i].st), err);
	for (size_t i = 0; i < l->n_names && r == 0; i++)
		r = kap_store_tag(l->s, l->names[i], l->digests[i], err);
	return r;
}

int kap_archive_load(struct kap_store *s, const char *path, char ***names,
		     struct kapsel_error **err)
{
	struct loader l = {.s = s, .path = path, .dirfd = -EBADF};
	struct stat st;
	int r;
	if (names)
		*names = NULL;
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return kap_error(err, errno, "load %s", path);
	if (S_ISDIR(st.st_mode)) {
		l.dirfd = steal_fd(fd);
		size_t len;
		cleanup_error struct kapsel_error *e = NULL;
		r = kap_fs_read_file(l.dirfd, "index.json", SMALL_MAX, &l.index_json, &l.index_len,
				     &e);
		if (r < 0) {
			r = kap_error_plain(err, -r,
					    "load %s: not an OCI image layout (index.json: %s)",
					    path, e->msg);
			goto out;
		}
		kap_fs_read_file(l.dirfd, "oci-layout", 4096, &l.oci_layout, &len, NULL);
	} else if (S_ISREG(st.st_mode)) {
		if ((r = read_tarball(&l, fd, err)) < 0)
			goto out;
	} else {
		r = kap_error_plain(err, EINVAL, "load %s: not a file or directory", path);
		goto out;
	}
	if (l.index_json)
		r = load_oci(&l, err);
	else if (l.manifest_json)
		r = load_docker(&l, err);
	else
		r = kap_error_plain(err, EINVAL,
				    "load %s: neither an OCI layout (index.json) nor a "
				    "docker-archive (manifest.json)",
				    path);
	if (r == 0 && l.n_names == 0)
		r = kap_error_plain(err, EINVAL, "load %s: no images in it", path);
	if (r == 0)
		r = commit(&l, err);
	if (r == 0 && names) {
		*names = calloc(l.n_names + 1, sizeof(char *));
		if (!*names)
			r = kap_error(err, ENOMEM, "load");
		for (size_t i = 0; r == 0 && i < l.n_names; i++)
			(*names)[i] = steal_ptr(l.names[i]);
	}
out:
	loader_clear(&l);
	return r;
}

/* ---- save: oci-archive ---- */
struct tar_out {
	int fd;
	int64_t mtime;
};

static void octal(char *field, size_t width, uint64_t v)
{
	/* ustar numeric fields: octal, NUL-terminated; GNU base-256 when it does not fit. */
	if (v < (UINT64_C(1) << (3 * (width - 1)))) {
		snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
		return;
	}
	memset(field, 0, width);
	field[0] = (char)0x80;
	for (size_t i = width - 1; i > 0 && v; i--, v >>= 8)
		field[i] = (char)(v & 0xff);
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int tar_header(struct tar_out *t, const char *name, char type, uint64_t size, mode_t mode)
{
	char h[512] = {0};
	snprintf(h, 100, "%s", name);
	octal(h + 100, 8, mode);
	octal(h + 108, 8, 0);
	octal(h + 116, 8, 0);
	octal(h + 124, 12, size);
	octal(h + 136, 12, (uint64_t)t->mtime);
	memset(h + 148, ' ', 8);
	h[156] = type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
	h[155] = ' ';
	return write_all(t->fd, h, sizeof(h));
}

static int tar_pad(struct tar_out *t, uint64_t size)
{
	static const char zero[512];
	size_t pad = (512 - size % 512) % 512;
	return pad ? write_all(t->fd, zero, pad) : 0;
}

static int tar_mem(struct tar_out *t, const char *name, const char *data, size_t len)
{
	int r = tar_header(t, name, '0', len, 0644);
	if (r == 0)
		r = write_all(t->fd, data, len);
	return r ? r : tar_pad(t, len);
}

static int tar_blob(struct tar_out *t, struct kap_store *s, const char *digest, char *buf,
		    struct kapsel_error **err)
{
	cleanup_close int fd = kap_store_open_blob(s, digest, err);
	struct stat st;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "blob %s", digest);
	char name[96];
	snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
	int r = tar_header(t, name, '0', (uint64_t)st.st_size, 0644);
	uint64_t left = (uint64_t)st.st_size;
	while (r == 0 && left) {
		ssize_t n = read(fd, buf, left < (1u << 20) ? left : (1u << 20));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return kap_error(err, n < 0 ? errno : EIO, "read blob %s", digest);
		r = write_all(t->fd, buf, (size_t)n);
		left -= (uint64_t)n;
	}
	if (r == 0)
		r = tar_pad(t, (uint64_t)st.st_size);
	return r < 0 ? kap_error(err, -r, "write archive") : 0;
}

int kap_archive_save(struct kap_store *s, char *const *names, size_t n, const char *path,
		     struct kapsel_error **err)
{
	cleanup_json struct kap_json *index = kap_json_new_object();
	struct kap_json *list = kap_json_new_array();
	struct strv {
		char **v;
		size_t n;
	} blobs = {0};
	int r = 0;
	if (!index || !list) {
		kap_json_put(list);
		return kap_error(err, ENOMEM, "save");
	}
	kap_json_set(index, "schemaVersion", kap_json_new_int64(2));
	kap_json_set(index, "mediaType", kap_json_new_string(KAP_MT_OCI_INDEX));
	kap_json_set(index, "manifests", list);
	blobs.v = calloc(n * 4096 + 1, sizeof(char *));
	if (!blobs.v)
		return kap_error(err, ENOMEM, "save");

	for (size_t i = 0; r == 0 && i < n; i++) {
		char stored[KAP_DIGEST_LEN + 1], digest[KAP_DIGEST_LEN + 1];
		cleanup_free char *name = NULL, *buf = NULL;
		size_t len;
		struct kap_manifest m;
		if ((r = kap_store_lookup(s, names[i], &name, stored, err)) < 0 ||
		    (r = kap_store_resolve_manifest(s, stored, digest, err)) < 0 ||
		    (r = kap_store_read_blob(s, digest, &buf, &len, err)) < 0 ||
		    (r = kap_manifest_parse(buf, len, &m, err)) < 0)
			break;
		cleanup_json struct kap_json *doc = NULL;
		kap_json_parse(buf, len, "manifest", &doc, NULL);
		struct kap_json *mt = kap_json_get(doc, "mediaType");
		struct kap_json *d = kap_json_new_object(), *ann = kap_json_new_object();
		if (!d || !ann) {
			kap_json_put(d);
			kap_json_put(ann);
			kap_manifest_clear(&m);
			r = kap_error(err, ENOMEM, "save");
			break;
		}
		kap_json_set(d, "mediaType",
			     kap_json_new_string(kap_json_type(mt) == KAP_JSON_STRING
						     ? kap_json_string(mt)
						     : KAP_MT_OCI_MANIFEST));
		kap_json_set(d, "digest", kap_json_new_string(digest));
		kap_json_set(d, "size", kap_json_new_int64((int64_t)len));
		if (name) {
			struct kap_ref ref;
			kap_json_set(ann, ANNOT_CTRD, kap_json_new_string(name));
			if (kap_ref_parse(name, &ref, NULL) == 0) {
				if (ref.tag)
					kap_json_set(ann, ANNOT_REFNAME,
						     kap_json_new_string(ref.tag));
				kap_ref_clear(&ref);
			}
		}
		kap_json_set(d, "annotations", ann);
		kap_json_append(list, d);
		const char *add[4096];
		size_t k = 0;
		add[k++] = digest;
		add[k++] = m.config.digest;
		for (size_t j = 0; j < m.n_layers && k < KAP_ARRAY_SIZE(add); j++)
			add[k++] = m.layers[j].digest;
		for (size_t j = 0; j < k && r == 0; j++) {
			bool dup = false;
			for (size_t x = 0; x < blobs.n && !dup; x++)
				dup = !strcmp(blobs.v[x], add[j]);
			if (!dup && !(blobs.v[blobs.n++] = strdup(add[j])))
				r = kap_error(err, ENOMEM, "save");
		}
		kap_manifest_clear(&m);
	}
	cleanup_free char *tmp = NULL;
	cleanup_free char *copybuf = malloc(1u << 20);
	cleanup_free char *index_text = r == 0 ? kap_json_dump(index, false) : NULL;
	if (r == 0 &&
	    (!copybuf || !index_text || asprintf(&tmp, "%s.tmp-%d", path, getpid()) < 0)) {
		tmp = NULL;
		r = kap_error(err, ENOMEM, "save");
	}
	if (r == 0) {
		struct tar_out t = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644),
				    .mtime = 0};
		if (t.fd < 0) {
			r = kap_error(err, errno, "create %s", tmp);
		} else {
			static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
			int w = tar_mem(&t, "oci-layout", layout, strlen(layout));
			if (w == 0)
				w = tar_mem(&t, "index.json", index_text, strlen(index_text));
			if (w == 0)
				w = tar_header(&t, "blobs/", '5', 0, 0755);
			if (w == 0)
				w = tar_header(&t, "blobs/sha256/", '5', 0, 0755);
			if (w < 0)
				r = kap_error(err, -w, "write %s", tmp);
			for (size_t i = 0; r == 0 && i < blobs.n; i++)
				r = tar_blob(&t, s, blobs.v[i], copybuf, err);
			static const char zero[1024];
			if (r == 0 && (w = write_all(t.fd, zero, sizeof(zero))) < 0)
				r = kap_error(err, -w, "write %s", tmp);
			if (r == 0 && fsync(t.fd) < 0)
				r = kap_error(err, errno, "sync %s", tmp);
			close(t.fd);
			if (r == 0 && rename(tmp, path) < 0)
				r = kap_error(err, errno, "rename %s to %s", tmp, path);
			if (r < 0)
				unlink(tmp);
		}
	}
	for (size_t i = 0; i < blobs.n; i++)
		free(blobs.v[i]);
	free(blobs.v);
	return r;
}
