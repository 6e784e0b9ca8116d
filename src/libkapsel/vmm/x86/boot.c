/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Boot-format detection, the e820 map every protocol reports, and the common loading steps:
 * segments, command line, initrd placement, then the protocol's boot information and entry
 * state. Order of detection: a bzImage setup header, then an ELF with the PVH note (Linux's
 * vmlinux; the fastest path), then a multiboot header.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

const char *kap_boot_kind_name(enum kap_boot_kind k)
{
	switch (k) {
	case KAP_BOOT_MULTIBOOT:
		return "multiboot";
	case KAP_BOOT_PVH:
		return "PVH";
	case KAP_BOOT_BZIMAGE:
		return "bzImage";
	}
	return "?";
}

static bool looks_like_bzimage(const uint8_t *buf, size_t len)
{
	return len >= 0x206 && buf[0x1fe] == 0x55 && buf[0x1ff] == 0xaa &&
	       !memcmp(buf + 0x202, "HdrS", 4);
}

int kap_boot_parse(const uint8_t *buf, size_t len, struct kap_boot_image *img,
		   struct kapsel_error **err)
{
	memset(img, 0, sizeof(*img));
	if (len == 0)
		return kap_error_plain(err, ENOEXEC, "empty file");
	if (looks_like_bzimage(buf, len))
		return kap_boot_parse_bzimage(buf, len, img, err);
	if (kap_elf_is_elf(buf, len)) {
		const uint8_t *desc;
		uint32_t dlen;
		int r = kap_elf_find_note(buf, len, "Xen", KAP_XEN_ELFNOTE_PHYS32_ENTRY, &desc,
					  &dlen, err);
		if (r < 0)
			return r;
		if (r > 0) {
			/* The note holds a 32-bit address (Linux emits 4 bytes; Xen reads 4 or 8).
			 */
			if (dlen != 4 && dlen != 8)
				return kap_error_plain(err, ENOEXEC, "PVH: entry note has %u bytes",
						       dlen);
			uint32_t entry;
			memcpy(&entry, desc, 4);
			r = kap_elf_load_segments(buf, len, img, err);
			if (r < 0)
				return r;
			img->kind = KAP_BOOT_PVH;
			img->entry = entry;
			return 0;
		}
	}
	bool found;
	int r = kap_boot_parse_multiboot(buf, len, img, &found, err);
	if (r < 0 || found)
		return r;
	if (kap_elf_is_elf(buf, len))
		return kap_error_plain(err, ENOEXEC,
				       "ELF kernel without a PVH entry note or a multiboot header");
	return kap_error_plain(err, ENOEXEC,
			       "unrecognised kernel format (expected a bzImage, a PVH ELF or a "
			       "multiboot kernel)");
}

size_t kap_e820_build(uint64_t low_size, uint64_t high_size, struct kap_e820_entry *out, size_t max)
{
	size_t n = 0;
#define ADD(a, s, t)                                                                               \
	do {                                                                                       \
		if (n < max && (s) > 0)                                                            \
			out[n++] = (struct kap_e820_entry){(a), (s), (t)};                         \
	} while (0)
	/* Conventional memory up to the EBDA, then the BIOS area holding the ACPI tables. */
	uint64_t conv = low_size < KAP_EBDA_START ? low_size : KAP_EBDA_START;
	ADD(0, conv, KAP_E820_RAM);
	ADD(KAP_EBDA_START, KAP_HIGH_MEM - KAP_EBDA_START, KAP_E820_RESERVED);
	if (low_size > KAP_HIGH_MEM)
		ADD(KAP_HIGH_MEM, low_size - KAP_HIGH_MEM, KAP_E820_RAM);
	ADD(KAP_4G, high_size, KAP_E820_RAM);
#undef ADD
	return n;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* The first segment overlapping [addr, addr + len), or NULL. */
static const struct kap_boot_seg *seg_overlapping(const struct kap_boot_image *img, uint64_t addr,
						  uint64_t len)
{
	for (unsigned int i = 0; i < img->nsegs; i++)
		if (overlaps(img->segs[i].paddr, img->segs[i].memsz, addr, len))
			return &img->segs[i];
	return NULL;
}

/*
 * Where the boot block and the command line go: their usual places unless the kernel loads
 * there (a multiboot kernel may sit below 1 MiB), else the lowest free page-aligned place in
 * conventional memory, the block first. Each kernel segment must then be clear of both.
 */
static int place_boot_data(const struct kap_boot_image *img, size_t cmdline_len, uint64_t *base,
			   uint64_t *cmdline_gpa, struct kapsel_error **err)
{
	const uint64_t blen = KAP_BOOT_BLOCK_END - KAP_BOOT_BLOCK_START;
	const struct kap_boot_seg *s = seg_overlapping(img, KAP_BOOT_BLOCK_START, blen);
	*base = 0;
	for (uint64_t b = 0x1000; s && b + KAP_BOOT_BLOCK_END <= KAP_EBDA_START; b += 0x1000) {
		if (!seg_overlapping(img, b + KAP_BOOT_BLOCK_START, blen)) {
			*base = b;
			s = NULL;
		}
	}
	if (s)
		return kap_error_plain(err, ENOEXEC,
				       "kernel segment [0x%" PRIx64 ", 0x%" PRIx64
				       ") leaves no room below 0x%x for kapsel's boot data "
				       "(%" PRIu64 " KiB at [0x%x, 0x%x) or any page-aligned "
				       "place under it)",
				       s->paddr, s->paddr + s->memsz, KAP_EBDA_START, blen >> 10,
				       KAP_BOOT_BLOCK_START, KAP_BOOT_BLOCK_END);
	uint64_t clen = cmdline_len + 1;
	uint64_t bstart = *base + KAP_BOOT_BLOCK_START, bend = *base + KAP_BOOT_BLOCK_END;
	*cmdline_gpa = KAP_BOOT_CMDLINE;
	s = seg_overlapping(img, KAP_BOOT_CMDLINE, clen);
	for (uint64_t c = 0x1000; s && c + clen <= KAP_EBDA_START; c += 0x1000) {
		if (!overlaps(c, clen, bstart, bend - bstart) && !seg_overlapping(img, c, clen)) {
			*cmdline_gpa = c;
			s = NULL;
		}
	}
	if (s)
		return kap_error_plain(err, ENOEXEC,
				       "kernel segment [0x%" PRIx64 ", 0x%" PRIx64
				       ") leaves no room below 0x%x for the command line (%" PRIu64
				       " bytes)",
				       s->paddr, s->paddr + s->memsz, KAP_EBDA_START, clen);
	return 0;
}

static int load_segments(struct kap_vm *vm, const struct kap_boot_image *img, const uint8_t *kernel,
			 struct kapsel_error **err)
{
	unsigned long long mib = (unsigned long long)(vm->mem.size >> 20);
	for (unsigned int i = 0; i < img->nsegs; i++) {
		const struct kap_boot_seg *s = &img->segs[i];
		/*
		 * The BIOS area holds the ACPI tables, whose RSDP must stay in 0xe0000-0xfffff
		 * (ACPI 6.5, 5.2.5.1): the one boot structure that cannot move.
		 */
		if (overlaps(s->paddr, s->memsz, KAP_EBDA_START, KAP_HIGH_MEM - KAP_EBDA_START))
			return kap_error_plain(err, ENOEXEC,
					       "kernel segment [0x%" PRIx64 ", 0x%" PRIx64
					       ") overlaps the BIOS area with the ACPI tables "
					       "[0x%x, 0x%x)",
					       s->paddr, s->paddr + s->memsz, KAP_EBDA_START,
					       KAP_HIGH_MEM);
		uint8_t *p = kap_mem_ptr(&vm->mem, s->paddr, s->memsz);
		if (!p)
			return kap_error_plain(err, E2BIG,
					       "kernel does not fit: %" PRIu64
					       " bytes at 0x%" PRIx64 " are outside %llu MiB of "
					       "guest RAM (raise --mem)",
					       s->memsz, s->paddr, mib);
		/*
		 * The rest up to memsz (bss) is left alone: guest RAM is new memory, all zeroes,
		 * and clearing it would only make its pages resident.
		 */
		memcpy(p, kernel + s->offset, s->filesz);
	}
	return 0;
}

int kap_boot_load(struct kap_vm *vm, const struct kap_boot_image *img, const uint8_t *kernel,
		  size_t kernel_len, const uint8_t *initrd, size_t initrd_len, const char *cmdline,
		  struct kap_boot_entry *entry, struct kapsel_error **err)
{
	if (vm->mem.low_size < 2 * KAP_HIGH_MEM)
		return kap_error_plain(err, E2BIG, "--mem: at least 2 MiB of guest RAM is needed");
	int r = load_segments(vm, img, kernel, err);
	if (r < 0)
		return r;

	size_t clen = cmdline ? strlen(cmdline) : 0;
	size_t cmax = KAP_BOOT_CMDLINE_MAX - 1;
	if (img->kind == KAP_BOOT_BZIMAGE && img->bz_cmdline_size < cmax)
		cmax = img->bz_cmdline_size;
	if (clen > cmax)
		return kap_error_plain(
		    err, E2BIG, "--cmdline: %zu bytes, the kernel accepts at most %zu", clen, cmax);
	uint64_t base, cmdline_gpa;
	r = place_boot_data(img, clen, &base, &cmdline_gpa, err);
	if (r < 0)
		return r;
	if (kap_mem_write(&vm->mem, cmdline_gpa, cmdline ? cmdline : "", clen) < 0 ||
	    kap_mem_write(&vm->mem, cmdline_gpa + clen, "", 1) < 0)
		return kap_error_plain(err, E2BIG, "no room for the command line");

	/*
	 * The initrd goes as high in low RAM as allowed (where Linux's loaders put it, away from
	 * the kernel's decompression area), page aligned, and above the kernel's end.
	 */
	uint64_t initrd_gpa = 0;
	if (initrd) {
		uint64_t top = vm->mem.low_size;
		if (img->kind == KAP_BOOT_BZIMAGE && (uint64_t)img->bz_initrd_addr_max + 1 < top)
			top = (uint64_t)img->bz_initrd_addr_max + 1;
		if (img->kind != KAP_BOOT_BZIMAGE && top > 0xffffffffULL)
			top = 0xffffffffULL;
		uint64_t floor = (img->end + 0xfff) & ~0xfffULL;
		if (initrd_len > top || ((top - initrd_len) & ~0xfffULL) < floor)
			return kap_error_plain(err, E2BIG,
					       "initrd (%zu bytes) does not fit in guest RAM above "
					       "the kernel (%llu MiB; raise --mem)",
					       initrd_len,
					       (unsigned long long)(vm->mem.size >> 20));
		initrd_gpa = (top - initrd_len) & ~0xfffULL;
		r = kap_mem_write(&vm->mem, initrd_gpa, initrd, initrd_len);
		if (r < 0)
			return kap_error_plain(err, E2BIG, "initrd does not fit in guest RAM");
	}

	switch (img->kind) {
	case KAP_BOOT_MULTIBOOT:
		r = kap_boot_multiboot_info(vm, img, base, cmdline_gpa, initrd_gpa, initrd_len,
					    entry, err);
		break;
	case KAP_BOOT_PVH:
		r = kap_boot_pvh_info(vm, img, base, cmdline_gpa, initrd_gpa, initrd_len, entry,
				      err);
		break;
	case KAP_BOOT_BZIMAGE:
		(void)kernel_len;
		r = kap_boot_bzimage_params(vm, img, base, kernel, cmdline_gpa, initrd_gpa,
					    initrd_len, entry, err);
		break;
	}
	if (r < 0)
		return r;
	entry->gdt = base + KAP_BOOT_GDT;
	entry->cr3 = base + KAP_BOOT_PML4;
	return kap_x86_write_boot_tables(vm, entry->long_mode, base, err);
}
