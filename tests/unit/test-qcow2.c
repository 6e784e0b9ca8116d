/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 (vmm/virtio/qcow2.c) through the disk backend: images kapsel creates, images qemu-img
 * creates and converts (v2 and v3, cluster sizes 512 B to 2 MiB, refcount widths 1 to 64
 * bits), random writes / discards / write-zeroes checked against an in-memory model and
 * against the refcounts, backing chains, and every hostile header or table the open must
 * refuse, each with the message that names the problem. Tests that need qemu-img skip
 * without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include <kapsel/vm.h>

#include "vmm/virtio/disk.h"
#include "vmm/virtio/qcow2.h"

static char dir[64];

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static const char *P(const char *name)
{
	static char buf[4][256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/kapsel-qcow2.XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sh("rm -rf %s", dir);
	return 0;
}

static struct kap_disk *open_ok(const char *path, bool ro)
{
	struct kap_disk *d = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_disk_open(&d, AT_FDCWD, path, KAP_DISK_PROBE, ro, false, 0, NULL, &err);
	if (r < 0)
		fail_msg("open %s: %s", path, (err ? err->msg : "(no message)"));
	return d;
}

/* Opening path fails with a message containing want. */
static void open_fails(const char *path, const char *want)
{
	struct kap_disk *d = NULL;
	struct kapsel_error *err = NULL;
	/* The format forced: a probe would call a file without the magic raw. */
	int r = kap_disk_open(&d, AT_FDCWD, path, KAP_DISK_QCOW2, false, false, 0, NULL, &err);
	if (r >= 0)
		fail_msg("open %s succeeded; expected \"%s\"", path, want);
	const char *m = (err ? err->msg : "(no message)");
	if (!strstr(m, want))
		fail_msg("open %s: \"%s\" does not contain \"%s\"", path, m, want);
	kapsel_error_free(err);
}

static void check_refcounts(struct kap_disk *d)
{
	struct kapsel_error *err = NULL;
	if (kap_qcow2_check(d->qcow2, &err) < 0)
		fail_msg("refcounts: %s", (err ? err->msg : "(no message)"));
}

static void rd(struct kap_disk *d, void *buf, uint64_t len, uint64_t off)
{
	struct iovec iov = {buf, len};
	assert_int_equal(kap_disk_readv(d, &iov, 1, off), 0);
}

static void wr(struct kap_disk *d, const void *buf, uint64_t len, uint64_t off)
{
	/* Split in two iovecs, so slicing across iovecs is exercised. */
	struct iovec iov[2] = {{(void *)buf, len / 3}, {(uint8_t *)buf + len / 3, len - len / 3}};
	assert_int_equal(kap_disk_writev(d, iov, 2, off), 0);
}

static uint8_t *read_file(const char *path, uint64_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (uint64_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(*len + 1);
	assert_int_equal(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

static void write_file(const char *path, const void *b, uint64_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	fclose(f);
}

/* The whole disk equals model; then qemu-img agrees (check, and convert to raw). */
static void compare_all(struct kap_disk *d, const uint8_t *model, uint64_t size, const char *img)
{
	uint8_t *b = malloc(size);
	rd(d, b, size, 0);
	for (uint64_t i = 0; i < size; i++)
		if (b[i] != model[i])
			fail_msg("byte %llu: 0x%02x, expected 0x%02x", (unsigned long long)i, b[i],
				 model[i]);
	free(b);
	if (!img || !have_qemu_img())
		return;
	assert_int_equal(sh("qemu-img check -q %s", img), 0);
	assert_int_equal(sh("qemu-img convert -O raw %s %s", img, P("conv.raw")), 0);
	uint64_t n;
	uint8_t *c = read_file(P("conv.raw"), &n);
	assert_int_equal(n, size);
	assert_memory_equal(c, model, size);
	free(c);
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* Random sector-aligned writes, write-zeroes and discards on d and on model. */
static void random_ops(struct kap_disk *d, uint8_t *model, uint64_t size, unsigned int n)
{
	uint8_t *buf = malloc(1 << 20);
	for (unsigned int i = 0; i < n; i++) {
		uint64_t len = (1 + rnd() % 512) * 512, off = (rnd() % (size / 512)) * 512;
		if (rnd() % 4 == 0)
			len = (1 + rnd() % 2048) * 512;
		if (len > size - off)
			len = size - off;
		if (len > (1 << 20))
			len = 1 << 20;
		unsigned int op = (unsigned int)(rnd() % 5);
		if (op < 3) {
			for (uint64_t j = 0; j < len; j++)
				buf[j] = (uint8_t)(rnd() >> 13);
			wr(d, buf, len, off);
			memcpy(model + off, buf, len);
		} else {
			int r = op == 3 ? kap_disk_write_zeroes(d, off, len)
					: kap_disk_discard(d, off, len);
			assert_int_equal(r, 0);
			memset(model + off, 0, len);
		}
	}
	free(buf);
}

static void test_create_and_write(void **state)
{
	(void)state;
	const uint64_t size = 48 << 20;
	struct kapsel_error *err = NULL;
	assert_int_equal(kapsel_vm_disk_create(P("a.qcow2"), size, NULL, NULL, NULL, &err), 0);
	assert_int_equal(kapsel_vm_disk_create(P("a.qcow2"), size, NULL, NULL, NULL, &err),
			 -EEXIST);
	kapsel_error_free(err);
	struct kap_disk *d = open_ok(P("a.qcow2"), false);
	assert_int_equal(d->format, KAP_DISK_QCOW2);
	assert_int_equal(d->size, size);
	check_refcounts(d);
	uint8_t *model = calloc(1, size);
	compare_all(d, model, size, NULL);
	random_ops(d, model, size, 400);
	check_refcounts(d);
	assert_int_equal(kap_disk_flush(d), 0);
	compare_all(d, model, size, NULL);
	kap_disk_close(d);
	/* Reopened (the dirty bit was cleared) and checked by qemu-img. */
	d = open_ok(P("a.qcow2"), false);
	compare_all(d, model, size, P("a.qcow2"));
	kap_disk_close(d);
	free(model);
}

/*
 * Images qemu-img wrote: every cluster size, v2 and v3, several refcount widths, read back
 * byte for byte; then written by kapsel (small clusters grow the refcount table) and checked.
 */
static void test_qemu_images(void **state)
{
	(void)state;
	if (!have_qemu_img())
		skip();
	static const struct {
		const char *opts;
		uint64_t size;
	} cases[] = {
	    {"cluster_size=512,compat=0.10", 4 << 20},
	    {"cluster_size=512,refcount_bits=1", 4 << 20},
	    {"cluster_size=512,refcount_bits=8", 4 << 20},
	    {"cluster_size=4096,refcount_bits=32", 16 << 20},
	    {"cluster_size=65536", 16 << 20},
	    {"cluster_size=65536,refcount_bits=64,compat=1.1", 16 << 20},
	    {"cluster_size=2097152", 16 << 20},
	    {"cluster_size=65536,compat=0.10", 16 << 20},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t size = cases[c].size;
		uint8_t *model = calloc(1, size);
		/* Data with holes: every third MiB-ish block stays zero. */
		for (uint64_t i = 0; i < size; i++)
			if ((i / 70000) % 3)
				model[i] = (uint8_t)(i * 31 + c);
		write_file(P("src.raw"), model, size);
		sh("rm -f %s %s", P("q.qcow2"), P("e.qcow2"));
		assert_int_equal(sh("qemu-img convert -f raw -O qcow2 -o %s %s %s", cases[c].opts,
				    P("src.raw"), P("q.qcow2")),
				 0);
		struct kap_disk *d = open_ok(P("q.qcow2"), false);
		check_refcounts(d);
		compare_all(d, model, size, NULL);
		random_ops(d, model, size, 150);
		check_refcounts(d);
		kap_disk_close(d);
		d = open_ok(P("q.qcow2"), true);
		compare_all(d, model, size, P("q.qcow2"));
		kap_disk_close(d);
		/* An empty image of the same shape. */
		assert_int_equal(sh("qemu-img create -q -f qcow2 -o %s %s %llu", cases[c].opts,
				    P("e.qcow2"), (unsigned long long)size),
				 0);
		d = open_ok(P("e.qcow2"), false);
		memset(model, 0, size);
		compare_all(d, model, size, NULL);
		random_ops(d, model, size, 100);
		kap_disk_close(d);
		d = open_ok(P("e.qcow2"), true);
		compare_all(d, model, size, P("e.qcow2"));
		kap_disk_close(d);
		free(model);
	}
}

/* base.raw <- mid.qcow2 (v2, qemu-img) <- top.qcow2 (kapsel), relative names. */
static void test_backing_chain(void **state)
{
	(void)state;
	const uint64_t size = 8 << 20;
	uint8_t *model = malloc(size);
	for (uint64_t i = 0; i < size; i++)
		model[i] = (uint8_t)(i / 512 + 1);
	write_file(P("base.raw"), model, size - (1 << 20)); /* shorter: the tail reads zero */
	memset(model + size - (1 << 20), 0, 1 << 20);
	struct kapsel_error *err = NULL;
	bool qi = have_qemu_img();
	if (qi)
		assert_int_equal(sh("cd %s && qemu-img create -q -f qcow2 -o compat=0.10 -b "
				    "base.raw -F raw mid.qcow2 %llu",
				    dir, (unsigned long long)size),
				 0);
	else
		assert_int_equal(
		    kapsel_vm_disk_create(P("mid.qcow2"), size, "base.raw", NULL, NULL, &err), 0);
	struct kap_disk *d = open_ok(P("mid.qcow2"), false);
	compare_all(d, model, size, NULL);
	random_ops(d, model, size, 60);
	check_refcounts(d);
	kap_disk_close(d);
	assert_int_equal(kapsel_vm_disk_create(P("top.qcow2"), 0, "mid.qcow2", NULL, NULL, &err),
			 0);
	d = open_ok(P("top.qcow2"), false);
	assert_int_equal(d->size, size);
	compare_all(d, model, size, NULL);
	uint8_t *before = read_file(P("mid.qcow2"), &(uint64_t){0});
	random_ops(d, model, size, 200);
	check_refcounts(d);
	compare_all(d, model, size, NULL);
	kap_disk_close(d);
	uint64_t n;
	uint8_t *after = read_file(P("mid.qcow2"), &n);
	assert_memory_equal(before, after, n); /* the base is never written */
	free(before);
	free(after);
	d = open_ok(P("top.qcow2"), true);
	compare_all(d, model, size, P("top.qcow2"));
	kap_disk_close(d);
	if (qi)
		assert_int_equal(
		    sh("qemu-img info %s | grep -q 'backing file: mid.qcow2'", P("top.qcow2")), 0);
	free(model);
}

static void test_backing_loop_and_depth(void **state)
{
	(void)state;
	struct kapsel_error *err = NULL;
	assert_int_equal(kapsel_vm_disk_create(P("l0.qcow2"), 1 << 20, NULL, NULL, NULL, &err), 0);
	assert_int_equal(kapsel_vm_disk_create(P("l1.qcow2"), 0, "l0.qcow2", NULL, NULL, &err), 0);
	/* l0 over a placeholder, then the placeholder replaced by l1 (whose base is l0). */
	assert_int_equal(kapsel_vm_disk_create(P("l2.qcow2"), 1 << 20, NULL, NULL, NULL, &err), 0);
	unlink(P("l0.qcow2"));
	assert_int_equal(kapsel_vm_disk_create(P("l0.qcow2"), 0, "l2.qcow2", NULL, NULL, &err), 0);
	assert_int_equal(rename(P("l1.qcow2"), P("l2.qcow2")), 0);
	open_fails(P("l0.qcow2"), "backing file loop");
	/* 17 images: one too many. */
	assert_int_equal(kapsel_vm_disk_create(P("c0.qcow2"), 1 << 20, NULL, NULL, NULL, &err), 0);
	char prev[32], cur[32];
	for (int i = 1; i <= 16; i++) {
		snprintf(prev, sizeof(prev), "c%d.qcow2", i - 1);
		snprintf(cur, sizeof(cur), "c%d.qcow2", i);
		assert_int_equal(kapsel_vm_disk_create(P(cur), 0, prev, NULL, NULL, &err), 0);
	}
	open_fails(P("c16.qcow2"), "backing chain too deep (more than 16 images)");
	struct kap_disk *d = open_ok(P("c15.qcow2"), false);
	kap_disk_close(d);
}

/* ---- hostile images: a valid image with one field changed ---- */

static void put_be(const char *path, uint64_t off, uint64_t v, int bytes)
{
	uint8_t b[8];
	for (int i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, (size_t)bytes, (off_t)off), bytes);
	close(fd);
}

/* A fresh 64 MiB image "h.qcow2" with one cluster written (L2 at 0x40000, data 0x50000). */
static const char *fresh(void)
{
	struct kapsel_error *err = NULL;
	unlink(P("h.qcow2"));
	assert_int_equal(kapsel_vm_disk_create(P("h.qcow2"), 64 << 20, NULL, NULL, NULL, &err), 0);
	struct kap_disk *d = open_ok(P("h.qcow2"), false);
	uint8_t b[512] = {1, 2, 3};
	wr(d, b, sizeof(b), 0);
	kap_disk_close(d);
	return P("h.qcow2");
}

static void test_hostile(void **state)
{
	(void)state;
	static const struct {
		uint64_t off;
		uint64_t val;
		int bytes;
		const char *want;
	} cases[] = {
	    {0, 0x12345678, 4, "bad magic"},
	    {4, 4, 4, "unsupported qcow2 version 4"},
	    {20, 8, 4, "cluster_bits 8 out of range"},
	    {20, 22, 4, "cluster_bits 22 out of range"},
	    {32, 1, 4, "encryption is not supported"},
	    {36, 1ULL << 30, 4, "too large"},
	    {36, 0, 4, "too small for the virtual size"},
	    {40, 0x30000 + 8, 8, "L1 table at 0x30008 is not cluster-aligned"},
	    {40, 0x1000000000ULL, 8, "L1 table at 0x1000000000 (1 entries) is past the end"},
	    {40, 0x10000, 8, "overlaps other metadata"},
	    {48, 0x7770000, 8, "refcount table at 0x7770000 (1 clusters) is past the end"},
	    {56, 100000, 4, "refcount table of 100000 clusters out of range"},
	    {56, 0, 4, "refcount table of 0 clusters out of range"},
	    {24, 1ULL << 62, 8, "virtual size 4611686018427387904 too large"},
	    {72, 1ULL << 1, 8, "marked corrupt"},
	    {72, 1ULL << 2, 8, "external data files are not supported"},
	    {72, 1ULL << 4, 8, "extended L2 entries"},
	    {72, 1ULL << 40, 8, "unknown incompatible feature (bit 40)"},
	    {72, 1ULL << 0, 8, "the image is dirty"},
	    {96, 7, 4, "refcount_order 7 out of range"},
	    {100, 96, 4, "header length 96 out of range"},
	    {100, 1 << 20, 4, "header length 1048576 out of range"},
	    {8, 0x200, 8, "backing file name length 0 out of range"},
	    {60, 1, 4, "internal snapshots"},
	    /* Tables: the L1 entry, the L2 entry, the refcount table entry. */
	    {0x30000, 0x8000000000020000ULL, 8, "L2 table at 0x20000 overlaps other metadata"},
	    {0x30000, 0x8000000070000000ULL, 8, "L2 table at 0x70000000 (65536 bytes) is past"},
	    {0x30000, 0x8000000000040100ULL, 8, "reserved bits"},
	    {0x30000, 0x0000000000040000ULL, 8, "shared (no COPIED flag)"},
	    {0x40000, 0x8000000700000000ULL, 8, "data cluster at 0x700000000"},
	    {0x40000, 0x8000000000050200ULL, 8, "data cluster at 0x50200 is not cluster-aligned"},
	    {0x40000, 0x8000000000050002ULL, 8, "reserved bits"},
	    {0x40000, 0x8000000000030000ULL, 8, "overlaps other metadata"},
	    {0x40000, 0x4000000000050000ULL, 8, "compressed clusters are not supported"},
	    {0x10000, 0x30000, 8, "overlaps other metadata"},
	    {0x10000, 0x20001, 8, "reserved bits set"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = fresh();
		put_be(p, cases[i].off, cases[i].val, cases[i].bytes);
		open_fails(p, cases[i].want);
	}
	const char *p = fresh();
	put_be(p, 8, 0x200, 8);
	put_be(p, 16, 2000, 4);
	open_fails(p, "backing file name length 2000 out of range");
	p = fresh();
	put_be(p, 8, 0xfff0, 8);
	put_be(p, 16, 100, 4);
	open_fails(p, "backing file name at 65520 is outside the header cluster");
	/* Backing format and extensions. */
	p = fresh();
	put_be(p, 104, 0xe2792aca00000005ULL, 8);
	put_be(p, 112, 0x766d646b00000000ULL, 8); /* "vmdk" + NUL padding */
	put_be(p, 8, 0x200, 8);
	put_be(p, 16, 4, 4);
	put_be(p, 0x200, 0x782e696d, 4);
	open_fails(p, "backing file format \"vmdk\" is not supported");
	p = fresh();
	put_be(p, 104, 0x1234567800100000ULL, 8);
	open_fails(p, "header extension 0x12345678 (1048576 bytes) runs past the header");
	/* A feature name table names an unknown bit. */
	p = fresh();
	put_be(p, 104, 0x6803f85700000030ULL, 8);
	put_be(p, 112, 0x002a666f6f626172ULL, 8); /* type 0, bit 42, "foobar" */
	put_be(p, 72, 1ULL << 42, 8);
	open_fails(p, "bit 42, \"foobar\"");
	/* Truncated file. */
	p = fresh();
	assert_int_equal(truncate(p, 50), 0);
	open_fails(p, "too short for a qcow2 header");
	/* Dirty images open read-only; and snapshots ones too. */
	p = fresh();
	put_be(p, 72, 1, 8);
	struct kap_disk *d = open_ok(p, true);
	kap_disk_close(d);
	/* Compressed images from qemu-img name the feature. */
	if (have_qemu_img()) {
		uint8_t *data = malloc(1 << 20);
		memset(data, 'k', 1 << 20);
		write_file(P("c.raw"), data, 1 << 20);
		free(data);
		unlink(P("c.qcow2"));
		assert_int_equal(
		    sh("qemu-img convert -c -f raw -O qcow2 %s %s", P("c.raw"), P("c.qcow2")), 0);
		open_fails(P("c.qcow2"), "compressed clusters are not supported");
	}
}

/* Read-only images refuse writes; a raw file stays raw. */
static void test_ro_and_raw(void **state)
{
	(void)state;
	const char *p = fresh();
	struct kap_disk *d = open_ok(p, true);
	uint8_t b[512] = {0};
	struct iovec iov = {b, sizeof(b)};
	assert_int_equal(kap_disk_writev(d, &iov, 1, 0), -EROFS);
	assert_int_equal(kap_disk_discard(d, 0, 512), -EROFS);
	rd(d, b, sizeof(b), 0);
	assert_int_equal(b[2], 3);
	/* Past the end. */
	assert_int_equal(kap_disk_readv(d, &iov, 1, 64 << 20), -EIO);
	kap_disk_close(d);
	write_file(P("r.raw"), b, sizeof(b));
	d = open_ok(P("r.raw"), false);
	assert_int_equal(d->format, KAP_DISK_RAW);
	kap_disk_close(d);
}

/* ---- backing files: beneath the image's directory, regular, with a format (issue 10) ---- */

/* An overlay "o.qcow2" naming backing (format fmt, or none when fmt is NULL), as written. */
static const char *overlay(const char *backing, const char *fmt)
{
	struct kapsel_error *err = NULL;
	unlink(P("o.qcow2"));
	int fd = open(P("o.qcow2"), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(kap_qcow2_create(fd, "o.qcow2", 1 << 20, backing, fmt ? fmt : "raw", &err),
			 0);
	close(fd);
	/* No format: the first extension (the backing format) becomes the end marker. */
	if (!fmt)
		put_be(P("o.qcow2"), 104, 0, 4);
	return P("o.qcow2");
}

static void test_backing_refused(void **state)
{
	(void)state;
	uint8_t base[4096];
	memset(base, 0xb5, sizeof(base));
	write_file(P("base.raw"), base, sizeof(base));
	assert_int_equal(mkdir(P("sub"), 0755), 0);
	write_file(P("sub/base.raw"), base, sizeof(base));
	write_file(P("../kapsel-qcow2-outside.raw"), base, sizeof(base));
	static const struct {
		const char *name;
		const char *want;
	} cases[] = {
	    {"/etc/shadow", "backing file \"/etc/shadow\" is an absolute path"},
	    {"../kapsel-qcow2-outside.raw", "has a \"..\" component"},
	    {"sub/../base.raw", "has a \"..\" component"},
	    {"sub/..", "has a \"..\" component"},
	    /* Symlinks beneath the directory that lead out of it: EXDEV from openat2. */
	    {"abs-link", "abs-link: resolves outside the image's directory"},
	    {"rel-link", "rel-link: resolves outside the image's directory"},
	    {"proc-link", "proc-link: resolves outside the image's directory"},
	    {"fifo", "fifo: not a regular file"},
	    {"sub", "sub: not a regular file"},
	};
	assert_int_equal(symlink("/etc/passwd", P("abs-link")), 0);
	assert_int_equal(symlink("../kapsel-qcow2-outside.raw", P("rel-link")), 0);
	assert_int_equal(symlink("/proc/self/root/etc/passwd", P("proc-link")), 0);
	assert_int_equal(mkfifo(P("fifo"), 0600), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		open_fails(overlay(cases[i].name, "raw"), cases[i].want);
	/* A device node beneath the directory (root only: mknod). */
	if (mknod(P("null"), S_IFCHR | 0600, makedev(1, 3)) == 0)
		open_fails(overlay("null", "raw"), "null: not a regular file");
	/* A chain without the backing format extension. */
	open_fails(overlay("base.raw", NULL),
		   "o.qcow2: backing file \"base.raw\" has no backing format (header extension "
		   "0xe2792aca)");
	unlink(P("../kapsel-qcow2-outside.raw"));

	/* Beneath is fine: a subdirectory, and a symlink that stays inside. */
	assert_int_equal(symlink("sub/base.raw", P("in-link")), 0);
	const char *ok[] = {"base.raw", "sub/base.raw", "./sub//base.raw", "in-link"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct kap_disk *d = open_ok(overlay(ok[i], "raw"), true);
		uint8_t b[512];
		rd(d, b, sizeof(b), 0);
		assert_int_equal(b[0], 0xb5);
		kap_disk_close(d);
	}

	/* kapsel vm disk create: the same rule for the name, the format recorded. */
	struct kapsel_error *err = NULL;
	assert_int_equal(kapsel_vm_disk_create(P("n1.qcow2"), 0, "/etc/shadow", NULL, NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err->msg, "is an absolute path"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(
	    kapsel_vm_disk_create(P("sub/n1.qcow2"), 0, "../base.raw", NULL, NULL, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "has a \"..\" component"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kapsel_vm_disk_create(P("n1.qcow2"), 0, "base.raw", "vmdk", NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err->msg, "backing format \"vmdk\" is not raw or qcow2"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(access(P("n1.qcow2"), F_OK), -1);
	/* base.raw pinned as qcow2: it has no qcow2 magic, so the create fails. */
	assert_int_equal(kapsel_vm_disk_create(P("n1.qcow2"), 0, "base.raw", "qcow2", NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err->msg, "bad magic"));
	kapsel_error_free(err);
	err = NULL;
	const char *fmt = NULL;
	assert_int_equal(kapsel_vm_disk_create(P("n1.qcow2"), 0, "base.raw", "raw", &fmt, &err), 0);
	assert_string_equal(fmt, "raw");
	struct kap_disk *d = open_ok(P("n1.qcow2"), true);
	kap_disk_close(d);
}

/*
 * Without format= a disk is raw: a qcow2 header in it, even one naming /etc/shadow as its
 * backing file, is the guest's data. Only format=auto probes, and then the backing name is
 * refused.
 */
static void test_default_is_raw(void **state)
{
	(void)state;
	const char *p = overlay("/etc/shadow", "raw");
	struct kapsel_vm_disk cfg = {.id = "disk0", .path = (char *)p, .ro = true};
	struct kap_disk *d = NULL;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_disk_open_config(&d, &cfg, &err), 0);
	assert_int_equal(d->format, KAP_DISK_RAW);
	assert_null(d->qcow2);
	uint8_t b[512];
	rd(d, b, sizeof(b), 0);
	assert_memory_equal(b, "QFI\xfb", 4);
	kap_disk_close(d);
	cfg.format = KAPSEL_VM_DISK_RAW;
	assert_int_equal(kap_disk_open_config(&d, &cfg, &err), 0);
	assert_int_equal(d->format, KAP_DISK_RAW);
	kap_disk_close(d);
	cfg.format = KAPSEL_VM_DISK_AUTO;
	assert_int_equal(kap_disk_open_config(&d, &cfg, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "is an absolute path"));
	kapsel_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_and_write), cmocka_unit_test(test_qemu_images),
	    cmocka_unit_test(test_backing_chain),    cmocka_unit_test(test_backing_loop_and_depth),
	    cmocka_unit_test(test_hostile),	     cmocka_unit_test(test_ro_and_raw),
	    cmocka_unit_test(test_backing_refused),  cmocka_unit_test(test_default_is_raw),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
