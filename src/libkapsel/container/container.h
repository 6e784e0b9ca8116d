/* SPDX-License-Identifier: Apache-2.0 */
/* The container engine's internal interfaces, shared by its files. */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

#include <kapsel/error.h>

#include "oci/spec.h"
#include "oci/state.h"

struct kap_seccomp;
struct kap_cgroup;
struct kap_cgroup_join;

/* What the container process needs to set itself up (filled by the runtime before clone). */
struct kap_init_ctx {
	const struct kap_spec *spec;
	int sync_fd;
	int state_dirfd;
	int fifo_fd;	    /* exec.fifo, opened O_RDWR by the runtime (a user ns init could not) */
	const char *bundle; /* absolute */
	const char *rootfs; /* absolute, resolved */
	bool no_pivot, no_new_keyring;
	int preserve_fds;
	bool two_stage; /* join namespaces by path / time ns: an intermediate process forks init */
	bool defer_nondumpable; /* rootless + new user ns: dumpable until the maps are written */
	bool new_ns[8];		/* indexed by enum kap_ns_type: created (not joined) by us */
	struct kap_seccomp *seccomp;
	struct kap_cgroup_join *join;
	/* Filled in by the container process itself: */
	char cgroup_self[4096]; /* /proc/self/cgroup, read before unsharing the cgroup ns */
	char exec_path[4096];
};

/* container/init.c: the container process; never returns. */
_Noreturn void kap_init_main(struct kap_init_ctx *ctx);
/* chdir to cwd resolved inside the current root (no magic links); field names it in errors. */
int kap_init_chdir(const char *field, const char *cwd, struct kapsel_error **err);
/* Resolve args[0] through PATH inside the (already pivoted) root. */
int kap_init_find_executable(const char *arg0, char *const *env, char *out, size_t outlen,
			     struct kapsel_error **err);

/* container/sysctl.c: linux.sysctl, namespaced keys only, confined to /proc/sys. */
int kap_sysctl_validate(const struct kap_spec *spec, struct kapsel_error **err);
int kap_sysctl_write(const struct kap_spec *spec, struct kapsel_error **err);

/* container/namespaces.c */
int kap_ns_validate(const struct kap_spec *spec, struct kapsel_error **err);
_Noreturn void kap_ns_stage1(struct kap_init_ctx *ctx);

/* container/rootfs.c: mounts, /dev, pivot_root, masked and read-only paths. */
int kap_rootfs_prepare(struct kap_init_ctx *ctx, int *rootfd, struct kapsel_error **err);
int kap_rootfs_pivot(struct kap_init_ctx *ctx, int rootfd, struct kapsel_error **err);
int kap_rootfs_finalize(struct kap_init_ctx *ctx, struct kapsel_error **err);

/* container/mount.c: one config.json mount, destination confined to rootfd. */
int kap_mount_one(struct kap_init_ctx *ctx, int rootfd, const struct kap_mount *m,
		  struct kapsel_error **err);

/* container/security.c: rlimits, user, groups, capabilities, no_new_privs. */
int kap_security_rlimits(const struct kap_process *p, struct kapsel_error **err);
int kap_security_user_caps(const struct kap_process *p, bool in_userns, struct kapsel_error **err);

int kap_security_lsm(const struct kap_process *p, struct kapsel_error **err);

/* container/hooks.c: run hooks with the state JSON on stdin. poststart and poststop failures
 * are logged as warnings and the remaining hooks still run: those kinds always return 0. */
int kap_hooks_run(const struct kap_hooks *hooks, enum kap_hook_kind kind, const char *state_json,
		  struct kapsel_error **err);

/* container/terminal.c */
int kap_terminal_open(const struct kap_process *p, int *master, struct kapsel_error **err);
int kap_terminal_send_to_socket(const char *socket_path, int master, struct kapsel_error **err);
/* Copy stdin -> master and master -> stdout until the master hangs up. */
void kap_terminal_relay(int master);
/*
 * Sets p's consoleSize to the size of our stdin's (else stdout's) terminal, so that the pty has
 * it before the process runs; nothing when neither is a terminal.
 */
void kap_terminal_size_of_stdio(struct kap_process *p);

/* container/status.c */
enum kap_status {
	KAP_STATUS_CREATING,
	KAP_STATUS_CREATED,
	KAP_STATUS_RUNNING,
	KAP_STATUS_PAUSED,
	KAP_STATUS_STOPPED,
};
const char *kap_status_name(enum kap_status s);
enum kap_status kap_container_status(int state_dirfd, const struct kap_state *st);
/* Open <root>/<id> (locked when lock != 0: LOCK_SH/LOCK_EX) and read its state. */
int kap_container_load(const char *root, const char *id, int lock, int *dirfd,
		       struct kap_state **st, struct kapsel_error **err);
/* Write the map files of pid for the configured uid/gid mappings. */
int kap_userns_write_maps(pid_t pid, const struct kap_spec *spec, struct kapsel_error **err);
/* Whether this process runs in a user namespace other than the initial one (as `kapsel run`
 * does rootless): its root is no root on the host, like an unprivileged user's. */
bool kap_userns_nested(void);
/* Wait for pid (our child), forwarding signals and relaying a pty; shell-style status. */
int kap_wait_process(pid_t pid, int master, pid_t *relay_pid);
/* Wait for pid (not necessarily our child) to die, up to timeout_ms. */
int kap_wait_pid_gone(pid_t pid, int timeout_ms);
/* config.json's root.path, relative to the bundle, as a real path: refused when missing, a
 * symlink (the bundle author could point anywhere) or not a directory. */
int kap_container_resolve_rootfs(const struct kap_spec *spec, const char *bundle, char **out,
				 struct kapsel_error **err);
