/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal modern virtio-pci driver for the test kernels (virtio 1.2 §4.1): bus 0 through
 * configuration mechanism #1 (ports 0xCF8/0xCFC), BAR 0 sized and moved the way Linux does
 * it, the capability list walked for the common, notify, ISR and device structures and MSI-X.
 * One queue, the split ring of virtio.h, polled; the interrupt is then checked separately.
 */
#pragma once
#include "guest.h"
#include "virtio.h"

#define PCI_VENDOR_VIRTIO 0x1af4
/* Where the test moves BAR 0 to: inside kapsel's window, away from the boot assignment. */
#define VPCI_NEW_BAR 0xe8000000u

struct vpci {
	uint32_t bdf; /* bus << 16 | dev << 11 | fn << 8 */
	uint32_t bar, bar_size;
	uint32_t common, isr, device, notify, notify_mult;
	uint32_t msix_cap; /* config-space offset, 0: none */
	uint32_t msix_table;
	uint32_t line; /* interrupt line (the GSI kapsel routes INTA# to) */
	uint32_t ncaps;
};

static inline uint32_t pci_read(uint32_t bdf, uint32_t reg)
{
	outl(0xcf8, 0x80000000u | bdf | (reg & 0xfc));
	return inl(0xcfc);
}

static inline void pci_write(uint32_t bdf, uint32_t reg, uint32_t v)
{
	outl(0xcf8, 0x80000000u | bdf | (reg & 0xfc));
	outl(0xcfc, v);
}

static inline uint8_t pci_read8(uint32_t bdf, uint32_t reg)
{
	return (uint8_t)(pci_read(bdf, reg) >> (8 * (reg & 3)));
}

#define VP8(a)	(*(volatile uint8_t *)(uintptr_t)(a))
#define VP16(a) (*(volatile uint16_t *)(uintptr_t)(a))
#define VP32(a) (*(volatile uint32_t *)(uintptr_t)(a))

/*
 * Finds the nth virtio function of this type on bus 0, sizes BAR 0 (all ones, read back,
 * restore), moves it to VPCI_NEW_BAR + slot * size, turns on memory decoding and bus
 * mastering and walks the capabilities. Returns an error or 0.
 */
static inline const char *vpci_find(uint32_t type, unsigned int nth, struct vpci *p)
{
	for (uint32_t dev = 1; dev < 32; dev++) {
		uint32_t bdf = dev << 11;
		uint32_t id = pci_read(bdf, 0);
		if (id != (PCI_VENDOR_VIRTIO | (0x1040u + type) << 16) || nth-- != 0)
			continue;
		*p = (struct vpci){.bdf = bdf};
		if ((pci_read(bdf, 8) & 0xff) != 1)
			return "virtio-pci revision is not 1";
		uint32_t old = pci_read(bdf, 0x10);
		pci_write(bdf, 4, 0); /* decoding off while the BAR moves */
		pci_write(bdf, 0x10, 0xffffffffu);
		uint32_t mask = pci_read(bdf, 0x10);
		if (mask & 1)
			return "BAR 0 is not a memory BAR";
		p->bar_size = ~(mask & ~0xfu) + 1;
		if (!p->bar_size || (p->bar_size & (p->bar_size - 1)) || (old & (p->bar_size - 1)))
			return "BAR 0 size is not a power of two";
		p->bar = VPCI_NEW_BAR + dev * p->bar_size;
		pci_write(bdf, 0x10, p->bar);
		if (pci_read(bdf, 0x10) != p->bar)
			return "BAR 0 did not keep its new address";
		pci_write(bdf, 4, 0x6); /* memory space, bus master */
		if (!(pci_read(bdf, 4) >> 16 & 0x10))
			return "no capability list";
		p->line = pci_read8(bdf, 0x3c);
		if (pci_read8(bdf, 0x3d) != 1)
			return "interrupt pin is not INTA#";
		for (uint32_t c = pci_read8(bdf, 0x34) & 0xfc, n = 0; c && n < 48;
		     c = pci_read8(bdf, c + 1) & 0xfc, n++) {
			uint8_t cap = pci_read8(bdf, c);
			p->ncaps++;
			if (cap == 0x11) {
				p->msix_cap = c;
				uint32_t t = pci_read(bdf, c + 4);
				if (t & 7)
					return "MSI-X table not in BAR 0";
				p->msix_table = p->bar + t;
				continue;
			}
			if (cap != 0x09 || pci_read8(bdf, c + 4) != 0)
				continue;
			uint32_t addr = p->bar + pci_read(bdf, c + 8);
			switch (pci_read8(bdf, c + 3)) {
			case 1:
				p->common = addr;
				break;
			case 2:
				p->notify = addr;
				p->notify_mult = pci_read(bdf, c + 16);
				break;
			case 3:
				p->isr = addr;
				break;
			case 4:
				p->device = addr;
				break;
			}
		}
		if (!p->common || !p->notify || !p->isr)
			return "a virtio capability is missing";
		return 0;
	}
	return "no such virtio-pci function";
}

/* Common configuration (struct virtio_pci_common_cfg). */
#define VC_DFSEL  0
#define VC_DF	  4
#define VC_GFSEL  8
#define VC_GF	  12
#define VC_MSIX	  16
#define VC_STATUS 20
#define VC_QSEL	  22
#define VC_QSIZE  24
#define VC_QMSIX  26
#define VC_QEN	  28
#define VC_QNOFF  30
#define VC_QDESC  32
#define VC_QAVAIL 40
#define VC_QUSED  48

/*
 * §3.1.1 initialisation with VERSION_1 and the wanted low feature bits; queue 0 set up. With
 * msix_vector (the IDT vector), MSI-X is enabled: table entry 0 is the config vector, entry 1
 * queue 0's, both to the boot CPU's LAPIC; otherwise the queue has no vector (INTx).
 */
static inline const char *vpci_init(struct vpci *p, struct vq *q, uint32_t want_lo,
				    uint32_t msix_vector)
{
	uint32_t c = p->common;
	VP8(c + VC_STATUS) = 0;
	if (VP8(c + VC_STATUS) != 0)
		return "status not 0 after reset";
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER;
	VP32(c + VC_DFSEL) = 1;
	if (!(VP32(c + VC_DF) & 1))
		return "device lacks VIRTIO_F_VERSION_1";
	VP32(c + VC_DFSEL) = 0;
	uint32_t lo = VP32(c + VC_DF) & want_lo;
	VP32(c + VC_GFSEL) = 0;
	VP32(c + VC_GF) = lo;
	VP32(c + VC_GFSEL) = 1;
	VP32(c + VC_GF) = 1;
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK;
	if (!(VP8(c + VC_STATUS) & VIO_FEAT_OK))
		return "FEATURES_OK refused";
	if (msix_vector) {
		if (!p->msix_cap)
			return "no MSI-X capability";
		for (uint32_t e = 0; e < 2; e++) {
			uint32_t a = p->msix_table + e * 16;
			if (!(VP32(a + 12) & 1))
				return "MSI-X vector not masked at reset";
			VP32(a) = 0xfee00000u;
			VP32(a + 4) = 0;
			VP32(a + 8) = msix_vector;
			VP32(a + 12) = 0;
		}
		uint32_t ctl = pci_read(p->bdf, p->msix_cap);
		pci_write(p->bdf, p->msix_cap, (ctl & 0x3fffffffu) | 0x80000000u);
		VP16(c + VC_MSIX) = 0;
		if (VP16(c + VC_MSIX) != 0)
			return "config vector refused";
	}
	VP16(c + VC_QSEL) = 0;
	if (VP16(c + VC_QSIZE) < VQ_N)
		return "queue 0 too small";
	for (unsigned int i = 0; i < sizeof(*q); i++)
		((volatile uint8_t *)q)[i] = 0;
	VP16(c + VC_QSIZE) = VQ_N;
	VP32(c + VC_QDESC) = (uint32_t)(uintptr_t)q->desc;
	VP32(c + VC_QDESC + 4) = 0;
	VP32(c + VC_QAVAIL) = (uint32_t)(uintptr_t)&q->avail;
	VP32(c + VC_QAVAIL + 4) = 0;
	VP32(c + VC_QUSED) = (uint32_t)(uintptr_t)&q->used;
	VP32(c + VC_QUSED + 4) = 0;
	VP16(c + VC_QMSIX) = msix_vector ? 1 : 0xffff;
	if (VP16(c + VC_QMSIX) != (msix_vector ? 1 : 0xffff))
		return "queue vector refused";
	VP16(c + VC_QEN) = 1;
	if (VP16(c + VC_QEN) != 1)
		return "queue not enabled";
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK | VIO_DRV_OK;
	return 0;
}

/* Offers the chain at head, notifies, waits for it. Its used length, or -1 on a timeout. */
static inline int64_t vpci_submit(struct vpci *p, struct vq *q, uint16_t head)
{
	volatile struct vq *v = q;
	v->avail.ring[v->avail.idx % VQ_N] = head;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	VP16(p->notify + VP16(p->common + VC_QNOFF) * p->notify_mult) = 0;
	for (uint32_t spin = 0; v->used.idx == q->last_used; spin++)
		if (spin > 20000000 || (VP8(p->common + VC_STATUS) & VIO_NEED_RST))
			return -1;
	uint32_t len = v->used.ring[q->last_used % VQ_N].len;
	q->last_used++;
	return len;
}
