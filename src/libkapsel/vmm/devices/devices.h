/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The legacy devices of the machine. Each file implements one device behind a kap_dev_ops
 * table; vm.c creates them and registers them on the buses (ports in docs/vm.md).
 */
#pragma once
#include <stdint.h>

#include "vmm/vmm.h"

/* 16550A UART (serial8250.c): COM1 at 0x3f8, IRQ 4. */
#define KAP_SERIAL_PORT 0x3f8
#define KAP_SERIAL_IRQ	4
struct kap_serial;
extern const struct kap_dev_ops kap_serial_ops;
struct kap_serial *kap_serial_new(struct kap_vm *vm, unsigned int irq);
void kap_serial_free(struct kap_serial *s);
/* Console input (event thread). */
void kap_serial_input(void *serial, const uint8_t *buf, size_t len);

/* i8042 keyboard controller (i8042.c): 0x60 data, 0x64 status/command; 0xFE resets. A PS/2
 * keyboard that never sends a key is attached (IRQ 1); the aux port has no mouse (IRQ 12). */
#define KAP_I8042_DATA	  0x60
#define KAP_I8042_COMMAND 0x64
#define KAP_I8042_KBD_IRQ 1
#define KAP_I8042_AUX_IRQ 12
#define KAP_I8042_QUEUE	  16
struct kap_i8042;
extern const struct kap_dev_ops kap_i8042_ops;
struct kap_i8042 *kap_i8042_new(struct kap_vm *vm);

/* QEMU-compatible isa-debug-exit (debug-exit.c) at 0xf4. */
#define KAP_DEBUG_EXIT_PORT 0xf4
struct kap_debug_exit;
extern const struct kap_dev_ops kap_debug_exit_ops;
struct kap_debug_exit *kap_debug_exit_new(struct kap_vm *vm);

/* MC146818 CMOS RTC (rtc.c) at 0x70/0x71. */
#define KAP_RTC_PORT 0x70
struct kap_rtc;
extern const struct kap_dev_ops kap_rtc_ops;
struct kap_rtc *kap_rtc_new(struct kap_vm *vm);

/* Paravirtual hypercall port (hypercall.c); the ABI is docs/hypercalls.md. */
#define KAP_HYPERCALL_PORT 0x0600
struct kap_hypercall;
extern const struct kap_dev_ops kap_hypercall_ops;
struct kap_hypercall *kap_hypercall_new(struct kap_vm *vm);

/*
 * ACPI hardware-reduced sleep control and status registers (acpi-pm.c), named by the FADT;
 * writing SLP_TYP 5 (\_S5) with SLP_EN powers off. ACPI 6.4 §4.8.3.7.
 */
#define KAP_ACPI_SLEEP_CONTROL_PORT 0x0608
#define KAP_ACPI_SLEEP_STATUS_PORT  0x0609
#define KAP_ACPI_S5_SLP_TYP	    5
/* --acpi full without --firmware: \_S3 too; PM1a_CNT's SLP_TYP 1 suspends to RAM. */
#define KAP_ACPI_S3_SLP_TYP 1
/* --acpi full: PM1a control, PM timer, PM1a event at 0x604-0x60f (acpi-pm.c); SCI IRQ 9. */
#define KAP_ACPI_PM_BASE       0x0604
#define KAP_ACPI_PM_LEN	       12
#define KAP_ACPI_PM1A_CNT_PORT 0x0604
#define KAP_ACPI_PM_TMR_PORT   0x0608
#define KAP_ACPI_PM1A_EVT_PORT 0x060c
#define KAP_ACPI_SCI_IRQ       9
struct kap_acpi_pm;
extern const struct kap_dev_ops kap_acpi_pm_ops;
struct kap_acpi_pm *kap_acpi_pm_new(struct kap_vm *vm, bool full);
/* The machine woke from S3: WAK_STS set again (pause.c kap_vm_wake). */
void kap_acpi_pm_woke(struct kap_acpi_pm *p);
/*
 * The ACPI power button (QEMU's system_powerdown): an edge on the Generic Event Device's GSI
 * (x86/acpi.c, \_SB.GED0), whose _EVT notifies \_SB.PWRB. A free ISA IRQ, edge-triggered.
 */
#define KAP_ACPI_GED_GSI 5
void kap_acpi_power_button(struct kap_vm *vm);

/* pvpanic (pvpanic.c) at QEMU's port; the device is the struct kap_vm itself. */
#define KAP_PVPANIC_PORT 0x505
extern const struct kap_dev_ops kap_pvpanic_ops;

/*
 * QEMU's fw_cfg (fw-cfg.c; QEMU docs/specs/fw_cfg.rst): selector 0x510, data 0x511, DMA
 * address 0x514-0x51b. Creates the device and registers its ports; *out is set even on an
 * error, for kap_fw_cfg_free.
 */
#define KAP_FW_CFG_PORT	    0x510
#define KAP_FW_CFG_DMA_PORT 0x514
struct kap_fw_cfg;
extern const struct kap_dev_ops kap_fw_cfg_ops, kap_fw_cfg_dma_ops;
int kap_fw_cfg_attach(struct kap_vm *vm, struct kap_fw_cfg **out, struct kapsel_error **err);
void kap_fw_cfg_free(struct kap_fw_cfg *f);

/* Port 0x80 (POST codes, Linux's io_delay): claimed and ignored, so it is not logged. */
#define KAP_POST_PORT 0x80
extern const struct kap_dev_ops kap_post_ops;

/*
 * Snapshot state (snapshot.c, docs/vm.md "Snapshot format"): each device's guest-visible
 * registers in a fixed little-endian layout that is part of the state file's format version.
 * The loaders check what they are given (a state file is input) and return -EINVAL with *why
 * set to the bad field.
 */
#define KAP_SERIAL_RX_BUF 4096
struct kap_serial_state {
	uint8_t ier, iir_fifo, lcr, mcr, scr, dll, dlm, msr;
	uint8_t thr_pending, level, pad[2];
	uint32_t rx_len; /* the receive buffer's unread bytes, oldest first */
	uint8_t rx[KAP_SERIAL_RX_BUF];
};
void kap_serial_save(struct kap_serial *s, struct kap_serial_state *st);
int kap_serial_load(struct kap_serial *s, const struct kap_serial_state *st, const char **why);

/* Version 2: the keyboard behind the controller (its output queue and command state). */
#define KAP_I8042_STATE_VERSION 2
struct kap_i8042_state {
	uint8_t version, status, cb, out, pending_cmd, out_src, kbd_cmd, scan_set;
	uint8_t last, levels, q_len, pad[5];
	uint8_t q[KAP_I8042_QUEUE];
};
void kap_i8042_save(struct kap_i8042 *k, struct kap_i8042_state *st);
int kap_i8042_load(struct kap_i8042 *k, const struct kap_i8042_state *st, const char **why);

struct kap_rtc_state {
	uint8_t index, pad[3];
	uint8_t ram[128];
};
void kap_rtc_save(struct kap_rtc *r, struct kap_rtc_state *st);
int kap_rtc_load(struct kap_rtc *r, const struct kap_rtc_state *st, const char **why);

struct kap_fw_cfg_state {
	uint32_t cur, off, dma_hi;
};
void kap_fw_cfg_save(struct kap_fw_cfg *f, struct kap_fw_cfg_state *st);
int kap_fw_cfg_load(struct kap_fw_cfg *f, const struct kap_fw_cfg_state *st, const char **why);
