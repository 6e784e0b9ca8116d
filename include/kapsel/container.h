/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime: the runc command set as a library. Every call returns >= 0 on success and a
 * negative errno on failure with *err set (free it with kapsel_error_free).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <kapsel/error.h>
#include <kapsel/oci.h>
#include <kapsel/signal.h>

#define KAPSEL_DEFAULT_ROOT "/run/kapsel"

/*
 * The state root when --root is not given: /run/kapsel for root; for other users
 * $XDG_RUNTIME_DIR/kapsel (else /run/user/UID/kapsel, else /tmp/kapsel-UID), as runc does.
 */
const char *kapsel_default_root(void);

struct kapsel_create_options {
	const char *root; /* state root, KAPSEL_DEFAULT_ROOT when NULL */
	const char *id;
	const char *bundle;	    /* NULL: current directory */
	const char *pid_file;	    /* NULL: none */
	const char *console_socket; /* NULL: none */
	bool no_pivot;
	bool no_new_keyring;
	int preserve_fds; /* extra fds after stdio passed to the container (3 .. 3+N-1) */
	bool detach;	  /* run only */
	bool systemd_cgroup;
};

/* create: the container is left in "created", waiting for start. */
int kapsel_container_create(const struct kapsel_create_options *opts, struct kapsel_error **err);
/*
 * run: create + start. Without detach waits for the container and deletes it; returns its exit
 * status mapped like a shell (code, or 128+signal). With detach returns 0 once started.
 */
int kapsel_container_run(const struct kapsel_create_options *opts, struct kapsel_error **err);
/*
 * run, with the waiting done by the caller (a monitor that also copies the output): wait runs
 * once the container's process has started, as its parent, owns master (the pty's master, -1
 * without a terminal), and returns the exit status (shell style) after reaping init. The
 * container is then deleted and that status returned.
 */
int kapsel_container_run_wait(const struct kapsel_create_options *opts,
			      int (*wait)(void *ctx, pid_t init, int master), void *ctx,
			      struct kapsel_error **err);
int kapsel_container_start(const char *root, const char *id, struct kapsel_error **err);
/*
 * Give a container another id (kapsel rename of an image container whose name is its id):
 * its state moves to <root>/new_id; new_bundle (optional) replaces the bundle directory and
 * the rootfs below it. The cgroup stays where it is (its path is in the state).
 */
int kapsel_container_rename(const char *root, const char *id, const char *new_id,
			    const char *new_bundle, struct kapsel_error **err);
/* OCI state JSON (pretty-printed, as runc prints it). Caller frees *json. */
int kapsel_container_state(const char *root, const char *id, char **json,
			   struct kapsel_error **err);
int kapsel_container_kill(const char *root, const char *id, int sig, bool all,
			  struct kapsel_error **err);
int kapsel_container_delete(const char *root, const char *id, bool force,
			    struct kapsel_error **err);
int kapsel_container_pause(const char *root, const char *id, struct kapsel_error **err);
int kapsel_container_resume(const char *root, const char *id, struct kapsel_error **err);

struct kapsel_container_info {
	char *id;
	pid_t pid; /* 0 when stopped */
	char *status;
	char *bundle;
	char *created; /* RFC 3339 */
	char *owner;
};
int kapsel_container_list(const char *root, struct kapsel_container_info **list, size_t *n,
			  struct kapsel_error **err);
void kapsel_container_info_free(struct kapsel_container_info *list, size_t n);

/* Host pids of every process in the container (its cgroup). Caller frees *pids. */
int kapsel_container_pids(const char *root, const char *id, pid_t **pids, size_t *n,
			  struct kapsel_error **err);

struct kapsel_exec_options {
	const char *root;
	const char *id;
	const char *process_file; /* --process: a runtime-spec process JSON; overrides the rest */
	char *const *args;	  /* command and arguments */
	bool tty;
	const char *console_socket;
	bool detach;
	const char *pid_file;
	const char *cwd;
	char *const *env;  /* K=V, added to the container's env */
	const char *user;  /* UID[:GID] */
	char *const *caps; /* capability names added to the process's sets */
	bool no_new_privs;
	int preserve_fds;
};
/* Without detach returns the process's exit status (shell style); with detach 0. */
int kapsel_container_exec(const struct kapsel_exec_options *opts, struct kapsel_error **err);

/* update: resources_json is a linux.resources object (may be NULL); the flags then apply. */
struct kapsel_update_options {
	const char *resources_json;
	bool has_memory, has_memory_reservation, has_memory_swap, has_cpu_quota, has_cpu_period,
	    has_cpu_shares, has_pids_limit, has_blkio_weight;
	int64_t memory, memory_reservation, memory_swap, cpu_quota, pids_limit;
	uint64_t cpu_period, cpu_shares;
	uint16_t blkio_weight;
	const char *cpuset_cpus, *cpuset_mems;
};
int kapsel_container_update(const char *root, const char *id,
			    const struct kapsel_update_options *opts, struct kapsel_error **err);

/*
 * events: writes JSON lines to out as runc does ({"type":"stats","id":..,"data":{..}} every
 * interval; {"type":"oom","id":..} on OOM kills). With stats_once prints one stats event and
 * returns. Returns when the container stops.
 */
int kapsel_container_events(const char *root, const char *id, bool stats_once, unsigned interval_ms,
			    FILE *out, struct kapsel_error **err);

/* The OCI features document (runtime-spec features.md). Caller frees. */
int kapsel_features(char **json, struct kapsel_error **err);
/* A default config.json, as `runc spec` writes it. Caller frees. */
int kapsel_spec_default(bool rootless, char **json, struct kapsel_error **err);
