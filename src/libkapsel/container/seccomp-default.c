/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The default seccomp profile: moby's profiles/seccomp/default.json (which podman's
 * containers-common mirrors) re-expressed as a plain OCI linux.seccomp object. moby's profile
 * format has "includes"/"excludes" by capability and architecture that the OCI format lacks;
 * they are resolved here, for the build's architecture and the container's capabilities, so
 * that what comes out is an ordinary profile for kap_seccomp_prepare().
 *
 * Everything not listed fails with EPERM. Never allowed, whatever the capabilities, because they
 * reach host-wide state or have a record of kernel exploits: kexec_load, kexec_file_load,
 * keyctl, add_key and request_key (the kernel keyring is not namespaced), pivot_root, swapon,
 * swapoff, userfaultfd, uselib. mount, umount2, setns, unshare and namespace-creating clone need
 * CAP_SYS_ADMIN; module loading, bpf, perf_event_open and reboot need their own capability, as
 * in moby.
 * ptrace is allowed as in moby on kernels >= 4.8 (kapsel needs 5.6 for openat2 anyway): since
 * 4.8 seccomp is re-checked after a tracer changes a syscall, so tracing cannot bypass the
 * filter, and processes outside the container are out of reach through the pid namespace.
 */
#include <errno.h>
#include <linux/capability.h>
#include <stddef.h>
#include <stdint.h>

#include "container/seccomp-default.h"
#include "core/cleanup.h"
#include "core/json.h"

/* moby's unconditional allow list, plus ptrace and process_vm_* (moby: minKernel 4.8). */
static const char *const allowed[] = {
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
};

#if defined(__x86_64__)
static const char *const arches[] = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
static const char *const arch_allowed[] = {"arch_prctl", "modify_ldt"};
#elif defined(__aarch64__)
static const char *const arches[] = {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"};
static const char *const arch_allowed[] = {"arm_fadvise64_64", "arm_sync_file_range",
					   "sync_file_range2", "breakpoint",
					   "cacheflush",       "set_tls"};
#else
/* Other architectures: the native one only (a filter always has it), no extra syscalls. */
static const char *const arches[] = {NULL};
static const char *const arch_allowed[] = {NULL};
#endif

/* moby's "includes": {"caps": [...]} entries. */
#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})
static const struct {
	int cap;
	const char *const *names;
} cap_allowed[] = {
    {CAP_DAC_READ_SEARCH, NAMES("open_by_handle_at")},
    {CAP_SYS_ADMIN,
     NAMES("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
	   "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
	   "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
	   "umount2", "unshare")},
    {CAP_SYS_BOOT, NAMES("reboot")},
    {CAP_SYS_CHROOT, NAMES("chroot")},
    {CAP_SYS_MODULE, NAMES("delete_module", "init_module", "finit_module")},
    {CAP_SYS_PACCT, NAMES("acct")},
    {CAP_SYS_PTRACE, NAMES("kcmp", "pidfd_getfd", "process_madvise")},
    {CAP_SYS_RAWIO, NAMES("iopl", "ioperm")},
    {CAP_SYS_TIME, NAMES("settimeofday", "stime", "clock_settime", "clock_settime64")},
    {CAP_SYS_TTY_CONFIG, NAMES("vhangup")},
    {CAP_SYS_NICE, NAMES("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node")},
    {CAP_SYSLOG, NAMES("syslog")},
    {CAP_BPF, NAMES("bpf")},
    {CAP_PERFMON, NAMES("perf_event_open")},
};

/*
 * CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
 * CLONE_NEWNET: without CAP_SYS_ADMIN, clone may create no namespace (moby's 2114060288).
 */
#define CLONE_NS_FLAGS 0x7E020000ULL

struct default_arg {
	unsigned int index;
	uint64_t value;
	const char *op;
};

static bool has_cap(uint64_t caps, int cap)
{
	return cap >= 0 && cap < 64 && (caps & (UINT64_C(1) << cap));
}

/* kap_json_set/append take ownership of what they are given, so a failed allocation is only
 * detected by checking each new node before it is linked in. */
static int set_new(struct kap_json *obj, const char *key, struct kap_json *val)
{
	if (!val)
		return -ENOMEM;
	kap_json_set(obj, key, val);
	return 0;
}

static int append_new(struct kap_json *arr, struct kap_json *val)
{
	if (!val)
		return -ENOMEM;
	kap_json_append(arr, val);
	return 0;
}

/* names: NULL-terminated, or n_names entries when n_names > 0. errno_ret < 0: none. */
static int add_rule(struct kap_json *syscalls, const char *const *names, size_t n_names,
		    const char *action, int errno_ret, const struct default_arg *args,
		    size_t n_args)
{
	struct kap_json *rule = kap_json_new_object();
	if (append_new(syscalls, rule) < 0)
		return -ENOMEM;
	struct kap_json *arr = kap_json_new_array();
	if (set_new(rule, "names", arr) < 0)
		return -ENOMEM;
	for (size_t i = 0; n_names ? i < n_names : names[i] != NULL; i++)
		if (names[i] && append_new(arr, kap_json_new_string(names[i])) < 0)
			return -ENOMEM;
	if (set_new(rule, "action", kap_json_new_string(action)) < 0)
		return -ENOMEM;
	if (errno_ret >= 0 && set_new(rule, "errnoRet", kap_json_new_int64(errno_ret)) < 0)
		return -ENOMEM;
	if (n_args == 0)
		return 0;
	struct kap_json *jargs = kap_json_new_array();
	if (set_new(rule, "args", jargs) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n_args; i++) {
		struct kap_json *a = kap_json_new_object();
		if (append_new(jargs, a) < 0 ||
		    set_new(a, "index", kap_json_new_int64(args[i].index)) < 0 ||
		    set_new(a, "value", kap_json_new_int64((int64_t)args[i].value)) < 0 ||
		    set_new(a, "op", kap_json_new_string(args[i].op)) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int build(struct kap_json *profile, uint64_t caps)
{
	/* EPERM, not ENOSYS, for everything else: what moby returns, and what programs that
	 * probe for a feature already handle from unprivileged runs. */
	if (set_new(profile, "defaultAction", kap_json_new_string("SCMP_ACT_ERRNO")) < 0 ||
	    set_new(profile, "defaultErrnoRet", kap_json_new_int64(EPERM)) < 0)
		return -ENOMEM;

	struct kap_json *jarches = kap_json_new_array();
	if (set_new(profile, "architectures", jarches) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(arches); i++)
		if (arches[i] && append_new(jarches, kap_json_new_string(arches[i])) < 0)
			return -ENOMEM;

	struct kap_json *syscalls = kap_json_new_array();
	if (set_new(profile, "syscalls", syscalls) < 0)
		return -ENOMEM;
	int r = add_rule(syscalls, allowed, KAP_ARRAY_SIZE(allowed), "SCMP_ACT_ALLOW", -1, NULL, 0);
	if (r < 0)
		return r;
	if (arch_allowed[0] && (r = add_rule(syscalls, arch_allowed, KAP_ARRAY_SIZE(arch_allowed),
					     "SCMP_ACT_ALLOW", -1, NULL, 0)) < 0)
		return r;

	/* AF_VSOCK (40) sockets reach the host's vsock services, not the container's network. */
	static const struct default_arg socket_arg[] = {{0, 40, "SCMP_CMP_NE"}};
	if ((r = add_rule(syscalls, NAMES("socket"), 0, "SCMP_ACT_ALLOW", -1, socket_arg, 1)) < 0)
		return r;
	/* personality: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the 0xffffffff
	 * query only. Conditions on one argument are ORed (one rule each), as in runc. */
	static const struct default_arg personality_args[] = {
	    {0, 0x0, "SCMP_CMP_EQ"},	    {0, 0x8, "SCMP_CMP_EQ"},
	    {0, 0x20000, "SCMP_CMP_EQ"},    {0, 0x20008, "SCMP_CMP_EQ"},
	    {0, 0xffffffff, "SCMP_CMP_EQ"},
	};
	if ((r = add_rule(syscalls, NAMES("personality"), 0, "SCMP_ACT_ALLOW", -1, personality_args,
			  KAP_ARRAY_SIZE(personality_args))) < 0)
		return r;

	for (size_t i = 0; i < KAP_ARRAY_SIZE(cap_allowed); i++) {
		if (has_cap(caps, cap_allowed[i].cap) &&
		    (r = add_rule(syscalls, cap_allowed[i].names, 0, "SCMP_ACT_ALLOW", -1, NULL,
				  0)) < 0)
			return r;
	}
	if (!has_cap(caps, CAP_SYS_ADMIN)) {
		/* clone without namespace flags: fork, vfork and threads keep working. */
		static const struct default_arg clone_arg[] = {
		    {0, CLONE_NS_FLAGS, "SCMP_CMP_MASKED_EQ"}};
		if ((r = add_rule(syscalls, NAMES("clone"), 0, "SCMP_ACT_ALLOW", -1, clone_arg,
				  1)) < 0)
			return r;
		/* clone3 passes its flags in memory, where seccomp cannot look. ENOSYS rather
		 * than EPERM makes glibc (>= 2.34) fall back to clone, which is filtered. */
		if ((r = add_rule(syscalls, NAMES("clone3"), 0, "SCMP_ACT_ERRNO", ENOSYS, NULL,
				  0)) < 0)
			return r;
	}
	return 0;
}

struct kap_json *kap_seccomp_default_profile(uint64_t caps)
{
	cleanup_json struct kap_json *profile = kap_json_new_object();
	if (!profile || build(profile, caps) < 0)
		return NULL;
	return steal_ptr(profile);
}
