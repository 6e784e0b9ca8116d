/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel build`: a Containerfile and its context -> an OCI image in the store. RUN steps run
 * in kapsel's own runtime over an overlay of the stage's layers, as `kapsel run` composes a
 * container. Returns >= 0 on success and a negative errno with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kapsel_build_options {
	const char *store;	 /* NULL: the default store */
	const char *root;	 /* runtime state root for RUN; NULL: the default */
	const char *context;	 /* the build context directory */
	const char *file;	 /* NULL: CONTEXT/Containerfile, else CONTEXT/Dockerfile */
	char *const *tags;	 /* NULL-terminated names; podman's localhost/ for bare names */
	char *const *build_args; /* K=V (or K: the value from our environment) */
	char *const *labels;	 /* K=V added to the final image */
	const char *target;	 /* stage to build; NULL: the last */
	const char *network;	 /* RUN's network: "none" (default) or "host" */
	bool no_cache;		 /* run every step (the cache is still written) */
	bool quiet;		 /* no step lines, no RUN output */
	bool single_layer;	 /* --layers=false: the final stage's changes as one layer */
	bool squash;		 /* the final image is one layer, its base included */
	const char *platform;	 /* "linux/amd64" or NULL; others are refused (no emulation) */
	const char *format;	 /* "oci" (NULL) or "docker": the manifest's media types */
	const char *compression; /* "gzip" (NULL) or "zstd" */
	bool has_timestamp;	 /* --timestamp given (else SOURCE_DATE_EPOCH, if set) */
	int64_t timestamp;	 /* seconds: created times and later mtimes clamped to it */
	/* Set by the caller's SIGINT/SIGTERM handler: a RUN is killed, the build stops and
	 * leaves no mount, temp directory or container behind. NULL: not cancellable. */
	const volatile sig_atomic_t *cancel;
};

/* Builds; *id_out (optional, caller frees) receives the image ID (config digest hex). */
int kapsel_image_build(const struct kapsel_build_options *o, char **id_out,
		       struct kapsel_error **err);

struct kapsel_commit_options {
	const char *store;     /* NULL: the default store */
	const char *container; /* a `kapsel run` container's name (running or stopped) */
	const char *image;     /* the new image's name; NULL: untagged */
	char *const *changes;  /* NULL-terminated config instructions: "CMD [\"sh\"]" */
};

/* The container's changes as one layer on its image; *id_out as for build. */
int kapsel_image_commit(const struct kapsel_commit_options *o, char **id_out,
			struct kapsel_error **err);
