/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.json (OCI runtime-spec 1.0-1.2) decoded into kapsel-owned structs. Decoding has no side
 * effects; every error names the JSON path of the bad field. Absent optional values are marked by
 * the has_* flags or NULL pointers; unknown fields are ignored as the spec requires.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

struct kap_json;

struct kap_rlimit {
	int resource; /* RLIMIT_* */
	uint64_t soft, hard;
};

struct kap_caps {
	/* Bit masks of capability numbers; has_* false when the list was absent. */
	uint64_t bounding, effective, inheritable, permitted, ambient;
};

struct kap_user {
	uid_t uid;
	gid_t gid;
	bool has_umask;
	mode_t umask;
	gid_t *additional_gids;
	size_t n_additional_gids;
	char *username;
};

struct kap_process {
	bool terminal;
	unsigned console_height, console_width;
	struct kap_user user;
	char **args; /* NULL-terminated */
	char *command_line;
	char **env;
	char *cwd;
	bool has_caps;
	struct kap_caps caps;
	struct kap_rlimit *rlimits;
	size_t n_rlimits;
	bool no_new_privileges;
	char *apparmor_profile;
	char *selinux_label;
	bool has_oom_score_adj;
	int oom_score_adj;
};

struct kap_mount {
	char *destination;
	char *type;
	char *source;
	char **options; /* raw options as given */
	/* Derived from options: */
	unsigned long flags;	   /* MS_* to set */
	unsigned long clear_flags; /* MS_* explicitly cleared (rw, suid, ...) */
	unsigned long propagation; /* MS_PRIVATE|MS_SLAVE|MS_SHARED|MS_UNBINDABLE (+MS_REC) */
	char *data;		   /* remaining fs-specific options, comma separated */
	bool bind;		   /* bind or rbind */
	bool recursive;
	bool bind_ro;					    /* bind with ro: needs a remount */
	struct kap_id_mapping *uid_mappings, *gid_mappings; /* idmapped mounts (unused) */
};

enum kap_ns_type {
	KAP_NS_PID,
	KAP_NS_NET,
	KAP_NS_MNT,
	KAP_NS_IPC,
	KAP_NS_UTS,
	KAP_NS_USER,
	KAP_NS_CGROUP,
	KAP_NS_TIME,
	KAP_NS_COUNT,
};

struct kap_namespace {
	bool enabled; /* listed in linux.namespaces */
	char *path;   /* join this one instead of creating */
};

struct kap_id_mapping {
	uint32_t container_id, host_id, size;
};

struct kap_device {
	char *path;
	char type; /* 'c', 'b', 'u', 'p' */
	int64_t major, minor;
	bool has_mode;
	mode_t mode;
	bool has_uid, has_gid;
	uid_t uid;
	gid_t gid;
};

struct kap_device_rule {
	bool allow;
	char type;	      /* 'a', 'c', 'b' */
	int64_t major, minor; /* -1 = wildcard */
	char access[4];	      /* subset of "rwm" */
};

struct kap_throttle {
	int64_t major, minor;
	uint64_t rate;
};

struct kap_weight_device {
	int64_t major, minor;
	bool has_weight, has_leaf_weight;
	uint16_t weight, leaf_weight;
};

struct kap_hugepage_limit {
	char *page_size; /* "2MB", "1GB" */
	uint64_t limit;
};

/* linux.resources.network.priorities[] (net_prio.ifpriomap) */
struct kap_net_priority {
	char *name; /* interface */
	uint32_t priority;
};

/* linux.resources.rdma.<device> (rdma.max) */
struct kap_rdma_limit {
	char *device;
	bool has_hca_handles, has_hca_objects;
	uint32_t hca_handles, hca_objects;
};

/* Every field optional; has_* says whether it was given. Negative limits mean "unlimited". */
struct kap_resources {
	/* memory */
	bool has_mem_limit, has_mem_reservation, has_mem_swap, has_mem_kernel, has_mem_swappiness;
	int64_t mem_limit, mem_reservation, mem_swap, mem_kernel;
	uint64_t mem_swappiness;
	bool disable_oom_killer;
	bool has_disable_oom_killer;
	bool has_mem_kernel_tcp;
	int64_t mem_kernel_tcp;
	/* network (cgroup v1 net_cls, net_prio) */
	bool has_net_classid;
	uint32_t net_classid;
	struct kap_net_priority *net_priorities;
	size_t n_net_priorities;
	/* rdma */
	struct kap_rdma_limit *rdma;
	size_t n_rdma;
	/* cpu */
	bool has_cpu_shares, has_cpu_quota, has_cpu_period, has_cpu_rt_runtime, has_cpu_rt_period;
	uint64_t cpu_shares, cpu_period, cpu_rt_period;
	int64_t cpu_quota, cpu_rt_runtime;
	char *cpu_cpus, *cpu_mems;
	bool has_cpu_idle;
	int64_t cpu_idle;
	/* pids */
	bool has_pids_limit;
	int64_t pids_limit;
	/* blockIO */
	bool has_blkio_weight, has_blkio_leaf_weight;
	uint16_t blkio_weight, blkio_leaf_weight;
	struct kap_weight_device *blkio_weight_device;
	size_t n_blkio_weight_device;
	struct kap_throttle *throttle_read_bps, *throttle_write_bps, *throttle_read_iops,
	    *throttle_write_iops;
	size_t n_throttle_read_bps, n_throttle_write_bps, n_throttle_read_iops,
	    n_throttle_write_iops;
	/* hugetlb */
	struct kap_hugepage_limit *hugepage_limits;
	size_t n_hugepage_limits;
	/* devices */
	struct kap_device_rule *devices;
	size_t n_devices;
	/* linux.resources.unified (cgroup v2 key -> value) */
	char **unified_keys, **unified_values;
	size_t n_unified;
};

struct kap_hook {
	char *path;
	char **args;
	char **env;
	bool has_timeout;
	int timeout; /* seconds */
};

enum kap_hook_kind {
	KAP_HOOK_PRESTART,
	KAP_HOOK_CREATE_RUNTIME,
	KAP_HOOK_CREATE_CONTAINER,
	KAP_HOOK_START_CONTAINER,
	KAP_HOOK_POSTSTART,
	KAP_HOOK_POSTSTOP,
	KAP_HOOK_KIND_COUNT,
};

struct kap_hooks {
	struct kap_hook *list[KAP_HOOK_KIND_COUNT];
	size_t n[KAP_HOOK_KIND_COUNT];
};

struct kap_sysctl {
	char *key, *value;
};

struct kap_time_offset {
	bool has;
	int64_t secs;
	uint32_t nanosecs;
};

struct kap_spec {
	char *oci_version;
	struct kap_process *process; /* NULL when absent (allowed for create-only bundles) */
	char *root_path;	     /* as given (relative to the bundle, or absolute) */
	bool root_readonly;
	char *hostname, *domainname;
	struct kap_mount *mounts;
	size_t n_mounts;
	struct kap_hooks hooks;
	char **annotation_keys, **annotation_values;
	size_t n_annotations;

	/* linux */
	struct kap_namespace namespaces[KAP_NS_COUNT];
	struct kap_id_mapping *uid_mappings, *gid_mappings;
	size_t n_uid_mappings, n_gid_mappings;
	struct kap_device *devices;
	size_t n_devices;
	char *cgroups_path;
	bool has_resources;
	struct kap_resources resources;
	struct kap_sysctl *sysctls;
	size_t n_sysctls;
	char **masked_paths, **readonly_paths; /* NULL-terminated, may be NULL */
	unsigned long rootfs_propagation;      /* 0 = default (rprivate... see rootfs.c) */
	char *mount_label;
	struct kap_time_offset time_monotonic, time_boottime;
	bool has_personality;
	unsigned long personality;
	/* linux.seccomp kept as raw JSON for container/seccomp.c (NULL when absent). */
	struct kap_json *seccomp;
	/* The whole document, for fields read lazily (process for exec, features). */
	struct kap_json *json;
};

/* Decode config.json text. */
int kap_spec_parse(const char *buf, size_t len, struct kap_spec **out, struct kapsel_error **err);
/* Decode the "process" object of config.json or of `exec --process FILE`. */
int kap_spec_parse_process(const struct kap_json *obj, const char *path, struct kap_process **out,
			   struct kapsel_error **err);
/* Decode a linux.resources object (also the input of `update --resources`). */
int kap_spec_parse_resources(const struct kap_json *obj, const char *path,
			     struct kap_resources *out, struct kapsel_error **err);
int kap_spec_load(const char *bundle, struct kap_spec **out, struct kapsel_error **err);
void kap_spec_free(struct kap_spec *spec);
void kap_process_free(struct kap_process *p);
void kap_resources_clear(struct kap_resources *r);
static inline void kap_spec_freep(struct kap_spec **s)
{
	kap_spec_free(*s);
}
#define cleanup_spec __attribute__((cleanup(kap_spec_freep)))

const char *kap_ns_name(enum kap_ns_type t);	  /* "pid", "network", ... (spec names) */
const char *kap_ns_proc_name(enum kap_ns_type t); /* "pid", "net", ... (/proc/PID/ns names) */
int kap_ns_clone_flag(enum kap_ns_type t);
/* Capability name ("CAP_SYS_ADMIN") -> number, or -1. */
int kap_cap_from_name(const char *name);
const char *kap_cap_name(int cap);
int kap_cap_last(void);
/* rlimit name ("RLIMIT_NOFILE") -> resource, or -1. */
int kap_rlimit_from_name(const char *name);
