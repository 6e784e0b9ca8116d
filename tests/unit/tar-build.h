/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Build tar streams in memory for the unpack and store tests: ustar headers (POSIX.1-2001
 * pax.html#tag_20_92_13_06) with pax extended headers for long names, big sizes and xattrs, so
 * every entry type and every hostile shape can be written exactly as an attacker would.
 */
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

struct tarbuf {
	char *data;
	size_t len, cap;
};

static inline void tb_raw(struct tarbuf *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 4096;
		t->data = realloc(t->data, t->cap);
		if (!t->data)
			abort();
	}
	memcpy(t->data + t->len, p, n);
	t->len += n;
}

static inline void tb_pad(struct tarbuf *t)
{
	static const char zero[512];
	if (t->len % 512)
		tb_raw(t, zero, 512 - t->len % 512);
}

struct tb_entry {
	const char *name;
	char type; /* '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo */
	unsigned mode;
	unsigned uid, gid;
	uint64_t size; /* header size; data is written separately */
	const char *link;
	unsigned major, minor;
	long mtime;
};

static inline void tb_header(struct tarbuf *t, const struct tb_entry *e)
{
	char h[512] = {0};
	snprintf(h, 100, "%s", e->name);
	snprintf(h + 100, 8, "%07o", e->mode);
	snprintf(h + 108, 8, "%07o", e->uid);
	snprintf(h + 116, 8, "%07o", e->gid);
	snprintf(h + 124, 12, "%011llo",
		 (unsigned long long)(e->size < 077777777777ULL ? e->size : 0));
	snprintf(h + 136, 12, "%011lo", (unsigned long)e->mtime);
	memset(h + 148, ' ', 8);
	h[156] = e->type;
	if (e->link)
		snprintf(h + 157, 100, "%s", e->link);
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	snprintf(h + 329, 8, "%07o", e->major);
	snprintf(h + 337, 8, "%07o", e->minor);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
	h[155] = ' ';
	tb_raw(t, h, sizeof(h));
}

/* A pax 'x' header carrying "key=value" records (NULL-terminated list of key, value pairs). */
static inline void tb_pax(struct tarbuf *t, const char *const *kv)
{
	char body[8192];
	size_t n = 0;
	for (; kv[0]; kv += 2) {
		size_t base = strlen(kv[0]) + strlen(kv[1]) + 3; /* ' ' '=' '\n' */
		size_t len = base + 1;
		while (len != base + (size_t)snprintf(NULL, 0, "%zu", len))
			len = base + (size_t)snprintf(NULL, 0, "%zu", len);
		n += (size_t)snprintf(body + n, sizeof(body) - n, "%zu %s=%s\n", len, kv[0], kv[1]);
	}
	struct tb_entry x = {.name = "PaxHeaders/x", .type = 'x', .mode = 0644, .size = n};
	tb_header(t, &x);
	tb_raw(t, body, n);
	tb_pad(t);
}

static inline void tb_add(struct tarbuf *t, struct tb_entry e, const void *data, size_t len)
{
	if (e.type == '0' && !e.size)
		e.size = len;
	if (!e.mode)
		e.mode = e.type == '5' ? 0755 : 0644;
	if (!e.mtime)
		e.mtime = 1600000000;
	tb_header(t, &e);
	if (len) {
		tb_raw(t, data, len);
		tb_pad(t);
	}
}

static inline void tb_file(struct tarbuf *t, const char *name, const char *content)
{
	tb_add(t, (struct tb_entry){.name = name, .type = '0'}, content, strlen(content));
}
static inline void tb_dir(struct tarbuf *t, const char *name)
{
	tb_add(t, (struct tb_entry){.name = name, .type = '5'}, NULL, 0);
}
static inline void tb_symlink(struct tarbuf *t, const char *name, const char *target)
{
	tb_add(t, (struct tb_entry){.name = name, .type = '2', .mode = 0777, .link = target}, NULL,
	       0);
}
static inline void tb_hardlink(struct tarbuf *t, const char *name, const char *target)
{
	tb_add(t, (struct tb_entry){.name = name, .type = '1', .link = target}, NULL, 0);
}

/* End of archive: two zero blocks, then padding to the 10240-byte record as tar(1) writes. */
static inline void tb_end(struct tarbuf *t)
{
	static const char zero[1024];
	tb_raw(t, zero, sizeof(zero));
	while (t->len % 10240)
		tb_raw(t, zero, 512);
}
