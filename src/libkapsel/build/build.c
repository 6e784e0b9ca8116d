/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel build`: a Containerfile (containerfile.c) and a context directory -> an image in the
 * store, one stage after another.
 *
 * A stage is an image config document (kept whole, so fields kapsel does not know survive)
 * and its layers. A step that changes files mounts an overlay over the stage's unpacked layers
 * with a fresh upper directory under <store>/tmp/build-*, does its work in the merged tree
 * (COPY/ADD write there, confined with RESOLVE_IN_ROOT; RUN is a container of the same
 * runtime over that rootfs, its config.json made by bundle.c as for `kapsel run`, network
 * none unless --network host), unmounts, and turns the upper directory into one layer
 * (layer.c) that is unpacked into the store to serve as the next step's lower layer.
 * Config-only instructions (ENV, CMD, ...) edit the config and add an empty_layer history
 * entry, as docker and buildah do.
 *
 * COPY and ADD live in copy.c; the state both files share in builder.h.
 *
 * A failed build leaves no mount, no temp directory and no tag; blobs it wrote stay in the
 * store for `kapsel image prune`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/build.h>
#include <kapsel/container.h>
#include <kapsel/image.h>
#include <kapsel/run.h>

#include "build/build.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/syscalls.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

#define RUN_TAIL_LINES 10

/* Docker Image Manifest V2 Schema 2 (--format docker): the media types containers/image and
 * the registry give docker images; the config and layer bytes are the same as OCI's. */
#define MT_DOCKER_MANIFEST   "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG     "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define MT_DOCKER_LAYER_TAR  "application/vnd.docker.image.rootfs.diff.tar"
#define MT_OCI_LAYER_TAR     "application/vnd.oci.image.layer.v1.tar"

#include "build/builder.h"

void kap_build_stage_clear(struct stage *st)
{
	free(st->name);
	kap_json_put(st->cfg);
	for (size_t i = 0; i < st->n_layers; i++)
		free(st->layers[i].media_type);
	free(st->layers);
	for (size_t i = 0; i < st->n_args; i++)
		free(st->args[i]);
	free(st->args);
	free(st->pending_by);
	*st = (struct stage){0};
}

int kap_build_strv_add(char ***v, size_t *n, char *s)
{
	if (!s)
		return -ENOMEM;
	char **nv = realloc(*v, (*n + 2) * sizeof(*nv));
	if (!nv) {
		free(s);
		return -ENOMEM;
	}
	nv[(*n)++] = s;
	nv[*n] = NULL;
	*v = nv;
	return 0;
}

/* Set K=V in a K=V list (replacing K). */
static int kv_set(char ***v, size_t *n, const char *k, const char *val)
{
	char *kv;
	if (asprintf(&kv, "%s=%s", k, val) < 0)
		return -ENOMEM;
	size_t kl = strlen(k);
	for (size_t i = 0; i < *n; i++) {
		if (!strncmp((*v)[i], k, kl) && (*v)[i][kl] == '=') {
			free((*v)[i]);
			(*v)[i] = kv;
			return 0;
		}
	}
	return kap_build_strv_add(v, n, kv);
}

static const char *kv_get(char *const *v, size_t n, const char *k)
{
	size_t kl = strlen(k);
	for (size_t i = 0; i < n; i++)
		if (!strncmp(v[i], k, kl) && v[i][kl] == '=')
			return v[i] + kl + 1;
	return NULL;
}

/* ---- the config document ---- */

struct kap_json *kap_build_cfg_config(struct stage *st)
{
	struct kap_json *c = kap_json_get(st->cfg, "config");
	if (!c || kap_json_type(c) != KAP_JSON_OBJECT) {
		c = kap_json_new_object();
		kap_json_set(st->cfg, "config", c);
	}
	return c;
}

static struct kap_json *strv_json(char *const *v, size_t n)
{
	struct kap_json *a = kap_json_new_array();
	for (size_t i = 0; a && i < n; i++)
		kap_json_append(a, kap_json_new_string(v[i]));
	return a;
}

/* Env of the config as K=V strings. */
static int cfg_env(struct stage *st, char ***out, size_t *n)
{
	struct kap_json *env = kap_json_get(kap_build_cfg_config(st), "Env");
	*out = NULL;
	*n = 0;
	size_t len = env && kap_json_type(env) == KAP_JSON_ARRAY ? kap_json_array_len(env) : 0;
	for (size_t i = 0; i < len; i++) {
		const char *s = kap_json_string(kap_json_array_at(env, i));
		if (s && kap_build_strv_add(out, n, strdup(s)) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* The variables words are expanded with: the stage's ARGs, then its ENV (which wins). */
static int stage_vars(struct stage *st, char ***out)
{
	char **v = NULL;
	size_t n = 0;
	for (size_t i = 0; i < st->n_args; i++)
		if (kap_build_strv_add(&v, &n, strdup(st->args[i])) < 0)
			goto nomem;
	char **env;
	size_t ne;
	if (cfg_env(st, &env, &ne) < 0)
		goto nomem;
	for (size_t i = 0; i < ne; i++)
		if (kap_build_strv_add(&v, &n, env[i]) < 0) {
			for (size_t j = i + 1; j < ne; j++)
				free(env[j]);
			free(env);
			goto nomem;
		}
	free(env);
	if (!v && !(v = calloc(1, sizeof(*v))))
		return -ENOMEM;
	*out = v;
	return 0;
nomem:
	kap_strvp(&v);
	return -ENOMEM;
}

static void chain_start(struct stage *st, const char *what)
{
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		abort();
	kap_sha256_update(h, "kapsel-build-v1\n", 16);
	kap_sha256_update(h, what, strlen(what));
	kap_sha256_final(h, st->chain);
}

/*
 * Advance the stage's chain over an instruction: its text, the ARG and ENV values in scope
 * (they decide what the words expand to and what RUN sees), and `extra` (the digest of COPY's
 * inputs, or the chain of a --from stage). The new chain is the step's cache key.
 */
int kap_build_chain_advance(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
			    const char *extra)
{
	cleanup_strv char **vars = NULL;
	if (stage_vars(st, &vars) < 0)
		return kap_error(b->err, ENOMEM, "cache key");
	struct kap_sha256 *h = kap_sha256_new();
	if (!h)
		return kap_error(b->err, ENOMEM, "cache key");
	kap_sha256_update(h, st->chain, strlen(st->chain) + 1);
	kap_sha256_update(h, in->text, strlen(in->text) + 1);
	for (char **v = vars; *v; v++)
		kap_sha256_update(h, *v, strlen(*v) + 1);
	kap_sha256_update(h, "\n", 1);
	/* The layer's bytes also depend on its compression and the clamped mtimes. */
	char how[48];
	int hl =
	    snprintf(how, sizeof(how), "%s %lld", b->zstd ? "zstd" : "gzip", (long long)b->epoch);
	kap_sha256_update(h, how, (size_t)hl + 1);
	if (extra)
		kap_sha256_update(h, extra, strlen(extra) + 1);
	kap_sha256_final(h, st->chain);
	return 0;
}

static void rfc3339(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t now_or_epoch(const struct builder *b)
{
	return b->epoch >= 0 ? b->epoch : (int64_t)time(NULL);
}

void kap_build_add_history(struct builder *b, struct stage *st, const char *created_by, bool empty)
{
	struct kap_json *h = kap_json_get(st->cfg, "history");
	if (!h || kap_json_type(h) != KAP_JSON_ARRAY) {
		h = kap_json_new_array();
		kap_json_set(st->cfg, "history", h);
	}
	char ts[40];
	rfc3339(now_or_epoch(b), ts, sizeof(ts));
	struct kap_json *e = kap_json_new_object();
	kap_json_set(e, "created", kap_json_new_string(ts));
	kap_json_set(e, "created_by", kap_json_new_string(created_by));
	kap_json_set(e, "comment", kap_json_new_string("kapsel build"));
	if (empty)
		kap_json_set(e, "empty_layer", kap_json_new_bool(true));
	kap_json_append(h, e);
}

/* ---- errors ---- */

int kap_build_ierr(struct builder *b, const struct kap_cf_instr *in, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return kap_error_plain(b->err, EINVAL, "%s:%u: %s: %s", b->cf.path, in->line,
			       kap_cf_kind_name(in->kind), msg);
}

/* Put an instruction's context in front of an error raised below. */
int kap_build_iwrap(struct builder *b, const struct kap_cf_instr *in, int r)
{
	if (b->err && *b->err)
		kap_error_wrap(b->err, "%s:%u: %s", b->cf.path, in->line,
			       kap_cf_kind_name(in->kind));
	return r;
}

int kap_build_expand(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
		     const char *word, char **out)
{
	cleanup_strv char **vars = NULL;
	if (st) {
		if (stage_vars(st, &vars) < 0)
			return kap_error(b->err, ENOMEM, "expand");
	}
	int r = kap_cf_expand(word, b->cf.escape, st ? vars : b->meta, out, b->err);
	return r < 0 ? kap_build_iwrap(b, in, r) : 0;
}

/* ---- overlay steps ---- */

int kap_build_layer_paths(struct builder *b, struct stage *st, char ***out, size_t *n)
{
	struct kap_json *rootfs = kap_json_get(st->cfg, "rootfs");
	struct kap_json *ids = rootfs ? kap_json_get(rootfs, "diff_ids") : NULL;
	size_t len = ids && kap_json_type(ids) == KAP_JSON_ARRAY ? kap_json_array_len(ids) : 0;
	if (len != st->n_layers)
		return kap_error_plain(b->err, EINVAL,
				       "image config has %zu diff_ids for %zu layers", len,
				       st->n_layers);
	char **v = calloc(len + 2, sizeof(*v));
	if (!v)
		return kap_error(b->err, ENOMEM, "layers");
	for (size_t i = 0; i < len; i++) {
		const char *diff_id = kap_json_string(kap_json_array_at(ids, i));
		char *p = diff_id ? kap_store_layer_path(b->s, diff_id) : NULL;
		if (!p && diff_id) {
			enum kap_compression c;
			int r = kap_layer_compression(st->layers[i].media_type, &c, b->err);
			if (r == 0)
				r = kap_store_unpack_layer(b->s, st->layers[i].digest, c, diff_id,
							   b->err);
			if (r < 0) {
				kap_strvp(&v);
				return r;
			}
			p = kap_store_layer_path(b->s, diff_id);
		}
		if (!p) {
			kap_strvp(&v);
			return kap_error_plain(b->err, ENOENT, "layer %s: not in the store",
					       diff_id ? diff_id : "?");
		}
		v[len - 1 - i] = p;
	}
	if (len == 0 && asprintf(&v[0], "%s/empty", b->tmp) < 0) {
		free(v);
		return kap_error(b->err, ENOMEM, "layers");
	}
	*out = v;
	*n = len ? len : 1;
	return 0;
}

static int fresh_dir(struct builder *b, const char *name)
{
	kap_fs_rm_rf(b->tmpfd, name);
	if (mkdirat(b->tmpfd, name, 0755) < 0)
		return kap_error(b->err, errno, "create %s/%s", b->tmp, name);
	return 0;
}

/* Mount the stage's layers with a fresh upper at <tmp>/<prefix>merged; returns an O_PATH fd. */
int kap_build_mount(struct builder *b, struct stage *st, const char *prefix, bool *mounted)
{
	char up[32], wk[32], mg[32];
	snprintf(up, sizeof(up), "%supper", prefix);
	snprintf(wk, sizeof(wk), "%swork", prefix);
	snprintf(mg, sizeof(mg), "%smerged", prefix);
	int r;
	/* --layers=false: the stage's upper directory carries over from step to step. */
	bool keep = st->accumulate && st->pending_by && !*prefix;
	if ((!keep && (r = fresh_dir(b, up)) < 0) || (r = fresh_dir(b, wk)) < 0)
		return r;
	if (mkdirat(b->tmpfd, mg, 0755) < 0 && errno != EEXIST)
		return kap_error(b->err, errno, "create %s/%s", b->tmp, mg);
	cleanup_strv char **lowers = NULL;
	size_t n;
	if ((r = kap_build_layer_paths(b, st, &lowers, &n)) < 0)
		return r;
	cleanup_free char *upper = NULL, *work = NULL, *merged = NULL;
	if (asprintf(&upper, "%s/%s", b->tmp, up) < 0 || asprintf(&work, "%s/%s", b->tmp, wk) < 0 ||
	    asprintf(&merged, "%s/%s", b->tmp, mg) < 0)
		return kap_error(b->err, ENOMEM, "mount");
	if ((r = kap_overlay_mount(lowers, n, upper, work, merged, false, b->err)) < 0)
		return r;
	*mounted = true;
	int fd = open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(b->err, errno, "open %s", merged);
	return fd;
}

int kap_build_umount(struct builder *b, const char *prefix, bool *mounted)
{
	if (!*mounted)
		return 0;
	cleanup_free char *merged = NULL;
	if (asprintf(&merged, "%s/%smerged", b->tmp, prefix) < 0)
		return kap_error(b->err, ENOMEM, "umount");
	*mounted = false;
	return kap_overlay_umount(merged, b->err);
}

/* A layer (made now or found in the cache) becomes the stage's new top layer. */
int kap_build_apply_layer(struct builder *b, struct stage *st, const struct kap_built_layer *lp,
			  const char *created_by)
{
	struct kap_built_layer l = *lp;
	struct kap_descriptor *nl = realloc(st->layers, (st->n_layers + 1) * sizeof(*nl));
	if (!nl)
		return kap_error(b->err, ENOMEM, "layers");
	st->layers = nl;
	nl[st->n_layers] = (struct kap_descriptor){
	    .media_type = strdup(l.zstd ? MT_LAYER_ZSTD : MT_LAYER_GZIP), .size = l.size};
	memcpy(nl[st->n_layers].digest, l.digest, sizeof(l.digest));
	if (!nl[st->n_layers++].media_type)
		return kap_error(b->err, ENOMEM, "layers");
	struct kap_json *rootfs = kap_json_get(st->cfg, "rootfs");
	if (!rootfs || kap_json_type(rootfs) != KAP_JSON_OBJECT) {
		rootfs = kap_json_new_object();
		kap_json_set(st->cfg, "rootfs", rootfs);
	}
	kap_json_set(rootfs, "type", kap_json_new_string("layers"));
	struct kap_json *ids = kap_json_get(rootfs, "diff_ids");
	if (!ids || kap_json_type(ids) != KAP_JSON_ARRAY) {
		ids = kap_json_new_array();
		kap_json_set(rootfs, "diff_ids", ids);
	}
	kap_json_append(ids, kap_json_new_string(l.diff_id));
	kap_build_add_history(b, st, created_by, false);
	return 0;
}

static int commit_upper(struct builder *b, struct stage *st, const char *created_by, bool cache);

int kap_build_commit_layer(struct builder *b, struct stage *st, const char *created_by)
{
	if (st->accumulate) {
		/* --layers=false: committed once, when the stage ends (finish_stage). */
		free(st->pending_by);
		if (!(st->pending_by = strdup(created_by)))
			return kap_error(b->err, ENOMEM, "build");
		return 0;
	}
	return commit_upper(b, st, created_by, true);
}

/* Upper directory -> layer -> unpacked in the store -> the stage's top layer, and (cache)
 * cached under the step's key (the stage's chain). */
static int commit_upper(struct builder *b, struct stage *st, const char *created_by, bool cache)
{
	cleanup_close int upfd = openat(b->tmpfd, "upper", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (upfd < 0)
		return kap_error(b->err, errno, "open %s/upper", b->tmp);
	struct kap_built_layer l;
	int r = kap_build_layer_as(b->s, upfd, b->epoch, NULL, b->zstd, &l, b->err);
	if (r < 0)
		return r;
	/* The upper directory is the layer unpacked already (overlay's whiteouts and opaque
	 * xattrs are the store's format): it becomes the store's copy, without a re-unpack. Its
	 * mtimes are the real ones; only the blob has them clamped to SOURCE_DATE_EPOCH. */
	close(steal_fd(upfd));
	if (!kap_store_has_layer(b->s, l.diff_id) &&
	    (r = kap_store_adopt_layer(b->s, b->tmpfd, "upper", l.diff_id, b->err)) < 0)
		return r;
	if (cache && (r = kap_build_cache_put(b->s, st->chain, &l, b->err)) < 0)
		return r;
	return kap_build_apply_layer(b, st, &l, created_by);
}

/* A hit: the step's layer as it was made before. 1 when used, 0 on a miss. */
int kap_build_from_cache(struct builder *b, struct stage *st, const char *created_by)
{
	struct kap_built_layer l;
	/* --layers=false makes no per-step layers, so there are none to reuse (buildah). */
	if (b->o->no_cache || st->accumulate || kap_build_cache_get(b->s, st->chain, &l) < 0)
		return 0;
	if (!b->o->quiet)
		fprintf(stderr, "--> Using cache %.12s\n", st->chain + 7);
	int r = kap_build_apply_layer(b, st, &l, created_by);
	return r < 0 ? r : 1;
}

/* ---- FROM ---- */

int kap_build_load_image(struct builder *b, const char *name, struct stage *st)
{
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_image_ensure_default(b->s, name, b->err);
	if (r < 0)
		return r;
	cleanup_error struct kapsel_error *e = NULL;
	r = kap_image_find(b->s, name, NULL, digest, &e);
	if (r == -ENOENT)
		return kap_error_plain(b->err, ENOENT, "image %s not found locally; kapsel pull %s",
				       name, name);
	if (r < 0) {
		*b->err = steal_ptr(e);
		return r;
	}
	return kap_build_load_manifest(b, digest, st);
}

int kap_build_load_manifest(struct builder *b, const char *digest, struct stage *st)
{
	char resolved[KAP_DIGEST_LEN + 1];
	int r;
	if ((r = kap_store_resolve_manifest(b->s, digest, resolved, b->err)) < 0)
		return r;
	cleanup_free char *buf = NULL;
	size_t len;
	struct kap_manifest m = {0};
	if ((r = kap_store_read_blob(b->s, resolved, &buf, &len, b->err)) < 0 ||
	    (r = kap_manifest_parse(buf, len, &m, b->err)) < 0)
		return r;
	free(steal_ptr(buf));
	r = kap_store_read_blob(b->s, m.config.digest, &buf, &len, b->err);
	if (r == 0)
		r = kap_json_parse(buf, len, "image config", &st->cfg, b->err);
	if (r == 0) {
		st->layers = steal_ptr(m.layers);
		st->n_layers = m.n_layers;
		m.n_layers = 0;
		chain_start(st, resolved);
	}
	kap_manifest_clear(&m);
	return r;
}

static int scratch_config(struct stage *st)
{
	st->cfg = kap_json_new_object();
	if (!st->cfg)
		return -ENOMEM;
	kap_json_set(st->cfg, "architecture", kap_json_new_string("amd64"));
	kap_json_set(st->cfg, "os", kap_json_new_string("linux"));
	kap_json_set(st->cfg, "config", kap_json_new_object());
	struct kap_json *rootfs = kap_json_new_object();
	kap_json_set(rootfs, "type", kap_json_new_string("layers"));
	kap_json_set(rootfs, "diff_ids", kap_json_new_array());
	kap_json_set(st->cfg, "rootfs", rootfs);
	chain_start(st, "scratch");
	return 0;
}

struct stage *kap_build_find_stage(struct builder *b, const char *name)
{
	for (size_t i = 0; i < b->n_stages; i++)
		if (b->stages[i].name && !strcasecmp(b->stages[i].name, name))
			return &b->stages[i];
	char *end;
	unsigned long idx = strtoul(name, &end, 10);
	if (*name && !*end && idx < b->n_stages)
		return &b->stages[idx];
	return NULL;
}

static int copy_stage(struct builder *b, const struct stage *from, struct stage *st)
{
	cleanup_free char *text = kap_json_dump(from->cfg, false);
	if (!text)
		return kap_error(b->err, ENOMEM, "stage");
	int r = kap_json_parse(text, strlen(text), "image config", &st->cfg, b->err);
	if (r < 0)
		return r;
	memcpy(st->chain, from->chain, sizeof(st->chain));
	st->layers = calloc(from->n_layers + 1, sizeof(*st->layers));
	if (!st->layers)
		return kap_error(b->err, ENOMEM, "stage");
	for (size_t i = 0; i < from->n_layers; i++) {
		st->layers[i] = from->layers[i];
		st->layers[i].platform_os = st->layers[i].platform_arch = NULL;
		st->layers[i].platform_variant = NULL;
		if (!(st->layers[i].media_type = strdup(from->layers[i].media_type)))
			return kap_error(b->err, ENOMEM, "stage");
		st->n_layers++;
	}
	return 0;
}

static int do_from(struct builder *b, const struct kap_cf_instr *in, struct stage *st)
{
	cleanup_free char *image = NULL;
	int r = kap_build_expand(b, NULL, in, in->args[0], &image);
	if (r < 0)
		return r;
	if (in->n_args > 1 && !(st->name = strdup(in->args[1])))
		return kap_error(b->err, ENOMEM, "stage");
	struct stage *prev = kap_build_find_stage(b, image);
	if (prev && prev != st)
		r = copy_stage(b, prev, st);
	else if (!strcmp(image, "scratch"))
		r = scratch_config(st) < 0 ? kap_error(b->err, ENOMEM, "stage") : 0;
	else
		r = kap_build_load_image(b, image, st);
	if (r < 0)
		return kap_build_iwrap(b, in, r);
	/* Layers inherited keep their digests; a docker-typed one is written as its OCI twin
	 * (the same bytes, image-spec media-types.md compatibility matrix). */
	for (size_t i = 0; i < st->n_layers; i++) {
		if (!strcmp(st->layers[i].media_type,
			    "application/vnd.docker.image.rootfs.diff.tar.gzip")) {
			free(st->layers[i].media_type);
			if (!(st->layers[i].media_type = strdup(MT_LAYER_GZIP)))
				return kap_error(b->err, ENOMEM, "stage");
		}
	}
	return 0;
}

/* ---- ARG ---- */

static const char *build_arg(struct builder *b, const char *name)
{
	size_t nl = strlen(name);
	for (char *const *a = b->o->build_args; a && *a; a++) {
		if (strncmp(*a, name, nl))
			continue;
		if ((*a)[nl] == '=')
			return *a + nl + 1;
		if ((*a)[nl] == '\0')
			return getenv(name);
	}
	return NULL;
}

static int do_arg(struct builder *b, const struct kap_cf_instr *in, struct stage *st)
{
	for (size_t i = 0; i + 1 < in->n_args; i += 2) {
		const char *name = in->args[i];
		cleanup_free char *def = NULL;
		const char *val = build_arg(b, name);
		if (!val && in->args[i + 1]) {
			int r = kap_build_expand(b, st, in, in->args[i + 1], &def);
			if (r < 0)
				return r;
			val = def;
		}
		/* Inside a stage, a bare ARG takes the value of the ARG before FROM. */
		if (!val && st)
			val = kv_get(b->meta, b->n_meta, name);
		if (!val)
			continue;
		if (kv_set(st ? &st->args : &b->meta, st ? &st->n_args : &b->n_meta, name, val) < 0)
			return kap_error(b->err, ENOMEM, "ARG");
	}
	return 0;
}

/* ---- config instructions ---- */

static int set_strv(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
		    const char *key)
{
	struct kap_json *c = kap_build_cfg_config(st);
	if (in->json) {
		kap_json_set(c, key, strv_json(in->args, in->n_args));
		return 0;
	}
	/* Shell form: the stage's SHELL (default /bin/sh -c) runs the text. */
	struct kap_json *shell = kap_json_get(c, "Shell");
	struct kap_json *a = kap_json_new_array();
	if (shell && kap_json_type(shell) == KAP_JSON_ARRAY && kap_json_array_len(shell)) {
		for (size_t i = 0; i < kap_json_array_len(shell); i++)
			kap_json_append(a, kap_json_get_ref(kap_json_array_at(shell, i)));
	} else {
		kap_json_append(a, kap_json_new_string("/bin/sh"));
		kap_json_append(a, kap_json_new_string("-c"));
	}
	kap_json_append(a, kap_json_new_string(in->args[0]));
	kap_json_set(c, key, a);
	(void)b;
	return 0;
}

static int set_map_keys(struct builder *b, struct stage *st, const struct kap_cf_instr *in,
			const char *key, bool port)
{
	struct kap_json *c = kap_build_cfg_config(st);
	struct kap_json *m = kap_json_get(c, key);
	if (!m || kap_json_type(m) != KAP_JSON_OBJECT) {
		m = kap_json_new_object();
		kap_json_set(c, key, m);
	}
	for (size_t i = 0; i < in->n_args; i++) {
		cleanup_free char *w = NULL;
		int r = kap_build_expand(b, st, in, in->args[i], &w);
		if (r < 0)
			return r;
		if (port && !strchr(w, '/')) {
			char *t;
			if (asprintf(&t, "%s/tcp", w) < 0)
				return kap_error(b->err, ENOMEM, "EXPOSE");
			free(w);
			w = t;
		}
		kap_json_set(m, w, kap_json_new_object());
	}
	return 0;
}

int kap_build_config_instr(struct builder *b, const struct kap_cf_instr *in, struct stage *st)
{
	struct kap_json *c = kap_build_cfg_config(st);
	cleanup_free char *w = NULL;
	int r;
	switch (in->kind) {
	case KAP_CF_ENV:
	case KAP_CF_LABEL: {
		bool env = in->kind == KAP_CF_ENV;
		for (size_t i = 0; i + 1 < in->n_args; i += 2) {
			cleanup_free char *k = NULL, *v = NULL;
			if ((r = kap_build_expand(b, st, in, in->args[i], &k)) < 0 ||
			    (r = kap_build_expand(b, st, in, in->args[i + 1], &v)) < 0)
				return r;
			if (env) {
				char **e;
				size_t n;
				if (cfg_env(st, &e, &n) < 0 || kv_set(&e, &n, k, v) < 0)
					return kap_error(b->err, ENOMEM, "ENV");
				kap_json_set(c, "Env", strv_json(e, n));
				for (size_t j = 0; j < n; j++)
					free(e[j]);
				free(e);
			} else {
				struct kap_json *l = kap_json_get(c, "Labels");
				if (!l || kap_json_type(l) != KAP_JSON_OBJECT) {
					l = kap_json_new_object();
					kap_json_set(c, "Labels", l);
				}
				kap_json_set(l, k, kap_json_new_string(v));
			}
		}
		return 0;
	}
	case KAP_CF_WORKDIR: {
		if ((r = kap_build_expand(b, st, in, in->args[0], &w)) < 0)
			return r;
		const char *cur = kap_json_string(kap_json_get(c, "WorkingDir"));
		cleanup_free char *path = NULL;
		/* A relative WORKDIR is relative to the previous one. */
		if (w[0] != '/' && asprintf(&path, "%s/%s", cur && *cur ? cur : "", w) < 0)
			return kap_error(b->err, ENOMEM, "WORKDIR");
		kap_json_set(c, "WorkingDir", kap_json_new_string(path ? path : w));
		return 0;
	}
	case KAP_CF_USER:
		if ((r = kap_build_expand(b, st, in, in->args[0], &w)) < 0)
			return r;
		kap_json_set(c, "User", kap_json_new_string(w));
		return 0;
	case KAP_CF_STOPSIGNAL:
		if ((r = kap_build_expand(b, st, in, in->args[0], &w)) < 0)
			return r;
		kap_json_set(c, "StopSignal", kap_json_new_string(w));
		return 0;
	case KAP_CF_CMD:
		return set_strv(b, st, in, "Cmd");
	case KAP_CF_ENTRYPOINT:
		/* docker: a new ENTRYPOINT drops an inherited CMD. */
		set_strv(b, st, in, "Entrypoint");
		kap_json_set(c, "Cmd", NULL);
		return 0;
	case KAP_CF_SHELL:
		kap_json_set(c, "Shell", strv_json(in->args, in->n_args));
		return 0;
	case KAP_CF_EXPOSE:
		return set_map_keys(b, st, in, "ExposedPorts", true);
	case KAP_CF_VOLUME:
		return set_map_keys(b, st, in, "Volumes", false);
	case KAP_CF_MAINTAINER:
		kap_json_set(st->cfg, "author", kap_json_new_string(in->args[0]));
		return 0;
	case KAP_CF_HEALTHCHECK: {
		struct kap_json *h = kap_json_new_object();
		struct kap_json *test = kap_json_new_array();
		if (in->healthcheck_none) {
			kap_json_append(test, kap_json_new_string("NONE"));
		} else {
			kap_json_append(test, kap_json_new_string(in->json ? "CMD" : "CMD-SHELL"));
			for (size_t i = 0; i < in->n_args; i++)
				kap_json_append(test, kap_json_new_string(in->args[i]));
		}
		kap_json_set(h, "Test", test);
		static const struct {
			const char *flag, *key;
		} d[] = {{"interval", "Interval"},
			 {"timeout", "Timeout"},
			 {"start-period", "StartPeriod"},
			 {"start-interval", "StartInterval"}};
		for (size_t i = 0; i < KAP_ARRAY_SIZE(d); i++) {
			const char *v = kap_cf_flag(in, d[i].flag);
			long long ns;
			if (v && kap_cf_duration(v, &ns) == 0)
				kap_json_set(h, d[i].key, kap_json_new_int64(ns));
		}
		const char *retries = kap_cf_flag(in, "retries");
		if (retries)
			kap_json_set(h, "Retries", kap_json_new_int64(strtol(retries, NULL, 10)));
		kap_json_set(c, "Healthcheck", h);
		return 0;
	}
	default:
		return 0;
	}
}

/* ---- RUN ---- */

/* Mount points the runtime creates in a rootfs that lacks them: not the step's doing, so they
 * stay out of its layer (buildah removes them too). */
static const char *const runtime_mountpoints[] = {"dev",       "proc",	       "sys",
						  "etc/hosts", "etc/hostname", "etc/resolv.conf"};

static void print_tail(int logfd)
{
	struct stat st;
	if (fstat(logfd, &st) < 0)
		return;
	off_t start = st.st_size > 4096 ? st.st_size - 4096 : 0;
	char buf[4097];
	ssize_t n = pread(logfd, buf, sizeof(buf) - 1, start);
	if (n <= 0)
		return;
	buf[n] = '\0';
	int lines = 0;
	char *p = buf + n;
	if (p > buf && p[-1] == '\n')
		p--;
	while (p > buf && lines < RUN_TAIL_LINES)
		if (*--p == '\n')
			lines++;
	if (*p == '\n')
		p++;
	fprintf(stderr, "%s%s", p, buf[n - 1] == '\n' ? "" : "\n");
}

static int copy_to_stderr(int fd)
{
	char buf[65536];
	off_t off = 0;
	ssize_t n;
	fflush(stderr);
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		if (kap_fs_write_all(STDERR_FILENO, buf, (size_t)n) < 0)
			return -errno;
		off += n;
	}
	return 0;
}

int kap_build_check_cancel(struct builder *b)
{
	if (!b->interrupted && !(b->o->cancel && *b->o->cancel))
		return 0;
	return kap_error_plain(b->err, EINTR, "build interrupted");
}

/*
 * Wait for a RUN's container. SIGINT, SIGTERM and SIGHUP kill it (SIGKILL: its shell is the
 * pid namespace's init, which ignores signals it has no handler for, so forwarding ^C as
 * `kapsel run` does would leave a `sleep` running) and mark the build interrupted; the
 * runtime then deletes the container and the build unwinds its mounts and temp directory.
 * The caller's signal mask is restored before returning.
 */
static int run_wait(void *ctx, pid_t init, int master)
{
	struct builder *b = ctx;
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	if (master >= 0)
		close(master);
	int ret = 255;
	bool killed = false;
	for (;;) {
		if (!killed && (b->interrupted || (b->o->cancel && *b->o->cancel))) {
			b->interrupted = true;
			kill(init, SIGKILL);
			killed = true;
		}
		int status;
		pid_t p;
		while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
			if (p == init) {
				ret = WIFEXITED(status) ? WEXITSTATUS(status)
							: 128 + WTERMSIG(status);
				goto out;
			}
		}
		if (p < 0 && errno == ECHILD)
			goto out;
		int sig = 0;
		if (sigwait(&set, &sig) == 0 && sig != SIGCHLD)
			b->interrupted = true;
	}
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

static int do_run(struct builder *b, const struct kap_cf_instr *in, struct stage *st)
{
	int r;
	cleanup_strv char **argv = NULL;
	size_t argc = 0;
	if (in->json) {
		for (size_t i = 0; i < in->n_args; i++)
			if (kap_build_strv_add(&argv, &argc, strdup(in->args[i])) < 0)
				return kap_error(b->err, ENOMEM, "RUN");
	} else {
		struct kap_json *shell = kap_json_get(kap_build_cfg_config(st), "Shell");
		size_t n =
		    shell && kap_json_type(shell) == KAP_JSON_ARRAY ? kap_json_array_len(shell) : 0;
		for (size_t i = 0; i < n; i++) {
			const char *s = kap_json_string(kap_json_array_at(shell, i));
			if (kap_build_strv_add(&argv, &argc, strdup(s ? s : "")) < 0)
				return kap_error(b->err, ENOMEM, "RUN");
		}
		if (n == 0 && (kap_build_strv_add(&argv, &argc, strdup("/bin/sh")) < 0 ||
			       kap_build_strv_add(&argv, &argc, strdup("-c")) < 0))
			return kap_error(b->err, ENOMEM, "RUN");
		if (kap_build_strv_add(&argv, &argc, strdup(in->args[0])) < 0)
			return kap_error(b->err, ENOMEM, "RUN");
	}
	if (argc == 0)
		return kap_build_ierr(b, in, "empty command");
	cleanup_free char *by = NULL;
	if (asprintf(&by, "RUN %s", in->args[0]) < 0)
		return kap_error(b->err, ENOMEM, "RUN");
	if ((r = kap_build_chain_advance(b, st, in, NULL)) < 0)
		return r;
	if ((r = kap_build_from_cache(b, st, in->json ? in->text : by)) != 0)
		return r < 0 ? r : 0;

	cleanup_close int rootfd = kap_build_mount(b, st, "", &b->mounted);
	if (rootfd < 0)
		return rootfd;
	bool existed[KAP_ARRAY_SIZE(runtime_mountpoints)];
	for (size_t i = 0; i < KAP_ARRAY_SIZE(runtime_mountpoints); i++)
		existed[i] =
		    faccessat(rootfd, runtime_mountpoints[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	const char *wd = kap_json_string(kap_json_get(kap_build_cfg_config(st), "WorkingDir"));
	if (wd && *wd && strcmp(wd, "/")) {
		int fd = kap_fs_mkdir_in_root(rootfd, wd, 0755, false, b->err);
		if (fd < 0)
			return kap_build_iwrap(b, in, fd);
		close(fd);
	}

	cleanup_free char *cfgtext = kap_json_dump(st->cfg, false);
	if (!cfgtext)
		return kap_error(b->err, ENOMEM, "RUN");
	struct kap_image_config img = {0};
	if ((r = kap_image_config_parse(cfgtext, strlen(cfgtext), &img, b->err)) < 0)
		return kap_build_iwrap(b, in, r);
	const char *net = kap_cf_flag(in, "network");
	if (!net || !strcmp(net, "default"))
		net = b->o->network ? b->o->network : "none";
	struct kapsel_run_options ro = {
	    .store = b->o->store,
	    .root = b->o->root,
	    .cmd = argv,
	    .entrypoint = "",
	    .net = net,
	    .env = st->args,
	};
	cleanup_free char *merged = NULL;
	if (asprintf(&merged, "%s/merged", b->tmp) < 0) {
		kap_image_config_clear(&img);
		return kap_error(b->err, ENOMEM, "RUN");
	}
	struct kap_bundle_env be = {
	    .rootfs = merged, .image_name = "kapsel-build", .hostname = "kapsel-build"};
	cleanup_json struct kap_json *config = NULL;
	r = kap_bundle_config(&img, &ro, &be, rootfd, &config, b->err);
	kap_image_config_clear(&img);
	if (r < 0)
		return kap_build_iwrap(b, in, r);
	cleanup_free char *text = kap_json_dump(config, true);
	if (!text)
		return kap_error(b->err, ENOMEM, "config.json");
	if ((r = kap_fs_write_atomic(b->tmpfd, "config.json", text, strlen(text), 0600, false,
				     b->err)) < 0)
		return r;

	unsigned char rnd[6];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return kap_error(b->err, errno, "getrandom");
	char id[40];
	snprintf(id, sizeof(id), "kapsel-build-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
		 rnd[3], rnd[4], rnd[5]);
	/* The step's output goes to a log (shown as it is, and its tail when it fails). */
	cleanup_close int logfd =
	    openat(b->tmpfd, "run.log", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cleanup_close int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd < 0 || nullfd < 0)
		return kap_error(b->err, errno, "%s/run.log", b->tmp);
	fflush(stdout);
	fflush(stderr);
	int saved[3] = {fcntl(0, F_DUPFD_CLOEXEC, 3), fcntl(1, F_DUPFD_CLOEXEC, 3),
			fcntl(2, F_DUPFD_CLOEXEC, 3)};
	if (saved[0] < 0 || saved[1] < 0 || saved[2] < 0 || dup2(nullfd, 0) < 0 ||
	    dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) {
		r = kap_error(b->err, errno, "redirect RUN output");
	} else {
		struct kapsel_create_options co = {.root = b->o->root, .id = id, .bundle = b->tmp};
		r = kapsel_container_run_wait(&co, run_wait, b, b->err);
	}
	for (int i = 0; i < 3; i++) {
		if (saved[i] >= 0) {
			dup2(saved[i], i);
			close(saved[i]);
		}
	}
	if (!b->o->quiet)
		copy_to_stderr(logfd);
	if (r < 0)
		return kap_build_iwrap(b, in, r);
	int c = kap_build_check_cancel(b);
	if (c < 0)
		return c;
	if (r != 0) {
		if (b->o->quiet)
			print_tail(logfd);
		return kap_error_plain(b->err, EIO, "%s:%u: RUN %s: exit status %d", b->cf.path,
				       in->line, in->args[0], r);
	}
	if ((r = kap_build_umount(b, "", &b->mounted)) < 0)
		return r;
	cleanup_close int upfd = openat(b->tmpfd, "upper", O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (size_t i = 0; upfd >= 0 && i < KAP_ARRAY_SIZE(runtime_mountpoints); i++) {
		if (existed[i])
			continue;
		struct stat sst;
		const char *mp = runtime_mountpoints[i];
		if (fstatat(upfd, mp, &sst, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(sst.st_mode))
			unlinkat(upfd, mp, AT_REMOVEDIR); /* only when empty */
		else if (S_ISREG(sst.st_mode) && sst.st_size == 0)
			unlinkat(upfd, mp, 0);
	}
	return kap_build_commit_layer(b, st, in->json ? in->text : by);
}

/* ---- the image ---- */

static struct kap_json *descriptor(const char *mt, const char *digest, int64_t size)
{
	struct kap_json *d = kap_json_new_object();
	kap_json_set(d, "mediaType", kap_json_new_string(mt));
	kap_json_set(d, "digest", kap_json_new_string(digest));
	kap_json_set(d, "size", kap_json_new_int64(size));
	return d;
}

int kap_build_write_image(struct builder *b, struct stage *st, char *config_digest, char **names,
			  char *manifest_digest)
{
	char ts[40];
	rfc3339(now_or_epoch(b), ts, sizeof(ts));
	kap_json_set(st->cfg, "created", kap_json_new_string(ts));
	struct kap_json *c = kap_build_cfg_config(st);
	for (char *const *l = b->o->labels; l && *l; l++) {
		const char *eq = strchr(*l, '=');
		cleanup_free char *k = strndup(*l, eq ? (size_t)(eq - *l) : strlen(*l));
		if (!k)
			return kap_error(b->err, ENOMEM, "label");
		struct kap_json *lab = kap_json_get(c, "Labels");
		if (!lab || kap_json_type(lab) != KAP_JSON_OBJECT) {
			lab = kap_json_new_object();
			kap_json_set(c, "Labels", lab);
		}
		kap_json_set(lab, k, kap_json_new_string(eq ? eq + 1 : ""));
	}
	cleanup_free char *cfgtext = kap_json_dump(st->cfg, false);
	if (!cfgtext)
		return kap_error(b->err, ENOMEM, "config");
	int r = kap_store_put_blob(b->s, cfgtext, strlen(cfgtext), config_digest, b->err);
	if (r < 0)
		return r;
	bool docker = b->o->format && !strcmp(b->o->format, "docker");
	cleanup_json struct kap_json *m = kap_json_new_object();
	kap_json_set(m, "schemaVersion", kap_json_new_int64(2));
	kap_json_set(m, "mediaType",
		     kap_json_new_string(docker ? MT_DOCKER_MANIFEST : KAP_MT_OCI_MANIFEST));
	kap_json_set(m, "config",
		     descriptor(docker ? MT_DOCKER_CONFIG : KAP_MT_OCI_CONFIG, config_digest,
				(int64_t)strlen(cfgtext)));
	struct kap_json *layers = kap_json_new_array();
	for (size_t i = 0; i < st->n_layers; i++) {
		const char *mt = st->layers[i].media_type;
		if (docker && !strcmp(mt, MT_LAYER_GZIP))
			mt = MT_DOCKER_LAYER_GZIP;
		else if (docker && !strcmp(mt, MT_OCI_LAYER_TAR))
			mt = MT_DOCKER_LAYER_TAR;
		else if (docker && strncmp(mt, "application/vnd.docker.", 23))
			/* Schema 2 has no zstd layer type (image-spec media-types.md). */
			return kap_error_plain(b->err, EINVAL,
					       "--format docker: layer %.19s is %s, which a docker "
					       "manifest cannot name; use --compression gzip",
					       st->layers[i].digest, mt);
		kap_json_append(layers, descriptor(mt, st->layers[i].digest, st->layers[i].size));
	}
	kap_json_set(m, "layers", layers);
	cleanup_free char *mtext = kap_json_dump(m, false);
	if (!mtext)
		return kap_error(b->err, ENOMEM, "manifest");
	if ((r = kap_store_put_blob(b->s, mtext, strlen(mtext), manifest_digest, b->err)) < 0)
		return r;
	for (char **n = names; n && *n; n++)
		if ((r = kap_store_tag(b->s, *n, manifest_digest, b->err)) < 0)
			return r;
	return 0;
}

/* --layers=false: the stage's accumulated upper directory becomes its one new layer. */
static int finish_stage(struct builder *b, struct stage *st)
{
	if (!st->accumulate || !st->pending_by)
		return 0;
	cleanup_free char *by = steal_ptr(st->pending_by);
	st->accumulate = false;
	return commit_upper(b, st, by, false);
}

/*
 * --squash: the merged view of every layer (base included) is the image's only layer. A
 * merged overlay shows no whiteouts and no overlay xattrs, so its walk is the flattened
 * rootfs; the earlier history entries stay, marked empty_layer, so the non-empty ones still
 * count the layers (image-spec config.md "history").
 */
static int squash(struct builder *b, struct stage *st)
{
	cleanup_close int rootfd = kap_build_mount(b, st, "squash-", &b->squash_mounted);
	if (rootfd < 0)
		return rootfd;
	cleanup_close int dfd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kap_error(b->err, errno, "open %s/squash-merged", b->tmp);
	struct kap_built_layer l;
	int r = kap_build_layer_as(b->s, dfd, b->epoch, NULL, b->zstd, &l, b->err);
	close(steal_fd(dfd));
	close(steal_fd(rootfd));
	if (r < 0 || (r = kap_build_umount(b, "squash-", &b->squash_mounted)) < 0)
		return r;
	if (!kap_store_has_layer(b->s, l.diff_id) &&
	    (r = kap_store_unpack_layer(b->s, l.digest, l.zstd ? KAP_COMP_ZSTD : KAP_COMP_GZIP,
					l.diff_id, b->err)) < 0)
		return r;
	for (size_t i = 0; i < st->n_layers; i++)
		free(st->layers[i].media_type);
	st->n_layers = 0;
	struct kap_json *rootfs = kap_json_get(st->cfg, "rootfs");
	if (rootfs && kap_json_type(rootfs) == KAP_JSON_OBJECT)
		kap_json_set(rootfs, "diff_ids", kap_json_new_array());
	struct kap_json *h = kap_json_get(st->cfg, "history");
	size_t nh = h && kap_json_type(h) == KAP_JSON_ARRAY ? kap_json_array_len(h) : 0;
	for (size_t i = 0; i < nh; i++) {
		struct kap_json *e = kap_json_array_at(h, i);
		if (e && kap_json_type(e) == KAP_JSON_OBJECT)
			kap_json_set(e, "empty_layer", kap_json_new_bool(true));
	}
	return kap_build_apply_layer(b, st, &l, "kapsel build --squash");
}

static void builder_cleanup(struct builder *b)
{
	if (b->squash_mounted)
		kap_build_umount(b, "squash-", &b->squash_mounted);
	if (b->mounted)
		kap_build_umount(b, "", &b->mounted);
	if (b->from_mounted)
		kap_build_umount(b, "from-", &b->from_mounted);
	if (b->tmp) {
		cleanup_close int parent = -EBADF;
		char *slash = strrchr(b->tmp, '/');
		if (slash) {
			*slash = '\0';
			parent = open(b->tmp, O_PATH | O_DIRECTORY | O_CLOEXEC);
			if (parent >= 0)
				kap_fs_rm_rf(parent, slash + 1);
			*slash = '/';
		}
		free(b->tmp);
	}
	if (b->tmpfd >= 0)
		close(b->tmpfd);
	if (b->ctxfd >= 0)
		close(b->ctxfd);
	for (size_t i = 0; i < b->n_stages; i++)
		kap_build_stage_clear(&b->stages[i]);
	free(b->stages);
	for (size_t i = 0; i < b->n_ignore; i++)
		free(b->ignore[i]);
	free(b->ignore);
	for (size_t i = 0; i < b->n_meta; i++)
		free(b->meta[i]);
	free(b->meta);
	kap_containerfile_clear(&b->cf);
	if (b->s)
		kap_store_close(b->s);
}

static int build(struct builder *b, char **id_out)
{
	const struct kapsel_build_options *o = b->o;
	int r;
	if (!o->context || !*o->context)
		return kap_error_plain(b->err, EINVAL, "build: no context directory given");
	if (geteuid() != 0)
		return kap_error_plain(b->err, EPERM,
				       "kapsel build runs as root (RUN mounts overlays)");
	if ((b->ctxfd = open(o->context, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		return kap_error(b->err, errno, "build context %s", o->context);
	cleanup_free char *file = NULL;
	if (o->file) {
		file = strdup(o->file);
	} else {
		if (asprintf(&file, "%s/Containerfile", o->context) >= 0 &&
		    access(file, F_OK) < 0) {
			free(file);
			if (asprintf(&file, "%s/Dockerfile", o->context) < 0)
				file = NULL;
		}
	}
	if (!file)
		return kap_error(b->err, ENOMEM, "build");
	cleanup_free char *text = NULL;
	size_t len;
	if ((r = kap_fs_read_file(AT_FDCWD, file, KAP_CF_MAX_SIZE, &text, &len, b->err)) < 0)
		return r;
	if ((r = kap_cf_parse(file, text, len, &b->cf, b->err)) < 0)
		return r;
	if ((r = kap_build_load_ignore(b)) < 0)
		return r;
	/* No emulation: a RUN executes on this CPU, so only its platform can be built. */
	if (o->platform && strcmp(o->platform, "linux/amd64") &&
	    strcmp(o->platform, "linux/x86_64"))
		return kap_error_plain(b->err, ENOTSUP,
				       "--platform %s: kapsel builds only linux/amd64 (this host's "
				       "platform; RUN has no emulation for others)",
				       o->platform);
	if (o->format && strcmp(o->format, "oci") && strcmp(o->format, "docker"))
		return kap_error_plain(b->err, EINVAL, "--format %s: expected oci or docker",
				       o->format);
	if (o->compression && strcmp(o->compression, "gzip") && strcmp(o->compression, "zstd"))
		return kap_error_plain(b->err, EINVAL, "--compression %s: expected gzip or zstd",
				       o->compression);
	b->zstd = o->compression && !strcmp(o->compression, "zstd");
	if (b->zstd && o->format && !strcmp(o->format, "docker"))
		return kap_error_plain(b->err, EINVAL,
				       "--compression zstd: a docker manifest has no zstd layer "
				       "type; use --format oci");
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	b->epoch = -1;
	if (o->has_timestamp) {
		if (o->timestamp < 0)
			return kap_error_plain(b->err, EINVAL, "--timestamp %lld: not a time",
					       (long long)o->timestamp);
		b->epoch = o->timestamp;
	} else if (sde && *sde) {
		char *end;
		long long v = strtoll(sde, &end, 10);
		if (*end || v < 0)
			return kap_error_plain(b->err, EINVAL, "SOURCE_DATE_EPOCH=%s: not a time",
					       sde);
		b->epoch = v;
	}

	/* Which stage is wanted: --target, else the last. */
	size_t n_from = 0, target = 0;
	bool found = !o->target;
	for (size_t i = 0; i < b->cf.n; i++) {
		const struct kap_cf_instr *in = &b->cf.instrs[i];
		if (in->kind != KAP_CF_FROM)
			continue;
		if (o->target && in->n_args > 1 && !strcasecmp(in->args[1], o->target)) {
			target = n_from;
			found = true;
		}
		n_from++;
	}
	if (!found)
		return kap_error_plain(b->err, ENOENT, "--target %s: no stage of that name in %s",
				       o->target, file);
	if (!o->target)
		target = n_from - 1;
	cleanup_strv char **names = calloc(1, sizeof(char *));
	size_t n_names = 0;
	if (!names)
		return kap_error(b->err, ENOMEM, "build");
	for (char *const *t = o->tags; t && *t; t++) {
		char *nm;
		if ((r = kap_image_local_name(*t, &nm, b->err)) < 0)
			return r;
		if (kap_build_strv_add(&names, &n_names, nm) < 0)
			return kap_error(b->err, ENOMEM, "build");
	}

	if ((r = kap_store_open(o->store, &b->s, b->err)) < 0)
		return r;
	/* Absolute: the overlay's directories and the bundle's root.path are named by it. */
	cleanup_free char *store_abs = realpath(kap_store_path(b->s), NULL);
	if (!store_abs)
		return kap_error(b->err, errno, "store %s", kap_store_path(b->s));
	if (asprintf(&b->tmp, "%s/tmp/build-XXXXXX", store_abs) < 0) {
		b->tmp = NULL;
		return kap_error(b->err, ENOMEM, "build");
	}
	if (!mkdtemp(b->tmp)) {
		r = kap_error(b->err, errno, "create %s", b->tmp);
		free(steal_ptr(b->tmp));
		return r;
	}
	/* Locked: the store removes unlocked temp entries older than a minute as leftovers. */
	if ((b->tmpfd = open(b->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    flock(b->tmpfd, LOCK_EX) < 0)
		return kap_error(b->err, errno, "open %s", b->tmp);
	if (mkdirat(b->tmpfd, "empty", 0755) < 0)
		return kap_error(b->err, errno, "create %s/empty", b->tmp);

	struct stage *st = NULL;
	size_t steps = 0, step = 0;
	for (size_t i = 0, f = 0; i < b->cf.n; i++) {
		if (b->cf.instrs[i].kind == KAP_CF_FROM && f++ > target)
			break;
		steps++;
	}
	for (size_t i = 0; i < b->cf.n; i++) {
		const struct kap_cf_instr *in = &b->cf.instrs[i];
		if (in->kind == KAP_CF_FROM && b->n_stages == target + 1)
			break;
		if ((r = kap_build_check_cancel(b)) < 0)
			return r;
		if (!o->quiet)
			fprintf(stderr, "STEP %zu/%zu: %s\n", ++step, steps, in->text);
		switch (in->kind) {
		case KAP_CF_FROM: {
			if (st && (r = finish_stage(b, st)) < 0)
				return r;
			struct stage *ns = realloc(b->stages, (b->n_stages + 1) * sizeof(*ns));
			if (!ns)
				return kap_error(b->err, ENOMEM, "build");
			b->stages = ns;
			st = &ns[b->n_stages++];
			*st = (struct stage){0};
			r = do_from(b, in, st);
			st->accumulate = o->single_layer && b->n_stages == target + 1;
			break;
		}
		case KAP_CF_ARG:
			r = do_arg(b, in, st);
			if (r == 0 && st)
				r = kap_build_chain_advance(b, st, in, NULL);
			break;
		case KAP_CF_RUN:
			r = do_run(b, in, st);
			break;
		case KAP_CF_COPY:
		case KAP_CF_ADD:
			r = kap_build_copy(b, in, st);
			break;
		default:
			r = kap_build_config_instr(b, in, st);
			if (r == 0)
				kap_build_add_history(b, st, in->text, true);
			if (r == 0)
				r = kap_build_chain_advance(b, st, in, NULL);
			break;
		}
		if (r < 0)
			return r;
	}
	if ((r = kap_build_check_cancel(b)) < 0 || (r = finish_stage(b, &b->stages[target])) < 0 ||
	    (o->squash && (r = squash(b, &b->stages[target])) < 0))
		return r;
	char config_digest[KAP_DIGEST_LEN + 1], manifest_digest[KAP_DIGEST_LEN + 1];
	if ((r = kap_build_write_image(b, &b->stages[target], config_digest, names,
				       manifest_digest)) < 0)
		return r;
	if (id_out && !(*id_out = strdup(config_digest + 7)))
		return kap_error(b->err, ENOMEM, "build");
	return 0;
}

API int kapsel_image_build(const struct kapsel_build_options *o, char **id_out,
			   struct kapsel_error **err)
{
	struct builder b = {.o = o, .ctxfd = -EBADF, .tmpfd = -EBADF, .err = err};
	int r = build(&b, id_out);
	builder_cleanup(&b);
	return r;
}
