/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests, indexes and image configs (OCI image-spec 1.1 manifest.md, image-index.md,
 * config.md; Docker image manifest v2 schema 2 and manifest lists, which share the shape).
 * Every document comes from a registry or a tarball: each field is type-checked and each error
 * names the JSON path of the bad field.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

/* A document with more entries than this is hostile, not an image. */
#define MAX_ENTRIES 4096

static void descriptor_clear(struct kap_descriptor *d)
{
	free(d->media_type);
	free(d->platform_os);
	free(d->platform_arch);
	free(d->platform_variant);
	memset(d, 0, sizeof(*d));
}

/* descriptor.md: mediaType, digest and size are required. */
static int descriptor_parse(const struct kap_json *o, const char *path, bool platform,
			    struct kap_descriptor *d, struct kapsel_error **err)
{
	int r;
	memset(d, 0, sizeof(*d));
	if (kap_json_type(o) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object", path);
	if ((r = kap_json_read_string(o, path, "mediaType", &d->media_type, err)) < 0)
		return r;
	if (r == 0)
		return kap_error_plain(err, EINVAL, "%s.mediaType: missing", path);
	cleanup_free char *digest = NULL;
	if ((r = kap_json_read_string(o, path, "digest", &digest, err)) < 0)
		return r;
	if (r == 0)
		return kap_error_plain(err, EINVAL, "%s.digest: missing", path);
	char what[128];
	snprintf(what, sizeof(what), "%s.digest", path);
	if ((r = kap_digest_validate(digest, what, err)) < 0)
		return r;
	memcpy(d->digest, digest, KAP_DIGEST_LEN + 1);
	if ((r = kap_json_read_int64(o, path, "size", &d->size, err)) < 0)
		return r;
	if (r == 0)
		return kap_error_plain(err, EINVAL, "%s.size: missing", path);
	if (d->size < 0)
		return kap_error_plain(err, EINVAL, "%s.size: negative", path);
	if (!platform)
		return 0;
	struct kap_json *p;
	if ((r = kap_json_read_member(o, path, "platform", KAP_JSON_OBJECT, &p, err)) <= 0)
		return r;
	char ppath[128];
	snprintf(ppath, sizeof(ppath), "%s.platform", path);
	if ((r = kap_json_read_string(p, ppath, "os", &d->platform_os, err)) < 0 ||
	    (r = kap_json_read_string(p, ppath, "architecture", &d->platform_arch, err)) < 0 ||
	    (r = kap_json_read_string(p, ppath, "variant", &d->platform_variant, err)) < 0)
		return r;
	return 0;
}

static int parse_doc(const char *buf, size_t len, const char *what, struct kap_json **doc,
		     struct kapsel_error **err)
{
	int r = kap_json_parse(buf, len, what, doc, err);
	if (r < 0)
		return r;
	if (kap_json_type(*doc) != KAP_JSON_OBJECT) {
		kap_json_put(*doc);
		*doc = NULL;
		return kap_error_plain(err, EINVAL, "%s: expected a JSON object", what);
	}
	int64_t version = 0;
	if ((r = kap_json_read_int64(*doc, "", "schemaVersion", &version, err)) < 0 ||
	    (r == 1 && version != 2) || r == 0) {
		kap_json_put(*doc);
		*doc = NULL;
		if (r < 0)
			return r;
		return kap_error_plain(err, EINVAL, "%s: schemaVersion: expected 2", what);
	}
	return 0;
}

bool kap_manifest_is_index(const char *media_type, const struct kap_json *doc)
{
	const char *mt = media_type;
	struct kap_json *m = kap_json_get(doc, "mediaType");
	if ((!mt || !*mt) && m && kap_json_type(m) == KAP_JSON_STRING)
		mt = kap_json_string(m);
	if (mt && *mt) {
		/* "application/...+json; charset=utf-8" from some registries */
		size_t n = strcspn(mt, "; ");
		return (n == strlen(KAP_MT_OCI_INDEX) && !strncmp(mt, KAP_MT_OCI_INDEX, n)) ||
		       (n == strlen(KAP_MT_DOCKER_LIST) && !strncmp(mt, KAP_MT_DOCKER_LIST, n));
	}
	return kap_json_get(doc, "manifests") != NULL && kap_json_get(doc, "layers") == NULL;
}

void kap_manifest_clear(struct kap_manifest *m)
{
	if (!m)
		return;
	descriptor_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		descriptor_clear(&m->layers[i]);
	free(m->layers);
	memset(m, 0, sizeof(*m));
}

void kap_index_clear(struct kap_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->n_manifests; i++)
		descriptor_clear(&idx->manifests[i]);
	free(idx->manifests);
	memset(idx, 0, sizeof(*idx));
}

static int media_type_check(const struct kap_json *doc, const char *what, const char *a,
			    const char *b, struct kapsel_error **err)
{
	cleanup_free char *mt = NULL;
	int r = kap_json_read_string(doc, "", "mediaType", &mt, err);
	if (r <= 0)
		return r;
	if (strcmp(mt, a) && strcmp(mt, b))
		return kap_error_plain(err, EINVAL, "%s: mediaType: unexpected \"%.100s\"", what,
				       mt);
	return 0;
}

int kap_manifest_parse(const char *buf, size_t len, struct kap_manifest *out,
		       struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	struct kap_manifest m = {0};
	int r;
	memset(out, 0, sizeof(*out));
	if ((r = parse_doc(buf, len, "manifest", &doc, err)) < 0)
		return r;
	if ((r = media_type_check(doc, "manifest", KAP_MT_OCI_MANIFEST, KAP_MT_DOCKER_MANIFEST,
				  err)) < 0)
		return r;
	struct kap_json *cfg, *layers;
	if ((r = kap_json_read_member(doc, "", "config", KAP_JSON_OBJECT, &cfg, err)) < 0)
		return r;
	if (!cfg)
		return kap_error_plain(err, EINVAL, "manifest: config: missing");
	if ((r = descriptor_parse(cfg, "config", false, &m.config, err)) < 0)
		goto fail;
	if ((r = kap_json_read_member(doc, "", "layers", KAP_JSON_ARRAY, &layers, err)) < 0)
		goto fail;
	size_t n = kap_json_array_len(layers);
	if (n > MAX_ENTRIES) {
		r = kap_error_plain(err, E2BIG, "manifest: layers: more than %d", MAX_ENTRIES);
		goto fail;
	}
	m.layers = calloc(n ? n : 1, sizeof(*m.layers));
	if (!m.layers) {
		r = kap_error(err, ENOMEM, "manifest");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		char path[32];
		snprintf(path, sizeof(path), "layers[%zu]", i);
		r = descriptor_parse(kap_json_array_at(layers, i), path, false, &m.layers[i], err);
		m.n_layers = i + 1;
		if (r < 0)
			goto fail;
	}
	*out = m;
	return 0;
fail:
	kap_manifest_clear(&m);
	return r;
}

int kap_index_parse(const char *buf, size_t len, struct kap_index *out, struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	struct kap_index idx = {0};
	int r;
	memset(out, 0, sizeof(*out));
	if ((r = parse_doc(buf, len, "index", &doc, err)) < 0)
		return r;
	if ((r = media_type_check(doc, "index", KAP_MT_OCI_INDEX, KAP_MT_DOCKER_LIST, err)) < 0)
		return r;
	struct kap_json *list;
	if ((r = kap_json_read_member(doc, "", "manifests", KAP_JSON_ARRAY, &list, err)) < 0)
		return r;
	if (!list)
		return kap_error_plain(err, EINVAL, "index: manifests: missing");
	size_t n = kap_json_array_len(list);
	if (n > MAX_ENTRIES)
		return kap_error_plain(err, E2BIG, "index: manifests: more than %d", MAX_ENTRIES);
	idx.manifests = calloc(n ? n : 1, sizeof(*idx.manifests));
	if (!idx.manifests)
		return kap_error(err, ENOMEM, "index");
	for (size_t i = 0; i < n; i++) {
		char path[32];
		snprintf(path, sizeof(path), "manifests[%zu]", i);
		r = descriptor_parse(kap_json_array_at(list, i), path, true, &idx.manifests[i],
				     err);
		idx.n_manifests = i + 1;
		if (r < 0) {
			kap_index_clear(&idx);
			return r;
		}
	}
	*out = idx;
	return 0;
}

static bool is_manifest_type(const char *mt)
{
	return mt && (!strcmp(mt, KAP_MT_OCI_MANIFEST) || !strcmp(mt, KAP_MT_DOCKER_MANIFEST));
}

int kap_index_select(const struct kap_index *idx, const char *platform,
		     const struct kap_descriptor **out, struct kapsel_error **err)
{
	char want[128];
	snprintf(want, sizeof(want), "%s", platform && *platform ? platform : "linux/amd64");
	char *arch = strchr(want, '/');
	if (!arch || arch == want || !arch[1])
		return kap_error_plain(
		    err, EINVAL, "platform \"%s\": expected OS/ARCH[/VARIANT] (linux/amd64)", want);
	*arch++ = '\0';
	char *variant = strchr(arch, '/');
	if (variant)
		*variant++ = '\0';
	/* Go's names, which image indexes use: x86_64 is amd64, aarch64 is arm64. */
	if (!strcmp(arch, "x86_64"))
		arch = "amd64";
	else if (!strcmp(arch, "aarch64"))
		arch = "arm64";

	const struct kap_descriptor *best = NULL;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const struct kap_descriptor *d = &idx->manifests[i];
		if (!is_manifest_type(d->media_type) || !d->platform_os || !d->platform_arch)
			continue;
		if (strcmp(d->platform_os, want) || strcmp(d->platform_arch, arch))
			continue;
		if (variant && (!d->platform_variant || strcmp(d->platform_variant, variant)))
			continue;
		/* Without a requested variant, prefer an entry without one (or the first). */
		if (!best || (best->platform_variant && !d->platform_variant))
			best = d;
	}
	if (best) {
		*out = best;
		return 0;
	}
	/* Name what is available, so the user can pick with --platform. */
	char avail[512] = "";
	size_t used = 0;
	for (size_t i = 0; i < idx->n_manifests && used < sizeof(avail) - 1; i++) {
		const struct kap_descriptor *d = &idx->manifests[i];
		if (!d->platform_os || !d->platform_arch)
			continue;
		int w =
		    snprintf(avail + used, sizeof(avail) - used, "%s%s/%s%s%s", used ? ", " : "",
			     d->platform_os, d->platform_arch, d->platform_variant ? "/" : "",
			     d->platform_variant ? d->platform_variant : "");
		if (w < 0 || (size_t)w >= sizeof(avail) - used)
			break;
		used += (size_t)w;
	}
	return kap_error_plain(
	    err, ENOENT, "no image for platform %s/%s%s%s in the index (available: %s)", want, arch,
	    variant ? "/" : "", variant ? variant : "", used ? avail : "none");
}

void kap_image_config_clear(struct kap_image_config *c)
{
	if (!c)
		return;
	free(c->architecture);
	free(c->os);
	free(c->created);
	kap_strvp(&c->env);
	kap_strvp(&c->entrypoint);
	kap_strvp(&c->cmd);
	free(c->working_dir);
	free(c->user);
	free(c->stop_signal);
	kap_strvp(&c->exposed_ports);
	for (size_t i = 0; i < c->n_labels; i++) {
		free(c->labels_keys[i]);
		free(c->labels_values[i]);
	}
	free(c->labels_keys);
	free(c->labels_values);
	for (size_t i = 0; i < c->n_diff_ids; i++)
		free(c->diff_ids[i]);
	free(c->diff_ids);
	memset(c, 0, sizeof(*c));
}

static int config_section(const struct kap_json *cfg, struct kap_image_config *c,
			  struct kapsel_error **err)
{
	const char *p = "config";
	int r;
	if ((r = kap_json_read_strv(cfg, p, "Env", &c->env, err)) < 0 ||
	    (r = kap_json_read_strv(cfg, p, "Entrypoint", &c->entrypoint, err)) < 0 ||
	    (r = kap_json_read_strv(cfg, p, "Cmd", &c->cmd, err)) < 0 ||
	    (r = kap_json_read_string(cfg, p, "WorkingDir", &c->working_dir, err)) < 0 ||
	    (r = kap_json_read_string(cfg, p, "User", &c->user, err)) < 0 ||
	    (r = kap_json_read_string(cfg, p, "StopSignal", &c->stop_signal, err)) < 0)
		return r;
	/* Docker writes null for an empty Entrypoint/Cmd/Labels; a JSON null reads as absent. */
	struct kap_json *ports, *labels;
	if ((r = kap_json_read_member(cfg, p, "ExposedPorts", KAP_JSON_OBJECT, &ports, err)) < 0)
		return r;
	struct kap_json_iter it;
	const char *key;
	struct kap_json *val;
	size_t n = 0;
	for (it = kap_json_iter(ports); kap_json_iter_next(&it, &key, &val);)
		n++;
	if (n > MAX_ENTRIES)
		return kap_error_plain(err, E2BIG, "config.ExposedPorts: more than %d",
				       MAX_ENTRIES);
	if (ports) {
		c->exposed_ports = calloc(n + 1, sizeof(char *));
		if (!c->exposed_ports)
			return kap_error(err, ENOMEM, "config.ExposedPorts");
		n = 0;
		for (it = kap_json_iter(ports); kap_json_iter_next(&it, &key, &val);)
			if (!(c->exposed_ports[n++] = strdup(key)))
				return kap_error(err, ENOMEM, "config.ExposedPorts");
	}
	if ((r = kap_json_read_member(cfg, p, "Labels", KAP_JSON_OBJECT, &labels, err)) < 0)
		return r;
	n = 0;
	for (it = kap_json_iter(labels); kap_json_iter_next(&it, &key, &val);)
		n++;
	if (n > MAX_ENTRIES)
		return kap_error_plain(err, E2BIG, "config.Labels: more than %d", MAX_ENTRIES);
	c->labels_keys = calloc(n + 1, sizeof(char *));
	c->labels_values = calloc(n + 1, sizeof(char *));
	if (!c->labels_keys || !c->labels_values)
		return kap_error(err, ENOMEM, "config.Labels");
	for (it = kap_json_iter(labels); kap_json_iter_next(&it, &key, &val);) {
		if (kap_json_type(val) != KAP_JSON_STRING)
			return kap_error_plain(err, EINVAL, "config.Labels.%.100s: expected string",
					       key);
		c->labels_keys[c->n_labels] = strdup(key);
		c->labels_values[c->n_labels] = strdup(kap_json_string(val));
		c->n_labels++;
		if (!c->labels_keys[c->n_labels - 1] || !c->labels_values[c->n_labels - 1])
			return kap_error(err, ENOMEM, "config.Labels");
	}
	return 0;
}

int kap_image_config_parse(const char *buf, size_t len, struct kap_image_config *out,
			   struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	cleanup_free char *type = NULL;
	struct kap_image_config c = {0};
	int r;
	memset(out, 0, sizeof(*out));
	if ((r = kap_json_parse(buf, len, "image config", &doc, err)) < 0)
		return r;
	if (kap_json_type(doc) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "image config: expected a JSON object");
	if ((r = kap_json_read_string(doc, "", "architecture", &c.architecture, err)) < 0 ||
	    (r = kap_json_read_string(doc, "", "os", &c.os, err)) < 0 ||
	    (r = kap_json_read_string(doc, "", "created", &c.created, err)) < 0)
		goto fail;
	struct kap_json *cfg, *rootfs, *ids;
	r = kap_json_read_member(doc, "", "config", KAP_JSON_OBJECT, &cfg, err);
	if (r < 0 || (cfg && (r = config_section(cfg, &c, err)) < 0))
		goto fail;
	if ((r = kap_json_read_member(doc, "", "rootfs", KAP_JSON_OBJECT, &rootfs, err)) < 0)
		goto fail;
	if (!rootfs) {
		r = kap_error_plain(err, EINVAL, "image config: rootfs: missing");
		goto fail;
	}
	if ((r = kap_json_read_string(rootfs, "rootfs", "type", &type, err)) < 0)
		goto fail;
	if (!type || strcmp(type, "layers")) {
		r = kap_error_plain(err, EINVAL, "image config: rootfs.type: expected \"layers\"");
		goto fail;
	}
	if ((r = kap_json_read_member(rootfs, "rootfs", "diff_ids", KAP_JSON_ARRAY, &ids, err)) < 0)
		goto fail;
	size_t n = kap_json_array_len(ids);
	if (n > MAX_ENTRIES) {
		r = kap_error_plain(err, E2BIG, "image config: rootfs.diff_ids: more than %d",
				    MAX_ENTRIES);
		goto fail;
	}
	c.diff_ids = calloc(n ? n : 1, sizeof(char *));
	if (!c.diff_ids) {
		r = kap_error(err, ENOMEM, "image config");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		struct kap_json *e = kap_json_array_at(ids, i);
		char what[48];
		snprintf(what, sizeof(what), "rootfs.diff_ids[%zu]", i);
		if (kap_json_type(e) != KAP_JSON_STRING) {
			r = kap_error_plain(err, EINVAL, "%s: expected string", what);
			goto fail;
		}
		if ((r = kap_digest_validate(kap_json_string(e), what, err)) < 0)
			goto fail;
		if (!(c.diff_ids[i] = strdup(kap_json_string(e)))) {
			r = kap_error(err, ENOMEM, "image config");
			goto fail;
		}
		c.n_diff_ids = i + 1;
	}
	*out = c;
	return 0;
fail:
	kap_image_config_clear(&c);
	if (err && *err && strncmp((*err)->msg, "image config", 12))
		kap_error_wrap(err, "image config");
	return r;
}

int kap_layer_compression(const char *media_type, enum kap_compression *out,
			  struct kapsel_error **err)
{
	static const struct {
		const char *type;
		enum kap_compression c;
	} table[] = {
	    {"application/vnd.oci.image.layer.v1.tar", KAP_COMP_NONE},
	    {"application/vnd.oci.image.layer.v1.tar+gzip", KAP_COMP_GZIP},
	    {"application/vnd.oci.image.layer.v1.tar+zstd", KAP_COMP_ZSTD},
	    {"application/vnd.oci.image.layer.nondistributable.v1.tar", KAP_COMP_NONE},
	    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", KAP_COMP_GZIP},
	    {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", KAP_COMP_ZSTD},
	    {"application/vnd.docker.image.rootfs.diff.tar", KAP_COMP_NONE},
	    {"application/vnd.docker.image.rootfs.diff.tar.gzip", KAP_COMP_GZIP},
	    {"application/vnd.docker.image.rootfs.diff.tar.zstd", KAP_COMP_ZSTD},
	    {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", KAP_COMP_GZIP},
	};
	for (size_t i = 0; media_type && i < KAP_ARRAY_SIZE(table); i++) {
		if (!strcmp(media_type, table[i].type)) {
			*out = table[i].c;
			return 0;
		}
	}
	return kap_error_plain(err, ENOTSUP, "unsupported layer media type \"%.100s\"",
			       media_type ? media_type : "");
}

/* qemu-user's name for a GOARCH, as its binfmt_misc entries are called (qemu-aarch64, ...). */
static const char *qemu_arch(const char *goarch)
{
	static const char *const map[][2] = {
	    {"amd64", "x86_64"},    {"arm64", "aarch64"},     {"arm", "arm"},
	    {"386", "i386"},	    {"ppc64le", "ppc64le"},   {"s390x", "s390x"},
	    {"riscv64", "riscv64"}, {"mips64le", "mips64el"},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(map); i++)
		if (!strcmp(map[i][0], goarch))
			return map[i][1];
	return NULL;
}

int kap_image_platform_check(const char *image, const char *os, const char *arch,
			     struct kapsel_error **err)
{
	/* Images without the fields (old Docker ones) say nothing against running. */
	if (os && *os && strcmp(os, "linux"))
		return kap_error_plain(err, ENOEXEC,
				       "image %s is for %s/%s; this machine runs linux/%s", image,
				       os, arch && *arch ? arch : "?", KAP_HOST_ARCH);
	if (!arch || !*arch || !strcmp(arch, KAP_HOST_ARCH))
		return 0;
	const char *q = qemu_arch(arch);
	char path[96], buf[16] = "";
	snprintf(path, sizeof(path), "/proc/sys/fs/binfmt_misc/qemu-%s", q ? q : arch);
	FILE *f = fopen(path, "re");
	bool enabled = f && fgets(buf, sizeof(buf), f) && !strncmp(buf, "enabled", 7);
	if (f)
		fclose(f);
	if (enabled) {
		kap_warn("image %s is for linux/%s: running it through %s", image, arch, path);
		return 0;
	}
	return kap_error_plain(
	    err, ENOEXEC,
	    "image %s is for linux/%s; this machine runs linux/%s (no binfmt_misc "
	    "handler %s)",
	    image, arch, KAP_HOST_ARCH, path);
}
