/* SPDX-License-Identifier: Apache-2.0 */
/*
 * QEMU's isa-debug-exit: a write of C ends the VM with exit status (C << 1) | 1, so a test
 * kernel can report pass/fail without a power-off path. Accepts 1-, 2- and 4-byte writes.
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/devices.h"

struct kap_debug_exit {
	struct kap_vm *vm;
};

struct kap_debug_exit *kap_debug_exit_new(struct kap_vm *vm)
{
	struct kap_debug_exit *d = calloc(1, sizeof(*d));
	if (d)
		d->vm = vm;
	return d;
}

static void debug_exit_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_debug_exit *d = dev;
	uint32_t code = 0;
	memcpy(&code, data, len > 4 ? 4 : len);
	kap_vm_request_exit(d->vm, KAP_VM_DEBUG_EXIT, (int)((code << 1) | 1), NULL);
}

const struct kap_dev_ops kap_debug_exit_ops = {
    .name = "debug-exit",
    .write = debug_exit_write,
};
