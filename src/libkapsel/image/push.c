/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel push IMAGE [DEST]`: the distribution-spec push flow (spec.md "Push"): every blob the
 * manifest names (config and layers) is checked with HEAD and uploaded only when the registry
 * lacks it, several at a time; then the manifest, byte for byte as stored so its digest is
 * what `kapsel images` shows. A push that was interrupted and is run again skips the blobs
 * that made it. Layers are sent as stored: compression happened once, at build or pull time.
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

static int push_one(struct pusher *p, const struct job *j, struct kapsel_error **err)
{
	int r = kap_registry_has_blob(p->reg, j->digest, err);
	if (r < 0)
		return r;
	if (r == 1) {
		say(p, j->digest, "skipped: already exists");
		return 0;
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
	int r = kap_store_open(store, &s, err);
	if (r < 0 || (r = kap_image_find(s, image, &name, digest, err)) < 0 ||
	    (r = kap_store_resolve_manifest(s, digest, resolved, err)) < 0)
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
	cleanup_free char *manifest = NULL;
	cleanup_json struct kap_json *doc = NULL;
	size_t mlen;
	struct kap_manifest m = {0};
	struct pusher p = {.s = s, .o = o, .lock = PTHREAD_MUTEX_INITIALIZER};
	struct kap_credentials creds = {0};
	if (!reference) {
		r = kap_error(err, ENOMEM, "push");
		goto out;
	}
	if (ref.digest && strcmp(ref.digest, resolved)) {
		r = kap_error_plain(err, EINVAL, "push %s: %s names another manifest (%s)", image,
				    dest, resolved);
		goto out;
	}
	if ((r = kap_store_read_blob(s, resolved, &manifest, &mlen, err)) < 0 ||
	    (r = kap_manifest_parse(manifest, mlen, &m, err)) < 0)
		goto out;
	if ((r = kap_json_parse(manifest, mlen, "manifest", &doc, err)) < 0)
		goto out;
	const char *mt = kap_json_string(kap_json_get(doc, "mediaType"));

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
	p.jobs = calloc(m.n_layers + 1, sizeof(*p.jobs));
	if (!p.jobs) {
		r = kap_error(err, ENOMEM, "push");
		goto out;
	}
	memcpy(p.jobs[0].digest, m.config.digest, sizeof(p.jobs[0].digest));
	p.jobs[0].size = m.config.size;
	for (size_t i = 0; i < m.n_layers; i++) {
		memcpy(p.jobs[i + 1].digest, m.layers[i].digest, sizeof(p.jobs[0].digest));
		p.jobs[i + 1].size = m.layers[i].size;
	}
	p.n_jobs = m.n_layers + 1;
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
	if (!o->quiet)
		fprintf(stderr, "Writing manifest to %s\n", dest);
	r = kap_registry_put_manifest(reg, reference, mt ? mt : KAP_MT_OCI_MANIFEST, manifest, mlen,
				      err);
	if (r == 0 && digest_out)
		memcpy(digest_out, resolved, KAP_DIGEST_LEN + 1);
out:
	free(p.jobs);
	pthread_mutex_destroy(&p.lock);
	kap_credentials_clear(&creds);
	kap_manifest_clear(&m);
	kap_ref_clear(&ref);
	return r;
}
