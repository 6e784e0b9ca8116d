/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hardware-reduced ACPI sleep registers (ACPI 6.4 §4.8.3.7, §4.8.3.8). The FADT points
 * SLEEP_CONTROL_REG and SLEEP_STATUS_REG here; the guest writes (SLP_TYP << 2) | SLP_EN with
 * SLP_TYP from \_S5 in the DSDT to power off. Other sleep states are not offered (no \_S1-\_S4).
 */
#include <stdlib.h>

#include "vmm/devices/devices.h"

#define SLP_EN	   0x20
#define SLP_TYP(v) (((v) >> 2) & 7)
#define WAK_STS	   0x80

struct kap_acpi_pm {
	struct kap_vm *vm;
};

struct kap_acpi_pm *kap_acpi_pm_new(struct kap_vm *vm)
{
	struct kap_acpi_pm *p = calloc(1, sizeof(*p));
	if (p)
		p->vm = vm;
	return p;
}

static void acpi_pm_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	/* Status: never asleep, so WAK_STS (the last wake completed) and nothing else. */
	*(uint8_t *)data = off == 1 ? WAK_STS : 0;
}

static void acpi_pm_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_acpi_pm *p = dev;
	uint8_t v = *(const uint8_t *)data;
	if (off == 0 && (v & SLP_EN) && SLP_TYP(v) == KAP_ACPI_S5_SLP_TYP)
		kap_vm_request_exit(p->vm, KAP_VM_POWEROFF, 0, NULL);
}

const struct kap_dev_ops kap_acpi_pm_ops = {
    .name = "acpi-sleep",
    .read = acpi_pm_read,
    .write = acpi_pm_write,
};

static void post_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
}

const struct kap_dev_ops kap_post_ops = {
    .name = "post-code",
    .write = post_write,
};
