/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime's VM handler (docs/vm.md, "The OCI runtime's VM handler"): a bundle with the
 * annotation run.oci.handler=vm runs in a micro-VM, as crun's run.oci.handler=krun and Kata do,
 * under the runc commands podman (through conmon) and containerd (through its runc shim) use.
 *
 * The container's process, the pid that state reports and the pid file names, is a monitor:
 * it boots the VMM as its child (run-vm.c), shares root.path over virtio-fs, sends the agent
 * config.json's process with hold=1 and, once the agent has mounted the rootfs (READY), tells
 * create so. It then waits on exec.fifo exactly as a container's init does, so start, state and
 * delete are the container engine's unchanged; at start it sends START and relays the
 * process's stdio (its own stdio: the runtime's, which conmon and the shim make pipes, or the
 * pty whose master went to --console-socket) and exits with the process's status. Signals
 * sent to it (kill) go to the process through the agent; SIGKILL ends the VMM with it
 * (PR_SET_PDEATHSIG). The monitor and the VMM live in the container's cgroup, without limits
 * (the VM's size is the limit), so kill --all, pause, ps and delete reach both.
 *
 * Everything the VM needs lives in the state directory (config copy, console log, the control
 * and vsock sockets): delete's removal of it leaves nothing, whatever killed the monitor.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/oci-vm.h>

#include "../../kapsel-agent/protocol.h"
#include "container/cgroup/cgroup.h"
#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/proc.h"
#include "image/image.h"
#include "oci/spec.h"
#include "oci/state.h"
#include "run/run-vm.h"

#define API __attribute__((visibility("default")))

static const char *handler_of(const struct kap_spec *s)
{
	for (size_t i = 0; i < s->n_annotations; i++)
		if (!strcmp(s->annotation_keys[i], KAPSEL_OCI_HANDLER_ANNOTATION))
			return s->annotation_values[i];
	return NULL;
}

/* 1 for vm, 0 for none, -EINVAL for a handler kapsel does not have. */
static int handler_check(const struct kap_spec *s, struct kapsel_error **err)
{
	const char *h = handler_of(s);
	if (!h)
		return 0;
	if (!strcmp(h, KAPSEL_OCI_HANDLER_VM))
		return 1;
	return kap_error_plain(err, EINVAL,
			       "annotation " KAPSEL_OCI_HANDLER_ANNOTATION "=%s: kapsel has no "
			       "such handler (only " KAPSEL_OCI_HANDLER_VM ")",
			       h);
}

static int read_bundle(const char *bundle, char **path, char **text, size_t *len,
		       struct kap_spec **s, struct kapsel_error **err)
{
	cleanup_free char *real = realpath(bundle ? bundle : ".", NULL);
	if (!real)
		return kap_error(err, errno, "bundle %s", bundle ? bundle : ".");
	cleanup_free char *cfg = NULL;
	if (asprintf(&cfg, "%s/config.json", real) < 0)
		return kap_error(err, ENOMEM, "config.json");
	int r = kap_fs_read_file(AT_FDCWD, cfg, 16 << 20, text, len, err);
	if (r < 0)
		return r;
	if ((r = kap_spec_parse(*text, *len, s, err)) < 0) {
		free(*text);
		*text = NULL;
		return kap_error_wrap(err, "%s", cfg);
	}
	*path = steal_ptr(real);
	return 0;
}

API int kapsel_oci_vm_bundle(const char *bundle, struct kapsel_error **err)
{
	cleanup_free char *real = NULL, *text = NULL;
	size_t len = 0;
	cleanup_spec struct kap_spec *s = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	/* An unreadable bundle is create's to report, with its own words. */
	if (read_bundle(bundle, &real, &text, &len, &s, &e) < 0)
		return 0;
	return handler_check(s, err);
}

/* ---- create ---- */

/* What cannot apply to a process in a guest kernel: one line each, before anything exists. */
static int check_vm_spec(const struct kap_spec *s, const struct kapsel_create_options *o,
			 bool run_mode, struct kapsel_error **err)
{
	static const char *const ns_names[KAP_NS_COUNT] = {
	    [KAP_NS_PID] = "pid",	[KAP_NS_NET] = "network", [KAP_NS_MNT] = "mount",
	    [KAP_NS_IPC] = "ipc",	[KAP_NS_UTS] = "uts",	  [KAP_NS_USER] = "user",
	    [KAP_NS_CGROUP] = "cgroup", [KAP_NS_TIME] = "time"};
	const struct kap_process *p = s->process;
	if (!p || !p->args || !p->args[0])
		return kap_error_plain(err, EINVAL,
				       "config.json: process.args: a VM container "
				       "needs a process");
	if (p->terminal && !o->console_socket && !run_mode)
		return kap_error_plain(err, EINVAL,
				       "process.terminal: create needs --console-socket for the "
				       "terminal's master");
	if (o->preserve_fds)
		return kap_error_plain(err, EINVAL,
				       "--preserve-fds: host fds cannot reach a process in a VM");
	for (int t = 0; t < KAP_NS_COUNT; t++)
		if (s->namespaces[t].path)
			return kap_error_plain(
			    err, EINVAL,
			    "linux.namespaces: joining the %s namespace %s cannot "
			    "apply in a VM (the guest kernel has its own)",
			    ns_names[t] ? ns_names[t] : "?", s->namespaces[t].path);
	for (int k = 0; k < KAP_HOOK_KIND_COUNT; k++)
		if (s->hooks.n[k])
			return kap_error_plain(err, EINVAL,
					       "hooks: not run for a VM container (they would see "
					       "the host, not the guest)");
	return 0;
}

static int resolve_rootfs(const struct kap_spec *s, const char *bundle, char **out,
			  struct kapsel_error **err)
{
	int r = kap_container_resolve_rootfs(s, bundle, out, err);
	if (r < 0)
		return r;
	if (strchr(*out, ',')) {
		r = kap_error_plain(
		    err, EINVAL, "root.path: %s: a comma cannot go into a virtio-fs share", *out);
		free(*out);
		*out = NULL;
	}
	return r;
}

static int mkdir_p(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return 0;
	cleanup_free char *c = strdup(path);
	if (!c)
		return -ENOMEM;
	for (char *q = c + 1; (q = strchr(q, '/')); q++) {
		*q = '\0';
		if (mkdir(c, 0711) < 0 && errno != EEXIST)
			return -errno;
		*q = '/';
	}
	return mkdir(path, mode) == 0 || errno == EEXIST ? 0 : -errno;
}

/* The monitor's end of things (runs in the forked process). */
struct monitor {
	int fifo;   /* exec.fifo, O_RDWR: start writes its byte here */
	int report; /* to create: one NUL byte when ready, else the error text; then closed */
	sigset_t signals;
};

/* The signals whose default action is to end a process: those end a held container. */
static bool ends_process(int sig)
{
	switch (sig) {
	case SIGCHLD:
	case SIGWINCH:
	case SIGURG:
	case SIGCONT:
	case SIGTSTP:
	case SIGTTIN:
	case SIGTTOU:
		return false;
	default:
		return true;
	}
}

static bool read_full(int fd, void *buf, size_t n)
{
	return kap_fs_read_full(fd, buf, n);
}

/*
 * run-vm.c's hold: the agent's READY (or its ERROR), the answer to create, then exec.fifo's
 * byte from start, START to the agent. A signal meant for the container before it started
 * ends it as it would end a held runc init: the monitor dies of it (the VMM with it).
 */
static int monitor_hold(void *ctx, int conn, struct kapsel_error **err)
{
	struct monitor *m = ctx;
	uint8_t hdr[KAP_AGENT_HDR];
	static char buf[KAP_AGENT_MAX_DATA + 1];
	unsigned type;
	uint32_t len;
	for (;;) {
		if (!read_full(conn, hdr, sizeof(hdr)))
			return kap_error_plain(
			    err, EIO, "the VM ended before kapsel-agent mounted the rootfs");
		if (kap_agent_frame_decode(hdr, &type, &len) < 0 || !read_full(conn, buf, len))
			return kap_error_plain(err, EPROTO, "a malformed frame from kapsel-agent");
		if (type == KAP_AGENT_ERROR) {
			buf[len] = '\0';
			return kap_error_plain(err, EIO, "in the guest: %s", buf);
		}
		if (type == KAP_AGENT_READY)
			break;
	}
	if (kap_fs_write_all(m->report, "", 1) < 0)
		return kap_error(err, errno, "report to create");
	close(m->report);
	m->report = -1;

	cleanup_close int sfd = signalfd(-1, &m->signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return kap_error(err, errno, "signalfd");
	for (;;) {
		struct pollfd p[3] = {{.fd = m->fifo, .events = POLLIN},
				      {.fd = conn, .events = POLLIN},
				      {.fd = sfd, .events = POLLIN}};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return kap_error(err, errno, "poll");
		}
		if (p[2].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (!ends_process(sig))
					continue;
				signal(sig, SIG_DFL);
				sigset_t one;
				sigemptyset(&one);
				sigaddset(&one, sig);
				raise(sig);
				sigprocmask(SIG_UNBLOCK, &one, NULL);
				_exit(128 + sig);
			}
		}
		if (p[1].revents)
			return kap_error_plain(err, EIO, "the VM ended before start");
		if (p[0].revents) {
			char c;
			if (read(m->fifo, &c, 1) != 1)
				continue;
			uint8_t h[KAP_AGENT_HDR];
			if (kap_agent_frame_encode(h, KAP_AGENT_START, 0) < 0 ||
			    kap_fs_write_all(conn, h, sizeof(h)) < 0)
				return kap_error(err, errno ? errno : EPIPE,
						 "send START to kapsel-agent");
			/* start waits for the last writer of the fifo to go: this one. */
			close(m->fifo);
			m->fifo = -1;
			return 0;
		}
	}
}

static __attribute__((noreturn)) void monitor_main(struct kap_run_vm *a, struct monitor *m)
{
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_run_vm(a, &e);
	if (r >= 0)
		_exit(r & 0xff);
	const char *msg = e ? e->msg : strerror(-r);
	if (m->report >= 0)
		kap_fs_write_all(m->report, msg, strlen(msg));
	else
		dprintf(STDERR_FILENO, "kapsel: container %s: %s\n", a->name, msg);
	_exit(125);
}

/* A pseudo-terminal whose master goes to the console socket; the slave stays ours. */
static int console_open(const char *sock, const struct kap_process *p, int *slave,
			struct kapsel_error **err)
{
	cleanup_close int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
		return kap_error(err, errno, "open a pseudo-terminal");
	char name[64];
	if (ptsname_r(master, name, sizeof(name)) != 0)
		return kap_error(err, errno, "ptsname");
	*slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*slave < 0)
		return kap_error(err, errno, "open %s", name);
	if (p->console_height && p->console_width) {
		struct winsize ws = {.ws_row = (unsigned short)p->console_height,
				     .ws_col = (unsigned short)p->console_width};
		ioctl(master, TIOCSWINSZ, &ws);
	}
	int r = kap_terminal_send_to_socket(sock, master, err);
	if (r < 0) {
		close(*slave);
		*slave = -1;
	}
	return r;
}

/* The monitor's stdio on the terminal's slave, as its controlling terminal (SIGWINCH). */
static int take_terminal(int slave)
{
	if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
		return -1;
	for (int fd = 0; fd < 3; fd++)
		if (dup2(slave, fd) < 0)
			return -1;
	return 0;
}

/* cgroup v2: the calling process into the directory dirfd (-1: none), as clone3's
 * CLONE_INTO_CGROUP would have put it (cgroup-v2.rst: "Organizing Processes"). */
static int join_v2(int dirfd)
{
	if (dirfd < 0)
		return 0;
	int fd = openat(dirfd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = write(fd, "0", 1) == 1 ? 0 : -errno;
	close(fd);
	return r;
}

struct vm_create {
	pid_t pid;
};

static int create_vm(const struct kapsel_create_options *o, const char *store, bool run_mode,
		     struct vm_create *out, struct kapsel_error **err)
{
	const char *root = o->root ? o->root : kapsel_default_root();
	int r = kap_state_validate_id(o->id, err);
	if (r < 0)
		return r;
	if ((r = mkdir_p(root, 0700)) < 0)
		return kap_error(err, -r, "create state root %s", root);
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kap_error(err, errno, "open state root %s", root);
	cleanup_free char *bundle = NULL, *cfg = NULL, *rootfs = NULL, *cdir = NULL;
	cleanup_free char *dstore = NULL;
	size_t cfg_len = 0;
	cleanup_spec struct kap_spec *spec = NULL;
	if ((r = read_bundle(o->bundle, &bundle, &cfg, &cfg_len, &spec, err)) < 0)
		return r;
	if ((r = handler_check(spec, err)) <= 0)
		return r < 0 ? r
			     : kap_error_plain(
				   err, EINVAL,
				   "bundle %s: no annotation " KAPSEL_OCI_HANDLER_ANNOTATION
				   "=" KAPSEL_OCI_HANDLER_VM,
				   bundle);
	if ((r = check_vm_spec(spec, o, run_mode, err)) < 0 ||
	    (r = resolve_rootfs(spec, bundle, &rootfs, err)) < 0)
		return r;
	/* The guest kernel and the initramfs before anything exists. */
	struct kap_guest_kernel kern;
	r = kap_guest_kernel_find(NULL, &kern, err);
	kap_guest_kernel_clear(&kern);
	if (r < 0)
		return r;
	if (!store && !(store = dstore = kap_store_default_path()))
		return kap_error(err, ENOMEM, "store");
	if ((r = mkdir_p(store, 0700)) < 0)
		return kap_error(err, -r, "create %s", store);
	if (asprintf(&cdir, "%s/%s", root, o->id) < 0)
		return kap_error(err, ENOMEM, "create");

	if (mkdirat(rootfd, o->id, 0700) < 0) {
		if (errno == EEXIST)
			return kap_error_plain(err, EEXIST, "container %s already exists", o->id);
		return kap_error(err, errno, "create state directory %s", cdir);
	}
	/* From here on every way out removes what exists. */
	int dirfd = -1, fifo = -1, slave = -1, rep[2] = {-1, -1};
	pid_t pid = -1;
	struct kap_cgroup *cg = NULL;
	struct kap_cgroup_join join = {.v2_dir = -EBADF};
	char created_at[64];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(created_at, sizeof(created_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
	struct kap_state st = {.id = (char *)o->id,
			       .bundle = bundle,
			       .rootfs = rootfs,
			       .created = created_at,
			       .owner = "",
			       .own_pid_ns = true};
	cleanup_json struct kap_json *annotations = kap_json_new_object();
	for (size_t i = 0; annotations && i < spec->n_annotations; i++)
		kap_json_set(annotations, spec->annotation_keys[i],
			     kap_json_new_string(spec->annotation_values[i]));
	st.annotations = annotations;

	dirfd = openat(rootfd, o->id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dirfd < 0 || flock(dirfd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "open state directory %s", cdir);
		goto fail;
	}
	if ((r = kap_fs_write_atomic(dirfd, "config.json", cfg, cfg_len, 0600, false, err)) < 0)
		goto fail;
	/* The cgroup holds the monitor and the VMM, without limits: the VM's size is the
	 * container's memory and CPU limit (run-vm.c, vm_size), the VMM's own overhead on top. */
	r = kap_cgroup_create("/sys/fs/cgroup", spec->cgroups_path, o->id, NULL, 0, &cg, err);
	/* Rootless without a delegated cgroup, or a host without a cgroup hierarchy (the nested
	 * test runner's outer guest): the VM runs without one, kill --all and pause then fail. */
	if (r < 0 && (((geteuid() != 0 || kap_userns_nested()) &&
		       (r == -EACCES || r == -EPERM || r == -EROFS)) ||
		      r == -ENOENT)) {
		kap_debug("no cgroup for VM container %s: %s", o->id, *err ? (*err)->msg : "");
		kapsel_error_free(*err);
		*err = NULL;
		r = 0;
	}
	if (r < 0)
		goto fail;
	st.cgroup = cg ? kap_cgroup_to_json(cg) : NULL;
	st.creating = true;
	if ((r = kap_state_write(dirfd, &st, err)) < 0)
		goto fail;
	if (cg && (r = kap_cgroup_join_fds(cg, &join, err)) < 0)
		goto fail;
	if (spec->process->terminal && o->console_socket &&
	    (r = console_open(o->console_socket, spec->process, &slave, err)) < 0)
		goto fail;
	if (mkfifoat(dirfd, "exec.fifo", 0600) < 0) {
		r = kap_error(err, errno, "mkfifo %s/exec.fifo", cdir);
		goto fail;
	}
	/* O_RDWR never blocks on a fifo; the monitor holds it until start. */
	fifo = openat(dirfd, "exec.fifo", O_RDWR | O_CLOEXEC);
	if (fifo < 0 || pipe2(rep, O_CLOEXEC) < 0) {
		r = kap_error(err, errno, "exec.fifo of %s", o->id);
		goto fail;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = kap_error(err, errno, "fork the VM monitor");
		goto fail;
	}
	if (pid == 0) {
		close(rep[0]);
		if (kap_cgroup_join_self(&join) < 0 || join_v2(join.v2_dir) < 0) {
			dprintf(rep[1], "join cgroup %s: %s", cg->path, strerror(errno));
			_exit(125);
		}
		/* Its own session, as a runc init: the caller's terminal signals are not ours;
		 * with a console the slave is its controlling terminal, so a resize of the
		 * master (conmon's, the shim's) arrives as SIGWINCH. */
		if (slave >= 0 ? take_terminal(slave) < 0 : setsid() < 0) {
			dprintf(rep[1], "terminal: %s", strerror(errno));
			_exit(125);
		}
		int keep[] = {fifo, rep[1], kap_log_fd()};
		kap_proc_close_fds_except(0, keep, KAP_ARRAY_SIZE(keep));
		struct monitor m = {.fifo = fifo, .report = rep[1]};
		/* Every signal that can be caught goes to the process (the relay's signalfd);
		 * faults stay faults. */
		sigfillset(&m.signals);
		static const int own[] = {SIGSEGV, SIGBUS,  SIGILL,  SIGFPE,  SIGABRT,
					  SIGTRAP, SIGCHLD, SIGPIPE, SIGKILL, SIGSTOP};
		for (size_t i = 0; i < KAP_ARRAY_SIZE(own); i++)
			sigdelset(&m.signals, own[i]);
		sigprocmask(SIG_BLOCK, &m.signals, NULL);
		signal(SIGPIPE, SIG_IGN);
		struct kap_run_vm a = {
		    .name = o->id,
		    .store = store,
		    .cdir = cdir,
		    .rootfs = rootfs,
		    .interactive = true,
		    .tty = spec->process->terminal,
		    .signals = m.signals,
		    .logfd = -1,
		    .sockets_in_cdir = true,
		    .hold = monitor_hold,
		    .ctx = &m,
		};
		monitor_main(&a, &m);
	}
	close(rep[1]);
	rep[1] = -1;
	close(fifo);
	fifo = -1;
	if (slave >= 0)
		close(slave);
	slave = -1;
	kap_cgroup_join_close(&join);

	/* The monitor's answer: a NUL byte once the agent is ready, else its error. */
	char msg[1024];
	size_t n = 0;
	for (;;) {
		ssize_t k = read(rep[0], msg + n, sizeof(msg) - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || (n += (size_t)k) == sizeof(msg) - 1 || msg[0] == '\0')
			break;
	}
	msg[n] = '\0';
	if (n == 0 || msg[0] != '\0') {
		r = kap_error_plain(err, EIO, "create %s: %s", o->id,
				    n ? msg : "the VM monitor exited during setup");
		goto fail;
	}
	close(rep[0]);
	rep[0] = -1;
	st.pid = pid;
	kap_proc_stat(pid, &st.start_time, NULL);
	st.creating = false;
	if ((r = kap_state_write(dirfd, &st, err)) < 0)
		goto fail;
	if (o->pid_file && (r = kap_fs_write_pid_file(o->pid_file, pid, err)) < 0)
		goto fail;
	kap_json_put(st.cgroup);
	kap_cgroup_free(cg);
	close(dirfd);
	if (out)
		out->pid = pid;
	return 0;

fail:
	if (pid > 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	for (int *fd = (int[]){fifo, slave, rep[0], rep[1]}, i = 0; i < 4; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	kap_cgroup_join_close(&join);
	if (cg) {
		/* The VMM dies with its monitor (PR_SET_PDEATHSIG): kill what is left, wait for
		 * the cgroup to empty. */
		cleanup_error struct kapsel_error *e = NULL;
		cleanup_free pid_t *pids = NULL;
		size_t np = 0;
		for (int i = 0; i < 100; i++) {
			free(pids);
			pids = NULL;
			if (kap_cgroup_pids(cg, &pids, &np, NULL) < 0 || !np)
				break;
			for (size_t j = 0; j < np; j++)
				kill(pids[j], SIGKILL);
			usleep(20000);
		}
		if (kap_cgroup_destroy(cg, &e) < 0)
			kap_warn("cleanup: %s", e->msg);
		kap_cgroup_free(cg);
	}
	kap_json_put(st.cgroup);
	if (dirfd >= 0)
		close(dirfd);
	kap_fs_rm_rf(rootfd, o->id);
	return r < 0 ? r : -EIO;
}

API int kapsel_oci_vm_create(const struct kapsel_create_options *o, const char *store,
			     struct kapsel_error **err)
{
	return create_vm(o, store, false, NULL, err);
}

API int kapsel_oci_vm_run(const struct kapsel_create_options *o, const char *store,
			  struct kapsel_error **err)
{
	struct vm_create c = {.pid = -1};
	int r = create_vm(o, store, true, &c, err);
	if (r < 0)
		return r;
	if ((r = kapsel_container_start(o->root, o->id, err)) < 0) {
		kapsel_container_delete(o->root, o->id, true, NULL);
		return r;
	}
	if (o->detach)
		return 0;
	/* The monitor is our child, in a session of its own: our terminal's signals (^C) and
	 * kill's go to it, and through it to the process; its status is the process's. */
	static const int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	sigset_t set, old;
	sigemptyset(&set);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(fwd); i++)
		sigaddset(&set, fwd[i]);
	sigprocmask(SIG_BLOCK, &set, &old);
	int st = 0;
	for (;;) {
		pid_t w = waitpid(c.pid, &st, WNOHANG);
		if (w == c.pid || (w < 0 && errno != EINTR))
			break;
		struct timespec tick = {0, 100 * 1000 * 1000};
		int sig = sigtimedwait(&set, NULL, &tick);
		if (sig > 0)
			kill(c.pid, sig);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	cleanup_error struct kapsel_error *e = NULL;
	if (kapsel_container_delete(o->root, o->id, true, &e) < 0)
		kap_warn("%s", e->msg);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- exec ---- */

static int spec_add(FILE *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int spec_add(FILE *f, const char *key, const char *fmt, ...)
{
	va_list ap;
	fprintf(f, "%s=", key);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	return fputc('\0', f);
}

/* An exec's process (runtime-spec process, as --process gives it) as the agent's spec. */
static int exec_spec(const struct kap_process *p, bool tty, char **out, size_t *len,
		     struct kapsel_error **err)
{
	if (!p->args || !p->args[0])
		return kap_error_plain(err, EINVAL, "exec: no command given");
	FILE *f = open_memstream(out, len);
	if (!f)
		return kap_error(err, ENOMEM, "exec");
	for (char **v = p->args; *v; v++)
		spec_add(f, "arg", "%s", *v);
	for (char **v = p->env; v && *v; v++)
		spec_add(f, "env", "%s", *v);
	spec_add(f, "cwd", "%s", p->cwd && *p->cwd ? p->cwd : "/");
	spec_add(f, "uid", "%u", (unsigned)p->user.uid);
	spec_add(f, "gid", "%u", (unsigned)p->user.gid);
	if (p->user.n_additional_gids) {
		fputs("groups=", f);
		for (size_t i = 0; i < p->user.n_additional_gids; i++)
			fprintf(f, "%s%u", i ? "," : "", (unsigned)p->user.additional_gids[i]);
		fputc('\0', f);
	}
	for (size_t i = 0; i < p->n_rlimits; i++)
		spec_add(f, "rlimit", "%d:%" PRIu64 ":%" PRIu64, p->rlimits[i].resource,
			 p->rlimits[i].soft, p->rlimits[i].hard);
	spec_add(f, "root", KAP_RUN_VM_ROOT_TAG);
	spec_add(f, "stdin", "1");
	if (tty) {
		struct winsize ws;
		spec_add(f, "tty", "1");
		if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
			spec_add(f, "winsize", "%u:%u", ws.ws_row, ws.ws_col);
	}
	if (fclose(f) != 0) {
		free(*out);
		*out = NULL;
		return kap_error(err, ENOMEM, "exec");
	}
	if (*len > KAP_AGENT_MAX_SPEC) {
		free(*out);
		*out = NULL;
		return kap_error_plain(err, E2BIG, "exec: the process spec exceeds %u bytes",
				       KAP_AGENT_MAX_SPEC);
	}
	return 0;
}

static void process_freep(struct kap_process **p)
{
	if (*p)
		kap_process_free(*p);
}

/* exec's process: --process FILE, else the command with config.json's process around it. */
static int exec_process(const struct kapsel_exec_options *o, int dirfd, struct kap_process **out,
			struct kapsel_error **err)
{
	if (o->process_file) {
		cleanup_json struct kap_json *j = NULL;
		int r = kap_json_parse_file(o->process_file, &j, err);
		return r < 0 ? r : kap_spec_parse_process(j, "process", out, err);
	}
	if (!o->args || !o->args[0])
		return kap_error_plain(err, EINVAL, "exec: no command given");
	cleanup_free char *cfg = NULL;
	size_t len = 0;
	cleanup_spec struct kap_spec *s = NULL;
	int r = kap_fs_read_file(dirfd, "config.json", 16 << 20, &cfg, &len, err);
	if (r < 0 || (r = kap_spec_parse(cfg, len, &s, err)) < 0)
		return r;
	struct kap_process *p = s->process;
	s->process = NULL;
	if (!p)
		return kap_error_plain(err, EINVAL, "exec: config.json has no process");
	*out = p;
	/* The command, -e's after the container's environment, --cwd, -t, -u UID[:GID]. */
	char **args = NULL, **env = NULL;
	size_t na = 0, ne = 0, n0 = 0;
	while (o->args[na])
		na++;
	while (o->env && o->env[ne])
		ne++;
	while (p->env && p->env[n0])
		n0++;
	if (!(args = calloc(na + 1, sizeof(*args))) || !(env = calloc(n0 + ne + 1, sizeof(*env)))) {
		free(args);
		return kap_error(err, ENOMEM, "exec");
	}
	for (size_t i = 0; i < na; i++)
		args[i] = strdup(o->args[i]);
	for (size_t i = 0; i < n0; i++)
		env[i] = p->env[i];
	for (size_t i = 0; i < ne; i++)
		env[n0 + i] = strdup(o->env[i]);
	for (char **v = p->args; v && *v; v++)
		free(*v);
	free(p->args);
	free(p->env);
	p->args = args;
	p->env = env;
	if (o->cwd) {
		free(p->cwd);
		p->cwd = strdup(o->cwd);
	}
	p->terminal = o->tty;
	if (o->user) {
		char *end;
		errno = 0;
		unsigned long uid = strtoul(o->user, &end, 10), gid = 0;
		if (!errno && end != o->user && *end == ':')
			gid = strtoul(end + 1, &end, 10);
		if (errno || *end || uid > UINT32_MAX || gid > UINT32_MAX)
			return kap_error_plain(err, EINVAL, "--user %s: expected UID[:GID]",
					       o->user);
		p->user.uid = (uid_t)uid;
		p->user.gid = (gid_t)gid;
		p->user.n_additional_gids = 0;
	}
	return 0;
}

API int kapsel_oci_vm_exec(const struct kapsel_exec_options *o, int *status,
			   struct kapsel_error **err)
{
	const char *root = o->root ? o->root : kapsel_default_root();
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	/* Not a container of this root: kapsel_container_exec says so in its words. */
	if (kap_container_load(root, o->id, LOCK_SH, &dirfd, &st, &e) < 0)
		return 0;
	const struct kap_json *h =
	    st->annotations ? kap_json_get(st->annotations, KAPSEL_OCI_HANDLER_ANNOTATION) : NULL;
	const char *hv = h ? kap_json_string(h) : NULL;
	if (!hv || strcmp(hv, KAPSEL_OCI_HANDLER_VM))
		return 0;
	enum kap_status s = kap_container_status(dirfd, st);
	if (s != KAP_STATUS_RUNNING)
		return kap_error_plain(err, ESRCH, "cannot exec in container %s: it is %s", o->id,
				       kap_status_name(s));
	if (o->preserve_fds)
		return kap_error_plain(
		    err, EINVAL, "exec --preserve-fds: host fds cannot reach a process in a VM");
	__attribute__((cleanup(process_freep))) struct kap_process *p = NULL;
	int r = exec_process(o, dirfd, &p, err);
	if (r < 0)
		return r;
	if (p->terminal && !o->console_socket && (o->detach || !isatty(STDIN_FILENO)))
		return kap_error_plain(err, EINVAL,
				       "exec: a terminal needs --console-socket (or our stdin a "
				       "terminal)");
	cleanup_free char *cdir = NULL;
	if (asprintf(&cdir, "%s/%s", root, o->id) < 0)
		return kap_error(err, ENOMEM, "exec");
	/* The state's lock is not held while the process runs: delete must not wait for it. */
	close(steal_fd(dirfd));
	int slave = -1;
	if (p->terminal && o->console_socket &&
	    (r = console_open(o->console_socket, p, &slave, err)) < 0)
		return r;
	/* The process is started by the agent, its stdio relayed by us (or our child with
	 * --detach, whose pid the pid file names: conmon and the shim wait for it). */
	pid_t pid = 0;
	if (o->detach) {
		fflush(NULL);
		pid = fork();
		if (pid < 0) {
			if (slave >= 0)
				close(slave);
			return kap_error(err, errno, "fork");
		}
	}
	if (pid == 0) {
		/* Detached: a session of our own, the terminal (if any) its controlling one, so
		 * that resizes arrive as SIGWINCH. In the foreground only our stdio moves. */
		if (o->detach && (slave >= 0 ? take_terminal(slave) < 0 : setsid() < 0))
			_exit(125);
		if (!o->detach && slave >= 0)
			for (int fd = 0; fd < 3; fd++)
				if (dup2(slave, fd) < 0) {
					close(slave);
					return kap_error(err, errno, "exec: terminal");
				}
		if (slave >= 0)
			close(slave);
		cleanup_free char *spec = NULL;
		size_t len = 0;
		r = exec_spec(p, p->terminal, &spec, &len, err);
		if (r >= 0)
			r = kap_run_vm_exec_spec(cdir, o->id, spec, len, p->terminal, err);
		if (!o->detach) {
			if (r >= 0)
				*status = r;
			return r < 0 ? r : 1;
		}
		if (r < 0)
			dprintf(STDERR_FILENO, "kapsel: exec in %s: %s\n", o->id,
				*err ? (*err)->msg : strerror(-r));
		_exit(r < 0 ? 125 : r & 0xff);
	}
	if (slave >= 0)
		close(slave);
	if (o->pid_file && (r = kap_fs_write_pid_file(o->pid_file, pid, err)) < 0) {
		kill(pid, SIGKILL);
		return r;
	}
	*status = 0;
	return 1;
}
