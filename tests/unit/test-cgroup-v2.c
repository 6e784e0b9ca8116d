/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup v2 against a fake cgroupfs (cgroup-fake.h): the exact values written on create and
 * update (with runc's/crun's conversions), controller delegation only in directories kapsel
 * created, freeze, pids, stats, state round trip and hostile state, destroy, and the errors of
 * what cannot be done. Also the device filter program, run through a tiny eBPF interpreter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cgroup-fake.h"
#include "container/cgroup/cgroup-internal.h"
#include "core/cleanup.h"
#include "core/json.h"

#define ALL "cpuset cpu io memory hugetlb pids"

/* A cgroup2 root delegating everything, and /pre, a parent kapsel did not create. */
static int setup(void **state)
{
	fake_setup(true);
	fake_file("cgroup.controllers", ALL);
	fake_file("cgroup.subtree_control", ALL);
	fake_file("cgroup.procs", "1\n");
	fake_dir("pre");
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/pre", fake_root);
	fake_populate_v2(p, fake_root);
	fake_file("pre/cgroup.subtree_control", ALL);
	return 0;
}

static int teardown(void **state)
{
	fake_teardown();
	return 0;
}

static void expect_file(const char *rel, const char *want)
{
	cleanup_free char *got = fake_get(rel);
	if (strcmp(got, want))
		fail_msg("%s: got '%s', want '%s'", rel, got, want);
}

static void assert_err_has(struct kapsel_error *e, const char *part)
{
	assert_non_null(e);
	if (!strstr(e->msg, part))
		fail_msg("error '%s' does not mention '%s'", e->msg, part);
}

static struct kap_throttle rbps[] = {{8, 0, 1048576}};
static struct kap_throttle wiops[] = {{8, 16, 100}};
static struct kap_hugepage_limit huge[] = {{"2MB", 4194304}};
static char *ukeys[] = {"memory.high"}, *uvals[] = {"50000000"};

static struct kap_resources full_res(void)
{
	return (struct kap_resources){
	    .has_mem_limit = true,
	    .mem_limit = 64 << 20,
	    .has_mem_swap = true,
	    .mem_swap = 128 << 20,
	    .has_mem_reservation = true,
	    .mem_reservation = 32 << 20,
	    .has_cpu_shares = true,
	    .cpu_shares = 1024,
	    .has_cpu_quota = true,
	    .cpu_quota = 50000,
	    .has_cpu_period = true,
	    .cpu_period = 100000,
	    .cpu_cpus = "0",
	    .has_pids_limit = true,
	    .pids_limit = 32,
	    .has_blkio_weight = true,
	    .blkio_weight = 500,
	    .throttle_read_bps = rbps,
	    .n_throttle_read_bps = 1,
	    .throttle_write_iops = wiops,
	    .n_throttle_write_iops = 1,
	    .hugepage_limits = huge,
	    .n_hugepage_limits = 1,
	    .unified_keys = ukeys,
	    .unified_values = uvals,
	    .n_unified = 1,
	};
}

static struct kap_cgroup *create_ok(const char *path, const struct kap_resources *res)
{
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_cgroup_create(fake_root, path, "ctr", res, 4242, &cg, &e);
	if (r < 0)
		fail_msg("create: %s", e ? e->msg : "?");
	assert_non_null(cg);
	return cg;
}

static void test_conversions(void **state)
{
	assert_int_equal(kap_cg_v2_shares_to_weight(2), 1);
	assert_int_equal(kap_cg_v2_shares_to_weight(1024), 39);
	assert_int_equal(kap_cg_v2_shares_to_weight(262144), 10000);
	assert_int_equal(kap_cg_v2_shares_to_weight(0), 1);
	assert_int_equal(kap_cg_v2_blkio_to_io_weight(10), 1);
	assert_int_equal(kap_cg_v2_blkio_to_io_weight(500), 4950);
	assert_int_equal(kap_cg_v2_blkio_to_io_weight(1000), 10000);

	bool set;
	int64_t v;
	cleanup_error struct kapsel_error *e = NULL;
	struct kap_resources r = {
	    .has_mem_limit = true, .mem_limit = 100, .has_mem_swap = true, .mem_swap = 300};
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), 0);
	assert_true(set);
	assert_int_equal(v, 200);
	r.mem_swap = 100; /* memory == memory+swap: no swap at all */
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), 0);
	assert_int_equal(v, 0);
	r.mem_swap = -1;
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), 0);
	assert_int_equal(v, -1);
	r = (struct kap_resources){.has_mem_limit = true, .mem_limit = -1};
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), 0);
	assert_true(set);
	assert_int_equal(v, -1);
	r = (struct kap_resources){.has_mem_limit = true, .mem_limit = 100};
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), 0);
	assert_false(set);
	r = (struct kap_resources){
	    .has_mem_limit = true, .mem_limit = 300, .has_mem_swap = true, .mem_swap = 100};
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), -EINVAL);
	assert_err_has(e, "linux.resources.memory.swap");
	kapsel_error_free(steal_ptr(e));
	r = (struct kap_resources){.has_mem_swap = true, .mem_swap = 100};
	assert_int_equal(kap_cg_v2_swap_value(&r, &set, &v, &e), -EINVAL);
	assert_err_has(e, "needs a memory limit");
}

static void test_detect(void **state)
{
	enum kap_cgroup_mode m;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_detect(fake_root, &m, &e), 0);
	assert_int_equal(m, KAP_CGROUP_UNIFIED);
}

static void test_create(void **state)
{
	struct kap_resources res = full_res();
	cleanup_cgroup struct kap_cgroup *cg = create_ok("/pre/kap/ctr", &res);
	assert_int_equal(cg->mode, KAP_CGROUP_UNIFIED);
	assert_string_equal(cg->path, "/pre/kap/ctr");
	assert_int_equal(cg->n_created, 2);
	char want[PATH_MAX];
	snprintf(want, sizeof(want), "%s/pre/kap", fake_root);
	assert_string_equal(cg->created[0], want);
	snprintf(want, sizeof(want), "%s/pre/kap/ctr", fake_root);
	assert_string_equal(cg->created[1], want);
	assert_string_equal(kap_cgroup_unified_dir(cg), want);

	/* Delegation: only the directory kapsel created above the leaf. */
	expect_file("pre/cgroup.subtree_control", ALL);
	expect_file("pre/kap/cgroup.subtree_control", "+cpuset +cpu +io +memory +hugetlb +pids");
	expect_file("pre/kap/ctr/cgroup.subtree_control", "");
	expect_file("cgroup.subtree_control", ALL);

	expect_file("pre/kap/ctr/memory.max", "67108864");
	expect_file("pre/kap/ctr/memory.swap.max", "67108864"); /* 128M memory+swap - 64M */
	expect_file("pre/kap/ctr/memory.low", "33554432");
	expect_file("pre/kap/ctr/cpu.weight", "39");
	expect_file("pre/kap/ctr/cpu.max", "50000 100000");
	expect_file("pre/kap/ctr/cpuset.cpus", "0");
	expect_file("pre/kap/ctr/pids.max", "32");
	expect_file("pre/kap/ctr/io.weight", "4950");
	/* One write per rule; the fake file shows them one after the other. */
	expect_file("pre/kap/ctr/io.max", "8:0 rbps=10485768:16 wiops=100");
	expect_file("pre/kap/ctr/hugetlb.2MB.max", "4194304");
	expect_file("pre/kap/ctr/memory.high", "50000000");
	expect_file("pre/kap/ctr/cgroup.procs", "4242");

	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	assert_false(fake_exists("pre/kap"));
	assert_true(fake_exists("pre"));
}

static void test_update(void **state)
{
	cleanup_cgroup struct kap_cgroup *cg = create_ok("/pre/ctr", NULL);
	assert_int_equal(cg->n_created, 1);
	/* Only the leaf was created: nothing enabled anywhere. */
	expect_file("pre/cgroup.subtree_control", ALL);
	expect_file("pre/ctr/cgroup.subtree_control", "");

	struct kap_resources up = {.has_pids_limit = true,
				   .pids_limit = 0,
				   .has_mem_limit = true,
				   .mem_limit = -1,
				   .has_cpu_quota = true,
				   .cpu_quota = -1};
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_update(cg, &up, &e), 0);
	expect_file("pre/ctr/pids.max", "max");
	expect_file("pre/ctr/memory.max", "max");
	expect_file("pre/ctr/memory.swap.max", "max");
	expect_file("pre/ctr/cpu.max", "max");

	struct kap_resources up2 = {.has_cpu_period = true, .cpu_period = 20000};
	assert_int_equal(kap_cgroup_update(cg, &up2, &e), 0);
	expect_file("pre/ctr/cpu.max", "max 20000");

	/* Realtime limits have no cgroup2 file: an error, not silence. */
	struct kap_resources rt = {.has_cpu_shares = true,
				   .cpu_shares = 100,
				   .has_cpu_rt_runtime = true,
				   .cpu_rt_runtime = 100};
	assert_int_equal(kap_cgroup_update(cg, &rt, &e), -EOPNOTSUPP);
	assert_err_has(e, "linux.resources.cpu.realtimeRuntime");
	assert_int_equal(kap_cgroup_destroy(cg, NULL), 0);
}

static void test_freeze(void **state)
{
	cleanup_cgroup struct kap_cgroup *cg = create_ok("/pre/ctr", NULL);
	cleanup_error struct kapsel_error *e = NULL;
	bool frozen = true;
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_false(frozen);
	/* The kernel would flip "frozen" once all tasks stopped; the fake already says so. */
	fake_file("pre/ctr/cgroup.events", "populated 1\nfrozen 1\n");
	assert_int_equal(kap_cgroup_freeze(cg, true, &e), 0);
	expect_file("pre/ctr/cgroup.freeze", "1");
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_true(frozen);
	fake_file("pre/ctr/cgroup.events", "populated 1\nfrozen 0\n");
	assert_int_equal(kap_cgroup_freeze(cg, false, &e), 0);
	expect_file("pre/ctr/cgroup.freeze", "0");
	assert_int_equal(kap_cgroup_destroy(cg, NULL), 0);
}

static void test_pids_stats_oom(void **state)
{
	cleanup_cgroup struct kap_cgroup *cg = create_ok("/pre/ctr", NULL);
	cleanup_error struct kapsel_error *e = NULL;
	fake_file("pre/ctr/cgroup.procs", "4242\n4243\n");
	/* A cgroup the container made inside its own (kapsel did not create it). */
	fake_dir("pre/ctr/nested");
	fake_file("pre/ctr/nested/cgroup.procs", "77\n");
	cleanup_free pid_t *pids = NULL;
	size_t n = 0;
	assert_int_equal(kap_cgroup_pids(cg, &pids, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_int_equal(pids[0], 4242);
	assert_int_equal(pids[1], 4243);
	assert_int_equal(pids[2], 77);

	cleanup_json struct kap_json *st = NULL;
	assert_int_equal(kap_cgroup_stats(cg, &st, &e), 0);
	cleanup_free char *s = kap_json_dump(st, false);
	const char *want[] = {
	    "\"total\":10000",
	    "\"kernel\":4000",
	    "\"user\":6000",
	    "\"periods\":3",
	    "\"throttledPeriods\":1",
	    "\"throttledTime\":7000",
	    "\"usage\":4096",
	    "\"failcnt\":2",
	    "\"limit\":18446744073709551615",
	    "\"anon\":1024",
	    "\"cache\":2048",
	    "\"current\":1",
	    "\"ioServiceBytesRecursive\":[{\"major\":8,\"minor\":0,\"op\":\"Read\",\"value\":512}",
	    "\"2MB\":{\"usage\":0,\"failcnt\":0}",
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(want); i++)
		if (!strstr(s, want[i]))
			fail_msg("stats %s lack %s", s, want[i]);

	uint64_t oom = 0;
	assert_int_equal(kap_cgroup_oom_count(cg, &oom, &e), 0);
	assert_int_equal(oom, 1);

	/* destroy removes the nested cgroup first, then the leaf; /pre stays. */
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	assert_false(fake_exists("pre/ctr"));
	assert_true(fake_exists("pre"));
}

static struct kap_cgroup *roundtrip(const char *json, struct kapsel_error **e)
{
	cleanup_json struct kap_json *j = NULL;
	struct kap_cgroup *out = NULL;
	if (kap_json_parse(json, strlen(json), "test", &j, e) < 0)
		fail_msg("parse %s", json);
	kap_cgroup_from_json(j, &out, e);
	return out;
}

static void test_json(void **state)
{
	cleanup_cgroup struct kap_cgroup *cg = create_ok("/pre/a/b", NULL);
	cleanup_json struct kap_json *j = kap_cgroup_to_json(cg);
	cleanup_free char *s = kap_json_dump(j, false);
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_cgroup struct kap_cgroup *back = roundtrip(s, &e);
	assert_non_null(back);
	assert_int_equal(back->mode, cg->mode);
	assert_string_equal(back->root, cg->root);
	assert_string_equal(back->path, cg->path);
	assert_int_equal(back->n_created, cg->n_created);
	for (size_t i = 0; i < cg->n_created; i++)
		assert_string_equal(back->created[i], cg->created[i]);
	assert_int_equal(back->n_dirs, cg->n_dirs);
	assert_string_equal(back->dirs[0].path, cg->dirs[0].path);
	assert_true(back->dirs[0].v2);
	assert_true(strstr(s, "\"mode\":\"unified\""));

	/* The restored state is enough to remove exactly what was created. */
	assert_int_equal(kap_cgroup_destroy(back, &e), 0);
	assert_false(fake_exists("pre/a"));
	assert_true(fake_exists("pre"));

	/* Hostile state files. */
	const char *bad[] = {
	    "{\"mode\":\"bogus\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\",\"created\":[]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[\"/etc\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[\"/sys/fs/cgroup/../../etc\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[\"sys/fs/cgroup/x\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[\"/sys/fs/cgroupx/y\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[\"/sys/fs/cgroup\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\","
	    "\"created\":[42]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/../x\","
	    "\"created\":[]}",
	    "{\"mode\":\"unified\",\"root\":\"relative\",\"path\":\"/x\",\"created\":[]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\",\"created\":[],"
	    "\"dirs\":[{\"path\":\"/tmp/x\",\"v2\":true}]}",
	    "{\"mode\":\"legacy\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\",\"created\":[],"
	    "\"dirs\":[{\"path\":\"/sys/fs/cgroup/x\",\"v2\":true}]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\",\"path\":\"/x\",\"created\":[],"
	    "\"dirs\":[\"/sys/fs/cgroup/x\"]}",
	    "{\"mode\":\"unified\",\"root\":\"/sys/fs/cgroup\"}",
	    "[]",
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(bad); i++) {
		kapsel_error_free(steal_ptr(e));
		struct kap_cgroup *x = roundtrip(bad[i], &e);
		if (x || !e)
			fail_msg("accepted: %s", bad[i]);
	}
}

static void test_missing_controller(void **state)
{
	/* /pre delegates no pids controller. */
	fake_file("pre/cgroup.subtree_control", "cpu memory");
	struct kap_resources res = {.has_pids_limit = true, .pids_limit = 10};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/kap/ctr", "x", &res, 4242, &cg, &e),
			 -EOPNOTSUPP);
	assert_null(cg);
	assert_err_has(e, "linux.resources.pids.limit: pids controller not available");
	char want[PATH_MAX];
	snprintf(want, sizeof(want), "%s/pre/cgroup.subtree_control", fake_root);
	assert_err_has(e, want);
	/* Nothing left behind. */
	assert_false(fake_exists("pre/kap"));
	expect_file("pre/cgroup.subtree_control", "cpu memory");
}

static void test_bad_paths(void **state)
{
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/../etc", "x", NULL, 0, &cg, &e),
			 -EINVAL);
	assert_err_has(e, "linux.cgroupsPath");
	kapsel_error_free(steal_ptr(e));
	assert_int_equal(kap_cgroup_create(fake_root, "a/../../b", "x", NULL, 0, &cg, &e), -EINVAL);
	assert_err_has(e, "'..' is not allowed");
	kapsel_error_free(steal_ptr(e));
	assert_int_equal(kap_cgroup_create(fake_root, "/", "x", NULL, 0, &cg, &e), -EINVAL);
	kapsel_error_free(steal_ptr(e));
	assert_int_equal(kap_cgroup_create(fake_root, NULL, "../x", NULL, 0, &cg, &e), -EINVAL);
	assert_null(cg);
	assert_false(fake_exists("kapsel"));

	/* Relative: below this process's own cgroup2 cgroup ("0::/..." in /proc/self/cgroup). */
	cleanup_free char *self = NULL;
	if (kap_fs_read_file(AT_FDCWD, "/proc/self/cgroup", 1 << 16, &self, NULL, NULL) == 0 &&
	    strstr(self, "0::/")) {
		cg = create_ok("rel/x", NULL);
		size_t n = strlen(cg->dirs[0].path);
		assert_true(n > 6 && !strcmp(cg->dirs[0].path + n - 6, "/rel/x"));
		assert_true(!strncmp(cg->dirs[0].path, fake_root, strlen(fake_root)));
		assert_int_equal(kap_cgroup_destroy(cg, NULL), 0);
		kap_cgroup_free(cg);
		assert_false(fake_exists("rel"));
	}

	/* Default path: /kapsel/<id>. */
	cg = create_ok(NULL, NULL);
	assert_string_equal(cg->path, "/kapsel/ctr");
	assert_int_equal(kap_cgroup_destroy(cg, NULL), 0);
	kap_cgroup_free(cg);
	assert_false(fake_exists("kapsel"));
}

static void test_bad_unified(void **state)
{
	const char *keys[] = {"../memory.max", "memory.high/x", "..", "", "."};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(keys); i++) {
		char *k[] = {(char *)keys[i]}, *v[] = {"1"};
		struct kap_resources res = {.unified_keys = k, .unified_values = v, .n_unified = 1};
		struct kap_cgroup *cg = NULL;
		cleanup_error struct kapsel_error *e = NULL;
		assert_int_equal(kap_cgroup_create(fake_root, "/pre/ctr", "x", &res, 0, &cg, &e),
				 -EINVAL);
		assert_err_has(e, "linux.resources.unified: invalid key");
		assert_false(fake_exists("pre/ctr"));
	}
	/* A key naming a file the kernel does not have. */
	char *k[] = {"memory.nonexistent"}, *v[] = {"1"};
	struct kap_resources res = {.unified_keys = k, .unified_values = v, .n_unified = 1};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/ctr", "x", &res, 0, &cg, &e), -ENOENT);
	assert_err_has(e, "linux.resources.unified");
	assert_err_has(e, "memory.nonexistent not available");
	assert_false(fake_exists("pre/ctr"));
}

static void test_v1_only_resources(void **state)
{
	/* cgroup2 has no kernel TCP limit and no net_cls/net_prio: an error naming the field,
	 * as crun gives, and nothing created. */
	struct kap_net_priority prio[] = {{"eth0", 1}};
	static const char *const msgs[] = {
	    "linux.resources.memory.kernelTCP: not supported on cgroup v2",
	    "linux.resources.network.classID: not supported on cgroup v2",
	    "linux.resources.network.priorities: not supported on cgroup v2",
	};
	struct kap_resources res[] = {
	    {.has_mem_kernel_tcp = true, .mem_kernel_tcp = 1 << 20},
	    {.has_net_classid = true, .net_classid = 42},
	    {.net_priorities = prio, .n_net_priorities = 1},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(res); i++) {
		struct kap_cgroup *cg = NULL;
		cleanup_error struct kapsel_error *e = NULL;
		assert_int_equal(kap_cgroup_create(fake_root, "/pre/ctr", "x", &res[i], 0, &cg, &e),
				 -EOPNOTSUPP);
		assert_err_has(e, msgs[i]);
		assert_false(fake_exists("pre/ctr"));
	}
}

static void test_rdma(void **state)
{
	struct kap_rdma_limit l[] = {{"mlx4_0", .has_hca_objects = true, .hca_objects = 7}};
	struct kap_resources res = {.rdma = l, .n_rdma = 1};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	/* Not delegated here: named with the subtree_control that lacks it. */
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/ctr", "x", &res, 0, &cg, &e),
			 -EOPNOTSUPP);
	assert_err_has(e, "linux.resources.rdma: rdma controller not available");
	assert_false(fake_exists("pre/ctr"));
	kapsel_error_free(steal_ptr(e));
	fake_file("pre/cgroup.subtree_control", ALL " rdma");
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/ctr", "x", &res, 0, &cg, &e), 0);
	expect_file("pre/ctr/rdma.max", "mlx4_0 hca_object=7");
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	kap_cgroup_free(cg);
}

static void test_in_use(void **state)
{
	/* An existing, populated leaf is someone else's. */
	fake_dir("pre/busy");
	fake_file("pre/busy/cgroup.procs", "1234\n");
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/busy", "x", NULL, 0, &cg, &e), -EEXIST);
	assert_err_has(e, "already in use");
	assert_true(fake_exists("pre/busy"));

	/* An existing empty leaf is used but never removed. */
	fake_file("pre/busy/cgroup.procs", "");
	fake_file("pre/busy/cgroup.controllers", ALL);
	fake_file("pre/busy/pids.max", "max");
	struct kap_resources res = {.has_pids_limit = true, .pids_limit = 5};
	kapsel_error_free(steal_ptr(e));
	assert_int_equal(kap_cgroup_create(fake_root, "/pre/busy", "x", &res, 0, &cg, &e), 0);
	assert_int_equal(cg->n_created, 0);
	expect_file("pre/busy/pids.max", "5");
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	assert_true(fake_exists("pre/busy"));
	kap_cgroup_free(cg);
}

/* ---- the device filter, run by a minimal interpreter of the instructions it uses ---- */

static int run_filter(const struct bpf_insn *p, size_t n, int type, int access, uint32_t major,
		      uint32_t minor)
{
	uint32_t ctx[3] = {(uint32_t)(access << 16 | type), major, minor};
	uint64_t reg[11] = {0};
	for (size_t pc = 0; pc < n; pc++) {
		const struct bpf_insn *i = &p[pc];
		switch (i->code) {
		case BPF_LDX | BPF_MEM | BPF_W:
			assert_int_equal(i->src_reg, 1);
			reg[i->dst_reg] = ctx[i->off / 4];
			break;
		case BPF_ALU | BPF_AND | BPF_K:
			reg[i->dst_reg] = (uint32_t)(reg[i->dst_reg] & (uint32_t)i->imm);
			break;
		case BPF_ALU | BPF_RSH | BPF_K:
			reg[i->dst_reg] = (uint32_t)reg[i->dst_reg] >> i->imm;
			break;
		case BPF_ALU | BPF_MOV | BPF_X:
			reg[i->dst_reg] = (uint32_t)reg[i->src_reg];
			break;
		case BPF_ALU64 | BPF_MOV | BPF_K:
			reg[i->dst_reg] = (uint64_t)(int64_t)i->imm;
			break;
		case BPF_JMP32 | BPF_JNE | BPF_K:
			if ((uint32_t)reg[i->dst_reg] != (uint32_t)i->imm)
				pc += i->off;
			break;
		case BPF_JMP32 | BPF_JEQ | BPF_K:
			if ((uint32_t)reg[i->dst_reg] == (uint32_t)i->imm)
				pc += i->off;
			break;
		case BPF_JMP32 | BPF_JNE | BPF_X:
			if ((uint32_t)reg[i->dst_reg] != (uint32_t)reg[i->src_reg])
				pc += i->off;
			break;
		case BPF_JMP | BPF_EXIT:
			return (int)reg[0];
		default:
			fail_msg("unexpected instruction 0x%x at %zu", i->code, pc);
		}
	}
	fail_msg("fell off the end");
	return -1;
}

#define R BPF_DEVCG_ACC_READ
#define W BPF_DEVCG_ACC_WRITE
#define M BPF_DEVCG_ACC_MKNOD
#define C BPF_DEVCG_DEV_CHAR
#define B BPF_DEVCG_DEV_BLOCK

static void test_bpf_program(void **state)
{
	struct kap_device_rule rules[] = {
	    {false, 'a', -1, -1, "rwm"}, {true, 'c', 1, 3, "rwm"}, {true, 'c', -1, -1, "m"},
	    {true, 'b', 8, -1, "r"},	 {false, 'c', 1, 3, "w"},  {true, 'c', 136, -1, ""},
	};
	cleanup_free struct bpf_insn *p = NULL;
	size_t n = 0;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cg_bpf_build(rules, KAP_ARRAY_SIZE(rules), &p, &n, &e), 0);
	/* The leading deny-all matches everything: it ends the program, no default needed. */
	assert_int_equal(p[n - 1].code, BPF_JMP | BPF_EXIT);
	assert_int_equal(run_filter(p, n, C, R, 1, 3), 1);
	assert_int_equal(run_filter(p, n, C, W, 1, 3), 0);     /* last match: deny w */
	assert_int_equal(run_filter(p, n, C, R | W, 1, 3), 0); /* w is denied */
	assert_int_equal(run_filter(p, n, C, R | M, 1, 3), 1);
	assert_int_equal(run_filter(p, n, C, M, 5, 1), 1);
	assert_int_equal(run_filter(p, n, C, R, 5, 1), 0);
	assert_int_equal(run_filter(p, n, B, R, 8, 0), 1);
	assert_int_equal(run_filter(p, n, B, W, 8, 0), 0);
	assert_int_equal(run_filter(p, n, B, R, 9, 0), 0);
	assert_int_equal(run_filter(p, n, C, R | W, 136, 4), 1); /* empty access = rwm */

	/* No rules: default deny. */
	free(steal_ptr(p));
	assert_int_equal(kap_cg_bpf_build(NULL, 0, &p, &n, &e), 0);
	assert_int_equal(run_filter(p, n, C, R, 1, 3), 0);

	/* A trailing allow-all makes every earlier rule unreachable: not emitted. */
	struct kap_device_rule all[] = {{false, 'c', 1, 3, "rwm"}, {true, 'a', -1, -1, "rwm"}};
	free(steal_ptr(p));
	assert_int_equal(kap_cg_bpf_build(all, 2, &p, &n, &e), 0);
	assert_int_equal(n, 6 + 2);
	assert_int_equal(run_filter(p, n, C, R, 1, 3), 1);

	struct kap_device_rule bad[] = {{true, 'x', 1, 3, "rwm"}};
	free(steal_ptr(p));
	assert_int_equal(kap_cg_bpf_build(bad, 1, &p, &n, &e), -EINVAL);
	assert_err_has(e, "linux.resources.devices[0]");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_conversions),
	    cmocka_unit_test_setup_teardown(test_detect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_update, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_freeze, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pids_stats_oom, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_json, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_controller, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_unified, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_in_use, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v1_only_resources, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rdma, setup, teardown),
	    cmocka_unit_test(test_bpf_program),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
