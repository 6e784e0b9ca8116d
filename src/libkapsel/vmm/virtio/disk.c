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
#include "core/log.h"
#include "core/syscalls.h"
#include "vmm/virtio/disk.h"
#include "vmm/virtio/qcow2.h"

#define API __attribute__((visibility("default")))

#define SECTOR 512ULL

/*
 * How a backing file name is resolved: beneath the image's directory, symlinks included (one
 * that leads out fails with EXDEV), never through a /proc magic link.
 */
#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)

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
static int open_parent(int dirfd, const char *path, bool beneath)
{
	cleanup_free char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	int fd = beneath ? kap_openat2(dirfd, dirname(copy), O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
				       BENEATH)
			 : openat(dirfd, dirname(copy), O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int kap_disk_check_backing_name(const char *image, const char *name, struct kapsel_error **err)
{
	/*
	 * The name comes from the image's header, which whoever wrote the image controls (a
	 * guest, when the image was its raw disk). Absolute names and ".." would reach any host
	 * file; openat2 refuses both as well, this says why in one line.
	 */
	if (name[0] == '/')
		return kap_error_plain(
		    err, EINVAL,
		    "%s: backing file \"%s\" is an absolute path: only names "
		    "relative to the image's directory and beneath it are allowed",
		    image, name);
	for (const char *p = name; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return kap_error_plain(
			    err, EINVAL,
			    "%s: backing file \"%s\" has a \"..\" component: "
			    "only names beneath the image's directory are allowed",
			    image, name);
		p += n;
		p += strspn(p, "/");
	}
	return 0;
}

/*
 * A backing file: resolved beneath dirfd, checked to be a regular file through an O_PATH fd
 * (opening a device or a FIFO can have effects, or block), then reopened for reading.
 */
static int open_beneath(int dirfd, const char *path, int oflags, struct kapsel_error **err)
{
	cleanup_close int pfd = kap_openat2(dirfd, path, O_PATH | O_CLOEXEC, 0, BENEATH);
	if (pfd < 0) {
		if (errno == EXDEV)
			return kap_error_plain(
			    err, EXDEV, "disk %s: resolves outside the image's directory", path);
		return kap_error(err, errno, "disk %s", path);
	}
	struct stat st;
	if (fstat(pfd, &st) < 0)
		return kap_error(err, errno, "stat disk %s", path);
	if (!S_ISREG(st.st_mode))
		return kap_error_plain(err, EINVAL,
				       "disk %s: not a regular file (a backing file cannot be a "
				       "device, FIFO or directory)",
				       path);
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	int fd = open(proc, oflags);
	if (fd < 0)
		return kap_error(err, errno, "disk %s: reopen", path);
	return fd;
}

static int open_file(int dirfd, const char *path, int oflags, unsigned int flags,
		     struct kapsel_error **err)
{
	if (flags & KAP_DISK_BENEATH)
		return open_beneath(dirfd, path, oflags, err);
	int fd = openat(dirfd, path, oflags);
	return fd < 0 ? kap_error(err, errno, "disk %s", path) : fd;
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
	if (!direct) {
		d->fd = open_file(dirfd, path, oflags, flags, err);
		if (d->fd < 0)
			return d->fd;
	} else {
		d->fd_buffered = open_file(dirfd, path, oflags, flags, err);
		if (d->fd_buffered < 0)
			return d->fd_buffered;
		d->fd = open_file(dirfd, path, oflags | O_DIRECT, flags, NULL);
		/* open(2): EINVAL for O_DIRECT alone means the filesystem cannot do direct I/O
		 * (tmpfs before Linux 6.6, for one); "Invalid argument" would not say that. */
		if (d->fd == -EINVAL)
			return kap_error_plain(err, EINVAL,
					       "disk %s: cache=none needs O_DIRECT, which its "
					       "filesystem does not support (use cache=writeback)",
					       path);
		if (d->fd < 0)
			return kap_error(err, -d->fd, "disk %s", path);
	}
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
		int pfd = open_parent(dirfd, path, flags & KAP_DISK_BENEATH);
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

bool kap_disk_has_qcow2_magic(struct kap_disk *d)
{
	uint8_t magic[4] = {0};
	ssize_t r = pread(d->fd_buffered >= 0 ? d->fd_buffered : d->fd, magic, 4, 0);
	return r == 4 && !memcmp(magic, "QFI\xfb", 4);
}

int kap_disk_open_config(struct kap_disk **out, const struct kapsel_vm_disk *disk,
			 struct kapsel_error **err)
{
	static const enum kap_disk_format formats[] = {
	    [KAPSEL_VM_DISK_DEFAULT] = KAP_DISK_RAW,
	    [KAPSEL_VM_DISK_RAW] = KAP_DISK_RAW,
	    [KAPSEL_VM_DISK_QCOW2] = KAP_DISK_QCOW2,
	    [KAPSEL_VM_DISK_AUTO] = KAP_DISK_PROBE,
	};
	int r = kap_disk_open(out, AT_FDCWD, disk->path, formats[disk->format], disk->ro,
			      disk->cache == KAPSEL_VM_CACHE_NONE, 0, NULL, err);
	if (r < 0)
		return r;
	/*
	 * Served raw all the same: a raw disk's first sector is the guest's, and a qcow2 header
	 * there may be a guest's attempt to name a host file as its backing file.
	 */
	if (disk->format == KAPSEL_VM_DISK_DEFAULT && kap_disk_has_qcow2_magic(*out))
		kap_warn("disk %s: starts with a qcow2 header but is used raw (no format= given); "
			 "if you created it as qcow2, add format=qcow2",
			 disk->path);
	return 0;
}

API int kapsel_vm_disk_create(const char *path, uint64_t size, const char *backing,
			      const char *backing_format, const char **format_out,
			      struct kapsel_error **err)
{
	const char *fmt = NULL;
	if (backing) {
		enum kap_disk_format want = KAP_DISK_PROBE;
		if (backing_format && !strcmp(backing_format, "raw"))
			want = KAP_DISK_RAW;
		else if (backing_format && !strcmp(backing_format, "qcow2"))
			want = KAP_DISK_QCOW2;
		else if (backing_format)
			return kap_error_plain(
			    err, EINVAL,
			    "disk create %s: backing format \"%s\" is not raw or "
			    "qcow2",
			    path, backing_format);
		/* The name is recorded as given, so it must meet the rule an open applies. */
		int r = kap_disk_check_backing_name(path, backing, err);
		if (r < 0)
			return kap_error_wrap(err, "disk create");
		int pfd = open_parent(AT_FDCWD, path, false);
		if (pfd < 0)
			return kap_error(err, -pfd, "disk create %s: open its directory", path);
		struct kap_disk *b = NULL;
		r = kap_disk_open(&b, pfd, backing, want, true, false, KAP_DISK_BENEATH, NULL, err);
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
	else if (format_out)
		*format_out = fmt;
	return r;
}
