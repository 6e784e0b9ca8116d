/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers for kapsel's freestanding test kernels: port I/O, the serial console (polled), the
 * debug-exit port, hypercalls (docs/hypercalls.md) and a few string functions. Header-only so
 * the 32-bit (multiboot, PVH) and 64-bit (bzImage) guests share it. KVM on the test machine
 * emulates every instruction: everything here is plain integer code.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define COM1	       0x3f8
#define DEBUG_EXIT     0xf4
#define HYPERCALL_PORT 0x600
#define PASS_CODE      0x2a /* exit status (0x2a << 1) | 1 = 85 */
#define FAIL_CODE      0x01 /* exit status 3 */

/*
 * Port I/O is how these guests hand memory to the host (the hypercall block, virtqueues), so
 * each is a compiler memory barrier: stores before it are done, loads after it are fresh.
 * Without the clobber gcc 12 kept hypercall()'s `b.ret = -1` in a register across the OUT and
 * folded the result to -1 (the smp test's deadline then expired at its first check).
 */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

/* The 8259A pair initialised: vectors 0x20-0x2f, cascade on IRQ 2, 8086 mode; master_mask is
 * the master's mask (a 0 bit: that IRQ on), the slave all masked. */
static inline void pic_init(uint8_t master_mask)
{
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0x20);
	outb(0xa1, 0x28);
	outb(0x21, 4);
	outb(0xa1, 2);
	outb(0x21, 1);
	outb(0xa1, 1);
	outb(0x21, master_mask);
	outb(0xa1, 0xff);
}

static inline void putc_(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}
static inline void puts_(const char *s)
{
	while (*s)
		putc_(*s++);
}
/* 64-bit division without libgcc (32-bit guests have no __udivdi3): shift and subtract. */
static inline uint64_t udiv(uint64_t n, uint64_t d, uint64_t *rem)
{
	uint64_t q = 0, r = 0;
	for (int i = 63; i >= 0; i--) {
		r = (r << 1) | ((n >> i) & 1);
		if (r >= d) {
			r -= d;
			q |= 1ULL << i;
		}
	}
	if (rem)
		*rem = r;
	return q;
}
static inline void putu(uint64_t v)
{
	char b[21];
	int i = 20;
	b[i] = 0;
	do {
		uint64_t r;
		v = udiv(v, 10, &r);
		b[--i] = (char)('0' + r);
	} while (v);
	puts_(b + i);
}
static inline void putx(uint64_t v)
{
	char b[19];
	int i = 18;
	b[i] = 0;
	do {
		b[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	b[--i] = 'x';
	b[--i] = '0';
	puts_(b + i);
}

static inline void __attribute__((noreturn)) debug_exit(uint32_t code)
{
	outl(DEBUG_EXIT, code);
	for (;;)
		__asm__ volatile("cli; hlt");
}
static inline void __attribute__((noreturn)) pass(void)
{
	puts_("PASS\n");
	debug_exit(PASS_CODE);
}
static inline void __attribute__((noreturn)) fail(const char *why)
{
	puts_("FAIL: ");
	puts_(why);
	putc_('\n');
	debug_exit(FAIL_CODE);
}
#define CHECK(cond, why)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail(why);                                                                 \
	} while (0)

static inline size_t strlen_(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}
static inline int memcmp_(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;
	for (size_t i = 0; i < n; i++)
		if (p[i] != q[i])
			return p[i] < q[i] ? -1 : 1;
	return 0;
}
/* The value of "key=" in a command line, copied into out (empty when absent). */
static inline int cmdline_get(const char *cmd, const char *key, char *out, size_t max)
{
	size_t kl = strlen_(key);
	for (const char *p = cmd; p && *p; p++) {
		if ((p == cmd || p[-1] == ' ') && !memcmp_(p, key, kl) && p[kl] == '=') {
			size_t i = 0;
			for (p += kl + 1; *p && *p != ' ' && i + 1 < max; p++)
				out[i++] = *p;
			out[i] = 0;
			return 1;
		}
	}
	out[0] = 0;
	return 0;
}
static inline uint64_t atou(const char *s)
{
	uint64_t v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (uint64_t)(*s++ - '0');
	return v;
}
static inline int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* docs/hypercalls.md: a request block in RAM, its address written to port 0x600. */
struct hc_block {
	uint32_t magic, nr;
	uint64_t args[4];
	int64_t ret;
} __attribute__((aligned(8)));
#define HC_MAGIC 0x4b415053u
static inline int64_t hypercall(uint32_t nr, uint64_t a0, uint64_t a1)
{
	static struct hc_block b;
	b.magic = HC_MAGIC;
	b.nr = nr;
	b.args[0] = a0;
	b.args[1] = a1;
	b.ret = -1;
	/* The block address must be in the low 4 GiB (32-bit OUT); guests run identity-mapped. */
	outl(HYPERCALL_PORT, (uint32_t)(uintptr_t)&b);
	return *(volatile int64_t *)&b.ret;
}

/* The e820 types every boot path reports. */
struct memmap_entry {
	uint64_t addr, size;
	uint32_t type;
};
/* Checks the map kapsel builds for mem_mib of RAM (docs/vm.md): returns NULL or the problem. */
static inline const char *check_memmap(const struct memmap_entry *m, unsigned int n,
				       uint64_t mem_mib)
{
	uint64_t mem = mem_mib << 20, low = mem < 0xC0000000ULL ? mem : 0xC0000000ULL;
	int conv = 0, high = 0, above4g = 0;
	for (unsigned int i = 0; i < n; i++) {
		if (m[i].type == 1 && m[i].addr == 0 && m[i].size == 0x9fc00)
			conv = 1;
		if (m[i].type == 1 && m[i].addr == 0x100000 && m[i].size == low - 0x100000)
			high = 1;
		if (m[i].type == 1 && m[i].addr == 0x100000000ULL && m[i].size == mem - low)
			above4g = 1;
	}
	if (!conv)
		return "memory map: no RAM entry [0, 0x9fc00)";
	if (!high)
		return "memory map: no RAM entry from 1 MiB to the end of low RAM";
	if (mem > low && !above4g)
		return "memory map: no RAM entry above 4 GiB";
	return NULL;
}
