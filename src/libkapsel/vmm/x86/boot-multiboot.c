/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Multiboot v1 (Multiboot Specification 0.6.96): the header search and the machine state
 * handed to the OS (§3.2): 32-bit protected mode, paging off, flat segments, EAX = 0x2BADB002,
 * EBX = the multiboot_info, which carries mem_lower/mem_upper, the command line, one module
 * per initrd and the memory map.
 */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

#define MB_HEADER_MAGIC	    0x1BADB002u
#define MB_BOOTLOADER_MAGIC 0x2BADB002u
#define MB_SEARCH	    8192
#define MB_FLAG_PAGE_ALIGN  (1u << 0)
#define MB_FLAG_MEMORY_INFO (1u << 1)
#define MB_FLAG_VIDEO_MODE  (1u << 2)
#define MB_FLAG_AOUT_KLUDGE (1u << 16)
#define MB_INFO_MEMORY	    (1u << 0)
#define MB_INFO_CMDLINE	    (1u << 2)
#define MB_INFO_MODS	    (1u << 3)
#define MB_INFO_MEM_MAP	    (1u << 6)
#define MB_INFO_LOADER_NAME (1u << 9)

struct mb_header {
	uint32_t magic, flags, checksum;
	uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
};

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr, config_table, boot_loader_name, apm_table;
	uint32_t vbe[6];
};

struct mb_module {
	uint32_t mod_start, mod_end, string, reserved;
};

/* §3.3: each entry is preceded by its size, which does not count the size field itself. */
struct mb_mmap_entry {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

int kap_boot_parse_multiboot(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			     bool *found, struct kapsel_error **err)
{
	*found = false;
	size_t limit = len < MB_SEARCH ? len : MB_SEARCH;
	const struct mb_header *h = NULL;
	struct mb_header hb;
	size_t off;
	/* §3.1.1: the header lies in the first 8192 bytes, 32-bit aligned. */
	for (off = 0; off + 12 <= limit; off += 4) {
		uint32_t w[3];
		memcpy(w, buf + off, sizeof(w));
		if (w[0] == MB_HEADER_MAGIC && w[0] + w[1] + w[2] == 0) {
			memset(&hb, 0, sizeof(hb));
			memcpy(&hb, buf + off, len - off < sizeof(hb) ? len - off : sizeof(hb));
			h = &hb;
			break;
		}
	}
	if (!h)
		return 0;
	*found = true;
	/* §3.1.2: bits 0-15 are requirements; refuse ones we cannot honour. */
	uint32_t unknown = h->flags & 0xffffu & ~(MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO);
	if (unknown & MB_FLAG_VIDEO_MODE)
		return kap_error_plain(err, ENOEXEC,
				       "multiboot: the kernel requires a video mode (header flag "
				       "2); kapsel has no display");
	if (unknown)
		return kap_error_plain(err, ENOEXEC, "multiboot: unsupported required flags 0x%x",
				       unknown);
	img->kind = KAP_BOOT_MULTIBOOT;
	img->mb_flags = h->flags;
	if (h->flags & MB_FLAG_AOUT_KLUDGE) {
		if (len - off < sizeof(hb))
			return kap_error_plain(err, ENOEXEC, "multiboot: truncated header");
		/* §3.1.3: the file offset of header_addr is off; load_addr maps back from it. */
		if (h->load_addr > h->header_addr || h->header_addr - h->load_addr > off)
			return kap_error_plain(err, ENOEXEC,
					       "multiboot: load_addr after header_addr");
		uint64_t file_off = off - (h->header_addr - h->load_addr);
		uint64_t filesz =
		    h->load_end_addr ? (uint64_t)h->load_end_addr - h->load_addr : len - file_off;
		if (h->load_end_addr && h->load_end_addr < h->load_addr)
			return kap_error_plain(err, ENOEXEC,
					       "multiboot: load_end_addr < load_addr");
		if (filesz > len - file_off)
			return kap_error_plain(err, ENOEXEC,
					       "multiboot: image shorter than load_end_addr "
					       "(truncated kernel?)");
		uint64_t memsz = filesz;
		if (h->bss_end_addr) {
			if (h->bss_end_addr < h->load_addr + filesz)
				return kap_error_plain(
				    err, ENOEXEC, "multiboot: bss_end_addr before the image end");
			memsz = (uint64_t)h->bss_end_addr - h->load_addr;
		}
		img->nsegs = 1;
		img->segs[0] = (struct kap_boot_seg){file_off, h->load_addr, filesz, memsz};
		img->end = (uint64_t)h->load_addr + memsz;
		img->entry = h->entry_addr;
		return 0;
	}
	if (!kap_elf_is_elf(buf, len))
		return kap_error_plain(err, ENOEXEC,
				       "multiboot: not an ELF file and no a.out kludge (flag 16)");
	int r = kap_elf_load_segments(buf, len, img, err);
	if (r < 0)
		return r;
	uint64_t entry;
	if (buf[EI_CLASS] == ELFCLASS64) {
		Elf64_Ehdr eh;
		memcpy(&eh, buf, sizeof(eh));
		entry = eh.e_entry;
	} else {
		Elf32_Ehdr eh;
		memcpy(&eh, buf, sizeof(eh));
		entry = eh.e_entry;
	}
	img->entry = entry;
	return 0;
}

int kap_boot_multiboot_info(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
			    uint64_t cmdline_gpa, uint64_t initrd_gpa, uint64_t initrd_len,
			    struct kap_boot_entry *entry, struct kapsel_error **err)
{
	static const char loader[] = "kapsel";
	struct mb_info info = {0};
	uint64_t extra = base + KAP_BOOT_INFO_EXTRA;

	if (img->entry > 0xffffffffULL || img->end > 0xffffffffULL)
		return kap_error_plain(err, ENOEXEC, "multiboot: kernel above 4 GiB");
	/* mem_lower: KiB from 0 (up to 640); mem_upper: KiB of contiguous RAM from 1 MiB. */
	info.flags = MB_INFO_MEMORY | MB_INFO_CMDLINE | MB_INFO_MEM_MAP | MB_INFO_LOADER_NAME;
	info.mem_lower = KAP_EBDA_START >> 10;
	info.mem_upper = (uint32_t)((vm->mem.low_size - KAP_HIGH_MEM) >> 10);
	info.cmdline = (uint32_t)cmdline_gpa;

	struct kap_e820_entry e820[KAP_E820_MAX];
	size_t n =
	    kap_e820_build(vm->mem.low_size, vm->mem.size - vm->mem.low_size, e820, KAP_E820_MAX);
	struct mb_mmap_entry mm[KAP_E820_MAX];
	for (size_t i = 0; i < n; i++)
		mm[i] = (struct mb_mmap_entry){.size = sizeof(mm[i]) - 4,
					       .addr = e820[i].addr,
					       .len = e820[i].size,
					       .type = e820[i].type};
	info.mmap_addr = (uint32_t)extra;
	info.mmap_length = (uint32_t)(n * sizeof(mm[0]));
	if (kap_mem_write(&vm->mem, extra, mm, info.mmap_length) < 0)
		return kap_error_plain(err, ENOMEM, "multiboot: no room for the memory map");
	extra += (info.mmap_length + 15) & ~15u;

	if (initrd_gpa) {
		/* The module's string is "initrd": the host file name is not the guest's business.
		 */
		static const char name[] = "initrd";
		uint64_t name_gpa = extra + sizeof(struct mb_module);
		struct mb_module mod = {(uint32_t)initrd_gpa, (uint32_t)(initrd_gpa + initrd_len),
					(uint32_t)name_gpa, 0};
		if (kap_mem_write(&vm->mem, name_gpa, name, sizeof(name)) < 0)
			return kap_error_plain(err, ENOMEM, "multiboot: no room for modules");
		info.flags |= MB_INFO_MODS;
		info.mods_count = 1;
		info.mods_addr = (uint32_t)extra;
		if (kap_mem_write(&vm->mem, extra, &mod, sizeof(mod)) < 0)
			return kap_error_plain(err, ENOMEM, "multiboot: no room for modules");
		extra += sizeof(mod) + sizeof(name);
	}
	info.boot_loader_name = (uint32_t)extra;
	if (kap_mem_write(&vm->mem, extra, loader, sizeof(loader)) < 0 ||
	    kap_mem_write(&vm->mem, base + KAP_BOOT_INFO, &info, sizeof(info)) < 0)
		return kap_error_plain(err, ENOMEM, "multiboot: no room for the boot information");

	*entry = (struct kap_boot_entry){
	    .long_mode = false,
	    .rip = img->entry,
	    .rsp = base + KAP_BOOT_STACK,
	    .rax = MB_BOOTLOADER_MAGIC,
	    .rbx = base + KAP_BOOT_INFO,
	};
	return 0;
}
