/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/proc.h"

/* sendmsg of one buffer, with fd attached as SCM_RIGHTS when fd >= 0. */
static int send_with_fd(int sock, const void *buf, size_t len, int fd)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

int kap_send_fd(int sock, int fd, const char *payload)
{
	/* The console-socket protocol needs at least one byte of payload with the fd. */
	if (!payload || !*payload)
		return send_with_fd(sock, "", 1, fd);
	return send_with_fd(sock, payload, strlen(payload), fd);
}

int kap_sync_send(int sock, enum kap_sync_type type, int value, const char *text, int fd)
{
	struct kap_sync_msg m = {.type = type, .value = value};
	size_t len = offsetof(struct kap_sync_msg, text);
	if (text) {
		snprintf(m.text, sizeof(m.text), "%s", text);
		len += strlen(m.text) + 1;
	}
	return send_with_fd(sock, &m, len, fd);
}

int kap_sync_recv(int sock, struct kap_sync_msg *msg, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(msg, 0, sizeof(*msg));
	struct iovec iov = {.iov_base = msg, .iov_len = sizeof(*msg) - 1};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	if (fd)
		*fd = -1;
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int got;
			memcpy(&got, CMSG_DATA(c), sizeof(int));
			if (fd)
				*fd = got;
			else
				close(got);
		}
	}
	if ((size_t)n < offsetof(struct kap_sync_msg, text))
		return -EPROTO;
	return 0;
}

void kap_sync_send_error(int sock, const struct kapsel_error *err)
{
	kap_sync_send(sock, KAP_SYNC_ERROR, err ? err->code : EIO,
		      err && err->msg ? err->msg : "container setup failed", -1);
}

int kap_sync_expect(int sock, enum kap_sync_type want, struct kap_sync_msg *msg, int *fd,
		    struct kapsel_error **err)
{
	int r = kap_sync_recv(sock, msg, fd);
	if (r == -EPIPE)
		return kap_error_plain(err, EIO, "container process exited during setup");
	if (r < 0)
		return kap_error(err, -r, "read from container process");
	if (msg->type == KAP_SYNC_ERROR)
		return kap_error_plain(err, msg->value > 0 ? msg->value : EIO, "%s", msg->text);
	if (msg->type != (uint32_t)want)
		return kap_error_plain(err, EPROTO,
				       "container setup: unexpected message %u (want %d)",
				       msg->type, want);
	return 0;
}

int kap_proc_stat(pid_t pid, uint64_t *start_time, char *state)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	/* comm may contain spaces and ')': fields start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return -EPROTO;
	p += 2;
	if (state)
		*state = *p;
	/* p is at field 3 (state); start time is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -EPROTO;
		p++;
	}
	if (start_time)
		*start_time = strtoull(p, NULL, 10);
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int kap_proc_close_fds_except(unsigned preserve, const int *keep, size_t n)
{
	int sorted[16];
	size_t m = 0;
	if (n > KAP_ARRAY_SIZE(sorted))
		return -E2BIG;
	for (size_t i = 0; i < n; i++)
		if (keep[i] > STDERR_FILENO + (int)preserve)
			sorted[m++] = keep[i];
	qsort(sorted, m, sizeof(int), cmp_int);
	/* close_range() over each gap: no /proc walk, no fd limit dependence. */
	unsigned lo = STDERR_FILENO + 1 + preserve;
	for (size_t i = 0; i < m; i++) {
		unsigned k = (unsigned)sorted[i];
		if (k > lo && syscall(SYS_close_range, lo, k - 1, 0) < 0)
			return -errno;
		if (k + 1 > lo)
			lo = k + 1;
	}
	if (syscall(SYS_close_range, lo, ~0U, 0) < 0)
		return -errno;
	return 0;
}

pid_t kap_sync_fork_announced(int sync)
{
	int gate[2];
	if (pipe2(gate, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(gate[0]);
		close(gate[1]);
		return -e;
	}
	if (pid == 0) {
		close(gate[1]);
		char c;
		while (read(gate[0], &c, 1) < 0 && errno == EINTR)
			;
		close(gate[0]);
		return 0;
	}
	close(gate[0]);
	kap_sync_send(sync, KAP_SYNC_PID, pid, NULL, -1);
	close(gate[1]); /* EOF: the child goes on */
	return pid;
}
