/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel push IMAGE [DEST]`: the distribution-spec push flow (spec.md "Push"): every blob the
 * manifest names (config and layers) is checked with HEAD and uploaded only when the registry
 * lacks it, several at a time; then the manifest, byte for byte as stored so its digest is
 * what `kapsel images` shows. A push that was interrupted and is run again skips the blobs
 * that made it. Layers are sent as stored: compression happened once, at build or pull time.
 *
 * A blob the registry lacks but holds in another repository (blob-sources.c remembers where
 * blobs were pulled from and pushed to) is mounted rather than uploaded; a registry that
 * declines the mount (202) gets the upload.
 *
 * --format oci|docker rewrites the manifest's media types (image-spec media-types.md
 * "Compatibility Matrix": the config and gzip layer bytes are the same for both), so the
 * pushed manifest has a digest of its own.
 *
 * A name that points at an index (a manifest list, manifest-list.c) pushes the list: every
 * manifest it lists must be in the store (checked before anything is sent); the blobs of all
 * of them go first, then each manifest by digest, then the index under the tag, last, so a
 * registry never holds an index whose manifests it lacks (image-index.md: the descriptors
 * must resolve). --format rewrites the manifests and then the index entries to their new
 * digests, and the index's own type (OCI index or Docker manifest list).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/registry.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "image/image.h"

#define API	    __attribute__((visibility("default")))
#define PUSH_JOBS   4
#define MONO_LIMIT  (64 << 20) /* larger blobs go in chunks */
#define CHUNK_BYTES (32 << 20)

struct job {
	char digest[KAP_DIGEST_LEN + 1];
	int64_t size;
};

struct pusher {
	struct kap_store *s;
	struct kap_registry *reg;
	const char *registry, *repository; /* the destination, for blob-sources records */
	const struct kapsel_push_options *o;
	struct job *jobs;
	size_t n_jobs;
	atomic_size_t next;
	atomic_bool failed;
	pthread_mutex_t lock; /* err, output */
	struct kapsel_error *err;
	int ret;
};

static void fail(struct pusher *p, int ret, struct kapsel_error *e)
{
	pthread_mutex_lock(&p->lock);
	if (!p->err) {
		p->err = e;
		p->ret = ret;
		e = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	kapsel_error_free(e);
	atomic_store(&p->failed, true);
	kap_registry_cancel(p->reg);
}

static void say(struct pusher *p, const char *digest, const char *what)
{
	if (p->o->quiet)
		return;
	pthread_mutex_lock(&p->lock);
	fprintf(stderr, "Copying blob %.19s %s\n", digest, what);
	pthread_mutex_unlock(&p->lock);
}

/* Another repository of the registry holding the blob, asked to lend it: 1 when mounted. */
static int try_mount(struct pusher *p, const struct job *j, struct kapsel_error **err)
{
	cleanup_strv char **from = NULL;
	if (kap_blob_sources(p->s, j->digest, p->registry, p->repository, &from) <= 0)
		return 0;
	for (char **f = from; *f; f++) {
		struct kapsel_error *e = NULL;
		int r = kap_registry_mount_blob(p->reg, j->digest, *f, &e);
		if (r == -EINTR) {
			*err = e;
			return r;
		}
		/* A refused mount (denied, or an old record) costs only the upload. */
		kapsel_error_free(e);
		if (r == 1) {
			char what[600];
			snprintf(what, sizeof(what), "mounted from %s", *f);
			say(p, j->digest, what);
			return 1;
		}
	}
	return 0;
}

static int push_one(struct pusher *p, const struct job *j, struct kapsel_error **err)
{
	int r = kap_registry_has_blob(p->reg, j->digest, err);
	if (r < 0)
		return r;
	if (r == 1) {
		say(p, j->digest, "skipped: already exists");
		kap_blob_source_add(p->s, j->digest, p->registry, p->repository);
		return 0;
	}
	if ((r = try_mount(p, j, err)) != 0) {
		if (r == 1)
			kap_blob_source_add(p->s, j->digest, p->registry, p->repository);
		return r < 0 ? r : 0;
	}
	cleanup_close int fd = kap_store_open_blob(p->s, j->digest, err);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "blob %s", j->digest);
	if (j->size >= 0 && st.st_size != j->size)
		return kap_error_plain(err, EIO,
				       "blob %s: %lld bytes in the store, %lld in the "
				       "manifest",
				       j->digest, (long long)st.st_size, (long long)j->size);
	int64_t chunk = p->o->chunk_size > 0		   ? p->o->chunk_size
			: st.st_size > (int64_t)MONO_LIMIT ? (int64_t)CHUNK_BYTES
							   : 0;
	if ((r = kap_registry_put_blob(p->reg, j->digest, fd, st.st_size, chunk, err)) < 0)
		return r;
	kap_blob_source_add(p->s, j->digest, p->registry, p->repository);
	say(p, j->digest, "done");
	return 0;
}

static void *worker(void *arg)
{
	struct pusher *p = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n_jobs || atomic_load(&p->failed))
			return NULL;
		struct kapsel_error *e = NULL;
		int r = push_one(p, &p->jobs[i], &e);
		if (r < 0)
			fail(p, r, e);
	}
}

static void store_closep(struct kap_store **s)
{
	if (*s)
		kap_store_close(*s);
}

static void registry_closep(struct kap_registry **r)
{
	if (*r)
		kap_registry_close(*r);
}

/* image-spec media-types.md "Compatibility Matrix": the layer types with a twin. */
static const struct {
	const char *oci, *docker;
} layer_types[] = {
    {"application/vnd.oci.image.layer.v1.tar+gzip",
     "application/vnd.docker.image.rootfs.diff.tar.gzip"},
    {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
     "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"},
};

/* The manifest as it will be pushed. */
struct out_doc {
	char *buf;
	size_t len;
	const char *mt;
	char digest[KAP_DIGEST_LEN + 1];
	struct kap_manifest m;
};

static void out_doc_clear(struct out_doc *d)
{
	free(d->buf);
	kap_manifest_clear(&d->m);
}

static void digest_of(const char *buf, size_t len, char *out)
{
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		abort();
	kap_sha256_update(h, buf, len);
	kap_sha256_final(h, out);
}

/* A stored manifest -> d, its media types rewritten for format ("oci", "docker", NULL: as
 * stored, byte for byte). */
static int load_manifest(struct kap_store *s, const char *digest, const char *format,
			 struct out_doc *d, struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	cleanup_json struct kap_json *doc = NULL;
	int r;
	if ((r = kap_store_read_blob(s, digest, &buf, &len, err)) < 0 ||
	    (r = kap_json_parse(buf, len, "manifest", &doc, err)) < 0)
		return r;
	struct kap_json *cfg = kap_json_get(doc, "config");
	const char *mt = kap_json_string(kap_json_get(doc, "mediaType"));
	const char *cmt = kap_json_string(kap_json_get(cfg, "mediaType"));
	bool is_docker =
	    mt ? !strcmp(mt, KAP_MT_DOCKER_MANIFEST) : cmt && !strcmp(cmt, KAP_MT_DOCKER_CONFIG);
	bool want_docker = format ? !strcmp(format, "docker") : is_docker;
	d->mt = want_docker ? KAP_MT_DOCKER_MANIFEST : KAP_MT_OCI_MANIFEST;
	if (want_docker != is_docker) {
		if (!cmt || strcmp(cmt, is_docker ? KAP_MT_DOCKER_CONFIG : KAP_MT_OCI_CONFIG))
			return kap_error_plain(err, EINVAL,
					       "--format %s: manifest %.19s has config type %s, "
					       "which has no %s twin",
					       format, digest, cmt ? cmt : "(none)", format);
		kap_json_set(doc, "mediaType", kap_json_new_string(d->mt));
		kap_json_set(
		    cfg, "mediaType",
		    kap_json_new_string(want_docker ? KAP_MT_DOCKER_CONFIG : KAP_MT_OCI_CONFIG));
		struct kap_json *layers = kap_json_get(doc, "layers");
		size_t n = layers && kap_json_type(layers) == KAP_JSON_ARRAY
			       ? kap_json_array_len(layers)
			       : 0;
		for (size_t i = 0; i < n; i++) {
			struct kap_json *l = kap_json_array_at(layers, i);
			const char *lmt = kap_json_string(kap_json_get(l, "mediaType"));
			const char *to = NULL;
			for (size_t t = 0; lmt && !to && t < KAP_ARRAY_SIZE(layer_types); t++)
				if (!strcmp(lmt,
					    is_docker ? layer_types[t].docker : layer_types[t].oci))
					to = want_docker ? layer_types[t].docker
							 : layer_types[t].oci;
			if (!to)
				return kap_error_plain(
				    err, EINVAL,
				    "--format %s: layer %zu of manifest %.19s is "
				    "%s, which a %s manifest cannot name",
				    format, i, digest, lmt ? lmt : "(none)", format);
			kap_json_set(l, "mediaType", kap_json_new_string(to));
		}
		free(buf);
		if (!(buf = kap_json_dump(doc, false)))
			return kap_error(err, ENOMEM, "push");
		len = strlen(buf);
	}
	if ((r = kap_manifest_parse(buf, len, &d->m, err)) < 0)
		return r;
	digest_of(buf, len, d->digest);
	d->buf = steal_ptr(buf);
	d->len = len;
	return 0;
}

static int add_job(struct pusher *p, const struct kap_descriptor *d)
{
	for (size_t i = 0; i < p->n_jobs; i++)
		if (!strcmp(p->jobs[i].digest, d->digest))
			return 0;
	struct job *nj = realloc(p->jobs, (p->n_jobs + 1) * sizeof(*nj));
	if (!nj)
		return -ENOMEM;
	p->jobs = nj;
	memcpy(nj[p->n_jobs].digest, d->digest, sizeof(nj->digest));
	nj[p->n_jobs++].size = d->size;
	return 0;
}

/* One manifest of an index as it will be pushed, and its entry in the pushed index. */
static int index_entry(struct kap_store *s, struct kap_json *e, const char *format, bool index_only,
		       struct out_doc *d, struct kapsel_error **err)
{
	const char *digest = kap_json_string(kap_json_get(e, "digest"));
	if (index_only && !format)
		return 0; /* the registry has them: the entry stays as it is */
	if (!kap_store_has_blob(s, digest)) {
		char p[160];
		const char *os = kap_json_string(kap_json_get(kap_json_get(e, "platform"), "os"));
		const char *arch =
		    kap_json_string(kap_json_get(kap_json_get(e, "platform"), "architecture"));
		snprintf(p, sizeof(p), "%s/%s", os ? os : "?", arch ? arch : "?");
		return kap_error_plain(err, ENOENT,
				       "manifest %s (%s) is not in the store (pull it, or remove "
				       "it from the list)",
				       digest, p);
	}
	int r = load_manifest(s, digest, format, d, err);
	if (r < 0)
		return r;
	kap_json_set(e, "mediaType", kap_json_new_string(d->mt));
	kap_json_set(e, "digest", kap_json_new_string(d->digest));
	kap_json_set(e, "size", kap_json_new_int64((int64_t)d->len));
	return 0;
}

/* The stored index as it will be pushed (top) and its manifests (*docs, *n). */
static int load_index(struct kap_store *s, const char *digest, const struct kapsel_push_options *o,
		      struct out_doc *top, struct out_doc **docs, size_t *n,
		      struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int r = kap_store_read_index(s, digest, &doc, err);
	if (r < 0)
		return r;
	struct kap_json *ms = kap_json_get(doc, "manifests");
	size_t count = kap_json_array_len(ms);
	if (!count)
		return kap_error_plain(err, EINVAL, "manifest list %.19s lists no manifests",
				       digest);
	if (!(*docs = calloc(count, sizeof(**docs))))
		return kap_error(err, ENOMEM, "push");
	*n = count;
	for (size_t i = 0; i < count; i++) {
		struct kap_json *e = kap_json_array_at(ms, i);
		const char *mt = kap_json_string(kap_json_get(e, "mediaType"));
		if (mt && (!strcmp(mt, KAP_MT_OCI_INDEX) || !strcmp(mt, KAP_MT_DOCKER_LIST)))
			return kap_error_plain(err, ENOTSUP,
					       "manifest list %.19s: manifests[%zu] is an index; "
					       "nested indexes are not pushed",
					       digest, i);
		if ((r = index_entry(s, e, o->format, o->index_only, &(*docs)[i], err)) < 0)
			return kap_error_wrap(err, "manifest list %.19s", digest);
	}
	const char *mt = kap_json_string(kap_json_get(doc, "mediaType"));
	bool docker =
	    o->format ? !strcmp(o->format, "docker") : mt && !strcmp(mt, KAP_MT_DOCKER_LIST);
	top->mt = docker ? KAP_MT_DOCKER_LIST : KAP_MT_OCI_INDEX;
	kap_json_set(doc, "mediaType", kap_json_new_string(top->mt));
	if (!(top->buf = kap_json_dump(doc, false)))
		return kap_error(err, ENOMEM, "push");
	top->len = strlen(top->buf);
	digest_of(top->buf, top->len, top->digest);
	return 0;
}

API int kapsel_push(const char *store, const char *image, const char *dest,
		    const struct kapsel_push_options *o, char *digest_out,
		    struct kapsel_error **err)
{
	static const struct kapsel_push_options defaults = {0};
	if (!o)
		o = &defaults;
	__attribute__((cleanup(store_closep))) struct kap_store *s = NULL;
	__attribute__((cleanup(registry_closep))) struct kap_registry *reg = NULL;
	char digest[KAP_DIGEST_LEN + 1], resolved[KAP_DIGEST_LEN + 1];
	cleanup_free char *name = NULL;
	if (o->format && strcmp(o->format, "oci") && strcmp(o->format, "docker"))
		return kap_error_plain(err, EINVAL, "push: --format %s: expected oci or docker",
				       o->format);
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_image_find(s, image, &name, digest, err)) < 0)
		return r;
	bool is_index = kap_store_is_index(s, digest);
	if (o->manifest_list && !is_index)
		return kap_error_plain(err, EINVAL,
				       "manifest push %s: an image, not a manifest list (push it "
				       "with `kapsel push`)",
				       image);
	if (!is_index && (r = kap_store_resolve_manifest(s, digest, resolved, err)) < 0)
		return r;
	if (!dest)
		dest = name;
	if (!dest)
		return kap_error_plain(err, EINVAL,
				       "push %s: the image has no name; give a destination", image);
	if (!strncmp(dest, "docker://", 9))
		dest += 9;
	struct kap_ref ref;
	if ((r = kap_ref_parse(dest, &ref, err)) < 0)
		return kap_error_wrap(err, "push destination");
	/* Pushed under its tag (or, named by digest, under that digest: it is the same bytes). */
	cleanup_free char *reference = strdup(ref.tag ? ref.tag : ref.digest);
	struct out_doc top = {0}, *docs = NULL;
	size_t n_docs = 0;
	struct pusher p = {.s = s,
			   .o = o,
			   .registry = ref.registry,
			   .repository = ref.repository,
			   .lock = PTHREAD_MUTEX_INITIALIZER};
	struct kap_credentials creds = {0};
	if (!reference) {
		r = kap_error(err, ENOMEM, "push");
		goto out;
	}

	/* Everything to send is read and checked before the registry is contacted. */
	if (is_index)
		r = load_index(s, digest, o, &top, &docs, &n_docs, err);
	else
		r = load_manifest(s, resolved, o->format, &top, err);
	if (r < 0)
		goto out;
	if (ref.digest && strcmp(ref.digest, top.digest)) {
		r = kap_error_plain(err, EINVAL, "push %s: %s names another manifest (%s)", image,
				    dest, top.digest);
		goto out;
	}

	if (o->creds) {
		const char *colon = strchr(o->creds, ':');
		creds.user =
		    colon ? strndup(o->creds, (size_t)(colon - o->creds)) : strdup(o->creds);
		creds.password = strdup(colon ? colon + 1 : "");
		creds.source = strdup("--creds");
		if (!creds.user || !creds.password || !creds.source) {
			r = kap_error(err, ENOMEM, "push");
			goto out;
		}
	} else {
		cleanup_error struct kapsel_error *e = NULL;
		r = kap_auth_find(o->auth_file, ref.registry, ref.repository, &creds, &e);
		if (r < 0 && r != -ENOENT) {
			*err = steal_ptr(e);
			goto out;
		}
	}
	struct kap_registry_opts ro = {.insecure = o->insecure,
				       .creds = creds.user ? &creds : NULL,
				       .cancel = o->cancel,
				       .push = true};
	if ((r = kap_registry_open(ref.registry, ref.repository, &ro, &reg, err)) < 0)
		goto out;
	p.reg = reg;
	r = 0;
	if (!is_index) {
		r = add_job(&p, &top.m.config);
		for (size_t l = 0; r == 0 && l < top.m.n_layers; l++)
			r = add_job(&p, &top.m.layers[l]);
	}
	for (size_t i = 0; r == 0 && !o->index_only && i < n_docs; i++) {
		r = add_job(&p, &docs[i].m.config);
		for (size_t l = 0; r == 0 && l < docs[i].m.n_layers; l++)
			r = add_job(&p, &docs[i].m.layers[l]);
	}
	if (r < 0) {
		r = kap_error(err, ENOMEM, "push");
		goto out;
	}
	pthread_t th[PUSH_JOBS];
	size_t started = 0;
	for (; started < PUSH_JOBS && started < p.n_jobs; started++)
		if (pthread_create(&th[started], NULL, worker, &p) != 0)
			break;
	if (started == 0)
		worker(&p);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (p.err) {
		r = p.ret;
		*err = steal_ptr(p.err);
		goto out;
	}
	/* The manifests by digest, the index last (distribution-spec "Pushing Manifests"). */
	for (size_t i = 0; !o->index_only && i < n_docs; i++) {
		if (!o->quiet)
			fprintf(stderr, "Writing manifest %s\n", docs[i].digest);
		if ((r = kap_registry_put_manifest(reg, docs[i].digest, docs[i].mt, docs[i].buf,
						   docs[i].len, err)) < 0)
			goto out;
	}
	if (!o->quiet)
		fprintf(stderr, "Writing manifest%s to %s\n", is_index ? " list" : "", dest);
	r = kap_registry_put_manifest(reg, reference, top.mt, top.buf, top.len, err);
	if (r == 0 && digest_out)
		memcpy(digest_out, top.digest, KAP_DIGEST_LEN + 1);
out:
	free(p.jobs);
	pthread_mutex_destroy(&p.lock);
	kap_credentials_clear(&creds);
	out_doc_clear(&top);
	for (size_t i = 0; i < n_docs; i++)
		out_doc_clear(&docs[i]);
	free(docs);
	kap_ref_clear(&ref);
	return r;
}
