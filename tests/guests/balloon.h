/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=balloon: virtio-balloon (virtio 1.2 §5.5) over virtio-mmio, driven the way Linux's
 * virtio_balloon driver drives it, with a pool of pages standing in for the guest's free
 * memory. Options on the command line:
 *   pool=MiB    the pages the balloon may take, at 16 MiB (default 64); touched first, so the
 *               host has them resident before the balloon gives them back
 *   report=MiB  a region after the pool, touched, then handed over as free on the reporting
 *               queue in 2 MiB blocks (VIRTIO_BALLOON_F_REPORTING), as Linux's page
 *               reporting does
 *   bad=1       first sends an inflate request naming PFNs outside RAM (a hostile driver)
 *   mem=MiB     the total_memory statistic to send (default 128)
 * Queues are numbered as Linux numbers them: inflateq, deflateq, then statsq and reporting_vq
 * only when negotiated. The loop then follows num_pages forever: inflate (256 PFNs a request,
 * Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX) or deflate (touching the pages again afterwards, as
 * a guest that uses them would), writing actual after each request and printing
 * "balloon: actual N" when it reaches num_pages; it answers every statistics request with
 * fresh numbers ("balloon: stats N" for the first few).
 */
#pragma once
#include "guest.h"
#include "virtio.h"
#include "virtio-dev.h"

#define BL_F_STATS     (1u << 1)
#define BL_F_OOM       (1u << 2)
#define BL_F_REPORTING (1u << 5)
#define BL_POOL_BASE   (16u << 20)
#define BL_CHUNK       256

static struct vq bl_inq, bl_defq, bl_statq, bl_repq;
static uint32_t bl_pfns[BL_CHUNK];
static uint8_t bl_stats[10 * 6];

static void bl_touch(uint32_t from, uint32_t len)
{
	for (uint32_t a = from; a < from + len; a += 4096)
		*(volatile uint8_t *)(uintptr_t)a = 1;
}

static void bl_put_stat(unsigned int i, uint16_t tag, uint64_t v)
{
	uint8_t *p = bl_stats + i * 10;
	p[0] = (uint8_t)tag;
	p[1] = (uint8_t)(tag >> 8);
	for (int k = 0; k < 8; k++)
		p[2 + k] = (uint8_t)(v >> (8 * k));
}

/* The statistics a driver sends: tags 0 (swap-in), 3 (minor faults), 4, 5, 6 (memory). */
static void bl_fill_stats(uint64_t round, uint32_t mem_mib, uint32_t free_pages)
{
	bl_put_stat(0, 0, 0);
	bl_put_stat(1, 3, round);
	bl_put_stat(2, 4, (uint64_t)free_pages * 4096);
	bl_put_stat(3, 5, (uint64_t)mem_mib << 20);
	bl_put_stat(4, 6, (uint64_t)free_pages * 4096);
	bl_put_stat(5, 7, 4096);
}

/* One request of n PFNs on queue qi; waits for the device to use it. */
static void bl_send(uint32_t b, struct vq *q, unsigned int qi, uint32_t n)
{
	uint32_t len;
	vq_give(b, q, qi, 0, bl_pfns, n * 4, 0);
	CHECK(vq_take(b, q, &len, 20000) == 0, "balloon request not used within 20 s");
}

static void test_balloon(const char *cmd)
{
	char v[16];
	cmdline_get(cmd, "pool", v, sizeof(v));
	uint32_t pool_mib = v[0] ? (uint32_t)atou(v) : 64;
	cmdline_get(cmd, "report", v, sizeof(v));
	uint32_t report_mib = (uint32_t)atou(v);
	cmdline_get(cmd, "mem", v, sizeof(v));
	uint32_t mem_mib = v[0] ? (uint32_t)atou(v) : 128;
	cmdline_get(cmd, "bad", v, sizeof(v));
	int bad = streq(v, "1");
	uint32_t pool_pages = pool_mib * 256;

	uint32_t b = vio_find(5, 0);
	CHECK(b, "no virtio-balloon device");
	*vreg(b, 0x14) = 0;
	uint32_t offered = *vreg(b, 0x10);
	uint32_t feat = offered & (BL_F_STATS | BL_F_OOM | BL_F_REPORTING);
	struct vq *qs[4] = {&bl_inq, &bl_defq, 0, 0};
	unsigned int nq = 2, statqi = 0, repqi = 0;
	if (feat & BL_F_STATS)
		statqi = nq, qs[nq++] = &bl_statq;
	if (feat & BL_F_REPORTING)
		repqi = nq, qs[nq++] = &bl_repq;
	const char *why = vdev_init(b, qs, nq, feat);
	CHECK(!why, why);
	puts_("balloon: features ");
	putx(feat);
	putc_('\n');

	bl_touch(BL_POOL_BASE, pool_mib << 20);
	uint32_t report_base = BL_POOL_BASE + (pool_mib << 20);
	bl_touch(report_base, report_mib << 20);
	uint64_t round = 0;
	if (statqi) {
		bl_fill_stats(round, mem_mib, pool_pages);
		vq_give(b, &bl_statq, statqi, 0, bl_stats, sizeof(bl_stats), 0);
	}
	puts_("balloon: ready\n");

	if (report_mib) {
		CHECK(repqi, "free page reporting not offered");
		/* Chains of up to VQ_N device-writable 2 MiB blocks, as page_reporting sends. */
		uint32_t blocks = report_mib / 2, done = 0;
		while (done < blocks) {
			volatile struct vq *q = &bl_repq;
			uint32_t n = blocks - done < VQ_N ? blocks - done : VQ_N;
			for (uint32_t i = 0; i < n; i++) {
				q->desc[i].addr = report_base + ((done + i) << 21);
				q->desc[i].len = 2u << 20;
				q->desc[i].flags = VD_WRITE | (i + 1 < n ? VD_NEXT : 0);
				q->desc[i].next = (uint16_t)(i + 1);
			}
			q->avail.ring[q->avail.idx % VQ_N] = 0;
			__asm__ volatile("" ::: "memory");
			q->avail.idx = (uint16_t)(q->avail.idx + 1);
			__asm__ volatile("mfence" ::: "memory");
			*vreg(b, 0x50) = repqi;
			uint32_t len;
			CHECK(vq_take(b, &bl_repq, &len, 20000) == 0,
			      "report not used within 20 s");
			done += n;
		}
		puts_("balloon: reported ");
		putu(report_mib);
		puts_(" MiB\n");
	}
	if (bad) {
		/* 256 MiB, 3 GiB (the MMIO hole) and 16 TiB: none is RAM of a small guest. */
		bl_pfns[0] = 0x10000;
		bl_pfns[1] = 0xc0000;
		bl_pfns[2] = 0xffffffffu;
		bl_send(b, &bl_inq, 0, 3);
		puts_("balloon: bad pfns sent\n");
	}

	uint32_t actual = 0, last_printed = 0xffffffffu;
	for (;;) {
		uint32_t target = *vreg(b, 0x100);
		if (target > pool_pages)
			target = pool_pages;
		if (target > actual) {
			uint32_t n = target - actual < BL_CHUNK ? target - actual : BL_CHUNK;
			for (uint32_t i = 0; i < n; i++)
				bl_pfns[i] = (BL_POOL_BASE >> 12) + actual + i;
			bl_send(b, &bl_inq, 0, n);
			actual += n;
			*vreg(b, 0x104) = actual;
		} else if (target < actual) {
			uint32_t n = actual - target < BL_CHUNK ? actual - target : BL_CHUNK;
			for (uint32_t i = 0; i < n; i++)
				bl_pfns[i] = (BL_POOL_BASE >> 12) + actual - n + i;
			bl_send(b, &bl_defq, 1, n);
			actual -= n;
			*vreg(b, 0x104) = actual;
			bl_touch(BL_POOL_BASE + (actual << 12), n << 12);
		} else if (actual != last_printed) {
			CHECK(*vreg(b, 0x104) == actual, "actual does not read back");
			puts_("balloon: actual ");
			putu(actual);
			putc_('\n');
			last_printed = actual;
		}
		volatile struct vq *sq = &bl_statq;
		if (statqi && sq->used.idx != bl_statq.last_used) {
			bl_statq.last_used++;
			round++;
			bl_fill_stats(round, mem_mib, pool_pages - actual);
			vq_give(b, &bl_statq, statqi, 0, bl_stats, sizeof(bl_stats), 0);
			if (round <= 3) {
				puts_("balloon: stats ");
				putu(round);
				putc_('\n');
			}
		}
		CHECK(!(*vreg(b, 0x70) & VIO_NEED_RST), "balloon needs reset");
	}
}
