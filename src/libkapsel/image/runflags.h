/* SPDX-License-Identifier: Apache-2.0 */
/*
 * podman's `run` flags for what surrounds the process (--env-file, --ulimit, --device,
 * --tmpfs, --mount, -v NAME:/path, --init), parsed into config.json additions (runflags.c),
 * and the named volumes they use (volume.c).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_json;
struct kap_store;
struct kapsel_run_options;

/* Where kapsel-init is bind-mounted in the container; the process's args start with it. */
#define KAP_INIT_CTR_PATH "/run/kapsel-init"

enum kap_run_mount_type { KAP_RUN_BIND, KAP_RUN_TMPFS, KAP_RUN_VOLUME };

/* One --tmpfs, --mount or -v NAME:/path, checked. */
struct kap_run_mount {
	enum kap_run_mount_type type;
	char *src;	   /* bind: the host path; volume: the volume's name; tmpfs: NULL */
	char *dst;	   /* absolute path in the container */
	char *opts;	   /* tmpfs: the options after podman's defaults ("size=64m,mode=1777") */
	char *propagation; /* bind: rprivate (default), rshared, ... */
	bool ro;
	bool nonrecursive; /* bind: bind-nonrecursive */
	bool nocopy;	   /* volume: no copy of the image's content into a new volume */
};
void kap_run_mounts_free(struct kap_run_mount *m, size_t n);

/* Validates every flag above (files read, devices and bind sources looked at); nothing is
 * created. */
int kap_runflags_check(const struct kapsel_run_options *o, struct kapsel_error **err);
/* Whether -v spec names a volume (its source is neither absolute nor ./relative). */
bool kap_runflags_volume_named(const char *spec);
/* --tmpfs, --mount and -v NAME:/path, in that order. */
int kap_runflags_mounts(const struct kapsel_run_options *o, struct kap_run_mount **out, size_t *n,
			struct kapsel_error **err);
/* The pieces, for the unit tests and the callers. */
int kap_runflags_parse_mount(const char *spec, struct kap_run_mount *m, struct kapsel_error **err);
int kap_runflags_parse_tmpfs(const char *spec, struct kap_run_mount *m, struct kapsel_error **err);
int kap_runflags_parse_ulimit(const char *spec, const char **type, uint64_t *soft, uint64_t *hard,
			      struct kapsel_error **err);
/* The --env-file entries, then --env: what kap_bundle_env takes as the user's. Caller frees. */
int kap_runflags_env(const struct kapsel_run_options *o, char ***out, struct kapsel_error **err);

/* config.json additions; volumes_dir is <store>/volumes, init_path the reaper's host path.
 * Rootless, --device nodes are bind mounts of the host's (as rootless podman makes them): the
 * runtime could only guess the host node of a linux.devices entry by its path. */
int kap_runflags_add_mounts(struct kap_json *mounts, const struct kapsel_run_options *o,
			    const char *volumes_dir, const char *init_path, bool rootless,
			    struct kapsel_error **err);
int kap_runflags_add_rlimits(struct kap_json *process, const struct kapsel_run_options *o,
			     struct kapsel_error **err);
/* linux.devices entries in devices; rules (allow) appended to rules when non-NULL. */
int kap_runflags_add_devices(struct kap_json *devices, struct kap_json *rules,
			     const struct kapsel_run_options *o, struct kapsel_error **err);
/* args -> [KAP_INIT_CTR_PATH, "--", args...] */
int kap_runflags_init_args(char ***args, struct kapsel_error **err);
/* --init-path, or kapsel-init next to the build or the installed binary. Caller frees. */
int kap_runflags_init_path(const struct kapsel_run_options *o, char **path,
			   struct kapsel_error **err);

/* ---- volume.c: <store>/volumes/NAME/{volume.json,_data} ---- */
/* [a-zA-Z0-9][a-zA-Z0-9_.-]* as podman's, at most 128 characters. */
bool kap_volume_name_valid(const char *name);
/*
 * The named volumes among m[0..n) for container `container` (its directory cdirfd): each is
 * created when missing, a new one gets the image's content at its destination (rootfd: the
 * container's root; confined) unless nocopy, and the container is recorded as its user
 * (<cdir>/volumes), all under the volumes lock so that `volume rm` sees either no volume or a
 * used one.
 */
int kap_volume_attach(struct kap_store *s, int cdirfd, const struct kap_run_mount *m, size_t n,
		      int rootfd, struct kapsel_error **err);
