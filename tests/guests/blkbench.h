/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=blkbench (bench/vm-blk): virtio-blk read throughput over virtio-pci, on kapsel and on
 * QEMU (-M pc, SeaBIOS, "-device virtio-blk-pci,disable-legacy=on"). virtio-pci.h's vpci_find
 * only knows kapsel's layout (structures in BAR 0, 32-bit); QEMU puts them in BAR 4, a 64-bit
 * BAR, with the legacy I/O BAR 0 absent. So this finder walks the capabilities for whatever
 * BAR they name and keeps the address the firmware (kapsel's boot assignment, SeaBIOS) gave
 * it; vpci_init then sets up queue 0 without MSI-X (polled, one request in flight).
 *
 *   seq=MIB   MiB read sequentially from sector 0 in requests of req=KIB (default 1024)
 *   rand=N    N reads of 4 KiB at pseudo-random 4 KiB-aligned offsets (seed=S)
 *
 * Prints "blkbench seq TSC" and "blkbench rand TSC" (rdtsc cycles of each phase) and, where
 * the kapsel hypercall clock exists, "blkbench tsc_hz HZ" measured against it; then PASS.
 * seq=0 rand=0 is the zero-work run: device found and initialised, nothing read.
 */
#pragma once
#include "guest.h"
#include "virtio.h"
#include "virtio-pci.h"

#define BB_BUF 0x01000000u /* 16 MiB: the data buffer (RAM is at least 32 MiB here) */

static struct vpci bb_vp;
static struct vq bb_vq;
static struct blk_hdr_bb {
	uint32_t type, reserved;
	uint64_t sector;
} bb_hdr;
static volatile uint8_t bb_status;
static uint32_t bb_notify;
#define BB_MAXRAND 8192
static uint32_t bb_sect[BB_MAXRAND];

static inline uint64_t bb_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* The address of BAR n (memory, 32- or 64-bit); moved below 4 GiB when it is above or unset. */
static const char *bb_bar(uint32_t bdf, uint32_t n, uint32_t *out)
{
	uint32_t lo = pci_read(bdf, 0x10 + 4 * n);
	if (lo & 1)
		return "structure BAR is an I/O BAR";
	uint32_t hi = (lo & 6) == 4 ? pci_read(bdf, 0x14 + 4 * n) : 0;
	if (hi || !(lo & ~0xfu)) {
		pci_write(bdf, 0x10 + 4 * n, VPCI_NEW_BAR);
		if ((lo & 6) == 4)
			pci_write(bdf, 0x14 + 4 * n, 0);
		lo = pci_read(bdf, 0x10 + 4 * n);
	}
	*out = lo & ~0xfu;
	return 0;
}

static const char *bb_find(void)
{
	for (uint32_t dev = 1; dev < 32; dev++) {
		uint32_t bdf = dev << 11;
		if (pci_read(bdf, 0) != (PCI_VENDOR_VIRTIO | 0x1042u << 16))
			continue;
		bb_vp = (struct vpci){.bdf = bdf};
		pci_write(bdf, 4, (pci_read(bdf, 4) & 0xffff) | 0x6); /* memory, bus master */
		for (uint32_t c = pci_read8(bdf, 0x34) & 0xfc, k = 0; c && k < 48;
		     c = pci_read8(bdf, c + 1) & 0xfc, k++) {
			if (pci_read8(bdf, c) != 0x09)
				continue;
			uint32_t base;
			const char *bad = bb_bar(bdf, pci_read8(bdf, c + 4), &base);
			if (bad)
				return bad;
			uint32_t addr = base + pci_read(bdf, c + 8);
			switch (pci_read8(bdf, c + 3)) {
			case 1:
				bb_vp.common = addr;
				break;
			case 2:
				bb_vp.notify = addr;
				bb_vp.notify_mult = pci_read(bdf, c + 16);
				break;
			case 3:
				bb_vp.isr = addr;
				break;
			case 4:
				bb_vp.device = addr;
				break;
			}
		}
		if (!bb_vp.common || !bb_vp.notify || !bb_vp.isr || !bb_vp.device)
			return "a virtio capability is missing";
		return 0;
	}
	return "no virtio-blk-pci function (1af4:1042)";
}

/* One read of len bytes at sector into buf; polls for the completion. */
static inline void bb_read(uint64_t sector, uint32_t buf, uint32_t len)
{
	volatile struct vq *v = &bb_vq;
	bb_hdr.sector = sector;
	v->desc[1].addr = buf;
	v->desc[1].len = len;
	bb_status = 0xee;
	v->avail.ring[v->avail.idx % VQ_N] = 0;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	/* Kick unless the device said it is polling (VRING_USED_F_NO_NOTIFY), as Linux does. */
	if (!(v->used.flags & 1))
		VP16(bb_notify) = 0;
	for (uint32_t spin = 0; v->used.idx == bb_vq.last_used; spin++)
		if (spin > 200000000u)
			fail("blkbench: request timed out");
	bb_vq.last_used++;
	if (bb_status != 0)
		fail("blkbench: read failed");
}

static void test_blkbench(const char *cmd)
{
	char v[24];
	uint32_t seq_mib = 0, nrand = 0, req_kib = 1024, seed = 1;
	if (cmdline_get(cmd, "seq", v, sizeof(v)))
		seq_mib = (uint32_t)atou(v);
	if (cmdline_get(cmd, "rand", v, sizeof(v)))
		nrand = (uint32_t)atou(v);
	if (cmdline_get(cmd, "req", v, sizeof(v)) && atou(v))
		req_kib = (uint32_t)atou(v);
	if (cmdline_get(cmd, "seed", v, sizeof(v)))
		seed = (uint32_t)atou(v);
	const char *bad = bb_find();
	CHECK(!bad, bad);
	bad = vpci_init(&bb_vp, &bb_vq, 0, 0);
	CHECK(!bad, bad);
	bb_notify = bb_vp.notify + VP16(bb_vp.common + VC_QNOFF) * bb_vp.notify_mult;
	uint64_t cap = VP32(bb_vp.device) | (uint64_t)VP32(bb_vp.device + 4) << 32;
	uint32_t req = req_kib * 1024;
	CHECK(req <= 1024 * 1024 && !(req & 511), "req= must be 1..1024 KiB, whole sectors");
	CHECK(cap >= 2 * 8 && cap >= (uint64_t)req / 512, "disk too small");
	/* The chain never changes but for the buffer: header, data (device-writable), status. */
	bb_hdr = (struct blk_hdr_bb){0, 0, 0};
	bb_vq.desc[0] = (struct vdesc){(uintptr_t)&bb_hdr, sizeof(bb_hdr), VD_NEXT, 1};
	bb_vq.desc[1] = (struct vdesc){BB_BUF, req, VD_NEXT | VD_WRITE, 2};
	bb_vq.desc[2] = (struct vdesc){(uintptr_t)&bb_status, 1, VD_WRITE, 0};
	bb_read(0, BB_BUF, 4096); /* warm-up: the first request's costs stay out of the timing */
	/*
	 * Everything but the requests is done before the clock starts: every guest instruction
	 * is slow where KVM emulates them. Random offsets: a 32-bit LCG (Numerical Recipes)
	 * over the disk's 4 KiB blocks, 24 bits of it masked (power-of-two block count) or
	 * reduced modulo the count.
	 */
	uint64_t r, nreq = udiv((uint64_t)seq_mib * 1024, req_kib, &r), spr = req / 512;
	uint32_t nblk = (uint32_t)(cap >> 3 > 0xffffffu ? 0xffffffu : cap >> 3), x = seed;
	CHECK(nrand <= BB_MAXRAND, "rand= above 8192");
	for (uint32_t i = 0; i < nrand; i++) {
		x = x * 1664525u + 1013904223u;
		uint64_t blk = (x >> 8) & (nblk - 1);
		if (nblk & (nblk - 1))
			udiv(x >> 8, nblk, &blk);
		bb_sect[i] = (uint32_t)blk * 8;
	}
	int hc = inl(HYPERCALL_PORT) == HC_MAGIC;
	int64_t ns0 = hc ? hypercall(2, 1, 0) : 0;
	uint64_t t0 = bb_rdtsc();
	/* Sequential: wraps to sector 0 at the end of the disk. */
	for (uint64_t i = 0, s = 0; i < nreq; i++, s += spr) {
		if (s + spr > cap)
			s = 0;
		bb_read(s, BB_BUF, req);
	}
	uint64_t t1 = bb_rdtsc();
	for (uint32_t i = 0; i < nrand; i++)
		bb_read(bb_sect[i], BB_BUF + (i & 255) * 4096, 4096);
	uint64_t t2 = bb_rdtsc();
	int64_t ns2 = hc ? hypercall(2, 1, 0) : 0;
	puts_("blkbench seq ");
	putu(t1 - t0);
	puts_("\nblkbench rand ");
	putu(t2 - t1);
	puts_("\nblkbench reqs ");
	putu(nreq);
	putc_(' ');
	putu(nrand);
	putc_('\n');
	if (hc && ns2 > ns0) {
		puts_("blkbench tsc_hz ");
		putu(udiv((t2 - t0) * 1000000, udiv((uint64_t)(ns2 - ns0), 1000, &r) + 1, &r));
		putc_('\n');
	}
	pass();
}
