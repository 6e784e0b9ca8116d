/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk backends: raw files and block devices (preadv/pwritev straight into guest
 * buffers; discard and write-zeroes punch holes), and qcow2 images (qcow2.c). Also
 * `kapsel vm disk create`.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/vm.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/virtio/disk.h"
#include "vmm/virtio/qcow2.h"

#define API __attribute__((visibility("default")))

#define SECTOR 512ULL

int kap_disk_io_full(int fd, int fd_fallback, bool write, struct iovec *iov, int n, uint64_t off)
{
	while (n > 0) {
		ssize_t r =
		    write ? pwritev(fd, iov, n, (off_t)off) : preadv(fd, iov, n, (off_t)off);
		/* O_DIRECT refuses unaligned guest buffers: the buffered twin takes them. */
		if (r < 0 && errno == EINVAL && fd_fallback >= 0)
			r = write ? pwritev(fd_fallback, iov, n, (off_t)off)
				  : preadv(fd_fallback, iov, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* Short reads past the end of a block device are errors, not zeroes. */
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static uint64_t iov_len(const struct iovec *iov, int n)
{
	uint64_t len = 0;
	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	return len;
}

static int raw_rw(struct kap_disk *d, bool write, const struct iovec *iov, int n, uint64_t off)
{
	struct iovec copy[KAP_DISK_MAX_IOV];
	uint64_t len = iov_len(iov, n);
	if (n > KAP_DISK_MAX_IOV)
		return -EINVAL;
	if (off > d->size || len > d->size - off)
		return -EIO;
	memcpy(copy, iov, (size_t)n * sizeof(*iov));
	return kap_disk_io_full(d->fd, d->fd_buffered, write, copy, n, off);
}

int kap_disk_readv(struct kap_disk *d, const struct iovec *iov, int n, uint64_t off)
{
	if (n > KAP_DISK_MAX_IOV)
		return -EINVAL;
	if (d->qcow2)
		return kap_qcow2_readv(d->qcow2, iov, n, off, iov_len(iov, n));
	return raw_rw(d, false, iov, n, off);
}

int kap_disk_writev(struct kap_disk *d, const struct iovec *iov, int n, uint64_t off)
{
	if (d->ro)
		return -EROFS;
	if (n > KAP_DISK_MAX_IOV)
		return -EINVAL;
	if (d->qcow2)
		return kap_qcow2_writev(d->qcow2, iov, n, off, iov_len(iov, n));
	return raw_rw(d, true, iov, n, off);
}

int kap_disk_flush(struct kap_disk *d)
{
	if (d->ro)
		return 0;
	if (d->qcow2)
		return kap_qcow2_flush(d->qcow2);
	return fdatasync(d->fd) < 0 ? -errno : 0;
}

static int raw_punch(struct kap_disk *d, uint64_t off, uint64_t len)
{
	if (d->ro)
		return -EROFS;
	if (off > d->size || len > d->size - off)
		return -EIO;
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) <
	    0)
		return -errno;
	return 0;
}

int kap_disk_discard(struct kap_disk *d, uint64_t off, uint64_t len)
{
	if (d->qcow2)
		return d->ro ? -EROFS : kap_qcow2_zero(d->qcow2, off, len);
	return raw_punch(d, off, len);
}

int kap_disk_write_zeroes(struct kap_disk *d, uint64_t off, uint64_t len)
{
	return kap_disk_discard(d, off, len);
}

void kap_disk_close(struct kap_disk *d)
{
	if (!d)
		return;
	kap_qcow2_close(d->qcow2);
	if (d->fd >= 0)
		close(d->fd);
	if (d->fd_buffered >= 0)
		close(d->fd_buffered);
	free(d);
}

static void disk_closep(struct kap_disk **d)
{
	kap_disk_close(*d);
}

/* The directory holding path, for the backing file names inside it (O_PATH). */
static int open_parent(int dirfd, const char *path)
{
	cleanup_free char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	int fd = openat(dirfd, dirname(copy), O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int kap_disk_open(struct kap_disk **out, int dirfd, const char *path, enum kap_disk_format format,
		  bool ro, bool direct, unsigned int flags, struct kap_disk_chain *chain,
		  struct kapsel_error **err)
{
	struct kap_disk_chain top = {0};
	if (!chain)
		chain = &top;
	__attribute__((cleanup(disk_closep))) struct kap_disk *d = calloc(1, sizeof(*d));
	if (!d)
		return kap_error(err, ENOMEM, "disk %s", path);
	d->fd = d->fd_buffered = -EBADF;
	d->ro = ro;
	int oflags = (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	d->fd = openat(dirfd, path, oflags | (direct ? O_DIRECT : 0));
	if (d->fd < 0)
		return kap_error(err, errno, "disk %s", path);
	if (direct && (d->fd_buffered = openat(dirfd, path, oflags)) < 0)
		return kap_error(err, errno, "disk %s", path);
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return kap_error(err, errno, "stat disk %s", path);
	if (S_ISREG(st.st_mode)) {
		d->size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(d->fd, BLKGETSIZE64, &d->size) < 0)
			return kap_error(err, errno, "disk %s: BLKGETSIZE64", path);
	} else {
		return kap_error_plain(err, EINVAL, "disk %s: not a regular file or block device",
				       path);
	}
	/* Backing-file loops and over-deep chains: every file of the chain once, 16 at most. */
	for (unsigned int i = 0; i < chain->depth; i++)
		if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino)
			return kap_error_plain(err, ELOOP,
					       "disk %s: backing file loop (the file is already in "
					       "the chain)",
					       path);
	if (chain->depth == KAP_DISK_MAX_CHAIN)
		return kap_error_plain(err, ELOOP,
				       "disk %s: backing chain too deep (more than %d images)",
				       path, KAP_DISK_MAX_CHAIN);
	chain->dev[chain->depth] = st.st_dev;
	chain->ino[chain->depth] = st.st_ino;
	chain->depth++;
	if (format == KAP_DISK_PROBE) {
		uint8_t magic[4] = {0};
		ssize_t r = pread(d->fd_buffered >= 0 ? d->fd_buffered : d->fd, magic, 4, 0);
		format = r == 4 && !memcmp(magic, "QFI\xfb", 4) ? KAP_DISK_QCOW2 : KAP_DISK_RAW;
	}
	d->format = format;
	if (format == KAP_DISK_QCOW2) {
		int pfd = open_parent(dirfd, path);
		if (pfd < 0)
			return kap_error(err, -pfd, "disk %s: open its directory", path);
		int r = kap_qcow2_open(&d->qcow2, d, path, pfd, flags, chain, &d->size, err);
		close(pfd);
		if (r < 0)
			return r;
	}
	if (d->size < SECTOR)
		return kap_error_plain(err, EINVAL, "disk %s: smaller than one 512-byte sector",
				       path);
	*out = steal_ptr(d);
	return 0;
}

API int kapsel_vm_disk_create(const char *path, uint64_t size, const char *backing,
			      struct kapsel_error **err)
{
	const char *fmt = NULL;
	if (backing) {
		/* The name is recorded as given: relative to the new image's directory. */
		int pfd = open_parent(AT_FDCWD, path);
		if (pfd < 0)
			return kap_error(err, -pfd, "disk create %s: open its directory", path);
		struct kap_disk *b = NULL;
		int r = kap_disk_open(&b, pfd, backing, KAP_DISK_PROBE, true, false, 0, NULL, err);
		close(pfd);
		if (r < 0)
			return kap_error_wrap(err, "disk create %s: backing file", path);
		fmt = b->format == KAP_DISK_QCOW2 ? "qcow2" : "raw";
		if (!size)
			size = b->size;
		kap_disk_close(b);
	}
	if (!size)
		return kap_error_plain(err, EINVAL, "disk create %s: a size is required", path);
	cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return kap_error(err, errno, "disk create %s", path);
	int r = kap_qcow2_create(fd, path, size, backing, fmt, err);
	if (r < 0)
		unlink(path);
	return r;
}
