/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The split virtqueue against random guest memory: the input picks the queue size, ring
 * addresses and features, and is the RAM the rings, tables and buffers live in. Beyond "no
 * crash, no out-of-RAM access" (ASan sees the RAM's exact bounds), every segment a pop returns
 * must lie inside RAM and a chain may not exceed the queue size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/queue.h"

#define RAM 0x4000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	static struct kap_vq_elem e;
	uint8_t *ram = malloc(RAM);
	if (!ram)
		return 0;
	memset(ram, 0, RAM);
	memcpy(ram, data + 8, size - 8 < RAM ? size - 8 : RAM);
	struct kap_guest_mem mem = {.host = ram, .size = RAM, .low_size = RAM, .fd = -1};
	struct kap_vq q;
	kap_vq_reset(&q, (uint16_t)(1u << (data[0] % 10)));
	if (data[0] & 0x80)
		q.size = (uint16_t)(data[0] | (data[1] << 8));
	q.desc_gpa = (uint64_t)data[2] << 6;
	q.avail_gpa = (uint64_t)data[3] << 6;
	q.used_gpa = (uint64_t)data[4] << 6;
	q.event_idx = data[5] & 1;
	q.indirect = data[5] & 2;
	if (kap_vq_enable(&q, &mem) == 0) {
		q.last_avail = (uint16_t)(data[6] * 257);
		q.used_idx = q.last_avail;
		for (unsigned int round = 0; round < 4 + (data[7] & 15); round++) {
			/* Kicks off and on as a polling device turns them (bits 4-7 of data[7]). */
			if (data[7] & (0x10u << (round % 4)))
				kap_vq_set_notify(&q, round % 2);
			int r = kap_vq_pop(&q, &mem, &e);
			if (r <= 0)
				break;
			if (e.nseg > q.size || e.nread > e.nseg)
				abort();
			for (unsigned int i = 0; i < e.nseg; i++) {
				const struct kap_vq_seg *s = &e.seg[i];
				if (s->host < ram || s->len > RAM || s->host + s->len > ram + RAM)
					abort();
			}
			uint8_t buf[64];
			kap_vq_elem_read(&e, 0, buf, sizeof(buf));
			kap_vq_elem_write(&e, 1, buf, sizeof(buf));
			kap_vq_push(&q, e.head, (uint32_t)e.write_len);
			kap_vq_should_notify(&q);
		}
	}
	free(ram);
	return 0;
}
