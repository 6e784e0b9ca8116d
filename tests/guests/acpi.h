/* SPDX-License-Identifier: Apache-2.0 */
/* Guest-side ACPI walk: what an OS does with kapsel's tables (ACPI 6.4 §5.2). */
#pragma once
#include "guest.h"

struct acpi_info {
	uint32_t ncpus;
	uint64_t ioapic;
	uint64_t sleep_control;
	uint32_t s5;
	const uint8_t *dsdt;
};

static inline int acpi_sum_ok(const void *p, uint32_t len)
{
	uint8_t s = 0;
	for (uint32_t i = 0; i < len; i++)
		s = (uint8_t)(s + ((const uint8_t *)p)[i]);
	return s == 0;
}
static inline uint32_t rd32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t rd64(const void *p)
{
	return rd32(p) | (uint64_t)rd32((const uint8_t *)p + 4) << 32;
}
static inline const uint8_t *phys(uint64_t a)
{
	return (const uint8_t *)(uintptr_t)a;
}

static inline const char *acpi_scan(struct acpi_info *a)
{
	const uint8_t *rsdp = 0;
	for (uint32_t p = 0xe0000; p < 0x100000; p += 16)
		if (!memcmp_(phys(p), "RSD PTR ", 8)) {
			rsdp = phys(p);
			break;
		}
	if (!rsdp)
		return "acpi: no RSDP in 0xE0000-0xFFFFF";
	if (!acpi_sum_ok(rsdp, 20) || !acpi_sum_ok(rsdp, 36))
		return "acpi: RSDP checksum";
	if (rsdp[15] != 2)
		return "acpi: RSDP revision is not 2";
	const uint8_t *xsdt = phys(rd64(rsdp + 24));
	if (memcmp_(xsdt, "XSDT", 4) || !acpi_sum_ok(xsdt, rd32(xsdt + 4)))
		return "acpi: XSDT signature or checksum";
	const uint8_t *fadt = 0, *madt = 0;
	for (uint32_t off = 36; off < rd32(xsdt + 4); off += 8) {
		const uint8_t *t = phys(rd64(xsdt + off));
		if (!acpi_sum_ok(t, rd32(t + 4)))
			return "acpi: a table's checksum is wrong";
		if (!memcmp_(t, "FACP", 4))
			fadt = t;
		if (!memcmp_(t, "APIC", 4))
			madt = t;
	}
	if (!fadt || !madt)
		return "acpi: no FADT or MADT";
	if (!(rd32(fadt + 112) & (1u << 20)))
		return "acpi: FADT is not hardware-reduced";
	if (fadt[244] != 1)
		return "acpi: sleep control register is not in I/O space";
	a->sleep_control = rd64(fadt + 248);
	const uint8_t *dsdt = phys(rd64(fadt + 140));
	if (memcmp_(dsdt, "DSDT", 4) || !acpi_sum_ok(dsdt, rd32(dsdt + 4)))
		return "acpi: DSDT signature or checksum";
	a->dsdt = dsdt;
	a->s5 = 0xff;
	for (uint32_t i = 36; i + 8 < rd32(dsdt + 4); i++) {
		/* Name(_S5_, Package(){BytePrefix N, ...}): 08 _S5_ 12 len count 0a N */
		if (!memcmp_(dsdt + i, "_S5_", 4) && dsdt[i + 4] == 0x12 && dsdt[i + 7] == 0x0a)
			a->s5 = dsdt[i + 8];
	}
	if (a->s5 == 0xff)
		return "acpi: no \\_S5 package in the DSDT";
	a->ncpus = 0;
	a->ioapic = 0;
	for (uint32_t off = 44; off + 2 <= rd32(madt + 4); off += madt[off + 1]) {
		const uint8_t *e = madt + off;
		if (e[1] == 0)
			return "acpi: MADT entry of length 0";
		if (e[0] == 0 && (rd32(e + 4) & 1)) {
			if (e[3] != a->ncpus)
				return "acpi: LAPIC ids are not 0..n-1";
			a->ncpus++;
		}
		if (e[0] == 1)
			a->ioapic = rd32(e + 4);
	}
	if (a->ncpus == 0 || a->ioapic != 0xfec00000u)
		return "acpi: MADT has no CPU or no IOAPIC at 0xfec00000";
	return 0;
}
