/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroups for containers: v1 (legacy), v2 (unified) and hybrid (v1 controllers plus a cgroup2
 * mount, as systemd's "hybrid" layout and this project's CI machine have). cgroup.c detects the
 * layout and dispatches to cgroup-v1.c / cgroup-v2.c.
 *
 * kapsel only ever writes to, and removes, directories it created itself; the list of those
 * directories is part of the container state so that `delete` (even after a runtime crash
 * mid-create) removes exactly them.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

#include "oci/spec.h"

struct kap_json;
struct kap_cgroup_dir;

enum kap_cgroup_mode {
	KAP_CGROUP_LEGACY,  /* v1 only */
	KAP_CGROUP_HYBRID,  /* v1 controllers + cgroup2 (at <root>/unified) */
	KAP_CGROUP_UNIFIED, /* pure v2 mounted at <root> */
};

struct kap_cgroup {
	enum kap_cgroup_mode mode;
	char *root; /* the cgroupfs mount root, "/sys/fs/cgroup" (a fake tree in unit tests) */
	char *path; /* the container's cgroup, relative to each hierarchy root: "/kapsel/ID" */
	/* Absolute directories created by kapsel, parents before children. */
	char **created;
	size_t n_created;
	/*
	 * The container's directory in every hierarchy (v1 ones, then the cgroup2 one), with the
	 * hierarchy's controllers: a relative cgroupsPath resolves below a different own cgroup
	 * in each hierarchy, so one `path` cannot describe them all. Private to cgroup/.
	 */
	struct kap_cgroup_dir *dirs;
	size_t n_dirs;
};

/* Detect the layout under root (normally "/sys/fs/cgroup"). */
int kap_cgroup_detect(const char *root, enum kap_cgroup_mode *mode, struct kapsel_error **err);

/*
 * Resolve the container cgroup path: cgroupsPath absolute -> as is (relative to each hierarchy
 * root); relative -> below the calling process's own cgroup; absent -> "/kapsel/<id>".
 * Create it in every hierarchy, apply res (may be NULL) and move pid into it (pid <= 0: move
 * nothing, e.g. for clone3(CLONE_INTO_CGROUP)). On failure everything created is removed again
 * and *out stays NULL.
 */
int kap_cgroup_create(const char *root, const char *cgroups_path, const char *id,
		      const struct kap_resources *res, pid_t pid, struct kap_cgroup **out,
		      struct kapsel_error **err);
/*
 * delete --force of a container whose create was killed before it recorded its cgroup: remove
 * the container's own leaf (cgroupsPath or "/kapsel/<id>", resolved as kap_cgroup_create does)
 * in every hierarchy where it exists and is empty. Parents are left: nothing says this
 * container made them, and kapsel removes only what it made.
 */
int kap_cgroup_remove_orphan(const char *root, const char *cgroups_path, const char *id,
			     struct kapsel_error **err);
/* Move pid into the container's cgroup in every hierarchy (exec). */
int kap_cgroup_enter(const struct kap_cgroup *cg, pid_t pid, struct kapsel_error **err);
/*
 * Joining without the runtime writing cgroup.procs. A v1 write of a pid to cgroup.procs takes the
 * global cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period: 5-13 ms per
 * container start here, more than everything else. A single-threaded process writing "0" to its
 * own `tasks` file moves without that lock (0.06 ms, measured), and for cgroup2 clone3's
 * CLONE_INTO_CGROUP takes it only for reading. So the runtime opens the files (with its own
 * credentials, which the kernel checks at open time) and the new process joins itself.
 */
struct kap_cgroup_join {
	int tasks[16]; /* v1: <dir>/tasks, O_WRONLY */
	size_t n;
	int v2_dir; /* cgroup2 directory for CLONE_INTO_CGROUP, or -EBADF */
};
int kap_cgroup_join_fds(const struct kap_cgroup *cg, struct kap_cgroup_join *j,
			struct kapsel_error **err);
/* In the new process: join every v1 hierarchy ("0" to each tasks fd). -errno on failure. */
int kap_cgroup_join_self(const struct kap_cgroup_join *j);
void kap_cgroup_join_close(struct kap_cgroup_join *j);

/* Apply the given (partial) resources to an existing cgroup (update). */
int kap_cgroup_update(const struct kap_cgroup *cg, const struct kap_resources *res,
		      struct kapsel_error **err);
/* Freeze / thaw all processes (v1 freezer.state, v2 cgroup.freeze) and wait until done. */
int kap_cgroup_freeze(const struct kap_cgroup *cg, bool freeze, struct kapsel_error **err);
int kap_cgroup_is_frozen(const struct kap_cgroup *cg, bool *frozen, struct kapsel_error **err);
/* All pids in the container cgroup and its descendants. Caller frees *pids. */
int kap_cgroup_pids(const struct kap_cgroup *cg, pid_t **pids, size_t *n,
		    struct kapsel_error **err);
/* Remove the created directories, children first; retries briefly while tasks drain. */
int kap_cgroup_destroy(const struct kap_cgroup *cg, struct kapsel_error **err);
/*
 * Statistics in runc's `events --stats` "data" shape: {"cpu":{"usage":{...},"throttling":{...}},
 * "memory":{"usage":{...},"swap":{...},"raw":{...}},"pids":{"current","limit"},"blkio":{...},
 * "hugetlb":{...}}.
 */
int kap_cgroup_stats(const struct kap_cgroup *cg, struct kap_json **out, struct kapsel_error **err);
/* Number of OOM kills so far (v1 memory.oom_control oom_kill, v2 memory.events oom_kill). */
int kap_cgroup_oom_count(const struct kap_cgroup *cg, uint64_t *count, struct kapsel_error **err);

/*
 * The container's cgroup2 directory (for clone3 CLONE_INTO_CGROUP), or NULL in legacy mode.
 * Points into cg.
 */
const char *kap_cgroup_unified_dir(const struct kap_cgroup *cg);

/* Persist in / restore from the container state. */
struct kap_json *kap_cgroup_to_json(const struct kap_cgroup *cg);
int kap_cgroup_from_json(const struct kap_json *j, struct kap_cgroup **out,
			 struct kapsel_error **err);
void kap_cgroup_free(struct kap_cgroup *cg);
static inline void kap_cgroup_freep(struct kap_cgroup **cg)
{
	kap_cgroup_free(*cg);
}
#define cleanup_cgroup __attribute__((cleanup(kap_cgroup_freep)))
