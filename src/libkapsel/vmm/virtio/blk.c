/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk (virtio 1.2 §5.2) over a raw image file, a block device or a qcow2 image (the
 * backends are disk.c and qcow2.c). Requests run on the device thread straight into guest
 * buffers; the lock is dropped around the I/O, so register accesses from vCPUs never wait for
 * the disk. discard and write-zeroes leave zeroes behind (holes, or qcow2 zero clusters). A
 * read-only disk answers writes with IOERR.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/virtio/disk.h"
#include "vmm/virtio/transport.h"

#define SECTOR 512ULL
/* Requests taken per wake-up before completing them. */
#define BATCH 8
/* Largest discard / write-zeroes range list accepted (segments of 16 bytes). */
#define MAX_DWZ_SEG 16

struct blk {
	struct kap_disk *disk;
	bool ro;
	uint64_t sectors;
	char serial[VIRTIO_BLK_ID_BYTES];
	struct virtio_blk_config config;
	struct kap_vq_elem elem[BATCH];
};

static void blk_config_read(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len)
{
	struct blk *b = d->priv;
	memcpy(data, (const uint8_t *)&b->config + off, len);
}

/*
 * The iovecs for len bytes of e's readable (write=false) or writable buffers from offset skip.
 * Returns the count, or -1 when the buffers hold fewer bytes.
 */
static int build_iov(const struct kap_vq_elem *e, bool write, uint64_t skip, uint64_t len,
		     struct iovec *iov)
{
	int n = 0;
	unsigned int from = write ? e->nread : 0, to = write ? e->nseg : e->nread;
	for (unsigned int i = from; i < to && len; i++) {
		const struct kap_vq_seg *s = &e->seg[i];
		if (skip >= s->len) {
			skip -= s->len;
			continue;
		}
		uint64_t take = s->len - skip;
		if (take > len)
			take = len;
		iov[n++] = (struct iovec){.iov_base = s->host + skip, .iov_len = take};
		len -= take;
		skip = 0;
	}
	return len ? -1 : n;
}

static uint8_t do_discard(struct blk *b, const struct kap_vq_elem *e, bool zeroes)
{
	uint64_t n = (e->read_len - sizeof(struct virtio_blk_outhdr));
	if (n == 0 || n % sizeof(struct virtio_blk_discard_write_zeroes) ||
	    n / sizeof(struct virtio_blk_discard_write_zeroes) > MAX_DWZ_SEG)
		return VIRTIO_BLK_S_IOERR;
	for (uint64_t i = 0; i < n / sizeof(struct virtio_blk_discard_write_zeroes); i++) {
		struct virtio_blk_discard_write_zeroes r;
		kap_vq_elem_read(e, sizeof(struct virtio_blk_outhdr) + i * sizeof(r), &r,
				 sizeof(r));
		if (r.sector > b->sectors || r.num_sectors > b->sectors - r.sector)
			return VIRTIO_BLK_S_IOERR;
		uint64_t off = r.sector * SECTOR, len = r.num_sectors * SECTOR;
		int rc = zeroes ? kap_disk_write_zeroes(b->disk, off, len)
				: kap_disk_discard(b->disk, off, len);
		if (rc < 0)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

/* One request (§5.2.6): header, data, status byte. Returns bytes written to the driver. */
static uint32_t handle(struct blk *b, const struct kap_vq_elem *e, uint8_t *status)
{
	struct virtio_blk_outhdr h;
	struct iovec iov[KAP_VQ_MAX_SIZE];
	*status = VIRTIO_BLK_S_IOERR;
	if (kap_vq_elem_read(e, 0, &h, sizeof(h)) != sizeof(h))
		return 1;
	uint64_t data_in = e->write_len - 1; /* the status byte is the last writable byte */
	uint64_t data_out = e->read_len - sizeof(h);
	switch (h.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool write = h.type == VIRTIO_BLK_T_OUT;
		uint64_t len = write ? data_out : data_in;
		if (write && b->ro)
			return 1;
		if (len % SECTOR || h.sector > b->sectors || len / SECTOR > b->sectors - h.sector)
			return 1;
		int n = build_iov(e, write ? false : true, write ? sizeof(h) : 0, len, iov);
		if (n < 0 || (write ? kap_disk_writev(b->disk, iov, n, h.sector * SECTOR)
				    : kap_disk_readv(b->disk, iov, n, h.sector * SECTOR)) < 0)
			return 1;
		*status = VIRTIO_BLK_S_OK;
		return write ? 1 : (uint32_t)len + 1;
	}
	case VIRTIO_BLK_T_FLUSH:
		if (kap_disk_flush(b->disk) < 0)
			return 1;
		*status = VIRTIO_BLK_S_OK;
		return 1;
	case VIRTIO_BLK_T_GET_ID: {
		uint64_t n = data_in < sizeof(b->serial) ? data_in : sizeof(b->serial);
		kap_vq_elem_write(e, 0, b->serial, n);
		*status = VIRTIO_BLK_S_OK;
		return (uint32_t)n + 1;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (b->ro)
			return 1;
		*status = do_discard(b, e, h.type == VIRTIO_BLK_T_WRITE_ZEROES);
		return 1;
	}
	*status = VIRTIO_BLK_S_UNSUPP;
	return 1;
}

static void blk_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct blk *b = d->priv;
	for (;;) {
		unsigned int n = 0;
		pthread_mutex_lock(&d->lock);
		uint32_t gen = d->generation;
		while (n < BATCH && kap_virtio_pop(d, q, &b->elem[n]) > 0)
			n++;
		pthread_mutex_unlock(&d->lock);
		if (n == 0)
			return;
		uint32_t used[BATCH];
		uint8_t status[BATCH];
		for (unsigned int i = 0; i < n; i++) {
			const struct kap_vq_elem *e = &b->elem[i];
			/* §5.2.6.1: at least a header and a status byte. */
			if (e->read_len < sizeof(struct virtio_blk_outhdr) || e->write_len < 1) {
				used[i] = 0;
				status[i] = 0xff;
				continue;
			}
			used[i] = handle(b, e, &status[i]);
		}
		pthread_mutex_lock(&d->lock);
		if (d->generation == gen) {
			for (unsigned int i = 0; i < n; i++) {
				const struct kap_vq_elem *e = &b->elem[i];
				if (status[i] == 0xff) {
					kap_virtio_needs_reset(d, q,
							       "block request without header "
							       "or status byte");
					break;
				}
				kap_vq_elem_write(e, e->write_len - 1, &status[i], 1);
				kap_vq_push(&d->vq[q], e->head, used[i]);
			}
			kap_virtio_notify(d, q);
		}
		pthread_mutex_unlock(&d->lock);
	}
}

static void blk_free(struct kap_virtio_dev *d)
{
	struct blk *b = d->priv;
	if (!b)
		return;
	kap_disk_close(b->disk);
	free(b);
	d->priv = NULL;
}

/*
 * Snapshots: nothing is in flight (the device is quiesced and every request completes before
 * process returns), so the state is the disk's identity, which a restore checks, after a
 * flush so that the image file holds everything the guest was told is written.
 */
struct blk_state {
	uint64_t sectors;
	uint8_t ro, pad[7];
};

static int blk_save(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why)
{
	struct blk *b = d->priv;
	struct blk_state st = {.sectors = b->sectors, .ro = b->ro};
	if (cap < sizeof(st)) {
		*why = "no room for virtio-blk state";
		return -1;
	}
	if (!b->ro && kap_disk_flush(b->disk) < 0) {
		*why = "flushing the disk image failed";
		return -1;
	}
	memcpy(buf, &st, sizeof(st));
	return (int)sizeof(st);
}

static int blk_load(struct kap_virtio_dev *d, const uint8_t *buf, size_t len, const char **why)
{
	struct blk *b = d->priv;
	struct blk_state st;
	if (len != sizeof(st)) {
		*why = "bad virtio-blk state";
		return -1;
	}
	memcpy(&st, buf, sizeof(st));
	if (st.sectors != b->sectors) {
		*why = "a disk of another size";
		return -1;
	}
	if (!st.ro != !b->ro) {
		*why = st.ro ? "a writable disk where the snapshot's was read-only"
			     : "a read-only disk where the snapshot's was writable";
		return -1;
	}
	return 0;
}

static const struct kap_virtio_ops blk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .nqueues = 1,
    .config_len = sizeof(struct virtio_blk_config),
    .poll_ns = 32000,
    .config_read = blk_config_read,
    .process = blk_process,
    .free = blk_free,
    .save = blk_save,
    .load = blk_load,
};

int kap_virtio_blk_new(struct kap_virtio_dev *d, const struct kapsel_vm_disk *disk,
		       const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	return kap_virtio_blk_new_disk(d, disk, NULL, mem, err);
}

int kap_virtio_blk_new_disk(struct kap_virtio_dev *d, const struct kapsel_vm_disk *disk,
			    struct kap_disk *opened, const struct kap_guest_mem *mem,
			    struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &blk_ops, disk->id, mem, err);
	if (r < 0) {
		kap_disk_close(opened);
		return r;
	}
	struct blk *b = calloc(1, sizeof(*b));
	if (!b) {
		kap_disk_close(opened);
		return kap_error(err, ENOMEM, "%s", disk->id);
	}
	b->ro = disk->ro;
	d->priv = b;
	b->disk = opened;
	if (!opened && (r = kap_disk_open_config(&b->disk, disk, err)) < 0)
		return r;
	uint64_t size = b->disk->size;
	b->sectors = size / SECTOR;
	/* §5.2.6: the id is 20 bytes, NUL-padded, unterminated when all 20 are used. */
	if (disk->serial)
		memcpy(b->serial, disk->serial, strnlen(disk->serial, sizeof(b->serial)));
	d->features |= (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
		       (1ULL << VIRTIO_BLK_F_BLK_SIZE);
	if (disk->ro)
		d->features |= 1ULL << VIRTIO_BLK_F_RO;
	else
		d->features |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	struct virtio_blk_config *c = &b->config;
	c->capacity = b->sectors;
	/* A chain holds the header and the status too; §5.2.4. */
	c->seg_max = KAP_VQ_MAX_SIZE - 2;
	c->blk_size = SECTOR;
	c->num_queues = 1;
	c->max_discard_sectors = UINT32_MAX;
	c->max_discard_seg = MAX_DWZ_SEG;
	c->discard_sector_alignment = 8;
	c->max_write_zeroes_sectors = UINT32_MAX;
	c->max_write_zeroes_seg = MAX_DWZ_SEG;
	c->write_zeroes_may_unmap = 1;
	return 0;
}
