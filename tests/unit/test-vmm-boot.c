/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Boot-image parsing (multiboot header, ELF segments and the PVH note, the bzImage setup
 * header), the e820 map, the guest-memory bounds checks and the size syntax, over images
 * synthesised here.
 */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <kapsel/vm.h>

#include "vmm/vmm.h"
#include "vmm/x86/boot.h"

static uint8_t img[16384];

static int parse(size_t len, struct kap_boot_image *out, const char *want_err)
{
	struct kapsel_error *err = NULL;
	int r = kap_boot_parse(img, len, out, &err);
	if (want_err) {
		assert_true(r < 0);
		assert_non_null(err);
		if (!strstr(err->msg, want_err))
			fail_msg("error \"%s\" lacks \"%s\"", err->msg, want_err);
	} else if (r < 0) {
		fail_msg("parse: %s", err ? err->msg : "?");
	}
	kapsel_error_free(err);
	return r;
}

/* An ELF32 with one PT_LOAD at 1 MiB and optionally a PT_NOTE with the PVH entry. */
static size_t make_elf32(bool pvh, bool multiboot)
{
	memset(img, 0, sizeof(img));
	Elf32_Ehdr *eh = (Elf32_Ehdr *)img;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS32;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_machine = EM_386;
	eh->e_entry = 0x100010;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(Elf32_Phdr);
	eh->e_phnum = pvh ? 2 : 1;
	Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(*eh));
	ph[0] = (Elf32_Phdr){.p_type = PT_LOAD,
			     .p_offset = 0x1000,
			     .p_paddr = 0x100000,
			     .p_vaddr = 0x100000,
			     .p_filesz = 0x800,
			     .p_memsz = 0x3000};
	if (pvh) {
		uint8_t *n = img + 0x200;
		uint32_t hdr[3] = {4, 4, KAP_XEN_ELFNOTE_PHYS32_ENTRY};
		memcpy(n, hdr, 12);
		memcpy(n + 12, "Xen", 4);
		uint32_t entry = 0x100020;
		memcpy(n + 16, &entry, 4);
		ph[1] = (Elf32_Phdr){.p_type = PT_NOTE, .p_offset = 0x200, .p_filesz = 20};
	}
	if (multiboot) {
		uint32_t h[3] = {0x1BADB002, 3, (uint32_t) - (0x1BADB002 + 3)};
		memcpy(img + 0x1000, h, sizeof(h));
	}
	return 0x1800;
}

static void test_multiboot_elf(void **state)
{
	struct kap_boot_image b;
	size_t len = make_elf32(false, true);
	assert_int_equal(parse(len, &b, NULL), 0);
	assert_int_equal(b.kind, KAP_BOOT_MULTIBOOT);
	assert_int_equal(b.entry, 0x100010);
	assert_int_equal(b.nsegs, 1);
	assert_int_equal(b.segs[0].paddr, 0x100000);
	assert_int_equal(b.segs[0].filesz, 0x800);
	assert_int_equal(b.segs[0].memsz, 0x3000);
	assert_int_equal(b.end, 0x103000);
}

static void test_multiboot_flags(void **state)
{
	struct kap_boot_image b;
	size_t len = make_elf32(false, true);
	/* Video mode (bit 2) is a requirement kapsel cannot meet. */
	uint32_t h[3] = {0x1BADB002, 4, (uint32_t) - (0x1BADB002 + 4)};
	memcpy(img + 0x1000, h, sizeof(h));
	parse(len, &b, "requires a video mode");
	uint32_t u[3] = {0x1BADB002, 0x100, (uint32_t) - (0x1BADB002 + 0x100)};
	memcpy(img + 0x1000, u, sizeof(u));
	parse(len, &b, "unsupported required flags 0x100");
	/* A bad checksum is no header at all. */
	uint32_t c[3] = {0x1BADB002, 3, 0};
	memcpy(img + 0x1000, c, sizeof(c));
	parse(len, &b, "without a PVH entry note or a multiboot header");
}

static void test_multiboot_aout_kludge(void **state)
{
	struct kap_boot_image b;
	memset(img, 0, sizeof(img));
	/* Header at file offset 0x40; the image loads at 2 MiB from file offset 0. */
	uint32_t h[8] = {0x1BADB002, 0x10000,  (uint32_t) - (0x1BADB002 + 0x10000),
			 0x200040,   0x200000, 0x200800,
			 0x204000,   0x200100};
	memcpy(img + 0x40, h, sizeof(h));
	assert_int_equal(parse(0x1000, &b, NULL), 0);
	assert_int_equal(b.kind, KAP_BOOT_MULTIBOOT);
	assert_int_equal(b.entry, 0x200100);
	assert_int_equal(b.segs[0].offset, 0);
	assert_int_equal(b.segs[0].filesz, 0x800);
	assert_int_equal(b.segs[0].memsz, 0x4000);
	/* load_end_addr beyond the file: truncated. */
	h[5] = 0x202000;
	memcpy(img + 0x40, h, sizeof(h));
	parse(0x1000, &b, "truncated kernel");
	/* load_addr after header_addr. */
	h[5] = 0x200800;
	h[4] = 0x200080;
	memcpy(img + 0x40, h, sizeof(h));
	parse(0x1000, &b, "load_addr after header_addr");
}

static void test_pvh_note(void **state)
{
	struct kap_boot_image b;
	size_t len = make_elf32(true, true);
	/* PVH wins over multiboot: no real-mode or multiboot shims needed. */
	assert_int_equal(parse(len, &b, NULL), 0);
	assert_int_equal(b.kind, KAP_BOOT_PVH);
	assert_int_equal(b.entry, 0x100020);
	/* A note whose size runs past its segment. */
	uint32_t big = 0x1000;
	memcpy(img + 0x200 + 4, &big, 4);
	parse(len, &b, "truncated note");
}

static void test_elf_hostile(void **state)
{
	struct kap_boot_image b;
	size_t len = make_elf32(false, true);
	Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(Elf32_Ehdr));
	ph[0].p_filesz = 0x10000;
	parse(len, &b, "past the end of the file");
	make_elf32(false, true);
	ph[0].p_filesz = 0x1000; /* > memsz */
	ph[0].p_memsz = 0x100;
	ph[0].p_offset = 0;
	parse(len, &b, "bad sizes");
	make_elf32(false, true);
	((Elf32_Ehdr *)img)->e_phnum = 60000;
	parse(len, &b, "program headers");
	make_elf32(false, true);
	((Elf32_Ehdr *)img)->e_machine = EM_AARCH64;
	parse(len, &b, "is not x86");
	parse(10, &b, "unrecognised kernel format");
	parse(0, &b, "empty file");
}

static size_t make_bzimage(uint16_t version, uint16_t xloadflags, size_t pm_len)
{
	memset(img, 0, sizeof(img));
	img[0x1f1] = 1; /* setup_sects */
	uint32_t syssize = (uint32_t)((pm_len + 15) / 16);
	memcpy(img + 0x1f4, &syssize, 4);
	img[0x1fe] = 0x55;
	img[0x1ff] = 0xaa;
	img[0x200] = 0xeb;
	img[0x201] = 0x6a;
	memcpy(img + 0x202, "HdrS", 4);
	memcpy(img + 0x206, &version, 2);
	uint32_t initrd_max = 0x37ffffff, cmdline_size = 2047, init_size = 0x10000;
	memcpy(img + 0x22c, &initrd_max, 4);
	memcpy(img + 0x236, &xloadflags, 2);
	memcpy(img + 0x238, &cmdline_size, 4);
	memcpy(img + 0x260, &init_size, 4);
	return 1024 + pm_len;
}

static void test_bzimage(void **state)
{
	struct kap_boot_image b;
	size_t len = make_bzimage(0x020f, 1, 0x800);
	assert_int_equal(parse(len, &b, NULL), 0);
	assert_int_equal(b.kind, KAP_BOOT_BZIMAGE);
	assert_int_equal(b.entry, 0x100200);
	assert_int_equal(b.segs[0].offset, 1024);
	assert_int_equal(b.segs[0].paddr, 0x100000);
	assert_int_equal(b.segs[0].filesz, 0x800);
	assert_int_equal(b.segs[0].memsz, 0x10000); /* init_size */
	assert_int_equal(b.bz_hdr_end, 0x26c);
	assert_int_equal(b.bz_initrd_addr_max, 0x37ffffff);
	assert_int_equal(b.bz_cmdline_size, 2047);
	make_bzimage(0x020b, 1, 0x800);
	parse(len, &b, "too old");
	make_bzimage(0x020f, 0, 0x800);
	parse(len, &b, "no 64-bit entry point");
	make_bzimage(0x020f, 1, 0x800);
	parse(len - 32, &b, "short of its syssize");
	parse(1024, &b, "no protected-mode kernel");
	parse(0x220, &b, "truncated setup header");
}

static void test_e820(void **state)
{
	struct kap_e820_entry e[KAP_E820_MAX];
	size_t n = kap_e820_build(256 << 20, 0, e, KAP_E820_MAX);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].addr, 0);
	assert_int_equal(e[0].size, KAP_EBDA_START);
	assert_int_equal(e[0].type, KAP_E820_RAM);
	assert_int_equal(e[1].addr, KAP_EBDA_START);
	assert_int_equal(e[1].type, KAP_E820_RESERVED);
	assert_int_equal(e[1].addr + e[1].size, 0x100000);
	assert_int_equal(e[2].addr, 0x100000);
	assert_int_equal(e[2].size, (256 << 20) - 0x100000);
	/* 5 GiB: 3 GiB below the hole, 2 GiB from 4 GiB. */
	n = kap_e820_build(KAP_MMIO_HOLE_START, 2ULL << 30, e, KAP_E820_MAX);
	assert_int_equal(n, 4);
	assert_int_equal(e[2].addr + e[2].size, KAP_MMIO_HOLE_START);
	assert_int_equal(e[3].addr, KAP_4G);
	assert_int_equal(e[3].size, 2ULL << 30);
	/* The table never overflows its array. */
	assert_int_equal(kap_e820_build(KAP_MMIO_HOLE_START, 1 << 20, e, 2), 2);
}

static void test_guest_memory_bounds(void **state)
{
	static uint8_t host[64];
	/* A fake 5 GiB layout: only the pointer arithmetic matters, nothing is dereferenced. */
	struct kap_guest_mem m = {
	    .host = host, .size = 5ULL << 30, .low_size = KAP_MMIO_HOLE_START, .fd = -1};
	assert_ptr_equal(kap_mem_ptr(&m, 0, 16), host);
	/* Offsets from host compared as integers: the fake layout is larger than host[]. */
#define OFF(p) ((uintptr_t)(p) - (uintptr_t)host)
	assert_int_equal(OFF(kap_mem_ptr(&m, KAP_MMIO_HOLE_START - 16, 16)),
			 KAP_MMIO_HOLE_START - 16);
	assert_null(kap_mem_ptr(&m, KAP_MMIO_HOLE_START - 16, 17)); /* into the hole */
	assert_null(kap_mem_ptr(&m, KAP_MMIO_HOLE_START, 1));
	assert_null(kap_mem_ptr(&m, KAP_4G - 1, 1));
	assert_int_equal(OFF(kap_mem_ptr(&m, KAP_4G, 1)), KAP_MMIO_HOLE_START);
	assert_non_null(kap_mem_ptr(&m, KAP_4G + (2ULL << 30) - 1, 1));
	assert_null(kap_mem_ptr(&m, KAP_4G + (2ULL << 30), 1));
	/* Wrap-around: gpa + len overflows 64 bits. */
	assert_null(kap_mem_ptr(&m, 16, UINT64_MAX));
	assert_null(kap_mem_ptr(&m, UINT64_MAX, 2));
	assert_null(kap_mem_ptr(&m, KAP_4G + 1, UINT64_MAX));
	struct kap_guest_mem small = {.host = host, .size = 64, .low_size = 64, .fd = -1};
	uint8_t buf[8];
	assert_int_equal(kap_mem_read(&small, 60, buf, 4), 0);
	assert_int_equal(kap_mem_read(&small, 61, buf, 4), -EFAULT);
	assert_int_equal(kap_mem_write(&small, 64, buf, 1), -EFAULT);
	assert_int_equal(kap_mem_write(&small, 0, buf, 0), 0);
}

static void test_sizes(void **state)
{
	uint64_t v;
	assert_int_equal(kapsel_vm_parse_size("256M", &v), 0);
	assert_int_equal(v, 256ULL << 20);
	assert_int_equal(kapsel_vm_parse_size("1G", &v), 0);
	assert_int_equal(v, 1ULL << 30);
	assert_int_equal(kapsel_vm_parse_size("512MiB", &v), 0);
	assert_int_equal(v, 512ULL << 20);
	assert_int_equal(kapsel_vm_parse_size("65536k", &v), 0);
	assert_int_equal(v, 64ULL << 20);
	assert_int_equal(kapsel_vm_parse_size("1048576", &v), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(kapsel_vm_parse_size("0", &v), -EINVAL);
	assert_int_equal(kapsel_vm_parse_size("12Q", &v), -EINVAL);
	assert_int_equal(kapsel_vm_parse_size("-1G", &v), -EINVAL);
	assert_int_equal(kapsel_vm_parse_size("", &v), -EINVAL);
	assert_int_equal(kapsel_vm_parse_size("99999999999T", &v), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_multiboot_elf),
	    cmocka_unit_test(test_multiboot_flags),
	    cmocka_unit_test(test_multiboot_aout_kludge),
	    cmocka_unit_test(test_pvh_note),
	    cmocka_unit_test(test_elf_hostile),
	    cmocka_unit_test(test_bzimage),
	    cmocka_unit_test(test_e820),
	    cmocka_unit_test(test_guest_memory_bounds),
	    cmocka_unit_test(test_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
