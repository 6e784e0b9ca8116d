/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared between cgroup.c, cgroup-v1.c, cgroup-v2.c, cgroup-bpf.c and the unit tests; not part
 * of the interface the container code uses.
 */
#pragma once
#include <linux/bpf.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "container/cgroup/cgroup.h"

/* Controllers kapsel writes to or reads statistics from. */
enum kap_cg_ctrl {
	KAP_CG_CPU,
	KAP_CG_CPUACCT,
	KAP_CG_CPUSET,
	KAP_CG_MEMORY,
	KAP_CG_DEVICES,
	KAP_CG_FREEZER,
	KAP_CG_BLKIO, /* v1 blkio; v2 calls it io */
	KAP_CG_PIDS,
	KAP_CG_HUGETLB,
	KAP_CG_NET_CLS,	 /* v1 only */
	KAP_CG_NET_PRIO, /* v1 only */
	KAP_CG_RDMA,
	KAP_CG__COUNT,
};
#define KAP_CG_BIT(c) (1u << (c))

/* The v1 name of a controller ("blkio"); v2 names differ only for blkio ("io"). */
const char *kap_cg_ctrl_name(enum kap_cg_ctrl c, bool v2);
/* Bit mask of the known controllers in a comma-separated list ("cpu,cpuacct"). */
unsigned kap_cg_ctrl_mask(const char *list);

struct kap_cgroup_dir {
	char *path;	   /* absolute: "/sys/fs/cgroup/memory/kapsel/x" */
	char *controllers; /* v1: "cpu,cpuacct" or "name=systemd"; v2: "" */
	bool v2;
	unsigned mask; /* KAP_CG_BIT()s of the known v1 controllers */
};

/* A mounted hierarchy below (or at) the cgroupfs root. */
struct kap_cg_hier {
	char *mnt;	   /* mount point */
	char *mnt_root;	   /* the cgroup the mount shows ("/" unless a sub-tree is mounted) */
	char *controllers; /* as in kap_cgroup_dir */
	bool v2;
	unsigned mask;
};

struct kap_cg_layout {
	enum kap_cgroup_mode mode;
	struct kap_cg_hier *h;
	size_t n;
};

/*
 * Find the hierarchies under root: statfs (pure v2), else /proc/self/mountinfo, else (a tree that
 * is not mounted, as in unit tests) the directories of root holding cgroup.procs (v1, named
 * after their controllers) or cgroup.controllers (v2).
 */
int kap_cg_layout_detect(const char *root, struct kap_cg_layout *l, struct kapsel_error **err);
void kap_cg_layout_clear(struct kap_cg_layout *l);

/*
 * The first resource of res that needs controller c, as its config.json path
 * ("linux.resources.memory.limit"), or NULL when none does.
 */
const char *kap_cg_requested(const struct kap_resources *res, enum kap_cg_ctrl c);

/* File access relative to an open cgroup directory; dir names it in errors. */
struct kap_cg_fd {
	int fd;
	const char *dir;
};
/*
 * Write val to dir/file (opened without O_CREAT). When `what` is given a missing file is
 * reported as "<what>: <dir>/<file> not available".
 */
int kap_cg_write(const struct kap_cg_fd *d, const char *file, const char *what, const char *val,
		 struct kapsel_error **err);
int kap_cg_writef(const struct kap_cg_fd *d, const char *file, const char *what,
		  struct kapsel_error **err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/*
 * Write several values to one file with one write(2) each (devices.allow, io.max): the kernel
 * parses one rule per write. Opened once; what as above.
 */
struct kap_cg_lines {
	int fd;
	const char *file;
};
static inline void kap_cg_lines_closep(struct kap_cg_lines *l)
{
	if (l->fd >= 0)
		close(l->fd);
}
#define cleanup_cg_lines __attribute__((cleanup(kap_cg_lines_closep)))
int kap_cg_lines_open(const struct kap_cg_fd *d, const char *file, const char *what,
		      struct kap_cg_lines *out, struct kapsel_error **err);
int kap_cg_lines_write(const struct kap_cg_fd *d, struct kap_cg_lines *l, const char *val,
		       struct kapsel_error **err);
/* Read a small file into buf (NUL-terminated, trailing newline stripped). -ENOENT unreported. */
int kap_cg_read(const struct kap_cg_fd *d, const char *file, char *buf, size_t size,
		struct kapsel_error **err);
/* Read a decimal or "max" (-> UINT64_MAX) value. */
int kap_cg_read_u64(const struct kap_cg_fd *d, const char *file, uint64_t *out,
		    struct kapsel_error **err);
bool kap_cg_exists(const struct kap_cg_fd *d, const char *file);
/* Look up "key N" in a flat-keyed file's text ("oom_kill 3"). */
bool kap_cg_keyed(const char *text, const char *key, uint64_t *out);

/* A JSON integer for an unsigned value (json-c keeps uint64 beyond INT64_MAX exactly). */
struct kap_json *kap_cg_json_u64(uint64_t v);

/* The object member key of parent, created empty when absent (stats sections). */
struct kap_json *kap_cg_json_obj(struct kap_json *parent, const char *key);
/* Append runc's BlkioEntry {major, minor, op, value} to the array member key of blkio. */
void kap_cg_json_blkio(struct kap_json *blkio, const char *key, uint64_t major, uint64_t minor,
		       const char *op, uint64_t value);

/* Number of decimal digits needed for formatting values: "-9223372036854775808" + NUL. */
#define KAP_CG_NUM 32

/* ---- cgroup-v1.c ---- */

/*
 * One planned write of the v1 memory limits. runc's order: memory.limit_in_bytes must stay
 * <= memory.memsw.limit_in_bytes at every step, so raising writes memsw first and lowering
 * writes memory first.
 */
struct kap_cg_v1_write {
	const char *file;
	int64_t value;
};
/*
 * Plan the memory/memsw writes for res given the current memory.limit_in_bytes (only consulted
 * when both are set) and whether memsw exists (swap accounting). Returns the number of writes
 * (<= 2) in steps.
 */
size_t kap_cg_v1_memory_plan(const struct kap_resources *res, uint64_t cur_limit, bool have_memsw,
			     struct kap_cg_v1_write steps[2]);
/* "c 1:3 rwm", "a *:* rwm": the devices.allow / devices.deny line of a rule. */
int kap_cg_v1_device_rule(const struct kap_device_rule *r, char *buf, size_t size);
/* Copy cpuset.cpus / cpuset.mems from parent into a newly created child (empty otherwise). */
int kap_cg_v1_cpuset_copy(const struct kap_cg_fd *parent, const struct kap_cg_fd *child,
			  struct kapsel_error **err);
/*
 * Apply res to the v1 directories (dirs[i] opened as fds[i]); controllers in skip are left to
 * the caller (hybrid: hugetlb on cgroup2).
 */
int kap_cg_v1_apply(const struct kap_cgroup_dir *dirs, const int *fds, size_t n,
		    const struct kap_resources *res, unsigned skip, struct kapsel_error **err);
int kap_cg_v1_freeze(const struct kap_cg_fd *d, bool freeze, struct kapsel_error **err);
int kap_cg_v1_is_frozen(const struct kap_cg_fd *d, bool *frozen, struct kapsel_error **err);
/* Add the stats of the hierarchy in d (by its mask) to the runc-shaped stats object. */
int kap_cg_v1_stats(const struct kap_cgroup_dir *dir, const struct kap_cg_fd *d,
		    struct kap_json *stats, struct kapsel_error **err);
int kap_cg_v1_oom_count(const struct kap_cg_fd *d, uint64_t *count, struct kapsel_error **err);

/* "mlx5_1 hca_handle=3 hca_object=10000": one rdma.max line (the same file in v1 and v2). */
int kap_cg_rdma_line(const struct kap_rdma_limit *l, char *buf, size_t size);
/* Write res's rdma limits to d's rdma.max. */
int kap_cg_rdma_apply(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err);

/* ---- cgroup-v2.c ---- */

/* Convert as crun does: cpu.shares [2, 262144] -> cpu.weight [1, 10000]. */
uint64_t kap_cg_v2_shares_to_weight(uint64_t shares);
/* Convert as runc does: blkio.weight [10, 1000] -> io.weight [1, 10000]. */
uint64_t kap_cg_v2_blkio_to_io_weight(uint64_t weight);
/*
 * OCI memory.swap is memory+swap; memory.swap.max is swap alone (runc's conversion). Sets
 * *out to the value to write ("max" as -1) or returns 0 with *set false when nothing is due.
 */
int kap_cg_v2_swap_value(const struct kap_resources *res, bool *set, int64_t *out,
			 struct kapsel_error **err);
/*
 * Enable every controller in avail (a cgroup.controllers text) in dir's cgroup.subtree_control,
 * as runc and crun do, so later updates and stats need no further delegation. Only called for
 * directories kapsel created above the leaf (cgroup-v2.rst "Enabling and Disabling"; the leaf
 * keeps an empty subtree_control: "no internal process" rule).
 */
int kap_cg_v2_subtree_enable(const struct kap_cg_fd *dir, const char *avail,
			     struct kapsel_error **err);
/*
 * Check that the leaf has every controller res needs. deleg_dir is the deepest directory kapsel
 * did not create on the way to the leaf: its cgroup.subtree_control is named when one is missing.
 */
int kap_cg_v2_check(const struct kap_cg_fd *leaf, const char *deleg_dir,
		    const struct kap_resources *res, struct kapsel_error **err);
int kap_cg_v2_apply(const struct kap_cg_fd *leaf, const struct kap_resources *res,
		    struct kapsel_error **err);
int kap_cg_v2_freeze(const struct kap_cg_fd *d, bool freeze, struct kapsel_error **err);
int kap_cg_v2_is_frozen(const struct kap_cg_fd *d, bool *frozen, struct kapsel_error **err);
/* only: KAP_CG_BIT mask of the sections to fill (hybrid: hugetlb only). */
int kap_cg_v2_stats(const struct kap_cg_fd *d, unsigned only, struct kap_json *stats,
		    struct kapsel_error **err);
int kap_cg_v2_oom_count(const struct kap_cg_fd *d, uint64_t *count, struct kapsel_error **err);
/*
 * A linux.resources.unified key must name a plain file of the cgroup ("memory.high"): no '/',
 * not "." or "..". Returns 0 or -EINVAL with the error naming the key.
 */
int kap_cg_v2_unified_key_check(const char *key, struct kapsel_error **err);

/* ---- cgroup-bpf.c ---- */

/*
 * Build the BPF_PROG_TYPE_CGROUP_DEVICE program for the rules: evaluated in order, the last
 * matching rule decides, no match denies (runc's and crun's semantics). Caller frees *insns.
 */
int kap_cg_bpf_build(const struct kap_device_rule *rules, size_t n, struct bpf_insn **insns,
		     size_t *n_insns, struct kapsel_error **err);
/*
 * Load the program for rules and attach it to the cgroup d (BPF_CGROUP_DEVICE,
 * BPF_F_ALLOW_MULTI), then detach programs attached there before (update).
 */
int kap_cg_bpf_apply(const struct kap_cg_fd *d, const struct kap_device_rule *rules, size_t n,
		     struct kapsel_error **err);
