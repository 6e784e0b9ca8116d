/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel pull: reference -> manifest (through an index to one platform) -> config -> layers,
 * downloaded in parallel and unpacked as each one arrives, then tagged. Every blob is streamed
 * through SHA-256 into a temp file of the store (kap_blob_writer) and verified; each layer is
 * unpacked from that temp file into a staged directory in <store>/tmp. Only when every layer
 * has arrived and unpacked are the blobs renamed into blobs/, the layers into layers/, the
 * manifest and config (verified in memory) stored and the name tagged: a failure or SIGINT
 * anywhere stops every transfer and leaves blobs/ and layers/ as they were.
 */
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/registry.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

#define API	    __attribute__((visibility("default")))
#define CONFIG_MAX  (16 << 20) /* what kap_store_read_blob accepts */
#define MAX_WORKERS 6	       /* podman's default for parallel layer downloads */

enum job_state {
	JOB_WAITING,
	JOB_DOWNLOADING,
	JOB_UNPACKING,
	JOB_DONE,
	JOB_EXISTS,
	JOB_FAILED,
};

static const char *const state_names[] = {"waiting", "downloading", "unpacking",
					  "done",    "exists",	    "failed"};

struct pull;

struct layer_job {
	struct pull *p;
	const struct kap_descriptor *desc;
	const char *diff_id;
	enum kap_compression comp;
	bool download, unpack;
	atomic_llong bytes;
	atomic_int state;
	struct kap_blob_writer *w;  /* verified, committed at the end */
	struct kap_layer_stage *st; /* unpacked, committed at the end */
	struct kapsel_error *err;
	int r;
};

struct pull {
	struct kap_store *store;
	struct kap_registry *reg;
	const struct kapsel_pull_options *o;
	struct layer_job *jobs;
	size_t n_jobs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t next, running;
	bool failed;
	/* progress display */
	bool draw;
	size_t drawn;
	struct timespec start;
};

static bool pull_cancelled(const struct pull *p)
{
	return p->o->cancel && *p->o->cancel;
}

/* ---- the blob sink: registry bytes -> kap_blob_writer ---- */

static int sink_write(void *ctx, const void *data, size_t len, struct kapsel_error **err)
{
	struct layer_job *j = ctx;
	int r = kap_blob_writer_write(j->w, data, len, err);
	if (r == 0)
		atomic_fetch_add(&j->bytes, (long long)len);
	return r;
}

static int sink_restart(void *ctx, struct kapsel_error **err)
{
	struct layer_job *j = ctx;
	kap_blob_writer_abort(j->w);
	j->w = NULL;
	atomic_store(&j->bytes, 0);
	return kap_blob_writer_new(j->p->store, j->desc->digest, j->desc->size, &j->w, err);
}

static int run_job(struct layer_job *j)
{
	struct pull *p = j->p;
	int r;
	if (j->download) {
		atomic_store(&j->state, JOB_DOWNLOADING);
		r = kap_blob_writer_new(p->store, j->desc->digest, j->desc->size, &j->w, &j->err);
		if (r < 0)
			return r;
		struct kap_blob_sink sink = {
		    .write = sink_write, .restart = sink_restart, .ctx = j};
		r = kap_registry_get_blob(p->reg, j->desc->digest, j->desc->size, &sink, &j->err);
		if (r < 0) {
			kap_blob_writer_abort(j->w);
			j->w = NULL;
			return r;
		}
		/* Digest and size must match; the blob stays in tmp/ until the pull commits. */
		r = kap_blob_writer_check(j->w, NULL, &j->err);
		if (r < 0)
			return kap_error_wrap(&j->err, "%s", kap_registry_label(p->reg));
	}
	if (j->unpack) {
		if (pull_cancelled(p))
			return kap_error_plain(&j->err, EINTR, "pull interrupted");
		atomic_store(&j->state, JOB_UNPACKING);
		cleanup_close int fd = -EBADF;
		if (j->w) {
			/* The writer's temp file, read from its start through a descriptor of its
			 * own (the writer's offset is its business). */
			char path[32];
			fd = open(kap_fs_fd_path(kap_blob_writer_fd(j->w), path),
				  O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				return kap_error(&j->err, errno, "reopen downloaded blob %s",
						 j->desc->digest);
		} else {
			fd = kap_store_open_blob(p->store, j->desc->digest, &j->err);
			if (fd < 0)
				return fd;
		}
		r = kap_store_layer_stage(p->store, fd, j->comp, j->diff_id, &j->st, &j->err);
		if (r < 0)
			return kap_error_wrap(&j->err, "%s: layer %s", kap_registry_label(p->reg),
					      j->desc->digest);
	}
	return 0;
}

static void *worker(void *arg)
{
	struct pull *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		bool stop = p->failed || pull_cancelled(p) || p->next >= p->n_jobs;
		struct layer_job *j = stop ? NULL : &p->jobs[p->next++];
		pthread_mutex_unlock(&p->lock);
		if (!j)
			break;
		if (!j->download && !j->unpack)
			continue;
		j->r = run_job(j);
		atomic_store(&j->state, j->r < 0 ? JOB_FAILED : JOB_DONE);
		if (j->r < 0) {
			pthread_mutex_lock(&p->lock);
			p->failed = true;
			pthread_mutex_unlock(&p->lock);
			/* Stop the other downloads: the pull has failed already. */
			kap_registry_cancel(p->reg);
		}
	}
	pthread_mutex_lock(&p->lock);
	p->running--;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* ---- progress ---- */

static void human(char *buf, size_t n, long long v)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	size_t u = 0;
	while (d >= 1024 && u + 1 < KAP_ARRAY_SIZE(units)) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%lld B", v);
	else
		snprintf(buf, n, "%.1f %s", d, units[u]);
}

/* Redraw every layer line and the total in place (one write, so lines never tear). */
static void draw(struct pull *p)
{
	if (!p->draw)
		return;
	size_t cap = (p->n_jobs + 2) * 128, len = 0;
	cleanup_free char *out = malloc(cap);
	if (!out)
		return;
	if (p->drawn)
		len += (size_t)snprintf(out + len, cap - len, "\033[%zuA", p->drawn);
	/* fetched: what came over the network, the only bytes a rate may count (layers the
	 * store has are done, but were not downloaded now). */
	long long total = 0, done = 0, fetched = 0;
	for (size_t i = 0; i < p->n_jobs; i++) {
		const struct layer_job *j = &p->jobs[i];
		int st = atomic_load(&j->state);
		long long b = st == JOB_EXISTS ? j->desc->size : atomic_load(&j->bytes);
		if (st == JOB_DONE || st == JOB_UNPACKING)
			b = j->download ? atomic_load(&j->bytes) : j->desc->size;
		if (st != JOB_EXISTS && j->download)
			fetched += atomic_load(&j->bytes);
		total += j->desc->size;
		done += b;
		char have[32], want[32];
		human(have, sizeof(have), b);
		human(want, sizeof(want), j->desc->size);
		len += (size_t)snprintf(out + len, cap - len, "\r\033[K  %.19s  %-11s  %s / %s\n",
					j->desc->digest, state_names[st], have, want);
	}
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double secs =
	    (double)(now.tv_sec - p->start.tv_sec) + (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
	char have[32], want[32], rate[32];
	human(have, sizeof(have), done);
	human(want, sizeof(want), total);
	human(rate, sizeof(rate), secs > 0 ? (long long)((double)fetched / secs) : 0);
	len += (size_t)snprintf(out + len, cap - len, "\r\033[K  %-19s  %-11s  %s / %s  %s/s\n",
				"total", "", have, want, rate);
	p->drawn = p->n_jobs + 1;
	if (len > cap)
		len = cap;
	ssize_t w = write(STDERR_FILENO, out, len);
	(void)w;
}

/* ---- manifests and configs: small blobs verified in memory ---- */

struct memsink {
	char *buf;
	size_t len, cap;
};

static int mem_write(void *ctx, const void *data, size_t len, struct kapsel_error **err)
{
	struct memsink *m = ctx;
	if (m->len + len > m->cap)
		return kap_error_plain(err, EFBIG, "blob larger than its descriptor says");
	memcpy(m->buf + m->len, data, len);
	m->len += len;
	return 0;
}

static int mem_restart(void *ctx, struct kapsel_error **err)
{
	((struct memsink *)ctx)->len = 0;
	return 0;
}

static int check_digest(const char *buf, size_t len, const char *want, const char *what,
			const char *label, struct kapsel_error **err)
{
	char got[KAP_DIGEST_LEN + 1];
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		return kap_error(err, ENOMEM, "%s", what);
	kap_sha256_update(h, buf, len);
	kap_sha256_final(h, got);
	if (strcmp(got, want))
		return kap_error_plain(err, EBADMSG, "%s: %s: digest mismatch: expected %s, got %s",
				       label, what, want, got);
	return 0;
}

/* Fetch a small blob (config) by descriptor into memory, verified; from the store if there.
 * Storing it is left to the commit. */
static int get_small_blob(struct pull *p, const char *label, const struct kap_descriptor *d,
			  const char *what, char **buf, size_t *len, struct kapsel_error **err)
{
	if (d->size < 0 || d->size > CONFIG_MAX)
		return kap_error_plain(err, EFBIG, "%s: %s: size %lld out of range (0..%d)", label,
				       what, (long long)d->size, CONFIG_MAX);
	if (kap_store_has_blob(p->store, d->digest))
		return kap_store_read_blob(p->store, d->digest, buf, len, err);
	struct memsink m = {.buf = malloc((size_t)d->size + 1), .cap = (size_t)d->size};
	if (!m.buf)
		return kap_error(err, ENOMEM, "%s", what);
	struct kap_blob_sink sink = {.write = mem_write, .restart = mem_restart, .ctx = &m};
	int r = kap_registry_get_blob(p->reg, d->digest, d->size, &sink, err);
	if (r == 0)
		r = check_digest(m.buf, m.len, d->digest, what, label, err);
	if (r < 0) {
		free(m.buf);
		return r;
	}
	m.buf[m.len] = '\0';
	*buf = m.buf;
	*len = m.len;
	return 0;
}

static bool is_schema1(const char *mt)
{
	return mt && !strncmp(mt, "application/vnd.docker.distribution.manifest.v1", 48);
}

/*
 * Fetch the manifest `reference` names (tag or digest); when `want` is given (a digest from the
 * reference or an index) the bytes must hash to it. *digest receives their digest.
 */
static int get_manifest(struct pull *p, const char *label, const char *reference, const char *want,
			int64_t want_size, char **buf, size_t *len, char **mt, char *digest,
			struct kapsel_error **err)
{
	int r;
	if (want && kap_store_has_blob(p->store, want)) {
		/* Content-addressed: a manifest already stored need not be fetched again. */
		r = kap_store_read_blob(p->store, want, buf, len, err);
		if (r < 0)
			return r;
		*mt = NULL;
		snprintf(digest, KAP_DIGEST_LEN + 1, "%s", want);
		return 0;
	}
	r = kap_registry_get_manifest(p->reg, reference, buf, len, mt, err);
	if (r < 0)
		return r;
	char what[128];
	snprintf(what, sizeof(what), "manifest \"%.100s\"", reference);
	if (is_schema1(*mt))
		return kap_error_plain(err, ENOTSUP,
				       "%s: %s: Docker schema 1 manifests are not supported (push "
				       "the image again with a current client)",
				       label, what);
	if (want_size >= 0 && (int64_t)*len != want_size)
		return kap_error_plain(err, EBADMSG, "%s: %s: %zu bytes, the index says %lld",
				       label, what, *len, (long long)want_size);
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		return kap_error(err, ENOMEM, "%s", what);
	kap_sha256_update(h, *buf, *len);
	kap_sha256_final(h, digest);
	if (want && strcmp(digest, want))
		return kap_error_plain(err, EBADMSG, "%s: %s: digest mismatch: expected %s, got %s",
				       label, what, want, digest);
	return 0;
}

static void free_strp(char **p)
{
	free(*p);
}

/* ---- the pull ---- */

static int pull_layers(struct pull *p, const char *label, struct kapsel_error **err)
{
	size_t n_work = 0;
	for (size_t i = 0; i < p->n_jobs; i++) {
		struct layer_job *j = &p->jobs[i];
		if (j->download || j->unpack)
			n_work++;
	}
	size_t n_threads = n_work < MAX_WORKERS ? n_work : MAX_WORKERS;
	pthread_t threads[MAX_WORKERS];
	size_t started = 0;
	int r = 0;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	draw(p);
	pthread_mutex_lock(&p->lock);
	for (; started < n_threads; started++) {
		p->running++;
		int e = pthread_create(&threads[started], NULL, worker, p);
		if (e) {
			p->running--;
			if (started == 0) {
				pthread_mutex_unlock(&p->lock);
				return kap_error(err, e, "%s: start download thread", label);
			}
			break;
		}
	}
	while (p->running > 0) {
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_nsec += 150 * 1000000L;
		if (t.tv_nsec >= 1000000000L) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &t);
		if (pull_cancelled(p))
			kap_registry_cancel(p->reg);
		pthread_mutex_unlock(&p->lock);
		draw(p);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	draw(p);

	/* Report the first real failure in layer order; "interrupted" only when nothing else
	 * went wrong (the other transfers were stopped because of it). */
	struct layer_job *first = NULL;
	for (size_t i = 0; i < p->n_jobs; i++) {
		struct layer_job *j = &p->jobs[i];
		if (j->r >= 0)
			continue;
		if (!first || (first->r == -EINTR && j->r != -EINTR))
			first = j;
	}
	if (first) {
		r = first->r;
		if (err && !*err)
			*err = steal_ptr(first->err);
	} else if (pull_cancelled(p)) {
		r = kap_error_plain(err, EINTR, "%s: pull interrupted", label);
	}
	return r;
}

static int do_pull(const char *store_path, const char *ref_s, const struct kapsel_pull_options *o,
		   char *digest_out, struct kapsel_error **err)
{
	__attribute__((cleanup(kap_ref_clear))) struct kap_ref ref = {0};
	int r = kap_ref_parse(ref_s, &ref, err);
	if (r < 0)
		return r;
	char platform[128];
	snprintf(platform, sizeof(platform), "%s",
		 o->platform ? o->platform : "linux/" KAP_HOST_ARCH);
	{
		/* Refuse a malformed --platform before any network traffic. */
		const char *slash = strchr(platform, '/');
		if (!slash || slash == platform || !slash[1] || slash[1] == '/' ||
		    strlen(platform) >= sizeof(platform) - 1)
			return kap_error_plain(err, EINVAL,
					       "--platform \"%s\": expected OS/ARCH[/VARIANT] "
					       "(linux/amd64)",
					       o->platform);
	}
	__attribute__((cleanup(free_strp))) char *name = kap_ref_string(&ref);
	cleanup_free char *label = NULL;
	if (!name || asprintf(&label, "%s/%s", ref.registry, ref.repository) < 0)
		return kap_error(err, ENOMEM, "pull %s", ref_s);

	struct pull p = {.o = o, .draw = !o->quiet && isatty(STDERR_FILENO)};
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cond, NULL);
	struct kap_credentials creds = {0};
	struct kap_manifest m = {0};
	struct kap_index idx = {0};
	struct kap_image_config cfg = {0};
	char *buf = NULL, *mt = NULL, *cbuf = NULL, *ibuf = NULL;
	size_t len = 0, clen = 0, ilen = 0;
	char digest[KAP_DIGEST_LEN + 1], idigest[KAP_DIGEST_LEN + 1];

	r = kap_store_open(store_path, &p.store, err);
	if (r < 0)
		goto out;
	r = kap_auth_find(o->auth_file, ref.registry, ref.repository, &creds, err);
	if (r < 0 && r != -ENOENT)
		goto out;
	struct kap_registry_opts ro = {
	    .insecure = o->insecure, .creds = r == 0 ? &creds : NULL, .cancel = o->cancel};
	r = kap_registry_open(ref.registry, ref.repository, &ro, &p.reg, err);
	if (r < 0)
		goto out;

	r = get_manifest(&p, label, ref.digest ? ref.digest : ref.tag, ref.digest, -1, &buf, &len,
			 &mt, digest, err);
	if (r < 0)
		goto out;
	{
		cleanup_json struct kap_json *doc = NULL;
		r = kap_json_parse(buf, len, "manifest", &doc, err);
		if (r < 0)
			goto wrap;
		if (kap_manifest_is_index(mt, doc)) {
			/* An index (or Docker manifest list): keep it, and pick our platform. */
			const struct kap_descriptor *d = NULL;
			r = kap_index_parse(buf, len, &idx, err);
			if (r == 0)
				r = kap_index_select(&idx, platform, &d, err);
			if (r < 0)
				goto wrap;
			if (d->size < 0 || d->size > (int64_t)KAP_MANIFEST_MAX) {
				r = kap_error_plain(err, EFBIG,
						    "%s: manifest %.19s: size %lld out of range",
						    label, d->digest, (long long)d->size);
				goto out;
			}
			ibuf = steal_ptr(buf);
			ilen = len;
			memcpy(idigest, digest, sizeof(idigest));
			free(mt);
			mt = NULL;
			r = get_manifest(&p, label, d->digest, d->digest, d->size, &buf, &len, &mt,
					 digest, err);
			if (r < 0)
				goto out;
			cleanup_json struct kap_json *inner = NULL;
			r = kap_json_parse(buf, len, "manifest", &inner, err);
			if (r < 0)
				goto wrap;
			if (kap_manifest_is_index(mt, inner)) {
				r = kap_error_plain(err, ENOTSUP,
						    "%s: manifest %.19s: an index inside an index "
						    "is not supported",
						    label, d->digest);
				goto out;
			}
		}
	}
	r = kap_manifest_parse(buf, len, &m, err);
	if (r < 0)
		goto wrap;

	r = get_small_blob(&p, label, &m.config, "config", &cbuf, &clen, err);
	if (r < 0)
		goto out;
	r = kap_image_config_parse(cbuf, clen, &cfg, err);
	if (r < 0)
		goto wrap;
	if (cfg.n_diff_ids != m.n_layers) {
		r = kap_error_plain(err, EBADMSG,
				    "%s: image config lists %zu diff_ids for %zu layers", label,
				    cfg.n_diff_ids, m.n_layers);
		goto out;
	}
	if (o->platform && cfg.architecture && idx.n_manifests == 0) {
		const char *arch = strchr(platform, '/') + 1;
		if (strncmp(arch, cfg.architecture, strcspn(arch, "/")))
			kap_warn("%s: image is for %s/%s, not %s", name, cfg.os ? cfg.os : "?",
				 cfg.architecture, platform);
	}

	/* One job per distinct layer blob; what the store has already is skipped. */
	p.jobs = calloc(m.n_layers ? m.n_layers : 1, sizeof(*p.jobs));
	if (!p.jobs) {
		r = kap_error(err, ENOMEM, "pull %s", name);
		goto out;
	}
	for (size_t i = 0; i < m.n_layers; i++) {
		const struct kap_descriptor *d = &m.layers[i];
		bool dup = false;
		for (size_t k = 0; k < p.n_jobs; k++)
			dup |= !strcmp(p.jobs[k].desc->digest, d->digest);
		if (dup)
			continue;
		struct layer_job *j = &p.jobs[p.n_jobs++];
		j->p = &p;
		j->desc = d;
		j->diff_id = cfg.diff_ids[i];
		r = kap_layer_compression(d->media_type, &j->comp, err);
		if (r < 0) {
			kap_error_wrap(err, "%s: layer %.19s", label, d->digest);
			goto out;
		}
		if (d->size < 0) {
			r = kap_error_plain(err, EBADMSG, "%s: layer %.19s: negative size", label,
					    d->digest);
			goto out;
		}
		j->download = !kap_store_has_blob(p.store, d->digest);
		j->unpack = !kap_store_has_layer(p.store, j->diff_id);
		atomic_init(&j->state, j->download || j->unpack ? JOB_WAITING : JOB_EXISTS);
	}
	if (p.draw) {
		char line[600];
		int n = snprintf(line, sizeof(line), "Pulling %s (%s)\n", name, platform);
		ssize_t w = write(STDERR_FILENO, line, n > 0 ? (size_t)n : 0);
		(void)w;
	}
	r = pull_layers(&p, label, err);
	if (r < 0)
		goto out;

	/* Everything arrived, verified and unpacked: now, and only now, into the store. */
	if (pull_cancelled(&p)) {
		r = kap_error_plain(err, EINTR, "%s: pull interrupted", label);
		goto out;
	}
	for (size_t i = 0; i < p.n_jobs && r == 0; i++) {
		struct layer_job *j = &p.jobs[i];
		if (j->w)
			r = kap_blob_writer_commit(steal_ptr(j->w), err);
		if (r == 0 && j->st)
			r = kap_store_layer_commit(steal_ptr(j->st), err);
	}
	const struct {
		const char *buf, *digest;
		size_t len;
	} small[] = {{cbuf, m.config.digest, clen}, {buf, digest, len}, {ibuf, idigest, ilen}};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(small) && r == 0; i++)
		if (small[i].buf && !kap_store_has_blob(p.store, small[i].digest))
			r = kap_store_put_blob(p.store, small[i].buf, small[i].len, NULL, err);
	if (r == 0)
		r = kap_store_tag(p.store, name, digest, err);
	if (r < 0)
		goto out;
	/* Where the blobs came from: a push to another repository of this registry mounts
	 * them instead of uploading (blob-sources.c). */
	kap_blob_source_add(p.store, m.config.digest, ref.registry, ref.repository);
	for (size_t i = 0; i < m.n_layers; i++)
		kap_blob_source_add(p.store, m.layers[i].digest, ref.registry, ref.repository);
	if (digest_out)
		snprintf(digest_out, KAPSEL_DIGEST_SIZE, "%s", digest);
	goto out;
wrap:
	kap_error_wrap(err, "%s", label);
out:
	for (size_t i = 0; i < p.n_jobs; i++) {
		kap_blob_writer_abort(p.jobs[i].w);
		kap_store_layer_discard(p.jobs[i].st);
		kapsel_error_free(p.jobs[i].err);
	}
	free(p.jobs);
	free(buf);
	free(mt);
	free(cbuf);
	free(ibuf);
	kap_image_config_clear(&cfg);
	kap_manifest_clear(&m);
	kap_index_clear(&idx);
	kap_credentials_clear(&creds);
	kap_registry_close(p.reg);
	kap_store_close(p.store);
	pthread_mutex_destroy(&p.lock);
	pthread_cond_destroy(&p.cond);
	return r;
}

/*
 * libcurl is told CURLOPT_NOSIGNAL (threads), so a peer closing a connection would raise
 * SIGPIPE in whichever thread writes. Block it for the pull (the workers inherit the mask) and
 * discard one that arrived meanwhile, so the caller's own disposition is untouched.
 */
API int kapsel_pull(const char *store_path, const char *ref, const struct kapsel_pull_options *o,
		    char *digest_out, struct kapsel_error **err)
{
	struct kapsel_pull_options none = {0};
	sigset_t pipe, old, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &old);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	int r = do_pull(store_path, ref, o ? o : &none, digest_out, err);
	sigpending(&pending);
	if (!was_pending && !sigismember(&old, SIGPIPE) && sigismember(&pending, SIGPIPE))
		sigtimedwait(&pipe, NULL, &(struct timespec){0});
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}
