/* SPDX-License-Identifier: Apache-2.0 */
/* Host sockets from a migration's source to its destination (migrate-fds.c). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmm/virtio/transport.h"

#define KAP_MIG_MAX_FDS KAP_VSOCK_MAX_CONNS

/* Descriptors that arrived with the stream (unix: channel), in order. */
struct kap_mig_fds {
	int fd[KAP_MIG_MAX_FDS];
	unsigned int n;
	bool overflow; /* more arrived than fit: they were closed */
};

/* recv(MSG_DONTWAIT) that keeps SCM_RIGHTS descriptors in rx (close-on-exec). */
ssize_t kap_mig_recv(int fd, void *buf, size_t n, struct kap_mig_fds *rx);
void kap_mig_fds_close(struct kap_mig_fds *rx);
/* One sendmsg of p (n > 0 bytes; it may send fewer) with nfds descriptors attached. */
ssize_t kap_mig_send_fds(int sock, const void *p, size_t n, const int *fds, unsigned int nfds);
/*
 * tcp: channel: copies the source's descriptors src[0..n) into out with pidfd_getfd, after
 * checking that process pid holds src_conn, the other end of the TCP connection conn.
 * 0, or -errno with *why naming the step; out all -1 then.
 */
int kap_mig_take_fds(int conn, int32_t pid, int32_t src_conn, const int32_t *src, unsigned int n,
		     int *out, const char **why);
/* Whether fd is an AF_UNIX stream socket (what a vsock connection's host side is). */
bool kap_mig_is_stream_unix(int fd);
