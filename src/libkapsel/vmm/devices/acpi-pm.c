/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI power management registers. Hardware-reduced (the default): the sleep control and
 * status registers (ACPI 6.4 §4.8.3.7, §4.8.3.8) at 0x608/0x609 that the FADT names; the
 * guest writes (SLP_TYP << 2) | SLP_EN with SLP_TYP from \_S5 in the DSDT to power off.
 *
 * Full (--acpi full): the fixed hardware of §4.8.3 at 0x604-0x60f, one block after the
 * hypercall port (0x600-0x603): PM1a_CNT at 0x604 (SCI_EN bit 0, always set: there is no
 * SMI_CMD to switch modes; SLP_TYP bits 10-12, SLP_EN bit 13), the PM timer at 0x608 (QEMU's
 * port: 32 bits, TMR_VAL_EXT, counting at 3.579545 MHz from the host's CLOCK_MONOTONIC),
 * PM1a_EVT at 0x60c (status, write 1 to clear; enable). No fixed event raises the SCI: the
 * buttons are control methods (FADT flags) and the timer's overflow is not signalled.
 *
 * Sleep states: S5 in both; with full ACPI (and kapsel's own FACS, i.e. no --firmware) S3 too:
 * SLP_TYP 1 parks the machine (pause.c kap_vm_suspend) until `vm wake`, which starts it at
 * the FACS waking vector with WAK_STS set. Other SLP_TYP values are ignored.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/devices/devices.h"

#define SLP_EN	   0x20
#define SLP_TYP(v) (((v) >> 2) & 7)
#define WAK_STS	   0x80

#define PM1_SCI_EN     (1u << 0)
#define PM1_SLP_TYP(v) (((v) >> 10) & 7)
#define PM1_SLP_EN     (1u << 13)
#define PM1_WAK_STS    (1u << 15)
#define PM_TMR_HZ      3579545ull

struct kap_acpi_pm {
	struct kap_vm *vm;
	bool full;
	uint64_t t0_ns;		  /* the PM timer's zero */
	uint16_t pm1_sts, pm1_en; /* PM1a_EVT */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct kap_acpi_pm *kap_acpi_pm_new(struct kap_vm *vm, bool full)
{
	struct kap_acpi_pm *p = calloc(1, sizeof(*p));
	if (p) {
		p->vm = vm;
		p->full = full;
		p->t0_ns = now_ns();
		/* The machine came up as from a wake: WAK_STS set until the OS clears it. */
		p->pm1_sts = PM1_WAK_STS;
	}
	return p;
}

/* Ticks since creation, mod 2^32 (§4.8.3.3: the OS handles the wrap). */
static uint32_t pm_timer(const struct kap_acpi_pm *p)
{
	uint64_t ns = now_ns() - p->t0_ns;
	return (uint32_t)(ns / 1000000000ull * PM_TMR_HZ +
			  ns % 1000000000ull * PM_TMR_HZ / 1000000000ull);
}

static void full_read(struct kap_acpi_pm *p, uint64_t off, uint8_t *data, unsigned int len)
{
	uint8_t regs[12] = {0};
	uint16_t cnt = PM1_SCI_EN;
	uint32_t tmr = pm_timer(p);
	memcpy(regs + (KAP_ACPI_PM1A_CNT_PORT - KAP_ACPI_PM_BASE), &cnt, 2);
	memcpy(regs + (KAP_ACPI_PM_TMR_PORT - KAP_ACPI_PM_BASE), &tmr, 4);
	memcpy(regs + (KAP_ACPI_PM1A_EVT_PORT - KAP_ACPI_PM_BASE), &p->pm1_sts, 2);
	memcpy(regs + (KAP_ACPI_PM1A_EVT_PORT - KAP_ACPI_PM_BASE) + 2, &p->pm1_en, 2);
	for (unsigned int i = 0; i < len; i++)
		data[i] = off + i < sizeof(regs) ? regs[off + i] : 0xff;
}

static void full_write(struct kap_acpi_pm *p, uint64_t off, const uint8_t *data, unsigned int len)
{
	uint8_t regs[12] = {0};
	if (off >= sizeof(regs) || len > sizeof(regs) - off)
		return;
	memcpy(regs + off, data, len);
	uint64_t end = off + len;
	uint64_t cnt_off = KAP_ACPI_PM1A_CNT_PORT - KAP_ACPI_PM_BASE;
	uint64_t evt_off = KAP_ACPI_PM1A_EVT_PORT - KAP_ACPI_PM_BASE;
	if (off <= cnt_off + 1 && end > cnt_off) {
		uint16_t cnt;
		memcpy(&cnt, regs + cnt_off, 2);
		if ((cnt & PM1_SLP_EN) && PM1_SLP_TYP(cnt) == KAP_ACPI_S5_SLP_TYP)
			kap_vm_request_exit(p->vm, KAP_VM_POWEROFF, 0, NULL);
		/* S3, offered by \_S3 when the FACS is kapsel's (vm.c): until the wake the
		 * guest finds WAK_STS clear, as after entering a sleep state (§4.8.3.1.1). */
		if ((cnt & PM1_SLP_EN) && PM1_SLP_TYP(cnt) == KAP_ACPI_S3_SLP_TYP &&
		    !p->vm->cfg->firmware) {
			p->pm1_sts &= (uint16_t)~PM1_WAK_STS;
			kap_vm_suspend(p->vm);
		}
	}
	/* Status bits are cleared by writing 1 (§4.8.3.1.1); enable bits are plain. */
	for (uint64_t i = off; i < end; i++) {
		if (i >= evt_off && i < evt_off + 2)
			p->pm1_sts &= (uint16_t) ~((unsigned int)regs[i] << (8 * (i - evt_off)));
		else if (i >= evt_off + 2 && i < evt_off + 4) {
			unsigned int sh = 8 * (unsigned int)(i - evt_off - 2);
			p->pm1_en =
			    (uint16_t)((p->pm1_en & ~(0xffu << sh)) | (unsigned int)regs[i] << sh);
		}
	}
}

static void acpi_pm_read(void *dev, uint64_t off, void *data, unsigned int len)
{
	struct kap_acpi_pm *p = dev;
	if (p->full) {
		full_read(p, off, data, len);
		return;
	}
	/* Status: never asleep, so WAK_STS (the last wake completed) and nothing else. */
	memset(data, 0, len);
	*(uint8_t *)data = off == 1 ? WAK_STS : 0;
}

static void acpi_pm_write(void *dev, uint64_t off, const void *data, unsigned int len)
{
	struct kap_acpi_pm *p = dev;
	if (p->full) {
		full_write(p, off, data, len);
		return;
	}
	uint8_t v = *(const uint8_t *)data;
	if (off == 0 && (v & SLP_EN) && SLP_TYP(v) == KAP_ACPI_S5_SLP_TYP)
		kap_vm_request_exit(p->vm, KAP_VM_POWEROFF, 0, NULL);
}

void kap_acpi_power_button(struct kap_vm *vm)
{
	kap_vm_set_irq(vm, KAP_ACPI_GED_GSI, 1);
	kap_vm_set_irq(vm, KAP_ACPI_GED_GSI, 0);
}

void kap_acpi_pm_woke(struct kap_acpi_pm *p)
{
	if (p)
		p->pm1_sts |= PM1_WAK_STS;
}

const struct kap_dev_ops kap_acpi_pm_ops = {
    .name = "acpi-pm",
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
