/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `run IMAGE` with an image the store may lack: podman's --pull policies (podman-run(1)
 * "--pull=policy") over short-name resolution (shortnames.c). Looking in the store needs no
 * network and no libcurl; only an actual pull binds it (core/dl.h), so a run of a stored image
 * starts as fast as before.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/image.h>
#include <kapsel/registry.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "image/image.h"
#include "image/shortnames.h"

#define API __attribute__((visibility("default")))

API int kapsel_pull_policy_parse(const char *s, enum kapsel_pull_policy *out,
				 struct kapsel_error **err)
{
	/* podman's spellings (pkg/config PullPolicy): the documented four and their aliases. */
	static const struct {
		const char *name;
		enum kapsel_pull_policy p;
	} names[] = {
	    {"missing", KAPSEL_PULL_MISSING},	 {"ifmissing", KAPSEL_PULL_MISSING},
	    {"notpresent", KAPSEL_PULL_MISSING}, {"always", KAPSEL_PULL_ALWAYS},
	    {"true", KAPSEL_PULL_ALWAYS},	 {"never", KAPSEL_PULL_NEVER},
	    {"false", KAPSEL_PULL_NEVER},	 {"newer", KAPSEL_PULL_NEWER},
	    {"ifnewer", KAPSEL_PULL_NEWER},
	};
	for (size_t i = 0; s && i < KAP_ARRAY_SIZE(names); i++)
		if (!strcasecmp(s, names[i].name)) {
			*out = names[i].p;
			return 0;
		}
	return kap_error_plain(
	    err, EINVAL, "--pull \"%s\": expected always, missing, never or newer", s ? s : "");
}

/* The stored name image resolves to (NULL when the store lacks it). */
static int find_local(const char *store_path, const char *image, char **name,
		      struct kapsel_error **err)
{
	struct kap_store *s = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	int r = kap_store_open(store_path, &s, err);
	if (r < 0)
		return r;
	/* The embedded default image is in the store as soon as it is asked for. */
	r = kap_image_ensure_default(s, image, err);
	if (r >= 0) {
		cleanup_error struct kapsel_error *e = NULL;
		r = kap_image_resolve_local(s, image, name, digest, &e);
		if (r == -ENOENT)
			r = 0;
		else if (r < 0)
			*err = steal_ptr(e);
	}
	kap_store_close(s);
	return r;
}

/* Progress, like pull's display, is for a terminal: a script's stderr gets the error alone. */
static bool progress(const struct kapsel_pull_options *o)
{
	return !o->quiet && isatty(STDERR_FILENO);
}

/* Append "; NAME: why" to *msg. */
static void note_failure(char **msg, const char *cand, const char *why)
{
	char *s = NULL;
	if (asprintf(&s, "%s%s%s: %s", *msg ? *msg : "", *msg ? "; " : "", cand, why) < 0)
		return;
	free(*msg);
	*msg = s;
}

/* Pull the candidates in order until one arrives; *name receives it. */
static int pull_candidates(const char *store_path, const char *image, bool stored, char **cands,
			   const struct kapsel_pull_options *o, char **name,
			   struct kapsel_error **err)
{
	cleanup_free char *tried = NULL;
	int code = ENOENT;
	size_t n = 0;
	for (char **c = cands; *c; c++, n++) {
		if (progress(o))
			fprintf(stderr, "Trying to pull %s...\n", *c);
		cleanup_error struct kapsel_error *e = NULL;
		char digest[KAPSEL_DIGEST_SIZE];
		int r = kapsel_pull(store_path, *c, o, digest, &e);
		if (r == 0)
			return (*name = strdup(*c)) ? 1 : kap_error(err, ENOMEM, "pull %s", *c);
		code = -r;
		note_failure(&tried, *c, e ? e->msg : strerror(-r));
		if (o->cancel && *o->cancel)
			break;
	}
	return kap_error_plain(err, code, "image %s%s; kapsel pull %s tried %zu %s: %s", image,
			       stored ? "" : " not found locally", image, n,
			       n == 1 ? "registry" : "registries", tried ? tried : "none");
}

API int kapsel_image_ensure(const char *store_path, const char *image,
			    enum kapsel_pull_policy policy, const struct kapsel_pull_options *opts,
			    char **name, struct kapsel_error **err)
{
	static const struct kapsel_pull_options none = {0};
	const struct kapsel_pull_options *o = opts ? opts : &none;
	cleanup_free char *local = NULL;
	*name = NULL;
	int r = find_local(store_path, image, &local, err);
	if (r < 0)
		return r;
	if (local && (policy == KAPSEL_PULL_MISSING || policy == KAPSEL_PULL_NEVER ||
		      /* an image ID has no registry to ask */
		      !strncmp(local, "sha256:", 7))) {
		*name = steal_ptr(local);
		return 0;
	}
	if (!local && policy == KAPSEL_PULL_NEVER)
		return kap_error_plain(err, ENOENT,
				       "image \"%s\" is not in the store and --pull=never forbids "
				       "pulling it",
				       image);
	if (local && policy == KAPSEL_PULL_NEWER) {
		/* Ask the registry the stored image came from; a locally built one has none. */
		if (!strncmp(local, "localhost/", 10)) {
			*name = steal_ptr(local);
			return 0;
		}
		char *cands[] = {local, NULL};
		cleanup_error struct kapsel_error *e = NULL;
		r = pull_candidates(store_path, image, true, cands, o, name, &e);
		if (r < 0) {
			kap_warn("%s: checking for a newer image failed, using the stored one: %s",
				 local, e->msg);
			*name = steal_ptr(local);
			return 0;
		}
		return r;
	}

	struct kap_registries_conf c;
	cleanup_strv char **cands = NULL;
	const char *alias = NULL;
	if ((r = kap_registries_conf_load(&c, err)) < 0)
		return r;
	r = kap_shortname_pull(&c, image, &cands, &alias, err);
	if (r == 0 && alias && progress(o))
		fprintf(stderr, "Resolved \"%s\" as an alias (%s)\n", image, alias);
	kap_registries_conf_clear(&c);
	if (r < 0)
		return r;
	return pull_candidates(store_path, image, local != NULL, cands, o, name, err);
}
