/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=fwcfg: reads QEMU's fw_cfg (QEMU docs/specs/fw_cfg.rst) through the I/O ports and the
 * DMA interface and checks it against the machine kapsel was given ("cpus=N mem=MiB",
 * "initrd=BYTES" when there is one, the command line itself); then the hostile side: bad
 * selectors, reads past the end, a DMA transfer to an address outside RAM.
 * test=touch: writes one byte in every page of [16 MiB, 48 MiB), says "touched", then spins,
 * so the host can look at how its RAM is backed (transparent huge pages).
 */
#pragma once
#include "guest.h"

#define FW_CFG_SEL    0x510
#define FW_CFG_DATA   0x511
#define FW_CFG_DMA_HI 0x514
#define FW_CFG_DMA_LO 0x518

static inline void fwcfg_outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static void fwcfg_read(uint16_t key, void *buf, uint32_t len)
{
	uint8_t *p = buf;
	fwcfg_outw(FW_CFG_SEL, key);
	for (uint32_t i = 0; i < len; i++)
		p[i] = inb(FW_CFG_DATA);
}

static uint64_t fwcfg_le(uint16_t key, unsigned int len)
{
	uint8_t b[8] = {0};
	fwcfg_read(key, b, len);
	uint64_t v = 0;
	for (unsigned int i = len; i-- > 0;)
		v = v << 8 | b[i];
	return v;
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

struct fwcfg_dma {
	uint32_t control, length;
	uint64_t address;
} __attribute__((packed));

/* One DMA transfer; returns the control word the device wrote back (host order). */
static uint32_t fwcfg_dma(uint32_t control, uint64_t addr, uint32_t len)
{
	static volatile struct fwcfg_dma d __attribute__((aligned(16)));
	d.control = __builtin_bswap32(control);
	d.length = __builtin_bswap32(len);
	d.address = __builtin_bswap64(addr);
	outl(FW_CFG_DMA_HI, 0);
	outl(FW_CFG_DMA_LO, __builtin_bswap32((uint32_t)(uintptr_t)&d));
	return __builtin_bswap32(d.control);
}

static void test_fwcfg(const char *cmdline)
{
	char v[32];
	uint8_t b[64];
	cmdline_get(cmdline, "cpus", v, sizeof(v));
	uint64_t cpus = atou(v);
	cmdline_get(cmdline, "mem", v, sizeof(v));
	uint64_t mib = atou(v);

	fwcfg_read(0x0000, b, 4);
	CHECK(!memcmp_(b, "QEMU", 4), "signature is not QEMU");
	uint64_t id = fwcfg_le(0x0001, 4);
	CHECK(id & 1, "ID lacks the traditional interface");
	CHECK(fwcfg_le(0x0005, 2) == cpus, "NB_CPUS does not match --cpus");
	CHECK(fwcfg_le(0x000f, 2) == cpus, "MAX_CPUS does not match --cpus");
	CHECK(fwcfg_le(0x0003, 8) == mib << 20, "RAM_SIZE does not match --mem");
	puts_("fwcfg: signature QEMU, cpus ");
	putu(fwcfg_le(0x0005, 2));
	puts_(", ram ");
	putu(fwcfg_le(0x0003, 8) >> 20);
	puts_(" MiB\n");

	uint64_t clen = fwcfg_le(0x0014, 4);
	CHECK(clen == strlen_(cmdline) + 1, "CMDLINE_SIZE is not the command line's length + 1");
	char c[256];
	CHECK(clen <= sizeof(c), "command line too long for the test");
	fwcfg_read(0x0015, c, (uint32_t)clen);
	CHECK(!memcmp_(c, cmdline, clen), "CMDLINE_DATA differs from the command line");
	if (cmdline_get(cmdline, "initrd", v, sizeof(v))) {
		CHECK(fwcfg_le(0x000b, 4) == atou(v), "INITRD_SIZE differs");
		fwcfg_read(0x0012, b, 13);
		CHECK(!memcmp_(b, "KAPSEL-INITRD", 13), "INITRD_DATA differs");
		puts_("fwcfg: initrd ok\n");
	}
	CHECK(fwcfg_le(0x0008, 4) > 0, "KERNEL_SIZE is 0");
	fwcfg_read(0x0011, b, 4);
	CHECK(!memcmp_(b,
		       "\x7f"
		       "ELF",
		       4),
	      "KERNEL_DATA is not the ELF file");

	/* The directory: big-endian count, then 64-byte entries. */
	fwcfg_outw(FW_CFG_SEL, 0x0019);
	for (int i = 0; i < 4; i++)
		b[i] = inb(FW_CFG_DATA);
	uint32_t count = be32(b);
	CHECK(count >= 1 && count < 64, "file directory count out of range");
	uint16_t e820_key = 0;
	uint32_t e820_size = 0;
	for (uint32_t i = 0; i < count; i++) {
		for (int k = 0; k < 64; k++)
			b[k] = inb(FW_CFG_DATA);
		puts_("fwcfg: file ");
		puts_((const char *)b + 8);
		putc_('\n');
		if (streq((const char *)b + 8, "etc/e820")) {
			e820_size = be32(b);
			e820_key = (uint16_t)(b[4] << 8 | b[5]);
		}
	}
	CHECK(e820_key >= 0x20, "no etc/e820 in the file directory");
	CHECK(e820_size && e820_size % 20 == 0 && e820_size <= 16 * 20, "etc/e820 size");
	struct memmap_entry m[16];
	unsigned int n = e820_size / 20;
	fwcfg_outw(FW_CFG_SEL, e820_key);
	for (unsigned int i = 0; i < n; i++) {
		for (int k = 0; k < 20; k++)
			b[k] = inb(FW_CFG_DATA);
		m[i].addr = m[i].size = 0;
		for (int k = 7; k >= 0; k--) {
			m[i].addr = m[i].addr << 8 | b[k];
			m[i].size = m[i].size << 8 | b[8 + k];
		}
		m[i].type = (uint32_t)b[16] | (uint32_t)b[17] << 8 | (uint32_t)b[18] << 16 |
			    (uint32_t)b[19] << 24;
	}
	const char *bad = check_memmap(m, n, mib);
	CHECK(!bad, bad);
	puts_("fwcfg: etc/e820 ok\n");

	/* Hostile reads: unknown keys, arch-local keys, past the end: all zeros. */
	static const uint16_t badsel[] = {0x3fff, 0x1234, 0x8000, 0x8003, 0xffff, 0x0019 + 0x40};
	for (unsigned int s = 0; s < sizeof(badsel) / sizeof(badsel[0]); s++) {
		fwcfg_read(badsel[s], b, 16);
		for (int k = 0; k < 16; k++)
			CHECK(b[k] == 0, "a bad selector reads non-zero");
	}
	fwcfg_read(0x0000, b, 12);
	CHECK(!memcmp_(b, "QEMU\0\0\0\0\0\0\0\0", 12), "a read past the end is not zeros");
	/* The data port is read-only: a write changes nothing. */
	fwcfg_outw(FW_CFG_SEL, 0x0000);
	outb(FW_CFG_DATA, 'X');
	fwcfg_read(0x0000, b, 4);
	CHECK(!memcmp_(b, "QEMU", 4), "a data port write changed the signature");
	puts_("fwcfg: bad selectors read zeros\n");

	if (!(id & 2)) {
		puts_("fwcfg: no DMA\n");
		pass();
	}
	CHECK(inl(FW_CFG_DMA_HI) == 0x554d4551 && inl(FW_CFG_DMA_LO) == 0x47464320,
	      "DMA register does not read QEMU CFG");
	static uint8_t buf[32] __attribute__((aligned(16)));
	for (int k = 0; k < 32; k++)
		buf[k] = 0xaa;
	/* SELECT | READ of the signature, 8 bytes: "QEMU" then zeros past the end. */
	uint32_t st = fwcfg_dma(0x0000u << 16 | 0x08 | 0x02, (uintptr_t)buf, 8);
	CHECK(st == 0, "DMA read reported an error");
	CHECK(!memcmp_(buf, "QEMU\0\0\0\0", 8) && buf[8] == 0xaa, "DMA read data wrong");
	st = fwcfg_dma(0x0005u << 16 | 0x08 | 0x02, (uintptr_t)buf, 2);
	CHECK(st == 0 && buf[0] == cpus && buf[1] == 0, "DMA read of NB_CPUS wrong");
	/* Hostile: a destination in the MMIO hole and one beyond RAM: the error bit, no write. */
	st = fwcfg_dma(0x0000u << 16 | 0x08 | 0x02, 0xF0000000ULL, 4);
	CHECK(st & 1, "DMA to the MMIO hole did not report an error");
	st = fwcfg_dma(0x0000u << 16 | 0x08 | 0x02, (mib << 20) - 2, 4);
	CHECK(st & 1, "DMA across the end of RAM did not report an error");
	st = fwcfg_dma(0x0000u << 16 | 0x08 | 0x02, 0xFFFFFFFFFFFFFFF0ULL, 0xFFFFFFFF);
	CHECK(st & 1, "DMA with a wrapping range did not report an error");
	/* Writes are refused. */
	st = fwcfg_dma(0x0019u << 16 | 0x08 | 0x10, (uintptr_t)buf, 4);
	CHECK(st & 1, "a DMA write was not refused");
	puts_("fwcfg: dma ok\n");
	/* The DSDT names the device as QEMU does (_HID "QEMU0002", IO 0x510, 12 ports), which is
	 * how an OS finds it without probing. */
	int found = 0;
	for (uintptr_t a = 0xe0000; a < 0x100000 - 36 && !found; a += 4) {
		const uint8_t *t = (const uint8_t *)a;
		if (memcmp_(t, "DSDT", 4))
			continue;
		uint32_t len = *(const uint32_t *)(t + 4);
		for (uint32_t i = 36; i + 20 < len && !found; i++)
			if (!memcmp_(t + i, "QEMU0002", 8))
				for (uint32_t k = i; k + 8 < len && k < i + 64 && !found; k++)
					found =
					    !memcmp_(t + k, "\x47\x01\x10\x05\x10\x05\x01\x0c", 8);
	}
	CHECK(found, "fw_cfg: no QEMU0002 device with IO 0x510/12 in the DSDT");
	puts_("fwcfg: dsdt QEMU0002 io 0x510/12\n");
	pass();
}

static void test_touch(void)
{
	for (uintptr_t a = 16u << 20; a < 48u << 20; a += 4096)
		*(volatile uint8_t *)a = 1;
	puts_("touched\n");
	for (;;)
		__asm__ volatile("pause");
}
