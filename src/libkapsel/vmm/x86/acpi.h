/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ACPI tables generated at boot (ACPI 6.4): RSDP -> XSDT -> FADT (hardware-reduced, with the
 * sleep control/status registers; or full, with a FACS and the PM1a/PM timer blocks) -> DSDT,
 * and MADT. Linux without ACPI sees one CPU (Debian's
 * kernels have no MP-table parser), and with it finds the UART, RTC, i8042 and, later,
 * virtio-mmio devices in the DSDT. Built into a caller's buffer: pure, unit-tested.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* A device described in the DSDT under \_SB. */
struct kap_acpi_device {
	char name[5];	 /* four AML name characters, "COM1" */
	const char *hid; /* "PNP0501" (compressed to an EISA id) or "LNRO0005" (a string) */
	uint32_t uid;
	bool mmio; /* resource: Memory32Fixed when true, else an I/O port range */
	uint64_t base;
	uint32_t len;
	uint16_t io2_base; /* a second I/O range of io2_len ports (the i8042's 0x64) */
	uint8_t io2_len;
	int irq; /* -1: none; ISA IRQ (or GSI for mmio devices) */
};

struct kap_acpi_config {
	unsigned int ncpus;
	/*
	 * Full (not hardware-reduced) ACPI, --acpi full: a FACS, the PM1a event and control
	 * blocks and the PM timer named by the FADT (fixed hardware, ACPI 6.4 §4.8.2), SCI on
	 * ISA IRQ sci_irq, in ACPI mode from the start (no SMI_CMD). The sleep registers are
	 * not named then.
	 */
	bool full;
	uint16_t pm1a_evt_port, pm1a_cnt_port, pm_tmr_port;
	uint8_t sci_irq;
	uint64_t ioapic_addr, lapic_addr;
	uint16_t sleep_control_port, sleep_status_port;
	uint8_t s5_slp_typ;
	uint8_t s3_slp_typ; /* 0: no \_S3 (no suspend-to-RAM offered) */
	uint16_t reset_port;
	uint8_t reset_value;
	uint8_t rtc_century_reg;
	const struct kap_acpi_device *devices;
	size_t ndevices;
	/*
	 * A PCI host bridge \_SB.PCI0 (PNP0A03, bus 0, config mechanism #1, no MCFG/ECAM): its
	 * _CRS names ports 0xCF8-0xCFF and the BAR window, its _PRT routes pin A of slots
	 * 1..pci_slots-1 to GSI pci_intx_gsi + (slot - 1) % 8.
	 */
	bool pci;
	uint64_t pci_mmio_base, pci_mmio_len;
	unsigned int pci_slots, pci_intx_gsi;
	/* \_SB.PWRB and \_SB.GED0 with this edge-triggered GSI (0: no power button). */
	uint32_t power_button_gsi;
};

/* Standard header of every table but the RSDP (ACPI 6.4 §5.2.6). */
struct kap_acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct kap_acpi_rsdp {
	char signature[8];
	uint8_t checksum; /* of the first 20 bytes */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum; /* of all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

/* FADT field offsets used by the builder and the tests (ACPI 6.4 table 5.9). */
#define KAP_FADT_FIRMWARE_CTRL	 36
#define KAP_FADT_DSDT		 40
#define KAP_FADT_SCI_INT	 46
#define KAP_FADT_PM1A_EVT_BLK	 56
#define KAP_FADT_PM1A_CNT_BLK	 64
#define KAP_FADT_PM_TMR_BLK	 76
#define KAP_FADT_PM1_EVT_LEN	 88
#define KAP_FADT_PM1_CNT_LEN	 89
#define KAP_FADT_PM_TMR_LEN	 91
#define KAP_FADT_P_LVL2_LAT	 96
#define KAP_FADT_P_LVL3_LAT	 98
#define KAP_FADT_CENTURY	 108
#define KAP_FADT_IAPC_BOOT_ARCH	 109
#define KAP_FADT_FLAGS		 112
#define KAP_FADT_RESET_REG	 116
#define KAP_FADT_RESET_VALUE	 128
#define KAP_FADT_MINOR		 131
#define KAP_FADT_X_FIRMWARE_CTRL 132
#define KAP_FADT_X_DSDT		 140
#define KAP_FADT_X_PM1A_EVT_BLK	 148
#define KAP_FADT_X_PM1A_CNT_BLK	 172
#define KAP_FADT_X_PM_TMR_BLK	 208
#define KAP_FADT_SLEEP_CONTROL	 244
#define KAP_FADT_SLEEP_STATUS	 256
#define KAP_FADT_HYPERVISOR_ID	 268
#define KAP_FADT_LENGTH		 276
#define KAP_FADT_HW_REDUCED	 (1u << 20)
#define KAP_FADT_RESET_REG_SUP	 (1u << 10)
#define KAP_FADT_TMR_VAL_EXT	 (1u << 8)
#define KAP_FACS_LENGTH		 64

/* 8-bit two's complement so the bytes sum to zero. */
uint8_t kap_acpi_checksum(const void *buf, size_t len);

/*
 * Writes the RSDP at buf (guest-physical gpa) and the tables after it. *used: bytes written.
 * -ENOSPC when size is too small.
 */
int kap_acpi_build(uint8_t *buf, size_t size, uint64_t gpa, const struct kap_acpi_config *cfg,
		   size_t *used, struct kapsel_error **err);
