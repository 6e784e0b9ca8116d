/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-balloon's pure parts (vmm/virtio/balloon.c, vmm/config.c): PFN arrays decoded into
 * runs of pages inside RAM (virtio 1.2 §5.5.6), statistics buffers (§5.5.6.3), the
 * --balloon option syntax; and the device itself over a fake guest RAM, for what only the
 * device decides: which pages go back to the host on hugetlbfs (whole 2 MiB pages only).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <linux/virtio_config.h>
#include <sys/mman.h>

#include "core/error.h"
#include "vmm/virtio/balloon.h"

#define LOW  (64u << 12)
#define HIGH (16u << 12)

static uint8_t ram[LOW + HIGH];
static const struct kap_guest_mem mem = {
    .host = ram, .size = LOW + HIGH, .low_size = LOW, .fd = -1};

struct runs {
	unsigned int n;
	uint64_t gpa[16], len[16];
};

static void record(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *r = opaque;
	assert_true(r->n < 16);
	r->gpa[r->n] = gpa;
	r->len[r->n++] = len;
}

static uint64_t decode(const uint32_t *pfns, unsigned int n, struct runs *r)
{
	uint8_t buf[64 * 4];
	for (unsigned int i = 0; i < n; i++)
		for (int k = 0; k < 4; k++)
			buf[i * 4 + (unsigned int)k] = (uint8_t)(pfns[i] >> (8 * k));
	uint64_t ignored = 0;
	memset(r, 0, sizeof(*r));
	kap_balloon_decode_pfns(&mem, buf, (uint64_t)n * 4, record, r, &ignored);
	return ignored;
}

static void test_runs(void **state)
{
	(void)state;
	struct runs r;
	/* 3 consecutive, a gap, 1, then 2 consecutive in high RAM (PFN 0x100000 = 4 GiB). */
	const uint32_t pfns[] = {5, 6, 7, 9, 0x100000, 0x100001};
	assert_int_equal(decode(pfns, 6, &r), 0);
	assert_int_equal(r.n, 3);
	assert_int_equal(r.gpa[0], 5 << 12);
	assert_int_equal(r.len[0], 3 << 12);
	assert_int_equal(r.gpa[1], 9 << 12);
	assert_int_equal(r.len[1], 1 << 12);
	assert_int_equal(r.gpa[2], 0x100000000ULL);
	assert_int_equal(r.len[2], 2 << 12);
}

static void test_outside_ram(void **state)
{
	(void)state;
	struct runs r;
	/*
	 * The last low page, then the first page past low RAM (not RAM: the hole), a page past
	 * high RAM, the largest PFN. Runs never cross from low RAM into the hole.
	 */
	const uint32_t pfns[] = {63, 64, 0x100000 + 16, 0xffffffffu, 0xc0000, 62};
	assert_int_equal(decode(pfns, 6, &r), 4);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.gpa[0], 63 << 12);
	assert_int_equal(r.len[0], 1 << 12);
	assert_int_equal(r.gpa[1], 62 << 12);
}

static void test_partial_pfn(void **state)
{
	(void)state;
	/* A length that is not a multiple of 4: the trailing bytes are not a PFN. */
	const uint8_t buf[6] = {1, 0, 0, 0, 2, 0};
	struct runs r = {0};
	uint64_t ignored = 0;
	kap_balloon_decode_pfns(&mem, buf, sizeof(buf), record, &r, &ignored);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.gpa[0], 1 << 12);
	assert_int_equal(ignored, 0);
}

static void test_stats(void **state)
{
	(void)state;
	/* {tag 4, 1 MiB}, {tag 99, ignored}, {tag 5, 2^40}, then 5 bytes of a partial entry. */
	uint8_t buf[35] = {0};
	buf[0] = 4;
	buf[2 + 2] = 0x10;
	buf[10] = 99;
	buf[12] = 7;
	buf[20] = 5;
	buf[22 + 5] = 1;
	buf[30] = 3;
	uint64_t stats[VIRTIO_BALLOON_S_NR] = {0};
	uint32_t valid = 0;
	kap_balloon_decode_stats(buf, sizeof(buf), stats, &valid);
	assert_int_equal(valid, (1u << 4) | (1u << 5));
	assert_int_equal(stats[4], 1 << 20);
	assert_int_equal(stats[5], 1ULL << 40);
	assert_int_equal(stats[3], 0);
	assert_string_equal(kap_balloon_stat_name(4), "free_memory");
	assert_string_equal(kap_balloon_stat_name(9), "hugetlb_failures");
	assert_null(kap_balloon_stat_name(10));
}

static void test_parse_option(void **state)
{
	(void)state;
	struct kapsel_vm_config c = {0};
	struct kapsel_error *err = NULL;
	assert_int_equal(kapsel_vm_parse_balloon("on", &c, &err), 0);
	assert_true(c.balloon.enabled);
	assert_int_equal(c.balloon.amount_mib, 0);
	assert_int_equal(kapsel_vm_parse_balloon("amount_mib=64,deflate_on_oom=on,stats_interval_s="
						 "5,free_page_reporting=on",
						 &c, &err),
			 0);
	assert_int_equal(c.balloon.amount_mib, 64);
	assert_true(c.balloon.deflate_on_oom && c.balloon.free_page_reporting);
	assert_int_equal(c.balloon.stats_interval_s, 5);
	static const char *const bad[] = {"amount_mib=",
					  "amount_mib=-1",
					  "amount_mib=16777216",
					  "stats_interval_s=86401",
					  "deflate_on_oom",
					  "free_page_reporting=yes",
					  "size=1",
					  "amount_mib=1x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kapsel_vm_parse_balloon(bad[i], &c, &err), -EINVAL);
		assert_non_null(strstr(err->msg, "--balloon "));
		kapsel_error_free(err);
		err = NULL;
	}
	/* A refused option leaves the config as it was. */
	assert_int_equal(c.balloon.amount_mib, 64);
}

/* ---- the device over fake RAM: 4 MiB, rings in the first pages, huge page 1 at 2 MiB ---- */

#define DRAM	 (4u << 20)
#define DDESC	 0x1000
#define DAVAIL	 0x2000
#define DUSED	 0x3000
#define DPFNS	 0x4000
#define HUGE_GPA (2u << 20)

struct dev {
	uint8_t *ram;
	struct kap_guest_mem mem;
	struct kap_virtio_dev d;
};

static struct dev *dev_new(bool hugetlb)
{
	struct dev *t = calloc(1, sizeof(*t));
	t->ram = mmap(NULL, DRAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(t->ram != MAP_FAILED);
	t->mem = (struct kap_guest_mem){.host = t->ram, .size = DRAM, .low_size = DRAM, .fd = -1};
	struct kapsel_vm_balloon cfg = {.enabled = true};
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_virtio_balloon_new(&t->d, &cfg, &t->mem, hugetlb, &err), 0);
	t->d.driver_features = t->d.features;
	t->d.status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
		      VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;
	for (unsigned int q = 0; q < 2; q++) {
		/* Both queues share one ring area: only one is used at a time. */
		struct kap_vq *vq = &t->d.vq[q];
		kap_vq_reset(vq, 8);
		vq->desc_gpa = DDESC;
		vq->avail_gpa = DAVAIL;
		vq->used_gpa = DUSED;
		assert_int_equal(kap_vq_enable(vq, &t->mem), 0);
	}
	memset(t->ram + HUGE_GPA, 0xaa, 2u << 20);
	return t;
}

static void dev_free(struct dev *t)
{
	kap_virtio_destroy(&t->d);
	munmap(t->ram, DRAM);
	free(t);
}

/* Sends n PFNs from first on queue q (0 inflate, 1 deflate); returns when it was used. */
static void dev_send(struct dev *t, unsigned int q, uint32_t first, uint32_t n)
{
	uint32_t *pfns = (uint32_t *)(t->ram + DPFNS);
	for (uint32_t i = 0; i < n; i++)
		pfns[i] = first + i;
	struct vring_desc *d = (struct vring_desc *)(t->ram + DDESC);
	d[0] = (struct vring_desc){DPFNS, n * 4, 0, 0};
	struct vring_avail *a = (struct vring_avail *)(t->ram + DAVAIL);
	struct vring_used *u = (struct vring_used *)(t->ram + DUSED);
	uint16_t before = u->idx;
	/* The other queue's indices follow the shared ring's. */
	t->d.vq[q].last_avail = a->idx;
	t->d.vq[q].used_idx = u->idx;
	a->ring[a->idx % 8] = 0;
	a->idx++;
	t->d.ops->process(&t->d, q);
	assert_int_equal(u->idx, (uint16_t)(before + 1));
}

static bool page_kept(struct dev *t, uint32_t pfn)
{
	return t->ram[(uint64_t)pfn << 12] == 0xaa;
}

static void test_anonymous_pages_go_at_once(void **state)
{
	(void)state;
	struct dev *t = dev_new(false);
	dev_send(t, 0, HUGE_GPA >> 12, 3);
	assert_false(page_kept(t, HUGE_GPA >> 12));
	assert_false(page_kept(t, (HUGE_GPA >> 12) + 2));
	assert_true(page_kept(t, (HUGE_GPA >> 12) + 3));
	struct kap_balloon_info info;
	kap_balloon_get(&t->d, &info);
	assert_int_equal(info.inflated_total, 3);
	dev_free(t);
}

static void test_hugetlb_whole_pages_only(void **state)
{
	(void)state;
	struct dev *t = dev_new(true);
	uint32_t base = HUGE_GPA >> 12;
	/* 511 of the 512 pages, in two requests: nothing goes back yet. */
	dev_send(t, 0, base, 256);
	dev_send(t, 0, base + 256, 255);
	assert_true(page_kept(t, base) && page_kept(t, base + 300));
	/* The guest takes one back, then inflates the last: still one page missing. */
	dev_send(t, 1, base + 10, 1);
	dev_send(t, 0, base + 511, 1);
	assert_true(page_kept(t, base) && page_kept(t, base + 511));
	struct kap_balloon_info info;
	kap_balloon_get(&t->d, &info);
	assert_int_equal(info.inflated_total, 0);
	/* It inflates page 10 again: the huge page is complete and goes back whole. */
	dev_send(t, 0, base + 10, 1);
	assert_false(page_kept(t, base));
	assert_false(page_kept(t, base + 511));
	kap_balloon_get(&t->d, &info);
	assert_int_equal(info.inflated_total, 512);
	dev_free(t);
}

static void test_hugetlb_reset_forgets(void **state)
{
	(void)state;
	struct dev *t = dev_new(true);
	uint32_t base = HUGE_GPA >> 12;
	dev_send(t, 0, base, 256);
	/* A reset (the guest rebooted): the pages inflated before are the new driver's. */
	pthread_mutex_lock(&t->d.lock);
	t->d.ops->reset(&t->d);
	pthread_mutex_unlock(&t->d.lock);
	dev_send(t, 0, base + 256, 256);
	assert_true(page_kept(t, base) && page_kept(t, base + 300));
	dev_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_runs),
	    cmocka_unit_test(test_outside_ram),
	    cmocka_unit_test(test_partial_pfn),
	    cmocka_unit_test(test_stats),
	    cmocka_unit_test(test_parse_option),
	    cmocka_unit_test(test_anonymous_pages_go_at_once),
	    cmocka_unit_test(test_hugetlb_whole_pages_only),
	    cmocka_unit_test(test_hugetlb_reset_forgets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
