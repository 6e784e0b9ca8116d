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
 *   transport=pci  the device is a virtio-pci function (INTx, polled) rather than virtio-mmio
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
#include "virtio-pci.h"

#define BL_F_STATS     (1u << 1)
#define BL_F_OOM       (1u << 2)
#define BL_F_REPORTING (1u << 5)
#define BL_POOL_BASE   (16u << 20)
#define BL_CHUNK       256

static struct vq bl_inq, bl_defq, bl_statq, bl_repq;
static uint32_t bl_pfns[BL_CHUNK];
static uint8_t bl_stats[10 * 6];

/* The device over either transport: config space, status, notifications. */
struct bl_dev {
	int pci;
	uint32_t b; /* virtio-mmio window */
	struct vpci p;
	uint16_t qnoff[4];
};

static uint32_t bl_cfg_read(const struct bl_dev *d, uint32_t off)
{
	return d->pci ? VP32(d->p.device + off) : *vreg(d->b, 0x100 + off);
}
static void bl_cfg_write(const struct bl_dev *d, uint32_t off, uint32_t v)
{
	if (d->pci)
		VP32(d->p.device + off) = v;
	else
		*vreg(d->b, 0x100 + off) = v;
}
static int bl_needs_reset(const struct bl_dev *d)
{
	return (d->pci ? VP8(d->p.common + VC_STATUS) : *vreg(d->b, 0x70)) & VIO_NEED_RST;
}
static void bl_notify(const struct bl_dev *d, unsigned int qi)
{
	if (d->pci)
		VP16(d->p.notify + d->qnoff[qi] * d->p.notify_mult) = (uint16_t)qi;
	else
		*vreg(d->b, 0x50) = qi;
}

/* virtio-pci §3.1.1 with queues 0..nq-1 (VQ_N entries each), no MSI-X: 0 or why not. */
static const char *bl_pci_init(struct bl_dev *d, struct vq **qs, unsigned int nq, uint32_t feat)
{
	uint32_t c = d->p.common;
	VP8(c + VC_STATUS) = 0;
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER;
	VP32(c + VC_GFSEL) = 0;
	VP32(c + VC_GF) = feat;
	VP32(c + VC_GFSEL) = 1;
	VP32(c + VC_GF) = 1;
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK;
	if (!(VP8(c + VC_STATUS) & VIO_FEAT_OK))
		return "FEATURES_OK refused";
	for (unsigned int i = 0; i < nq; i++) {
		struct vq *q = qs[i];
		VP16(c + VC_QSEL) = (uint16_t)i;
		if (VP16(c + VC_QSIZE) < VQ_N)
			return "queue too small";
		bzero_(q, sizeof(*q));
		VP16(c + VC_QSIZE) = VQ_N;
		VP32(c + VC_QDESC) = (uint32_t)(uintptr_t)q->desc;
		VP32(c + VC_QDESC + 4) = 0;
		VP32(c + VC_QAVAIL) = (uint32_t)(uintptr_t)&q->avail;
		VP32(c + VC_QAVAIL + 4) = 0;
		VP32(c + VC_QUSED) = (uint32_t)(uintptr_t)&q->used;
		VP32(c + VC_QUSED + 4) = 0;
		d->qnoff[i] = VP16(c + VC_QNOFF);
		VP16(c + VC_QEN) = 1;
		if (VP16(c + VC_QEN) != 1)
			return "queue not enabled";
	}
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK | VIO_DRV_OK;
	return 0;
}

/* Offers the chain at descriptor 0 (already filled) on queue qi. */
static void bl_give(const struct bl_dev *d, struct vq *q, unsigned int qi)
{
	volatile struct vq *v = q;
	v->avail.ring[v->avail.idx % VQ_N] = 0;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	bl_notify(d, qi);
}

/* Waits up to ms for q's next used entry: 0, or -1 on a timeout or reset. */
static int bl_take(const struct bl_dev *d, struct vq *q, uint32_t ms)
{
	volatile struct vq *v = q;
	int64_t end = now_ns() + (int64_t)ms * 1000000;
	for (uint32_t spin = 0; v->used.idx == q->last_used; spin++)
		if ((spin & 255) == 0 && (now_ns() > end || bl_needs_reset(d)))
			return -1;
	q->last_used++;
	return 0;
}

/* One device-readable buffer at descriptor 0, offered on queue qi. */
static void bl_give_buf(const struct bl_dev *d, struct vq *q, unsigned int qi, const void *buf,
			uint32_t len)
{
	volatile struct vq *v = q;
	v->desc[0].addr = (uintptr_t)buf;
	v->desc[0].len = len;
	v->desc[0].flags = 0;
	v->desc[0].next = 0;
	bl_give(d, q, qi);
}

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
static void bl_send(const struct bl_dev *d, struct vq *q, unsigned int qi, uint32_t n)
{
	bl_give_buf(d, q, qi, bl_pfns, n * 4);
	CHECK(bl_take(d, q, 20000) == 0, "balloon request not used within 20 s");
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

	static struct bl_dev dev;
	struct bl_dev *d = &dev;
	cmdline_get(cmd, "transport", v, sizeof(v));
	d->pci = streq(v, "pci");
	uint32_t offered;
	if (d->pci) {
		const char *nf = vpci_find(5, 0, &d->p);
		CHECK(!nf, nf);
		CHECK(d->p.device, "virtio-balloon without a device-specific structure");
		VP32(d->p.common + VC_DFSEL) = 0;
		offered = VP32(d->p.common + VC_DF);
	} else {
		d->b = vio_find(5, 0);
		CHECK(d->b, "no virtio-balloon device");
		*vreg(d->b, 0x14) = 0;
		offered = *vreg(d->b, 0x10);
	}
	uint32_t feat = offered & (BL_F_STATS | BL_F_OOM | BL_F_REPORTING);
	struct vq *qs[4] = {&bl_inq, &bl_defq, 0, 0};
	unsigned int nq = 2, statqi = 0, repqi = 0;
	if (feat & BL_F_STATS)
		statqi = nq, qs[nq++] = &bl_statq;
	if (feat & BL_F_REPORTING)
		repqi = nq, qs[nq++] = &bl_repq;
	const char *why = d->pci ? bl_pci_init(d, qs, nq, feat) : vdev_init(d->b, qs, nq, feat);
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
		bl_give_buf(d, &bl_statq, statqi, bl_stats, sizeof(bl_stats));
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
			bl_give(d, &bl_repq, repqi);
			CHECK(bl_take(d, &bl_repq, 20000) == 0, "report not used within 20 s");
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
		bl_send(d, &bl_inq, 0, 3);
		puts_("balloon: bad pfns sent\n");
	}

	uint32_t actual = 0, last_printed = 0xffffffffu;
	for (;;) {
		uint32_t target = bl_cfg_read(d, 0);
		if (target > pool_pages)
			target = pool_pages;
		if (target > actual) {
			uint32_t n = target - actual < BL_CHUNK ? target - actual : BL_CHUNK;
			for (uint32_t i = 0; i < n; i++)
				bl_pfns[i] = (BL_POOL_BASE >> 12) + actual + i;
			bl_send(d, &bl_inq, 0, n);
			actual += n;
			bl_cfg_write(d, 4, actual);
		} else if (target < actual) {
			uint32_t n = actual - target < BL_CHUNK ? actual - target : BL_CHUNK;
			for (uint32_t i = 0; i < n; i++)
				bl_pfns[i] = (BL_POOL_BASE >> 12) + actual - n + i;
			bl_send(d, &bl_defq, 1, n);
			actual -= n;
			bl_cfg_write(d, 4, actual);
			bl_touch(BL_POOL_BASE + (actual << 12), n << 12);
		} else if (actual != last_printed) {
			CHECK(bl_cfg_read(d, 4) == actual, "actual does not read back");
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
			bl_give_buf(d, &bl_statq, statqi, bl_stats, sizeof(bl_stats));
			if (round <= 3) {
				puts_("balloon: stats ");
				putu(round);
				putc_('\n');
			}
		}
		CHECK(!bl_needs_reset(d), "balloon needs reset");
	}
}
