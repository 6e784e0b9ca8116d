/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fake cgroupfs for unit tests: a temp directory whose hierarchies cgroup.c finds by their
 * core files (nothing is mounted there). What the kernel does on mkdir -- populate the new
 * cgroup with the interface files of the controllers its parent enabled -- the test does by
 * interposing mkdirat(2); rmdir(2)/unlinkat(2) are interposed so that populated directories can
 * be removed as on cgroupfs. Only paths below fake_root are affected.
 */
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/fs.h"

static char fake_root[64];

static void fake_put(const char *dir, const char *file, const char *content)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", dir, file) >= (int)sizeof(p))
		abort();
	FILE *f = fopen(p, "w");
	if (!f)
		abort();
	fputs(content, f);
	fclose(f);
}

/* The contents of fake_root/rel ("" when missing); caller frees. */
static char *fake_get(const char *rel)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", fake_root, rel) >= (int)sizeof(p))
		abort();
	FILE *f = fopen(p, "r");
	if (!f)
		return strdup("<missing>");
	char *buf = calloc(1, 8192);
	size_t n = fread(buf, 1, 8191, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool fake_exists(const char *rel)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", fake_root, rel) >= (int)sizeof(p))
		abort();
	return access(p, F_OK) == 0;
}

static bool fake_has(const char *list, const char *name)
{
	size_t len = strlen(name);
	for (const char *p = list; *p;) {
		p += strspn(p, " +,\n");
		size_t w = strcspn(p, " +,\n");
		if (w == len && !strncmp(p, name, len))
			return true;
		p += w;
	}
	return false;
}

/* Interface files of a new cgroup2 directory given what its parent enabled. */
static void fake_populate_v2(const char *dir, const char *parent)
{
	char p[PATH_MAX], ctrls[512] = "";
	if (snprintf(p, sizeof(p), "%s/cgroup.subtree_control", parent) >= (int)sizeof(p))
		abort();
	FILE *f = fopen(p, "r");
	if (f) {
		/* The kernel lists them without '+'. */
		int c;
		size_t n = 0;
		while ((c = fgetc(f)) != EOF && n < sizeof(ctrls) - 1)
			if (c != '+' && c != '\n')
				ctrls[n++] = (char)c;
		ctrls[n] = '\0';
		fclose(f);
	}
	fake_put(dir, "cgroup.controllers", ctrls);
	fake_put(dir, "cgroup.subtree_control", "");
	fake_put(dir, "cgroup.procs", "");
	fake_put(dir, "cgroup.events", "populated 0\nfrozen 0\n");
	fake_put(dir, "cgroup.freeze", "0");
	if (fake_has(ctrls, "memory")) {
		fake_put(dir, "memory.max", "max");
		fake_put(dir, "memory.low", "0");
		fake_put(dir, "memory.high", "max");
		fake_put(dir, "memory.swap.max", "max");
		fake_put(dir, "memory.current", "4096");
		fake_put(dir, "memory.swap.current", "0");
		fake_put(dir, "memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n");
		fake_put(dir, "memory.stat", "anon 1024\nfile 2048\n");
	}
	if (fake_has(ctrls, "cpu")) {
		fake_put(dir, "cpu.weight", "100");
		fake_put(dir, "cpu.max", "max 100000");
		fake_put(dir, "cpu.idle", "0");
		fake_put(dir, "cpu.stat",
			 "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 3\nnr_throttled "
			 "1\nthrottled_usec 7\n");
	}
	if (fake_has(ctrls, "cpuset")) {
		fake_put(dir, "cpuset.cpus", "");
		fake_put(dir, "cpuset.mems", "");
	}
	if (fake_has(ctrls, "pids")) {
		fake_put(dir, "pids.max", "max");
		fake_put(dir, "pids.current", "1");
	}
	if (fake_has(ctrls, "io")) {
		fake_put(dir, "io.max", "");
		fake_put(dir, "io.weight", "default 100");
		fake_put(dir, "io.stat",
			 "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n");
	}
	if (fake_has(ctrls, "rdma"))
		fake_put(dir, "rdma.max", "");
	if (fake_has(ctrls, "hugetlb")) {
		fake_put(dir, "hugetlb.2MB.max", "max");
		fake_put(dir, "hugetlb.2MB.current", "0");
		fake_put(dir, "hugetlb.2MB.events", "max 0\n");
	}
}

/* Set to leave out memory.memsw.* (a kernel booted without swap accounting). */
static bool fake_no_memsw;
/* Set to leave out memory.kmem.tcp.* (a kernel without CONFIG_MEMCG_KMEM's TCP accounting). */
static bool fake_no_kmem_tcp;

static void fake_populate_v1(const char *dir, const char *hier)
{
	fake_put(dir, "cgroup.procs", "");
	fake_put(dir, "tasks", "");
	if (fake_has(hier, "memory")) {
		fake_put(dir, "memory.limit_in_bytes", "9223372036854771712");
		if (!fake_no_memsw)
			fake_put(dir, "memory.memsw.limit_in_bytes", "9223372036854771712");
		fake_put(dir, "memory.soft_limit_in_bytes", "9223372036854771712");
		fake_put(dir, "memory.kmem.limit_in_bytes", "9223372036854771712");
		if (!fake_no_kmem_tcp)
			fake_put(dir, "memory.kmem.tcp.limit_in_bytes", "9223372036854771712");
		fake_put(dir, "memory.swappiness", "60");
		fake_put(dir, "memory.oom_control",
			 "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
		fake_put(dir, "memory.usage_in_bytes", "8192");
		fake_put(dir, "memory.max_usage_in_bytes", "16384");
		fake_put(dir, "memory.failcnt", "0");
		fake_put(dir, "memory.stat", "cache 4096\nrss 4096\n");
	}
	if (fake_has(hier, "cpu")) {
		fake_put(dir, "cpu.shares", "1024");
		fake_put(dir, "cpu.cfs_quota_us", "-1");
		fake_put(dir, "cpu.cfs_period_us", "100000");
		fake_put(dir, "cpu.rt_runtime_us", "0");
		fake_put(dir, "cpu.rt_period_us", "1000000");
		fake_put(dir, "cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 99\n");
	}
	if (fake_has(hier, "cpuacct")) {
		fake_put(dir, "cpuacct.usage", "1000");
		fake_put(dir, "cpuacct.usage_percpu", "600 400 \n");
		fake_put(dir, "cpuacct.stat", "user 1\nsystem 2\n");
	}
	if (fake_has(hier, "cpuset")) {
		/* Empty until set: the kernel's behaviour without clone_children. */
		fake_put(dir, "cpuset.cpus", "");
		fake_put(dir, "cpuset.mems", "");
	}
	if (fake_has(hier, "devices")) {
		fake_put(dir, "devices.allow", "");
		fake_put(dir, "devices.deny", "");
	}
	if (fake_has(hier, "freezer"))
		fake_put(dir, "freezer.state", "THAWED");
	if (fake_has(hier, "pids")) {
		fake_put(dir, "pids.max", "max");
		fake_put(dir, "pids.current", "0");
	}
	if (fake_has(hier, "blkio")) {
		fake_put(dir, "blkio.weight", "500");
		fake_put(dir, "blkio.throttle.read_bps_device", "");
		fake_put(dir, "blkio.throttle.write_bps_device", "");
		fake_put(dir, "blkio.throttle.read_iops_device", "");
		fake_put(dir, "blkio.throttle.write_iops_device", "");
	}
	if (fake_has(hier, "hugetlb"))
		fake_put(dir, "hugetlb.2MB.limit_in_bytes", "9223372036854771712");
	if (fake_has(hier, "net_cls"))
		fake_put(dir, "net_cls.classid", "0");
	if (fake_has(hier, "net_prio"))
		fake_put(dir, "net_prio.ifpriomap", "lo 0\n");
	if (fake_has(hier, "rdma"))
		fake_put(dir, "rdma.max", "");
}

/* Set when fake_root itself is a cgroup2 root (unified); else hierarchies are its children. */
static bool fake_unified;

static void fake_populate(const char *path)
{
	size_t n = strlen(fake_root);
	if (strncmp(path, fake_root, n) || path[n] != '/')
		return;
	char parent[PATH_MAX], hier[PATH_MAX];
	if (snprintf(parent, sizeof(parent), "%s", path) >= (int)sizeof(parent))
		abort();
	*strrchr(parent, '/') = '\0';
	if (snprintf(hier, sizeof(hier), "%s", path + n + 1) >= (int)sizeof(hier))
		abort();
	if (strchr(hier, '/'))
		*strchr(hier, '/') = '\0';
	if (fake_unified || !strcmp(hier, "unified"))
		fake_populate_v2(path, parent);
	else
		fake_populate_v1(path, hier);
}

static void fake_fd_path(int dirfd, const char *name, char *out, size_t size)
{
	char link[64], dir[PATH_MAX];
	if (name[0] == '/' || dirfd == AT_FDCWD) {
		snprintf(out, size, "%s", name);
		return;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
	ssize_t l = readlink(link, dir, sizeof(dir) - 1);
	dir[l > 0 ? l : 0] = '\0';
	if (snprintf(out, size, "%s/%s", dir, name) >= (int)size)
		out[0] = '\0';
}

static bool fake_below(const char *path)
{
	size_t n = strlen(fake_root);
	return n && !strncmp(path, fake_root, n) && path[n] == '/';
}

/* Remove the interface files so the directory can go, as rmdir does on cgroupfs. */
static void fake_clear(const char *path)
{
	if (!fake_below(path))
		return;
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_type == DT_REG)
			syscall(SYS_unlinkat, dirfd(d), de->d_name, 0);
	closedir(d);
}

int mkdirat(int dirfd, const char *name, mode_t mode)
{
	int r = (int)syscall(SYS_mkdirat, dirfd, name, mode);
	if (r == 0 && fake_root[0]) {
		char p[PATH_MAX];
		fake_fd_path(dirfd, name, p, sizeof(p));
		fake_populate(p);
	}
	return r;
}

int rmdir(const char *path)
{
	fake_clear(path);
	return (int)syscall(SYS_rmdir, path);
}

int unlinkat(int dirfd, const char *name, int flags)
{
	if (flags & AT_REMOVEDIR) {
		char p[PATH_MAX];
		fake_fd_path(dirfd, name, p, sizeof(p));
		fake_clear(p);
	}
	return (int)syscall(SYS_unlinkat, dirfd, name, flags);
}

/* A directory of the fake tree that exists before the test (not populated by mkdirat). */
static void fake_dir(const char *rel)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", fake_root, rel) >= (int)sizeof(p))
		abort();
	if (syscall(SYS_mkdirat, AT_FDCWD, p, 0755) < 0)
		abort();
}

static void fake_file(const char *rel, const char *content)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s/%s", fake_root, rel) >= (int)sizeof(p))
		abort();
	FILE *f = fopen(p, "w");
	if (!f)
		abort();
	fputs(content, f);
	fclose(f);
}

static void fake_setup(bool unified)
{
	snprintf(fake_root, sizeof(fake_root), "/tmp/kap-cgroup-test-XXXXXX");
	if (!mkdtemp(fake_root))
		abort();
	fake_unified = unified;
}

static void fake_teardown(void)
{
	kap_fs_rm_rf(AT_FDCWD, fake_root);
	fake_root[0] = '\0';
}
