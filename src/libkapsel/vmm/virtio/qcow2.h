/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 images (QEMU's docs/interop/qcow2.txt, versions 2 and 3) for virtio-blk: reads and
 * writes, allocation with copy-on-write from the backing file, refcounts, zero clusters,
 * discard. The header and every table are checked when the image is opened; see qcow2.c.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <kapsel/error.h>

#include "vmm/virtio/disk.h"

struct kap_qcow2;

/*
 * Opens the image in d->fd (d->fd_buffered, when set, is used for metadata and unaligned data).
 * name is for messages; dirfd is the image's directory: a backing file must be named relative
 * to it and beneath it (no "..", not absolute), resolved with RESOLVE_BENEATH, be a regular
 * file, and have its format in the backing-format extension. Sets *size to the virtual size.
 */
int kap_qcow2_open(struct kap_qcow2 **out, struct kap_disk *d, const char *name, int dirfd,
		   unsigned int flags, struct kap_disk_chain *chain, uint64_t *size,
		   struct kapsel_error **err);
/* Clears the dirty bit after a final flush (writable v3 images). */
void kap_qcow2_close(struct kap_qcow2 *q);

int kap_qcow2_readv(struct kap_qcow2 *q, const struct iovec *iov, int n, uint64_t off,
		    uint64_t len);
int kap_qcow2_writev(struct kap_qcow2 *q, const struct iovec *iov, int n, uint64_t off,
		     uint64_t len);
int kap_qcow2_flush(struct kap_qcow2 *q);
/* discard and write-zeroes: [off, off+len) reads as zeroes afterwards. */
int kap_qcow2_zero(struct kap_qcow2 *q, uint64_t off, uint64_t len);

/*
 * Consistency check for tests and the fuzzer: every cluster's refcount equals the number of
 * references to it from the header, the tables and the L2 entries (images without internal
 * snapshots). 0, or -EINVAL with the first mismatch in *err.
 */
int kap_qcow2_check(struct kap_qcow2 *q, struct kapsel_error **err);

/*
 * Writes a new v3 image (64 KiB clusters, 16-bit refcounts) of size bytes into fd, which is
 * empty. backing/backing_fmt ("raw" or "qcow2"): the backing file name as recorded, or NULL.
 */
int kap_qcow2_create(int fd, const char *name, uint64_t size, const char *backing,
		     const char *backing_fmt, struct kapsel_error **err);
