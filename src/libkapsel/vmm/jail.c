/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The jailer (`vm run --jail`, docs/vm.md, Jailer), after Firecracker's (firecracker
 * docs/jailer.md and docs/seccomp.md). The threat: a guest that escapes into the VMM (a bug in
 * a device model, in KVM's user-space ABI handling) runs code as the VMM. The answer is that
 * the VMM then holds nothing worth having:
 *
 *  - it is a child in a pid namespace of its own (it sees no other process) and a cgroup of its
 *    own (its memory and CPU are accounted apart and can be limited), made by the caller, which
 *    stays outside as root only to map its ids, forward signals, and clean up after it;
 *  - it opens every host resource first (kernel, initrd, disks, taps, sockets, /dev/kvm), then
 *    enters a new mount namespace owned by the host's user namespace, pivots into an empty
 *    read-only tmpfs (only a --vsock socket's directory is bound in: guest-initiated vsock
 *    connections are connect()s by path), and then new user, net, ipc, uts and cgroup
 *    namespaces. The mount namespace belongs to the host's user namespace, so the jailed
 *    process, root only in its own user namespace, can never mount or unmount anything in it;
 *  - uid and gid 0 inside map to one unprivileged host uid and gid (--jail-uid/--jail-gid, by
 *    default 65534), without supplementary groups, all capabilities dropped (bounding and
 *    ambient sets too), no_new_privs, not dumpable;
 *  - each thread installs the seccomp filter of its kind at its start (filters are per thread;
 *    TSYNC is never used, so no thread gets another kind's list): only the syscalls that kind
 *    makes, with ioctl narrowed to the KVM (and tty) requests it issues. The programs are
 *    compiled with libseccomp before the jail closes, so a thread's start allocates nothing.
 *
 * A syscall outside a thread's list never runs: the filter traps it (SIGSYS), the handler sends
 * the caller which thread made which syscall and then makes the one syscall every filter kills
 * the process for (SECCOMP_RET_KILL_PROCESS). The caller reports it in one line.
 *
 * What this costs: snapshot files cannot be created by path inside the read-only root (the API
 * answers with the error); a migration goes over a connection its client dialled and handed in
 * (migrate.c); a guest-initiated vsock connection needs the listener reachable by the jail's
 * uid; virtio-fs acts on its share as the jail's uid, reopening nodes through a procfs of the
 * jail's own (jail_proc).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <linux/virtio_ids.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "core/proc.h"
#include "vmm/jail.h"
#include "vmm/virtio/transport.h"
#include "vmm/vmm.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define JAIL_CGROUP_ROOT "/sys/fs/cgroup"
/* The root's mount point before pivot_root: any directory of the private mount namespace. */
#define JAIL_STAGE "/tmp"

/* ---- the per-thread syscall tables (docs/vm.md, Jailer, has them too) ---- */

/* One allowed syscall and why the thread kind makes it. */
struct jail_sys {
	int nr;
	const char *why;
};

/*
 * Every thread: what the C runtime does on its behalf (allocation, locks, the log, a thread's
 * exit). mmap and mprotect are allowed only without PROT_EXEC (build_prog: no new code).
 */
static const struct jail_sys sys_common[] = {
    {SCMP_SYS(futex), "mutexes, condition variables, joins"},
    {SCMP_SYS(madvise), "malloc returning memory; a thread's stack at its exit"},
    {SCMP_SYS(munmap), "malloc"},
    {SCMP_SYS(mremap), "malloc"},
    {SCMP_SYS(brk), "malloc"},
    {SCMP_SYS(rt_sigprocmask), "signal masks (kap_vcpu_kick, pthread)"},
    {SCMP_SYS(rt_sigreturn), "the return from a signal handler (the kick)"},
    {SCMP_SYS(sigaltstack), "the sanitizers' per-thread signal stack"},
    {SCMP_SYS(exit), "a thread's end"},
    {SCMP_SYS(exit_group), "the process's end"},
    {SCMP_SYS(clock_gettime), "time outside the vDSO (thread CPU clocks for metrics)"},
    {SCMP_SYS(clock_nanosleep), "short waits"},
    {SCMP_SYS(nanosleep), "short waits"},
    {SCMP_SYS(gettid), "the log, pthread"},
    {SCMP_SYS(getpid), "the log, pthread"},
    {SCMP_SYS(sched_yield), "spinning locks"},
    {SCMP_SYS(write), "the log, eventfds, console output"},
    {SCMP_SYS(writev), "the log"},
    {SCMP_SYS(restart_syscall), "a wait interrupted by the kick"},
};

/* vCPU threads: KVM_RUN and the exits' device emulation (console output, interrupt lines). */
static const struct jail_sys sys_vcpu[] = {
    {SCMP_SYS(read), "eventfd counters"},
    {SCMP_SYS(poll), "console output waiting for room (console.c)"},
};

/* The event loop (kapsel_vm_run's thread): epoll, console, taps, vsock accepts, teardown. */
static const struct jail_sys sys_loop[] = {
    {SCMP_SYS(epoll_wait), "the loop"},
    {SCMP_SYS(epoll_pwait), "the loop"},
    {SCMP_SYS(epoll_ctl), "sources coming and going"},
    {SCMP_SYS(read), "signalfd, eventfds, console input, taps"},
    {SCMP_SYS(readv), "taps"},
    {SCMP_SYS(recvfrom), "vsock connections"},
    {SCMP_SYS(recvmsg), "vsock connections"},
    {SCMP_SYS(sendto), "vsock connections"},
    {SCMP_SYS(sendmsg), "vsock connections"},
    {SCMP_SYS(accept4), "host-initiated vsock connections"},
    {SCMP_SYS(close), "teardown"},
    {SCMP_SYS(fsync), "teardown: disks flushed"},
    {SCMP_SYS(fdatasync), "teardown: disks flushed"},
    {SCMP_SYS(pread64), "teardown: qcow2 metadata"},
    {SCMP_SYS(pwrite64), "teardown: qcow2 metadata"},
    {SCMP_SYS(ftruncate), "teardown: qcow2 trims its file"},
    {SCMP_SYS(lseek), "teardown"},
    {SCMP_SYS(fstat), "teardown"},
    {SCMP_SYS(newfstatat), "teardown"},
    {SCMP_SYS(poll), "console output waiting for room"},
    {SCMP_SYS(rt_sigtimedwait), "signals that arrived while blocked, consumed at the end"},
};

/* The event loop's teardown: refused with EROFS rather than killing (add_kind). */
static const struct jail_sys sys_loop_refused[] = {
    {SCMP_SYS(unlink), "the API and vsock sockets (the caller removes them)"},
    {SCMP_SYS(unlinkat), "state.json (the caller removes it)"},
    {SCMP_SYS(rmdir), "the VM's directory (the caller removes it)"},
};

/* virtio device threads: queues, disk I/O, taps, vsock connections, the balloon. */
static const struct jail_sys sys_device[] = {
    {SCMP_SYS(poll), "queue kicks, the stop eventfd"},
    {SCMP_SYS(ppoll), "queue kicks"},
    {SCMP_SYS(read), "eventfds, taps"},
    {SCMP_SYS(readv), "taps"},
    {SCMP_SYS(pread64), "disks"},
    {SCMP_SYS(preadv), "disks"},
    {SCMP_SYS(pwrite64), "disks"},
    {SCMP_SYS(pwritev), "disks"},
    {SCMP_SYS(fsync), "disk flushes"},
    {SCMP_SYS(fdatasync), "disk flushes"},
    {SCMP_SYS(fallocate), "discard and write-zeroes; balloon pages on a memfd"},
    {SCMP_SYS(lseek), "disks"},
    {SCMP_SYS(close), "vsock connections"},
    {SCMP_SYS(connect), "guest-initiated vsock connections (PATH_PORT)"},
    {SCMP_SYS(accept4), "host-initiated vsock connections"},
    {SCMP_SYS(recvfrom), "vsock"},
    {SCMP_SYS(recvmsg), "vsock"},
    {SCMP_SYS(sendto), "vsock"},
    {SCMP_SYS(sendmsg), "vsock"},
    {SCMP_SYS(shutdown), "vsock"},
    {SCMP_SYS(epoll_wait), "vsock's connections"},
    {SCMP_SYS(epoll_pwait), "vsock's connections"},
    {SCMP_SYS(epoll_ctl), "vsock's connections"},
    {SCMP_SYS(fstat), "disks"},
    {SCMP_SYS(ftruncate), "qcow2 growing its file"},
    {SCMP_SYS(getrandom), "virtio-rng's entropy"},
};

/* The control API thread: its socket, pause/resume (vCPU kicks), snapshot files. */
/*
 * A virtio-fs device thread (virtio/fs.c): every call on the share is relative to an O_PATH fd
 * it holds, or to the jail's own /proc/self/fd (a procfs of the VMM's pid namespace alone,
 * kap_jail_enter) for the reopens. The jail's root holds nothing to open by path, so what a
 * path can reach is the share (and the VMM's own fds through its procfs).
 */
static const struct jail_sys sys_fs[] = {
    {SCMP_SYS(poll), "queue kicks, the stop eventfd"},
    {SCMP_SYS(read), "eventfds"},
    {SCMP_SYS(openat),
     "OPEN, OPENDIR, CREATE: reopen through /proc/self/fd, create beneath a node"},
    {SCMP_SYS(openat2), "LOOKUP, CREATE: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS beneath a node"},
    {SCMP_SYS(close), "FORGET, RELEASE"},
    {SCMP_SYS(fstat), "GETATTR on handles"},
    {SCMP_SYS(newfstatat), "GETATTR, LOOKUP (AT_EMPTY_PATH)"},
    {SCMP_SYS(fstatfs), "STATFS"},
    {SCMP_SYS(fchownat), "SETATTR, new inodes given the requester's ids"},
    {SCMP_SYS(fchmodat), "SETATTR mode through /proc/self/fd"},
    {SCMP_SYS(utimensat), "SETATTR times"},
    {SCMP_SYS(ftruncate), "SETATTR size"},
    {SCMP_SYS(pread64), "READ"},
    {SCMP_SYS(pwrite64), "WRITE"},
    {SCMP_SYS(fsync), "FSYNC"},
    {SCMP_SYS(fdatasync), "FSYNC (datasync)"},
    {SCMP_SYS(fallocate), "FALLOCATE"},
    {SCMP_SYS(lseek), "READDIR offsets, LSEEK"},
    {SCMP_SYS(getdents64), "READDIR"},
    {SCMP_SYS(mkdirat), "MKDIR"},
    {SCMP_SYS(mknodat), "MKNOD (regular files, FIFOs, sockets only)"},
    {SCMP_SYS(symlinkat), "SYMLINK"},
    {SCMP_SYS(readlinkat), "READLINK"},
    {SCMP_SYS(unlinkat), "UNLINK, RMDIR"},
    {SCMP_SYS(renameat2), "RENAME2 with flags"},
    {SCMP_SYS(renameat), "RENAME (the C library's renameat2 without flags)"},
    {SCMP_SYS(linkat), "LINK through /proc/self/fd"},
    {SCMP_SYS(faccessat), "ACCESS through /proc/self/fd"},
    {SCMP_SYS(faccessat2), "ACCESS (the C library's faccessat tries it first)"},
};

static const struct jail_sys sys_api[] = {
    {SCMP_SYS(epoll_wait), "its own loop"},
    {SCMP_SYS(epoll_pwait), "its own loop"},
    {SCMP_SYS(epoll_ctl), "connections"},
    {SCMP_SYS(accept4), "connections"},
    {SCMP_SYS(read), "requests"},
    {SCMP_SYS(recvfrom), "requests"},
    {SCMP_SYS(recvmsg), "requests"},
    {SCMP_SYS(sendto), "responses"},
    {SCMP_SYS(sendmsg), "responses"},
    {SCMP_SYS(close), "connections"},
    {SCMP_SYS(openat), "snapshot files (inside the read-only root: refused with EROFS)"},
    {SCMP_SYS(fstat), "snapshot files"},
    {SCMP_SYS(newfstatat), "snapshot files"},
    {SCMP_SYS(fsync), "snapshot files"},
    {SCMP_SYS(fdatasync), "snapshot files"},
    {SCMP_SYS(ftruncate), "snapshot files"},
    {SCMP_SYS(pwrite64), "snapshot files"},
    {SCMP_SYS(lseek), "snapshot files"},
    {SCMP_SYS(getrandom), "json-c seeds its hash tables on first use"},
    /*
     * PUT /migrate starts the migration thread from here, and a new thread starts under its
     * creator's filter before it adds its own (filters stack): what that thread needs must
     * pass this one too. clone only for threads (add_kind); clone3 answers ENOSYS, which makes
     * the C library fall back to clone, whose flags a filter can see.
     */
    {SCMP_SYS(set_robust_list), "a new thread's start (the migration's)"},
    {SCMP_SYS(sched_getaffinity), "a new thread's start (the sanitizers' thread registry)"},
    {SCMP_SYS(rseq), "a new thread's start (the migration's)"},
    {SCMP_SYS(shutdown), "DELETE /migrate wakes the blocked migration thread"},
    {SCMP_SYS(poll), "the migration thread: waits for the destination's reply"},
    {SCMP_SYS(setsockopt), "the migration thread: send timeout, TCP_NODELAY"},
    {SCMP_SYS(getsockopt), "the migration thread: checks the handed connection"},
    {SCMP_SYS(getpeername), "the migration thread: checks the handed connection"},
};

/*
 * A live migration's thread (migrate.c): the stream over the connection its client handed
 * over (a jailed VMM dials nothing: no socket, no connect), the dirty log and the machine
 * state through KVM, the vsock sockets passed along (SCM_RIGHTS).
 */
static const struct jail_sys sys_migrate[] = {
    {SCMP_SYS(sendto), "the stream"},
    {SCMP_SYS(sendmsg), "the stream; the vsock sockets (SCM_RIGHTS)"},
    {SCMP_SYS(recvfrom), "the destination's replies"},
    {SCMP_SYS(recvmsg), "the destination's replies"},
    {SCMP_SYS(poll), "waits for the destination's reply"},
    {SCMP_SYS(read), "eventfds"},
    {SCMP_SYS(setsockopt), "send timeout, TCP_NODELAY"},
    {SCMP_SYS(getsockopt), "checks the handed connection"},
    {SCMP_SYS(getpeername), "checks the handed connection"},
    {SCMP_SYS(close), "the connection at the end"},
    {SCMP_SYS(set_robust_list), "its start"},
    {SCMP_SYS(rseq), "its start"},
};

/* ioctl requests a vCPU thread makes on its own vCPU fd (vcpu.c). */
static const unsigned long ioctl_vcpu_own[] = {
    KVM_RUN,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_TRANSLATE,
};
/* ioctl requests on the VM fd: interrupt lines and routes, ioeventfds (virtio-pci BARs). */
static const unsigned long ioctl_vm_irq[] = {
    KVM_IRQ_LINE,	 KVM_IRQ_LINE_STATUS, KVM_SIGNAL_MSI,
    KVM_SET_GSI_ROUTING, KVM_IOEVENTFD,	      KVM_IRQFD,
};
/* The console's tty (console.c restores its mode on the way out). */
static const unsigned long ioctl_tty[] = {TCGETS, TCSETS, TCSETSW, TCSETSF};

static const char *const kind_names[KAP_JAIL_KINDS] = {
    [KAP_JAIL_VCPU] = "vcpu", [KAP_JAIL_LOOP] = "event loop", [KAP_JAIL_DEVICE] = "device",
    [KAP_JAIL_API] = "api",   [KAP_JAIL_FS] = "virtio-fs",    [KAP_JAIL_MIGRATE] = "migration",
};

/* ---- the child <-> caller protocol (a SOCK_SEQPACKET pair) ---- */

enum jail_msg_type {
	JM_GO = 1,  /* caller -> child: your host pid is value; go on */
	JM_MAP,	    /* child -> caller: namespaces made; write my id maps */
	JM_MAPPED,  /* caller -> child: done (value < 0: failed, text says why) */
	JM_RESULT,  /* child -> caller: the VM's result (value), the error (text) */
	JM_SYSCALL, /* child -> caller: the seccomp violation (value: nr; args, thread) */
	JM_ENTERED, /* child -> caller: the jail is closed (its paths are the VM's own) */
};

struct jail_msg {
	int type;
	int value;
	uint64_t args[2];
	char text[480];
};

struct jail_prog {
	struct sock_filter *insns;
	unsigned short len;
};

struct kap_jail {
	int sock; /* the child's end */
	pid_t host_pid;
	uid_t uid;
	gid_t gid;
	struct jail_prog progs[KAP_JAIL_KINDS];
	struct jail_prog vcpus[KAP_MAX_VCPUS];
	bool selftest_open;
};

/* One VM per process: the threads find their programs here. */
static struct kap_jail *active;
static int fault_sock = -1;
static __thread char thread_name[16];

pid_t kap_jail_host_pid(void)
{
	return active ? active->host_pid : getpid();
}

static int send_msg(int fd, const struct jail_msg *m)
{
	ssize_t n;
	do
		n = send(fd, m, sizeof(*m), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

static int recv_msg(int fd, struct jail_msg *m)
{
	ssize_t n;
	do
		n = recv(fd, m, sizeof(*m), 0);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return -EPIPE;
	if (n != (ssize_t)sizeof(*m))
		return n < 0 ? -errno : -EPROTO;
	m->text[sizeof(m->text) - 1] = 0;
	return 0;
}

/* ---- seccomp programs ---- */

static int add_all(scmp_filter_ctx ctx, const struct jail_sys *sys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, sys[i].nr, 0);
		if (r < 0)
			return r;
	}
	return 0;
}

static int add_ioctls(scmp_filter_ctx ctx, int fd, const unsigned long *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r = fd >= 0 ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 2,
						   SCMP_A0(SCMP_CMP_EQ, (uint64_t)fd),
						   SCMP_A1(SCMP_CMP_EQ, (uint64_t)cmds[i]))
				: seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
						   SCMP_A1(SCMP_CMP_EQ, (uint64_t)cmds[i]));
		if (r < 0)
			return r;
	}
	return 0;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* tgkill with the vCPU kick's signal only (kap_vcpu_kick): no other signal to any thread. */
static int add_kick(scmp_filter_ctx ctx)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				SCMP_A2(SCMP_CMP_EQ, (uint64_t)SIGRTMIN));
}

static int add_kind(scmp_filter_ctx ctx, enum kap_jail_kind kind, const struct kap_vm *vm,
		    int vcpu_fd)
{
	int r = 0;
	switch (kind) {
	case KAP_JAIL_VCPU:
		if ((r = add_all(ctx, sys_vcpu, N(sys_vcpu))) < 0 || (r = add_kick(ctx)) < 0)
			return r;
		/* A soft vCPU (--accel soft) makes no ioctl: it runs the guest itself. */
		if (vm->soft)
			return 0;
		if ((r = add_ioctls(ctx, vcpu_fd, ioctl_vcpu_own, N(ioctl_vcpu_own))) < 0)
			return r;
		return add_ioctls(ctx, vm->fd, ioctl_vm_irq, N(ioctl_vm_irq));
	case KAP_JAIL_LOOP:
		/*
		 * Teardown removes the API socket, the VM's directory and the vsock socket by
		 * path: inside the jail they fail as the read-only root would have them fail,
		 * and the caller outside removes them (remove_paths).
		 */
		for (size_t i = 0; i < N(sys_loop_refused); i++)
			if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EROFS),
						  sys_loop_refused[i].nr, 0)) < 0)
				return r;
		if ((r = add_all(ctx, sys_loop, N(sys_loop))) < 0 || (r = add_kick(ctx)) < 0 ||
		    (r = add_ioctls(ctx, -1, ioctl_tty, N(ioctl_tty))) < 0)
			return r;
		return vm->soft ? 0 : add_ioctls(ctx, vm->fd, ioctl_vm_irq, N(ioctl_vm_irq));
	case KAP_JAIL_DEVICE:
		if ((r = add_all(ctx, sys_device, N(sys_device))) < 0)
			return r;
		/* vsock: guest-initiated connections are new AF_UNIX stream sockets. */
		if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
					  SCMP_A0(SCMP_CMP_EQ, AF_UNIX))) < 0)
			return r;
		/* Soft: this kind also runs the userspace irqfds' thread (soft/irqfd.c). */
		return vm->soft ? 0 : add_ioctls(ctx, vm->fd, ioctl_vm_irq, N(ioctl_vm_irq));
	case KAP_JAIL_FS:
		if ((r = add_all(ctx, sys_fs, N(sys_fs))) < 0)
			return r;
		return vm->soft ? 0 : add_ioctls(ctx, vm->fd, ioctl_vm_irq, N(ioctl_vm_irq));
	case KAP_JAIL_MIGRATE:
		if ((r = add_all(ctx, sys_migrate, N(sys_migrate))) < 0 ||
		    (r = add_kick(ctx)) < 0 || vm->soft)
			return r;
		/* Pausing the guest and saving its state, the dirty log: KVM requests. */
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, (uint64_t)KVMIO << 8));
	case KAP_JAIL_API:
		if ((r = add_all(ctx, sys_api, N(sys_api))) < 0 || (r = add_kick(ctx)) < 0 ||
		    (r = seccomp_rule_add(
			 ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
			 SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))) < 0 ||
		    (r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
			return r;
		/*
		 * The migration thread names itself and installs its own filter (kap_jail_thread)
		 * under this one: prctl for those two only, seccomp only to add a filter (which
		 * can only take rights away).
		 */
		if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
					  SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME))) < 0 ||
		    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
					  SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS))) < 0 ||
		    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 1,
					  SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER))) < 0 ||
		    vm->soft)
			return r;
		/*
		 * Pause, resume and snapshot read and write machine state through many KVM
		 * requests on the VM and vCPU fds: any request of KVM's ioctl type (KVMIO).
		 */
		return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, (uint64_t)KVMIO << 8));
	case KAP_JAIL_KINDS:
		break;
	}
	return -EINVAL;
}

/* Compiles one kind's filter into a BPF program (libseccomp exports it through a memfd). */
static int build_prog(enum kap_jail_kind kind, const struct kap_vm *vm, int vcpu_fd,
		      struct jail_prog *out, struct kapsel_error **err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		return kap_error(err, ENOMEM, "jail: seccomp filter (%s)", kind_names[kind]);
	int r;
	/* no_new_privs is set once for the process (kap_jail_enter). */
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0 ||
	    (r = add_all(ctx, sys_common, N(sys_common))) < 0 ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				  SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))) < 0 ||
	    (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				  SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))) < 0 ||
	    /* The SIGSYS handler's way out: the kernel kills the whole process. */
	    (r = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(getppid), 0)) < 0 ||
	    (r = add_kind(ctx, kind, vm, vcpu_fd)) < 0) {
		seccomp_release(ctx);
		return kap_error(err, -r, "jail: seccomp filter (%s)", kind_names[kind]);
	}
	cleanup_close int mfd = memfd_create("kapsel-seccomp", MFD_CLOEXEC);
	if (mfd < 0) {
		seccomp_release(ctx);
		return kap_error(err, errno, "jail: memfd for the seccomp filter");
	}
	r = seccomp_export_bpf(ctx, mfd);
	seccomp_release(ctx);
	if (r < 0)
		return kap_error(err, -r, "jail: export the seccomp filter (%s)", kind_names[kind]);
	off_t size = lseek(mfd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS)
		return kap_error_plain(err, EINVAL, "jail: seccomp filter (%s): %lld bytes of BPF",
				       kind_names[kind], (long long)size);
	out->insns = malloc((size_t)size);
	if (!out->insns)
		return kap_error(err, ENOMEM, "jail: seccomp filter");
	if (pread(mfd, out->insns, (size_t)size, 0) != size)
		return kap_error(err, errno ? errno : EIO, "jail: read the seccomp filter back");
	out->len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
	return 0;
}

/*
 * SIGSYS from a trapped syscall (SECCOMP_RET_TRAP; seccomp_filter.rst): tells the caller what
 * was refused, then dies. Async-signal-safe: a stack message and write-like syscalls only.
 */
static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	ucontext_t *uc = ucv;
	struct jail_msg m = {.type = JM_SYSCALL, .value = si->si_syscall};
	m.args[0] = (uint64_t)uc->uc_mcontext.gregs[REG_RDI];
	m.args[1] = (uint64_t)uc->uc_mcontext.gregs[REG_RSI];
	memcpy(m.text, thread_name, sizeof(thread_name));
	if (fault_sock >= 0 && write(fault_sock, &m, sizeof(m)) < 0)
		m.value = -1;
	/* No filter allows getppid: SECCOMP_RET_KILL_PROCESS. */
	syscall(SYS_getppid);
	for (;;)
		syscall(SYS_getppid);
}

static void die(const char *what, int e) __attribute__((noreturn));
static void die(const char *what, int e)
{
	struct jail_msg m = {.type = JM_RESULT, .value = -EPERM};
	snprintf(m.text, sizeof(m.text), "vm: jail: %s: %s", what, strerror(e));
	if (active)
		send_msg(active->sock, &m);
	_exit(125);
}

void kap_jail_thread(enum kap_jail_kind kind, unsigned int index)
{
	struct kap_jail *j = active;
	if (!j)
		return;
	struct jail_prog *p = kind == KAP_JAIL_VCPU ? &j->vcpus[index] : &j->progs[kind];
	if (kind == KAP_JAIL_VCPU)
		snprintf(thread_name, sizeof(thread_name), "vcpu%u", index);
	else
		snprintf(thread_name, sizeof(thread_name), "%s", kind_names[kind]);
	struct sock_fprog prog = {.len = p->len, .filter = p->insns};
	/* Without SECCOMP_FILTER_FLAG_TSYNC: this thread only (seccomp_filter.rst). */
	if (!p->insns || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		die("install the seccomp filter", p->insns ? errno : EINVAL);
	/* The test hook (docs/vm.md): a vCPU thread makes a syscall outside its list. */
	if (kind == KAP_JAIL_VCPU && index == 0 && j->selftest_open)
		syscall(SYS_open, "/", O_RDONLY);
}

/* ---- the cgroup (made and removed by the caller) ---- */

struct jail_cgroup {
	char dirs[2][192];
	int n;
};

/*
 * A caller killed with SIGKILL leaves its VMM's cgroup behind (the VMM dies with it,
 * PR_SET_PDEATHSIG): remove the vm-<pid> cgroups whose process is gone. rmdir refuses a cgroup
 * that still has processes, so a live VM's is never touched.
 */
static void sweep(const char *parent)
{
	DIR *d = opendir(parent);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		if (strncmp(e->d_name, "vm-", 3) || e->d_type != DT_DIR)
			continue;
		long pid = strtol(e->d_name + 3, &end, 10);
		if (*end || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		char path[256];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", parent, e->d_name) < sizeof(path))
			rmdir(path);
	}
	closedir(d);
}

/*
 * cgroup v2 when /sys/fs/cgroup is cgroup2 itself; else (legacy or hybrid, where cgroup2 holds
 * no cpu or memory controller) the v1 cpu and memory hierarchies. The VMM's cgroup is
 * kapsel/vm-<pid> in each; "kapsel" is shared with containers and never removed here.
 */
static int cgroup_create(struct jail_cgroup *cg, pid_t pid, struct kapsel_error **err)
{
	struct statfs sf;
	const char *v1[] = {"cpu", "memory"};
	bool v2 = statfs(JAIL_CGROUP_ROOT, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
	size_t n = v2 ? 1 : N(v1);
	struct stat st;
	if (!v2 &&
	    (stat(JAIL_CGROUP_ROOT "/cpu", &st) < 0 || stat(JAIL_CGROUP_ROOT "/memory", &st) < 0))
		return kap_error_plain(err, ENOENT,
				       "jail: no cgroup hierarchy at " JAIL_CGROUP_ROOT
				       " (cgroup2, or v1 cpu and memory) for the VMM's cgroup");
	cg->n = 0;
	for (size_t i = 0; i < n; i++) {
		char parent[128], procs[224];
		snprintf(parent, sizeof(parent), "%s%s%s/kapsel", JAIL_CGROUP_ROOT, v2 ? "" : "/",
			 v2 ? "" : v1[i]);
		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			return kap_error(err, errno, "jail: cgroup %s", parent);
		sweep(parent);
		char *d = cg->dirs[cg->n];
		if ((size_t)snprintf(d, sizeof(cg->dirs[0]), "%s/vm-%d", parent, (int)pid) >=
		    sizeof(cg->dirs[0]))
			return kap_error_plain(err, ENAMETOOLONG, "jail: cgroup in %s", parent);
		if (mkdir(d, 0755) < 0)
			return kap_error(err, errno, "jail: cgroup %s", d);
		cg->n++;
		if ((size_t)snprintf(procs, sizeof(procs), "%s/cgroup.procs", d) >= sizeof(procs))
			return kap_error_plain(err, ENAMETOOLONG, "jail: cgroup %s", d);
		cleanup_close int fd = open(procs, O_WRONLY | O_CLOEXEC);
		char s[16];
		int len = snprintf(s, sizeof(s), "%d", (int)pid);
		if (fd < 0 || write(fd, s, (size_t)len) != len)
			return kap_error(err, errno, "jail: join %s", procs);
	}
	return 0;
}

/* Removes the VMM's cgroup, the last process gone; a dying task may hold it a moment. */
static void cgroup_remove(struct jail_cgroup *cg)
{
	for (int i = cg->n - 1; i >= 0; i--) {
		for (int t = 0; t < 200 && rmdir(cg->dirs[i]) < 0 && errno == EBUSY; t++)
			usleep(5000);
	}
	cg->n = 0;
}

/* ---- the caller's side ---- */

static int write_map(pid_t pid, const char *file, unsigned int id)
{
	char path[64], line[32];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	int len = snprintf(line, sizeof(line), "0 %u 1\n", id);
	cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, line, (size_t)len) != len)
		return -errno;
	return 0;
}

/* What the child left on the host by path: removed once it is gone (it cannot, jailed). */
static void remove_paths(const struct kapsel_vm_config *c)
{
	struct stat st;
	if (c->vsock_path && lstat(c->vsock_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(c->vsock_path);
	if (c->api_sock && lstat(c->api_sock, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(c->api_sock);
	/* An --incoming unix: listener (migrate.c), outside the jail's root. */
	if (c->incoming && !strncmp(c->incoming, "unix:", 5) && lstat(c->incoming + 5, &st) == 0 &&
	    S_ISSOCK(st.st_mode))
		unlink(c->incoming + 5);
	if (!c->name || !c->runtime_dir)
		return;
	char dir[4096];
	if ((size_t)snprintf(dir, sizeof(dir), "%s/vm/%s", c->runtime_dir, c->name) >= sizeof(dir))
		return;
	cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return;
	unlinkat(dfd, "state.json", 0);
	if (!c->api_sock)
		unlinkat(dfd, "api.sock", 0);
	rmdir(dir);
}

static int report(const struct jail_msg *fault, int status, const struct jail_msg *res,
		  bool have_res, struct kapsel_error **err)
{
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS && fault->type == JM_SYSCALL) {
		char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, fault->value);
		char call[96];
		if (fault->value == SCMP_SYS(ioctl))
			snprintf(call, sizeof(call), "ioctl(fd %" PRIu64 ", 0x%" PRIx64 ")",
				 fault->args[0], fault->args[1]);
		else
			snprintf(call, sizeof(call), "%s", name ? name : "?");
		int r = kap_error_plain(err, EPERM,
					"vm: jail: the %s thread called %s (syscall %d), which its "
					"seccomp filter does not allow: the VMM was killed",
					fault->text, call, fault->value);
		free(name);
		return r;
	}
	if (WIFSIGNALED(status))
		return kap_error_plain(err, EIO, "vm: jail: the VMM was killed by signal %d (%s)",
				       WTERMSIG(status), strsignal(WTERMSIG(status)));
	if (!have_res)
		return kap_error_plain(err, EIO, "vm: jail: the VMM exited with status %d",
				       WEXITSTATUS(status));
	if (res->value < 0)
		return kap_error_plain(err, -res->value, "%s", res->text);
	return res->value;
}

/* Waits for the child: answers its map request, forwards SIGINT/SIGTERM, collects the end. */
static int supervise(const struct kapsel_vm_config *c, pid_t pid, int sock, struct jail_cgroup *cg,
		     struct kapsel_error **err)
{
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	cleanup_close int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	struct jail_msg fault = {0}, res = {0};
	bool have_res = false, entered = false;
	for (;;) {
		struct pollfd p[2] = {{.fd = sock, .events = POLLIN},
				      {.fd = sfd, .events = POLLIN}};
		if (poll(p, sfd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		struct signalfd_siginfo si;
		if (sfd >= 0 && (p[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == sizeof(si))
			kill(pid, (int)si.ssi_signo);
		if (!p[0].revents)
			continue;
		struct jail_msg m;
		if (recv_msg(sock, &m) < 0)
			break;
		if (m.type == JM_MAP) {
			struct jail_msg a = {.type = JM_MAPPED};
			int r = write_map(pid, "uid_map", c->jail_uid);
			if (r == 0)
				r = write_map(pid, "gid_map", c->jail_gid);
			a.value = r;
			if (r < 0)
				snprintf(a.text, sizeof(a.text), "write /proc/%d/uid_map: %s",
					 (int)pid, strerror(-r));
			send_msg(sock, &a);
		} else if (m.type == JM_ENTERED) {
			entered = true;
		} else if (m.type == JM_SYSCALL) {
			fault = m;
		} else if (m.type == JM_RESULT) {
			res = m;
			have_res = true;
		}
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	cgroup_remove(cg);
	if (entered)
		remove_paths(c);
	return report(&fault, status, &res, have_res, err);
}

static int userns_error(struct kapsel_error **err, int e)
{
	if (e == ENOSPC || e == EPERM || e == EUSERS || e == EACCES)
		return kap_error(err, e,
				 "--jail: user namespaces are not allowed here "
				 "(user.max_user_namespaces, kernel.unprivileged_userns_clone or a "
				 "seccomp policy refuses them)");
	return kap_error(err, e, "--jail: new user namespace");
}

/* Before anything is opened: can a user namespace be made here at all? (a throwaway child) */
static int probe_userns(struct kapsel_error **err)
{
	pid_t pid = fork();
	if (pid < 0)
		return kap_error(err, errno, "jail: fork");
	if (pid == 0)
		_exit(unshare(CLONE_NEWUSER) < 0 ? (errno & 0xff) : 0);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status))
		return kap_error_plain(err, EIO, "jail: the user namespace probe died");
	return WEXITSTATUS(status) ? userns_error(err, WEXITSTATUS(status)) : 0;
}

int kap_jail_spawn(const struct kapsel_vm_config *c, struct kap_jail **child,
		   struct kapsel_error **err)
{
	*child = NULL;
	if (geteuid() != 0)
		return kap_error_plain(
		    err, EPERM,
		    "--jail: needs root (it makes the VMM's cgroup and maps it "
		    "to uid %u in a user namespace); run as root or without --jail",
		    c->jail_uid);
	if (c->jail_uid == 0 || c->jail_gid == 0)
		return kap_error_plain(
		    err, EINVAL,
		    "--jail-uid %u --jail-gid %u: the jailed VMM must not be root "
		    "on the host",
		    c->jail_uid, c->jail_gid);
	int r = probe_userns(err);
	if (r < 0)
		return r;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return kap_error(err, errno, "jail: socketpair");
	/*
	 * A new pid namespace for the child only: unshare(CLONE_NEWPID) changes where the next
	 * fork goes, and setns back restores it, so this process can still make threads.
	 */
	cleanup_close int own = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (own < 0 || unshare(CLONE_NEWPID) < 0) {
		r = kap_error(err, errno, "jail: new pid namespace");
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	/* SIGINT/SIGTERM blocked before the fork: the child, a pid namespace's init, gets them. */
	sigset_t sigs, old;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, &old);
	pid_t pid = fork();
	int fork_errno = errno;
	if (pid != 0 && setns(own, CLONE_NEWPID) < 0)
		kap_warn("jail: setns back to the host's pid namespace: %s", strerror(errno));
	if (pid < 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		close(sv[0]);
		close(sv[1]);
		return kap_error(err, fork_errno, "jail: fork the VMM");
	}
	if (pid == 0) {
		close(sv[0]);
		/* The caller is the jail's only way out: the VMM does not outlive it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		struct kap_jail *j = calloc(1, sizeof(*j));
		if (!j)
			_exit(125);
		j->sock = sv[1];
		j->uid = c->jail_uid;
		j->gid = c->jail_gid;
		const char *st = getenv("KAPSEL_JAIL_SELFTEST");
		j->selftest_open = st && strcmp(st, "open") == 0;
		active = j;
		struct jail_msg m;
		if (recv_msg(j->sock, &m) < 0 || m.type != JM_GO)
			_exit(125);
		j->host_pid = m.value;
		/* What this process inherited is not the VMM's: only stdio and the log stay. */
		int keep[] = {kap_log_fd(), j->sock};
		r = kap_proc_close_fds_except(0, keep, N(keep));
		if (r < 0)
			die("close inherited fds", -r);
		*child = j;
		return 0;
	}
	close(sv[1]);
	int sock = sv[0];
	struct jail_cgroup cg = {0};
	r = cgroup_create(&cg, pid, err);
	struct jail_msg go = {.type = JM_GO, .value = pid};
	if (r < 0 || send_msg(sock, &go) < 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		cgroup_remove(&cg);
		close(sock);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		return r < 0 ? r : kap_error_plain(err, EIO, "jail: the VMM died at its start");
	}
	r = supervise(c, pid, sock, &cg, err);
	close(sock);
	/* What arrived for the child while blocked was forwarded; drop it here. */
	struct timespec zero = {0};
	while (sigtimedwait(&sigs, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

_Noreturn void kap_jail_child_exit(struct kap_jail *j, int r, const struct kapsel_error *err)
{
	struct jail_msg m = {.type = JM_RESULT, .value = r};
	if (r < 0)
		snprintf(m.text, sizeof(m.text), "%s", err && err->msg ? err->msg : strerror(-r));
	send_msg(j->sock, &m);
	_exit(0);
}

/* ---- the child's side: closing the jail ---- */

/* mkdir -p of path below root (an absolute path; root has no trailing slash). */
static int mkdirs(const char *root, const char *path)
{
	char buf[4096];
	if ((size_t)snprintf(buf, sizeof(buf), "%s%s", root, path) >= sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + strlen(root) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * The new root: an empty tmpfs, the vsock socket's directory bound in at its own path, made
 * read-only, pivoted into; the host's root detached.
 */
static int make_root(const struct kapsel_vm_config *c, struct kapsel_error **err)
{
	cleanup_free char *vdir = NULL;
	cleanup_close int vfd = -EBADF;
	if (c->vsock_path) {
		vdir = realpath(c->vsock_path, NULL);
		char *slash = vdir ? strrchr(vdir, '/') : NULL;
		if (!slash)
			return kap_error(err, errno ? errno : EINVAL, "jail: --vsock %s",
					 c->vsock_path);
		*slash = 0;
	}
	if (unshare(CLONE_NEWNS) < 0)
		return kap_error(err, errno, "jail: new mount namespace");
	/* Nothing done here may reach the host's mount namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return kap_error(err, errno, "jail: make / private");
	/*
	 * Opened in the new namespace (a bind source must be one of its mounts) and before the
	 * stage covers it: mount takes it by /proc/self/fd.
	 */
	if (vdir && (vfd = open(*vdir ? vdir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		return kap_error(err, errno, "jail: open %s", vdir);
	if (mount("kapsel-jail", JAIL_STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=64k,nr_inodes=64,mode=0755") < 0)
		return kap_error(err, errno, "jail: mount tmpfs on %s", JAIL_STAGE);
	if (vfd >= 0 && *vdir) {
		char src[64];
		int r = mkdirs(JAIL_STAGE, vdir);
		if (r < 0)
			return kap_error(err, -r, "jail: mkdir %s in the new root", vdir);
		cleanup_free char *dst = NULL;
		snprintf(src, sizeof(src), "/proc/self/fd/%d", vfd);
		if (asprintf(&dst, "%s%s", JAIL_STAGE, vdir) < 0) {
			dst = NULL;
			return kap_error(err, ENOMEM, "jail");
		}
		if (mount(src, dst, NULL, MS_BIND, NULL) < 0 ||
		    mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  NULL) < 0)
			return kap_error(err, errno, "jail: bind %s", vdir);
	}
	/* pivot_root(".", "."): the old root stacks under the new one and is detached. */
	if (chdir(JAIL_STAGE) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return kap_error(err, errno, "jail: pivot_root");
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return kap_error(err, errno, "jail: detach the host's root");
	if (mount(NULL, "/", NULL,
		  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return kap_error(err, errno, "jail: make the root read-only");
	return 0;
}

/*
 * virtio-fs reopens its O_PATH nodes through /proc/self/fd (virtio/fs.c). The host's /proc,
 * which the shares opened before the jail, reaches every host process through "..": each
 * share gets the fd directory of a procfs of the VMM's own pid namespace instead, in which
 * the VMM is the only process (subset=pid: no /proc/sys or other system files; hidepid),
 * read-only, and attached nowhere (fsmount makes a detached mount; the jail's root has no
 * /proc). Made while the VMM is still root of the host's user namespace, which owns its pid
 * namespace (mounting a procfs needs CAP_SYS_ADMIN there).
 */
static int jail_proc(struct kap_vm *vm, struct kapsel_error **err)
{
	bool any = false;
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		any |= vm->virtio[i].dev.ops->device_id == VIRTIO_ID_FS;
	if (!any)
		return 0;
	cleanup_close int fsfd = fsopen("proc", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return kap_error(err, errno, "jail: a procfs for virtio-fs: fsopen");
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "subset", "pid", 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_STRING, "hidepid", "invisible", 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return kap_error(err, errno, "jail: a procfs for virtio-fs: fsconfig");
	cleanup_close int mnt =
	    fsmount(fsfd, FSMOUNT_CLOEXEC,
		    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	if (mnt < 0)
		return kap_error(err, errno, "jail: a procfs for virtio-fs: fsmount");
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		int r;
		if (vm->virtio[i].dev.ops->device_id == VIRTIO_ID_FS &&
		    (r = kap_virtio_fs_use_proc(&vm->virtio[i].dev, mnt, err)) < 0)
			return r;
	}
	return 0;
}

static int drop_caps(struct kapsel_error **err)
{
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			return kap_error(err, errno,
					 "jail: drop capability %d from the bounding set", cap);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return kap_error(err, errno, "jail: clear the ambient capabilities");
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{0}};
	if (syscall(SYS_capset, &h, d) < 0)
		return kap_error(err, errno, "jail: capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return kap_error(err, errno, "jail: no_new_privs");
	return 0;
}

int kap_jail_enter(struct kap_jail *j, struct kap_vm *vm, struct kapsel_error **err)
{
	int r;
	/* The log's local time reads /etc/localtime once: now, while the host's root is there. */
	tzset();
	/* The programs first, while allocation and libseccomp's needs are unrestricted. */
	for (int k = 0; k < KAP_JAIL_KINDS; k++)
		if (k != KAP_JAIL_VCPU && (r = build_prog(k, vm, -1, &j->progs[k], err)) < 0)
			return r;
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if ((r = build_prog(KAP_JAIL_VCPU, vm, vm->vcpus[i].fd, &j->vcpus[i], err)) < 0)
			return r;
	if ((r = make_root(vm->cfg, err)) < 0 || (r = jail_proc(vm, err)) < 0)
		return r;
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP) <
	    0)
		return userns_error(err, errno);
	struct jail_msg m = {.type = JM_MAP};
	if (send_msg(j->sock, &m) < 0 || recv_msg(j->sock, &m) < 0 || m.type != JM_MAPPED)
		return kap_error_plain(err, EIO, "jail: no answer to the id map request");
	if (m.value < 0)
		return kap_error_plain(err, -m.value, "jail: %s", m.text);
	if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0)
		return kap_error(err, errno, "jail: become uid %u gid %u", j->uid, j->gid);
	/*
	 * A credential change clears the parent-death signal (prctl(2), PR_SET_PDEATHSIG): set it
	 * again. A caller already gone shows as the failed JM_ENTERED below.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return kap_error(err, errno, "jail: parent-death signal");
	if (sethostname("kapsel-vm", 9) < 0)
		return kap_error(err, errno, "jail: sethostname");
	/* Not dumpable: no core file of guest memory, no ptrace or /proc access by the uid. */
	struct rlimit zero = {0, 0};
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || setrlimit(RLIMIT_CORE, &zero) < 0)
		return kap_error(err, errno, "jail: not dumpable");
	if ((r = drop_caps(err)) < 0)
		return r;
	struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return kap_error(err, errno, "jail: sigaction SIGSYS");
	sigset_t sys;
	sigemptyset(&sys);
	sigaddset(&sys, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &sys, NULL);
	fault_sock = j->sock;
	m = (struct jail_msg){.type = JM_ENTERED};
	if (send_msg(j->sock, &m) < 0)
		return kap_error_plain(err, EIO, "jail: the caller is gone");
	kap_debug("vm: jailed as uid %u gid %u", j->uid, j->gid);
	return 0;
}
