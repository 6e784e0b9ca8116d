/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup layout detection, container cgroup paths, and dispatch to cgroup-v1.c / cgroup-v2.c.
 *
 * Layouts (Documentation/admin-guide/cgroup-v2.rst, "Mounting"; cgroup-v1/cgroups.rst):
 *  - unified: cgroup2 mounted at <root> (statfs says CGROUP2_SUPER_MAGIC);
 *  - legacy: one cgroup v1 mount per (set of co-mounted) controllers below <root>;
 *  - hybrid: legacy plus a cgroup2 mount below <root> (systemd puts it at <root>/unified).
 * Mount points come from /proc/self/mountinfo, never from guessed names. kapsel writes only to
 * directories it created (plus cgroup.procs of the container's own leaf) and removes only
 * those; the list is part of the container state.
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "container/cgroup/cgroup-internal.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"

/* rmdir of a cgroup fails with EBUSY until its exiting tasks are gone; wait this long. */
#define DESTROY_WAIT_NS 1000000000LL
#define MAX_HIERARCHIES 64

static const char *const ctrl_names[KAP_CG__COUNT] = {
    [KAP_CG_CPU] = "cpu",	  [KAP_CG_CPUACCT] = "cpuacct",	  [KAP_CG_CPUSET] = "cpuset",
    [KAP_CG_MEMORY] = "memory",	  [KAP_CG_DEVICES] = "devices",	  [KAP_CG_FREEZER] = "freezer",
    [KAP_CG_BLKIO] = "blkio",	  [KAP_CG_PIDS] = "pids",	  [KAP_CG_HUGETLB] = "hugetlb",
    [KAP_CG_NET_CLS] = "net_cls", [KAP_CG_NET_PRIO] = "net_prio", [KAP_CG_RDMA] = "rdma",
};

const char *kap_cg_ctrl_name(enum kap_cg_ctrl c, bool v2)
{
	if (v2 && c == KAP_CG_BLKIO)
		return "io";
	return ctrl_names[c];
}

unsigned kap_cg_ctrl_mask(const char *list)
{
	unsigned mask = 0;
	const char *p = list;
	while (*p) {
		size_t len = strcspn(p, ",");
		for (int c = 0; c < KAP_CG__COUNT; c++)
			if (strlen(ctrl_names[c]) == len && !strncmp(p, ctrl_names[c], len))
				mask |= KAP_CG_BIT(c);
		p += len;
		if (*p == ',')
			p++;
	}
	return mask;
}

/*
 * As runc and crun: a zero shares/quota/period/realtime/reservation/kernel/weight value means
 * "not set" (OCI producers send zeros for unset fields), so it neither needs a controller nor
 * gets written.
 */
const char *kap_cg_requested(const struct kap_resources *r, enum kap_cg_ctrl c)
{
	if (!r)
		return NULL;
	switch (c) {
	case KAP_CG_MEMORY:
		if (r->has_mem_limit && r->mem_limit)
			return "linux.resources.memory.limit";
		if (r->has_mem_reservation && r->mem_reservation)
			return "linux.resources.memory.reservation";
		if (r->has_mem_swap && r->mem_swap)
			return "linux.resources.memory.swap";
		if (r->has_mem_kernel && r->mem_kernel)
			return "linux.resources.memory.kernel";
		if (r->has_mem_swappiness)
			return "linux.resources.memory.swappiness";
		if (r->has_disable_oom_killer && r->disable_oom_killer)
			return "linux.resources.memory.disableOOMKiller";
		if (r->has_mem_kernel_tcp && r->mem_kernel_tcp)
			return "linux.resources.memory.kernelTCP";
		return NULL;
	case KAP_CG_CPU:
		if (r->has_cpu_shares && r->cpu_shares)
			return "linux.resources.cpu.shares";
		if (r->has_cpu_quota && r->cpu_quota)
			return "linux.resources.cpu.quota";
		if (r->has_cpu_period && r->cpu_period)
			return "linux.resources.cpu.period";
		if (r->has_cpu_rt_runtime && r->cpu_rt_runtime)
			return "linux.resources.cpu.realtimeRuntime";
		if (r->has_cpu_rt_period && r->cpu_rt_period)
			return "linux.resources.cpu.realtimePeriod";
		if (r->has_cpu_idle)
			return "linux.resources.cpu.idle";
		return NULL;
	case KAP_CG_CPUSET:
		if (r->cpu_cpus && *r->cpu_cpus)
			return "linux.resources.cpu.cpus";
		if (r->cpu_mems && *r->cpu_mems)
			return "linux.resources.cpu.mems";
		return NULL;
	case KAP_CG_PIDS:
		return r->has_pids_limit ? "linux.resources.pids.limit" : NULL;
	case KAP_CG_BLKIO:
		if (r->has_blkio_weight && r->blkio_weight)
			return "linux.resources.blockIO.weight";
		if (r->has_blkio_leaf_weight && r->blkio_leaf_weight)
			return "linux.resources.blockIO.leafWeight";
		if (r->n_blkio_weight_device)
			return "linux.resources.blockIO.weightDevice";
		if (r->n_throttle_read_bps)
			return "linux.resources.blockIO.throttleReadBpsDevice";
		if (r->n_throttle_write_bps)
			return "linux.resources.blockIO.throttleWriteBpsDevice";
		if (r->n_throttle_read_iops)
			return "linux.resources.blockIO.throttleReadIOPSDevice";
		if (r->n_throttle_write_iops)
			return "linux.resources.blockIO.throttleWriteIOPSDevice";
		return NULL;
	case KAP_CG_HUGETLB:
		return r->n_hugepage_limits ? "linux.resources.hugepageLimits" : NULL;
	case KAP_CG_DEVICES:
		return r->n_devices ? "linux.resources.devices" : NULL;
	case KAP_CG_NET_CLS:
		/* runc: classID 0 is no class. */
		return r->has_net_classid && r->net_classid ? "linux.resources.network.classID"
							    : NULL;
	case KAP_CG_NET_PRIO:
		return r->n_net_priorities ? "linux.resources.network.priorities" : NULL;
	case KAP_CG_RDMA:
		return r->n_rdma ? "linux.resources.rdma" : NULL;
	case KAP_CG_CPUACCT:
	case KAP_CG_FREEZER:
	case KAP_CG__COUNT:
		break;
	}
	return NULL;
}

/* ---- file helpers ---- */

static int open_file(const struct kap_cg_fd *d, const char *file, const char *what,
		     struct kapsel_error **err)
{
	int fd = openat(d->fd, file, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		return fd;
	if (errno == ENOENT && what)
		return kap_error_plain(err, ENOENT, "%s: %s/%s not available", what, d->dir, file);
	return kap_error(err, errno, "open %s/%s", d->dir, file);
}

int kap_cg_lines_open(const struct kap_cg_fd *d, const char *file, const char *what,
		      struct kap_cg_lines *out, struct kapsel_error **err)
{
	int fd = open_file(d, file, what, err);
	if (fd < 0)
		return fd;
	out->fd = fd;
	out->file = file;
	return 0;
}

int kap_cg_lines_write(const struct kap_cg_fd *d, struct kap_cg_lines *l, const char *val,
		       struct kapsel_error **err)
{
	/* One write(2) per value: cgroup files parse each write as one command. */
	ssize_t w = write(l->fd, val, strlen(val));
	if (w < 0)
		return kap_error(err, errno, "write %s to %s/%s", val, d->dir, l->file);
	return 0;
}

int kap_cg_write(const struct kap_cg_fd *d, const char *file, const char *what, const char *val,
		 struct kapsel_error **err)
{
	cleanup_cg_lines struct kap_cg_lines l = {.fd = -EBADF};
	int r = kap_cg_lines_open(d, file, what, &l, err);
	if (r < 0)
		return r;
	return kap_cg_lines_write(d, &l, val, err);
}

int kap_cg_writef(const struct kap_cg_fd *d, const char *file, const char *what,
		  struct kapsel_error **err, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return kap_error_plain(err, EINVAL, "%s/%s: value too long", d->dir, file);
	return kap_cg_write(d, file, what, buf, err);
}

int kap_cg_read(const struct kap_cg_fd *d, const char *file, char *buf, size_t size,
		struct kapsel_error **err)
{
	cleanup_close int fd = openat(d->fd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		return kap_error(err, errno, "open %s/%s", d->dir, file);
	}
	size_t n = 0;
	while (n + 1 < size) {
		ssize_t r = read(fd, buf + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kap_error(err, errno, "read %s/%s", d->dir, file);
		if (r == 0)
			break;
		n += (size_t)r;
	}
	while (n && buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	return (int)n;
}

int kap_cg_read_u64(const struct kap_cg_fd *d, const char *file, uint64_t *out,
		    struct kapsel_error **err)
{
	char buf[KAP_CG_NUM];
	int r = kap_cg_read(d, file, buf, sizeof(buf), err);
	if (r < 0)
		return r;
	if (!strcmp(buf, "max")) {
		*out = UINT64_MAX;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || end == buf || *end)
		return kap_error_plain(err, EINVAL, "%s/%s: not a number: '%s'", d->dir, file, buf);
	*out = v;
	return 0;
}

bool kap_cg_exists(const struct kap_cg_fd *d, const char *file)
{
	return faccessat(d->fd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

bool kap_cg_keyed(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, key, klen) && p[klen] == ' ') {
			*out = strtoull(p + klen + 1, NULL, 10);
			return true;
		}
	}
	return false;
}

struct kap_json *kap_cg_json_u64(uint64_t v)
{
	if (v <= INT64_MAX)
		return kap_json_new_int64((int64_t)v);
	/* kap_json has no uint64 writer; json-c parses values above INT64_MAX as uint64. */
	char buf[KAP_CG_NUM];
	snprintf(buf, sizeof(buf), "[%llu]", (unsigned long long)v);
	struct kap_json *arr = NULL;
	struct kapsel_error *e = NULL;
	if (kap_json_parse(buf, strlen(buf), "number", &arr, &e) < 0) {
		kapsel_error_free(e);
		return kap_json_new_int64(INT64_MAX);
	}
	struct kap_json *j = kap_json_get_ref(kap_json_array_at(arr, 0));
	kap_json_put(arr);
	return j;
}

/* ---- layout ---- */

void kap_cg_layout_clear(struct kap_cg_layout *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->h[i].mnt);
		free(l->h[i].mnt_root);
		free(l->h[i].controllers);
	}
	free(l->h);
	l->h = NULL;
	l->n = 0;
}

static int layout_add(struct kap_cg_layout *l, const char *mnt, const char *mnt_root,
		      const char *controllers, bool v2)
{
	struct kap_cg_hier *h = NULL;
	/* A later mount on the same mount point hides the earlier one. */
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->h[i].mnt, mnt))
			h = &l->h[i];
	if (!h) {
		if (l->n == MAX_HIERARCHIES)
			return -E2BIG;
		struct kap_cg_hier *nh = realloc(l->h, (l->n + 1) * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		l->h = nh;
		h = &l->h[l->n++];
		*h = (struct kap_cg_hier){0};
	} else {
		free(h->mnt);
		free(h->mnt_root);
		free(h->controllers);
	}
	h->mnt = strdup(mnt);
	h->mnt_root = strdup(mnt_root);
	h->controllers = strdup(controllers);
	h->v2 = v2;
	h->mask = v2 ? 0 : kap_cg_ctrl_mask(controllers);
	if (!h->mnt || !h->mnt_root || !h->controllers)
		return -ENOMEM;
	return 0;
}

/* Undo mountinfo's octal escapes (\040 for space, ...) in place. */
static void unescape(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

/* The controllers of a v1 mount from its super options: everything but the mount options. */
static void v1_controllers(const char *superopts, char *out, size_t size)
{
	static const char *const not_ctrl[] = {
	    "rw",	   "ro",  "noprefix",	    "xattr",
	    "none",	   "all", "clone_children", "cpuset_v2_mode",
	    "favordynmods"};
	cleanup_free char *copy = strdup(superopts);
	out[0] = '\0';
	if (!copy)
		return;
	char *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		bool skip = !strncmp(t, "release_agent=", 14);
		for (size_t i = 0; i < KAP_ARRAY_SIZE(not_ctrl); i++)
			skip = skip || !strcmp(t, not_ctrl[i]);
		if (skip)
			continue;
		if (out[0])
			strncat(out, ",", size - strlen(out) - 1);
		strncat(out, t, size - strlen(out) - 1);
	}
}

/* Is path a direct child of root ("/sys/fs/cgroup/memory" of "/sys/fs/cgroup")? */
static bool child_of(const char *path, const char *root)
{
	size_t n = strlen(root);
	if (strncmp(path, root, n) || path[n] != '/' || !path[n + 1])
		return false;
	return !strchr(path + n + 1, '/');
}

static int layout_mountinfo(const char *root, struct kap_cg_layout *l, struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	int r = kap_fs_read_file(AT_FDCWD, "/proc/self/mountinfo", 64 << 20, &buf, NULL, err);
	if (r < 0)
		return r;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
		 */
		char *f[6], *fs[3], *lsave = NULL;
		size_t n = 0, nfs = 0;
		bool sep = false;
		for (char *t = strtok_r(line, " ", &lsave); t; t = strtok_r(NULL, " ", &lsave)) {
			if (!sep && !strcmp(t, "-"))
				sep = true;
			else if (!sep && n < 6)
				f[n++] = t;
			else if (sep && nfs < 3)
				fs[nfs++] = t;
		}
		if (n < 6 || nfs < 3)
			continue;
		bool v2 = !strcmp(fs[0], "cgroup2");
		if (!v2 && strcmp(fs[0], "cgroup"))
			continue;
		unescape(f[4]);
		unescape(f[3]);
		if (strcmp(f[4], root) && !child_of(f[4], root))
			continue;
		char ctrls[256] = "";
		if (!v2)
			v1_controllers(fs[2], ctrls, sizeof(ctrls));
		r = layout_add(l, f[4], f[3], ctrls, v2);
		if (r < 0)
			return kap_error(err, -r, "cgroup hierarchies under %s", root);
	}
	return 0;
}

static int cmp_hier(const void *a, const void *b)
{
	return strcmp(((const struct kap_cg_hier *)a)->mnt, ((const struct kap_cg_hier *)b)->mnt);
}

/* A tree nothing is mounted on (unit tests): recognise hierarchies by their core files. */
static int layout_scan(const char *root, struct kap_cg_layout *l, struct kapsel_error **err)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(AT_FDCWD, root, 0);
	if (!d)
		return kap_error(err, errno, "open %s", root);
	int fd = dirfd(d);
	if (faccessat(fd, "cgroup.controllers", F_OK, 0) == 0)
		return layout_add(l, root, "/", "", true) < 0 ? kap_error(err, ENOMEM, "%s", root)
							      : 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		char probe[PATH_MAX], mnt[PATH_MAX];
		snprintf(probe, sizeof(probe), "%s/cgroup.controllers", de->d_name);
		bool v2 = faccessat(fd, probe, F_OK, 0) == 0;
		snprintf(probe, sizeof(probe), "%s/cgroup.procs", de->d_name);
		if (!v2 && faccessat(fd, probe, F_OK, 0) < 0)
			continue;
		snprintf(mnt, sizeof(mnt), "%s/%s", root, de->d_name);
		if (layout_add(l, mnt, "/", v2 ? "" : de->d_name, v2) < 0)
			return kap_error(err, ENOMEM, "%s", root);
	}
	if (l->n)
		qsort(l->h, l->n, sizeof(*l->h), cmp_hier);
	return 0;
}

int kap_cg_layout_detect(const char *root, struct kap_cg_layout *l, struct kapsel_error **err)
{
	*l = (struct kap_cg_layout){0};
	struct statfs sfs;
	if (statfs(root, &sfs) < 0)
		return kap_error(err, errno, "statfs %s", root);
	int r;
	if ((unsigned long)sfs.f_type == CGROUP2_SUPER_MAGIC) {
		r = layout_add(l, root, "/", "", true);
		if (r < 0)
			return kap_error(err, -r, "%s", root);
		l->mode = KAP_CGROUP_UNIFIED;
		return 0;
	}
	r = layout_mountinfo(root, l, err);
	if (r == 0 && l->n == 0)
		r = layout_scan(root, l, err);
	if (r < 0) {
		kap_cg_layout_clear(l);
		return r;
	}
	size_t n1 = 0, n2 = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (!l->h[i].v2)
			n1++;
		else if (!strcmp(l->h[i].mnt, root))
			l->mode = KAP_CGROUP_UNIFIED;
		else
			n2++;
	}
	if (l->n == 0 || n2 > 1) {
		kap_cg_layout_clear(l);
		return kap_error_plain(err, ENOENT, "%s: %s", root,
				       n2 > 1 ? "several cgroup2 mounts"
					      : "no cgroup hierarchy mounted");
	}
	if (l->mode != KAP_CGROUP_UNIFIED)
		l->mode = n2 ? KAP_CGROUP_HYBRID : KAP_CGROUP_LEGACY;
	if (l->mode == KAP_CGROUP_UNIFIED) {
		/* v1 mounts below a cgroup2 root are not kapsel's business. */
		size_t k = 0;
		for (size_t i = 0; i < l->n; i++) {
			if (l->h[i].v2 && !strcmp(l->h[i].mnt, root)) {
				struct kap_cg_hier keep = l->h[i];
				l->h[i] = l->h[0];
				l->h[0] = keep;
				k = 1;
			}
		}
		for (size_t i = k; i < l->n; i++) {
			free(l->h[i].mnt);
			free(l->h[i].mnt_root);
			free(l->h[i].controllers);
		}
		l->n = k;
	} else {
		/* The cgroup2 part last: v1 controllers first, as runc orders them. */
		for (size_t i = 0; i + 1 < l->n; i++) {
			if (l->h[i].v2) {
				struct kap_cg_hier t = l->h[i];
				memmove(&l->h[i], &l->h[i + 1], (l->n - i - 1) * sizeof(t));
				l->h[l->n - 1] = t;
				break;
			}
		}
	}
	return 0;
}

int kap_cgroup_detect(const char *root, enum kap_cgroup_mode *mode, struct kapsel_error **err)
{
	struct kap_cg_layout l;
	int r = kap_cg_layout_detect(root, &l, err);
	if (r < 0)
		return r;
	*mode = l.mode;
	kap_cg_layout_clear(&l);
	return 0;
}

/* ---- paths ---- */

/*
 * Normalise a cgroup path to "/a/b": empty and "." components dropped, ".." rejected (it would
 * leave the hierarchy or reach cgroups kapsel must not touch).
 */
static int normalize(const char *in, const char *what, char **out, struct kapsel_error **err)
{
	size_t len = strlen(in);
	cleanup_free char *o = malloc(len + 2);
	if (!o)
		return kap_error(err, ENOMEM, "%s", what);
	size_t n = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		size_t c = strcspn(p, "/");
		if (c == 0)
			break;
		if (c == 2 && p[0] == '.' && p[1] == '.')
			return kap_error_plain(err, EINVAL, "%s: '%s': '..' is not allowed", what,
					       in);
		if (!(c == 1 && p[0] == '.')) {
			o[n++] = '/';
			memcpy(o + n, p, c);
			n += c;
		}
		p += c;
	}
	o[n] = '\0';
	*out = steal_ptr(o);
	return 0;
}

static bool same_set(const char *a, const char *b)
{
	size_t na = 0, nb = 0;
	for (const char *p = a; *p; p += strcspn(p, ","), p += *p == ',')
		na++;
	for (const char *p = b; *p; p += strcspn(p, ","), p += *p == ',') {
		size_t len = strcspn(p, ",");
		bool found = false;
		for (const char *q = a; *q && !found; q += strcspn(q, ","), q += *q == ',')
			found = strcspn(q, ",") == len && !strncmp(p, q, len);
		if (!found)
			return false;
		nb++;
	}
	return na == nb;
}

/* The caller's own cgroup in hierarchy h, relative to what h's mount shows. */
static int own_cgroup(const char *proc_cgroup, const struct kap_cg_hier *h, char **out,
		      struct kapsel_error **err)
{
	for (const char *line = proc_cgroup; line && *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		cleanup_free char *copy = strndup(line, len);
		line = nl ? nl + 1 : NULL;
		if (!copy)
			return kap_error(err, ENOMEM, "/proc/self/cgroup");
		/* "ID:CONTROLLERS:PATH"; cgroup2 is "0::PATH". */
		char *c1 = strchr(copy, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		const char *ctrls = c1 + 1, *path = c2 + 1;
		if (h->v2 ? (strcmp(copy, "0:") != 0 || *ctrls) : !same_set(h->controllers, ctrls))
			continue;
		size_t rl = strlen(h->mnt_root);
		if (strcmp(h->mnt_root, "/") && !strncmp(path, h->mnt_root, rl) &&
		    (path[rl] == '/' || !path[rl]))
			path += rl;
		return normalize(path, "/proc/self/cgroup", out, err);
	}
	return kap_error_plain(err, ENOENT,
			       "%s: this process's cgroup not found in /proc/self/cgroup", h->mnt);
}

static void dirs_free(struct kap_cgroup_dir *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].path);
		free(d[i].controllers);
	}
	free(d);
}

void kap_cgroup_free(struct kap_cgroup *cg)
{
	if (!cg)
		return;
	free(cg->root);
	free(cg->path);
	for (size_t i = 0; i < cg->n_created; i++)
		free(cg->created[i]);
	free(cg->created);
	dirs_free(cg->dirs, cg->n_dirs);
	free(cg);
}

/* Fill cg->dirs (and cg->path) from the layout for the given cgroupsPath. */
static int resolve_dirs(struct kap_cgroup *cg, const struct kap_cg_layout *l,
			const char *cgroups_path, const char *id, struct kapsel_error **err)
{
	cleanup_free char *norm = NULL, *proc_cgroup = NULL;
	bool relative = cgroups_path && *cgroups_path && cgroups_path[0] != '/';
	int r;
	if (cgroups_path && *cgroups_path) {
		r = normalize(cgroups_path, "linux.cgroupsPath", &norm, err);
		if (r < 0)
			return r;
		if (!*norm)
			return kap_error_plain(err, EINVAL,
					       "linux.cgroupsPath: '%s': the root cgroup is not "
					       "allowed",
					       cgroups_path);
	} else {
		if (!id || !*id || strchr(id, '/') || !strcmp(id, ".") || !strcmp(id, ".."))
			return kap_error_plain(err, EINVAL, "invalid container id '%s'",
					       id ? id : "");
		if (asprintf(&norm, "/kapsel/%s", id) < 0)
			return kap_error(err, ENOMEM, "cgroup path");
	}
	if (relative) {
		r = kap_fs_read_file(AT_FDCWD, "/proc/self/cgroup", 1 << 20, &proc_cgroup, NULL,
				     err);
		if (r < 0)
			return r;
	}
	cg->dirs = calloc(l->n, sizeof(*cg->dirs));
	if (!cg->dirs)
		return kap_error(err, ENOMEM, "cgroup dirs");
	for (size_t i = 0; i < l->n; i++) {
		const struct kap_cg_hier *h = &l->h[i];
		struct kap_cgroup_dir *d = &cg->dirs[cg->n_dirs++];
		cleanup_free char *own = NULL;
		if (relative) {
			r = own_cgroup(proc_cgroup, h, &own, err);
			if (r < 0)
				return r;
		}
		const char *mnt = strcmp(h->mnt, "/") ? h->mnt : "";
		if (asprintf(&d->path, "%s%s%s", mnt, own ? own : "", norm) < 0)
			d->path = NULL;
		d->controllers = strdup(h->controllers);
		d->v2 = h->v2;
		d->mask = h->mask;
		if (!d->path || !d->controllers)
			return kap_error(err, ENOMEM, "cgroup dirs");
		/* cg->path: the cgroup2 one when there is one, else the first hierarchy's. */
		if (!cg->path || h->v2) {
			free(cg->path);
			cg->path = strdup(d->path + strlen(mnt));
			if (!cg->path)
				return kap_error(err, ENOMEM, "cgroup path");
		}
	}
	return 0;
}

/* ---- create ---- */

static int add_created(struct kap_cgroup *cg, const char *path)
{
	char **n = realloc(cg->created, (cg->n_created + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	cg->created = n;
	n[cg->n_created] = strdup(path);
	if (!n[cg->n_created])
		return -ENOMEM;
	cg->n_created++;
	return 0;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* rmdir every directory below dirfd, depth first (cgroups a container created in its own). */
static void rmdir_children(int dirfd, const char *dir)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(dirfd, ".", 0);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int cfd =
		    openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			continue;
		rmdir_children(cfd, dir);
		close(cfd);
		if (unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			kap_debug("rmdir %s/.../%s: %m", dir, de->d_name);
	}
}

static bool is_leaf(const struct kap_cgroup *cg, const char *path)
{
	for (size_t i = 0; i < cg->n_dirs; i++)
		if (!strcmp(cg->dirs[i].path, path))
			return true;
	return false;
}

static int destroy_within(const struct kap_cgroup *cg, long long wait_ns, struct kapsel_error **err)
{
	long long deadline = now_ns() + wait_ns;
	int ret = 0;
	for (size_t i = cg->n_created; i-- > 0;) {
		const char *p = cg->created[i];
		bool walked = !is_leaf(cg, p);
		long ms = 1;
		for (;;) {
			if (rmdir(p) == 0 || errno == ENOENT)
				break;
			if ((errno == EBUSY || errno == ENOTEMPTY) && !walked) {
				/* Child cgroups the container made in its own leaf go first; only
				 * looked for when the plain rmdir fails, the common case is none.
				 */
				cleanup_close int fd =
				    open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (fd >= 0)
					rmdir_children(fd, p);
				walked = true;
				continue;
			}
			if ((errno == EBUSY || errno == ENOTEMPTY) && !is_leaf(cg, p))
				/* A parent this container created (default /kapsel) that others
				 * still use: it goes with the last of them, and busy is no error.
				 */
				break;
			if (errno == EBUSY && now_ns() < deadline) {
				/* Tasks still exiting (cgroup-v2.rst: "Removing cgroups"). */
				sleep_ms(ms);
				ms = ms < 32 ? ms * 2 : ms;
				continue;
			}
			int e = kap_error(err, errno, "rmdir %s", p);
			if (!ret)
				ret = e;
			break;
		}
	}
	return ret;
}

int kap_cgroup_destroy(const struct kap_cgroup *cg, struct kapsel_error **err)
{
	return destroy_within(cg, DESTROY_WAIT_NS, err);
}

static bool has_procs(int fd)
{
	struct kap_cg_fd d = {fd, ""};
	char buf[2];
	return kap_cg_read(&d, "cgroup.procs", buf, sizeof(buf), NULL) > 0;
}

/* The open leaf directories of one create/update, as cg->dirs. */
struct open_dirs {
	int *fds;
	size_t n;
};

static void open_dirs_clear(struct open_dirs *o)
{
	for (size_t i = 0; i < o->n; i++)
		if (o->fds[i] >= 0)
			close(o->fds[i]);
	free(o->fds);
	*o = (struct open_dirs){0};
}

static int open_leaves(const struct kap_cgroup *cg, struct open_dirs *o, struct kapsel_error **err)
{
	o->fds = malloc(cg->n_dirs * sizeof(int) + 1);
	if (!o->fds)
		return kap_error(err, ENOMEM, "cgroup");
	for (size_t i = 0; i < cg->n_dirs; i++) {
		o->fds[o->n] =
		    open(cg->dirs[i].path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (o->fds[o->n] < 0)
			return kap_error(err, errno, "open %s", cg->dirs[i].path);
		o->n++;
	}
	return 0;
}

/*
 * mkdir the path of dir i component by component below its mount point. *again is set, with
 * nothing reported, when a parent vanished under the walk (another container's delete removed
 * a shared parent such as /kapsel between our EEXIST and our next mkdirat).
 */
/* Whether a v1 cpuset directory has no cpus yet (made a moment ago, not filled in). */
static bool cpuset_unset(int fd, const char *dir)
{
	struct kap_cg_fd d = {fd, dir};
	char buf[16];
	return kap_cg_read(&d, "cpuset.cpus", buf, sizeof(buf), NULL) == 0;
}

static int make_dir_once(struct kap_cgroup *cg, size_t i, const char *mnt, struct open_dirs *o,
			 bool *again, struct kapsel_error **err)
{
	const struct kap_cgroup_dir *d = &cg->dirs[i];
	cleanup_close int cur = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return kap_error(err, errno, "open %s", mnt);
	size_t mlen = strcmp(mnt, "/") ? strlen(mnt) : 0;
	cleanup_free char *built = strdup(d->path);
	if (!built)
		return kap_error(err, ENOMEM, "mkdir %s", d->path);
	bool created = false, have_avail = false;
	char avail[512] = "";
	const char *p = d->path + mlen;
	while (*p == '/') {
		p++;
		size_t len = strcspn(p, "/");
		char comp[NAME_MAX + 1];
		if (len > NAME_MAX)
			return kap_error_plain(err, ENAMETOOLONG, "%s: name too long", d->path);
		memcpy(comp, p, len);
		comp[len] = '\0';
		p += len;
		built[p - d->path] = '\0';
		created = mkdirat(cur, comp, 0755) == 0;
		if (!created && errno == ENOENT) {
			/* cur itself was removed: a dead cgroup directory takes no children. */
			*again = true;
			return -ENOENT;
		}
		if (!created && errno != EEXIST)
			return kap_error(err, errno, "mkdir %s", built);
		int nfd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			int e = errno;
			if (e == ENOENT) {
				/* Removed between our mkdirat and the open. */
				*again = true;
				return -ENOENT;
			}
			if (created)
				unlinkat(cur, comp, AT_REMOVEDIR);
			return kap_error(err, e, "open %s", built);
		}
		if (created && add_created(cg, built) < 0) {
			close(nfd);
			unlinkat(cur, comp, AT_REMOVEDIR);
			return kap_error(err, ENOMEM, "mkdir %s", built);
		}
		if ((d->mask & KAP_CG_BIT(KAP_CG_CPUSET)) &&
		    (created || cpuset_unset(nfd, built))) {
			/* A new v1 cpuset has empty cpus/mems and refuses tasks until they are set
			 * (cgroup-v1/cpusets.rst 2.1). A parent that a concurrent create made an
			 * instant ago may still be empty too: fill it, or our child copies nothing
			 * and the join fails with ENOSPC. */
			cleanup_free char *cdir = strdup(built);
			char *slash = strrchr(built, '/');
			*slash = '\0';
			struct kap_cg_fd pd = {cur, built}, cd = {nfd, cdir ? cdir : built};
			int r = kap_cg_v1_cpuset_copy(&pd, &cd, err);
			*slash = '/';
			if (r < 0) {
				close(nfd);
				return r;
			}
		}
		if (created && d->v2 && *p) {
			/* A directory above the leaf: pass on all its parent gives it. */
			struct kap_cg_fd cd = {nfd, cg->created[cg->n_created - 1]};
			int r = 0;
			if (!have_avail) {
				r = kap_cg_read(&cd, "cgroup.controllers", avail, sizeof(avail),
						err);
				if (r == -ENOENT)
					r = kap_error(err, ENOENT, "read %s/cgroup.controllers",
						      cd.dir);
				have_avail = true;
			}
			if (r >= 0)
				r = kap_cg_v2_subtree_enable(&cd, avail, err);
			if (r < 0) {
				close(nfd);
				return r;
			}
		}
		close(cur);
		cur = nfd;
		built[p - d->path] = *p;
	}
	if (!created && has_procs(cur))
		return kap_error_plain(err, EEXIST, "cgroup %s already in use", d->path);
	o->fds[o->n++] = steal_fd(cur);
	return 0;
}

/* Walks retried after a parent vanished; each retry needs another concurrent removal. */
#define MAKE_DIR_TRIES 64

static int make_dir(struct kap_cgroup *cg, size_t i, const char *mnt, struct open_dirs *o,
		    struct kapsel_error **err)
{
	for (int t = 0; t < MAKE_DIR_TRIES; t++) {
		size_t mark = cg->n_created;
		bool again = false;
		int r = make_dir_once(cg, i, mnt, o, &again, err);
		if (!again)
			return r;
		/*
		 * What this walk made and someone removed since is no longer ours to remove on
		 * delete (the name may be another container's by then): forget it.
		 */
		size_t k = mark;
		for (size_t j = mark; j < cg->n_created; j++) {
			if (access(cg->created[j], F_OK) == 0)
				cg->created[k++] = cg->created[j];
			else
				free(cg->created[j]);
		}
		cg->n_created = k;
	}
	return kap_error_plain(err, EAGAIN, "mkdir %s: its parents kept being removed",
			       cg->dirs[i].path);
}

static const struct kap_cgroup_dir *find_v2(const struct kap_cgroup *cg, size_t *idx)
{
	for (size_t i = 0; i < cg->n_dirs; i++) {
		if (cg->dirs[i].v2) {
			if (idx)
				*idx = i;
			return &cg->dirs[i];
		}
	}
	return NULL;
}

static bool v1_has(const struct kap_cgroup *cg, enum kap_cg_ctrl c)
{
	for (size_t i = 0; i < cg->n_dirs; i++)
		if (!cg->dirs[i].v2 && (cg->dirs[i].mask & KAP_CG_BIT(c)))
			return true;
	return false;
}

/*
 * The deepest directory on the way to the cgroup2 leaf that kapsel did not create: the one whose
 * cgroup.subtree_control decides what the container gets.
 */
static void delegating_dir(const struct kap_cgroup *cg, const char *leaf, char *buf, size_t size)
{
	snprintf(buf, size, "%s", leaf);
	for (size_t i = 0; i < cg->n_created; i++) {
		size_t n = strlen(cg->created[i]);
		if (!strncmp(leaf, cg->created[i], n) && (leaf[n] == '/' || !leaf[n])) {
			snprintf(buf, size, "%s", cg->created[i]);
			break;
		}
	}
	char *slash = strrchr(buf, '/');
	if (slash && slash != buf)
		*slash = '\0';
	else if (slash)
		slash[1] = '\0';
}

/* Apply res to all hierarchies (create and update). */
static int apply(const struct kap_cgroup *cg, const struct open_dirs *o,
		 const struct kap_resources *res, struct kapsel_error **err)
{
	if (!res)
		return 0;
	size_t v2i = 0;
	const struct kap_cgroup_dir *v2 = find_v2(cg, &v2i);
	struct kap_resources sub = {0};
	const struct kap_resources *v2res = res;
	int r;
	if (cg->mode != KAP_CGROUP_UNIFIED) {
		unsigned skip = 0;
		if (!v1_has(cg, KAP_CG_HUGETLB) && v2)
			skip |= KAP_CG_BIT(KAP_CG_HUGETLB);
		if (!v1_has(cg, KAP_CG_RDMA) && v2)
			skip |= KAP_CG_BIT(KAP_CG_RDMA);
		if (res->n_unified && !v2)
			return kap_error_plain(
			    err, EOPNOTSUPP, "linux.resources.unified: needs a cgroup2 hierarchy");
		r = kap_cg_v1_apply(cg->dirs, o->fds, cg->n_dirs, res, skip, err);
		if (r < 0 || !v2)
			return r;
		/* Hybrid: only hugetlb and rdma (without a v1 mount of theirs) and unified go to
		 * cgroup2. */
		if (skip & KAP_CG_BIT(KAP_CG_HUGETLB)) {
			sub.hugepage_limits = res->hugepage_limits;
			sub.n_hugepage_limits = res->n_hugepage_limits;
		}
		if (skip & KAP_CG_BIT(KAP_CG_RDMA)) {
			sub.rdma = res->rdma;
			sub.n_rdma = res->n_rdma;
		}
		sub.unified_keys = res->unified_keys;
		sub.unified_values = res->unified_values;
		sub.n_unified = res->n_unified;
		v2res = &sub;
	}
	struct kap_cg_fd leaf = {o->fds[v2i], v2->path};
	char deleg[PATH_MAX];
	delegating_dir(cg, v2->path, deleg, sizeof(deleg));
	r = kap_cg_v2_check(&leaf, deleg, v2res, err);
	if (r < 0)
		return r;
	return kap_cg_v2_apply(&leaf, v2res, err);
}

static int enter_fds(const struct kap_cgroup *cg, const int *fds, pid_t pid,
		     struct kapsel_error **err)
{
	char buf[KAP_CG_NUM];
	snprintf(buf, sizeof(buf), "%d", (int)pid);
	for (size_t i = 0; i < cg->n_dirs; i++) {
		struct kap_cg_fd d = {fds[i], cg->dirs[i].path};
		int r = kap_cg_write(&d, "cgroup.procs", NULL, buf, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_cgroup_create(const char *root, const char *cgroups_path, const char *id,
		      const struct kap_resources *res, pid_t pid, struct kap_cgroup **out,
		      struct kapsel_error **err)
{
	*out = NULL;
	struct kap_cg_layout l;
	int r = kap_cg_layout_detect(root, &l, err);
	if (r < 0)
		return r;
	cleanup_cgroup struct kap_cgroup *cg = calloc(1, sizeof(*cg));
	struct open_dirs o = {0};
	if (!cg || !(cg->root = strdup(root))) {
		r = kap_error(err, ENOMEM, "cgroup");
		goto out;
	}
	cg->mode = l.mode;
	r = resolve_dirs(cg, &l, cgroups_path, id, err);
	if (r < 0)
		goto out;
	o.fds = malloc(cg->n_dirs * sizeof(int) + 1);
	if (!o.fds) {
		r = kap_error(err, ENOMEM, "cgroup");
		goto out;
	}
	for (size_t i = 0; i < cg->n_dirs && r >= 0; i++)
		r = make_dir(cg, i, l.h[i].mnt, &o, err);
	if (r >= 0)
		r = apply(cg, &o, res, err);
	if (r >= 0 && pid > 0)
		r = enter_fds(cg, o.fds, pid, err);
	if (r >= 0) {
		/* Made but not yet in any state file: what delete --force must find alone. */
		kap_fault_point("cgroup:made");
		*out = steal_ptr(cg);
		goto out;
	}
	/* Roll back: only what this call made; tasks may have been moved in already. */
	destroy_within(cg, DESTROY_WAIT_NS / 10, NULL);
out:
	open_dirs_clear(&o);
	kap_cg_layout_clear(&l);
	return r < 0 ? r : 0;
}

int kap_cgroup_remove_orphan(const char *root, const char *cgroups_path, const char *id,
			     struct kapsel_error **err)
{
	struct kap_cg_layout l;
	int r = kap_cg_layout_detect(root, &l, err);
	if (r < 0)
		return r;
	cleanup_cgroup struct kap_cgroup *cg = calloc(1, sizeof(*cg));
	if (!cg) {
		kap_cg_layout_clear(&l);
		return kap_error(err, ENOMEM, "cgroup");
	}
	r = resolve_dirs(cg, &l, cgroups_path, id, err);
	kap_cg_layout_clear(&l);
	if (r < 0)
		return r;
	for (size_t i = 0; i < cg->n_dirs; i++) {
		const char *p = cg->dirs[i].path;
		/*
		 * rmdir removes only an empty cgroup: one with tasks or children is someone
		 * else's (no process of this container existed before its state was written).
		 */
		if (rmdir(p) == 0)
			kap_debug("removed orphaned cgroup %s", p);
		else if (errno == EBUSY || errno == ENOTEMPTY)
			kap_warn("cgroup %s is in use: left alone", p);
		else if (errno != ENOENT)
			return kap_error(err, errno, "rmdir %s", p);
	}
	return 0;
}

int kap_cgroup_enter(const struct kap_cgroup *cg, pid_t pid, struct kapsel_error **err)
{
	struct open_dirs o = {0};
	int r = open_leaves(cg, &o, err);
	if (r >= 0)
		r = enter_fds(cg, o.fds, pid, err);
	open_dirs_clear(&o);
	return r;
}

int kap_cgroup_join_fds(const struct kap_cgroup *cg, struct kap_cgroup_join *j,
			struct kapsel_error **err)
{
	j->n = 0;
	j->v2_dir = -EBADF;
	for (size_t i = 0; i < cg->n_dirs; i++) {
		const struct kap_cgroup_dir *d = &cg->dirs[i];
		char path[4200];
		int fd;
		if (d->v2) {
			fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd < 0)
				goto fail;
			j->v2_dir = fd;
			continue;
		}
		if (j->n == KAP_ARRAY_SIZE(j->tasks)) {
			errno = E2BIG;
			goto fail;
		}
		snprintf(path, sizeof(path), "%s/tasks", d->path);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			goto fail;
		j->tasks[j->n++] = fd;
		continue;
	fail:
		kap_error(err, errno, "open cgroup %s", d->path);
		kap_cgroup_join_close(j);
		return -(*err ? (*err)->code : EIO);
	}
	return 0;
}

int kap_cgroup_join_self(const struct kap_cgroup_join *j)
{
	for (size_t i = 0; i < j->n; i++)
		if (write(j->tasks[i], "0", 1) != 1)
			return -errno;
	return 0;
}

void kap_cgroup_join_close(struct kap_cgroup_join *j)
{
	for (size_t i = 0; i < j->n; i++)
		close(j->tasks[i]);
	j->n = 0;
	if (j->v2_dir >= 0)
		close(j->v2_dir);
	j->v2_dir = -EBADF;
}

int kap_cgroup_update(const struct kap_cgroup *cg, const struct kap_resources *res,
		      struct kapsel_error **err)
{
	struct open_dirs o = {0};
	int r = open_leaves(cg, &o, err);
	if (r >= 0)
		r = apply(cg, &o, res, err);
	open_dirs_clear(&o);
	return r;
}

const char *kap_cgroup_unified_dir(const struct kap_cgroup *cg)
{
	const struct kap_cgroup_dir *d = find_v2(cg, NULL);
	return d ? d->path : NULL;
}

/* ---- freezer, pids, stats ---- */

static const struct kap_cgroup_dir *find_v1(const struct kap_cgroup *cg, enum kap_cg_ctrl c)
{
	for (size_t i = 0; i < cg->n_dirs; i++)
		if (!cg->dirs[i].v2 && (cg->dirs[i].mask & KAP_CG_BIT(c)))
			return &cg->dirs[i];
	return NULL;
}

/* The freezer: v1 freezer when mounted (runc in hybrid too), else cgroup2's cgroup.freeze. */
static int freezer_dir(const struct kap_cgroup *cg, const struct kap_cgroup_dir **dir,
		       struct kapsel_error **err)
{
	*dir = cg->mode == KAP_CGROUP_UNIFIED ? NULL : find_v1(cg, KAP_CG_FREEZER);
	if (!*dir)
		*dir = find_v2(cg, NULL);
	if (!*dir)
		return kap_error_plain(err, ENOENT, "%s: freezer controller not available",
				       cg->path);
	return 0;
}

static int open_dir(const char *path, struct kapsel_error **err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open %s", path);
	return fd;
}

int kap_cgroup_freeze(const struct kap_cgroup *cg, bool freeze, struct kapsel_error **err)
{
	const struct kap_cgroup_dir *dir;
	int r = freezer_dir(cg, &dir, err);
	if (r < 0)
		return r;
	cleanup_close int fd = open_dir(dir->path, err);
	if (fd < 0)
		return fd;
	struct kap_cg_fd d = {fd, dir->path};
	return dir->v2 ? kap_cg_v2_freeze(&d, freeze, err) : kap_cg_v1_freeze(&d, freeze, err);
}

int kap_cgroup_is_frozen(const struct kap_cgroup *cg, bool *frozen, struct kapsel_error **err)
{
	const struct kap_cgroup_dir *dir;
	int r = freezer_dir(cg, &dir, err);
	if (r < 0)
		return r;
	cleanup_close int fd = open_dir(dir->path, err);
	if (fd < 0)
		return fd;
	struct kap_cg_fd d = {fd, dir->path};
	return dir->v2 ? kap_cg_v2_is_frozen(&d, frozen, err)
		       : kap_cg_v1_is_frozen(&d, frozen, err);
}

struct pid_list {
	pid_t *v;
	size_t n, cap;
};

static int collect_pids(int dfd, const char *dir, struct pid_list *pl, int depth,
			struct kapsel_error **err)
{
	if (depth > 64)
		return kap_error_plain(err, ELOOP, "%s: cgroup tree too deep", dir);
	cleanup_free char *buf = NULL;
	int r = kap_fs_read_file(dfd, "cgroup.procs", 64 << 20, &buf, NULL, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", dir);
	for (char *p = buf; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pl->n == pl->cap) {
			size_t cap = pl->cap ? pl->cap * 2 : 16;
			pid_t *nv = realloc(pl->v, cap * sizeof(*nv));
			if (!nv)
				return kap_error(err, ENOMEM, "%s", dir);
			pl->v = nv;
			pl->cap = cap;
		}
		pl->v[pl->n++] = (pid_t)v;
		p = end;
		while (*p == '\n')
			p++;
	}
	cleanup_dir DIR *d = kap_fs_opendir_at(dfd, ".", 0);
	if (!d)
		return kap_error(err, errno, "open %s", dir);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cleanup_close int cfd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			if (errno == ENOENT)
				continue; /* removed meanwhile */
			return kap_error(err, errno, "open %s/%s", dir, de->d_name);
		}
		cleanup_free char *sub = NULL;
		if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0)
			return kap_error(err, ENOMEM, "%s", dir);
		r = collect_pids(cfd, sub, pl, depth + 1, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_cgroup_pids(const struct kap_cgroup *cg, pid_t **pids, size_t *n, struct kapsel_error **err)
{
	const struct kap_cgroup_dir *dir = NULL;
	if (cg->mode != KAP_CGROUP_UNIFIED) {
		dir = find_v1(cg, KAP_CG_PIDS);
		if (!dir)
			dir = find_v1(cg, KAP_CG_FREEZER);
		for (size_t i = 0; !dir && i < cg->n_dirs; i++)
			if (!cg->dirs[i].v2)
				dir = &cg->dirs[i];
	}
	if (!dir)
		dir = find_v2(cg, NULL);
	if (!dir)
		return kap_error_plain(err, ENOENT, "%s: no cgroup hierarchy", cg->path);
	cleanup_close int fd = open_dir(dir->path, err);
	if (fd < 0)
		return fd;
	struct pid_list pl = {0};
	int r = collect_pids(fd, dir->path, &pl, 0, err);
	if (r < 0) {
		free(pl.v);
		return r;
	}
	*pids = pl.v;
	*n = pl.n;
	return 0;
}

int kap_cgroup_stats(const struct kap_cgroup *cg, struct kap_json **out, struct kapsel_error **err)
{
	cleanup_json struct kap_json *stats = kap_json_new_object();
	if (!stats)
		return kap_error(err, ENOMEM, "cgroup stats");
	for (size_t i = 0; i < cg->n_dirs; i++) {
		const struct kap_cgroup_dir *dir = &cg->dirs[i];
		unsigned only = KAP_CG_BIT(KAP_CG__COUNT) - 1;
		if (dir->v2 && cg->mode == KAP_CGROUP_HYBRID) {
			if (v1_has(cg, KAP_CG_HUGETLB))
				continue;
			only = KAP_CG_BIT(KAP_CG_HUGETLB);
		}
		if (!dir->v2 && !dir->mask)
			continue; /* named hierarchies carry no statistics */
		cleanup_close int fd = open_dir(dir->path, err);
		if (fd < 0)
			return fd;
		struct kap_cg_fd d = {fd, dir->path};
		int r = dir->v2 ? kap_cg_v2_stats(&d, only, stats, err)
				: kap_cg_v1_stats(dir, &d, stats, err);
		if (r < 0)
			return r;
	}
	*out = steal_ptr(stats);
	return 0;
}

int kap_cgroup_oom_count(const struct kap_cgroup *cg, uint64_t *count, struct kapsel_error **err)
{
	const struct kap_cgroup_dir *dir =
	    cg->mode == KAP_CGROUP_UNIFIED ? find_v2(cg, NULL) : find_v1(cg, KAP_CG_MEMORY);
	if (!dir)
		return kap_error_plain(err, ENOENT, "%s: memory controller not available",
				       cg->path);
	cleanup_close int fd = open_dir(dir->path, err);
	if (fd < 0)
		return fd;
	struct kap_cg_fd d = {fd, dir->path};
	return dir->v2 ? kap_cg_v2_oom_count(&d, count, err) : kap_cg_v1_oom_count(&d, count, err);
}

/* ---- state ---- */

static const char *const mode_names[] = {
    [KAP_CGROUP_LEGACY] = "legacy",
    [KAP_CGROUP_HYBRID] = "hybrid",
    [KAP_CGROUP_UNIFIED] = "unified",
};

struct kap_json *kap_cgroup_to_json(const struct kap_cgroup *cg)
{
	struct kap_json *o = kap_json_new_object(), *created = kap_json_new_array(),
			*dirs = kap_json_new_array();
	if (!o || !created || !dirs) {
		kap_json_put(o);
		kap_json_put(created);
		kap_json_put(dirs);
		return NULL;
	}
	kap_json_set(o, "mode", kap_json_new_string(mode_names[cg->mode]));
	kap_json_set(o, "root", kap_json_new_string(cg->root));
	kap_json_set(o, "path", kap_json_new_string(cg->path));
	for (size_t i = 0; i < cg->n_created; i++)
		kap_json_append(created, kap_json_new_string(cg->created[i]));
	kap_json_set(o, "created", created);
	for (size_t i = 0; i < cg->n_dirs; i++) {
		struct kap_json *d = kap_json_new_object();
		if (!d)
			continue;
		kap_json_set(d, "path", kap_json_new_string(cg->dirs[i].path));
		if (cg->dirs[i].v2)
			kap_json_set(d, "v2", kap_json_new_bool(true));
		else
			kap_json_set(d, "controllers",
				     kap_json_new_string(cg->dirs[i].controllers));
		kap_json_append(dirs, d);
	}
	kap_json_set(o, "dirs", dirs);
	return o;
}

/*
 * A path from a state file: absolute, normalised, strictly below root (or root itself when
 * allow_root). State files are input: a forged one must not make `delete` rmdir elsewhere.
 */
static int check_state_path(const char *p, const char *root, bool allow_root, const char *what,
			    struct kapsel_error **err)
{
	cleanup_free char *norm = NULL;
	if (p[0] != '/')
		return kap_error_plain(err, EINVAL, "%s: '%s' is not absolute", what, p);
	int r = normalize(p, what, &norm, err);
	if (r < 0)
		return r;
	if (strcmp(norm, p))
		return kap_error_plain(err, EINVAL, "%s: '%s' is not a normalised path", what, p);
	size_t n = strcmp(root, "/") ? strlen(root) : 0;
	if (strncmp(p, root, n) || (p[n] != '/' && !(allow_root && !p[n])))
		return kap_error_plain(err, EINVAL, "%s: '%s' is not below %s", what, p, root);
	return 0;
}

int kap_cgroup_from_json(const struct kap_json *j, struct kap_cgroup **out,
			 struct kapsel_error **err)
{
	*out = NULL;
	if (kap_json_type(j) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "cgroup: expected object");
	cleanup_cgroup struct kap_cgroup *cg = calloc(1, sizeof(*cg));
	cleanup_free char *mode = NULL;
	if (!cg)
		return kap_error(err, ENOMEM, "cgroup");
	int r = kap_json_read_string(j, "cgroup", "mode", &mode, err);
	if (r >= 0)
		r = kap_json_read_string(j, "cgroup", "root", &cg->root, err);
	if (r >= 0)
		r = kap_json_read_string(j, "cgroup", "path", &cg->path, err);
	if (r < 0)
		return r;
	if (!mode || !cg->root || !cg->path)
		return kap_error_plain(err, EINVAL, "cgroup: mode, root and path are required");
	size_t m;
	for (m = 0; m < KAP_ARRAY_SIZE(mode_names); m++)
		if (!strcmp(mode, mode_names[m]))
			break;
	if (m == KAP_ARRAY_SIZE(mode_names))
		return kap_error_plain(err, EINVAL, "cgroup.mode: unknown mode '%s'", mode);
	cg->mode = (enum kap_cgroup_mode)m;
	cleanup_free char *root_norm = NULL, *path_norm = NULL;
	if (cg->root[0] != '/')
		return kap_error_plain(err, EINVAL, "cgroup.root: '%s' is not absolute", cg->root);
	r = normalize(cg->root, "cgroup.root", &root_norm, err);
	if (r < 0)
		return r;
	if (cg->path[0] != '/' || normalize(cg->path, "cgroup.path", &path_norm, err) < 0 ||
	    !*path_norm)
		return kap_error_plain(err, EINVAL, "cgroup.path: invalid path '%s'", cg->path);
	if (strcmp(root_norm, cg->root) && !(root_norm[0] == '\0' && !strcmp(cg->root, "/")))
		return kap_error_plain(err, EINVAL, "cgroup.root: '%s' is not normalised",
				       cg->root);

	struct kap_json *arr = NULL;
	r = kap_json_read_member(j, "cgroup", "created", KAP_JSON_ARRAY, &arr, err);
	if (r < 0)
		return r;
	size_t n = arr ? kap_json_array_len(arr) : 0;
	cg->created = calloc(n + 1, sizeof(char *));
	if (!cg->created)
		return kap_error(err, ENOMEM, "cgroup");
	for (size_t i = 0; i < n; i++) {
		const char *s = kap_json_string(kap_json_array_at(arr, i));
		if (!s)
			return kap_error_plain(err, EINVAL, "cgroup.created[%zu]: expected string",
					       i);
		r = check_state_path(s, cg->root, false, "cgroup.created", err);
		if (r < 0)
			return r;
		if (!(cg->created[cg->n_created] = strdup(s)))
			return kap_error(err, ENOMEM, "cgroup");
		cg->n_created++;
	}

	r = kap_json_read_member(j, "cgroup", "dirs", KAP_JSON_ARRAY, &arr, err);
	if (r < 0)
		return r;
	if (!arr) {
		/* Written without dirs: derive them from the mounts and the (absolute) path. */
		struct kap_cg_layout l;
		r = kap_cg_layout_detect(cg->root, &l, err);
		if (r < 0)
			return r;
		r = resolve_dirs(cg, &l, path_norm, NULL, err);
		kap_cg_layout_clear(&l);
		if (r < 0)
			return r;
	} else {
		n = kap_json_array_len(arr);
		if (n > MAX_HIERARCHIES)
			return kap_error_plain(err, EINVAL, "cgroup.dirs: too many entries");
		cg->dirs = calloc(n + 1, sizeof(*cg->dirs));
		if (!cg->dirs)
			return kap_error(err, ENOMEM, "cgroup");
		size_t n_v2 = 0;
		for (size_t i = 0; i < n; i++) {
			struct kap_json *e = kap_json_array_at(arr, i);
			struct kap_cgroup_dir *d = &cg->dirs[cg->n_dirs];
			if (kap_json_type(e) != KAP_JSON_OBJECT)
				return kap_error_plain(err, EINVAL,
						       "cgroup.dirs[%zu]: expected object", i);
			r = kap_json_read_string(e, "cgroup.dirs", "path", &d->path, err);
			if (r >= 0)
				r = kap_json_read_string(e, "cgroup.dirs", "controllers",
							 &d->controllers, err);
			if (r >= 0)
				r = kap_json_read_bool(e, "cgroup.dirs", "v2", &d->v2, err);
			cg->n_dirs++;
			if (r < 0)
				return r;
			if (!d->path)
				return kap_error_plain(err, EINVAL, "cgroup.dirs[%zu]: no path", i);
			r = check_state_path(d->path, cg->root, cg->mode == KAP_CGROUP_UNIFIED,
					     "cgroup.dirs", err);
			if (r < 0)
				return r;
			if (!d->controllers && !(d->controllers = strdup("")))
				return kap_error(err, ENOMEM, "cgroup");
			d->mask = d->v2 ? 0 : kap_cg_ctrl_mask(d->controllers);
			n_v2 += d->v2;
		}
		if (n_v2 > 1 || (cg->mode == KAP_CGROUP_LEGACY && n_v2) ||
		    (cg->mode == KAP_CGROUP_UNIFIED && n_v2 != cg->n_dirs))
			return kap_error_plain(err, EINVAL, "cgroup.dirs: do not match mode '%s'",
					       mode);
	}
	*out = steal_ptr(cg);
	return 0;
}

struct kap_json *kap_cg_json_obj(struct kap_json *parent, const char *key)
{
	struct kap_json *o = kap_json_get(parent, key);
	if (o)
		return o;
	o = kap_json_new_object();
	if (o)
		kap_json_set(parent, key, o);
	return o;
}

void kap_cg_json_blkio(struct kap_json *blkio, const char *key, uint64_t major, uint64_t minor,
		       const char *op, uint64_t value)
{
	struct kap_json *arr = kap_json_get(blkio, key);
	if (!arr) {
		arr = kap_json_new_array();
		if (!arr)
			return;
		kap_json_set(blkio, key, arr);
	}
	struct kap_json *e = kap_json_new_object();
	if (!e)
		return;
	kap_json_set(e, "major", kap_cg_json_u64(major));
	kap_json_set(e, "minor", kap_cg_json_u64(minor));
	kap_json_set(e, "op", kap_json_new_string(op));
	kap_json_set(e, "value", kap_cg_json_u64(value));
	kap_json_append(arr, e);
}
