/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The split virtqueue (virtio 1.2 §2.7), device side. Pure: it touches only the guest memory it
 * is given, so unit tests and the fuzzer drive it over a fake one. Everything the driver wrote
 * (ring addresses, indices, descriptor addresses, lengths, flags, chains) is checked before use;
 * a violation returns -EINVAL with the reason in q->fault, and the transport then marks the
 * device DEVICE_NEEDS_RESET (§2.1.2). Nothing here allocates.
 */
#pragma once
#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/vmm.h"

/* The largest queue kapsel offers; a chain (with its indirect table) is at most this long. */
#define KAP_VQ_MAX_SIZE 256

/* One buffer of a chain, already translated to host memory (bounds checked). */
struct kap_vq_seg {
	uint8_t *host;
	uint32_t len;
	bool write; /* device-writable (VIRTQ_DESC_F_WRITE) */
};

/* A popped request: its head index (for kap_vq_push) and its buffers, readable ones first. */
struct kap_vq_elem {
	uint16_t head;
	unsigned int nseg, nread; /* nread: the leading device-readable segments */
	uint64_t read_len, write_len;
	struct kap_vq_seg seg[KAP_VQ_MAX_SIZE];
};

struct kap_vq {
	/* Set by the transport from the driver's writes; checked by kap_vq_enable. */
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool ready;
	bool event_idx; /* VIRTIO_F_RING_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_F_INDIRECT_DESC negotiated */

	/* Host views of the rings, valid while ready. */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;

	uint16_t last_avail; /* next avail entry the device reads */
	uint16_t used_idx;   /* shadow of used->idx */
	uint16_t signalled;  /* used_idx when the driver was last interrupted (EVENT_IDX) */
	bool signalled_valid;
	bool no_notify;	   /* the device is polling: kicks suppressed (kap_vq_set_notify) */
	const char *fault; /* why the last call failed, for the log */
};

/* Resets q to its power-on state (size max_size, not ready). */
void kap_vq_reset(struct kap_vq *q, uint16_t max_size);
/*
 * Checks size (a power of two up to KAP_VQ_MAX_SIZE), alignment (§2.7: 16, 2, 4) and that the
 * three areas lie inside guest RAM, then maps them. -EINVAL with q->fault set otherwise.
 */
int kap_vq_enable(struct kap_vq *q, const struct kap_guest_mem *m);
/*
 * Takes the next available chain into e. Returns 1 when one was taken, 0 when the ring is
 * empty, -EINVAL (q->fault set) when the driver broke the rules: avail idx more than size
 * ahead, head or next index out of range, a chain longer than the queue (a loop), a buffer
 * outside RAM, an indirect table that is misaligned, empty, outside RAM, nested or chained, a
 * readable buffer after a writable one.
 */
int kap_vq_pop(struct kap_vq *q, const struct kap_guest_mem *m, struct kap_vq_elem *e);
/* Returns a chain to the driver with len bytes written into its writable buffers. */
void kap_vq_push(struct kap_vq *q, uint16_t head, uint32_t len);
/*
 * Whether the driver wants an interrupt for what was pushed since the last one: the used_event
 * rule of §2.7.10 with EVENT_IDX, otherwise VIRTQ_AVAIL_F_NO_INTERRUPT. Call once per batch.
 */
bool kap_vq_should_notify(struct kap_vq *q);
/*
 * Asks the driver for kicks (enable) or tells it none are needed while the device polls the
 * ring: VRING_USED_F_NO_NOTIFY, or with EVENT_IDX an avail_event the driver has already passed
 * (§2.7.10), which kap_vq_pop leaves alone until kicks are enabled again. After enabling, the
 * caller must look at the ring once more: the driver may have added an entry without a kick.
 */
void kap_vq_set_notify(struct kap_vq *q, bool enable);
/* True when avail idx has moved past what was consumed (more work, or a missed kick). */
bool kap_vq_has_work(const struct kap_vq *q);

/* Copies up to len bytes from the readable (or into the writable) buffers of e at offset. */
uint64_t kap_vq_elem_read(const struct kap_vq_elem *e, uint64_t off, void *buf, uint64_t len);
uint64_t kap_vq_elem_write(const struct kap_vq_elem *e, uint64_t off, const void *buf,
			   uint64_t len);
