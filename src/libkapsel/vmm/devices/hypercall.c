/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Paravirtual hypercalls (docs/hypercalls.md). The guest fills a 48-byte request block in its
 * RAM and writes the block's guest-physical address to port 0x600 with a 32-bit OUT; the VMM
 * validates the block's address, runs the call on the vCPU thread and writes the result back
 * into the block before the guest's next instruction. A memory block rather than registers
 * keeps the ABI the same for 32- and 64-bit guests and needs no KVM_GET/SET_REGS per call.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/devices/devices.h"

#define KAP_HC_MAGIC   0x4b415053u /* "KAPS" */
#define KAP_HC_VERSION 0x00010000u /* 1.0 */

enum {
	KAP_HC_GET_VERSION = 0,
	KAP_HC_CONSOLE_WRITE = 1,
	KAP_HC_GET_TIME = 2,
	KAP_HC_POWEROFF = 3,
};

/* The request block, little endian, 8-byte aligned in guest RAM. */
struct kap_hc_block {
	uint32_t magic; /* KAP_HC_MAGIC */
	uint32_t nr;	/* call number */
	uint64_t args[4];
	int64_t ret; /* >= 0 result, or -errno */
};

#define KAP_HC_CONSOLE_MAX 4096

struct kap_hypercall {
	struct kap_vm *vm;
};

struct kap_hypercall *kap_hypercall_new(struct kap_vm *vm)
{
	struct kap_hypercall *h = calloc(1, sizeof(*h));
	if (h)
		h->vm = vm;
	return h;
}

static int64_t dispatch(struct kap_hypercall *h, const struct kap_hc_block *b)
{
	switch (b->nr) {
	case KAP_HC_GET_VERSION:
		return KAP_HC_VERSION;
	case KAP_HC_CONSOLE_WRITE: {
		uint64_t len = b->args[1];
		if (len > KAP_HC_CONSOLE_MAX)
			len = KAP_HC_CONSOLE_MAX;
		const void *p = kap_mem_ptr(&h->vm->mem, b->args[0], len);
		if (!p)
			return -EFAULT;
		kap_console_write(&h->vm->console, p, len);
		return (int64_t)len;
	}
	case KAP_HC_GET_TIME: {
		struct timespec ts;
		clockid_t id = b->args[0] == 1 ? CLOCK_MONOTONIC : CLOCK_REALTIME;
		if (b->args[0] > 1)
			return -EINVAL;
		clock_gettime(id, &ts);
		return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	}
	case KAP_HC_POWEROFF:
		kap_vm_request_exit(h->vm, KAP_VM_POWEROFF, (int)(b->args[0] & 0xff), NULL);
		return 0;
	default:
		return -ENOSYS;
	}
}

static void hypercall_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_hypercall *h = dev;
	if (len != 4)
		return; /* the ABI is a 32-bit OUT; anything else is not a call */
	uint32_t gpa;
	memcpy(&gpa, data, 4);
	struct kap_hc_block *b = kap_mem_ptr(&h->vm->mem, gpa, sizeof(*b));
	if (!b || (gpa & 7))
		return; /* nowhere to report the error: the call is ignored */
	struct kap_hc_block req;
	memcpy(&req, b, sizeof(req)); /* one snapshot: other vCPUs may write the block */
	int64_t ret = req.magic == KAP_HC_MAGIC ? dispatch(h, &req) : -EINVAL;
	memcpy(&b->ret, &ret, sizeof(ret));
	kap_mem_mark_dirty(&h->vm->mem, gpa + offsetof(struct kap_hc_block, ret), sizeof(ret));
}

static void hypercall_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	/* Reading the port tells a guest the interface is there: the magic. */
	uint32_t v = KAP_HC_MAGIC;
	memcpy(data, &v, len > 4 ? 4 : len);
}

const struct kap_dev_ops kap_hypercall_ops = {
    .name = "hypercall",
    .read = hypercall_read,
    .write = hypercall_write,
};
