/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pvpanic (QEMU's docs/specs/pvpanic.txt): one I/O port, ACPI device QEMU0001. A read gives
 * the events the host understands; the guest's pvpanic driver writes PANICKED (bit 0) from
 * its panic notifier, which ends the VM with an error that says so instead of the silent
 * reboot or hang panic=N leaves. CRASH_LOADED (bit 1: a kdump kernel takes over) lets it run.
 */
#include <stdint.h>
#include <string.h>

#include "core/log.h"
#include "vmm/devices/devices.h"

#define PVPANIC_PANICKED     (1u << 0)
#define PVPANIC_CRASH_LOADED (1u << 1)

static void pvpanic_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	(void)dev;
	(void)off;
	memset(data, 0, len);
	*(uint8_t *)data = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
}

static void pvpanic_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	(void)off;
	(void)len;
	uint8_t events = *(const uint8_t *)data;
	if (events & PVPANIC_PANICKED)
		kap_vm_request_exit(dev, KAP_VM_PANIC, 0, NULL);
	else if (events & PVPANIC_CRASH_LOADED)
		kap_info("vm: the guest kernel crashed into its kdump kernel (pvpanic)");
}

const struct kap_dev_ops kap_pvpanic_ops = {
    .name = "pvpanic",
    .read = pvpanic_read,
    .write = pvpanic_write,
};
