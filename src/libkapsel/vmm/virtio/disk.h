/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A virtio-blk backend: a raw file or block device, or a qcow2 image (qcow2.c) with its chain
 * of backing files. blk.c calls these instead of preadv/pwritev so the image format stays out
 * of the device model. Every call runs on the disk's device thread; none takes a lock. Errors
 * are -errno; the data-plane calls (readv .. write_zeroes) never allocate, except a qcow2
 * image growing its refcount table.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <kapsel/error.h>

/* The most iovecs one readv/writev call takes (blk.c builds at most a queue's worth). */
#define KAP_DISK_MAX_IOV 256
/* The longest backing chain accepted, the top image included. */
#define KAP_DISK_MAX_CHAIN 16

enum kap_disk_format {
	KAP_DISK_PROBE, /* qcow2 when the file starts with the qcow2 magic, raw otherwise; only
			   for an explicit format=auto and `vm disk create` without a base format */
	KAP_DISK_RAW,
	KAP_DISK_QCOW2,
};

struct kap_qcow2;

struct kap_disk {
	enum kap_disk_format format; /* KAP_DISK_RAW or KAP_DISK_QCOW2 once open */
	int fd;			     /* the file; O_DIRECT with cache=none */
	int fd_buffered;	     /* cache=none: a buffered twin (unaligned I/O, metadata) */
	bool ro;
	uint64_t size; /* bytes the guest sees */
	struct kap_qcow2 *qcow2;
};

/* The files already open in a chain: backing-file loops and over-deep chains are refused. */
struct kap_disk_chain {
	unsigned int depth;
	dev_t dev[KAP_DISK_MAX_CHAIN];
	ino_t ino[KAP_DISK_MAX_CHAIN];
};

/* Options. */
#define KAP_DISK_NO_BACKING 1u /* refuse a qcow2 image that names a backing file (fuzzer) */
/*
 * path is a backing file name from an image header: resolved beneath dirfd (openat2
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), and only a regular file is opened. qcow2.c sets it
 * for every backing file; the name itself is checked by kap_disk_check_backing_name.
 */
#define KAP_DISK_BENEATH 2u

/*
 * A backing file name as an image records it: relative to the image's directory and beneath
 * it (not absolute, no ".." component). 0, or -EINVAL with a message naming image and name.
 */
int kap_disk_check_backing_name(const char *image, const char *name, struct kapsel_error **err);

/*
 * Opens path (relative to dirfd, AT_FDCWD for the top image) as format. direct: O_DIRECT.
 * chain may be NULL for a top image. Errors name path and the problem.
 */
int kap_disk_open(struct kap_disk **out, int dirfd, const char *path, enum kap_disk_format format,
		  bool ro, bool direct, unsigned int flags, struct kap_disk_chain *chain,
		  struct kapsel_error **err);
void kap_disk_close(struct kap_disk *d);

struct kapsel_vm_disk;
/*
 * Opens a --disk as its format= says; without format=, raw, with a warning (kap_warn) naming the
 * file when it starts with the qcow2 magic (it is served raw all the same).
 */
bool kap_disk_has_qcow2_magic(struct kap_disk *d);
int kap_disk_open_config(struct kap_disk **out, const struct kapsel_vm_disk *disk,
			 struct kapsel_error **err);

/* Whole transfers of the iovecs' total length at byte offset off; -EIO past the end. */
int kap_disk_readv(struct kap_disk *d, const struct iovec *iov, int n, uint64_t off);
int kap_disk_writev(struct kap_disk *d, const struct iovec *iov, int n, uint64_t off);
int kap_disk_flush(struct kap_disk *d);
/* Both leave [off, off+len) reading as zeroes and give the space back where they can. */
int kap_disk_discard(struct kap_disk *d, uint64_t off, uint64_t len);
int kap_disk_write_zeroes(struct kap_disk *d, uint64_t off, uint64_t len);

/* preadv/pwritev of exactly the iovecs' bytes; -EIO on a short transfer. Consumes iov. */
int kap_disk_io_full(int fd, int fd_fallback, bool write, struct iovec *iov, int n, uint64_t off);
