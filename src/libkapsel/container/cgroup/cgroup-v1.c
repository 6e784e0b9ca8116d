/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup v1 controllers (Documentation/admin-guide/cgroup-v1/): resource writers, the freezer,
 * statistics. Every requested resource either lands in its file or fails naming it.
 */
#include <dirent.h>
#include <fcntl.h>
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

/* The kernel's internal ENOTSUPP, which memory.kmem.limit_in_bytes returns since Linux 5.16. */
#define KERNEL_ENOTSUPP 524
#define FREEZE_WAIT_NS	2000000000LL

size_t kap_cg_v1_memory_plan(const struct kap_resources *res, uint64_t cur_limit, bool have_memsw,
			     struct kap_cg_v1_write steps[2])
{
	/* runc: 0 is "unset", any negative value is "unlimited" (-1 for the kernel). */
	bool mem_set = res->has_mem_limit && res->mem_limit != 0;
	bool swap_set = res->has_mem_swap && res->mem_swap != 0;
	int64_t mem = res->mem_limit < 0 ? -1 : res->mem_limit;
	int64_t swap = res->mem_swap < 0 ? -1 : res->mem_swap;
	size_t n = 0;
	/* Unlimited memory without a swap value means unlimited memory+swap too (runc). */
	if (mem_set && mem == -1 && !swap_set && have_memsw) {
		swap_set = true;
		swap = -1;
	}
	/*
	 * memory.limit_in_bytes <= memory.memsw.limit_in_bytes must hold after every write
	 * (cgroup-v1/memory.rst 2.4, mem_cgroup_resize_max): raising goes memsw first, lowering
	 * memory first.
	 */
	if (mem_set && swap_set && (swap == -1 || cur_limit < (uint64_t)swap)) {
		steps[n++] = (struct kap_cg_v1_write){"memory.memsw.limit_in_bytes", swap};
		steps[n++] = (struct kap_cg_v1_write){"memory.limit_in_bytes", mem};
		return n;
	}
	if (mem_set)
		steps[n++] = (struct kap_cg_v1_write){"memory.limit_in_bytes", mem};
	if (swap_set)
		steps[n++] = (struct kap_cg_v1_write){"memory.memsw.limit_in_bytes", swap};
	return n;
}

static int v1_memory(const struct kap_cg_fd *d, const struct kap_resources *res,
		     struct kapsel_error **err)
{
	bool have_memsw = kap_cg_exists(d, "memory.memsw.limit_in_bytes");
	uint64_t cur = 0;
	int r;
	if (res->has_mem_limit && res->mem_limit != 0 && res->has_mem_swap && res->mem_swap > 0) {
		r = kap_cg_read_u64(d, "memory.limit_in_bytes", &cur, err);
		if (r < 0)
			return r == -ENOENT
				   ? kap_error(err, ENOENT, "read %s/memory.limit_in_bytes", d->dir)
				   : r;
	}
	struct kap_cg_v1_write steps[2];
	size_t n = kap_cg_v1_memory_plan(res, cur, have_memsw, steps);
	for (size_t i = 0; i < n; i++) {
		bool swap = strstr(steps[i].file, "memsw") != NULL;
		r = kap_cg_writef(d, steps[i].file,
				  swap ? "linux.resources.memory.swap"
				       : "linux.resources.memory.limit",
				  err, "%lld", (long long)steps[i].value);
		if (r < 0)
			return r;
	}
	if (res->has_mem_reservation && res->mem_reservation) {
		r = kap_cg_writef(
		    d, "memory.soft_limit_in_bytes", "linux.resources.memory.reservation", err,
		    "%lld", (long long)(res->mem_reservation < 0 ? -1 : res->mem_reservation));
		if (r < 0)
			return r;
	}
	if (res->has_mem_kernel && res->mem_kernel) {
		/*
		 * Kernel memory limits are deprecated (Linux 5.4) and refused since 5.16
		 * (cgroup-v1/memory.rst 2.7); runc ignores them. Apply where the kernel still
		 * accepts the value, say so where it does not.
		 */
		struct kapsel_error *e = NULL;
		r = kap_cg_writef(d, "memory.kmem.limit_in_bytes", NULL, &e, "%lld",
				  (long long)(res->mem_kernel < 0 ? -1 : res->mem_kernel));
		if (r == -ENOENT || r == -EOPNOTSUPP || r == -KERNEL_ENOTSUPP)
			kap_warn("linux.resources.memory.kernel ignored: %s", e->msg);
		else if (r < 0) {
			if (err && !*err)
				*err = e;
			else
				kapsel_error_free(e);
			return r;
		}
		if (r < 0)
			kapsel_error_free(e);
	}
	if (res->has_mem_swappiness) {
		if (res->mem_swappiness > 100)
			return kap_error_plain(err, EINVAL,
					       "linux.resources.memory.swappiness: %llu is not in "
					       "0..100",
					       (unsigned long long)res->mem_swappiness);
		r = kap_cg_writef(d, "memory.swappiness", "linux.resources.memory.swappiness", err,
				  "%llu", (unsigned long long)res->mem_swappiness);
		if (r < 0)
			return r;
	}
	if (res->has_disable_oom_killer && res->disable_oom_killer) {
		r = kap_cg_write(d, "memory.oom_control", "linux.resources.memory.disableOOMKiller",
				 "1", err);
		if (r < 0)
			return r;
	}
	if (res->has_mem_kernel_tcp && res->mem_kernel_tcp) {
		/* cgroup-v1/memory.rst 2.7.2; unlike kmem.limit_in_bytes still honoured. */
		r = kap_cg_writef(d, "memory.kmem.tcp.limit_in_bytes",
				  "linux.resources.memory.kernelTCP", err, "%lld",
				  (long long)(res->mem_kernel_tcp < 0 ? -1 : res->mem_kernel_tcp));
		if (r < 0)
			return r;
	}
	return 0;
}

/* cgroup-v1/net_cls.rst: the class id tagged on the container's packets. */
static int v1_net_cls(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	return kap_cg_writef(d, "net_cls.classid", "linux.resources.network.classID", err, "%u",
			     (unsigned)res->net_classid);
}

/* cgroup-v1/net_prio.rst: one "<ifname> <prio>" per write. */
static int v1_net_prio(const struct kap_cg_fd *d, const struct kap_resources *res,
		       struct kapsel_error **err)
{
	cleanup_cg_lines struct kap_cg_lines l = {.fd = -EBADF};
	int r = kap_cg_lines_open(d, "net_prio.ifpriomap", "linux.resources.network.priorities", &l,
				  err);
	for (size_t i = 0; r >= 0 && i < res->n_net_priorities; i++) {
		char line[64];
		snprintf(line, sizeof(line), "%s %u", res->net_priorities[i].name,
			 (unsigned)res->net_priorities[i].priority);
		r = kap_cg_lines_write(d, &l, line, err);
	}
	return r;
}

int kap_cg_rdma_line(const struct kap_rdma_limit *l, char *buf, size_t size)
{
	/* cgroup-v1/rdma.rst: "<device> hca_handle=<n> hca_object=<n>", either key optional. */
	int n = snprintf(buf, size, "%s", l->device);
	if (n >= 0 && (size_t)n < size && l->has_hca_handles)
		n +=
		    snprintf(buf + n, size - (size_t)n, " hca_handle=%u", (unsigned)l->hca_handles);
	if (n >= 0 && (size_t)n < size && l->has_hca_objects)
		n +=
		    snprintf(buf + n, size - (size_t)n, " hca_object=%u", (unsigned)l->hca_objects);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int kap_cg_rdma_apply(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	cleanup_cg_lines struct kap_cg_lines l = {.fd = -EBADF};
	int r = kap_cg_lines_open(d, "rdma.max", "linux.resources.rdma", &l, err);
	for (size_t i = 0; r >= 0 && i < res->n_rdma; i++) {
		char line[160];
		if (kap_cg_rdma_line(&res->rdma[i], line, sizeof(line)) < 0)
			return kap_error_plain(err, ENAMETOOLONG,
					       "linux.resources.rdma.%s: too long",
					       res->rdma[i].device);
		r = kap_cg_lines_write(d, &l, line, err);
	}
	return r;
}

/*
 * Write a (period, value) pair whose valid order depends on the current values: period first,
 * and if the kernel refuses (the old value does not fit the new period), value first.
 */
static int write_pair(const struct kap_cg_fd *d, const char *pfile, const char *pwhat, bool has_p,
		      uint64_t period, const char *vfile, const char *vwhat, bool has_v,
		      int64_t value, struct kapsel_error **err)
{
	int r;
	if (has_p) {
		struct kapsel_error *e = NULL;
		r = kap_cg_writef(d, pfile, pwhat, &e, "%llu", (unsigned long long)period);
		if (r == -EINVAL && has_v) {
			kapsel_error_free(e);
			r = kap_cg_writef(d, vfile, vwhat, err, "%lld", (long long)value);
			if (r < 0)
				return r;
			return kap_cg_writef(d, pfile, pwhat, err, "%llu",
					     (unsigned long long)period);
		}
		if (r < 0) {
			if (err && !*err)
				*err = e;
			else
				kapsel_error_free(e);
			return r;
		}
	}
	if (has_v)
		return kap_cg_writef(d, vfile, vwhat, err, "%lld", (long long)value);
	return 0;
}

static int v1_cpu(const struct kap_cg_fd *d, const struct kap_resources *res,
		  struct kapsel_error **err)
{
	int r;
	if (res->has_cpu_shares && res->cpu_shares) {
		r = kap_cg_writef(d, "cpu.shares", "linux.resources.cpu.shares", err, "%llu",
				  (unsigned long long)res->cpu_shares);
		if (r < 0)
			return r;
	}
	r = write_pair(d, "cpu.cfs_period_us", "linux.resources.cpu.period",
		       res->has_cpu_period && res->cpu_period, res->cpu_period, "cpu.cfs_quota_us",
		       "linux.resources.cpu.quota", res->has_cpu_quota && res->cpu_quota,
		       res->cpu_quota < 0 ? -1 : res->cpu_quota, err);
	if (r < 0)
		return r;
	r = write_pair(d, "cpu.rt_period_us", "linux.resources.cpu.realtimePeriod",
		       res->has_cpu_rt_period && res->cpu_rt_period, res->cpu_rt_period,
		       "cpu.rt_runtime_us", "linux.resources.cpu.realtimeRuntime",
		       res->has_cpu_rt_runtime && res->cpu_rt_runtime,
		       res->cpu_rt_runtime < 0 ? -1 : res->cpu_rt_runtime, err);
	if (r < 0)
		return r;
	if (res->has_cpu_idle)
		return kap_cg_writef(d, "cpu.idle", "linux.resources.cpu.idle", err, "%lld",
				     (long long)res->cpu_idle);
	return 0;
}

static int v1_cpuset(const struct kap_cg_fd *d, const struct kap_resources *res,
		     struct kapsel_error **err)
{
	int r = 0;
	if (res->cpu_cpus && *res->cpu_cpus)
		r = kap_cg_write(d, "cpuset.cpus", "linux.resources.cpu.cpus", res->cpu_cpus, err);
	if (r >= 0 && res->cpu_mems && *res->cpu_mems)
		r = kap_cg_write(d, "cpuset.mems", "linux.resources.cpu.mems", res->cpu_mems, err);
	return r;
}

int kap_cg_v1_cpuset_copy(const struct kap_cg_fd *parent, const struct kap_cg_fd *child,
			  struct kapsel_error **err)
{
	static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(files); i++) {
		char buf[4096];
		int r = kap_cg_read(parent, files[i], buf, sizeof(buf), err);
		if (r == -ENOENT)
			return kap_error(err, ENOENT, "read %s/%s", parent->dir, files[i]);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		r = kap_cg_write(child, files[i], NULL, buf, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int v1_pids(const struct kap_cg_fd *d, const struct kap_resources *res,
		   struct kapsel_error **err)
{
	/* runc: a limit of 0 or below means no limit. */
	if (res->pids_limit <= 0)
		return kap_cg_write(d, "pids.max", "linux.resources.pids.limit", "max", err);
	return kap_cg_writef(d, "pids.max", "linux.resources.pids.limit", err, "%lld",
			     (long long)res->pids_limit);
}

/* blkio.weight exists with CFQ only; with BFQ the file is blkio.bfq.weight (runc does this). */
static const char *weight_file(const struct kap_cg_fd *d, const char *cfq, const char *bfq)
{
	return kap_cg_exists(d, cfq) || !kap_cg_exists(d, bfq) ? cfq : bfq;
}

static int write_throttles(const struct kap_cg_fd *d, const char *file, const char *what,
			   const struct kap_throttle *t, size_t n, struct kapsel_error **err)
{
	if (!n)
		return 0;
	cleanup_cg_lines struct kap_cg_lines l = {.fd = -EBADF};
	int r = kap_cg_lines_open(d, file, what, &l, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		char buf[96];
		snprintf(buf, sizeof(buf), "%lld:%lld %llu", (long long)t[i].major,
			 (long long)t[i].minor, (unsigned long long)t[i].rate);
		r = kap_cg_lines_write(d, &l, buf, err);
	}
	return r;
}

static int v1_blkio(const struct kap_cg_fd *d, const struct kap_resources *res,
		    struct kapsel_error **err)
{
	int r = 0;
	if (res->has_blkio_weight && res->blkio_weight) {
		r = kap_cg_writef(d, weight_file(d, "blkio.weight", "blkio.bfq.weight"),
				  "linux.resources.blockIO.weight", err, "%u",
				  (unsigned)res->blkio_weight);
		if (r < 0)
			return r;
	}
	if (res->has_blkio_leaf_weight && res->blkio_leaf_weight) {
		r = kap_cg_writef(d, "blkio.leaf_weight", "linux.resources.blockIO.leafWeight", err,
				  "%u", (unsigned)res->blkio_leaf_weight);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < res->n_blkio_weight_device; i++) {
		const struct kap_weight_device *w = &res->blkio_weight_device[i];
		if (w->has_weight) {
			r = kap_cg_writef(
			    d, weight_file(d, "blkio.weight_device", "blkio.bfq.weight_device"),
			    "linux.resources.blockIO.weightDevice", err, "%lld:%lld %u",
			    (long long)w->major, (long long)w->minor, (unsigned)w->weight);
			if (r < 0)
				return r;
		}
		if (w->has_leaf_weight) {
			r = kap_cg_writef(d, "blkio.leaf_weight_device",
					  "linux.resources.blockIO.weightDevice", err,
					  "%lld:%lld %u", (long long)w->major, (long long)w->minor,
					  (unsigned)w->leaf_weight);
			if (r < 0)
				return r;
		}
	}
	r = write_throttles(d, "blkio.throttle.read_bps_device",
			    "linux.resources.blockIO.throttleReadBpsDevice", res->throttle_read_bps,
			    res->n_throttle_read_bps, err);
	if (r >= 0)
		r = write_throttles(d, "blkio.throttle.write_bps_device",
				    "linux.resources.blockIO.throttleWriteBpsDevice",
				    res->throttle_write_bps, res->n_throttle_write_bps, err);
	if (r >= 0)
		r = write_throttles(d, "blkio.throttle.read_iops_device",
				    "linux.resources.blockIO.throttleReadIOPSDevice",
				    res->throttle_read_iops, res->n_throttle_read_iops, err);
	if (r >= 0)
		r = write_throttles(d, "blkio.throttle.write_iops_device",
				    "linux.resources.blockIO.throttleWriteIOPSDevice",
				    res->throttle_write_iops, res->n_throttle_write_iops, err);
	return r;
}

/* Page sizes become part of a file name: "2MB", "1GB", nothing else. */
static int check_page_size(const char *s, struct kapsel_error **err)
{
	size_t n = s ? strlen(s) : 0;
	bool ok = n > 0 && n < 16;
	for (size_t i = 0; ok && i < n; i++)
		ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') ||
		     (s[i] >= 'a' && s[i] <= 'z');
	if (!ok)
		return kap_error_plain(err, EINVAL,
				       "linux.resources.hugepageLimits: invalid pageSize '%s'",
				       s ? s : "");
	return 0;
}

static int v1_hugetlb(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	for (size_t i = 0; i < res->n_hugepage_limits; i++) {
		const struct kap_hugepage_limit *h = &res->hugepage_limits[i];
		int r = check_page_size(h->page_size, err);
		if (r < 0)
			return r;
		char file[64];
		snprintf(file, sizeof(file), "hugetlb.%s.limit_in_bytes", h->page_size);
		r = kap_cg_writef(d, file, "linux.resources.hugepageLimits", err, "%llu",
				  (unsigned long long)h->limit);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_cg_v1_device_rule(const struct kap_device_rule *r, char *buf, size_t size)
{
	char maj[KAP_CG_NUM] = "*", min[KAP_CG_NUM] = "*";
	if (r->type != 'a' && r->type != 'b' && r->type != 'c')
		return -EINVAL;
	for (const char *a = r->access; *a; a++)
		if (*a != 'r' && *a != 'w' && *a != 'm')
			return -EINVAL;
	if (r->major >= 0)
		snprintf(maj, sizeof(maj), "%lld", (long long)r->major);
	if (r->minor >= 0)
		snprintf(min, sizeof(min), "%lld", (long long)r->minor);
	/* An empty access list means all access, as runc and crun read it. */
	int n =
	    snprintf(buf, size, "%c %s:%s %s", r->type, maj, min, r->access[0] ? r->access : "rwm");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int v1_devices(const struct kap_cg_fd *d, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	/* Deny everything, then replay the rules in order (cgroup-v1/devices.rst 3). */
	cleanup_cg_lines struct kap_cg_lines allow = {.fd = -EBADF}, deny = {.fd = -EBADF};
	int r = kap_cg_lines_open(d, "devices.deny", "linux.resources.devices", &deny, err);
	if (r < 0)
		return r;
	r = kap_cg_lines_open(d, "devices.allow", "linux.resources.devices", &allow, err);
	if (r < 0)
		return r;
	r = kap_cg_lines_write(d, &deny, "a", err);
	for (size_t i = 0; r >= 0 && i < res->n_devices; i++) {
		char line[96];
		if (kap_cg_v1_device_rule(&res->devices[i], line, sizeof(line)) < 0)
			return kap_error_plain(err, EINVAL,
					       "linux.resources.devices[%zu]: invalid rule", i);
		r = kap_cg_lines_write(d, res->devices[i].allow ? &allow : &deny, line, err);
	}
	return r;
}

typedef int (*v1_writer)(const struct kap_cg_fd *d, const struct kap_resources *res,
			 struct kapsel_error **err);

int kap_cg_v1_apply(const struct kap_cgroup_dir *dirs, const int *fds, size_t n,
		    const struct kap_resources *res, unsigned skip, struct kapsel_error **err)
{
	/* cpuset before anything that could move memory, devices last as runc orders them. */
	static const struct {
		enum kap_cg_ctrl c;
		v1_writer fn;
	} order[] = {
	    {KAP_CG_CPUSET, v1_cpuset},
	    {KAP_CG_MEMORY, v1_memory},
	    {KAP_CG_CPU, v1_cpu},
	    {KAP_CG_PIDS, v1_pids},
	    {KAP_CG_BLKIO, v1_blkio},
	    {KAP_CG_HUGETLB, v1_hugetlb},
	    {KAP_CG_NET_CLS, v1_net_cls},
	    {KAP_CG_NET_PRIO, v1_net_prio},
	    {KAP_CG_RDMA, kap_cg_rdma_apply},
	    {KAP_CG_DEVICES, v1_devices},
	};
	for (size_t k = 0; k < KAP_ARRAY_SIZE(order); k++) {
		const char *what = kap_cg_requested(res, order[k].c);
		if (!what || (skip & KAP_CG_BIT(order[k].c)))
			continue;
		size_t i;
		for (i = 0; i < n; i++)
			if (!dirs[i].v2 && (dirs[i].mask & KAP_CG_BIT(order[k].c)))
				break;
		if (i == n)
			return kap_error_plain(err, ENOENT, "%s: %s controller not available", what,
					       kap_cg_ctrl_name(order[k].c, false));
		struct kap_cg_fd d = {fds[i], dirs[i].path};
		int r = order[k].fn(&d, res, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- freezer (cgroup-v1/freezer-subsystem.rst) ---- */

int kap_cg_v1_is_frozen(const struct kap_cg_fd *d, bool *frozen, struct kapsel_error **err)
{
	char buf[32];
	int r = kap_cg_read(d, "freezer.state", buf, sizeof(buf), err);
	if (r == -ENOENT)
		return kap_error(err, ENOENT, "read %s/freezer.state", d->dir);
	if (r < 0)
		return r;
	*frozen = !strcmp(buf, "FROZEN");
	return 0;
}

int kap_cg_v1_freeze(const struct kap_cg_fd *d, bool freeze, struct kapsel_error **err)
{
	const char *want = freeze ? "FROZEN" : "THAWED";
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	long long deadline = ts.tv_sec * 1000000000LL + ts.tv_nsec + FREEZE_WAIT_NS;
	long us = 100;
	for (;;) {
		/*
		 * FREEZING means some task has not stopped yet (e.g. in an uninterruptible
		 * sleep); writing FROZEN again retries them, as runc does.
		 */
		int r = kap_cg_write(d, "freezer.state", NULL, want, err);
		if (r < 0)
			return r;
		char buf[32];
		r = kap_cg_read(d, "freezer.state", buf, sizeof(buf), err);
		if (r == -ENOENT)
			return kap_error(err, ENOENT, "read %s/freezer.state", d->dir);
		if (r < 0)
			return r;
		if (!strcmp(buf, want))
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec * 1000000000LL + ts.tv_nsec > deadline) {
			if (freeze)
				kap_cg_write(d, "freezer.state", NULL, "THAWED", NULL);
			return kap_error_plain(err, ETIMEDOUT,
					       "%s/freezer.state: still %s after 2 s", d->dir, buf);
		}
		struct timespec nap = {0, us * 1000};
		nanosleep(&nap, NULL);
		us = us < 10000 ? us * 2 : us;
	}
}

/* ---- statistics, in runc's events --stats shape ---- */

static void set_u64(struct kap_json *o, const char *key, const struct kap_cg_fd *d,
		    const char *file)
{
	uint64_t v;
	if (o && kap_cg_read_u64(d, file, &v, NULL) == 0)
		kap_json_set(o, key, kap_cg_json_u64(v));
}

static void memory_entry(struct kap_json *mem, const char *key, const struct kap_cg_fd *d,
			 const char *prefix)
{
	char f[64];
	snprintf(f, sizeof(f), "%susage_in_bytes", prefix);
	if (!kap_cg_exists(d, f))
		return;
	struct kap_json *e = kap_cg_json_obj(mem, key);
	set_u64(e, "usage", d, f);
	snprintf(f, sizeof(f), "%smax_usage_in_bytes", prefix);
	set_u64(e, "max", d, f);
	snprintf(f, sizeof(f), "%sfailcnt", prefix);
	set_u64(e, "failcnt", d, f);
	snprintf(f, sizeof(f), "%slimit_in_bytes", prefix);
	set_u64(e, "limit", d, f);
}

/* "key value" lines into an object. */
static void raw_stats(struct kap_json *o, const struct kap_cg_fd *d, const char *file)
{
	cleanup_free char *buf = NULL;
	if (!o || kap_fs_read_file(d->fd, file, 1 << 20, &buf, NULL, NULL) < 0)
		return;
	char *save = NULL;
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (!sp)
			continue;
		*sp = '\0';
		kap_json_set(o, l, kap_cg_json_u64(strtoull(sp + 1, NULL, 10)));
	}
}

static void cpuacct_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	struct kap_json *usage = kap_cg_json_obj(kap_cg_json_obj(stats, "cpu"), "usage");
	if (!usage)
		return;
	set_u64(usage, "total", d, "cpuacct.usage");
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(d->fd, "cpuacct.usage_percpu", 1 << 20, &buf, NULL, NULL) == 0) {
		struct kap_json *arr = kap_json_new_array();
		char *p = buf, *end;
		for (;;) {
			unsigned long long v = strtoull(p, &end, 10);
			if (end == p || !arr)
				break;
			kap_json_append(arr, kap_cg_json_u64(v));
			p = end;
		}
		if (arr)
			kap_json_set(usage, "percpu", arr);
	}
	/* cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds. */
	char st[256];
	uint64_t user = 0, sys = 0;
	long hz = sysconf(_SC_CLK_TCK);
	if (kap_cg_read(d, "cpuacct.stat", st, sizeof(st), NULL) >= 0 && hz > 0) {
		kap_cg_keyed(st, "user", &user);
		kap_cg_keyed(st, "system", &sys);
		kap_json_set(usage, "kernel",
			     kap_cg_json_u64(sys * (1000000000ULL / (uint64_t)hz)));
		kap_json_set(usage, "user", kap_cg_json_u64(user * (1000000000ULL / (uint64_t)hz)));
	}
}

static void blkio_stats(struct kap_json *stats, const struct kap_cg_fd *d)
{
	static const struct {
		const char *key, *cfq, *throttle;
	} files[] = {
	    {"ioServiceBytesRecursive", "blkio.io_service_bytes_recursive",
	     "blkio.throttle.io_service_bytes_recursive"},
	    {"ioServicedRecursive", "blkio.io_serviced_recursive",
	     "blkio.throttle.io_serviced_recursive"},
	};
	struct kap_json *blkio = kap_cg_json_obj(stats, "blkio");
	for (size_t i = 0; blkio && i < KAP_ARRAY_SIZE(files); i++) {
		cleanup_free char *buf = NULL;
		if (kap_fs_read_file(d->fd, files[i].cfq, 1 << 20, &buf, NULL, NULL) < 0 &&
		    kap_fs_read_file(d->fd, files[i].throttle, 1 << 20, &buf, NULL, NULL) < 0)
			continue;
		/* "8:0 Read 4096" lines and a final "Total N". */
		char *save = NULL;
		for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			unsigned long long maj, min, v;
			char op[16];
			if (sscanf(l, "%llu:%llu %15s %llu", &maj, &min, op, &v) == 4)
				kap_cg_json_blkio(blkio, files[i].key, maj, min, op, v);
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
	struct kap_json *h = kap_cg_json_obj(stats, "hugetlb");
	struct dirent *de;
	while (h && (de = readdir(dir))) {
		/* hugetlb.<size>.limit_in_bytes names each supported page size. */
		char size[32], f[96];
		if (sscanf(de->d_name, "hugetlb.%31[^.].limit_in_bytes", size) != 1 ||
		    strcmp(de->d_name + strlen("hugetlb.") + strlen(size), ".limit_in_bytes"))
			continue;
		struct kap_json *e = kap_cg_json_obj(h, size);
		snprintf(f, sizeof(f), "hugetlb.%s.usage_in_bytes", size);
		set_u64(e, "usage", d, f);
		snprintf(f, sizeof(f), "hugetlb.%s.max_usage_in_bytes", size);
		set_u64(e, "max", d, f);
		snprintf(f, sizeof(f), "hugetlb.%s.failcnt", size);
		set_u64(e, "failcnt", d, f);
	}
}

int kap_cg_v1_stats(const struct kap_cgroup_dir *dir, const struct kap_cg_fd *d,
		    struct kap_json *stats, struct kapsel_error **err)
{
	unsigned m = dir->mask;
	if (m & KAP_CG_BIT(KAP_CG_CPUACCT))
		cpuacct_stats(stats, d);
	if (m & KAP_CG_BIT(KAP_CG_CPU)) {
		char st[512];
		struct kap_json *t = kap_cg_json_obj(kap_cg_json_obj(stats, "cpu"), "throttling");
		uint64_t v;
		if (t && kap_cg_read(d, "cpu.stat", st, sizeof(st), NULL) >= 0) {
			if (kap_cg_keyed(st, "nr_periods", &v))
				kap_json_set(t, "periods", kap_cg_json_u64(v));
			if (kap_cg_keyed(st, "nr_throttled", &v))
				kap_json_set(t, "throttledPeriods", kap_cg_json_u64(v));
			if (kap_cg_keyed(st, "throttled_time", &v))
				kap_json_set(t, "throttledTime", kap_cg_json_u64(v));
		}
	}
	if (m & KAP_CG_BIT(KAP_CG_MEMORY)) {
		struct kap_json *mem = kap_cg_json_obj(stats, "memory");
		memory_entry(mem, "usage", d, "memory.");
		memory_entry(mem, "swap", d, "memory.memsw.");
		memory_entry(mem, "kernel", d, "memory.kmem.");
		memory_entry(mem, "kernelTCP", d, "memory.kmem.tcp.");
		struct kap_json *raw = kap_cg_json_obj(mem, "raw");
		raw_stats(raw, d, "memory.stat");
		struct kap_json *cache = raw ? kap_json_get(raw, "cache") : NULL;
		if (cache)
			kap_json_set(mem, "cache", kap_json_get_ref(cache));
	}
	if (m & KAP_CG_BIT(KAP_CG_PIDS)) {
		struct kap_json *p = kap_cg_json_obj(stats, "pids");
		set_u64(p, "current", d, "pids.current");
		uint64_t v;
		/* runc reports "max" as 0 (no limit). */
		if (p && kap_cg_read_u64(d, "pids.max", &v, NULL) == 0)
			kap_json_set(p, "limit", kap_cg_json_u64(v == UINT64_MAX ? 0 : v));
	}
	if (m & KAP_CG_BIT(KAP_CG_BLKIO))
		blkio_stats(stats, d);
	if (m & KAP_CG_BIT(KAP_CG_HUGETLB))
		hugetlb_stats(stats, d);
	(void)err;
	return 0;
}

int kap_cg_v1_oom_count(const struct kap_cg_fd *d, uint64_t *count, struct kapsel_error **err)
{
	char buf[256];
	int r = kap_cg_read(d, "memory.oom_control", buf, sizeof(buf), err);
	if (r == -ENOENT)
		return kap_error(err, ENOENT, "read %s/memory.oom_control", d->dir);
	if (r < 0)
		return r;
	/* "oom_kill N" exists since Linux 4.13. */
	*count = 0;
	kap_cg_keyed(buf, "oom_kill", count);
	return 0;
}
