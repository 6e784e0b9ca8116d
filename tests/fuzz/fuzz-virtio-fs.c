/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-fs FUSE server against request bytes: the input is a sequence of requests (a
 * 16-bit length, then that many bytes, header included), served after a FUSE_INIT on a scratch
 * share. Beyond "no crash, no out-of-bounds access", every reply must fit the reply buffer and
 * carry its own length, and nothing outside the share may change: the scratch directory holds
 * exactly the share and one file beside it, whose bytes must stay as they were.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/virtio/fs.h"

static char top[64], share[96], outside[96];
static struct kap_fs *fs;
static uint8_t in[KAP_FS_IN_MAX], out[KAP_FS_OUT_MAX];
static unsigned int runs;
/*
 * Node ids and handles the server issued, so inputs can name them: a request's nodeid (or a
 * file handle in an argument's first 8 bytes) from 2 to 15 stands for the id remembered there.
 */
static uint64_t nodes[16], handles[16];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw);
static void cleanup(void)
{
	kap_fs_close(fs);
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(p);
	return 0;
}

/* A fresh share: files, a directory, a symlink out of it, a symlink to /etc. */
static void make_share(void)
{
	nftw(share, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (mkdir(share, 0755) < 0)
		abort();
	char p[160];
	snprintf(p, sizeof(p), "%s/file", share);
	int fd = open(p, O_CREAT | O_WRONLY, 0644);
	if (fd < 0 || write(fd, "0123456789", 10) != 10)
		abort();
	close(fd);
	snprintf(p, sizeof(p), "%s/dir", share);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/out", share);
	if (symlink(outside, p) < 0)
		abort();
	snprintf(p, sizeof(p), "%s/etc", share);
	if (symlink("/etc", p) < 0)
		abort();
}

static void check_outside(void)
{
	char buf[16] = {0};
	int fd = open(outside, O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf)) != 6 || memcmp(buf, "secret", 6))
		abort();
	close(fd);
	struct stat st;
	if (lstat(outside, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0644)
		abort();
	DIR *d = opendir(top);
	if (!d)
		abort();
	unsigned int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			if (strcmp(e->d_name, "share") && strcmp(e->d_name, "outside"))
				abort();
			n++;
		}
	closedir(d);
	if (n != 2)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(top, sizeof(top), "%s/kapsel-fuzz-fs.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(top))
		abort();
	snprintf(share, sizeof(share), "%s/share", top);
	snprintf(outside, sizeof(outside), "%s/outside", top);
	int fd = open(outside, O_CREAT | O_WRONLY, 0644);
	if (fd < 0 || write(fd, "secret", 6) != 6)
		abort();
	close(fd);
	make_share();
	if (kap_fs_open(&fs, share, false, NULL) < 0)
		abort();
	atexit(cleanup);
	return 0;
}

static bool fh_first(uint32_t op)
{
	switch (op) {
	case FUSE_READ:
	case FUSE_WRITE:
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FLUSH:
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS:
	case FUSE_LSEEK:
	case FUSE_FALLOCATE:
		return true;
	}
	return false;
}

/* Remembers the node id and handle a reply to op carries. */
static void remember(uint32_t op, size_t n)
{
	const uint8_t *res = out + sizeof(struct fuse_out_header);
	size_t len = n - sizeof(struct fuse_out_header);
	static unsigned int ni, hi;
	uint64_t v;
	if ((op == FUSE_LOOKUP || op == FUSE_CREATE || op == FUSE_MKDIR || op == FUSE_MKNOD ||
	     op == FUSE_SYMLINK || op == FUSE_LINK) &&
	    len >= sizeof(struct fuse_entry_out)) {
		memcpy(&v, res, 8);
		nodes[2 + ni++ % 14] = v;
	}
	if (op == FUSE_CREATE && len >= sizeof(struct fuse_entry_out) + 8) {
		memcpy(&v, res + sizeof(struct fuse_entry_out), 8);
		handles[2 + hi++ % 14] = v;
	}
	if ((op == FUSE_OPEN || op == FUSE_OPENDIR) && len >= 8) {
		memcpy(&v, res, 8);
		handles[2 + hi++ % 14] = v;
	}
}

static size_t serve(size_t len, size_t outcap)
{
	struct fuse_in_header h = {0};
	if (len >= sizeof(h)) {
		memcpy(&h, in, sizeof(h));
		if (h.nodeid >= 2 && h.nodeid < 16 && nodes[h.nodeid]) {
			h.nodeid = nodes[h.nodeid];
			memcpy(in, &h, sizeof(h));
		}
		uint64_t fh;
		if (fh_first(h.opcode) && len >= sizeof(h) + 8) {
			memcpy(&fh, in + sizeof(h), 8);
			if (fh >= 2 && fh < 16 && handles[fh])
				memcpy(in + sizeof(h), &handles[fh], 8);
		}
		/* No disk filling: fallocate of at most 1 MiB. */
		if (h.opcode == FUSE_FALLOCATE &&
		    len >= sizeof(h) + sizeof(struct fuse_fallocate_in)) {
			struct fuse_fallocate_in *fa = (void *)(in + sizeof(h));
			fa->length &= 0xfffff;
		}
	}
	size_t n = kap_fs_handle(fs, in, len, out, outcap);
	if (n > outcap)
		abort();
	if (n) {
		struct fuse_out_header o;
		if (n < sizeof(o))
			abort();
		memcpy(&o, out, sizeof(o));
		if (o.len != n || o.error > 0 || (o.error < 0 && n != sizeof(o)))
			abort();
		if (o.error == 0)
			remember(h.opcode, n);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Every so often, a fresh share: what earlier inputs made there goes. */
	if (++runs % 512 == 0) {
		kap_fs_reset(fs);
		make_share();
	}
	memset(nodes, 0, sizeof(nodes));
	memset(handles, 0, sizeof(handles));
	struct {
		struct fuse_in_header h;
		struct fuse_init_in i;
	} init = {.h = {.len = sizeof(init), .opcode = FUSE_INIT, .unique = 1},
		  .i = {.major = 7, .minor = 38, .flags = FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES}};
	memcpy(in, &init, sizeof(init));
	serve(sizeof(init), sizeof(out));
	while (size >= 3) {
		size_t len = (size_t)(data[0] | (data[1] << 8));
		/* The third byte picks the reply room: small ones test the bounds. */
		size_t outcap = data[2] & 0x80 ? (size_t)(data[2] & 0x7f) * 64 : sizeof(out);
		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		memcpy(in, data, len);
		serve(len, outcap);
		data += len;
		size -= len;
	}
	check_outside();
	return 0;
}
