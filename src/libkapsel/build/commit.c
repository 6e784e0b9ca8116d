/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel commit CONTAINER [IMAGE]`: a `kapsel run` container's overlay upper directory
 * becomes one layer on top of the image it runs, with config changes given as Containerfile
 * instructions (`--change 'CMD ["sh"]'`), as podman commit does.
 *
 * The runtime creates mount targets the image lacks (/etc/hosts and /etc/hostname, bound
 * from the container directory) as empty files in the upper directory; they are the run's
 * plumbing, not the container's change, and are left out unless the image had them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/build.h>

#include "build/builder.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"

#define API __attribute__((visibility("default")))

static const char *const mount_targets[] = {"etc/hosts", "etc/hostname", "etc/resolv.conf"};

/* One --change: a config-only instruction, parsed as a line of a Containerfile. */
static int apply_change(struct builder *b, struct stage *st, const char *change)
{
	cleanup_free char *text = NULL;
	if (asprintf(&text, "FROM scratch\n%s\n", change) < 0)
		return kap_error(b->err, ENOMEM, "--change");
	struct kap_containerfile cf;
	int r = kap_cf_parse("--change", text, strlen(text), &cf, b->err);
	if (r < 0)
		return r;
	if (cf.n != 2) {
		kap_containerfile_clear(&cf);
		return kap_error_plain(b->err, EINVAL,
				       "--change \"%.60s\": one instruction expected", change);
	}
	struct kap_cf_instr *in = &cf.instrs[1];
	switch (in->kind) {
	case KAP_CF_CMD:
	case KAP_CF_ENTRYPOINT:
	case KAP_CF_ENV:
	case KAP_CF_LABEL:
	case KAP_CF_EXPOSE:
	case KAP_CF_USER:
	case KAP_CF_WORKDIR:
	case KAP_CF_VOLUME:
	case KAP_CF_STOPSIGNAL:
	case KAP_CF_SHELL:
	case KAP_CF_HEALTHCHECK:
	case KAP_CF_MAINTAINER:
		r = kap_build_config_instr(b, in, st);
		if (r == 0)
			kap_build_add_history(b, st, in->text, true);
		break;
	default:
		r = kap_error_plain(b->err, EINVAL, "--change: %s cannot be applied by commit",
				    kap_cf_kind_name(in->kind));
	}
	kap_containerfile_clear(&cf);
	return r;
}

static int commit(struct builder *b, const struct kapsel_commit_options *o, char **id_out)
{
	int r;
	if (!o->container || !*o->container || strchr(o->container, '/') ||
	    !strcmp(o->container, ".") || !strcmp(o->container, ".."))
		return kap_error_plain(b->err, EINVAL, "commit: bad container name \"%s\"",
				       o->container ? o->container : "");
	cleanup_strv char **names = calloc(1, sizeof(char *));
	size_t n_names = 0;
	if (!names)
		return kap_error(b->err, ENOMEM, "commit");
	if (o->image) {
		char *nm;
		if ((r = kap_image_local_name(o->image, &nm, b->err)) < 0)
			return r;
		if (kap_build_strv_add(&names, &n_names, nm) < 0)
			return kap_error(b->err, ENOMEM, "commit");
	}
	if ((r = kap_store_open(o->store, &b->s, b->err)) < 0)
		return r;
	cleanup_free char *cdir = NULL;
	if (asprintf(&cdir, "%s/containers/%s", kap_store_path(b->s), o->container) < 0)
		return kap_error(b->err, ENOMEM, "commit");
	cleanup_close int cfd = open(cdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (cfd < 0)
		return errno == ENOENT
			   ? kap_error_plain(b->err, ENOENT, "no container named %s", o->container)
			   : kap_error(b->err, errno, "open %s", cdir);
	cleanup_free char *meta = NULL;
	size_t len;
	cleanup_json struct kap_json *j = NULL;
	cleanup_free char *manifest = NULL;
	if ((r = kap_fs_read_file(cfd, "container.json", 1 << 20, &meta, &len, b->err)) < 0 ||
	    (r = kap_json_parse(meta, len, "container.json", &j, b->err)) < 0 ||
	    (r = kap_json_read_string(j, "container.json", "manifest", &manifest, b->err)) < 0)
		return r;
	if (!manifest || kap_digest_validate(manifest, "container.json manifest", b->err) < 0)
		return kap_error_plain(b->err, EINVAL, "%s/container.json: no image manifest",
				       cdir);

	struct stage *st = calloc(1, sizeof(*st));
	if (!st)
		return kap_error(b->err, ENOMEM, "commit");
	b->stages = st;
	b->n_stages = 1;
	if ((r = kap_build_load_manifest(b, manifest, st)) < 0)
		return kap_error_wrap(b->err, "container %s", o->container);

	/* Mount targets the runtime made (empty files the image's layers do not have). */
	cleanup_close int upfd =
	    openat(cfd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (upfd < 0)
		return kap_error(b->err, errno, "open %s/upper", cdir);
	cleanup_strv char **lowers = NULL;
	size_t n_lowers;
	if ((r = kap_build_layer_paths(b, st, &lowers, &n_lowers)) < 0)
		return r;
	const char *skip[KAP_ARRAY_SIZE(mount_targets) + 1] = {NULL};
	size_t n_skip = 0;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(mount_targets); i++) {
		struct stat sst;
		if (fstatat(upfd, mount_targets[i], &sst, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sst.st_mode) || sst.st_size != 0)
			continue;
		bool in_image = false;
		for (size_t l = 0; l < n_lowers && !in_image; l++) {
			cleanup_close int lfd = open(lowers[l], O_PATH | O_DIRECTORY | O_CLOEXEC);
			in_image = lfd >= 0 &&
				   faccessat(lfd, mount_targets[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		}
		if (!in_image)
			skip[n_skip++] = mount_targets[i];
	}
	struct kap_built_layer l;
	if ((r = kap_build_layer(b->s, upfd, b->epoch, skip, &l, b->err)) < 0 ||
	    (r = kap_store_unpack_layer(b->s, l.digest, KAP_COMP_GZIP, l.diff_id, b->err)) < 0)
		return r;
	cleanup_free char *by = NULL;
	if (asprintf(&by, "kapsel commit %s", o->container) < 0)
		return kap_error(b->err, ENOMEM, "commit");
	if ((r = kap_build_apply_layer(b, st, &l, by)) < 0)
		return r;
	for (char *const *c = o->changes; c && *c; c++)
		if ((r = apply_change(b, st, *c)) < 0)
			return r;
	char config_digest[KAP_DIGEST_LEN + 1], manifest_digest[KAP_DIGEST_LEN + 1];
	if ((r = kap_build_write_image(b, st, config_digest, names, manifest_digest)) < 0)
		return r;
	if (id_out && !(*id_out = strdup(config_digest + 7)))
		return kap_error(b->err, ENOMEM, "commit");
	return 0;
}

API int kapsel_image_commit(const struct kapsel_commit_options *o, char **id_out,
			    struct kapsel_error **err)
{
	struct kapsel_build_options bo = {.store = o->store};
	struct builder b = {.o = &bo, .ctxfd = -EBADF, .tmpfd = -EBADF, .epoch = -1, .err = err};
	b.cf.escape = '\\';
	b.cf.path = strdup("--change");
	int r = b.cf.path ? commit(&b, o, id_out) : kap_error(err, ENOMEM, "commit");
	for (size_t i = 0; i < b.n_stages; i++)
		kap_build_stage_clear(&b.stages[i]);
	free(b.stages);
	kap_containerfile_clear(&b.cf);
	if (b.s)
		kap_store_close(b.s);
	return r;
}
