/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup v2 (Documentation/admin-guide/cgroup-v2.rst): controller delegation, resource
 * writers with runc's/crun's conversions from the OCI (v1-shaped) values, cgroup.freeze,
 * statistics. The devices controller is an eBPF program (cgroup-bpf.c).
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "container/cgroup/cgroup-internal.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"

#define FREEZE_WAIT_MS 2000

uint64_t kap_cg_v2_shares_to_weight(uint64_t shares)
{
	/* crun's mapping of [2, 262144] onto [1, 10000] (runc uses the same). */
	if (shares < 2)
		shares = 2;
	if (shares > 262144)
		shares = 262144;
	return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t kap_cg_v2_blkio_to_io_weight(uint64_t weight)
{
	/* runc's ConvertBlkIOToIOWeightValue: [10, 1000] onto [1, 10000]. */
	if (weight < 10)
		weight = 10;
	if (weight > 1000)
		weight = 1000;
	return 1 + (weight - 10) * 9999 / 990;
}

int kap_cg_v2_swap_value(const struct kap_resources *res, bool *set, int64_t *out,
			 struct kapsel_error **err)
{
	/* runc's ConvertMemorySwapToCgroupV2Value; 0 is "unset", negative "unlimited". */
	int64_t mem = !res->has_mem_limit ? 0 : res->mem_limit < 0 ? -1 : res->mem_limit;
	int64_t swap = !res->has_mem_swap ? 0 : res->mem_swap < 0 ? -1 : res->mem_swap;
	*set = false;
	if (mem == -1 && swap == 0) {
		/* Unlimited memory, swap not given: unlimited swap too, as on v1. */
		*set = true;
		*out = -1;
		return 0;
	}
	if (swap == 0)
		return 0;
	*set = true;
	if (swap == -1) {
		*out = -1;
		return 0;
	}
	if (mem == 0 || mem == -1)
		return kap_error_plain(err, EINVAL,
				       "linux.resources.memory.swap: a swap limit needs a memory "
				       "limit");
	if (swap < mem)
		return kap_error_plain(
		    err, EINVAL,
		    "linux.resources.memory.swap: %lld is below memory.limit %lld "
		    "(OCI swap is memory+swap)",
		    (long long)swap, (long long)mem);
	*out = swap - mem;
	return 0;
}

int kap_cg_v2_unified_key_check(const char *key, struct kapsel_error **err)
{
	if (!key || !*key || strchr(key, '/') || !strcmp(key, ".") || !strcmp(key, ".."))
		return kap_error_plain(err, EINVAL, "linux.resources.unified: invalid key '%s'",
				       key ? key : "");
	return 0;
}

/* The controllers res needs in cgroup2, each with the first resource that needs it. */
struct need {
	char name[32];
	const char *what;
};

static int add_need(struct need *n, size_t *count, size_t max, const char *name, size_t len,
		    const char *what)
{
	for (size_t i = 0; i < *count; i++)
		if (strlen(n[i].name) == len && !strncmp(n[i].name, name, len))
			return 0;
	if (*count == max || len >= sizeof(n[0].name))
		return -E2BIG;
	memcpy(n[*count].name, name, len);
	n[*count].name[len] = '\0';
	n[*count].what = what;
	(*count)++;
	return 0;
}

static int needs(const struct kap_resources *res, struct need *n, size_t max, size_t *count,
		 struct kapsel_error **err)
{
	static const enum kap_cg_ctrl ctrls[] = {KAP_CG_MEMORY, KAP_CG_CPU,   KAP_CG_CPUSET,
						 KAP_CG_PIDS,	KAP_CG_BLKIO, KAP_CG_HUGETLB,
						 KAP_CG_RDMA};
	*count = 0;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(ctrls); i++) {
		const char *what = kap_cg_requested(res, ctrls[i]);
		const char *name = kap_cg_ctrl_name(ctrls[i], true);
		if (what && add_need(n, count, max, name, strlen(name), what) < 0)
			return kap_error_plain(err, E2BIG, "too many controllers");
	}
	for (size_t i = 0; i < res->n_unified; i++) {
		const char *k = res->unified_keys[i];
		int r = kap_cg_v2_unified_key_check(k, err);
		if (r < 0)
			return r;
		/* "memory.high" needs the memory controller; "cgroup.*" are core files. */
		size_t len = strcspn(k, ".");
		if (!k[len] || (len == 6 && !strncmp(k, "cgroup", 6)))
			continue;
		if (add_need(n, count, max, k, len, "linux.resources.unified") < 0)
			return kap_error_plain(err, EINVAL,
					       "linux.resources.unified: invalid key '%s'", k);
	}
	return 0;
}

static bool in_list(const char *list, const char *name)
{
	size_t len = strlen(name);
	for (const char *p = list; *p;) {
		p += strspn(p, " \n");
		size_t w = strcspn(p, " \n");
		if (w == len && !strncmp(p, name, len))
			return true;
		p += w;
	}
	return false;
}

int kap_cg_v2_check(const struct kap_cg_fd *leaf, const char *deleg_dir,
		    const struct kap_resources *res, struct kapsel_error **err)
{
	/*
	 * cgroup2 has no kernel TCP memory limit and no net_cls/net_prio (network classes are
	 * eBPF's business there): refused, as crun does, rather than ignored.
	 */
	if (res->has_mem_kernel_tcp && res->mem_kernel_tcp)
		return kap_error_plain(err, EOPNOTSUPP,
				       "linux.resources.memory.kernelTCP: not supported on cgroup "
				       "v2 (no memory.kmem.tcp.limit_in_bytes)");
	const char *net = kap_cg_requested(res, KAP_CG_NET_CLS);
	if (net || (net = kap_cg_requested(res, KAP_CG_NET_PRIO)))
		return kap_error_plain(err, EOPNOTSUPP,
				       "%s: not supported on cgroup v2 (net_cls and net_prio are "
				       "cgroup v1 controllers)",
				       net);
	struct need n[16];
	size_t count;
	int r = needs(res, n, KAP_ARRAY_SIZE(n), &count, err);
	if (r < 0 || !count)
		return r;
	/* The leaf's cgroup.controllers is exactly what its parent enabled for it. */
	char avail[512];
	r = kap_cg_read(leaf, "cgroup.controllers", avail, sizeof(avail), err);
	if (r == -ENOENT)
		return kap_error(err, ENOENT, "read %s/cgroup.controllers", leaf->dir);
	if (r < 0)
		return r;
	for (size_t i = 0; i < count; i++) {
		if (!in_list(avail, n[i].name))
			return kap_error_plain(err, EOPNOTSUPP,
					       "%s: %s controller not available: not enabled in "
					       "%s/cgroup.subtree_control",
					       n[i].what, n[i].name, deleg_dir);
	}
	return 0;
}

int kap_cg_v2_subtree_enable(const struct kap_cg_fd *dir, const char *avail,
			     struct kapsel_error **err)
{
	char buf[600];
	size_t o = 0;
	for (const char *p = avail; *p && o < sizeof(buf) - 2;) {
		p += strspn(p, " \n");
		size_t w = strcspn(p, " \n");
		if (!w)
			break;
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s+%.*s", o ? " " : "", (int)w, p);
		p += w;
	}
	if (!o)
		return 0;
	return kap_cg_write(dir, "cgroup.subtree_control", NULL, buf, err);
}

static int write_num_or_max(const struct kap_cg_fd *d, const char *file, const char *what,
			    int64_t v, struct kapsel_error **err)
{
	if (v < 0)
		return kap_cg_write(d, file, what, "max", err);
	return kap_cg_writef(d, file, what, err, "%lld", (long long)v);
}

static int v2_memory(const struct kap_cg_fd *d, const struct kap_resources *res,
		     struct kapsel_error **err)
{
	bool swap_set;
	int64_t swap;
	int r = kap_cg_v2_swap_value(res, &swap_set, &swap, err);
	if (r < 0)
		return r;
	/* Swap first, as runc: memory.max may only shrink below current use once swap allows. */
	if (swap_set) {
		bool asked = res->has_mem_swap && res->mem_swap != 0;
		if (asked || kap_cg_exists(d, "memory.swap.max")) {
			r = write_num_or_max(d, "memory.swap.max", "linux.resources.memory.swap",
					     swap, err);
			if (r < 0)
				return r;
		}
	}
	if (res->has_mem_limit && res->mem_limit != 0) {
		r = write_num_or_max(d, "memory.max", "linux.resources.memory.limit",
				     res->mem_limit, err);
		if (r < 0)
			return r;
	}
	if (res->has_mem_reservation && res->mem_reservation) {
		r = write_num_or_max(d, "memory.low", "linux.resources.memory.reservation",
				     res->mem_reservation, err);
		if (r < 0)
			return r;
	}
	/* No cgroup2 counterpart; runc and crun ignore these too, kapsel says so. */
	if (res->has_mem_kernel && res->mem_kernel)
		kap_warn(
		    "linux.resources.memory.kernel ignored: no kernel memory limit in cgroup v2");
	if (res->has_disable_oom_killer && res->disable_oom_killer)
		kap_warn("linux.resources.memory.disableOOMKiller ignored: not supported by cgroup "
			 "v2");
	if (res->has_mem_swappiness)
		return kap_error_plain(err, EOPNOTSUPP,
				       "linux.resources.memory.swappiness: not supported by cgroup "
				       "v2");
	return 0;
}

static int v2_cpu(const struct kap_cg_fd *d, const struct kap_resources *res,
		  struct kapsel_error **err)
{
	int r;
	const char *rt =
	    res->has_cpu_rt_runtime && res->cpu_rt_runtime ? "linux.resources.cpu.realtimeRuntime"
	    : res->has_cpu_rt_period && res->cpu_rt_period ? "linux.resources.cpu.realtimePeriod"
							   : NULL;
	if (rt)
		return kap_error_plain(err, EOPNOTSUPP,
				       "%s: realtime scheduling limits are not supported by cgroup "
				       "v2",
				       rt);
	if (res->has_cpu_idle) {
		r = kap_cg_writef(d, "cpu.idle", "linux.resources.cpu.idle", err, "%lld",
				  (long long)res->cpu_idle);
		if (r < 0)
			return r;
	}
	if (res->has_cpu_shares && res->cpu_shares) {
		r = kap_cg_writef(d, "cpu.weight", "linux.resources.cpu.shares", err, "%llu",
				  (unsigned long long)kap_cg_v2_shares_to_weight(res->cpu_shares));
		if (r < 0)
			return r;
	}
	/* cpu.max is "$MAX $PERIOD"; the period may be left out (cgroup-v2.rst "CPU"). */
	bool quota = res->has_cpu_quota && res->cpu_quota != 0;
	bool period = res->has_cpu_period && res->cpu_period != 0;
	if (!quota && !period)
		return 0;
	char q[KAP_CG_NUM] = "max";
	if (quota && res->cpu_quota > 0)
		snprintf(q, sizeof(q), "%lld", (long long)res->cpu_quota);
	if (period)
		return kap_cg_writef(d, "cpu.max", "linux.resources.cpu.quota", err, "%s %llu", q,
				     (unsigned long long)res->cpu_period);
	return kap_cg_write(d, "cpu.max", "linux.resources.cpu.quota", q, err);
}

static int v2_io(const struct kap_cg_fd *d, const struct kap_resources *res,
		 struct kapsel_error **err)
{
	int r;
	/* io.weight (blk-iocost) takes 1..10000; io.bfq.weight (BFQ) the v1 range 1..1000. */
	bool iocost = kap_cg_exists(d, "io.weight") || !kap_cg_exists(d, "io.bfq.weight");
	const char *wfile = iocost ? "io.weight" : "io.bfq.weight";
	if (res->has_blkio_weight && res->blkio_weight) {
		uint64_t w =
		    iocost ? kap_cg_v2_blkio_to_io_weight(res->blkio_weight) : res->blkio_weight;
		r = kap_cg_writef(d, wfile, "linux.resources.blockIO.weight", err, "%llu",
				  (unsigned long long)w);
		if (r < 0)
			return r;
	}
	if (res->has_blkio_leaf_weight && res->blkio_leaf_weight)
		kap_warn("linux.resources.blockIO.leafWeight ignored: not supported by cgroup v2");
	for (size_t i = 0; i < res->n_blkio_weight_device; i++) {
		const struct kap_weight_device *w = &res->blkio_weight_device[i];
		if (w->has_leaf_weight)
			kap_warn("linux.resources.blockIO.weightDevice leafWeight ignored: not "
				 "supported by cgroup v2");
		if (!w->has_weight)
			continue;
		uint64_t v = iocost ? kap_cg_v2_blkio_to_io_weight(w->weight) : w->weight;
		r = kap_cg_writef(d, wfile, "linux.resources.blockIO.weightDevice", err,
				  "%lld:%lld %llu", (long long)w->major, (long long)w->minor,
				  (unsigned long long)v);
		if (r < 0)
			return r;
	}
	/* io.max: one "MAJ:MIN key=value" per write; 0 means no limit. */
	static const struct {
		const char *key, *what;
		size_t tofs, nofs;
	} thr[] = {
	    {"rbps", "linux.resources.blockIO.throttleReadBpsDevice",
	     offsetof(struct kap_resources, throttle_read_bps),
	     offsetof(struct kap_resources, n_throttle_read_bps)},
	    {"wbps", "linux.resources.blockIO.throttleWriteBpsDevice",
	     offsetof(struct kap_resources, throttle_write_bps),
	     offsetof(struct kap_resources, n_throttle_write_bps)},
	    {"riops", "linux.resources.blockIO.throttleReadIOPSDevice",
	     offsetof(struct kap_resources, throttle_read_iops),
	     offsetof(struct kap_resources, n_throttle_read_iops)},
	    {"wiops", "linux.resources.blockIO.throttleWriteIOPSDevice",
	     offsetof(struct kap_resources, throttle_write_iops),
	     offsetof(struct kap_resources, n_throttle_write_iops)},
	};
	cleanup_cg_lines struct kap_cg_lines l = {.fd = -EBADF};
	for (size_t k = 0; k < KAP_ARRAY_SIZE(thr); k++) {
		const struct kap_throttle *t =
		    *(struct kap_throttle *const *)((const char *)res + thr[k].tofs);
		size_t n = *(const size_t *)((const char *)res + thr[k].nofs);
		for (size_t i = 0; i < n; i++) {
			if (l.fd < 0) {
				r = kap_cg_lines_open(d, "io.max", thr[k].what, &l, err);
				if (r < 0)
					return r;
			}
			char line[128];
			if (t[i].rate)
				snprintf(line, sizeof(line), "%lld:%lld %s=%llu",
					 (long long)t[i].major, (long long)t[i].minor, thr[k].key,
					 (unsigned long long)t[i].rate);
			else
				snprintf(line, sizeof(line), "%lld:%lld %s=max",
					 (long long)t[i].major, (long long)t[i].minor, thr[k].key);
			r = kap_cg_lines_write(d, &l, line, err);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int v2_hugetlb(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	for (size_t i = 0; i < res->n_hugepage_limits; i++) {
		const struct kap_hugepage_limit *h = &res->hugepage_limits[i];
		const char *s = h->page_size ? h->page_size : "";
		size_t len = strlen(s);
		bool ok = len > 0 && len < 16;
		for (size_t k = 0; ok && k < len; k++)
			ok = (s[k] >= '0' && s[k] <= '9') || (s[k] >= 'A' && s[k] <= 'Z') ||
			     (s[k] >= 'a' && s[k] <= 'z');
		if (!ok)
			return kap_error_plain(err, EINVAL,
					       "linux.resources.hugepageLimits: invalid pageSize "
					       "'%s'",
					       s);
		char file[64];
		snprintf(file, sizeof(file), "hugetlb.%s.max", s);
		int r = kap_cg_writef(d, file, "linux.resources.hugepageLimits", err, "%llu",
				      (unsigned long long)h->limit);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_cg_v2_apply(const struct kap_cg_fd *leaf, const struct kap_resources *res,
		    struct kapsel_error **err)
{
	int r = 0;
	if (kap_cg_requested(res, KAP_CG_CPUSET)) {
		if (res->cpu_cpus && *res->cpu_cpus)
			r = kap_cg_write(leaf, "cpuset.cpus", "linux.resources.cpu.cpus",
					 res->cpu_cpus, err);
		if (r >= 0 && res->cpu_mems && *res->cpu_mems)
			r = kap_cg_write(leaf, "cpuset.mems", "linux.resources.cpu.mems",
					 res->cpu_mems, err);
	}
	if (r >= 0 && kap_cg_requested(res, KAP_CG_MEMORY))
		r = v2_memory(leaf, res, err);
	if (r >= 0 && kap_cg_requested(res, KAP_CG_CPU))
		r = v2_cpu(leaf, res, err);
	if (r >= 0 && res->has_pids_limit)
		r = write_num_or_max(leaf, "pids.max", "linux.resources.pids.limit",
				     res->pids_limit <= 0 ? -1 : res->pids_limit, err);
	if (r >= 0 && kap_cg_requested(res, KAP_CG_BLKIO))
		r = v2_io(leaf, res, err);
	if (r >= 0 && res->n_hugepage_limits)
		r = v2_hugetlb(leaf, res, err);
	if (r >= 0 && res->n_rdma)
		r = kap_cg_rdma_apply(leaf, res, err); /* cgroup-v2.rst "RDMA" */
	/* Verbatim, last: the user's explicit cgroup2 values win over converted ones. */
	for (size_t i = 0; r >= 0 && i < res->n_unified; i++) {
		r = kap_cg_v2_unified_key_check(res->unified_keys[i], err);
		if (r >= 0)
			r = kap_cg_write(leaf, res->unified_keys[i], "linux.resources.unified",
					 res->unified_values[i] ? res->unified_values[i] : "", err);
	}
	if (r >= 0 && res->n_devices)
		r = kap_cg_bpf_apply(leaf, res->devices, res->n_devices, err);
	return r;
}

/* ---- freezer (cgroup-v2.rst "Core Interface Files": cgroup.freeze, cgroup.events) ---- */

static int read_events(const struct kap_cg_fd *d, int fd, uint64_t *frozen,
		       struct kapsel_error **err)
{
	char buf[256];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		return kap_error(err, errno, "read %s/cgroup.events", d->dir);
	buf[n] = '\0';
	*frozen = 0;
	kap_cg_keyed(buf, "frozen", frozen);
	return 0;
}

int kap_cg_v2_is_frozen(const struct kap_cg_fd *d, bool *frozen, struct kapsel_error **err)
{
	cleanup_close int fd = openat(d->fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open %s/cgroup.events", d->dir);
	uint64_t v;
	int r = read_events(d, fd, &v, err);
	if (r < 0)
		return r;
	*frozen = v == 1;
	return 0;
}

int kap_cg_v2_freeze(const struct kap_cg_fd *d, bool freeze, struct kapsel_error **err)
{
	cleanup_close int fd = openat(d->fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open %s/cgroup.events", d->dir);
	int r = kap_cg_write(d, "cgroup.freeze", NULL, freeze ? "1" : "0", err);
	if (r < 0)
		return r;
	/* The kernel flips "frozen" in cgroup.events once every task stopped, and signals
	 * that with POLLPRI; poll with a short timeout in case the change raced the open. */
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		uint64_t v;
		r = read_events(d, fd, &v, err);
		if (r < 0)
			return r;
		if (v == (freeze ? 1 : 0))
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms =
		    (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (ms >= FREEZE_WAIT_MS) {
			if (freeze)
				kap_cg_write(d, "cgroup.freeze", NULL, "0", NULL);
			return kap_error_plain(err, ETIMEDOUT, "%s/cgroup.events: not %s after 2 s",
					       d->dir, freeze ? "frozen" : "thawed");
		}
		struct pollfd p = {.fd = fd, .events = POLLPRI};
		poll(&p, 1, 10);
	}
}

/* ---- statistics ---- */

static void set_u64(struct kap_json *o, const char *key, const struct kap_cg_fd *d,
		    const char *file)
{
	uint64_t v;
	if (o && kap_cg_read_u64(d, file, &v, NULL) == 0)
		kap_json_set(o, key, kap_cg_json_u64(v));
}

static void raw_stats(struct kap_json *o, const char *buf)
{
	cleanup_free char *copy = strdup(buf);
	char *save = NULL;
	if (!o || !copy)
		return;
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (!sp)
			continue;
		*sp = '\0';
		kap_json_set(o, l, kap_cg_json_u64(strtoull(sp + 1, NULL, 10)));
	}
}

static void cpu_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	char st[1024];
	if (kap_cg_read(d, "cpu.stat", st, sizeof(st), NULL) < 0)
		return;
	struct kap_json *cpu = kap_cg_json_obj(stats, "cpu");
	struct kap_json *u = kap_cg_json_obj(cpu, "usage"), *t = kap_cg_json_obj(cpu, "throttling");
	if (!u || !t)
		return;
	/* cgroup2 counts microseconds; runc reports nanoseconds. */
	static const struct {
		const char *key, *name;
		bool usec;
		bool throttle;
	} map[] = {
	    {"usage_usec", "total", true, false},
	    {"system_usec", "kernel", true, false},
	    {"user_usec", "user", true, false},
	    {"nr_periods", "periods", false, true},
	    {"nr_throttled", "throttledPeriods", false, true},
	    {"throttled_usec", "throttledTime", true, true},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(map); i++) {
		uint64_t v;
		if (kap_cg_keyed(st, map[i].key, &v))
			kap_json_set(map[i].throttle ? t : u, map[i].name,
				     kap_cg_json_u64(map[i].usec ? v * 1000 : v));
	}
}

static void memory_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	uint64_t usage, limit, swap_usage, swap_limit, v;
	if (kap_cg_read_u64(d, "memory.current", &usage, NULL) < 0)
		return;
	struct kap_json *mem = kap_cg_json_obj(stats, "memory");
	struct kap_json *u = kap_cg_json_obj(mem, "usage");
	if (!u)
		return;
	kap_json_set(u, "usage", kap_cg_json_u64(usage));
	if (kap_cg_read_u64(d, "memory.max", &limit, NULL) == 0)
		kap_json_set(u, "limit", kap_cg_json_u64(limit));
	else
		limit = UINT64_MAX;
	if (kap_cg_read_u64(d, "memory.peak", &v, NULL) == 0)
		kap_json_set(u, "max", kap_cg_json_u64(v));
	char ev[512];
	if (kap_cg_read(d, "memory.events", ev, sizeof(ev), NULL) >= 0 &&
	    kap_cg_keyed(ev, "max", &v))
		kap_json_set(u, "failcnt", kap_cg_json_u64(v));
	/* v1 reports memory+swap as "swap"; runc does the same on v2 for compatibility. */
	if (kap_cg_read_u64(d, "memory.swap.current", &swap_usage, NULL) == 0) {
		struct kap_json *s = kap_cg_json_obj(mem, "swap");
		kap_json_set(s, "usage", kap_cg_json_u64(swap_usage + usage));
		if (kap_cg_read_u64(d, "memory.swap.max", &swap_limit, NULL) == 0)
			kap_json_set(s, "limit",
				     kap_cg_json_u64(swap_limit == UINT64_MAX || limit == UINT64_MAX
							 ? UINT64_MAX
							 : swap_limit + limit));
	}
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(d->fd, "memory.stat", 1 << 20, &buf, NULL, NULL) == 0) {
		struct kap_json *raw = kap_cg_json_obj(mem, "raw");
		raw_stats(raw, buf);
		if (kap_cg_keyed(buf, "file", &v))
			kap_json_set(mem, "cache", kap_cg_json_u64(v));
	}
}

static void io_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(d->fd, "io.stat", 1 << 20, &buf, NULL, NULL) < 0)
		return;
	struct kap_json *blkio = kap_cg_json_obj(stats, "blkio");
	char *save = NULL;
	/* "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" */
	for (char *l = strtok_r(buf, "\n", &save); blkio && l; l = strtok_r(NULL, "\n", &save)) {
		unsigned long long maj, min;
		int off;
		if (sscanf(l, "%llu:%llu%n", &maj, &min, &off) != 2)
			continue;
		static const struct {
			const char *key, *field, *op;
		} map[] = {
		    {"ioServiceBytesRecursive", "rbytes", "Read"},
		    {"ioServiceBytesRecursive", "wbytes", "Write"},
		    {"ioServicedRecursive", "rios", "Read"},
		    {"ioServicedRecursive", "wios", "Write"},
		};
		for (size_t i = 0; i < KAP_ARRAY_SIZE(map); i++) {
			char pat[16];
			snprintf(pat, sizeof(pat), " %s=", map[i].field);
			const char *p = strstr(l + off, pat);
			if (p)
				kap_cg_json_blkio(blkio, map[i].key, maj, min, map[i].op,
						  strtoull(p + strlen(pat), NULL, 10));
		}
	}
}

static void hugetlb_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	int fd = openat(d->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	cleanup_dir DIR *dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return;
	}
	struct kap_json *h = NULL;
	struct dirent *de;
	while ((de = readdir(dir))) {
		char size[32], f[96], ev[256];
		size_t len = strlen(de->d_name);
		if (sscanf(de->d_name, "hugetlb.%31[^.].max", size) != 1 || len < 4 ||
		    strcmp(de->d_name + len - 4, ".max") ||
		    len != strlen("hugetlb.") + strlen(size) + 4)
			continue;
		if (!h && !(h = kap_cg_json_obj(stats, "hugetlb")))
			return;
		struct kap_json *e = kap_cg_json_obj(h, size);
		snprintf(f, sizeof(f), "hugetlb.%s.current", size);
		set_u64(e, "usage", d, f);
		snprintf(f, sizeof(f), "hugetlb.%s.events", size);
		uint64_t v = 0;
		if (kap_cg_read(d, f, ev, sizeof(ev), NULL) >= 0)
			kap_cg_keyed(ev, "max", &v);
		kap_json_set(e, "failcnt", kap_cg_json_u64(v));
	}
}

int kap_cg_v2_stats(const struct kap_cg_fd *d, unsigned only, struct kap_json *stats,
		    struct kapsel_error **err)
{
	if (only & KAP_CG_BIT(KAP_CG_CPU))
		cpu_stats(stats, d);
	if (only & KAP_CG_BIT(KAP_CG_MEMORY))
		memory_stats(stats, d);
	if (only & KAP_CG_BIT(KAP_CG_PIDS)) {
		uint64_t v;
		if (kap_cg_read_u64(d, "pids.current", &v, NULL) == 0) {
			struct kap_json *p = kap_cg_json_obj(stats, "pids");
			kap_json_set(p, "current", kap_cg_json_u64(v));
			if (kap_cg_read_u64(d, "pids.max", &v, NULL) == 0)
				kap_json_set(p, "limit", kap_cg_json_u64(v == UINT64_MAX ? 0 : v));
		}
	}
	if (only & KAP_CG_BIT(KAP_CG_BLKIO))
		io_stats(stats, d);
	if (only & KAP_CG_BIT(KAP_CG_HUGETLB))
		hugetlb_stats(stats, d);
	(void)err;
	return 0;
}

int kap_cg_v2_oom_count(const struct kap_cg_fd *d, uint64_t *count, struct kapsel_error **err)
{
	char buf[512];
	int r = kap_cg_read(d, "memory.events", buf, sizeof(buf), err);
	if (r == -ENOENT)
		return kap_error_plain(err, ENOENT, "%s: memory controller not available", d->dir);
	if (r < 0)
		return r;
	*count = 0;
	kap_cg_keyed(buf, "oom_kill", count);
	return 0;
}
