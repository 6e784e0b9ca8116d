/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-mmio register handler (vmm/virtio/mmio.c) and the devices behind it (blk over a
 * memfd, rng) driven by a random sequence of register reads and writes, with the guest RAM
 * taken from the input too. A QueueNotify runs the device's queue processing inline (the
 * fuzzer starts no device thread). Nothing may crash or touch memory outside RAM.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/virtio/transport.h"

#define RAM 0x4000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 + RAM / 16)
		return 0;
	uint8_t *ram = calloc(1, RAM);
	if (!ram)
		return 0;
	/* The first RAM/16 bytes seed the start of RAM; the rest is the register script. */
	memcpy(ram, data + 1, RAM / 16);
	struct kap_guest_mem mem = {.host = ram, .size = RAM, .low_size = RAM, .fd = -1};
	struct kap_virtio_dev d;
	struct kapsel_error *err = NULL;
	int mfd = -1, r;
	if (data[0] & 1) {
		char path[64];
		mfd = memfd_create("fuzz-disk", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, 64 * 1024) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
		struct kapsel_vm_disk disk = {.id = "disk0", .path = path, .ro = data[0] & 2};
		r = kap_virtio_blk_new(&d, &disk, &mem, &err);
	} else {
		r = kap_virtio_rng_new(&d, &mem, &err);
	}
	if (r < 0)
		abort();
	struct kap_mmio_transport t = {.dev = &d, .base = 0, .gsi = 16};
	const uint8_t *p = data + 1 + RAM / 16, *end = data + size;
	/* Each step: op (1 byte), offset (2), value (4). */
	while (end - p >= 7) {
		uint8_t op = p[0];
		uint64_t off = (uint64_t)(p[1] | (p[2] << 8)) % 0x200;
		uint32_t v;
		memcpy(&v, p + 3, 4);
		p += 7;
		unsigned int len = 1u << (op >> 6);
		if (off + len > 0x200)
			continue;
		uint8_t buf[8] = {0};
		if (op & 1) {
			/* Queue addresses land in RAM more often than not. */
			if (off >= 0x80 && off < 0xa8 && !(op & 2))
				v %= RAM;
			memcpy(buf, &v, 4);
			kap_virtio_mmio_ops.write(&t, off, buf, len);
			if (off == 0x50 && v < d.ops->nqueues)
				d.ops->process(&d, v);
		} else {
			kap_virtio_mmio_ops.read(&t, off, buf, len);
		}
	}
	kap_virtio_destroy(&d);
	kapsel_error_free(err);
	if (mfd >= 0)
		close(mfd);
	free(ram);
	return 0;
}
