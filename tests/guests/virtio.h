/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal virtio-mmio driver for the test kernels (virtio 1.2 §4.2.3, split ring §2.7):
 * one queue of 8 entries, polled (the guest reads the used index rather than taking the
 * interrupt, which it only checks in InterruptStatus). Plain integer code only.
 */
#pragma once
#include "guest.h"

#define VMMIO_BASE  0xd0000000u
#define VMMIO_SIZE  0x200u
#define VMMIO_SLOTS 8
#define VQ_N	    8

#define VIO_ACK	     1
#define VIO_DRIVER   2
#define VIO_DRV_OK   4
#define VIO_FEAT_OK  8
#define VIO_NEED_RST 0x40

#define VD_NEXT	    1
#define VD_WRITE    2
#define VD_INDIRECT 4

struct vdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
struct vq {
	struct vdesc desc[VQ_N];
	struct {
		uint16_t flags, idx, ring[VQ_N], used_event;
	} avail __attribute__((aligned(2)));
	struct {
		uint16_t flags, idx;
		struct {
			uint32_t id, len;
		} ring[VQ_N];
		uint16_t avail_event;
	} used __attribute__((aligned(4)));
	uint16_t last_used;
} __attribute__((aligned(16)));

static inline volatile uint32_t *vreg(uint32_t base, uint32_t off)
{
	return (volatile uint32_t *)(uintptr_t)(base + off);
}

/* The window of the first virtio-mmio device with this id, or 0. */
static inline uint32_t vio_find(uint32_t device_id, unsigned int nth)
{
	for (unsigned int i = 0; i < VMMIO_SLOTS; i++) {
		uint32_t b = VMMIO_BASE + i * VMMIO_SIZE;
		if (*vreg(b, 0) == 0x74726976 && *vreg(b, 4) == 2 && *vreg(b, 8) == device_id &&
		    nth-- == 0)
			return b;
	}
	return 0;
}

/* §3.1.1 initialisation with VERSION_1 plus the wanted low feature bits; queue 0 set up. */
static inline const char *vio_init(uint32_t b, struct vq *q, uint32_t want_lo)
{
	*vreg(b, 0x70) = 0;
	CHECK(*vreg(b, 0x70) == 0, "status not 0 after reset");
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER;
	*vreg(b, 0x14) = 1;
	if (!(*vreg(b, 0x10) & 1))
		return "device lacks VIRTIO_F_VERSION_1";
	*vreg(b, 0x14) = 0;
	uint32_t lo = *vreg(b, 0x10) & want_lo;
	*vreg(b, 0x24) = 0;
	*vreg(b, 0x20) = lo;
	*vreg(b, 0x24) = 1;
	*vreg(b, 0x20) = 1;
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK;
	if (!(*vreg(b, 0x70) & VIO_FEAT_OK))
		return "FEATURES_OK refused";
	*vreg(b, 0x30) = 0;
	if (*vreg(b, 0x34) < VQ_N)
		return "queue 0 too small";
	for (unsigned int i = 0; i < sizeof(*q); i++)
		((volatile uint8_t *)q)[i] = 0;
	*vreg(b, 0x38) = VQ_N;
	*vreg(b, 0x80) = (uint32_t)(uintptr_t)q->desc;
	*vreg(b, 0x84) = 0;
	*vreg(b, 0x90) = (uint32_t)(uintptr_t)&q->avail;
	*vreg(b, 0x94) = 0;
	*vreg(b, 0xa0) = (uint32_t)(uintptr_t)&q->used;
	*vreg(b, 0xa4) = 0;
	*vreg(b, 0x44) = 1;
	if (*vreg(b, 0x44) != 1)
		return "queue not ready";
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK | VIO_DRV_OK;
	return 0;
}

/* Offers the chain at head, kicks, and waits for it to come back. Returns its used length. */
static inline int64_t vio_submit(uint32_t b, struct vq *q, uint16_t head)
{
	volatile struct vq *v = q;
	v->avail.ring[v->avail.idx % VQ_N] = head;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	*vreg(b, 0x50) = 0;
	for (uint32_t spin = 0; v->used.idx == q->last_used; spin++) {
		if (spin > 20000000 || (*vreg(b, 0x70) & VIO_NEED_RST))
			return -1;
	}
	uint32_t len = v->used.ring[q->last_used % VQ_N].len;
	q->last_used++;
	/* The interrupt status is set just after the used index: wait for it, then ack. */
	uint32_t isr = 0;
	for (uint32_t spin = 0; !(isr & 1) && spin < 1000000; spin++)
		isr = *vreg(b, 0x60);
	*vreg(b, 0x64) = isr;
	if (!(isr & 1))
		return -2;
	return len;
}
