/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The FUSE server behind virtio-fs (fs.c), apart from the virtqueue so unit tests and the fuzzer
 * drive it with plain buffers. One request in, one reply out; nothing it does depends on a
 * length the guest chose beyond the caps below.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* The largest READ and WRITE payload, offered as max_write and max_pages in FUSE_INIT. */
#define KAP_FS_MAX_IO (128u * 1024u)
/* A request: its header, the largest fixed argument (fuse_write_in) and the payload. */
#define KAP_FS_IN_MAX (KAP_FS_MAX_IO + 4096u)
/* A reply: the header and the payload. */
#define KAP_FS_OUT_MAX (KAP_FS_MAX_IO + 4096u)
/* Nodes (looked-up inodes, each an O_PATH fd) and open handles per shared directory. */
#define KAP_FS_MAX_NODES   32768u
#define KAP_FS_MAX_HANDLES 4096u

struct kap_fs;

/* Opens dir (a directory) as the root of a share; ro refuses every change with EROFS. */
int kap_fs_open(struct kap_fs **out, const char *dir, bool ro, struct kapsel_error **err);
void kap_fs_close(struct kap_fs *fs);
/* Forgets every node and handle, as a new driver (a device reset, FUSE_DESTROY) needs. */
void kap_fs_reset(struct kap_fs *fs);
/*
 * Serves one request of inlen bytes (what the driver's readable buffers held) and writes the
 * reply into out, at most outcap bytes (what its writable buffers hold). Returns the reply's
 * length: 0 when there is none (FORGET, BATCH_FORGET, or no room even for a header).
 */
size_t kap_fs_handle(struct kap_fs *fs, const void *in, size_t inlen, void *out, size_t outcap);
/* How many nodes and handles are live (the root included): for tests. */
unsigned int kap_fs_nodes(const struct kap_fs *fs);
unsigned int kap_fs_handles(const struct kap_fs *fs);
