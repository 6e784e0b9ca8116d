/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 images, versions 2 and 3 (QEMU docs/interop/qcow2.txt; section names below are that
 * file's). A guest offset maps through the L1 table (in memory) and an L2 table (an LRU cache
 * of whole tables) to a host cluster; refcount blocks count the references to every host
 * cluster. The image is trusted for nothing: the header, the L1 and refcount tables and every
 * L2 table are checked when the image is opened (offsets inside the file and cluster aligned,
 * no two structures sharing a cluster, sizes bounded), so the data path only re-checks what is
 * cheap.
 *
 * Metadata is written through (no write-back cache) and in an order that keeps the image
 * consistent after a crash at any point, at worst with leaked clusters (refcount > 0 and no
 * reference), which `qemu-img check -r leaks` reclaims and which never corrupt data:
 *   - a new cluster's refcount is raised before anything points at it;
 *   - a new L2 table or refcount block is zero on disk (freshly appended) before the L1 or
 *     refcount-table entry that makes it reachable is written;
 *   - guest data and copy-on-write data reach the new cluster before the L2 entry;
 *   - a cluster's reference is dropped before its refcount.
 * The page cache keeps this order for readers but not for a host power loss, so a writable
 * v3 image also carries the dirty bit (incompatible feature bit 0) from its first metadata
 * change until it is closed cleanly: QEMU then rebuilds the refcounts on its next open, and
 * kapsel refuses to open a dirty image for writing. A guest FLUSH is one fdatasync.
 *
 * New clusters are always appended at the end of the file; a freed cluster is punched out of
 * the file (FALLOC_FL_PUNCH_HOLE), so its space goes back to the host without reuse logic.
 * Internal snapshots are readable; an image with snapshots is refused for writing.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/virtio/qcow2.h"

#define QCOW_MAGIC 0x514649fbU /* "QFI\xfb" */

/* "Cluster mapping": L1 and L2 entries. */
#define OFLAG_COPIED	 (1ULL << 63) /* refcount is exactly 1: writable in place */
#define OFLAG_COMPRESSED (1ULL << 62)
#define OFLAG_ZERO	 1ULL /* v3: the cluster reads as zeroes */
#define ENTRY_OFFSET	 0x00fffffffffffe00ULL
#define L1E_RESERVED	 0x7f000000000001ffULL
#define L2E_RESERVED	 0x3f000000000001feULL
#define REFT_RESERVED	 0x1ffULL

/* "Header": incompatible feature bits. */
#define INCOMPAT_DIRTY	     (1ULL << 0)
#define INCOMPAT_CORRUPT     (1ULL << 1)
#define INCOMPAT_DATA_FILE   (1ULL << 2)
#define INCOMPAT_COMPRESSION (1ULL << 3)
#define INCOMPAT_EXTL2	     (1ULL << 4)

/* "Header extensions". */
#define EXT_END		   0x00000000U
#define EXT_BACKING_FORMAT 0xe2792acaU
#define EXT_FEATURE_TABLE  0x6803f857U

#define V2_HEADER_LEN 72
#define V3_HEADER_LEN 104
/* Bounds QEMU itself applies (block/qcow2.h): 32 MiB of L1, 8 MiB of refcount table. */
#define MAX_L1_BYTES	   (32ULL << 20)
#define MAX_REFTABLE_BYTES (8ULL << 20)
/* Host offsets must fit the 47 offset bits of an entry (bits 9-55). */
#define MAX_HOST_OFFSET (1ULL << 56)
/* The open-time cluster bitmap: 64 MiB covers 2^29 clusters (32 TiB of 64 KiB clusters). */
#define MAX_BITMAP_BYTES (64ULL << 20)
#define L2_CACHE_BYTES	 (8ULL << 20)
#define L2_CACHE_MIN	 4
#define L2_CACHE_MAX	 64
#define RB_CACHE	 4
#define MAX_SNAPSHOTS	 65536

struct tcache_ent {
	uint64_t off; /* host offset of the table; 0: empty (cluster 0 is the header) */
	uint64_t tick;
	uint8_t *buf; /* one cluster, as on disk (big endian) */
};

struct tcache {
	unsigned int n;
	uint64_t tick;
	struct tcache_ent *e;
};

struct kap_qcow2 {
	int fd;	 /* metadata (buffered) */
	int dfd; /* data: O_DIRECT with cache=none, else fd */
	bool ro;
	uint32_t version;
	unsigned int cluster_bits, l2_bits, rb_bits, refcount_order;
	uint64_t cs;   /* cluster size */
	uint64_t size; /* virtual size */
	uint64_t incompat;
	uint64_t *l1; /* host endian */
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t *reftable; /* host endian */
	uint64_t reftable_entries, reftable_offset;
	uint32_t reftable_clusters, nb_snapshots;
	uint64_t file_size; /* the file's length */
	uint64_t file_end;  /* where the next cluster goes: file_size rounded up */
	struct tcache l2c, rbc;
	struct kap_disk *backing;
	uint8_t *cow; /* one cluster: copy-on-write data, table scans */
	bool dirty;   /* we set the dirty bit and must clear it on close */
	unsigned int grow_depth;
	struct iovec iov[KAP_DISK_MAX_IOV + 2];
};

static const uint8_t zeroes[65536];

/* ---- small helpers ---- */

static int meta_read(struct kap_qcow2 *q, void *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t r = pread(q->fd, buf, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		buf = (uint8_t *)buf + r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int raw_write(int fd, const void *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t r = pwrite(fd, buf, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		buf = (const uint8_t *)buf + r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* The first metadata change of a writable v3 image sets the dirty bit, durably. */
static int mark_dirty(struct kap_qcow2 *q)
{
	if (q->dirty || q->version < 3)
		return 0;
	uint64_t be = htobe64(q->incompat | INCOMPAT_DIRTY);
	int r = raw_write(q->fd, &be, 8, 72);
	if (r < 0)
		return r;
	if (fdatasync(q->fd) < 0)
		return -errno;
	q->dirty = true;
	return 0;
}

static int meta_write(struct kap_qcow2 *q, const void *buf, size_t len, uint64_t off)
{
	int r = mark_dirty(q);
	return r < 0 ? r : raw_write(q->fd, buf, len, off);
}

/* The iovecs of bytes [skip, skip+len) of iov into out (at most max); -1 if they do not fit. */
static int iov_slice(const struct iovec *iov, int n, uint64_t skip, uint64_t len, struct iovec *out,
		     int max)
{
	int k = 0;
	for (int i = 0; i < n && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (k == max)
			return -1;
		uint64_t take = iov[i].iov_len - skip;
		if (take > len)
			take = len;
		out[k++] = (struct iovec){(uint8_t *)iov[i].iov_base + skip, take};
		len -= take;
		skip = 0;
	}
	return len ? -1 : k;
}

static void iov_zero(const struct iovec *iov, int n, uint64_t skip, uint64_t len)
{
	for (int i = 0; i < n && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		uint64_t take = iov[i].iov_len - skip;
		if (take > len)
			take = len;
		memset((uint8_t *)iov[i].iov_base + skip, 0, take);
		len -= take;
		skip = 0;
	}
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* ---- table cache: whole L2 tables and refcount blocks, least recently used evicted ---- */

static uint8_t *tcache_get(struct kap_qcow2 *q, struct tcache *c, uint64_t off, bool fresh,
			   int *err)
{
	struct tcache_ent *victim = &c->e[0];
	for (unsigned int i = 0; i < c->n; i++) {
		if (c->e[i].off == off) {
			c->e[i].tick = ++c->tick;
			return c->e[i].buf;
		}
		if (c->e[i].tick < victim->tick)
			victim = &c->e[i];
	}
	victim->off = 0;
	if (fresh) {
		memset(victim->buf, 0, q->cs);
	} else {
		*err = meta_read(q, victim->buf, q->cs, off);
		if (*err < 0)
			return NULL;
	}
	victim->off = off;
	victim->tick = ++c->tick;
	return victim->buf;
}

static int tcache_init(struct tcache *c, unsigned int n, uint64_t cs)
{
	c->e = calloc(n, sizeof(*c->e));
	if (!c->e)
		return -ENOMEM;
	c->n = n;
	for (unsigned int i = 0; i < n; i++)
		if (!(c->e[i].buf = malloc(cs)))
			return -ENOMEM;
	return 0;
}

static void tcache_free(struct tcache *c)
{
	for (unsigned int i = 0; c->e && i < c->n; i++)
		free(c->e[i].buf);
	free(c->e);
}

/* ---- refcounts ("Refcount table"): entries of 1 << refcount_order bits, big endian ---- */

static uint64_t rc_get(const uint8_t *b, uint64_t i, unsigned int order)
{
	switch (order) {
	case 3:
		return b[i];
	case 4:
		return (uint64_t)b[2 * i] << 8 | b[2 * i + 1];
	case 5:
		return be32toh(*(const uint32_t *)(const void *)(b + 4 * i));
	case 6:
		return be64toh(*(const uint64_t *)(const void *)(b + 8 * i));
	}
	/* Sub-byte widths: the first entry in the least significant bits, as QEMU stores it. */
	unsigned int bits = 1u << order;
	return (b[i * bits / 8] >> (i * bits % 8)) & ((1u << bits) - 1);
}

/* Sets entry i; *at and *len: the bytes that changed, to write out. */
static void rc_set(uint8_t *b, uint64_t i, unsigned int order, uint64_t v, uint64_t *at,
		   size_t *len)
{
	unsigned int bits = 1u << order;
	*at = i * bits / 8;
	*len = bits >= 8 ? bits / 8 : 1;
	switch (order) {
	case 3:
		b[i] = (uint8_t)v;
		return;
	case 4:
		b[2 * i] = (uint8_t)(v >> 8);
		b[2 * i + 1] = (uint8_t)v;
		return;
	case 5: {
		uint32_t be = htobe32((uint32_t)v);
		memcpy(b + 4 * i, &be, 4);
		return;
	}
	case 6: {
		uint64_t be = htobe64(v);
		memcpy(b + 8 * i, &be, 8);
		return;
	}
	}
	unsigned int shift = i * bits % 8, mask = ((1u << bits) - 1) << shift;
	b[*at] = (uint8_t)((b[*at] & ~mask) | ((v << shift) & mask));
}

/* Appends n clusters to the file (zeroes until written); *off: the first. No refcounts. */
static int extend(struct kap_qcow2 *q, uint64_t n, uint64_t *off)
{
	if (q->file_end + n * q->cs > MAX_HOST_OFFSET)
		return -ENOSPC;
	*off = q->file_end;
	q->file_end += n * q->cs;
	if (q->file_end > q->file_size) {
		if (ftruncate(q->fd, (off_t)q->file_end) < 0)
			return -errno;
		q->file_size = q->file_end;
	}
	return 0;
}

static int refcount_add(struct kap_qcow2 *q, uint64_t ci, int delta);

/*
 * A bigger refcount table: written whole at the end of the file, counted in refcount blocks it
 * may itself need, then swapped in through one header write; the old one is freed after.
 */
static int reftable_grow(struct kap_qcow2 *q, uint64_t need)
{
	uint64_t per = q->cs / 8,
		 want = need + 1 > 2 * q->reftable_entries ? need + 1 : 2 * q->reftable_entries;
	uint64_t clusters = (want + per - 1) / per;
	if (clusters * q->cs > MAX_REFTABLE_BYTES || q->grow_depth > 2)
		return -EFBIG;
	uint64_t *t = calloc(clusters * per, 8);
	if (!t)
		return -ENOMEM;
	memcpy(t, q->reftable, q->reftable_entries * 8);
	uint64_t off;
	int r = extend(q, clusters, &off);
	if (r < 0) {
		free(t);
		return r;
	}
	uint64_t *old = q->reftable, old_off = q->reftable_offset;
	uint32_t old_clusters = q->reftable_clusters;
	q->reftable = t;
	q->reftable_entries = clusters * per;
	q->reftable_offset = off;
	q->reftable_clusters = (uint32_t)clusters;
	free(old);
	q->grow_depth++;
	for (uint64_t i = 0; i < clusters && r >= 0; i++)
		r = refcount_add(q, (off >> q->cluster_bits) + i, 1);
	q->grow_depth--;
	if (r < 0)
		return r;
	cleanup_free uint64_t *be = malloc(clusters * q->cs);
	if (!be)
		return -ENOMEM;
	for (uint64_t i = 0; i < clusters * per; i++)
		be[i] = htobe64(q->reftable[i]);
	if ((r = meta_write(q, be, clusters * q->cs, off)) < 0)
		return r;
	/* Header bytes 48-59: refcount_table_offset, refcount_table_clusters. */
	uint8_t h[12];
	uint64_t o = htobe64(off);
	uint32_t c = htobe32((uint32_t)clusters);
	memcpy(h, &o, 8);
	memcpy(h + 8, &c, 4);
	if ((r = meta_write(q, h, sizeof(h), 48)) < 0)
		return r;
	for (uint32_t i = 0; i < old_clusters && r >= 0; i++)
		r = refcount_add(q, (old_off >> q->cluster_bits) + i, -1);
	return r;
}

/* The refcount block covering cluster ci (allocating one when alloc); *b NULL when none. */
static int refblock(struct kap_qcow2 *q, uint64_t ci, bool alloc, uint8_t **b, uint64_t *boff)
{
	int r = 0;
	uint64_t bi = ci >> q->rb_bits;
	*b = NULL;
	if (bi >= q->reftable_entries) {
		if (!alloc)
			return 0;
		if ((r = reftable_grow(q, bi)) < 0)
			return r;
	}
	uint64_t off = q->reftable[bi] & ~REFT_RESERVED;
	if (!off) {
		if (!alloc)
			return 0;
		if ((r = extend(q, 1, &off)) < 0)
			return r;
		uint8_t *nb = tcache_get(q, &q->rbc, off, true, &r);
		uint64_t self = off >> q->cluster_bits, at;
		size_t len;
		bool covers_self = (self >> q->rb_bits) == bi;
		if (covers_self) {
			rc_set(nb, self & ((1ULL << q->rb_bits) - 1), q->refcount_order, 1, &at,
			       &len);
			if ((r = meta_write(q, nb + at, len, off + at)) < 0)
				return r;
		}
		uint64_t be = htobe64(off);
		if ((r = meta_write(q, &be, 8, q->reftable_offset + bi * 8)) < 0)
			return r;
		q->reftable[bi] = off;
		if (!covers_self && (r = refcount_add(q, self, 1)) < 0)
			return r;
	}
	if (off & (q->cs - 1) || off >= q->file_end)
		return -EIO;
	*b = tcache_get(q, &q->rbc, off, false, &r);
	*boff = off;
	return *b ? 0 : r;
}

static int refcount_get(struct kap_qcow2 *q, uint64_t ci, uint64_t *v)
{
	uint8_t *b;
	uint64_t boff;
	int r = refblock(q, ci, false, &b, &boff);
	*v = b ? rc_get(b, ci & ((1ULL << q->rb_bits) - 1), q->refcount_order) : 0;
	return r;
}

static int refcount_add(struct kap_qcow2 *q, uint64_t ci, int delta)
{
	uint8_t *b;
	uint64_t boff, at;
	size_t len;
	int r = refblock(q, ci, delta > 0, &b, &boff);
	if (r < 0)
		return r;
	if (!b)
		return -EIO;
	uint64_t i = ci & ((1ULL << q->rb_bits) - 1);
	uint64_t v = rc_get(b, i, q->refcount_order);
	uint64_t max =
	    q->refcount_order == 6 ? UINT64_MAX : (1ULL << (1u << q->refcount_order)) - 1;
	if (delta > 0 ? v == max : v == 0)
		return -EIO;
	v = delta > 0 ? v + 1 : v - 1;
	rc_set(b, i, q->refcount_order, v, &at, &len);
	if ((r = meta_write(q, b + at, len, boff + at)) < 0)
		return r;
	/* Free: give the space back to the host; the hole reads as zeroes if ever reused. */
	if (v == 0)
		(void)fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(ci << q->cluster_bits), (off_t)q->cs);
	return 0;
}

/*
 * A new cluster at the end of the file, counted. It reads as zeroes. A refcount block may
 * already count clusters past the end of the file (a damaged image): those are skipped, never
 * counted twice.
 */
static int alloc_cluster(struct kap_qcow2 *q, uint64_t *off)
{
	for (;;) {
		uint64_t v;
		int r = extend(q, 1, off);
		if (r < 0 || (r = refcount_get(q, *off >> q->cluster_bits, &v)) < 0)
			return r;
		if (v == 0)
			return refcount_add(q, *off >> q->cluster_bits, 1);
	}
}

/* ---- cluster mapping ---- */

/*
 * The L2 table of guest cluster gc: *t NULL when unallocated (and !alloc). With alloc a
 * missing table is appended, zero on disk before the L1 entry points at it.
 */
static int l2_table(struct kap_qcow2 *q, uint64_t gc, bool alloc, uint64_t **t, uint64_t *l2off)
{
	uint64_t i1 = gc >> q->l2_bits;
	int r = 0;
	*t = NULL;
	if (i1 >= q->l1_size)
		return -EIO;
	uint64_t e = q->l1[i1], off = e & ENTRY_OFFSET;
	if (!off) {
		if (!alloc)
			return 0;
		if ((r = alloc_cluster(q, &off)) < 0)
			return r;
		uint8_t *b = tcache_get(q, &q->l2c, off, true, &r);
		uint64_t be = htobe64(off | OFLAG_COPIED);
		if ((r = meta_write(q, &be, 8, q->l1_offset + i1 * 8)) < 0)
			return r;
		q->l1[i1] = off | OFLAG_COPIED;
		*t = (uint64_t *)(void *)b;
		*l2off = off;
		return 0;
	}
	if (alloc && !(e & OFLAG_COPIED))
		return -EIO; /* shared with a snapshot: refused at open for writing */
	uint8_t *b = tcache_get(q, &q->l2c, off, false, &r);
	*t = (uint64_t *)(void *)b;
	*l2off = off;
	return b ? 0 : r;
}

enum kind { K_ZERO, K_BACKING, K_DATA };

/* How guest cluster gc reads: zeroes, from the backing file, or data at *host. */
static int classify(struct kap_qcow2 *q, uint64_t gc, uint64_t *host)
{
	uint64_t *t, l2off;
	int r = l2_table(q, gc, false, &t, &l2off);
	if (r < 0)
		return r;
	uint64_t e = t ? be64toh(t[gc & ((1ULL << q->l2_bits) - 1)]) : 0;
	if (e & OFLAG_COMPRESSED)
		return -EIO;
	if (q->version >= 3 && (e & OFLAG_ZERO))
		return K_ZERO;
	uint64_t off = e & ENTRY_OFFSET;
	if (!off)
		return q->backing ? K_BACKING : K_ZERO;
	if (off & (q->cs - 1) || off >= q->file_end)
		return -EIO;
	*host = off;
	return K_DATA;
}

static int data_io(struct kap_qcow2 *q, bool write, int n, uint64_t off)
{
	return kap_disk_io_full(q->dfd, q->dfd == q->fd ? -1 : q->fd, write, q->iov, n, off);
}

/* Bytes [off, off+len) of the backing file into iov; zeroes past its end. */
static int backing_read(struct kap_qcow2 *q, const struct iovec *iov, int n, uint64_t skip,
			uint64_t off, uint64_t len)
{
	uint64_t bsize = q->backing->size, m = off < bsize ? min64(len, bsize - off) : 0;
	if (m) {
		int k = iov_slice(iov, n, skip, m, q->iov, KAP_DISK_MAX_IOV + 2);
		if (k < 0)
			return -EINVAL;
		int r = kap_disk_readv(q->backing, q->iov, k, off);
		if (r < 0)
			return r;
	}
	iov_zero(iov, n, skip + m, len - m);
	return 0;
}

int kap_qcow2_readv(struct kap_qcow2 *q, const struct iovec *iov, int n, uint64_t off, uint64_t len)
{
	if (off > q->size || len > q->size - off)
		return -EIO;
	uint64_t pos = 0;
	while (pos < len) {
		uint64_t g = off + pos, gc = g >> q->cluster_bits, in = g & (q->cs - 1), host = 0;
		int k = classify(q, gc, &host);
		if (k < 0)
			return k;
		uint64_t run = min64(q->cs - in, len - pos);
		/* Merge the following clusters that read the same way (contiguous on disk). */
		while (pos + run < len) {
			uint64_t nc = (g + run) >> q->cluster_bits, h2 = 0;
			int k2 = classify(q, nc, &h2);
			if (k2 < 0)
				return k2;
			if (k2 != k || (k == K_DATA && h2 != host + ((nc - gc) << q->cluster_bits)))
				break;
			run += min64(q->cs, len - pos - run);
		}
		int r = 0;
		if (k == K_ZERO) {
			iov_zero(iov, n, pos, run);
		} else if (k == K_BACKING) {
			r = backing_read(q, iov, n, pos, g, run);
		} else {
			int c = iov_slice(iov, n, pos, run, q->iov, KAP_DISK_MAX_IOV + 2);
			r = c < 0 ? -EINVAL : data_io(q, false, c, host + in);
		}
		if (r < 0)
			return r;
		pos += run;
	}
	return 0;
}

/* The L2 entry of gc, written through to the cached table and the file. */
static int l2_set(struct kap_qcow2 *q, uint64_t gc, uint64_t entry)
{
	uint64_t *t, l2off;
	int r = l2_table(q, gc, true, &t, &l2off);
	if (r < 0)
		return r;
	uint64_t i = gc & ((1ULL << q->l2_bits) - 1), be = htobe64(entry);
	if ((r = meta_write(q, &be, 8, l2off + i * 8)) < 0)
		return r;
	t[i] = be;
	return 0;
}

static int l2_get(struct kap_qcow2 *q, uint64_t gc, uint64_t *entry)
{
	uint64_t *t, l2off;
	int r = l2_table(q, gc, false, &t, &l2off);
	*entry = t ? be64toh(t[gc & ((1ULL << q->l2_bits) - 1)]) : 0;
	return r;
}

/*
 * A write of bytes [in, in+len) of guest cluster gc that needs a new cluster: the rest of the
 * cluster comes from the backing file (copy-on-write) or is zero (a new cluster already reads
 * as zeroes, so nothing is written for it).
 */
static int write_alloc(struct kap_qcow2 *q, uint64_t gc, uint64_t in, uint64_t len,
		       const struct iovec *iov, int n, uint64_t pos, uint64_t old)
{
	bool zero = !q->backing || (q->version >= 3 && (old & OFLAG_ZERO));
	bool partial = in || len < q->cs;
	uint64_t host;
	int r;
	/* The L2 table first, so its allocation is not interleaved with the data cluster's. */
	uint64_t *t, l2off;
	if ((r = l2_table(q, gc, true, &t, &l2off)) < 0)
		return r;
	if ((r = alloc_cluster(q, &host)) < 0)
		return r;
	if (partial && !zero) {
		struct iovec c = {q->cow, q->cs};
		if ((r = backing_read(q, &c, 1, 0, gc << q->cluster_bits, q->cs)) < 0)
			return r;
	}
	int k = 0;
	uint64_t start = host + in;
	if (in && !zero) {
		q->iov[k++] = (struct iovec){q->cow, in};
		start = host;
	}
	int c = iov_slice(iov, n, pos, len, q->iov + k, KAP_DISK_MAX_IOV);
	if (c < 0)
		return -EINVAL;
	k += c;
	if (in + len < q->cs && !zero)
		q->iov[k++] = (struct iovec){q->cow + in + len, q->cs - in - len};
	if ((r = data_io(q, true, k, start)) < 0)
		return r;
	if ((r = l2_set(q, gc, host | OFLAG_COPIED)) < 0)
		return r;
	/* A preallocated zero cluster (v3 "all zeroes" with an offset) is replaced: free it. */
	if (old & ENTRY_OFFSET)
		return refcount_add(q, (old & ENTRY_OFFSET) >> q->cluster_bits, -1);
	return 0;
}

int kap_qcow2_writev(struct kap_qcow2 *q, const struct iovec *iov, int n, uint64_t off,
		     uint64_t len)
{
	if (q->ro)
		return -EROFS;
	if (off > q->size || len > q->size - off)
		return -EIO;
	uint64_t pos = 0;
	while (pos < len) {
		uint64_t g = off + pos, gc = g >> q->cluster_bits, in = g & (q->cs - 1), e;
		uint64_t run = min64(q->cs - in, len - pos);
		int r = l2_get(q, gc, &e);
		if (r < 0)
			return r;
		bool in_place = (e & OFLAG_COPIED) && (e & ENTRY_OFFSET) && !(e & OFLAG_ZERO);
		if (!in_place) {
			if (e & OFLAG_COMPRESSED || ((e & ENTRY_OFFSET) && !(e & OFLAG_COPIED)))
				return -EIO;
			if ((r = write_alloc(q, gc, in, run, iov, n, pos, e)) < 0)
				return r;
			pos += run;
			continue;
		}
		uint64_t host = e & ENTRY_OFFSET;
		if (host & (q->cs - 1) || host >= q->file_end)
			return -EIO;
		while (pos + run < len) {
			uint64_t nc = (g + run) >> q->cluster_bits, e2;
			if ((r = l2_get(q, nc, &e2)) < 0)
				return r;
			if ((e2 & (OFLAG_COPIED | OFLAG_ZERO | OFLAG_COMPRESSED)) != OFLAG_COPIED ||
			    (e2 & ENTRY_OFFSET) != host + ((nc - gc) << q->cluster_bits))
				break;
			run += min64(q->cs, len - pos - run);
		}
		int c = iov_slice(iov, n, pos, run, q->iov, KAP_DISK_MAX_IOV + 2);
		if (c < 0)
			return -EINVAL;
		if ((r = data_io(q, true, c, host + in)) < 0)
			return r;
		pos += run;
	}
	return 0;
}

/* Writes len (< one cluster, at most 2 MiB) zero bytes at guest offset off. */
static int write_zero_bytes(struct kap_qcow2 *q, uint64_t off, uint64_t len)
{
	struct iovec z[(2u << 20) / sizeof(zeroes)];
	int n = 0;
	for (uint64_t done = 0; done < len; n++) {
		uint64_t take = min64(sizeof(zeroes), len - done);
		z[n] = (struct iovec){(void *)zeroes, take};
		done += take;
	}
	return kap_qcow2_writev(q, z, n, off, len);
}

int kap_qcow2_zero(struct kap_qcow2 *q, uint64_t off, uint64_t len)
{
	if (q->ro)
		return -EROFS;
	if (off > q->size || len > q->size - off)
		return -EIO;
	uint64_t pos = 0;
	while (pos < len) {
		uint64_t g = off + pos, gc = g >> q->cluster_bits, in = g & (q->cs - 1), host;
		uint64_t run = min64(q->cs - in, len - pos);
		int r, k = classify(q, gc, &host);
		if (k < 0)
			return k;
		pos += run;
		if (k == K_ZERO)
			continue;
		/* Part of a cluster, or a v2 image over a backing file: write real zeroes. */
		if (run < q->cs || (q->backing && q->version < 3)) {
			if ((r = write_zero_bytes(q, g, run)) < 0)
				return r;
			continue;
		}
		/* Whole cluster: unallocated reads as zero without a backing file; else the zero
		 * flag. The reference goes before the refcount. */
		uint64_t e;
		if ((r = l2_get(q, gc, &e)) < 0 ||
		    (r = l2_set(q, gc, q->backing ? OFLAG_ZERO : 0)) < 0)
			return r;
		if ((e & ENTRY_OFFSET) &&
		    (r = refcount_add(q, (e & ENTRY_OFFSET) >> q->cluster_bits, -1)) < 0)
			return r;
	}
	return 0;
}

int kap_qcow2_flush(struct kap_qcow2 *q)
{
	if (!q->ro && fdatasync(q->fd) < 0)
		return -errno;
	return 0;
}

/* ---- open-time checks ---- */

struct scan {
	struct kap_qcow2 *q;
	const char *name;
	uint8_t *bm; /* one bit per cluster of the file */
	uint64_t nbits;
	struct kapsel_error **err;
};

static int mark(struct scan *s, uint64_t off, uint64_t len, const char *what)
{
	struct kap_qcow2 *q = s->q;
	if (off & (q->cs - 1))
		return kap_error_plain(
		    s->err, EINVAL, "%s: %s at 0x%llx is not cluster-aligned (cluster size %llu)",
		    s->name, what, (unsigned long long)off, (unsigned long long)q->cs);
	if (off >= q->file_size || len > q->file_size - off + q->cs - 1)
		return kap_error_plain(s->err, EINVAL,
				       "%s: %s at 0x%llx (%llu bytes) is past the end of the file "
				       "(%llu bytes)",
				       s->name, what, (unsigned long long)off,
				       (unsigned long long)len, (unsigned long long)q->file_size);
	for (uint64_t c = off >> q->cluster_bits; c <= (off + len - 1) >> q->cluster_bits; c++) {
		if (c >= s->nbits || (s->bm[c / 8] & (1u << (c % 8))))
			return kap_error_plain(s->err, EINVAL,
					       "%s: %s at 0x%llx overlaps other metadata or data "
					       "(cluster 0x%llx is used twice)",
					       s->name, what, (unsigned long long)off,
					       (unsigned long long)(c << q->cluster_bits));
		s->bm[c / 8] |= (uint8_t)(1u << (c % 8));
	}
	return 0;
}

/*
 * Marks every cluster the active image references (header, L1, refcount table and blocks,
 * L2 tables, data), checking each entry: alignment, inside the file, no cluster used twice,
 * no compressed clusters, reserved bits clear, COPIED where the image is written.
 */
static int scan(struct scan *s)
{
	struct kap_qcow2 *q = s->q;
	int r;
	if ((r = mark(s, 0, q->cs, "header")) < 0 ||
	    (r = mark(s, q->l1_offset, (uint64_t)q->l1_size * 8, "L1 table")) < 0 ||
	    (r = mark(s, q->reftable_offset, (uint64_t)q->reftable_clusters * q->cs,
		      "refcount table")) < 0)
		return r;
	for (uint64_t i = 0; i < q->reftable_entries; i++) {
		uint64_t e = q->reftable[i];
		if (e & REFT_RESERVED)
			return kap_error_plain(
			    s->err, EINVAL,
			    "%s: refcount table entry %llu has reserved bits set "
			    "(0x%llx)",
			    s->name, (unsigned long long)i, (unsigned long long)e);
		if (e && (r = mark(s, e, q->cs, "refcount block")) < 0)
			return r;
	}
	uint64_t per = q->cs / 8;
	for (uint64_t i = 0; i < q->l1_size; i++) {
		uint64_t e = q->l1[i], off = e & ENTRY_OFFSET;
		if (e & L1E_RESERVED)
			return kap_error_plain(
			    s->err, EINVAL, "%s: L1 entry %llu has reserved bits set (0x%llx)",
			    s->name, (unsigned long long)i, (unsigned long long)e);
		if (!off)
			continue;
		if ((r = mark(s, off, q->cs, "L2 table")) < 0)
			return r;
		if (!q->ro && !(e & OFLAG_COPIED))
			return kap_error_plain(s->err, EINVAL,
					       "%s: L2 table at 0x%llx is shared (no COPIED flag); "
					       "cannot write to it",
					       s->name, (unsigned long long)off);
		if ((r = meta_read(q, q->cow, q->cs, off)) < 0)
			return kap_error(s->err, -r, "%s: read L2 table at 0x%llx", s->name,
					 (unsigned long long)off);
		for (uint64_t j = 0; j < per; j++) {
			uint64_t l2 = be64toh(((uint64_t *)(void *)q->cow)[j]);
			uint64_t guest = ((i * per) + j) << q->cluster_bits, d = l2 & ENTRY_OFFSET;
			if (l2 & OFLAG_COMPRESSED)
				return kap_error_plain(
				    s->err, ENOTSUP,
				    "%s: compressed cluster at guest offset 0x%llx: "
				    "compressed clusters are not supported "
				    "(qemu-img convert -O qcow2 writes an "
				    "uncompressed copy)",
				    s->name, (unsigned long long)guest);
			if ((l2 & L2E_RESERVED) || (q->version < 3 && (l2 & OFLAG_ZERO)))
				return kap_error_plain(s->err, EINVAL,
						       "%s: L2 entry for guest offset 0x%llx has "
						       "reserved bits set (0x%llx)",
						       s->name, (unsigned long long)guest,
						       (unsigned long long)l2);
			if (!d)
				continue;
			if ((r = mark(s, d, q->cs, "data cluster")) < 0)
				return r;
			if (!q->ro && !(l2 & OFLAG_COPIED))
				return kap_error_plain(s->err, EINVAL,
						       "%s: data cluster at 0x%llx is shared (no "
						       "COPIED flag); cannot write to it",
						       s->name, (unsigned long long)d);
		}
	}
	return 0;
}

static int scan_init(struct scan *s, struct kap_qcow2 *q, const char *name,
		     struct kapsel_error **err)
{
	*s = (struct scan){.q = q, .name = name, .err = err};
	s->nbits = q->file_end >> q->cluster_bits;
	if (s->nbits / 8 + 1 > MAX_BITMAP_BYTES)
		return kap_error_plain(err, EFBIG,
				       "%s: image file too large to check (%llu clusters)", name,
				       (unsigned long long)s->nbits);
	s->bm = calloc(s->nbits / 8 + 1, 1);
	return s->bm ? 0 : kap_error(err, ENOMEM, "%s", name);
}

int kap_qcow2_check(struct kap_qcow2 *q, struct kapsel_error **err)
{
	struct scan s;
	int r = scan_init(&s, q, "qcow2", err);
	if (r < 0)
		return r;
	cleanup_free uint8_t *bm = s.bm;
	if ((r = scan(&s)) < 0)
		return r;
	for (uint64_t c = 0; c < s.nbits; c++) {
		uint64_t v, want = (bm[c / 8] >> (c % 8)) & 1;
		if ((r = refcount_get(q, c, &v)) < 0)
			return kap_error(err, -r, "refcount of cluster %llu",
					 (unsigned long long)c);
		if (v != want)
			return kap_error_plain(
			    err, EINVAL, "cluster %llu: refcount %llu, %llu references",
			    (unsigned long long)c, (unsigned long long)v, (unsigned long long)want);
	}
	/* Nothing counted past the end of the file either. */
	for (uint64_t bi = 0; bi < q->reftable_entries; bi++) {
		if (!q->reftable[bi])
			continue;
		uint64_t c = bi << q->rb_bits, end = (bi + 1) << q->rb_bits, v;
		for (c = c < s.nbits ? s.nbits : c; c < end; c++) {
			if ((r = refcount_get(q, c, &v)) < 0)
				return kap_error(err, -r, "refcount of cluster %llu",
						 (unsigned long long)c);
			if (v)
				return kap_error_plain(err, EINVAL,
						       "cluster %llu past the end of the file has "
						       "refcount %llu",
						       (unsigned long long)c,
						       (unsigned long long)v);
		}
	}
	return 0;
}

/* ---- header ---- */

static uint32_t be32_at(const uint8_t *h, size_t off)
{
	uint32_t v;
	memcpy(&v, h + off, 4);
	return be32toh(v);
}

static uint64_t be64_at(const uint8_t *h, size_t off)
{
	uint64_t v;
	memcpy(&v, h + off, 8);
	return be64toh(v);
}

/* The name of incompatible feature bit from the image's feature name table, if it has one. */
static void feature_name(const uint8_t *tbl, uint32_t len, unsigned int bit, char *out, size_t n)
{
	snprintf(out, n, "bit %u", bit);
	for (uint32_t i = 0; tbl && i + 48 <= len; i += 48)
		if (tbl[i] == 0 && tbl[i + 1] == bit) {
			char name[47] = {0};
			memcpy(name, tbl + i + 2, 46);
			for (char *p = name; *p; p++)
				if (*p < 0x20 || *p > 0x7e)
					*p = '?';
			snprintf(out, n, "bit %u, \"%s\"", bit, name);
		}
}

struct header_out {
	char backing[1024];
	char backing_fmt[32];
	enum kap_disk_format backing_format; /* from backing_fmt, when there is a backing file */
};

/*
 * The backing file a header names, checked before anything is opened: the name must stay
 * beneath the image's directory (disk.c opens it with RESOLVE_BENEATH from there), and the
 * format must be given by the backing-format extension ("Header extensions", 0xe2792aca).
 * Without it QEMU probes the base, so a raw base that a guest has written a qcow2 header
 * into would become an image whose backing file the guest chose; kapsel refuses the chain.
 */
static int check_backing(const char *name, struct header_out *ho, struct kapsel_error **err)
{
	int r = kap_disk_check_backing_name(name, ho->backing, err);
	if (r < 0)
		return r;
	if (!ho->backing_fmt[0])
		return kap_error_plain(err, EINVAL,
				       "%s: backing file \"%s\" has no backing format (header "
				       "extension 0xe2792aca): recreate the overlay with kapsel vm "
				       "disk create --backing, or qemu-img create -F",
				       name, ho->backing);
	if (!strcmp(ho->backing_fmt, "raw"))
		ho->backing_format = KAP_DISK_RAW;
	else if (!strcmp(ho->backing_fmt, "qcow2"))
		ho->backing_format = KAP_DISK_QCOW2;
	else
		return kap_error_plain(err, ENOTSUP,
				       "%s: backing file format \"%s\" is not supported (raw or "
				       "qcow2)",
				       name, ho->backing_fmt);
	return 0;
}

static int parse_header(struct kap_qcow2 *q, const char *name, unsigned int flags,
			struct header_out *ho, struct kapsel_error **err)
{
	uint8_t h[V3_HEADER_LEN] = {0};
	if (q->file_size < V2_HEADER_LEN)
		return kap_error_plain(err, EINVAL, "%s: too short for a qcow2 header", name);
	int r = meta_read(q, h, min64(sizeof(h), q->file_size), 0);
	if (r < 0)
		return kap_error(err, -r, "%s: read header", name);
	if (be32_at(h, 0) != QCOW_MAGIC)
		return kap_error_plain(err, EINVAL, "%s: not a qcow2 image (bad magic)", name);
	q->version = be32_at(h, 4);
	if (q->version != 2 && q->version != 3)
		return kap_error_plain(err, ENOTSUP, "%s: unsupported qcow2 version %u", name,
				       q->version);
	uint64_t backing_off = be64_at(h, 8);
	uint32_t backing_len = be32_at(h, 16);
	q->cluster_bits = be32_at(h, 20);
	q->size = be64_at(h, 24);
	uint32_t crypt = be32_at(h, 32);
	q->l1_size = be32_at(h, 36);
	q->l1_offset = be64_at(h, 40);
	q->reftable_offset = be64_at(h, 48);
	q->reftable_clusters = be32_at(h, 56);
	q->nb_snapshots = be32_at(h, 60);
	uint64_t snap_off = be64_at(h, 64);
	uint32_t hlen = V2_HEADER_LEN;
	q->refcount_order = 4;
	if (q->cluster_bits < 9 || q->cluster_bits > 21)
		return kap_error_plain(err, EINVAL,
				       "%s: cluster_bits %u out of range (9 to 21: 512 B to 2 MiB)",
				       name, q->cluster_bits);
	q->cs = 1ULL << q->cluster_bits;
	if (q->version == 3) {
		if (q->file_size < V3_HEADER_LEN)
			return kap_error_plain(err, EINVAL, "%s: too short for a v3 header", name);
		q->incompat = be64_at(h, 72);
		q->refcount_order = be32_at(h, 96);
		hlen = be32_at(h, 100);
		if (hlen < V3_HEADER_LEN || hlen > q->cs || hlen % 8)
			return kap_error_plain(
			    err, EINVAL,
			    "%s: header length %u out of range (104 to the cluster "
			    "size, a multiple of 8)",
			    name, hlen);
		if (q->refcount_order > 6)
			return kap_error_plain(err, EINVAL,
					       "%s: refcount_order %u out of range (0-6)", name,
					       q->refcount_order);
	}
	if (crypt)
		return kap_error_plain(err, ENOTSUP,
				       "%s: encrypted image (crypt_method %u): encryption is not "
				       "supported",
				       name, crypt);
	q->l2_bits = q->cluster_bits - 3;
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;

	/* The header cluster: extensions and the backing file name live in it. */
	uint64_t hc = min64(q->cs, q->file_size);
	if ((r = meta_read(q, q->cow, hc, 0)) < 0)
		return kap_error(err, -r, "%s: read header", name);
	if (backing_off) {
		if (backing_len == 0 || backing_len > 1023)
			return kap_error_plain(err, EINVAL,
					       "%s: backing file name length %u out of range (1 to "
					       "1023)",
					       name, backing_len);
		if (backing_off < hlen || backing_off > hc || backing_len > hc - backing_off)
			return kap_error_plain(
			    err, EINVAL,
			    "%s: backing file name at %llu is outside the header "
			    "cluster",
			    name, (unsigned long long)backing_off);
		memcpy(ho->backing, q->cow + backing_off, backing_len);
		ho->backing[backing_len] = 0;
		if (strlen(ho->backing) != backing_len)
			return kap_error_plain(err, EINVAL, "%s: backing file name contains a NUL",
					       name);
	}
	const uint8_t *features = NULL;
	uint32_t features_len = 0;
	uint64_t end = backing_off ? backing_off : hc;
	for (uint64_t p = hlen; p + 8 <= end;) {
		uint32_t type = be32_at(q->cow, p), len = be32_at(q->cow, p + 4);
		if (type == EXT_END)
			break;
		if (len > end - p - 8)
			return kap_error_plain(
			    err, EINVAL,
			    "%s: header extension 0x%08x (%u bytes) runs past the "
			    "header",
			    name, type, len);
		if (type == EXT_BACKING_FORMAT) {
			if (len >= sizeof(ho->backing_fmt))
				return kap_error_plain(err, EINVAL,
						       "%s: backing format name too long", name);
			memcpy(ho->backing_fmt, q->cow + p + 8, len);
			ho->backing_fmt[len] = 0;
		} else if (type == EXT_FEATURE_TABLE) {
			features = q->cow + p + 8;
			features_len = len;
		}
		p += 8 + (((uint64_t)len + 7) & ~7ULL);
	}

	/* Incompatible features ("Header", bytes 72-79): all but the dirty bit refused. */
	static const struct {
		uint64_t bit;
		const char *what;
	} refused[] = {
	    {INCOMPAT_CORRUPT, "the image is marked corrupt (run qemu-img check -r all)"},
	    {INCOMPAT_DATA_FILE, "external data files are not supported"},
	    {INCOMPAT_EXTL2, "extended L2 entries (subclusters) are not supported"},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(refused); i++)
		if (q->incompat & refused[i].bit)
			return kap_error_plain(err, ENOTSUP, "%s: %s", name, refused[i].what);
	/* A non-zlib compression type only matters for compressed clusters, refused anyway. */
	uint64_t unknown = q->incompat & ~(INCOMPAT_DIRTY | INCOMPAT_COMPRESSION);
	if (unknown) {
		char fname[80];
		feature_name(features, features_len, (unsigned int)__builtin_ctzll(unknown), fname,
			     sizeof(fname));
		return kap_error_plain(err, ENOTSUP, "%s: unknown incompatible feature (%s)", name,
				       fname);
	}
	if ((q->incompat & INCOMPAT_DIRTY) && !q->ro)
		return kap_error_plain(err, EINVAL,
				       "%s: the image is dirty (not closed cleanly): run qemu-img "
				       "check -r all before writing to it",
				       name);
	if (q->nb_snapshots && !q->ro)
		return kap_error_plain(err, ENOTSUP,
				       "%s: the image has %u internal snapshots: writing to it is "
				       "not supported (open it read-only)",
				       name, q->nb_snapshots);
	if (q->nb_snapshots > MAX_SNAPSHOTS ||
	    (q->nb_snapshots && (snap_off & (q->cs - 1) || snap_off >= q->file_size)))
		return kap_error_plain(err, EINVAL, "%s: snapshot table invalid", name);
	if (backing_off && (r = check_backing(name, ho, err)) < 0)
		return r;
	if (backing_off && (flags & KAP_DISK_NO_BACKING))
		return kap_error_plain(err, EPERM, "%s: backing files are not allowed here", name);

	/* Sizes: L1 must cover the virtual size and stay within QEMU's bounds. */
	uint64_t per_l2 = q->cs * (q->cs / 8);
	if (q->size > (1ULL << 61))
		return kap_error_plain(err, EINVAL, "%s: virtual size %llu too large", name,
				       (unsigned long long)q->size);
	uint64_t need = (q->size + per_l2 - 1) / per_l2;
	if ((uint64_t)q->l1_size * 8 > MAX_L1_BYTES || need * 8 > MAX_L1_BYTES)
		return kap_error_plain(err, EINVAL,
				       "%s: L1 table of %u entries too large (at most %llu)", name,
				       q->l1_size, MAX_L1_BYTES / 8);
	if (q->l1_size < need)
		return kap_error_plain(err, EINVAL,
				       "%s: L1 table of %u entries too small for the virtual size "
				       "%llu (needs %llu)",
				       name, q->l1_size, (unsigned long long)q->size,
				       (unsigned long long)need);
	if (q->reftable_clusters == 0 ||
	    (uint64_t)q->reftable_clusters * q->cs > MAX_REFTABLE_BYTES)
		return kap_error_plain(err, EINVAL,
				       "%s: refcount table of %u clusters out of range (1 to %llu "
				       "bytes)",
				       name, q->reftable_clusters, MAX_REFTABLE_BYTES);
	if (q->l1_offset & (q->cs - 1) || q->reftable_offset & (q->cs - 1))
		return kap_error_plain(err, EINVAL, "%s: %s at 0x%llx is not cluster-aligned", name,
				       q->l1_offset & (q->cs - 1) ? "L1 table" : "refcount table",
				       (unsigned long long)(q->l1_offset & (q->cs - 1)
								? q->l1_offset
								: q->reftable_offset));
	if (q->l1_offset > q->file_size || (uint64_t)q->l1_size * 8 > q->file_size - q->l1_offset)
		return kap_error_plain(err, EINVAL,
				       "%s: L1 table at 0x%llx (%u entries) is past the end of the "
				       "file (%llu bytes)",
				       name, (unsigned long long)q->l1_offset, q->l1_size,
				       (unsigned long long)q->file_size);
	uint64_t rt_bytes = (uint64_t)q->reftable_clusters * q->cs;
	if (q->reftable_offset > q->file_size || rt_bytes > q->file_size - q->reftable_offset)
		return kap_error_plain(err, EINVAL,
				       "%s: refcount table at 0x%llx (%u clusters) is past the end "
				       "of the file (%llu bytes)",
				       name, (unsigned long long)q->reftable_offset,
				       q->reftable_clusters, (unsigned long long)q->file_size);
	return 0;
}

static int load_tables(struct kap_qcow2 *q, const char *name, struct kapsel_error **err)
{
	q->l1 = calloc(q->l1_size ? q->l1_size : 1, 8);
	q->reftable_entries = (uint64_t)q->reftable_clusters * q->cs / 8;
	q->reftable = calloc(q->reftable_entries, 8);
	if (!q->l1 || !q->reftable)
		return kap_error(err, ENOMEM, "%s", name);
	int r;
	if ((r = meta_read(q, q->l1, (size_t)q->l1_size * 8, q->l1_offset)) < 0)
		return kap_error(err, -r, "%s: read L1 table", name);
	if ((r = meta_read(q, q->reftable, q->reftable_entries * 8, q->reftable_offset)) < 0)
		return kap_error(err, -r, "%s: read refcount table", name);
	for (uint64_t i = 0; i < q->l1_size; i++)
		q->l1[i] = be64toh(q->l1[i]);
	for (uint64_t i = 0; i < q->reftable_entries; i++)
		q->reftable[i] = be64toh(q->reftable[i]);
	return 0;
}

static void qcow2_free(struct kap_qcow2 *q)
{
	if (!q)
		return;
	if (q->backing)
		kap_disk_close(q->backing);
	tcache_free(&q->l2c);
	tcache_free(&q->rbc);
	free(q->l1);
	free(q->reftable);
	free(q->cow);
	free(q);
}

static void qcow2_freep(struct kap_qcow2 **q)
{
	qcow2_free(*q);
}

int kap_qcow2_open(struct kap_qcow2 **out, struct kap_disk *d, const char *name, int dirfd,
		   unsigned int flags, struct kap_disk_chain *chain, uint64_t *size,
		   struct kapsel_error **err)
{
	__attribute__((cleanup(qcow2_freep))) struct kap_qcow2 *q = calloc(1, sizeof(*q));
	if (!q)
		return kap_error(err, ENOMEM, "%s", name);
	q->fd = d->fd_buffered >= 0 ? d->fd_buffered : d->fd;
	q->dfd = d->fd;
	q->ro = d->ro;
	struct stat st;
	if (fstat(q->fd, &st) < 0)
		return kap_error(err, errno, "stat %s", name);
	q->file_size = (uint64_t)st.st_size;
	/* Room for the largest cluster until the header says which; aligned for O_DIRECT. */
	if (posix_memalign((void **)&q->cow, 4096, 2u << 20))
		return kap_error(err, ENOMEM, "%s", name);
	struct header_out ho = {0};
	int r = parse_header(q, name, flags, &ho, err);
	if (r < 0)
		return r;
	q->file_end = (q->file_size + q->cs - 1) & ~(q->cs - 1);
	if ((r = load_tables(q, name, err)) < 0)
		return r;
	/* Snapshots share clusters with the active tables: checking overlaps needs them all. */
	if (!q->nb_snapshots) {
		struct scan s;
		if ((r = scan_init(&s, q, name, err)) < 0)
			return r;
		r = scan(&s);
		free(s.bm);
		if (r < 0)
			return r;
	}
	unsigned int n = (unsigned int)(L2_CACHE_BYTES / q->cs);
	n = n < L2_CACHE_MIN ? L2_CACHE_MIN : n > L2_CACHE_MAX ? L2_CACHE_MAX : n;
	if (tcache_init(&q->l2c, n, q->cs) < 0 || tcache_init(&q->rbc, RB_CACHE, q->cs) < 0)
		return kap_error(err, ENOMEM, "%s", name);
	if (ho.backing[0]) {
		/* The base is only read: opened read-only, buffered, whatever the top's mode. */
		r = kap_disk_open(&q->backing, dirfd, ho.backing, ho.backing_format, true, false,
				  flags | KAP_DISK_BENEATH, chain, err);
		if (r < 0)
			return kap_error_wrap(err, "%s: backing file", name);
	}
	*size = q->size;
	*out = steal_ptr(q);
	return 0;
}

void kap_qcow2_close(struct kap_qcow2 *q)
{
	if (!q)
		return;
	/* Clean close: everything on disk first, then the dirty bit cleared (durably). */
	if (q->dirty && fdatasync(q->fd) == 0) {
		uint64_t be = htobe64(q->incompat & ~INCOMPAT_DIRTY);
		if (raw_write(q->fd, &be, 8, 72) == 0)
			(void)fdatasync(q->fd);
	}
	qcow2_free(q);
}

/* ---- creation ---- */

static void put32(uint8_t *b, size_t off, uint32_t v)
{
	v = htobe32(v);
	memcpy(b + off, &v, 4);
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
	v = htobe64(v);
	memcpy(b + off, &v, 8);
}

int kap_qcow2_create(int fd, const char *name, uint64_t size, const char *backing,
		     const char *backing_fmt, struct kapsel_error **err)
{
	/* Layout: header, refcount table, refcount block 0, L1 table; one cluster each or more. */
	const unsigned int cb = 16;
	const uint64_t cs = 1ULL << cb, per_l2 = cs * (cs / 8);
	size = (size + 511) & ~511ULL;
	uint64_t l1_size = (size + per_l2 - 1) / per_l2;
	if (size == 0 || size > (1ULL << 61) || l1_size * 8 > MAX_L1_BYTES)
		return kap_error_plain(err, EINVAL,
				       "%s: size %llu out of range (512 B to %llu TiB)", name,
				       (unsigned long long)size, (MAX_L1_BYTES / 8 * per_l2) >> 40);
	if (backing && (strlen(backing) > 1023 || strlen(backing_fmt) > 16))
		return kap_error_plain(err, EINVAL, "%s: backing file name too long (at most 1023)",
				       name);
	uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs, total = 3 + l1_clusters;
	cleanup_free uint8_t *buf = calloc(3, cs);
	if (!buf)
		return kap_error(err, ENOMEM, "%s", name);
	uint8_t *h = buf;
	put32(h, 0, QCOW_MAGIC);
	put32(h, 4, 3);
	put32(h, 20, cb);
	put64(h, 24, size);
	put32(h, 36, (uint32_t)l1_size);
	put64(h, 40, 3 * cs);
	put64(h, 48, cs);
	put32(h, 56, 1);
	put32(h, 96, 4);
	put32(h, 100, V3_HEADER_LEN);
	size_t p = V3_HEADER_LEN;
	if (backing) {
		size_t fl = strlen(backing_fmt);
		put32(h, p, EXT_BACKING_FORMAT);
		put32(h, p + 4, (uint32_t)fl);
		memcpy(h + p + 8, backing_fmt, fl);
		p += 8 + ((fl + 7) & ~7ULL);
	}
	p += 8; /* end of extensions: type 0, length 0 */
	if (backing) {
		put64(h, 8, p);
		put32(h, 16, (uint32_t)strlen(backing));
		memcpy(h + p, backing, strlen(backing));
	}
	put64(buf + cs, 0, 2 * cs); /* refcount table entry 0: the block */
	for (uint64_t c = 0; c < total; c++) {
		buf[2 * cs + 2 * c] = 0;
		buf[2 * cs + 2 * c + 1] = 1;
	}
	int r = raw_write(fd, buf, 3 * cs, 0);
	if (r < 0)
		return kap_error(err, -r, "write %s", name);
	if (ftruncate(fd, (off_t)(total * cs)) < 0 || fsync(fd) < 0)
		return kap_error(err, errno, "write %s", name);
	return 0;
}
