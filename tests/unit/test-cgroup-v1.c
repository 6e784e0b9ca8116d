/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup v1 and hybrid against a fake cgroupfs (cgroup-fake.h): the memory/memsw write order,
 * cpuset inheritance for new directories, device rule lines, the values written per controller,
 * named hierarchies, freezer, stats, destroy, and the errors for what a layout lacks -- including
 * hybrid hugetlb on a cgroup2 part that does not delegate it.
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

static const char *const hierarchies[] = {"blkio",   "cpu,cpuacct", "cpuset", "devices",
					  "freezer", "memory",	    "pids",   "systemd"};

static void make_v1(const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX];
		fake_dir(names[i]);
		snprintf(p, sizeof(p), "%s/%s", fake_root, names[i]);
		fake_populate_v1(p, names[i]);
	}
	fake_file("cpuset/cpuset.cpus", "0-3");
	fake_file("cpuset/cpuset.mems", "0");
}

static int setup(void **state)
{
	fake_setup(false);
	make_v1(hierarchies, KAP_ARRAY_SIZE(hierarchies));
	return 0;
}

/* Hybrid as on this project's CI machine: cgroup2 at unified/, offering only hugetlb. */
static int setup_hybrid(void **state)
{
	setup(state);
	fake_dir("unified");
	fake_file("unified/cgroup.controllers", "hugetlb");
	fake_file("unified/cgroup.subtree_control", "");
	fake_file("unified/cgroup.procs", "1\n");
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

static void test_memory_plan(void **state)
{
	struct kap_cg_v1_write s[2];
	/* Raising both: memsw first, or memory would exceed the old memsw. */
	struct kap_resources r = {
	    .has_mem_limit = true, .mem_limit = 128, .has_mem_swap = true, .mem_swap = 256};
	assert_int_equal(kap_cg_v1_memory_plan(&r, 64, true, s), 2);
	assert_string_equal(s[0].file, "memory.memsw.limit_in_bytes");
	assert_int_equal(s[0].value, 256);
	assert_string_equal(s[1].file, "memory.limit_in_bytes");
	assert_int_equal(s[1].value, 128);
	/* Lowering both: memory first, or memsw would drop below the old memory. */
	r.mem_limit = 32;
	r.mem_swap = 48;
	assert_int_equal(kap_cg_v1_memory_plan(&r, 64, true, s), 2);
	assert_string_equal(s[0].file, "memory.limit_in_bytes");
	assert_string_equal(s[1].file, "memory.memsw.limit_in_bytes");
	/* Unlimited memory without swap: both unlimited, memsw first. */
	r = (struct kap_resources){.has_mem_limit = true, .mem_limit = -5};
	assert_int_equal(kap_cg_v1_memory_plan(&r, 64, true, s), 2);
	assert_string_equal(s[0].file, "memory.memsw.limit_in_bytes");
	assert_int_equal(s[0].value, -1);
	assert_int_equal(s[1].value, -1);
	/* ... but not where swap accounting is off. */
	assert_int_equal(kap_cg_v1_memory_plan(&r, 64, false, s), 1);
	assert_string_equal(s[0].file, "memory.limit_in_bytes");
	r = (struct kap_resources){.has_mem_swap = true, .mem_swap = 100};
	assert_int_equal(kap_cg_v1_memory_plan(&r, 0, true, s), 1);
	assert_string_equal(s[0].file, "memory.memsw.limit_in_bytes");
	r = (struct kap_resources){.has_mem_limit = true, .mem_limit = 0};
	assert_int_equal(kap_cg_v1_memory_plan(&r, 0, true, s), 0);
}

static void test_device_lines(void **state)
{
	char buf[64];
	struct kap_device_rule r = {true, 'c', 1, 3, "rwm"};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "c 1:3 rwm");
	r = (struct kap_device_rule){false, 'a', -1, -1, "rwm"};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "a *:* rwm");
	r = (struct kap_device_rule){true, 'b', 8, -1, "r"};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "b 8:* r");
	r = (struct kap_device_rule){true, 'c', 136, -1, ""};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "c 136:* rwm");
	r = (struct kap_device_rule){true, 'x', 1, 1, "r"};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), -EINVAL);
	r = (struct kap_device_rule){true, 'c', 1, 1, "rx"};
	assert_int_equal(kap_cg_v1_device_rule(&r, buf, sizeof(buf)), -EINVAL);
}

static struct kap_device_rule rules[] = {
    {false, 'a', -1, -1, "rwm"},
    {true, 'c', 1, 3, "rwm"},
    {true, 'c', 136, -1, "rw"},
    {false, 'c', 1, 3, "m"},
};
static struct kap_throttle rbps[] = {{8, 0, 1048576}, {8, 16, 2048}};

static struct kap_resources full_res(void)
{
	return (struct kap_resources){
	    .has_mem_limit = true,
	    .mem_limit = 64 << 20,
	    .has_mem_swap = true,
	    .mem_swap = 128 << 20,
	    .has_mem_reservation = true,
	    .mem_reservation = 32 << 20,
	    .has_mem_swappiness = true,
	    .mem_swappiness = 10,
	    .has_disable_oom_killer = true,
	    .disable_oom_killer = true,
	    .has_cpu_shares = true,
	    .cpu_shares = 512,
	    .has_cpu_quota = true,
	    .cpu_quota = 50000,
	    .has_cpu_period = true,
	    .cpu_period = 100000,
	    .cpu_mems = "0",
	    .has_pids_limit = true,
	    .pids_limit = 32,
	    .has_blkio_weight = true,
	    .blkio_weight = 300,
	    .throttle_read_bps = rbps,
	    .n_throttle_read_bps = 2,
	    .devices = rules,
	    .n_devices = KAP_ARRAY_SIZE(rules),
	};
}

static void test_detect(void **state)
{
	enum kap_cgroup_mode m;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_detect(fake_root, &m, &e), 0);
	assert_int_equal(m, KAP_CGROUP_LEGACY);
}

static void test_create(void **state)
{
	struct kap_resources res = full_res();
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (kap_cgroup_create(fake_root, NULL, "c1", &res, 4242, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	assert_int_equal(cg->mode, KAP_CGROUP_LEGACY);
	assert_string_equal(cg->path, "/kapsel/c1");
	assert_int_equal(cg->n_dirs, KAP_ARRAY_SIZE(hierarchies));
	assert_int_equal(cg->n_created, 2 * KAP_ARRAY_SIZE(hierarchies));
	assert_null(kap_cgroup_unified_dir(cg));

	/* New cpusets inherit the parent's cpus/mems, then the requested mems apply. */
	expect_file("cpuset/kapsel/cpuset.cpus", "0-3");
	expect_file("cpuset/kapsel/cpuset.mems", "0");
	expect_file("cpuset/kapsel/c1/cpuset.cpus", "0-3");
	expect_file("cpuset/kapsel/c1/cpuset.mems", "0");

	expect_file("memory/kapsel/c1/memory.limit_in_bytes", "67108864");
	expect_file("memory/kapsel/c1/memory.memsw.limit_in_bytes", "134217728");
	expect_file("memory/kapsel/c1/memory.soft_limit_in_bytes", "33554432");
	expect_file("memory/kapsel/c1/memory.swappiness", "10");
	expect_file("memory/kapsel/c1/memory.oom_control", "1");
	expect_file("cpu,cpuacct/kapsel/c1/cpu.shares", "512");
	expect_file("cpu,cpuacct/kapsel/c1/cpu.cfs_quota_us", "50000");
	expect_file("cpu,cpuacct/kapsel/c1/cpu.cfs_period_us", "100000");
	expect_file("pids/kapsel/c1/pids.max", "32");
	expect_file("blkio/kapsel/c1/blkio.weight", "300");
	expect_file("blkio/kapsel/c1/blkio.throttle.read_bps_device", "8:0 10485768:16 2048");
	/* Deny all first, then each rule in order into its file. */
	expect_file("devices/kapsel/c1/devices.deny", "aa *:* rwmc 1:3 m");
	expect_file("devices/kapsel/c1/devices.allow", "c 1:3 rwmc 136:* rw");
	/* Named hierarchies get the directory and the task too. */
	expect_file("systemd/kapsel/c1/cgroup.procs", "4242");
	expect_file("freezer/kapsel/c1/cgroup.procs", "4242");

	/* Freezer: FROZEN reads back at once on the fake. */
	assert_int_equal(kap_cgroup_freeze(cg, true, &e), 0);
	expect_file("freezer/kapsel/c1/freezer.state", "FROZEN");
	bool frozen = false;
	assert_int_equal(kap_cgroup_is_frozen(cg, &frozen, &e), 0);
	assert_true(frozen);
	assert_int_equal(kap_cgroup_freeze(cg, false, &e), 0);
	expect_file("freezer/kapsel/c1/freezer.state", "THAWED");

	/* pids come from the pids hierarchy. */
	fake_file("pids/kapsel/c1/cgroup.procs", "4242\n99\n");
	cleanup_free pid_t *pids = NULL;
	size_t n;
	assert_int_equal(kap_cgroup_pids(cg, &pids, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(pids[1], 99);

	cleanup_json struct kap_json *st = NULL;
	assert_int_equal(kap_cgroup_stats(cg, &st, &e), 0);
	cleanup_free char *s = kap_json_dump(st, false);
	const char *want[] = {"\"total\":1000",	      "\"percpu\":[600,400]", "\"periods\":5",
			      "\"throttledTime\":99", "\"usage\":8192",	      "\"max\":16384",
			      "\"cache\":4096",	      "\"rss\":4096"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(want); i++)
		if (!strstr(s, want[i]))
			fail_msg("stats %s lack %s", s, want[i]);
	uint64_t oom;
	fake_file("memory/kapsel/c1/memory.oom_control",
		  "oom_kill_disable 1\nunder_oom 0\noom_kill 3\n");
	assert_int_equal(kap_cgroup_oom_count(cg, &oom, &e), 0);
	assert_int_equal(oom, 3);

	/* update: lowering memory below memsw writes memory first; both land. */
	struct kap_resources up = {.has_mem_limit = true,
				   .mem_limit = 16 << 20,
				   .has_mem_swap = true,
				   .mem_swap = 32 << 20};
	assert_int_equal(kap_cgroup_update(cg, &up, &e), 0);
	expect_file("memory/kapsel/c1/memory.limit_in_bytes", "16777216");
	expect_file("memory/kapsel/c1/memory.memsw.limit_in_bytes", "33554432");

	/* Unified keys need cgroup2. */
	char *k[] = {"memory.high"}, *v[] = {"1"};
	struct kap_resources u = {.unified_keys = k, .unified_values = v, .n_unified = 1};
	assert_int_equal(kap_cgroup_update(cg, &u, &e), -EOPNOTSUPP);
	assert_err_has(e, "linux.resources.unified");

	assert_int_equal(kap_cgroup_destroy(cg, NULL), 0);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(hierarchies); i++) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s/kapsel", hierarchies[i]);
		assert_false(fake_exists(p));
		assert_true(fake_exists(hierarchies[i]));
	}
}

static void test_existing_parent(void **state)
{
	/* /kapsel exists in memory only: created there is just the leaf, and it survives. */
	fake_dir("memory/kapsel");
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/kapsel/c2", "c2", NULL, 0, &cg, &e), 0);
	assert_int_equal(cg->n_created, 2 * KAP_ARRAY_SIZE(hierarchies) - 1);
	char pre[PATH_MAX];
	snprintf(pre, sizeof(pre), "%s/memory/kapsel", fake_root);
	for (size_t i = 0; i < cg->n_created; i++)
		assert_string_not_equal(cg->created[i], pre);
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	assert_true(fake_exists("memory/kapsel"));
	assert_false(fake_exists("memory/kapsel/c2"));
	assert_false(fake_exists("pids/kapsel"));
}

static void test_shared_parent_busy(void **state)
{
	/* c1 made /kapsel, c2 lives in it too: deleting c1 first leaves the parent to c2, and
	 * its rmdir failing (ENOTEMPTY here, EBUSY on cgroupfs) is no error (issue 10). */
	cleanup_cgroup struct kap_cgroup *c1 = NULL, *c2 = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, NULL, "c1", NULL, 0, &c1, &e), 0);
	assert_int_equal(kap_cgroup_create(fake_root, NULL, "c2", NULL, 0, &c2, &e), 0);
	assert_int_equal(c2->n_created, KAP_ARRAY_SIZE(hierarchies));
	assert_int_equal(kap_cgroup_destroy(c1, &e), 0);
	assert_null(e);
	assert_false(fake_exists("memory/kapsel/c1"));
	assert_true(fake_exists("memory/kapsel/c2"));
	assert_int_equal(kap_cgroup_destroy(c2, &e), 0);
	assert_false(fake_exists("memory/kapsel/c2"));
	/* Nobody left who made /kapsel: it stays, empty, as a pre-existing parent would. */
	assert_true(fake_exists("memory/kapsel"));
}

static struct kap_net_priority prios[] = {{"eth0", 5}};
static struct kap_rdma_limit rdma[] = {{"mlx5_1", .has_hca_handles = true, .hca_handles = 3,
					.has_hca_objects = true, .hca_objects = 10000}};
static const struct kap_resources net_res = {.has_mem_kernel_tcp = true,
					     .mem_kernel_tcp = 1 << 24,
					     .has_net_classid = true,
					     .net_classid = 0x100001,
					     .net_priorities = prios,
					     .n_net_priorities = 1,
					     .rdma = rdma,
					     .n_rdma = 1};

static void test_network_rdma_kernel_tcp(void **state)
{
	static const char *const more[] = {"net_cls,net_prio", "rdma"};
	make_v1(more, KAP_ARRAY_SIZE(more));
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (kap_cgroup_create(fake_root, NULL, "n", &net_res, 0, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	expect_file("memory/kapsel/n/memory.kmem.tcp.limit_in_bytes", "16777216");
	expect_file("net_cls,net_prio/kapsel/n/net_cls.classid", "1048577");
	expect_file("net_cls,net_prio/kapsel/n/net_prio.ifpriomap", "eth0 5");
	expect_file("rdma/kapsel/n/rdma.max", "mlx5_1 hca_handle=3 hca_object=10000");
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
}

static void test_network_rdma_missing(void **state)
{
	/* No net_cls, net_prio or rdma hierarchy: an error naming the controller, no cgroup. */
	static const struct {
		struct kap_resources res;
		const char *msg;
	} cases[] = {
	    {{.has_net_classid = true, .net_classid = 7},
	     "linux.resources.network.classID: net_cls controller not available"},
	    {{.net_priorities = prios, .n_net_priorities = 1},
	     "linux.resources.network.priorities: net_prio controller not available"},
	    {{.rdma = rdma, .n_rdma = 1}, "linux.resources.rdma: rdma controller not available"},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(cases); i++) {
		struct kap_cgroup *cg = NULL;
		cleanup_error struct kapsel_error *e = NULL;
		assert_int_equal(kap_cgroup_create(fake_root, NULL, "n", &cases[i].res, 0, &cg, &e),
				 -ENOENT);
		assert_err_has(e, cases[i].msg);
		assert_null(cg);
		assert_false(fake_exists("memory/kapsel/n"));
	}
	/* A memory hierarchy without the kernelTCP file: named, not ignored. */
	fake_no_kmem_tcp = true;
	struct kap_resources res = {.has_mem_kernel_tcp = true, .mem_kernel_tcp = 4096};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_cgroup_create(fake_root, NULL, "t", &res, 0, &cg, &e);
	fake_no_kmem_tcp = false;
	assert_int_equal(r, -ENOENT);
	assert_err_has(e, "linux.resources.memory.kernelTCP: ");
	assert_err_has(e, "/memory/kapsel/t/memory.kmem.tcp.limit_in_bytes not available");
	assert_false(fake_exists("memory/kapsel/t"));
}

static void test_network_rdma_hybrid(void **state)
{
	/* rdma without a v1 mount goes to cgroup2: refused where cgroup2 lacks it (this
	 * machine: hugetlb only), applied where it offers it. */
	struct kap_resources res = {.rdma = rdma, .n_rdma = 1};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, NULL, "h", &res, 0, &cg, &e), -EOPNOTSUPP);
	assert_err_has(e, "linux.resources.rdma: rdma controller not available");
	assert_false(fake_exists("unified/kapsel/h"));
	kapsel_error_free(steal_ptr(e));
	fake_file("unified/cgroup.controllers", "hugetlb rdma");
	fake_file("unified/cgroup.subtree_control", "hugetlb rdma");
	if (kap_cgroup_create(fake_root, NULL, "h", &res, 0, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	expect_file("unified/kapsel/h/rdma.max", "mlx5_1 hca_handle=3 hca_object=10000");
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	kap_cgroup_free(cg);
}

static void test_missing_controller(void **state)
{
	static const char *const few[] = {"cpu,cpuacct", "memory"};
	fake_teardown();
	fake_setup(false);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(few); i++) {
		char p[PATH_MAX];
		fake_dir(few[i]);
		snprintf(p, sizeof(p), "%s/%s", fake_root, few[i]);
		fake_populate_v1(p, few[i]);
	}
	struct kap_resources res = {
	    .has_mem_limit = true, .mem_limit = 1 << 20, .has_pids_limit = true, .pids_limit = 10};
	struct kap_cgroup *cg = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_create(fake_root, "/k/x", "x", &res, 0, &cg, &e), -ENOENT);
	assert_null(cg);
	assert_string_equal(e->msg, "linux.resources.pids.limit: pids controller not available");
	assert_false(fake_exists("memory/k"));
	assert_false(fake_exists("cpu,cpuacct/k"));

	/* A file the kernel lacks (no swap accounting) names the resource. */
	fake_no_memsw = true;
	res = (struct kap_resources){
	    .has_mem_limit = true, .mem_limit = 1 << 20, .has_mem_swap = true, .mem_swap = 4 << 20};
	kapsel_error_free(steal_ptr(e));
	assert_int_equal(kap_cgroup_create(fake_root, "/k/x", "x", &res, 0, &cg, &e), -ENOENT);
	fake_no_memsw = false;
	assert_err_has(e, "linux.resources.memory.swap: ");
	assert_err_has(e, "/memory/k/x/memory.memsw.limit_in_bytes not available");
	assert_false(fake_exists("memory/k"));
}

static void test_hybrid(void **state)
{
	enum kap_cgroup_mode m;
	cleanup_error struct kapsel_error *e = NULL;
	assert_int_equal(kap_cgroup_detect(fake_root, &m, &e), 0);
	assert_int_equal(m, KAP_CGROUP_HYBRID);

	cleanup_cgroup struct kap_cgroup *cg = NULL;
	struct kap_resources res = {.has_pids_limit = true, .pids_limit = 7};
	assert_int_equal(kap_cgroup_create(fake_root, "/kapsel/h", "h", &res, 4242, &cg, &e), 0);
	assert_int_equal(cg->mode, KAP_CGROUP_HYBRID);
	/* The process is moved into the cgroup2 part as well (as runc does). */
	expect_file("unified/kapsel/h/cgroup.procs", "4242");
	expect_file("pids/kapsel/h/pids.max", "7");
	/* Nothing enabled: the root offers nothing to kapsel/ (its subtree_control is empty). */
	expect_file("unified/kapsel/cgroup.subtree_control", "");
	expect_file("unified/cgroup.subtree_control", "");
	char want[PATH_MAX];
	snprintf(want, sizeof(want), "%s/unified/kapsel/h", fake_root);
	assert_string_equal(kap_cgroup_unified_dir(cg), want);
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	assert_false(fake_exists("unified/kapsel"));
	kap_cgroup_free(steal_ptr(cg));

	/* hugetlb has no v1 mount and the cgroup2 root does not delegate it. */
	static struct kap_hugepage_limit huge[] = {{"2MB", 1 << 21}};
	struct kap_resources hres = {.hugepage_limits = huge, .n_hugepage_limits = 1};
	assert_int_equal(kap_cgroup_create(fake_root, "/kapsel/h", "h", &hres, 4242, &cg, &e),
			 -EOPNOTSUPP);
	assert_null(cg);
	assert_err_has(e, "linux.resources.hugepageLimits: hugetlb controller not available");
	snprintf(want, sizeof(want), "%s/unified/cgroup.subtree_control", fake_root);
	assert_err_has(e, want);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(hierarchies); i++) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s/kapsel", hierarchies[i]);
		assert_false(fake_exists(p));
	}
	assert_false(fake_exists("unified/kapsel"));

	/* Once the root delegates hugetlb, the limit goes to the cgroup2 file. */
	fake_file("unified/cgroup.subtree_control", "hugetlb");
	kapsel_error_free(steal_ptr(e));
	if (kap_cgroup_create(fake_root, "/kapsel/h", "h", &hres, 4242, &cg, &e) < 0)
		fail_msg("create: %s", e->msg);
	expect_file("unified/kapsel/cgroup.subtree_control", "+hugetlb");
	expect_file("unified/kapsel/h/hugetlb.2MB.max", "2097152");
	assert_int_equal(kap_cgroup_destroy(cg, &e), 0);
	expect_file("unified/cgroup.subtree_control", "hugetlb");

	/* State round trip keeps the per-hierarchy directories. */
	cleanup_json struct kap_json *j = kap_cgroup_to_json(cg);
	cleanup_free char *s = kap_json_dump(j, false);
	assert_non_null(strstr(s, "\"mode\":\"hybrid\""));
	assert_non_null(strstr(s, "\"controllers\":\"cpu,cpuacct\""));
	cleanup_cgroup struct kap_cgroup *back = NULL;
	assert_int_equal(kap_cgroup_from_json(j, &back, &e), 0);
	assert_int_equal(back->n_dirs, cg->n_dirs);
	for (size_t i = 0; i < cg->n_dirs; i++) {
		assert_string_equal(back->dirs[i].path, cg->dirs[i].path);
		assert_int_equal(back->dirs[i].mask, cg->dirs[i].mask);
		assert_int_equal(back->dirs[i].v2, cg->dirs[i].v2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_memory_plan),
	    cmocka_unit_test(test_device_lines),
	    cmocka_unit_test_setup_teardown(test_detect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_existing_parent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_shared_parent_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_network_rdma_kernel_tcp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_network_rdma_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_network_rdma_hybrid, setup_hybrid, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_controller, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hybrid, setup_hybrid, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
