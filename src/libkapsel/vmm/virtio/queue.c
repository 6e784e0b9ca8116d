/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueues, device side (virtio 1.2 §2.7). The rings live in guest memory that the
 * driver may rewrite at any moment from another vCPU, so each descriptor is copied once and
 * only the copy is used (no double fetch), every index is reduced or range-checked before it
 * addresses anything, and a chain's walk is bounded by the queue size, which also ends loops.
 */
#include <errno.h>
#include <linux/virtio_ring.h>
#include <string.h>

#include "vmm/virtio/queue.h"

/* §2.7: sizes of the three areas for a queue of n entries, event fields included. */
#define DESC_BYTES(n)  (16ULL * (n))
#define AVAIL_BYTES(n) (6ULL + 2ULL * (n))
#define USED_BYTES(n)  (6ULL + 8ULL * (n))

void kap_vq_reset(struct kap_vq *q, uint16_t max_size)
{
	*q = (struct kap_vq){.size = max_size};
}

static int fault(struct kap_vq *q, const char *why)
{
	q->fault = why;
	return -EINVAL;
}

int kap_vq_enable(struct kap_vq *q, const struct kap_guest_mem *m)
{
	if (q->size == 0 || q->size > KAP_VQ_MAX_SIZE || (q->size & (q->size - 1)))
		return fault(q, "queue size is not a power of two up to the maximum");
	/* §2.7.1 alignment: descriptor table 16, available ring 2, used ring 4. */
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return fault(q, "misaligned ring address");
	q->desc = kap_mem_ptr(m, q->desc_gpa, DESC_BYTES(q->size));
	q->avail = kap_mem_ptr(m, q->avail_gpa, AVAIL_BYTES(q->size));
	q->used = kap_mem_ptr(m, q->used_gpa, USED_BYTES(q->size));
	if (!q->desc || !q->avail || !q->used) {
		q->desc = NULL;
		q->avail = NULL;
		q->used = NULL;
		return fault(q, "ring outside guest RAM");
	}
	q->last_avail = 0;
	q->used_idx = 0;
	q->signalled_valid = false;
	q->ready = true;
	return 0;
}

static uint16_t load16(const void *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static void store16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

/* The avail_event field after the used ring (§2.7.10). */
static uint16_t *avail_event(struct kap_vq *q)
{
	return (uint16_t *)((uint8_t *)q->used + 4 + 8ULL * q->size);
}

/* The used_event field after the available ring. */
static const uint16_t *used_event(const struct kap_vq *q)
{
	return (const uint16_t *)((const uint8_t *)q->avail + 4 + 2ULL * q->size);
}

bool kap_vq_has_work(const struct kap_vq *q)
{
	return q->ready && load16(&q->avail->idx) != q->last_avail;
}

int kap_vq_pop(struct kap_vq *q, const struct kap_guest_mem *m, struct kap_vq_elem *e)
{
	if (!q->ready)
		return 0;
	uint16_t avail_idx = load16(&q->avail->idx);
	if (avail_idx == q->last_avail && q->event_idx && !q->no_notify) {
		/*
		 * Ask for a kick at the next entry, then look again: the driver may have added one
		 * between our read and our write, and would not kick for it (§2.7.10).
		 */
		store16(avail_event(q), q->last_avail);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail_idx = load16(&q->avail->idx);
	}
	uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
	if (pending == 0)
		return 0;
	if (pending > q->size)
		return fault(q, "available index more than the queue size ahead");

	uint16_t head = load16(&q->avail->ring[q->last_avail & (q->size - 1)]);
	if (head >= q->size)
		return fault(q, "head descriptor index out of range");

	const struct vring_desc *table = q->desc;
	uint32_t tsize = q->size, idx = head, count = 0;
	bool indirect = false, seen_write = false;
	e->head = head;
	e->nseg = e->nread = 0;
	e->read_len = e->write_len = 0;
	for (;;) {
		struct vring_desc d;
		memcpy(&d, &table[idx], sizeof(d));
		if (d.flags & VRING_DESC_F_INDIRECT) {
			/* §2.7.5.3.1: not negotiated, nested, or combined with NEXT is an error. */
			if (!q->indirect)
				return fault(q,
					     "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
			if (indirect)
				return fault(q, "nested indirect descriptor");
			if (d.flags & VRING_DESC_F_NEXT)
				return fault(q, "indirect descriptor with NEXT set");
			if (d.len == 0 || d.len % sizeof(struct vring_desc))
				return fault(q, "indirect table length not a multiple of 16");
			if (d.len / sizeof(struct vring_desc) > q->size)
				return fault(q, "indirect table longer than the queue");
			table = kap_mem_ptr(m, d.addr, d.len);
			if (!table)
				return fault(q, "indirect table outside guest RAM");
			tsize = d.len / sizeof(struct vring_desc);
			idx = 0;
			indirect = true;
			continue;
		}
		/* A chain visits at most size descriptors; a longer one loops (§2.7.5.3.1). */
		if (++count > q->size)
			return fault(q, "descriptor chain longer than the queue (a loop?)");
		uint8_t *host = kap_mem_ptr(m, d.addr, d.len);
		if (!host)
			return fault(q, "buffer outside guest RAM");
		bool w = d.flags & VRING_DESC_F_WRITE;
		if (!w && seen_write)
			return fault(q, "device-readable buffer after a writable one");
		seen_write |= w;
		e->seg[e->nseg++] = (struct kap_vq_seg){.host = host, .len = d.len, .write = w};
		if (w) {
			e->write_len += d.len;
		} else {
			e->nread++;
			e->read_len += d.len;
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= tsize)
			return fault(q, "next descriptor index out of range");
		idx = d.next;
	}
	q->last_avail++;
	if (q->event_idx && !q->no_notify)
		store16(avail_event(q), q->last_avail);
	return 1;
}

void kap_vq_set_notify(struct kap_vq *q, bool enable)
{
	q->no_notify = !enable;
	if (!q->ready)
		return;
	if (q->event_idx) {
		store16(avail_event(q), (uint16_t)(q->last_avail - (enable ? 0 : 1)));
	} else {
		uint16_t f = load16(&q->used->flags);
		f = enable ? (uint16_t)(f & ~VRING_USED_F_NO_NOTIFY)
			   : (uint16_t)(f | VRING_USED_F_NO_NOTIFY);
		store16(&q->used->flags, f);
	}
	/* The store must be visible before the caller looks at avail idx again. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void kap_vq_push(struct kap_vq *q, uint16_t head, uint32_t len)
{
	if (!q->ready)
		return;
	struct vring_used_elem *u = &q->used->ring[q->used_idx & (q->size - 1)];
	u->id = head;
	u->len = len;
	q->used_idx++;
	/* The element must be visible before the index that publishes it (§2.7.8). */
	store16(&q->used->idx, q->used_idx);
}

bool kap_vq_should_notify(struct kap_vq *q)
{
	if (!q->ready)
		return false;
	/* Our used idx store must be ordered before reading the driver's suppression fields. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx)
		return !(load16(&q->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
	uint16_t old = q->signalled, now = q->used_idx;
	bool valid = q->signalled_valid;
	q->signalled = now;
	q->signalled_valid = true;
	if (!valid)
		return true;
	/* vring_need_event(): interrupt when used_event lies in [old, now). */
	uint16_t ev = load16(used_event(q));
	return (uint16_t)(now - ev - 1) < (uint16_t)(now - old);
}

uint64_t kap_vq_elem_read(const struct kap_vq_elem *e, uint64_t off, void *buf, uint64_t len)
{
	uint64_t done = 0;
	for (unsigned int i = 0; i < e->nread && done < len; i++) {
		const struct kap_vq_seg *s = &e->seg[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		uint64_t n = s->len - off;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)buf + done, s->host + off, n);
		done += n;
		off = 0;
	}
	return done;
}

uint64_t kap_vq_elem_write(const struct kap_vq_elem *e, uint64_t off, const void *buf, uint64_t len)
{
	uint64_t done = 0;
	for (unsigned int i = e->nread; i < e->nseg && done < len; i++) {
		const struct kap_vq_seg *s = &e->seg[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		uint64_t n = s->len - off;
		if (n > len - done)
			n = len - done;
		memcpy(s->host + off, (const uint8_t *)buf + done, n);
		done += n;
		off = 0;
	}
	return done;
}
