/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parent <-> child synchronisation for container setup: a SOCK_SEQPACKET socketpair carrying
 * small typed messages (and fds via SCM_RIGHTS). Errors travel back as {errno, message}.
 */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

enum kap_sync_type {
	KAP_SYNC_GO = 1,   /* parent -> child: ids mapped, cgroup joined; go on */
	KAP_SYNC_HOOKS,	   /* child -> parent: run prestart/createRuntime hooks now */
	KAP_SYNC_HOOKS_OK, /* parent -> child */
	KAP_SYNC_PTY,	   /* child -> parent: the pty master (fd attached) */
	KAP_SYNC_SECCOMP,  /* child -> parent: the seccomp notify fd (fd attached) */
	KAP_SYNC_PID,	   /* intermediate -> parent: value = pid of the final process */
	KAP_SYNC_USERMAP,  /* intermediate -> parent: write my uid/gid maps, then GO */
	KAP_SYNC_READY,	   /* child -> parent: set up, about to wait for start (or exec) */
	KAP_SYNC_DONE,	   /* parent -> child: state recorded; wait for start */
	KAP_SYNC_ERROR,	   /* child -> parent: value = errno, payload = message */
};

struct kap_sync_msg {
	uint32_t type;
	int32_t value;
	char text[1024];
};

/* Send type/value (and text, and fd when >= 0). Returns -errno. */
int kap_sync_send(int sock, enum kap_sync_type type, int value, const char *text, int fd);
/* Receive one message; *fd gets an attached fd or -1. Returns -EPIPE on EOF. */
int kap_sync_recv(int sock, struct kap_sync_msg *msg, int *fd);
/* Child side: report err (or errno e with a message) to the parent. */
void kap_sync_send_error(int sock, const struct kapsel_error *err);
/*
 * Parent side: wait for `want`; a KAP_SYNC_ERROR becomes *err; EOF means the child died before
 * it could say why.
 */
int kap_sync_expect(int sock, enum kap_sync_type want, struct kap_sync_msg *msg, int *fd,
		    struct kapsel_error **err);

/*
 * fork() for an intermediate process: the parent sends KAP_SYNC_PID with the child's pid over
 * sync, and only then lets the child go on (a pipe it waits on). Without the gate, a child
 * scheduled first could send READY (or HOOKS) before the runtime knows its pid, and both
 * would wait for each other forever. Returns the pid, 0 in the child, or -errno.
 */
pid_t kap_sync_fork_announced(int sync);

/* Send / receive one fd over a unix socket with a short payload (console socket protocol). */
int kap_send_fd(int sock, int fd, const char *payload);
/* Start time of pid (field 22 of /proc/PID/stat) and its state letter; -ESRCH if gone. */
int kap_proc_stat(pid_t pid, uint64_t *start_time, char *state);

/*
 * Close every fd except stdio, the `preserve` fds after it (3 .. 3+preserve-1, runc's
 * --preserve-fds) and `keep` (any order; negative entries are ignored). A process
 * that is about to enter a container calls this before it touches anything of the container:
 * an inherited directory fd of the host (state root, image store) is a way out of its root
 * (CVE-2024-21626: a cwd or `..` walk from /proc/self/fd/N). Returns -errno.
 */
int kap_proc_close_fds_except(unsigned preserve, const int *keep, size_t n);
