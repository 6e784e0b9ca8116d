/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PVH boot (xen/include/public/arch-x86/hvm/start_info.h; Linux arch/x86/platform/pvh):
 * an ELF kernel announces its 32-bit entry point in the XEN_ELFNOTE_PHYS32_ENTRY note and is
 * entered in flat 32-bit protected mode, paging off, with EBX = hvm_start_info. Linux's
 * vmlinux has the note, so it boots without its decompressor or real-mode setup.
 */
#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

#define HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

int kap_boot_pvh_info(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
		      uint64_t cmdline_gpa, uint64_t initrd_gpa, uint64_t initrd_len,
		      struct kap_boot_entry *entry, struct kapsel_error **err)
{
	struct hvm_start_info si = {
	    .magic = HVM_START_MAGIC,
	    .version = 1, /* version 1 has the memory map */
	    .cmdline_paddr = cmdline_gpa,
	    .rsdp_paddr = KAP_ACPI_BASE,
	};
	uint64_t extra = base + KAP_BOOT_INFO_EXTRA;
	struct kap_e820_entry e820[KAP_E820_MAX];
	size_t n =
	    kap_e820_build(vm->mem.low_size, vm->mem.size - vm->mem.low_size, e820, KAP_E820_MAX);
	struct hvm_memmap_table_entry mm[KAP_E820_MAX];
	for (size_t i = 0; i < n; i++)
		mm[i] =
		    (struct hvm_memmap_table_entry){e820[i].addr, e820[i].size, e820[i].type, 0};
	si.memmap_paddr = extra;
	si.memmap_entries = (uint32_t)n;
	if (kap_mem_write(&vm->mem, extra, mm, n * sizeof(mm[0])) < 0)
		return kap_error_plain(err, ENOMEM, "PVH: no room for the memory map");
	extra += n * sizeof(mm[0]);
	if (initrd_gpa) {
		struct hvm_modlist_entry mod = {.paddr = initrd_gpa, .size = initrd_len};
		si.nr_modules = 1;
		si.modlist_paddr = extra;
		if (kap_mem_write(&vm->mem, extra, &mod, sizeof(mod)) < 0)
			return kap_error_plain(err, ENOMEM, "PVH: no room for the module list");
	}
	if (kap_mem_write(&vm->mem, base + KAP_BOOT_INFO, &si, sizeof(si)) < 0)
		return kap_error_plain(err, ENOMEM, "PVH: no room for hvm_start_info");
	*entry = (struct kap_boot_entry){
	    .long_mode = false,
	    .rip = img->entry,
	    .rsp = base + KAP_BOOT_STACK,
	    .rbx = base + KAP_BOOT_INFO,
	};
	return 0;
}
