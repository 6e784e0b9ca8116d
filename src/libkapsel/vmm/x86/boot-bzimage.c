/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linux bzImage through the 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit
 * BOOT PROTOCOL"): the protected-mode kernel is loaded at 1 MiB, boot_params ("zero page") gets
 * a copy of the file's setup header plus what the loader fills in, and the vCPU starts in long
 * mode with identity-mapped page tables, __BOOT_CS = 0x10 / __BOOT_DS = 0x18, at load address
 * + 0x200, RSI = &boot_params.
 */
#include <asm/bootparam.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "core/error.h"
#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

#define BZ_SETUP_HDR	  0x1f1
#define BZ_BOOT_FLAG_OFF  0x1fe
#define BZ_HEADER_OFF	  0x202
#define BZ_HDRS		  0x53726448u /* "HdrS" */
#define BZ_MIN_VERSION	  0x020c      /* xloadflags and the 64-bit entry */
#define BZ_LOADER_UNKNOWN 0xff
#define BZ_ENTRY64_OFF	  0x200

int kap_boot_parse_bzimage(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			   struct kapsel_error **err)
{
	struct setup_header h;
	if (len < BZ_SETUP_HDR + sizeof(h))
		return kap_error_plain(err, ENOEXEC, "bzImage: truncated setup header");
	memcpy(&h, buf + BZ_SETUP_HDR, sizeof(h));
	if (h.boot_flag != 0xAA55 || h.header != BZ_HDRS)
		return kap_error_plain(err, ENOEXEC, "bzImage: no setup header (\"HdrS\")");
	if (h.version < BZ_MIN_VERSION)
		return kap_error_plain(err, ENOEXEC,
				       "bzImage: boot protocol %u.%02u is too old (2.12 needed for "
				       "the 64-bit entry)",
				       h.version >> 8, h.version & 0xff);
	if (!(h.xloadflags & XLF_KERNEL_64))
		return kap_error_plain(err, ENOEXEC,
				       "bzImage: the kernel has no 64-bit entry point "
				       "(XLF_KERNEL_64)");
	/* boot.rst: "If [setup_sects] is 0, the real value is 4." */
	uint32_t setup_sects = h.setup_sects ? h.setup_sects : 4;
	uint64_t setup_size = ((uint64_t)setup_sects + 1) * 512;
	if (setup_size >= len)
		return kap_error_plain(err, ENOEXEC,
				       "bzImage: no protected-mode kernel after %u setup sectors "
				       "(truncated kernel?)",
				       setup_sects);
	/* syssize counts 16-byte paragraphs of the protected-mode part. */
	uint64_t pm_size = len - setup_size;
	if ((uint64_t)h.syssize * 16 > pm_size)
		return kap_error_plain(
		    err, ENOEXEC,
		    "bzImage: file is %llu bytes short of its syssize (truncated "
		    "kernel?)",
		    (unsigned long long)((uint64_t)h.syssize * 16 - pm_size));
	/* The header's length: byte 0x201 holds the offset of its end from 0x202. */
	uint32_t hdr_end = BZ_HEADER_OFF + buf[0x201];
	if (hdr_end > len || hdr_end < BZ_HEADER_OFF + 4)
		return kap_error_plain(err, ENOEXEC, "bzImage: bad setup header length");
	img->kind = KAP_BOOT_BZIMAGE;
	img->bz_version = h.version;
	img->bz_xloadflags = h.xloadflags;
	img->bz_hdr_end = hdr_end;
	img->bz_initrd_addr_max = h.initrd_addr_max ? h.initrd_addr_max : 0x37ffffff;
	img->bz_cmdline_size = h.cmdline_size ? h.cmdline_size : 255;
	/* The kernel decompresses itself into init_size bytes from its load address. */
	uint64_t memsz = pm_size > h.init_size ? pm_size : h.init_size;
	img->nsegs = 1;
	img->segs[0] = (struct kap_boot_seg){setup_size, KAP_HIGH_MEM, pm_size, memsz};
	img->end = KAP_HIGH_MEM + memsz;
	img->entry = KAP_HIGH_MEM + BZ_ENTRY64_OFF;
	return 0;
}

int kap_boot_bzimage_params(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
			    const uint8_t *kernel, uint64_t cmdline_gpa, uint64_t initrd_gpa,
			    uint64_t initrd_len, struct kap_boot_entry *entry,
			    struct kapsel_error **err)
{
	struct boot_params *bp = kap_mem_ptr(&vm->mem, base + KAP_BOOT_INFO, sizeof(*bp));
	if (!bp)
		return kap_error_plain(err, ENOMEM, "bzImage: no room for boot_params");
	memset(bp, 0, sizeof(*bp));
	/* Copy the setup header as the file has it, up to its own stated end. */
	size_t hdr_len = img->bz_hdr_end - BZ_SETUP_HDR;
	if (hdr_len > sizeof(bp->hdr))
		hdr_len = sizeof(bp->hdr);
	memcpy(&bp->hdr, kernel + BZ_SETUP_HDR, hdr_len);
	bp->hdr.type_of_loader = BZ_LOADER_UNKNOWN;
	/* CAN_USE_HEAP with heap_end_ptr as boot.rst's example loader sets them. */
	bp->hdr.loadflags |= CAN_USE_HEAP | LOADED_HIGH;
	bp->hdr.heap_end_ptr = 0xfe00;
	bp->hdr.cmd_line_ptr = (uint32_t)cmdline_gpa;
	bp->ext_cmd_line_ptr = (uint32_t)(cmdline_gpa >> 32);
	bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
	bp->hdr.ramdisk_size = (uint32_t)initrd_len;
	bp->ext_ramdisk_image = (uint32_t)(initrd_gpa >> 32);
	bp->ext_ramdisk_size = (uint32_t)(initrd_len >> 32);
	bp->hdr.code32_start = KAP_HIGH_MEM;
	/* acpi_rsdp_addr exists from protocol 2.14 on; older kernels scan 0xE0000 themselves. */
	if (img->bz_version >= 0x020e)
		bp->acpi_rsdp_addr = KAP_ACPI_BASE;
	struct kap_e820_entry e820[KAP_E820_MAX];
	size_t n =
	    kap_e820_build(vm->mem.low_size, vm->mem.size - vm->mem.low_size, e820, KAP_E820_MAX);
	_Static_assert(KAP_E820_MAX <= E820_MAX_ENTRIES_ZEROPAGE, "e820 table too small");
	for (size_t i = 0; i < n; i++) {
		bp->e820_table[i].addr = e820[i].addr;
		bp->e820_table[i].size = e820[i].size;
		bp->e820_table[i].type = e820[i].type;
	}
	bp->e820_entries = (uint8_t)n;
	*entry = (struct kap_boot_entry){
	    .long_mode = true,
	    .rip = img->entry,
	    .rsp = base + KAP_BOOT_STACK,
	    .rsi = base + KAP_BOOT_INFO,
	};
	return 0;
}
