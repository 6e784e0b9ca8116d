/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `exec`: a new process in a running container. It joins every namespace of the container init
 * (user first, since it owns the others; then the rest, mount last) and its cgroup, and forks
 * once more so that it is a member of the container's pid namespace, not merely its child.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "container/cgroup/cgroup.h"
#include "container/container.h"
#include "container/seccomp.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/syscalls.h"

#define API __attribute__((visibility("default")))

static const enum kap_ns_type join_order[] = {KAP_NS_USER, KAP_NS_CGROUP, KAP_NS_IPC,  KAP_NS_UTS,
					      KAP_NS_NET,  KAP_NS_PID,	  KAP_NS_TIME, KAP_NS_MNT};

static int strv_len(char *const *v)
{
	int n = 0;
	while (v && v[n])
		n++;
	return n;
}

/* env: the container's, with K=V overrides replacing same-named entries. */
static char **merge_env(char *const *base, char *const *extra)
{
	int nb = strv_len(base), ne = strv_len(extra), n = 0;
	char **out = calloc((size_t)(nb + ne + 1), sizeof(char *));
	if (!out)
		return NULL;
	for (int i = 0; i < nb; i++) {
		const char *eq = strchr(base[i], '=');
		size_t klen = eq ? (size_t)(eq - base[i]) : strlen(base[i]);
		bool replaced = false;
		for (int k = 0; k < ne; k++)
			if (!strncmp(extra[k], base[i], klen) && extra[k][klen] == '=')
				replaced = true;
		if (!replaced)
			out[n++] = strdup(base[i]);
	}
	for (int k = 0; k < ne; k++)
		out[n++] = strdup(extra[k]);
	return out;
}

/*
 * A decimal id below 2^32 - 1: strtoul() would take "-1" and wrap it, and (uid_t)-1 means
 * "leave unchanged" to setresuid(), which would keep the process root.
 */
static bool parse_id(const char *s, uint32_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v >= UINT32_MAX)
			return false;
	}
	*out = (uint32_t)v;
	*end = p;
	return p != s;
}

static int build_process(const struct kapsel_exec_options *o, const struct kap_spec *spec,
			 struct kap_process **out, struct kapsel_error **err)
{
	if (o->process_file) {
		cleanup_json struct kap_json *j = NULL;
		int r = kap_json_parse_file(o->process_file, &j, err);
		if (r < 0)
			return r;
		return kap_spec_parse_process(j, "process", out, err);
	}
	if (!o->args || !o->args[0])
		return kap_error_plain(err, EINVAL, "exec: no command given");
	const struct kap_process *base = spec->process;
	struct kap_process *p = calloc(1, sizeof(*p));
	if (!p)
		return kap_error(err, ENOMEM, "exec");
	*out = p;
	int na = strv_len(o->args);
	p->args = calloc((size_t)na + 1, sizeof(char *));
	for (int i = 0; p->args && i < na; i++)
		p->args[i] = strdup(o->args[i]);
	p->env = merge_env(base ? base->env : NULL, o->env);
	p->cwd = strdup(o->cwd ? o->cwd : base && base->cwd ? base->cwd : "/");
	p->terminal = o->tty;
	p->no_new_privileges = o->no_new_privs || (base && base->no_new_privileges);
	if (base) {
		p->user.uid = base->user.uid;
		p->user.gid = base->user.gid;
		p->has_caps = base->has_caps;
		p->caps = base->caps;
		if (base->user.n_additional_gids) {
			p->user.additional_gids =
			    calloc(base->user.n_additional_gids, sizeof(gid_t));
			if (p->user.additional_gids) {
				memcpy(p->user.additional_gids, base->user.additional_gids,
				       base->user.n_additional_gids * sizeof(gid_t));
				p->user.n_additional_gids = base->user.n_additional_gids;
			}
		}
	}
	if (o->user) {
		const char *end;
		uint32_t uid, gid;
		if (!parse_id(o->user, &uid, &end) || (*end && *end != ':'))
			return kap_error_plain(err, EINVAL,
					       "--user %s: expected UID[:GID], each 0..4294967294",
					       o->user);
		p->user.uid = uid;
		if (*end == ':') {
			if (!parse_id(end + 1, &gid, &end) || *end)
				return kap_error_plain(
				    err, EINVAL,
				    "--user %s: expected UID[:GID], each 0..4294967294", o->user);
			p->user.gid = gid;
		}
	}
	for (char *const *c = o->caps; c && *c; c++) {
		int cap = kap_cap_from_name(*c);
		if (cap < 0)
			return kap_error_plain(err, EINVAL, "--cap: unknown capability %s", *c);
		uint64_t bit = 1ULL << cap;
		p->has_caps = true;
		p->caps.bounding |= bit;
		p->caps.effective |= bit;
		p->caps.permitted |= bit;
		p->caps.inheritable |= bit;
	}
	if (!p->args || !p->env || !p->cwd)
		return kap_error(err, ENOMEM, "exec");
	return 0;
}

/* The exec'd process itself, inside every namespace. Never returns. */
static _Noreturn void exec_child(int sync, const struct kap_process *p, struct kap_seccomp *sc,
				 int preserve_fds, bool in_userns)
{
	struct kapsel_error *err = NULL;
	if (setsid() < 0) {
		kap_error(&err, errno, "setsid");
		goto fail;
	}
	if (kap_init_chdir("cwd", p->cwd, &err) < 0)
		goto fail;
	if (p->terminal) {
		int master = -1;
		if (kap_terminal_open(p, &master, &err) < 0)
			goto fail;
		kap_sync_send(sync, KAP_SYNC_PTY, 0, NULL, master);
		close(master);
	}
	char path[4096];
	if (kap_security_rlimits(p, &err) < 0 ||
	    kap_init_find_executable(p->args[0], p->env, path, sizeof(path), &err) < 0)
		goto fail;
	if (p->user.has_umask)
		umask(p->user.umask);
	/* Without no_new_privs the filter needs CAP_SYS_ADMIN: load it before dropping it. */
	int nfd = -1;
	bool early = sc && !p->no_new_privileges;
	if (early && kap_seccomp_load(sc, &nfd, &err) < 0)
		goto fail;
	if (kap_security_lsm(p, &err) < 0 || kap_security_user_caps(p, in_userns, &err) < 0)
		goto fail;
	/* Run no user code before the runtime has recorded our pid (--pid-file): a client such
	 * as containerd's shim must know the pid before the process can exit. */
	struct kap_sync_msg m;
	kap_sync_send(sync, KAP_SYNC_READY, 0, NULL, -1);
	if (kap_sync_expect(sync, KAP_SYNC_DONE, &m, NULL, &err) < 0)
		_exit(127);
	syscall(SYS_close_range, 3 + preserve_fds, ~0U, CLOSE_RANGE_CLOEXEC);
	if (sc && !early && kap_seccomp_load(sc, &nfd, &err) < 0)
		goto fail;
	/* The signal mask survives execve; the caller's (blocked for sigwait) is not ours. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* The sync socket is close-on-exec: EOF tells the runtime that execve succeeded. */
	execve(path, p->args, p->env);
	kap_error(&err, errno, "exec %s", path);
fail:
	kap_sync_send_error(sync, err);
	_exit(127);
}

API int kapsel_container_exec(const struct kapsel_exec_options *o, struct kapsel_error **err)
{
	const char *root = o->root && *o->root ? o->root : kapsel_default_root();
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root, o->id, LOCK_SH, &dirfd, &st, err);
	if (r < 0)
		return r;
	enum kap_status s = kap_container_status(dirfd, st);
	if (s != KAP_STATUS_RUNNING && s != KAP_STATUS_CREATED)
		return kap_error_plain(err, EINVAL, "cannot exec in container %s: it is %s", o->id,
				       kap_status_name(s));
	cleanup_free char *cfg = NULL;
	size_t cfg_len;
	if ((r = kap_fs_read_file(dirfd, "config.json", 16 << 20, &cfg, &cfg_len, err)) < 0)
		return r;
	cleanup_spec struct kap_spec *spec = NULL;
	if ((r = kap_spec_parse(cfg, cfg_len, &spec, err)) < 0)
		return r;
	struct kap_process *proc = NULL;
	r = build_process(o, spec, &proc, err);
	if (r < 0) {
		kap_process_free(proc);
		return r;
	}
	if (proc->terminal && !o->console_socket && o->detach) {
		kap_process_free(proc);
		return kap_error_plain(err, EINVAL, "--tty with --detach needs --console-socket");
	}
	if (proc->terminal && !o->console_socket && !proc->console_height && !proc->console_width)
		kap_terminal_size_of_stdio(proc);
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	if (st->cgroup && (r = kap_cgroup_from_json(st->cgroup, &cg, err)) < 0) {
		kap_process_free(proc);
		return r;
	}
	struct kap_seccomp *sc = NULL;
	if (spec->seccomp && (r = kap_seccomp_prepare(spec->seccomp, &sc, err)) < 0) {
		kap_process_free(proc);
		return r;
	}

	/* Open the namespaces of the init now: the pidfd-free equivalent of pinning them. */
	int nsfd[KAP_NS_COUNT];
	for (int t = 0; t < KAP_NS_COUNT; t++)
		nsfd[t] = -1;
	int croot = -1; /* the init's root, for a container without a mount namespace */
	/* Already in a nested one (an exec from inside rootless `kapsel run`'s namespace) counts
	 * too: setgroups may be denied there. */
	bool in_userns = kap_userns_nested();
	for (size_t i = 0; i < KAP_ARRAY_SIZE(join_order); i++) {
		enum kap_ns_type t = join_order[i];
		char path[64], self[64];
		struct stat a, b;
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", st->pid, kap_ns_proc_name(t));
		snprintf(self, sizeof(self), "/proc/self/ns/%s", kap_ns_proc_name(t));
		if (stat(path, &a) < 0 || stat(self, &b) < 0 || a.st_ino == b.st_ino)
			continue; /* the same as ours (or not supported): nothing to join */
		nsfd[t] = open(path, O_RDONLY | O_CLOEXEC);
		if (nsfd[t] < 0) {
			r = kap_error(err, errno, "open %s", path);
			goto out;
		}
		if (t == KAP_NS_USER)
			in_userns = true;
	}
	if (nsfd[KAP_NS_MNT] < 0) {
		/* The container shares our mount namespace (config-linux.md#namespaces): it is a
		 * chroot, and setns would not put us in it. Enter the init's root instead. */
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/root", st->pid);
		croot = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (croot < 0) {
			r = kap_error(err, errno, "open %s", path);
			goto out;
		}
	}
	int sync[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sync) < 0) {
		r = kap_error(err, errno, "socketpair");
		goto out;
	}
	if (!o->detach)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	/* The new process joins the container's cgroups itself (see kap_cgroup_join_fds). */
	struct kap_cgroup_join join = {.v2_dir = -EBADF};
	if (cg && (r = kap_cgroup_join_fds(cg, &join, err)) < 0) {
		close(sync[0]);
		close(sync[1]);
		goto out;
	}
	struct clone_args ca = {.exit_signal = SIGCHLD};
	if (join.v2_dir >= 0) {
		ca.flags |= CLONE_INTO_CGROUP;
		ca.cgroup = (uint64_t)join.v2_dir;
	}
	pid_t child = (pid_t)kap_clone3(&ca);
	if (child < 0) {
		r = kap_error(err, errno, "clone exec process");
		kap_cgroup_join_close(&join);
		close(sync[0]);
		close(sync[1]);
		goto out;
	}
	if (child == 0) {
		close(sync[0]);
		struct kap_sync_msg m;
		struct kapsel_error *e = NULL;
		/*
		 * Non-dumpable before joining anything (CVE-2016-9962): the container's processes
		 * must not ptrace us or open /proc/<pid>/{fd,cwd,root} before execve, which makes
		 * the new program dumpable again. And no host fd goes in with us: only stdio,
		 * --preserve-fds, the sync socket, the log and the namespace fds (closed as used).
		 */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		if (kap_cgroup_join_self(&join) < 0) {
			kap_error(&e, errno, "join the cgroup of container %s", o->id);
			kap_sync_send_error(sync[1], e);
			_exit(127);
		}
		kap_cgroup_join_close(&join);
		int keep[KAP_NS_COUNT + 3];
		size_t nkeep = 0;
		keep[nkeep++] = sync[1];
		keep[nkeep++] = kap_log_fd();
		keep[nkeep++] = croot;
		for (int t = 0; t < KAP_NS_COUNT; t++)
			keep[nkeep++] = nsfd[t];
		if (kap_proc_close_fds_except((unsigned)o->preserve_fds, keep, nkeep) < 0) {
			kap_error(&e, errno, "close inherited fds");
			kap_sync_send_error(sync[1], e);
			_exit(127);
		}
		if (kap_sync_expect(sync[1], KAP_SYNC_GO, &m, NULL, &e) < 0)
			_exit(127);
		for (size_t i = 0; i < KAP_ARRAY_SIZE(join_order); i++) {
			enum kap_ns_type t = join_order[i];
			if (nsfd[t] >= 0 && setns(nsfd[t], kap_ns_clone_flag(t)) < 0) {
				kap_error(&e, errno, "join %s namespace of container %s",
					  kap_ns_proc_name(t), o->id);
				kap_sync_send_error(sync[1], e);
				_exit(127);
			}
			if (nsfd[t] >= 0)
				close(nsfd[t]);
		}
		if (croot >= 0 && (fchdir(croot) < 0 || chroot(".") < 0 || chdir("/") < 0)) {
			kap_error(&e, errno, "enter the root of container %s", o->id);
			kap_sync_send_error(sync[1], e);
			_exit(127);
		}
		if (croot >= 0)
			close(croot);
		pid_t gc = kap_sync_fork_announced(sync[1]);
		if (gc == 0)
			exec_child(sync[1], proc, sc, o->preserve_fds, in_userns);
		if (gc < 0) {
			kap_error(&e, -gc, "fork the exec process");
			kap_sync_send_error(sync[1], e);
		}
		_exit(gc < 0 ? 127 : 0);
	}
	close(sync[1]);
	kap_cgroup_join_close(&join);
	kap_sync_send(sync[0], KAP_SYNC_GO, 0, NULL, -1);
	pid_t target = -1;
	int master = -1;
	bool ready = false;
	for (;;) {
		struct kap_sync_msg m;
		int fd = -1;
		int rr = kap_sync_recv(sync[0], &m, &fd);
		if (rr == -EPIPE)
			break; /* everyone closed the socket: execve succeeded */
		if (rr < 0) {
			r = kap_error(err, -rr, "exec: read from process");
			break;
		}
		if (m.type == KAP_SYNC_PID) {
			target = m.value;
		} else if (m.type == KAP_SYNC_PTY) {
			master = fd;
		} else if (m.type == KAP_SYNC_ERROR) {
			r = kap_error_plain(err, m.value > 0 ? m.value : EIO, "%s", m.text);
			break;
		} else if (m.type == KAP_SYNC_READY && target > 0 && !ready) {
			/* Set up, about to exec: hand out the terminal and the pid first. */
			ready = true;
			if (master >= 0 && o->console_socket) {
				r = kap_terminal_send_to_socket(o->console_socket, master, err);
				close(master);
				master = -1;
				if (r < 0)
					break;
			}
			if (o->pid_file &&
			    (r = kap_fs_write_pid_file(o->pid_file, target, err)) < 0)
				break;
			kap_sync_send(sync[0], KAP_SYNC_DONE, 0, NULL, -1);
		} else if (fd >= 0) {
			close(fd);
		}
	}
	close(sync[0]);
	waitpid(child, NULL, 0);
	if (r < 0 || target <= 0 || !ready) {
		if (target > 0) {
			kill(target, SIGKILL);
			waitpid(target, NULL, 0);
		}
		if (master >= 0)
			close(master);
		if (r >= 0)
			r = kap_error_plain(err, EIO, "exec: process did not start");
		goto out;
	}
	if (o->detach) {
		r = 0;
		goto out;
	}
	pid_t relay = -1;
	r = kap_wait_process(target, master, &relay);
	if (relay > 0)
		waitpid(relay, NULL, 0);
out:
	for (int t = 0; t < KAP_NS_COUNT; t++)
		if (nsfd[t] >= 0)
			close(nsfd[t]);
	if (croot >= 0)
		close(croot);
	kap_seccomp_free(sc);
	kap_process_free(proc);
	return r;
}
