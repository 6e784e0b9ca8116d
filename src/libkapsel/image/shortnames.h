/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Short names (an image name without a registry: "demo:1", "fedora") as containers-
 * registries.conf(5) resolves them: the [aliases] table, `unqualified-search-registries`,
 * `short-name-mode`, merged over registries.conf and its drop-ins
 * (containers-registries.conf.d(5)).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <kapsel/error.h>

struct kap_store;

enum kap_short_name_mode {
	KAP_SHORT_NAME_PERMISSIVE, /* the default when no file sets it */
	KAP_SHORT_NAME_ENFORCING,
	KAP_SHORT_NAME_DISABLED,
};

struct kap_alias {
	char *name;  /* short name, no tag or digest: "fedora" */
	char *value; /* fully qualified, no tag or digest: "registry.fedoraproject.org/fedora" */
	char *where; /* "FILE:LINE" that set it */
};

struct kap_registries_conf {
	char **search; /* unqualified-search-registries, in order; NULL-terminated */
	size_t n_search;
	char *search_where; /* the file that set them (NULL: none did) */
	enum kap_short_name_mode mode;
	char *mode_where;
	struct kap_alias *aliases;
	size_t n_aliases;
};

/*
 * Parse one file (text, len bytes; file names it in errors) and merge it over c: a later file
 * replaces unqualified-search-registries and short-name-mode when it sets them, and adds or
 * replaces aliases one by one (containers-registries.conf.d(5)). On error c is unchanged.
 */
int kap_registries_conf_parse(struct kap_registries_conf *c, const char *text, size_t len,
			      const char *file, struct kapsel_error **err);
/*
 * $CONTAINERS_REGISTRIES_CONF (podman's variable: that file alone), else
 * /etc/containers/registries.conf and /etc/containers/registries.conf.d/\*.conf in
 * alphanumeric order; $KAPSEL_REGISTRIES_CONF_DIR names another drop-in directory (read in
 * either case). Missing files are no error.
 */
int kap_registries_conf_load(struct kap_registries_conf *c, struct kapsel_error **err);
void kap_registries_conf_clear(struct kap_registries_conf *c);

/* No registry part: the first component has no '.' or ':', is not "localhost". */
bool kap_ref_is_short(const char *name);

/*
 * Where a short name may already be in the store, best first (podman's ResolveLocally): its
 * alias, localhost/NAME, NAME on each search registry, and docker.io's normalisation last
 * (what `kapsel pull NAME` stored before registries.conf was read). Canonical names with a tag
 * (":latest" when none). NULL-terminated; free with kap_strv_free.
 */
int kap_shortname_local(const struct kap_registries_conf *c, const char *name, char ***out,
			struct kapsel_error **err);
/*
 * What to pull for name, in order: name itself when qualified; else its alias alone, else NAME
 * on each search registry (short-name-mode permissive and disabled: all of them in order;
 * enforcing refuses more than one, as kapsel does not prompt), else docker.io's normalisation
 * when no file defines search registries (docker's rule). *alias (optional) receives the
 * alias's "FILE:LINE" when one applied (borrowed from c).
 */
int kap_shortname_pull(const struct kap_registries_conf *c, const char *name, char ***out,
		       const char **alias, struct kapsel_error **err);
void kap_strv_free(char **v);

/*
 * An image the user typed, looked up in the store with short-name resolution: an exact stored
 * name, the candidates of kap_shortname_local (registries.conf read only for a short name),
 * then an ID or ID prefix. -ENOENT when it is not there. *name: the stored name, or the
 * manifest digest for an ID; manifest_digest: KAP_DIGEST_LEN + 1 bytes.
 */
int kap_image_resolve_local(struct kap_store *s, const char *image, char **name,
			    char *manifest_digest, struct kapsel_error **err);
