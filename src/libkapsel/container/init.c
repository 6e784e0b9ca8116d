/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container process: from the moment clone3() returns in the child until execve(). It runs
 * with the runtime's privileges inside the new namespaces, talks to the runtime over the sync
 * socket, and reports any failure as {errno, message} so that `create` fails (and cleans up)
 * instead of `start`.
 */
#include <fcntl.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container/container.h"
#include "container/seccomp.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/syscalls.h"
#include "net/netlink.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static _Noreturn void die(struct kap_init_ctx *ctx, struct kapsel_error *err)
{
	kap_sync_send_error(ctx->sync_fd, err);
	_exit(127);
}

int kap_init_chdir(const char *field, const char *cwd, struct kapsel_error **err)
{
	/*
	 * The working directory comes from config.json or an image's WorkingDir: hostile. Resolve
	 * it inside our root, as if it were "/", refusing magic links: /proc/self/fd/N or
	 * /proc/1/cwd would put the cwd on the host (CVE-2024-21626), and `..` stops at the root.
	 */
	cleanup_close int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return kap_error(err, errno, "%s: open /", field);
	const char *rel = cwd;
	while (*rel == '/')
		rel++;
	cleanup_close int fd = kap_openat2(root, *rel ? rel : ".", O_PATH | O_DIRECTORY | O_CLOEXEC,
					   0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
	if (fd < 0 && errno == ELOOP)
		return kap_error_plain(err, ELOOP,
				       "%s %s: leaves the container's root (a magic link or too "
				       "many symlinks)",
				       field, cwd);
	if (fd < 0)
		return kap_error(err, errno, "%s: chdir to %s", field, cwd);
	if (fchdir(fd) < 0)
		return kap_error(err, errno, "%s: chdir to %s", field, cwd);
	return 0;
}

int kap_init_find_executable(const char *arg0, char *const *env, char *out, size_t outlen,
			     struct kapsel_error **err)
{
	if (!arg0 || !*arg0)
		return kap_error_plain(err, EINVAL, "process.args: empty command");
	if (strchr(arg0, '/')) {
		struct stat st;
		if (stat(arg0, &st) < 0)
			return kap_error(err, errno, "exec \"%s\"", arg0);
		if (!S_ISREG(st.st_mode))
			return kap_error_plain(err, EACCES, "exec \"%s\": not a regular file",
					       arg0);
		if (access(arg0, X_OK) < 0)
			return kap_error(err, errno, "exec \"%s\"", arg0);
		snprintf(out, outlen, "%s", arg0);
		return 0;
	}
	const char *path = DEFAULT_PATH;
	for (char *const *e = env; e && *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			path = *e + 5;
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, ':');
		int n = snprintf(out, outlen, "%.*s/%s", (int)(end - p), p, arg0);
		struct stat st;
		if (n > 0 && (size_t)n < outlen && end != p && stat(out, &st) == 0 &&
		    S_ISREG(st.st_mode) && access(out, X_OK) == 0)
			return 0;
		p = *end ? end + 1 : end;
	}
	return kap_error_plain(err, ENOENT, "exec: \"%s\": executable file not found in $PATH",
			       arg0);
}

static int setup_namespaces_late(struct kap_init_ctx *ctx, struct kapsel_error **err)
{
	const struct kap_spec *spec = ctx->spec;
	/* The cgroup ns is unshared only now, after the runtime placed us in our cgroup, so
	 * that its root is the container's cgroup. Read /proc/self/cgroup first: mount.c needs
	 * the host-side paths for the cgroup bind mounts. */
	cleanup_free char *cg = NULL;
	if (kap_fs_read_file(AT_FDCWD, "/proc/self/cgroup", sizeof(ctx->cgroup_self) - 1, &cg, NULL,
			     NULL) == 0)
		snprintf(ctx->cgroup_self, sizeof(ctx->cgroup_self), "%s", cg);
	if (ctx->new_ns[KAP_NS_CGROUP] && unshare(CLONE_NEWCGROUP) < 0)
		return kap_error(err, errno, "unshare cgroup namespace");
	/* A new network namespace starts with lo down (netdevice(7)); crun and podman bring it
	 * up, and programs that talk to 127.0.0.1 expect it. One joined by path is its owner's. */
	if (ctx->new_ns[KAP_NS_NET] && kap_nl_loopback_up(err) < 0)
		return kap_error_wrap(err, "network namespace");
	/* A uts namespace joined by path is the container's too (runc and crun set the name
	 * there); check_spec refused one that is the runtime's own. */
	if (ctx->new_ns[KAP_NS_UTS] || spec->namespaces[KAP_NS_UTS].path) {
		if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
			return kap_error(err, errno, "hostname: set \"%s\"", spec->hostname);
		if (spec->domainname &&
		    setdomainname(spec->domainname, strlen(spec->domainname)) < 0)
			return kap_error(err, errno, "domainname: set \"%s\"", spec->domainname);
	} else if (spec->hostname && *spec->hostname) {
		return kap_error_plain(err, EINVAL,
				       "hostname: needs a uts namespace in linux.namespaces");
	}
	return 0;
}

_Noreturn void kap_init_main(struct kap_init_ctx *ctx)
{
	struct kapsel_error *err = NULL;
	const struct kap_spec *spec = ctx->spec;
	const struct kap_process *proc = spec->process;
	bool in_userns = ctx->new_ns[KAP_NS_USER] || spec->namespaces[KAP_NS_USER].path;
	/* Sharing the runtime's own nested user namespace (rootless `kapsel run`): setgroups may
	 * be denied there as in a new one. Read before pivot_root changes what /proc is. */
	bool any_userns = in_userns || kap_userns_nested();

	if (in_userns && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)) {
		kap_error(&err, errno, "become root in the user namespace (is uid/gid 0 mapped?)");
		die(ctx, err);
	}
	if (setsid() < 0) {
		kap_error(&err, errno, "setsid");
		die(ctx, err);
	}
	if (!ctx->no_new_keyring) {
		/* A session keyring of its own, so the container cannot read the host's keys. */
		if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS &&
		    errno != EPERM && errno != EDQUOT) {
			kap_error(&err, errno, "join a new session keyring");
			die(ctx, err);
		}
	}
	if (setup_namespaces_late(ctx, &err) < 0)
		die(ctx, err);

	int rootfd = -1;
	if (kap_rootfs_prepare(ctx, &rootfd, &err) < 0)
		die(ctx, err);
	if (kap_sysctl_write(spec, &err) < 0)
		die(ctx, err);
	if (proc->has_oom_score_adj) {
		char v[16];
		int n = snprintf(v, sizeof(v), "%d", proc->oom_score_adj);
		if (kap_fs_write_at(AT_FDCWD, "/proc/self/oom_score_adj", v, (size_t)n, &err) < 0)
			die(ctx, err);
	}
	/* The runtime runs prestart and createRuntime hooks now, in its own namespaces. */
	if (spec->hooks.n[KAP_HOOK_PRESTART] || spec->hooks.n[KAP_HOOK_CREATE_RUNTIME]) {
		struct kap_sync_msg m;
		kap_sync_send(ctx->sync_fd, KAP_SYNC_HOOKS, 0, NULL, -1);
		if (kap_sync_expect(ctx->sync_fd, KAP_SYNC_HOOKS_OK, &m, NULL, &err) < 0)
			_exit(127);
	}
	/* createContainer hooks: in the container's namespaces, before pivot_root. */
	if (spec->hooks.n[KAP_HOOK_CREATE_CONTAINER] &&
	    kap_hooks_run(&spec->hooks, KAP_HOOK_CREATE_CONTAINER, NULL, &err) < 0)
		die(ctx, err);

	/* Opened O_RDWR by the runtime, so the read below waits for `start`'s byte. */
	int fifo = ctx->fifo_fd;

	if (kap_rootfs_pivot(ctx, rootfd, &err) < 0)
		die(ctx, err);
	close(rootfd);

	if (proc->terminal) {
		int master = -1;
		if (kap_terminal_open(proc, &master, &err) < 0)
			die(ctx, err);
		kap_sync_send(ctx->sync_fd, KAP_SYNC_PTY, 0, NULL, master);
		close(master);
	}
	if (kap_rootfs_finalize(ctx, &err) < 0)
		die(ctx, err);
	if (kap_init_chdir("process.cwd", proc->cwd, &err) < 0)
		die(ctx, err);
	if (kap_security_rlimits(proc, &err) < 0)
		die(ctx, err);
	/* Find the binary now so a typo fails `create`, not `start` (as runc does). */
	if (kap_init_find_executable(proc->args[0], proc->env, ctx->exec_path,
				     sizeof(ctx->exec_path), &err) < 0)
		die(ctx, err);
	if (proc->user.has_umask)
		umask(proc->user.umask);
	else
		umask(022);
	/*
	 * Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it now, while the init
	 * still has it, as runc does (the profile then also covers the last setup syscalls). A
	 * notify filter also loads now, so the runtime, still alive, can pass the fd on. Otherwise
	 * the filter is loaded as late as possible, just before execve.
	 */
	bool seccomp_loaded = false;
	if (ctx->seccomp && (!proc->no_new_privileges || kap_seccomp_has_notify(ctx->seccomp))) {
		int nfd = -1;
		if (kap_seccomp_load(ctx->seccomp, &nfd, &err) < 0)
			die(ctx, err);
		if (nfd >= 0) {
			kap_sync_send(ctx->sync_fd, KAP_SYNC_SECCOMP, 0, NULL, nfd);
			close(nfd);
		}
		seccomp_loaded = true;
	}
	if (kap_security_lsm(proc, &err) < 0 || kap_security_user_caps(proc, any_userns, &err) < 0)
		die(ctx, err);
	if (spec->mount_label && *spec->mount_label && access("/sys/fs/selinux/enforce", F_OK) < 0)
		kap_debug("linux.mountLabel ignored: SELinux is not enabled");
	kap_sync_send(ctx->sync_fd, KAP_SYNC_READY, 0, NULL, -1);
	struct kap_sync_msg m;
	if (kap_sync_expect(ctx->sync_fd, KAP_SYNC_DONE, &m, NULL, &err) < 0)
		_exit(127); /* the runtime died or failed: it cleans up */
	close(ctx->sync_fd);

	/* Wait for `start`. EOF cannot happen: we hold the write side ourselves. */
	char c;
	ssize_t n;
	do
		n = read(fifo, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(127);
	/*
	 * The fifo stays open, close-on-exec, until execve: it is the last writer, and `start`
	 * waits for the hangup that its closing causes, so that `start` returns and poststart
	 * hooks run only once the container's program runs (runtime-spec runtime.md#start: the
	 * process is started, config.md#poststart). A failed execve or a death before it also
	 * closes it, so `start` never waits forever.
	 */
	if (fcntl(fifo, F_SETFD, FD_CLOEXEC) < 0)
		_exit(127);

	if (spec->hooks.n[KAP_HOOK_START_CONTAINER] &&
	    kap_hooks_run(&spec->hooks, KAP_HOOK_START_CONTAINER, NULL, &err) < 0) {
		dprintf(STDERR_FILENO, "kapsel: %s\n", err->msg);
		_exit(127);
	}
	/* Only stdio and the preserved fds survive into the container. */
	syscall(SYS_close_range, 3 + ctx->preserve_fds, ~0U, CLOSE_RANGE_CLOEXEC);
	if (ctx->seccomp && !seccomp_loaded) {
		int nfd = -1;
		if (kap_seccomp_load(ctx->seccomp, &nfd, &err) < 0) {
			dprintf(STDERR_FILENO, "kapsel: %s\n", err->msg);
			_exit(127);
		}
	}
	/* An ignored signal survives execve: the program starts with SIGPIPE as POSIX defines it,
	 * whatever the hooks or the runtime's caller did to it. */
	signal(SIGPIPE, SIG_DFL);
	/* So does the signal mask: a caller that blocks signals to sigwait for them (kapsel
	 * run's monitor) must not hand the program a blocked SIGTERM. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(ctx->exec_path, proc->args, proc->env ? proc->env : (char *[]){NULL});
	dprintf(STDERR_FILENO, "kapsel: exec %s: %s\n", ctx->exec_path, strerror(errno));
	_exit(127);
}
