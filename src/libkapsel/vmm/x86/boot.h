/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Boot paths for x86 guests, auto-detected from the kernel file:
 *   bzImage   Documentation/arch/x86/boot.rst, the 64-bit boot protocol (boot-bzimage.c)
 *   PVH ELF   an ELF with XEN_ELFNOTE_PHYS32_ENTRY, entered in 32-bit protected mode with an
 *             hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h; boot-pvh.c)
 *   Multiboot Multiboot Specification 0.6.96: ELF (or a.out kludge) with a multiboot header in
 *             its first 8 KiB (boot-multiboot.c)
 * Parsing is pure (unit tests, fuzzing); loading writes guest memory (boot.c).
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/*
 * Guest-physical addresses of the boot data (docs/vm.md, "Memory map") for a kernel above
 * 1 MiB. GDT to page tables form one block, [KAP_BOOT_BLOCK_START, KAP_BOOT_BLOCK_END); for a
 * kernel loaded into it, the block moves by a page-aligned base (kap_boot_load) to free low
 * memory, and so does the command line.
 */
#define KAP_BOOT_GDT	     0x0500
#define KAP_BOOT_INFO	     0x7000 /* boot_params, multiboot_info or hvm_start_info */
#define KAP_BOOT_INFO_EXTRA  0x8000 /* memory map, module list: 4 KiB */
#define KAP_BOOT_PML4	     0x9000
#define KAP_BOOT_PDPT	     0xa000
#define KAP_BOOT_PD	     0xb000 /* four pages: 4 GiB identity-mapped with 2 MiB pages */
#define KAP_BOOT_STACK	     0x7000 /* grows down from the boot info */
#define KAP_BOOT_BLOCK_START 0x0500
#define KAP_BOOT_BLOCK_END   0xf000
#define KAP_BOOT_CMDLINE     0x20000
#define KAP_BOOT_CMDLINE_MAX 0x10000
#define KAP_ACPI_BASE	     0xe0000 /* RSDP; the tables follow, up to 1 MiB */
#define KAP_ACPI_SIZE	     0x20000
#define KAP_EBDA_START	     0x9fc00
#define KAP_HIGH_MEM	     0x100000

enum kap_boot_kind {
	KAP_BOOT_MULTIBOOT,
	KAP_BOOT_PVH,
	KAP_BOOT_BZIMAGE,
};

#define KAP_BOOT_MAX_SEGS 16

/* A piece of the file copied to guest memory (memsz > filesz: the rest is zeroed). */
struct kap_boot_seg {
	uint64_t offset, paddr, filesz, memsz;
};

struct kap_boot_image {
	enum kap_boot_kind kind;
	uint64_t entry; /* guest-physical */
	struct kap_boot_seg segs[KAP_BOOT_MAX_SEGS];
	unsigned int nsegs;
	uint64_t end;	   /* highest paddr + memsz over the segments */
	uint32_t mb_flags; /* multiboot header flags */
	/* bzImage: the setup header as the file has it (boot.rst "THE REAL-MODE KERNEL HEADER"). */
	uint16_t bz_version;
	uint16_t bz_xloadflags;
	uint32_t bz_hdr_end;	     /* file offset where the setup header ends */
	uint32_t bz_initrd_addr_max; /* highest address an initrd byte may have */
	uint32_t bz_cmdline_size;    /* max cmdline length without the NUL */
};

const char *kap_boot_kind_name(enum kap_boot_kind k);

/* Detects the format and validates every offset and size against len. */
int kap_boot_parse(const uint8_t *buf, size_t len, struct kap_boot_image *img,
		   struct kapsel_error **err);
int kap_boot_parse_bzimage(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			   struct kapsel_error **err);
/*
 * The vmlinux inside a bzImage with an xz or zstd payload and a PVH entry, unpacked on the host
 * (boot-unpack.c; the soft CPU's way in): 1 with *out an anonymous mapping of *out_len bytes
 * (munmap it) and *img parsed from it; 0 when the image is not one of those (or the library is
 * missing), for the kernel's own decompressor; < 0 when the payload is corrupt.
 */
int kap_boot_unpack_bzimage(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len,
			    struct kap_boot_image *img, struct kapsel_error **err);
/* 0 and *found=false when buf has no multiboot header in its first 8 KiB. */
int kap_boot_parse_multiboot(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			     bool *found, struct kapsel_error **err);

/* ELF (boot-elf.c): PT_LOAD segments by physical address, and one note lookup. */
bool kap_elf_is_elf(const uint8_t *buf, size_t len);
int kap_elf_load_segments(const uint8_t *buf, size_t len, struct kap_boot_image *img,
			  struct kapsel_error **err);
/* The descriptor of note (name, type) in a PT_NOTE segment: 1 found, 0 none, -errno bad. */
int kap_elf_find_note(const uint8_t *buf, size_t len, const char *name, uint32_t type,
		      const uint8_t **desc, uint32_t *desc_len, struct kapsel_error **err);
#define KAP_XEN_ELFNOTE_PHYS32_ENTRY 18

/* BIOS-e820 memory map (boot.c), the same for every boot path. */
#define KAP_E820_RAM	  1
#define KAP_E820_RESERVED 2
struct kap_e820_entry {
	uint64_t addr, size;
	uint32_t type;
} __attribute__((packed));
#define KAP_E820_MAX 8
/* low_size: RAM below the MMIO hole; high_size: RAM from 4 GiB. Returns the entry count. */
size_t kap_e820_build(uint64_t low_size, uint64_t high_size, struct kap_e820_entry *out,
		      size_t max);

/* How a vCPU starts (regs.c applies it). */
struct kap_boot_entry {
	bool long_mode; /* 64-bit with identity paging; else flat 32-bit protected mode */
	uint64_t rip, rsp, rax, rbx, rsi;
	uint64_t gdt, cr3; /* where kap_boot_load put the GDT and (long mode) the PML4 */
};

struct kap_vm;
/*
 * Loads the kernel and initrd into guest memory and writes the boot information for img's
 * protocol; ACPI tables must already be at KAP_ACPI_BASE. Errors name what does not fit.
 */
int kap_boot_load(struct kap_vm *vm, const struct kap_boot_image *img, const uint8_t *kernel,
		  size_t kernel_len, const uint8_t *initrd, size_t initrd_len, const char *cmdline,
		  struct kap_boot_entry *entry, struct kapsel_error **err);
/* Per protocol (boot-*.c); base: the boot block's offset; initrd_gpa is 0 without an initrd. */
int kap_boot_multiboot_info(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
			    uint64_t cmdline_gpa, uint64_t initrd_gpa, uint64_t initrd_len,
			    struct kap_boot_entry *entry, struct kapsel_error **err);
int kap_boot_pvh_info(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
		      uint64_t cmdline_gpa, uint64_t initrd_gpa, uint64_t initrd_len,
		      struct kap_boot_entry *entry, struct kapsel_error **err);
int kap_boot_bzimage_params(struct kap_vm *vm, const struct kap_boot_image *img, uint64_t base,
			    const uint8_t *kernel, uint64_t cmdline_gpa, uint64_t initrd_gpa,
			    uint64_t initrd_len, struct kap_boot_entry *entry,
			    struct kapsel_error **err);
/*
 * Firmware boot (boot-firmware.c): a BIOS image of 64, 128 or 256 KiB, copied into private
 * memory (*rom, *len: munmap them), then mapped read-only below 4 GiB with its last 128 KiB
 * also in RAM at 0xE0000 (KAP_FIRMWARE_MIN_RAM of RAM at least).
 */
#define KAP_FIRMWARE_MIN     0x10000
#define KAP_FIRMWARE_MAX     0x40000
#define KAP_FIRMWARE_MIN_RAM (16ULL << 20)
int kap_firmware_read(const char *path, uint8_t **rom, size_t *len, struct kapsel_error **err);
int kap_firmware_load(struct kap_vm *vm, uint8_t *rom, size_t len, struct kapsel_error **err);
/* QEMU's isa-debugcon at 0x402, where SeaBIOS logs: writes go to path (NULL: dropped). */
#define KAP_DEBUGCON_PORT 0x402
struct kap_debugcon;
extern const struct kap_dev_ops kap_debugcon_ops;
int kap_debugcon_new(const char *path, struct kap_debugcon **out, struct kapsel_error **err);
void kap_debugcon_free(struct kap_debugcon *d);

/* Writes the boot GDT and, for long mode, the identity page tables (regs.c). */
int kap_x86_write_boot_tables(struct kap_vm *vm, bool long_mode, uint64_t base,
			      struct kapsel_error **err);
