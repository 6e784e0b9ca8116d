/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cgroup code on the real /sys/fs/cgroup (root only; skips otherwise): a forked child is put
 * into a fresh /kapsel/<id> cgroup with memory, pids, cpu and device limits; the kernel's files
 * are read back, the child is frozen and thawed, listed, measured, and the device rules are
 * exercised from inside (open /dev/null allowed, /dev/zero denied: harmless reads). Then
 * everything kapsel created must be gone. Only cgroups this test creates are touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "container/cgroup/cgroup-internal.h"
#include "core/cleanup.h"
#include "core/fs.h"
#include "core/json.h"

#define ROOT "/sys/fs/cgroup"

/* What a failed assertion leaves behind, cleaned up by teardown(). */
static struct kap_cgroup *live_cg;
static pid_t live_child;

static bool usable(const char *root)
{
	enum kap_cgroup_mode m;
	struct kapsel_error *e = NULL;
	if (geteuid() != 0 || access(root, W_OK) != 0)
		return false;
	int r = kap_cgroup_detect(root, &m, &e);
	kapsel_error_free(e);
	return r == 0;
}

#define SKIP_UNLESS(root)                                                                          \
	do {                                                                                       \
		if (!usable(root)) {                                                               \
			print_message("# skipped: needs root and a writable %s\n", root);          \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

/*
 * A child that waits for a byte, then reports through its exit status whether it could open
 * /dev/null (bit 0) and /dev/zero (bit 1) for reading.
 */
static pid_t spawn(int *go)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			_exit(100);
		int st = 0, fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			st |= 1;
		fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			st |= 2;
		_exit(st);
	}
	close(p[0]);
	*go = p[1];
	live_child = pid;
	return pid;
}

static int finish(pid_t pid, int go)
{
	int st = -1;
	assert_int_equal(write(go, "x", 1), 1);
	close(go);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	live_child = 0;
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static char *read_in(const char *dir, const char *file)
{
	char *buf = NULL;
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	if (kap_fs_read_file(AT_FDCWD, p, 1 << 20, &buf, NULL, NULL) < 0)
		return strdup("<unreadable>");
	return buf;
}

static const char *dir_with(const struct kap_cgroup *cg, enum kap_cg_ctrl c)
{
	for (size_t i = 0; i < cg->n_dirs; i++)
		if (!cg->dirs[i].v2 && (cg->dirs[i].mask & KAP_CG_BIT(c)))
			return cg->dirs[i].path;
	return NULL;
}

static void expect_in(const char *dir, const char *file, const char *want)
{
	cleanup_free char *got = read_in(dir, file);
	if (!strstr(got, want))
		fail_msg("%s/%s: '%s' lacks '%s'", dir, file, got, want);
}

static void assert_gone(const struct kap_cgroup *cg)
{
	for (size_t i = 0; i < cg->n_created; i++)
		if (access(cg->created[i], F_OK) == 0)
			fail_msg("%s still exists", cg->created[i]);
	for (size_t i = 0; i < cg->n_dirs; i++)
		if (access(cg->dirs[i].path, F_OK) == 0)
			fail_msg("%s still exists", cg->dirs[i].path);
}

static int teardown(void **state)
{
	if (live_child > 0) {
		kill(live_child, SIGKILL);
		waitpid(live_child, NULL, 0);
		live_child = 0;
	}
	if (live_cg) {
		kap_cgroup_destroy(live_cg, NULL);
		kap_cgroup_free(live_cg);
		live_cg = NULL;
	}
	return 0;
}

static struct kap_device_rule rules[] = {
    {false, 'a', -1, -1, "rwm"},
    {true, 'c', 1, 3, "rwm"}, /* /dev/null; /dev/zero (1:5) stays denied */
};

static void test_live(void **state)
{
	SKIP_UNLESS(ROOT);
	char id[64];
	snprintf(id, sizeof(id), "live-%d", (int)getpid());
	int go;
	pid_t child = spawn(&go);
	struct kap_resources res = {
	    .has_mem_limit = true,
	    .mem_limit = 64 << 20,
	    .has_mem_swap = true,
	    .mem_swap = 128 << 20,
	    .has_mem_kernel = true,
	    .mem_kernel = 256 << 20,
	    .has_pids_limit = true,
	    .pids_limit = 32,
	    .has_cpu_quota = true,
	    .cpu_quota = 50000,
	    .has_cpu_period = true,
	    .cpu_period = 100000,
	    .devices = rules,
	    .n_devices = KAP_ARRAY_SIZE(rules),
	};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (kap_cgroup_create(ROOT, NULL, id, &res, child, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	live_cg = cg;
	char path[96];
	snprintf(path, sizeof(path), "/kapsel/%s", id);
	assert_string_equal(cg->path, path);
	char pid_s[16];
	snprintf(pid_s, sizeof(pid_s), "%d", (int)child);

	if (cg->mode == KAP_CGROUP_UNIFIED) {
		const char *d = kap_cgroup_unified_dir(cg);
		expect_in(d, "memory.max", "67108864");
		expect_in(d, "pids.max", "32");
		expect_in(d, "cpu.max", "50000 100000");
		expect_in(d, "cgroup.procs", pid_s);
	} else {
		expect_in(dir_with(cg, KAP_CG_MEMORY), "memory.limit_in_bytes", "67108864");
		cleanup_free char *memsw =
		    read_in(dir_with(cg, KAP_CG_MEMORY), "memory.memsw.limit_in_bytes");
		if (strcmp(memsw, "<unreadable>"))
			assert_string_equal(memsw, "134217728\n");
		expect_in(dir_with(cg, KAP_CG_PIDS), "pids.max", "32");
		expect_in(dir_with(cg, KAP_CG_CPU), "cpu.cfs_quota_us", "50000");
		expect_in(dir_with(cg, KAP_CG_DEVICES), "devices.list", "c 1:3 rwm");
		for (size_t i = 0; i < cg->n_dirs; i++)
			expect_in(cg->dirs[i].path, "cgroup.procs", pid_s);
	}

	bool frozen = false;
	assert_int_equal(kap_cgroup_freeze(cg, true, &e), 0);
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_true(frozen);
	assert_int_equal(kap_cgroup_freeze(cg, false, &e), 0);
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_false(frozen);

	cleanup_free pid_t *pids = NULL;
	size_t n = 0;
	assert_int_equal(kap_cgroup_pids(cg, &pids, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(pids[0], child);

	cleanup_json struct kap_json *st = NULL;
	assert_int_equal(kap_cgroup_stats(cg, &st, &e), 0);
	cleanup_free char *s = kap_json_dump(st, false);
	assert_non_null(strstr(s, "\"memory\""));
	assert_non_null(strstr(s, "\"pids\":{\"current\":1,\"limit\":32}"));
	uint64_t oom = 99;
	assert_int_equal(kap_cgroup_oom_count(cg, &oom, &e), 0);
	assert_int_equal(oom, 0);

	/* Lowering memory and swap below the current values needs the right order. */
	struct kap_resources up = {.has_pids_limit = true,
				   .pids_limit = 64,
				   .has_mem_limit = true,
				   .mem_limit = 32 << 20,
				   .has_mem_swap = true,
				   .mem_swap = 48 << 20};
	if (kap_cgroup_update(cg, &up, &e) < 0)
		fail_msg("update: %s", e->msg);
	/* And raising them again, past the old memory+swap. */
	up.mem_limit = 256 << 20;
	up.mem_swap = 512 << 20;
	if (kap_cgroup_update(cg, &up, &e) < 0)
		fail_msg("update: %s", e->msg);

	assert_int_equal(finish(child, go), 1); /* /dev/null yes, /dev/zero no */
	if (kap_cgroup_destroy(cg, &e) < 0)
		fail_msg("destroy: %s", e->msg);
	assert_gone(cg);
}

/* The cgroup2 path with its eBPF device filter, on whichever cgroup2 mount this host has. */
static void test_live_v2_devices(void **state)
{
	const char *root = NULL;
	struct statfs sfs;
	if (statfs(ROOT, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC)
		root = ROOT;
	else if (statfs(ROOT "/unified", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC)
		root = ROOT "/unified";
	if (!root) {
		print_message("# skipped: needs a cgroup2 mount\n");
		skip();
	}
	SKIP_UNLESS(root);
	char id[64];
	snprintf(id, sizeof(id), "live-bpf-%d", (int)getpid());
	int go;
	pid_t child = spawn(&go);
	struct kap_resources res = {.devices = rules, .n_devices = KAP_ARRAY_SIZE(rules)};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (kap_cgroup_create(root, NULL, id, &res, child, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	live_cg = cg;
	assert_int_equal(cg->mode, KAP_CGROUP_UNIFIED);
	/* Replace the filter (update): still exactly one program deciding. */
	assert_int_equal(kap_cgroup_update(cg, &res, &e), 0);

	bool frozen = false;
	assert_int_equal(kap_cgroup_freeze(cg, true, &e), 0);
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_true(frozen);
	assert_int_equal(kap_cgroup_freeze(cg, false, &e), 0);

	assert_int_equal(finish(child, go), 1);
	/* A cgroup the container made inside its own goes too. */
	char nested[PATH_MAX];
	snprintf(nested, sizeof(nested), "%s/nested", kap_cgroup_unified_dir(cg));
	assert_int_equal(mkdir(nested, 0755), 0);
	if (kap_cgroup_destroy(cg, &e) < 0)
		fail_msg("destroy: %s", e->msg);
	assert_gone(cg);
}

/*
 * Hybrid without a v1 hugetlb mount (this project's CI machine): hugepageLimits need hugetlb
 * delegated by the cgroup2 root; when it is not, create fails naming both and leaves nothing.
 */
static void test_live_hybrid_hugetlb(void **state)
{
	SKIP_UNLESS(ROOT);
	struct kap_cg_layout l;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cg_layout_detect(ROOT, &l, &e), 0);
	bool v1_hugetlb = false;
	for (size_t i = 0; i < l.n; i++)
		v1_hugetlb |= !l.h[i].v2 && (l.h[i].mask & KAP_CG_BIT(KAP_CG_HUGETLB));
	enum kap_cgroup_mode mode = l.mode;
	kap_cg_layout_clear(&l);
	cleanup_free char *sub = read_in(ROOT "/unified", "cgroup.subtree_control");
	if (mode != KAP_CGROUP_HYBRID || v1_hugetlb || strstr(sub, "hugetlb")) {
		print_message(
		    "# skipped: needs hybrid cgroups whose cgroup2 root does not delegate "
		    "hugetlb\n");
		skip();
	}
	char id[64];
	snprintf(id, sizeof(id), "live-huge-%d", (int)getpid());
	struct kap_hugepage_limit huge[] = {{"2MB", 1 << 21}};
	struct kap_resources res = {.hugepage_limits = huge, .n_hugepage_limits = 1};
	struct kap_cgroup *cg = NULL;
	assert_int_equal(kap_cgroup_create(ROOT, NULL, id, &res, 0, &cg, &e), -EOPNOTSUPP);
	assert_null(cg);
	assert_non_null(strstr(e->msg, "linux.resources.hugepageLimits"));
	/* The deepest directory kapsel did not create: the root, or /kapsel if it exists. */
	if (!strstr(e->msg, ROOT "/unified/cgroup.subtree_control") &&
	    !strstr(e->msg, ROOT "/unified/kapsel/cgroup.subtree_control"))
		fail_msg("%s: names no cgroup.subtree_control", e->msg);
	print_message("# expected error: %s\n", e->msg);
	char p[PATH_MAX];
	snprintf(p, sizeof(p), ROOT "/unified/kapsel/%s", id);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), ROOT "/pids/kapsel/%s", id);
	assert_int_equal(access(p, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_live, teardown),
	    cmocka_unit_test_teardown(test_live_v2_devices, teardown),
	    cmocka_unit_test(test_live_hybrid_hugetlb),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
