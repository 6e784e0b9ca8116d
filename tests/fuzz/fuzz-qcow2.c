/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qcow2 header and table parsing (vmm/virtio/qcow2.c): the input is the image file, in a
 * memfd. An image the open accepts is then read across its whole virtual size (up to 4 MiB),
 * written, zeroed and flushed without crashing. The open does not check refcounts against
 * references (QEMU does not either); an image whose refcounts were exact before the writes
 * must still have exact refcounts after them. Backing
 * files are refused (KAP_DISK_NO_BACKING): the fuzzer never opens host files.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/virtio/disk.h"
#include "vmm/virtio/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[256 << 10];
	int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct kap_disk *d = NULL;
	struct kapsel_error *err = NULL;
	if (kap_disk_open(&d, AT_FDCWD, path, KAP_DISK_QCOW2, false, false, KAP_DISK_NO_BACKING,
			  NULL, &err) == 0) {
		struct kapsel_error *cerr = NULL;
		bool consistent = kap_qcow2_check(d->qcow2, &cerr) == 0;
		kapsel_error_free(cerr);
		uint64_t end = d->size < (4 << 20) ? d->size : (4 << 20);
		for (uint64_t off = 0; off < end; off += sizeof(buf)) {
			uint64_t n = end - off < sizeof(buf) ? end - off : sizeof(buf);
			struct iovec iov = {buf, n};
			(void)kap_disk_readv(d, &iov, 1, off);
		}
		memset(buf, 0x5a, 4096);
		struct iovec w = {buf, 4096};
		bool ok = kap_disk_writev(d, &w, 1, 0) == 0;
		ok &= kap_disk_writev(d, &w, 1, d->size > 8192 ? d->size / 2 & ~511ULL : 0) == 0;
		ok &= kap_disk_write_zeroes(d, 0, d->size < 65536 ? d->size & ~511ULL : 65536) == 0;
		ok &= kap_disk_flush(d) == 0;
		/* Images with internal snapshots are refused for writing: every accepted image
		 * has one reference per counted cluster. */
		if (ok && consistent && kap_qcow2_check(d->qcow2, &err) < 0) {
			fprintf(stderr, "refcounts wrong after writes: %s\n", err->msg);
			abort();
		}
		kap_disk_close(d);
	}
	kapsel_error_free(err);
	close(fd);
	return 0;
}
