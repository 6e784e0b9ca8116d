/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ACPI tables, decoded as acpidump/iasl would: RSDP -> XSDT -> FADT/MADT -> DSDT, every
 * checksum, the hardware-reduced FADT's registers, the MADT's entries and the DSDT's AML.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/x86/acpi.h"

#define BASE 0xe0000

static const struct kap_acpi_device devs[] = {
    {"COM1", "PNP0501", 1, false, 0x3f8, 8, 0, 0, 4},
    {"PS2K", "PNP0303", 0, false, 0x60, 1, 0x64, 1, 1},
    {"VR00", "LNRO0005", 0, true, 0xd0000000, 0x200, 0, 0, 5},
};

static struct kap_acpi_config config(unsigned int ncpus)
{
	return (struct kap_acpi_config){
	    .ncpus = ncpus,
	    .ioapic_addr = 0xfec00000,
	    .lapic_addr = 0xfee00000,
	    .sleep_control_port = 0x608,
	    .sleep_status_port = 0x609,
	    .s5_slp_typ = 5,
	    .reset_port = 0x64,
	    .reset_value = 0xfe,
	    .rtc_century_reg = 0x32,
	    .devices = devs,
	    .ndevices = 3,
	    .power_button_gsi = 10,
	};
}

static uint8_t region[0x20000];

static const uint8_t *at(uint64_t gpa)
{
	assert_true(gpa >= BASE && gpa < BASE + sizeof(region));
	return region + (gpa - BASE);
}

static uint32_t u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static uint64_t u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static const uint8_t *table(const char *sig, const uint8_t *xsdt)
{
	for (uint32_t off = 36; off < u32(xsdt + 4); off += 8) {
		const uint8_t *t = at(u64(xsdt + off));
		if (!memcmp(t, sig, 4))
			return t;
	}
	return NULL;
}

static void assert_table_ok(const uint8_t *t)
{
	uint8_t sum = 0;
	for (uint32_t i = 0; i < u32(t + 4); i++)
		sum = (uint8_t)(sum + t[i]);
	assert_int_equal(sum, 0);
	assert_memory_equal(t + 10, "KAPSEL", 6);
}

static const uint8_t *build(unsigned int ncpus)
{
	struct kap_acpi_config cfg = config(ncpus);
	size_t used = 0;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_acpi_build(region, sizeof(region), BASE, &cfg, &used, &err), 0);
	assert_null(err);
	assert_true(used > 36 && used < sizeof(region));
	/* The RSDP sits at the base (ACPI 6.4 §5.2.5.1: found by scanning 0xE0000-0xFFFFF). */
	const struct kap_acpi_rsdp *r = (const void *)region;
	assert_memory_equal(r->signature, "RSD PTR ", 8);
	assert_int_equal(r->revision, 2);
	assert_int_equal(r->length, 36);
	assert_int_equal(kap_acpi_checksum(r, 20), 0);
	assert_int_equal(kap_acpi_checksum(r, 36), 0);
	const uint8_t *xsdt = at(r->xsdt_address);
	assert_memory_equal(xsdt, "XSDT", 4);
	assert_table_ok(xsdt);
	assert_int_equal(u32(xsdt + 4), 36 + 2 * 8);
	return xsdt;
}

static void test_fadt_hw_reduced(void **state)
{
	const uint8_t *xsdt = build(1);
	const uint8_t *f = table("FACP", xsdt);
	assert_non_null(f);
	assert_table_ok(f);
	assert_int_equal(u32(f + 4), KAP_FADT_LENGTH);
	assert_int_equal(f[8], 6);
	uint32_t flags = u32(f + KAP_FADT_FLAGS);
	assert_true(flags & KAP_FADT_HW_REDUCED);
	assert_true(flags & KAP_FADT_RESET_REG_SUP);
	/* Sleep control/status: System I/O, 8 bits, byte access, the ports configured. */
	const uint8_t *sc = f + KAP_FADT_SLEEP_CONTROL, *ss = f + KAP_FADT_SLEEP_STATUS;
	assert_int_equal(sc[0], 1);
	assert_int_equal(sc[1], 8);
	assert_int_equal(sc[3], 1);
	assert_int_equal(u64(sc + 4), 0x608);
	assert_int_equal(u64(ss + 4), 0x609);
	assert_int_equal(u64(f + KAP_FADT_RESET_REG + 4), 0x64);
	assert_int_equal(f[KAP_FADT_RESET_VALUE], 0xfe);
	assert_int_equal(f[KAP_FADT_CENTURY], 0x32);
	/* IA-PC boot flags: an 8042 is present (Linux probes i8042 only then). */
	assert_true(f[KAP_FADT_IAPC_BOOT_ARCH] & 2);
	assert_memory_equal(f + KAP_FADT_HYPERVISOR_ID, "KAPSELVM", 8);
	assert_int_equal(u32(f + KAP_FADT_DSDT), u64(f + KAP_FADT_X_DSDT));
}

static void test_madt_lists_every_cpu(void **state)
{
	for (unsigned int n = 1; n <= 64; n *= 4) {
		const uint8_t *xsdt = build(n);
		const uint8_t *m = table("APIC", xsdt);
		assert_non_null(m);
		assert_table_ok(m);
		assert_int_equal(u32(m + 36), 0xfee00000);
		assert_int_equal(u32(m + 40) & 1, 1);
		unsigned int lapics = 0, ioapics = 0, overrides = 0, nmis = 0;
		for (uint32_t off = 44; off < u32(m + 4);) {
			const uint8_t *e = m + off;
			assert_true(e[1] >= 2);
			switch (e[0]) {
			case 0:
				assert_int_equal(e[1], 8);
				assert_int_equal(e[3], lapics); /* APIC id = vCPU index */
				assert_int_equal(u32(e + 4) & 1, 1);
				lapics++;
				break;
			case 1:
				assert_int_equal(u32(e + 4), 0xfec00000);
				assert_int_equal(u32(e + 8), 0);
				ioapics++;
				break;
			case 2:
				assert_int_equal(e[3], 0);	 /* IRQ 0 */
				assert_int_equal(u32(e + 4), 2); /* -> GSI 2 */
				overrides++;
				break;
			case 4:
				assert_int_equal(e[5], 1); /* LINT1 */
				nmis++;
				break;
			default:
				fail_msg("unexpected MADT entry type %u", e[0]);
			}
			off += e[1];
		}
		assert_int_equal(lapics, n);
		assert_int_equal(ioapics, 1);
		assert_int_equal(overrides, 1);
		assert_int_equal(nmis, 1);
	}
}

static const uint8_t *find(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++)
		if (!memcmp(hay + i, needle, m))
			return hay + i;
	return NULL;
}

static void test_dsdt_aml(void **state)
{
	const uint8_t *xsdt = build(2);
	const uint8_t *f = table("FACP", xsdt);
	const uint8_t *d = at(u64(f + KAP_FADT_X_DSDT));
	assert_memory_equal(d, "DSDT", 4);
	assert_table_ok(d);
	uint32_t len = u32(d + 4);
	/* Scope(\_SB) { ... }: ScopeOp, a PkgLength covering the devices, then \_SB_. */
	assert_int_equal(d[36], 0x10);
	/* \_S5: Name(_S5_, Package(4) {5, 5, 0, 0}). */
	static const uint8_t s5[] = {0x08, '_',	 'S', '5',  '_', 0x12, 0x08,
				     0x04, 0x0a, 5,   0x0a, 5,	 0x00, 0x00};
	assert_non_null(find(d, len, s5, sizeof(s5)));
	/* Devices: DeviceOp 5B 82, the name, _HID as an EISA id or a string. */
	assert_non_null(find(d, len, "COM1", 4));
	/* EISAID("PNP0501") = 0x0105D041, stored little endian. */
	static const uint8_t pnp0501[] = {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01};
	assert_non_null(find(d, len, pnp0501, sizeof(pnp0501)));
	static const uint8_t lnro[] = {'_', 'H', 'I', 'D', 0x0d, 'L', 'N',
				       'R', 'O', '0', '0', '0',	 '5', 0};
	assert_non_null(find(d, len, lnro, sizeof(lnro)));
	/* COM1's _CRS: IO(Decode16, 0x3f8, 0x3f8, 1, 8), IRQNoFlags(){4}, end tag. */
	static const uint8_t com1_crs[] = {0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x22, 0x10, 0, 0x79, 0};
	assert_non_null(find(d, len, com1_crs, sizeof(com1_crs)));
	/* The i8042 has both its ports. */
	static const uint8_t kbd[] = {0x47, 1, 0x60, 0, 0x60, 0, 1, 1,
				      0x47, 1, 0x64, 0, 0x64, 0, 1, 1};
	assert_non_null(find(d, len, kbd, sizeof(kbd)));
	/* The virtio-mmio entry: Memory32Fixed(ReadWrite, 0xd0000000, 0x200), Interrupt 5. */
	static const uint8_t mmio[] = {0x86, 9,	   0, 1, 0, 0, 0, 0xd0, 0, 2, 0,
				       0,    0x89, 6, 0, 1, 1, 5, 0,	0, 0};
	assert_non_null(find(d, len, mmio, sizeof(mmio)));
	/* The power button: Device(PWRB) { Name(_HID, EISAID("PNP0C0C")) Name(_UID, 0) }. */
	static const uint8_t pwrb[] = {0x5b, 0x82, 0x15, 'P', 'W',  'R',  'B',	0x08,
				       '_',  'H',  'I',	 'D', 0x0c, 0x41, 0xd0, 0x0c,
				       0x0c, 0x08, '_',	 'U', 'I',  'D',  0x00};
	assert_non_null(find(d, len, pwrb, sizeof(pwrb)));
	/* GED0: _HID "ACPI0013"; _CRS Interrupt(ResourceConsumer, Edge, ActiveHigh) {10}. */
	static const uint8_t ged_hid[] = {'G', 'E', 'D', '0', 0x08, '_', 'H', 'I', 'D', 0x0d,
					  'A', 'C', 'P', 'I', '0',  '0', '1', '3', 0};
	assert_non_null(find(d, len, ged_hid, sizeof(ged_hid)));
	static const uint8_t ged_crs[] = {0x89, 6, 0, 0x03, 1, 10, 0, 0, 0, 0x79, 0};
	assert_non_null(find(d, len, ged_crs, sizeof(ged_crs)));
	/* Method(_EVT, 1) { Notify(\_SB.PWRB, 0x80) }: MethodOp, PkgLength 19, then the body. */
	static const uint8_t evt[] = {0x14, 0x13, '_', 'E', 'V', 'T', 0x01, 0x86, '\\', 0x2e,
				      '_',  'S',  'B', '_', 'P', 'W', 'R',  'B',  0x0a, 0x80};
	assert_non_null(find(d, len, evt, sizeof(evt)));
}

static void test_pkglength_multibyte(void **state)
{
	/* Enough devices that \_SB's scope needs a 2-byte PkgLength (> 63 bytes). */
	const uint8_t *xsdt = build(1);
	const uint8_t *d = at(u64(table("FACP", xsdt) + KAP_FADT_X_DSDT));
	uint8_t lead = d[37];
	assert_int_equal(lead >> 6, 1); /* two bytes */
	uint32_t pkglen = (lead & 0xf) | ((uint32_t)d[38] << 4);
	/* The scope ends right where Name(_S5_) begins. */
	assert_int_equal(d[37 + pkglen], 0x08);
	assert_memory_equal(d + 37 + pkglen + 1, "_S5_", 4);
}

static void test_too_small(void **state)
{
	struct kap_acpi_config cfg = config(64);
	size_t used;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_acpi_build(region, 300, BASE, &cfg, &used, &err), -ENOSPC);
	assert_non_null(err);
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_acpi_build(region, 40, BASE, &cfg, &used, &err), -ENOSPC);
	kapsel_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fadt_hw_reduced), cmocka_unit_test(test_madt_lists_every_cpu),
	    cmocka_unit_test(test_dsdt_aml),	    cmocka_unit_test(test_pkglength_multibyte),
	    cmocka_unit_test(test_too_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
