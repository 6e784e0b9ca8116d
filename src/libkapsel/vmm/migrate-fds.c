/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handing host sockets from a migration's source to its destination on the same machine
 * (docs/vm.md, Live migration, vsock connections): the vsock device's connections keep their
 * host peers only if the destination gets the very same sockets.
 *  - unix: channel: SCM_RIGHTS on the migration connection itself (unix(7)); the destination
 *    reads every byte of the stream with recvmsg and collects whatever descriptors arrive, so
 *    none is dropped on a message boundary and none can be smuggled in unnoticed.
 *  - tcp:127.0.0.1 channel: TCP carries no descriptors. The source names its pid, the number
 *    of its end of the migration connection and its sockets' numbers; the destination opens
 *    a pidfd for that pid and copies the descriptors out with pidfd_getfd(2), which the
 *    kernel allows only to a process that may ptrace the source (same user, source dumpable).
 *    A forged pid is caught: the first descriptor taken must be the other end of this very
 *    TCP connection (its local and peer addresses mirror ours; a 4-tuple is unique on a host),
 *    so the only process whose sockets are taken is the one talking to us.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/migrate-fds.h"

ssize_t kap_mig_recv(int fd, void *buf, size_t n, struct kap_mig_fds *rx)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * KAP_MIG_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = n};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (r < 0)
		return r;
	if (msg.msg_flags & MSG_CTRUNC)
		rx->overflow = true; /* the kernel closed what did not fit */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (rx->n < KAP_MIG_MAX_FDS) {
				rx->fd[rx->n++] = f;
			} else {
				close(f);
				rx->overflow = true;
			}
		}
	}
	return r;
}

void kap_mig_fds_close(struct kap_mig_fds *rx)
{
	for (unsigned int i = 0; i < rx->n; i++)
		if (rx->fd[i] >= 0)
			close(rx->fd[i]);
	rx->n = 0;
}

ssize_t kap_mig_send_fds(int sock, const void *p, size_t n, const int *fds, unsigned int nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * KAP_MIG_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	if (nfds > KAP_MIG_MAX_FDS || !n) {
		errno = EINVAL;
		return -1;
	}
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * nfds)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	ssize_t r;
	do
		r = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r;
}

static bool same_in(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
	return a->sin_family == AF_INET && b->sin_family == AF_INET && a->sin_port == b->sin_port &&
	       a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* Whether s is the other end of the TCP connection conn. */
static bool is_peer_of(int s, int conn)
{
	struct sockaddr_in sl = {0}, sp = {0}, cl = {0}, cp = {0};
	socklen_t l1 = sizeof(sl), l2 = sizeof(sp), l3 = sizeof(cl), l4 = sizeof(cp);
	return getsockname(s, (struct sockaddr *)&sl, &l1) == 0 &&
	       getpeername(s, (struct sockaddr *)&sp, &l2) == 0 &&
	       getsockname(conn, (struct sockaddr *)&cl, &l3) == 0 &&
	       getpeername(conn, (struct sockaddr *)&cp, &l4) == 0 && same_in(&sl, &cp) &&
	       same_in(&sp, &cl);
}

int kap_mig_take_fds(int conn, int32_t pid, int32_t src_conn, const int32_t *src, unsigned int n,
		     int *out, const char **why)
{
	for (unsigned int i = 0; i < n; i++)
		out[i] = -1;
	if (pid <= 0 || src_conn < 0) {
		*why = "no source process named";
		return -EINVAL;
	}
	int pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
	if (pfd < 0) {
		*why = "pidfd_open of the source";
		return -errno;
	}
	int r = 0;
	int s = (int)syscall(SYS_pidfd_getfd, pfd, src_conn, 0);
	if (s < 0) {
		r = -errno;
		*why = "pidfd_getfd of the source's migration socket";
		goto out;
	}
	bool ok = is_peer_of(s, conn);
	close(s);
	if (!ok) {
		r = -EPERM;
		*why = "the named process does not hold the other end of this connection";
		goto out;
	}
	for (unsigned int i = 0; i < n; i++) {
		if ((out[i] = (int)syscall(SYS_pidfd_getfd, pfd, src[i], 0)) < 0) {
			r = -errno;
			*why = "pidfd_getfd of a vsock connection's socket";
			for (unsigned int j = 0; j < i; j++) {
				close(out[j]);
				out[j] = -1;
			}
			out[i] = -1;
			goto out;
		}
	}
out:
	close(pfd);
	return r;
}

bool kap_mig_is_stream_unix(int fd)
{
	int dom = 0, type = 0;
	socklen_t l1 = sizeof(dom), l2 = sizeof(type);
	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l1) == 0 &&
	       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l2) == 0 && dom == AF_UNIX &&
	       type == SOCK_STREAM;
}
