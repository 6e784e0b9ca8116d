/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bzImage test kernel, entered through the 64-bit boot protocol: checks long mode, the
 * boot GDT selectors, boot_params (setup header copy, type_of_loader, cmd_line_ptr, ramdisk,
 * e820 table, acpi_rsdp_addr) against "mem=MiB" and "initrd=BYTES" on its command line.
 */
#include <asm/bootparam.h>

#include "guest.h"

void guest_main(const struct boot_params *bp);
void guest_main(const struct boot_params *bp)
{
	char v[32];
	const char *cmdline =
	    (const char *)(uintptr_t)(bp->hdr.cmd_line_ptr | (uint64_t)bp->ext_cmd_line_ptr << 32);
	puts_("bzimage guest: ");
	puts_(cmdline);
	putc_('\n');
	uint16_t cs, ds;
	uint64_t cr0, cr4;
	__asm__ volatile("mov %%cs, %0; mov %%ds, %1" : "=r"(cs), "=r"(ds));
	__asm__ volatile("mov %%cr0, %0; mov %%cr4, %1" : "=r"(cr0), "=r"(cr4));
	CHECK(cs == 0x10 && ds == 0x18, "segments are not __BOOT_CS/__BOOT_DS");
	CHECK((cr0 & 0x80000001u) == 0x80000001u && (cr4 & 0x20), "not in paged long mode");
	CHECK(bp->hdr.boot_flag == 0xaa55 && bp->hdr.header == 0x53726448, "setup header copy");
	CHECK(bp->hdr.version == 0x020f, "setup header version");
	CHECK(bp->hdr.type_of_loader == 0xff, "type_of_loader is not 0xff");
	CHECK(bp->acpi_rsdp_addr == 0xe0000, "acpi_rsdp_addr is not 0xE0000");
	/* The identity map covers 4 GiB: the LAPIC's version register reads through it. */
	CHECK((*(volatile uint32_t *)0xfee00030ULL & 0xff) != 0xff, "LAPIC not mapped");
	cmdline_get(cmdline, "mem", v, sizeof(v));
	struct memmap_entry m[16];
	unsigned int n = 0;
	for (; n < bp->e820_entries && n < 16; n++)
		m[n] = (struct memmap_entry){bp->e820_table[n].addr, bp->e820_table[n].size,
					     bp->e820_table[n].type};
	const char *bad = check_memmap(m, n, atou(v));
	CHECK(!bad, bad);
	if (cmdline_get(cmdline, "initrd", v, sizeof(v))) {
		uint64_t addr = bp->hdr.ramdisk_image | (uint64_t)bp->ext_ramdisk_image << 32;
		CHECK(bp->hdr.ramdisk_size == atou(v), "ramdisk_size differs");
		CHECK(addr + bp->hdr.ramdisk_size <= bp->hdr.initrd_addr_max + 1ULL,
		      "initrd above initrd_addr_max");
		CHECK(!memcmp_((const void *)(uintptr_t)addr, "KAPSEL-INITRD", 13),
		      "initrd content differs");
		puts_("initrd ok\n");
	}
	puts_("bzimage ok\n");
	pass();
}
