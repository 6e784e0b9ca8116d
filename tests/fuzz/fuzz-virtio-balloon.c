/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-balloon's request decoding (virtio/balloon.c) against random driver input: the
 * input's first byte picks the decoder, the rest is an inflateq/deflateq PFN array or a statsq
 * buffer. The fake RAM has a low and a high region (at 4 GiB), as kapsel's layout does.
 * Beyond "no crash": every run handed to the callback is page-aligned, non-empty and wholly
 * inside one RAM region, runs never overlap a PFN counted as ignored, and the PFNs in runs
 * plus the ignored ones add up to the PFNs in the buffer; statistics set only known tags.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/balloon.h"

#define LOW  0x8000
#define HIGH 0x4000

struct seen {
	const struct kap_guest_mem *m;
	uint64_t pages;
};

static void run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct seen *s = opaque;
	if (!len || (gpa | len) & 4095 || !kap_mem_ptr(s->m, gpa, len))
		abort();
	s->pages += len / 4096;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static uint8_t ram[LOW + HIGH];
	struct kap_guest_mem mem = {.host = ram, .size = LOW + HIGH, .low_size = LOW, .fd = -1};
	const uint8_t *buf = data + 1;
	uint64_t len = size - 1;
	if (data[0] & 1) {
		uint64_t stats[VIRTIO_BALLOON_S_NR] = {0};
		uint32_t valid = 0;
		kap_balloon_decode_stats(buf, len, stats, &valid);
		if (valid >> VIRTIO_BALLOON_S_NR)
			abort();
		for (unsigned int t = 0; t < VIRTIO_BALLOON_S_NR; t++)
			if (!kap_balloon_stat_name(t))
				abort();
		if (kap_balloon_stat_name(VIRTIO_BALLOON_S_NR))
			abort();
		return 0;
	}
	struct seen s = {.m = &mem};
	uint64_t ignored = 0;
	kap_balloon_decode_pfns(&mem, buf, len, run, &s, &ignored);
	if (s.pages + ignored != len / 4)
		abort();
	return 0;
}
