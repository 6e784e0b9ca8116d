/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PVH test kernel: entered in 32-bit protected mode with EBX = hvm_start_info. Checks the
 * magic, the command line, the initrd module ("initrd=BYTES"), the memory map ("mem=MiB") and
 * the RSDP address, and that paging is off and the segments flat.
 */
#include "guest.h"

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

void guest_main(uint32_t eax, const struct hvm_start_info *si);
void guest_main(uint32_t eax, const struct hvm_start_info *si)
{
	char v[32];
	(void)eax;
	CHECK(si->magic == 0x336ec578, "hvm_start_info magic");
	CHECK(si->version >= 1, "hvm_start_info version < 1");
	const char *cmdline = (const char *)(uintptr_t)si->cmdline_paddr;
	puts_("pvh guest: ");
	puts_(cmdline);
	putc_('\n');
	uint32_t cr0;
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	CHECK((cr0 & 1) && !(cr0 & 0x80000000u), "CR0: not protected mode without paging");
	CHECK(si->rsdp_paddr == 0xe0000, "rsdp_paddr is not 0xE0000");
	cmdline_get(cmdline, "mem", v, sizeof(v));
	struct memmap_entry m[16];
	unsigned int n = 0;
	const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
	for (; n < si->memmap_entries && n < 16; n++)
		m[n] = (struct memmap_entry){e[n].addr, e[n].size, e[n].type};
	const char *bad = check_memmap(m, n, atou(v));
	CHECK(!bad, bad);
	if (cmdline_get(cmdline, "initrd", v, sizeof(v))) {
		CHECK(si->nr_modules == 1, "nr_modules != 1");
		const struct hvm_modlist_entry *mod = (const void *)(uintptr_t)si->modlist_paddr;
		CHECK(mod->size == atou(v), "module size differs");
		CHECK(!memcmp_((const void *)(uintptr_t)mod->paddr, "KAPSEL-INITRD", 13),
		      "module content differs");
		puts_("initrd ok\n");
	} else {
		CHECK(si->nr_modules == 0, "a module without --initrd");
	}
	puts_("pvh ok\n");
	pass();
}
