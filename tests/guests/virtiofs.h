/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile virtio-fs driver for the multiboot test kernel (virtio 1.2 §5.11, FUSE as in
 * linux/fuse.h), over virtio-mmio: test=virtiofs. It reads the tag, sends FUSE_INIT, looks up,
 * opens and reads "hello.txt" from the share and prints it; then sends what a hostile guest
 * would and prints each error the device returns, for test_vm_virtiofs.py to check:
 *   ".." and "/etc/passwd" as names, a lookup through the symlink "etc" (to /etc), OPEN and
 *   READLINK of that symlink, a node id never issued, a READ larger than the reply buffer, a
 *   header whose length exceeds its buffer, an unknown opcode; and a FORGET on the hiprio
 *   queue, after which the forgotten node id is stale.
 * With write=1 it then opens hello.txt for writing and overwrites its first bytes with "HELLO",
 * and creates "new.txt" holding "written by the guest\n" ("open rw", "write", "create" and
 * "write new" report each result: 0 or the bytes written, or -errno); then it works the rest
 * of what a driver sends on a share (fsync, setattr of mode and size, mkdir "dir", rename of
 * new.txt to dir/moved.txt, link and unlink, symlink dir/sym -> moved.txt, mknod of the FIFO
 * dir/fifo, access, statfs, opendir and readdir, mkdir and rmdir of "gone"), each reported
 * by its name: the share ends with dir/moved.txt ("written", mode 0600), dir/sym, dir/fifo.
 * The share must hold hello.txt and the symlink etc -> /etc. "transport=pci" drives the
 * device as a virtio-pci function (virtio-pci.h's BAR and capabilities, both queues set up
 * here), otherwise as virtio-mmio.
 */
#pragma once
#include "guest.h"
#include "virtio.h"
#include "virtio-dev.h"
#include "virtio-pci.h"

/* linux/fuse.h, the parts used here (protocol 7.38). */
#define FUSE_LOOKUP   1
#define FUSE_GETATTR  3
#define FUSE_READLINK 5
#define FUSE_OPEN     14
#define FUSE_READ     15
#define FUSE_WRITE    16
#define FUSE_CREATE   35
#define FUSE_SETATTR  4
#define FUSE_SYMLINK  6
#define FUSE_MKNOD    8
#define FUSE_MKDIR    9
#define FUSE_UNLINK   10
#define FUSE_RMDIR    11
#define FUSE_RENAME   12
#define FUSE_LINK     13
#define FUSE_STATFS   17
#define FUSE_FSYNC    20
#define FUSE_OPENDIR  27
#define FUSE_READDIR  28
#define FUSE_ACCESS   34
#define FUSE_INIT     26

struct fuse_in_hdr {
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};
struct fuse_out_hdr {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

static struct vq fs_hq, fs_rq;
static struct {
	struct fuse_in_hdr h;
	uint8_t arg[256];
} fs_req __attribute__((aligned(16)));
static struct {
	struct fuse_out_hdr h;
	uint8_t res[4096];
} fs_rsp __attribute__((aligned(16)));
static uint32_t fs_base; /* virtio-mmio window */
static int fs_pci;
static struct vpci fs_vp;
static uint32_t fs_notify[2]; /* virtio-pci: each queue's notify address */
static uint64_t fs_unique;

static uint8_t fs_cfg8(uint32_t off)
{
	return fs_pci ? VP8(fs_vp.device + off) : VP8(fs_base + 0x100 + off);
}

static int fs_broken(void)
{
	return (fs_pci ? VP8(fs_vp.common + VC_STATUS) : *vreg(fs_base, 0x70)) & VIO_NEED_RST;
}

/* §3.1.1 over virtio-pci with both queues, no MSI-X (the test polls the used rings). */
static const char *fs_pci_init(void)
{
	uint32_t c = fs_vp.common;
	VP8(c + VC_STATUS) = 0;
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER;
	VP32(c + VC_GFSEL) = 0;
	VP32(c + VC_GF) = 0;
	VP32(c + VC_GFSEL) = 1;
	VP32(c + VC_GF) = 1; /* VIRTIO_F_VERSION_1 */
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK;
	if (!(VP8(c + VC_STATUS) & VIO_FEAT_OK))
		return "FEATURES_OK refused";
	struct vq *qs[2] = {&fs_hq, &fs_rq};
	for (uint16_t i = 0; i < 2; i++) {
		VP16(c + VC_QSEL) = i;
		if (VP16(c + VC_QSIZE) < VQ_N)
			return "queue too small";
		bzero_(qs[i], sizeof(*qs[i]));
		VP16(c + VC_QSIZE) = VQ_N;
		VP32(c + VC_QDESC) = (uint32_t)(uintptr_t)qs[i]->desc;
		VP32(c + VC_QDESC + 4) = 0;
		VP32(c + VC_QAVAIL) = (uint32_t)(uintptr_t)&qs[i]->avail;
		VP32(c + VC_QAVAIL + 4) = 0;
		VP32(c + VC_QUSED) = (uint32_t)(uintptr_t)&qs[i]->used;
		VP32(c + VC_QUSED + 4) = 0;
		VP16(c + VC_QMSIX) = 0xffff;
		VP16(c + VC_QEN) = 1;
		fs_notify[i] = fs_vp.notify + VP16(c + VC_QNOFF) * fs_vp.notify_mult;
	}
	VP8(c + VC_STATUS) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK | VIO_DRV_OK;
	return 0;
}

/* Offers the chain at head 0 of queue qi and waits for it: its used length, or -1. */
static int64_t fs_run(struct vq *q, uint16_t qi)
{
	volatile struct vq *v = q;
	v->avail.ring[v->avail.idx % VQ_N] = 0;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	if (fs_pci)
		VP16(fs_notify[qi]) = qi;
	else
		*vreg(fs_base, 0x50) = qi;
	int64_t end = now_ns() + 5000000000LL;
	for (uint32_t spin = 0; v->used.idx == q->last_used; spin++)
		if ((spin & 255) == 0 && (now_ns() > end || fs_broken()))
			return -1;
	if (v->used.ring[q->last_used % VQ_N].id != 0)
		return -1;
	uint32_t len = v->used.ring[q->last_used % VQ_N].len;
	q->last_used++;
	/* Acknowledge, though nothing takes the interrupt. */
	if (fs_pci)
		(void)VP8(fs_vp.isr);
	else
		*vreg(fs_base, 0x64) = *vreg(fs_base, 0x60);
	return len;
}

/*
 * One request on the request queue (1): the header says hlen bytes, the readable buffer holds
 * inlen and the writable one outlen. Returns the reply's error, or 1 for a reply without one.
 */
static int32_t fs_send(uint32_t op, uint64_t nodeid, uint32_t arglen, uint32_t hlen, uint32_t inlen,
		       uint32_t outlen)
{
	fs_req.h.len = hlen ? hlen : (uint32_t)sizeof(fs_req.h) + arglen;
	fs_req.h.opcode = op;
	fs_req.h.unique = ++fs_unique;
	fs_req.h.nodeid = nodeid;
	bzero_(&fs_rsp, sizeof(fs_rsp.h));
	volatile struct vq *v = &fs_rq;
	v->desc[0].addr = (uintptr_t)&fs_req;
	v->desc[0].len = inlen ? inlen : (uint32_t)sizeof(fs_req.h) + arglen;
	v->desc[0].flags = VD_NEXT;
	v->desc[0].next = 1;
	v->desc[1].addr = (uintptr_t)&fs_rsp;
	v->desc[1].len = outlen;
	v->desc[1].flags = VD_WRITE;
	v->desc[1].next = 0;
	int64_t len = fs_run(&fs_rq, 1);
	CHECK(len >= 0, "virtiofs: no reply");
	CHECK((uint32_t)len >= sizeof(fs_rsp.h) && len == fs_rsp.h.len,
	      "virtiofs: bad reply length");
	CHECK(fs_rsp.h.unique == fs_unique, "virtiofs: reply to another request");
	return fs_rsp.h.error;
}

static uint32_t fs_name(const char *s)
{
	uint32_t n = (uint32_t)strlen_(s) + 1;
	bcopy_(fs_req.arg, s, n);
	return n;
}

static int32_t fs_lookup(uint64_t parent, const char *name, uint64_t *node, uint32_t *mode)
{
	int32_t e = fs_send(FUSE_LOOKUP, parent, fs_name(name), 0, 0, sizeof(fs_rsp));
	if (e == 0) {
		/* fuse_entry_out: nodeid at 0; its fuse_attr at 40 with mode at 40 + 60. */
		bcopy_(node, fs_rsp.res, 8);
		bcopy_(mode, fs_rsp.res + 100, 4);
	}
	return e;
}

static void fs_report(const char *what, int32_t e)
{
	puts_("virtiofs: ");
	puts_(what);
	puts_(" = ");
	if (e < 0) {
		putc_('-');
		putu((uint32_t)-e);
	} else {
		putu((uint32_t)e);
	}
	putc_('\n');
}

/* fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding (40 bytes). */
static uint32_t fs_read_in(uint64_t fh, uint32_t size)
{
	bzero_(fs_req.arg, 40);
	bcopy_(fs_req.arg, &fh, 8);
	bcopy_(fs_req.arg + 16, &size, 4);
	return 40;
}

/* WRITE of the string s at offset off of handle fh: the bytes written, or -errno. */
static int32_t fs_write(uint64_t fh, uint64_t off, const char *s)
{
	/* fuse_write_in: fh, offset, size, write_flags, lock_owner, flags, padding (40 bytes). */
	uint32_t n = (uint32_t)strlen_(s);
	bzero_(fs_req.arg, 40);
	bcopy_(fs_req.arg, &fh, 8);
	bcopy_(fs_req.arg + 8, &off, 8);
	bcopy_(fs_req.arg + 16, &n, 4);
	bcopy_(fs_req.arg + 40, s, n);
	int32_t e = fs_send(FUSE_WRITE, 0, 40 + n, 0, 0, sizeof(fs_rsp));
	if (e)
		return e;
	uint32_t size; /* fuse_write_out */
	bcopy_(&size, fs_rsp.res, 4);
	return (int32_t)size;
}

/* A request on node: flen bytes of fixed arguments, then the names n1 and n2 (NUL-ended). */
static int32_t fs_op(uint32_t op, uint64_t node, const void *fixed, uint32_t flen, const char *n1,
		     const char *n2)
{
	uint32_t len = flen;
	bcopy_(fs_req.arg, fixed, flen);
	for (const char *n = n1; n; n = n == n1 ? n2 : NULL) {
		uint32_t l = (uint32_t)strlen_(n) + 1;
		bcopy_(fs_req.arg + len, n, l);
		len += l;
	}
	return fs_send(op, node, len, 0, 0, sizeof(fs_rsp));
}

/* write=1, after the files: the other requests a driver sends (see the top). */
static void fs_more_ops(uint64_t fh, uint64_t node)
{
	uint32_t fsync_in[4] = {(uint32_t)fh, (uint32_t)(fh >> 32), 0, 0};
	fs_report("fsync", fs_op(FUSE_FSYNC, node, fsync_in, 16, 0, 0));
	/* fuse_setattr_in (88 bytes): valid FATTR_MODE | FATTR_SIZE, size at 16, mode at 68. */
	uint8_t sa[88];
	bzero_(sa, sizeof(sa));
	uint32_t valid = 1 | 8, mode = 0100600;
	uint64_t size = 7;
	bcopy_(sa, &valid, 4);
	bcopy_(sa + 16, &size, 8);
	bcopy_(sa + 68, &mode, 4);
	fs_report("setattr", fs_op(FUSE_SETATTR, node, sa, sizeof(sa), 0, 0));
	uint32_t mkdir_in[2] = {0755, 022};
	int32_t e = fs_op(FUSE_MKDIR, 1, mkdir_in, 8, "dir", 0);
	fs_report("mkdir", e);
	uint64_t dir;
	bcopy_(&dir, fs_rsp.res, 8);
	if (e)
		return;
	fs_report("rename", fs_op(FUSE_RENAME, 1, &dir, 8, "new.txt", "moved.txt"));
	fs_report("link", fs_op(FUSE_LINK, dir, &node, 8, "hard.txt", 0));
	fs_report("unlink", fs_op(FUSE_UNLINK, dir, 0, 0, "hard.txt", 0));
	fs_report("symlink", fs_op(FUSE_SYMLINK, dir, 0, 0, "sym", "moved.txt"));
	uint32_t mknod_in[4] = {010644, 0, 022, 0};
	fs_report("mknod", fs_op(FUSE_MKNOD, dir, mknod_in, 16, "fifo", 0));
	uint32_t access_in[2] = {4, 0};
	fs_report("access", fs_op(FUSE_ACCESS, dir, access_in, 8, 0, 0));
	fs_report("statfs", fs_op(FUSE_STATFS, 1, 0, 0, 0, 0));
	uint32_t open_in[2] = {0, 0};
	e = fs_op(FUSE_OPENDIR, dir, open_in, 8, 0, 0);
	fs_report("opendir", e);
	uint64_t dfh;
	bcopy_(&dfh, fs_rsp.res, 8);
	if (e == 0) {
		e = fs_send(FUSE_READDIR, dir, fs_read_in(dfh, 4000), 0, 0, sizeof(fs_rsp));
		fs_report("readdir", e ? e : (int32_t)(fs_rsp.h.len > sizeof(fs_rsp.h)));
	}
	fs_report("mkdir gone", fs_op(FUSE_MKDIR, 1, mkdir_in, 8, "gone", 0));
	fs_report("rmdir", fs_op(FUSE_RMDIR, 1, 0, 0, "gone", 0));
}

/* write=1: a file of the share reopened for writing, and a new one (see the top). */
static void fs_write_files(uint64_t node)
{
	uint32_t flags = 2; /* O_RDWR; fuse_open_in: flags, open_flags */
	bzero_(fs_req.arg, 8);
	bcopy_(fs_req.arg, &flags, 4);
	int32_t e = fs_send(FUSE_OPEN, node, 8, 0, 0, sizeof(fs_rsp));
	fs_report("open rw", e);
	uint64_t fh;
	bcopy_(&fh, fs_rsp.res, 8);
	if (e == 0)
		fs_report("write", fs_write(fh, 0, "HELLO"));
	/* fuse_create_in: flags, mode, umask, open_flags; then the name. */
	uint32_t in[4] = {2, 0100644, 022, 0};
	bcopy_(fs_req.arg, in, sizeof(in));
	bcopy_(fs_req.arg + 16, "new.txt", 8);
	e = fs_send(FUSE_CREATE, 1, 16 + 8, 0, 0, sizeof(fs_rsp));
	fs_report("create", e);
	/* fuse_entry_out (128 bytes, the node id first), then fuse_open_out: fh first. */
	uint64_t created;
	bcopy_(&created, fs_rsp.res, 8);
	bcopy_(&fh, fs_rsp.res + 128, 8);
	if (e == 0) {
		fs_report("write new", fs_write(fh, 0, "written by the guest\n"));
		fs_more_ops(fh, created);
	}
}

static void test_virtiofs(const char *cmd)
{
	char transport[8];
	cmdline_get(cmd, "transport", transport, sizeof(transport));
	fs_pci = streq(transport, "pci");
	if (fs_pci) {
		const char *why = vpci_find(26, 0, &fs_vp);
		CHECK(!why, why);
		CHECK(fs_vp.device, "virtio-fs has no device-specific structure");
	} else {
		fs_base = vio_find(26, 0);
		CHECK(fs_base, "no virtio-fs device");
	}
	/* §5.11.4: tag (36 bytes, NUL-padded) and num_request_queues in the config space. */
	char tag[37];
	for (unsigned int i = 0; i < 36; i++)
		tag[i] = (char)fs_cfg8(i);
	tag[36] = 0;
	uint32_t nq = fs_cfg8(36) | (uint32_t)fs_cfg8(37) << 8;
	puts_("virtiofs: tag ");
	puts_(tag);
	puts_(", request queues ");
	putu(nq);
	putc_('\n');
	struct vq *qs[2] = {&fs_hq, &fs_rq};
	const char *bad = fs_pci ? fs_pci_init() : vdev_init(fs_base, qs, 2, 0);
	CHECK(!bad, bad);

	/* Before FUSE_INIT nothing is served. */
	uint64_t node;
	uint32_t mode;
	fs_report("lookup before init", fs_lookup(1, "hello.txt", &node, &mode));

	/* fuse_init_in: major, minor, max_readahead, flags, flags2, unused[11]. */
	bzero_(fs_req.arg, 64);
	uint32_t init[4] = {7, 38, 65536, 0};
	bcopy_(fs_req.arg, init, sizeof(init));
	CHECK(fs_send(FUSE_INIT, 0, 64, 0, 0, sizeof(fs_rsp)) == 0, "virtiofs: INIT failed");
	uint32_t maj, min, max_write;
	bcopy_(&maj, fs_rsp.res, 4);
	bcopy_(&min, fs_rsp.res + 4, 4);
	bcopy_(&max_write, fs_rsp.res + 20, 4);
	puts_("virtiofs: init ");
	putu(maj);
	putc_('.');
	putu(min);
	puts_(" max_write ");
	putu(max_write);
	putc_('\n');

	CHECK(fs_lookup(1, "hello.txt", &node, &mode) == 0, "virtiofs: lookup hello.txt failed");
	CHECK((mode & 0170000) == 0100000, "virtiofs: hello.txt is not a regular file");
	bzero_(fs_req.arg, 8);
	CHECK(fs_send(FUSE_OPEN, node, 8, 0, 0, sizeof(fs_rsp)) == 0, "virtiofs: open failed");
	uint64_t fh;
	bcopy_(&fh, fs_rsp.res, 8);
	CHECK(fs_send(FUSE_READ, 0, fs_read_in(fh, 200), 0, 0, sizeof(fs_rsp)) == 0,
	      "virtiofs: read failed");
	uint32_t n = fs_rsp.h.len - (uint32_t)sizeof(fs_rsp.h);
	puts_("virtiofs: read: ");
	for (uint32_t i = 0; i < n && fs_rsp.res[i] >= ' '; i++)
		putc_((char)fs_rsp.res[i]);
	putc_('\n');

	/* The hostile part. */
	fs_report("lookup ..", fs_lookup(1, "..", &node, &mode));
	fs_report("lookup /etc/passwd", fs_lookup(1, "/etc/passwd", &node, &mode));
	fs_report("lookup ../etc", fs_lookup(1, "../etc", &node, &mode));
	uint64_t link;
	CHECK(fs_lookup(1, "etc", &link, &mode) == 0, "virtiofs: lookup etc failed");
	CHECK((mode & 0170000) == 0120000, "virtiofs: etc is not a symlink node");
	fs_report("lookup etc/passwd", fs_lookup(link, "passwd", &node, &mode));
	bzero_(fs_req.arg, 8);
	fs_report("open etc", fs_send(FUSE_OPEN, link, 8, 0, 0, sizeof(fs_rsp)));
	CHECK(fs_send(FUSE_READLINK, link, 0, 0, 0, sizeof(fs_rsp)) == 0, "readlink failed");
	puts_("virtiofs: readlink etc: ");
	for (uint32_t i = 0; i < fs_rsp.h.len - sizeof(fs_rsp.h); i++)
		putc_((char)fs_rsp.res[i]);
	putc_('\n');
	bzero_(fs_req.arg, 16);
	fs_report("getattr unknown node",
		  fs_send(FUSE_GETATTR, 0xdead0000beefULL, 16, 0, 0, sizeof(fs_rsp)));
	/* A READ of 4096 bytes into a 64-byte reply buffer. */
	fs_report("read beyond buffer", fs_send(FUSE_READ, 0, fs_read_in(fh, 4096), 0, 0, 64));
	/* A header claiming 4096 bytes in a 48-byte buffer. */
	fs_report("header beyond buffer",
		  fs_send(FUSE_LOOKUP, 1, fs_name("hello.txt"), 4096, 0, sizeof(fs_rsp)));
	fs_report("unknown opcode", fs_send(4242, 1, 0, 0, 0, sizeof(fs_rsp)));
	/*
	 * FORGET goes on the hiprio queue (0) with no writable buffer, as Linux sends it; "etc"
	 * was looked up once, so one forget ends its node id.
	 */
	static struct {
		struct fuse_in_hdr h;
		uint64_t nlookup;
	} forget __attribute__((aligned(16)));
	forget.h.len = sizeof(forget);
	forget.h.opcode = 2; /* FUSE_FORGET */
	forget.h.unique = ++fs_unique;
	forget.h.nodeid = link;
	forget.nlookup = 1;
	volatile struct vq *hq = &fs_hq;
	hq->desc[0].addr = (uintptr_t)&forget;
	hq->desc[0].len = sizeof(forget);
	hq->desc[0].flags = 0;
	hq->desc[0].next = 0;
	CHECK(fs_run(&fs_hq, 0) == 0, "virtiofs: forget not returned, or with a reply");
	fs_report("readlink forgotten node", fs_send(FUSE_READLINK, link, 0, 0, 0, sizeof(fs_rsp)));
	/* Still serving after all that. */
	CHECK(fs_lookup(1, "hello.txt", &node, &mode) == 0, "virtiofs: lookup after abuse failed");
	char w[4];
	if (cmdline_get(cmd, "write", w, sizeof(w)))
		fs_write_files(node);
	puts_("virtiofs ok\n");
	pass();
}
