/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pulling images from OCI distribution registries, and the credentials for them. Every call
 * returns >= 0 on success and a negative errno on failure with *err set (free it with
 * kapsel_error_free).
 */
#pragma once
#include <signal.h>
#include <stdbool.h>

#include <kapsel/error.h>

/* "sha256:" + 64 hex + NUL */
#define KAPSEL_DIGEST_SIZE 72

struct kapsel_pull_options {
	const char *platform;  /* "os/arch[/variant]"; NULL: linux and the host's architecture */
	bool insecure;	       /* plain HTTP and unverified TLS allowed (--tls-verify=false) */
	bool quiet;	       /* no progress display (it is only drawn on a terminal anyway) */
	const char *auth_file; /* NULL: the containers-auth.json search path */
	/* Set by the caller's SIGINT/SIGTERM handler: the pull stops, leaving no partial blob
	 * or layer in the store. NULL: not interruptible. */
	const volatile sig_atomic_t *cancel;
};

/*
 * Pull ref ([registry[:port]/]repository[:tag][@digest]) into the image store at store_path
 * (NULL: the default store): manifest, config and layers (downloaded in parallel, verified,
 * unpacked), then tag it. digest_out (optional, KAPSEL_DIGEST_SIZE bytes) receives the digest
 * of the image manifest.
 */
int kapsel_pull(const char *store_path, const char *ref, const struct kapsel_pull_options *opts,
		char *digest_out, struct kapsel_error **err);

/* podman's --pull (podman-run(1)). */
enum kapsel_pull_policy {
	KAPSEL_PULL_MISSING, /* pull only when the store lacks the image (the default) */
	KAPSEL_PULL_ALWAYS,  /* pull every time; fail when the pull fails */
	KAPSEL_PULL_NEVER,   /* never pull; fail when the store lacks the image */
	KAPSEL_PULL_NEWER,   /* pull when the registry has another digest; keep the stored
			      * image, with a warning, when the registry cannot be asked */
};
/* "always", "missing", "never", "newer" (podman also takes "true" and "false"). */
int kapsel_pull_policy_parse(const char *s, enum kapsel_pull_policy *out,
			     struct kapsel_error **err);

/*
 * The image a command is about to use, pulled as policy says. A short name resolves as
 * containers-registries.conf(5) says: in the store its alias, localhost/NAME, NAME on each
 * unqualified-search registry; pulled, its alias alone or each search registry in order until
 * one has it. Progress goes to stderr when it is a terminal ("Trying to pull NAME..."), none
 * with opts->quiet.
 * *name receives the stored name to use (caller frees). Returns 1 when it pulled, 0 when
 * the stored image is used.
 */
int kapsel_image_ensure(const char *store_path, const char *image, enum kapsel_pull_policy policy,
			const struct kapsel_pull_options *opts, char **name,
			struct kapsel_error **err);

struct kapsel_login_options {
	bool insecure;
	const char *auth_file; /* NULL: $REGISTRY_AUTH_FILE or podman's default */
};

/* Check user/password against registry and store them in the auth file (0600, atomically). */
int kapsel_login(const char *registry, const char *user, const char *password,
		 const struct kapsel_login_options *opts, struct kapsel_error **err);
/* Remove registry's credentials from the auth file; all: remove the whole file. */
int kapsel_logout(const char *registry, const struct kapsel_login_options *opts, bool all,
		  struct kapsel_error **err);

struct kapsel_push_options {
	bool insecure;	       /* plain HTTP and unverified TLS allowed (--tls-verify=false) */
	bool quiet;	       /* no per-blob lines */
	const char *creds;     /* "USER:PASSWORD"; NULL: the containers-auth.json search path */
	const char *auth_file; /* NULL: the search path */
	long long chunk_size;  /* > 0: upload blobs in chunks of this many bytes; 0: chosen */
	const volatile sig_atomic_t *cancel;
	const char *format; /* "oci" or "docker": convert the manifest's media types; NULL:
			     * as stored */
	bool manifest_list; /* refuse an image that is not a manifest list (manifest push) */
	bool index_only;    /* a list: push the index alone, the registry has its images */
};

/*
 * Push a stored image (name, reference or ID) to dest ([registry/]repository[:tag], an
 * optional docker:// prefix; NULL: the image's own name). Blobs the registry has are skipped,
 * mounted from another repository of the registry they are known to be in, or uploaded in
 * parallel; then the manifest as stored (or converted to opts->format). A manifest list
 * (kapsel_manifest_create) pushes the images it lists, then the index last. digest_out
 * (optional, KAPSEL_DIGEST_SIZE bytes) receives the pushed manifest's (or index's) digest.
 */
int kapsel_push(const char *store_path, const char *image, const char *dest,
		const struct kapsel_push_options *opts, char *digest_out,
		struct kapsel_error **err);
