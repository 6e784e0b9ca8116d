/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --acpi full: the FADT's fixed-hardware fields (ACPI 6.4 table 5.9) and the FACS (§5.2.10),
 * decoded from kap_acpi_build's output as an OS reads them; the reduced FADT names none.
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

static uint8_t region[0x20000];

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
static const uint8_t *at(uint64_t gpa)
{
	assert_true(gpa >= BASE && gpa < BASE + sizeof(region));
	return region + (gpa - BASE);
}

static const uint8_t *fadt(bool full)
{
	struct kap_acpi_config cfg = {
	    .ncpus = 1,
	    .ioapic_addr = 0xfec00000,
	    .lapic_addr = 0xfee00000,
	    .sleep_control_port = 0x608,
	    .sleep_status_port = 0x609,
	    .s5_slp_typ = 5,
	    .reset_port = 0x64,
	    .reset_value = 0xfe,
	    .full = full,
	    .pm1a_evt_port = 0x60c,
	    .pm1a_cnt_port = 0x604,
	    .pm_tmr_port = 0x608,
	    .sci_irq = 9,
	};
	size_t used = 0;
	struct kapsel_error *err = NULL;
	memset(region, 0xaa, sizeof(region));
	assert_int_equal(kap_acpi_build(region, sizeof(region), BASE, &cfg, &used, &err), 0);
	const struct kap_acpi_rsdp *r = (const void *)region;
	const uint8_t *xsdt = at(r->xsdt_address);
	const uint8_t *f = at(u64(xsdt + 36));
	assert_memory_equal(f, "FACP", 4);
	assert_int_equal(u32(f + 4), KAP_FADT_LENGTH);
	assert_int_equal(kap_acpi_checksum(f, KAP_FADT_LENGTH), 0);
	return f;
}

static void assert_gas_io(const uint8_t *g, uint64_t port, uint8_t width, uint8_t access)
{
	assert_int_equal(g[0], 1); /* System I/O */
	assert_int_equal(g[1], width);
	assert_int_equal(g[2], 0);
	assert_int_equal(g[3], access);
	assert_int_equal(u64(g + 4), port);
}

static void test_full_fadt(void **state)
{
	(void)state;
	const uint8_t *f = fadt(true);
	uint32_t flags = u32(f + KAP_FADT_FLAGS);
	assert_false(flags & KAP_FADT_HW_REDUCED);
	assert_true(flags & KAP_FADT_TMR_VAL_EXT);
	assert_true(flags & KAP_FADT_RESET_REG_SUP);
	assert_int_equal(u32(f + KAP_FADT_SCI_INT) & 0xffff, 9);
	assert_int_equal(u32(f + 48), 0); /* SMI_CMD: none, ACPI mode from the start */
	assert_int_equal(u32(f + KAP_FADT_PM1A_EVT_BLK), 0x60c);
	assert_int_equal(u32(f + KAP_FADT_PM1A_CNT_BLK), 0x604);
	assert_int_equal(u32(f + KAP_FADT_PM_TMR_BLK), 0x608);
	assert_int_equal(f[KAP_FADT_PM1_EVT_LEN], 4);
	assert_int_equal(f[KAP_FADT_PM1_CNT_LEN], 2);
	assert_int_equal(f[KAP_FADT_PM_TMR_LEN], 4);
	assert_gas_io(f + KAP_FADT_X_PM1A_EVT_BLK, 0x60c, 32, 3);
	assert_gas_io(f + KAP_FADT_X_PM1A_CNT_BLK, 0x604, 16, 2);
	assert_gas_io(f + KAP_FADT_X_PM_TMR_BLK, 0x608, 32, 3);
	/* Sleep registers are for hardware-reduced machines only (§4.8.3.7). */
	assert_int_equal(u64(f + KAP_FADT_SLEEP_CONTROL + 4), 0);
	assert_int_equal(u64(f + KAP_FADT_SLEEP_STATUS + 4), 0);
	/* FACS: both pointers, 64-byte aligned, cleared, version 2. */
	uint64_t facs = u64(f + KAP_FADT_X_FIRMWARE_CTRL);
	assert_int_equal(u32(f + KAP_FADT_FIRMWARE_CTRL), facs);
	assert_int_equal(facs % 64, 0);
	const uint8_t *s = at(facs);
	assert_memory_equal(s, "FACS", 4);
	assert_int_equal(u32(s + 4), KAP_FACS_LENGTH);
	assert_int_equal(u32(s + 8), 0);  /* hardware signature */
	assert_int_equal(u32(s + 12), 0); /* waking vector */
	assert_int_equal(u32(s + 16), 0); /* global lock */
	assert_int_equal(s[32], 2);
	for (int i = 33; i < KAP_FACS_LENGTH; i++)
		assert_int_equal(s[i], 0);
	/* The DSDT and MADT follow, undisturbed. */
	assert_memory_equal(at(u64(f + KAP_FADT_X_DSDT)), "DSDT", 4);
}

static void test_reduced_fadt_names_no_fixed_hardware(void **state)
{
	(void)state;
	const uint8_t *f = fadt(false);
	assert_true(u32(f + KAP_FADT_FLAGS) & KAP_FADT_HW_REDUCED);
	assert_false(u32(f + KAP_FADT_FLAGS) & KAP_FADT_TMR_VAL_EXT);
	assert_int_equal(u64(f + KAP_FADT_X_FIRMWARE_CTRL), 0);
	assert_int_equal(u32(f + KAP_FADT_PM1A_EVT_BLK), 0);
	assert_int_equal(u32(f + KAP_FADT_PM1A_CNT_BLK), 0);
	assert_int_equal(u32(f + KAP_FADT_PM_TMR_BLK), 0);
	assert_gas_io(f + KAP_FADT_SLEEP_CONTROL, 0x608, 8, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_fadt),
	    cmocka_unit_test(test_reduced_fadt_names_no_fixed_hardware),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
