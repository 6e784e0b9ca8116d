/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container lifecycle (runtime-spec runtime.md#lifecycle): create, start, kill, delete, and
 * run = create + start + wait + delete. The runtime process never lingers: after `create` the
 * init waits on <root>/<id>/exec.fifo for `start`, and everything later commands need is in
 * <root>/<id>/state.json.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "container/cgroup/cgroup.h"
#include "container/container.h"
#include "container/seccomp.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/sealed.h"
#include "core/syscalls.h"

#define API __attribute__((visibility("default")))

/* What a successful create hands to run. */
struct created {
	pid_t pid;
	int master; /* pty master when run keeps the terminal, else -1 */
};

API const char *kapsel_default_root(void)
{
	static char buf[4096];
	if (geteuid() == 0)
		return KAPSEL_DEFAULT_ROOT;
	if (!buf[0]) {
		const char *xdg = getenv("XDG_RUNTIME_DIR");
		char run[64];
		snprintf(run, sizeof(run), "/run/user/%u", (unsigned)geteuid());
		if (xdg && *xdg == '/')
			snprintf(buf, sizeof(buf), "%s/kapsel", xdg);
		else if (access(run, W_OK) == 0)
			snprintf(buf, sizeof(buf), "%s/kapsel", run);
		else
			snprintf(buf, sizeof(buf), "/tmp/kapsel-%u", (unsigned)geteuid());
	}
	return buf;
}

static const char *root_or_default(const char *root)
{
	return root && *root ? root : kapsel_default_root();
}

static void now_rfc3339(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%09ldZ", ts.tv_nsec);
}

static int load_spec_copy(int dirfd, struct kap_spec **spec, struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r = kap_fs_read_file(dirfd, "config.json", 16 << 20, &buf, &len, err);
	if (r < 0)
		return r;
	return kap_spec_parse(buf, len, spec, err);
}

static char *state_json_text(const struct kap_state *st, const char *status)
{
	cleanup_json struct kap_json *j = kap_state_oci_json(st, status);
	return j ? kap_json_dump(j, false) : NULL;
}

int kap_container_resolve_rootfs(const struct kap_spec *spec, const char *bundle, char **out,
				 struct kapsel_error **err)
{
	cleanup_free char *p = NULL;
	if (!spec->root_path)
		return kap_error_plain(err, EINVAL, "root.path: missing");
	if (spec->root_path[0] == '/')
		p = strdup(spec->root_path);
	else if (asprintf(&p, "%s/%s", bundle, spec->root_path) < 0)
		p = NULL;
	if (!p)
		return kap_error(err, ENOMEM, "root.path");
	struct stat st;
	if (lstat(p, &st) < 0)
		return kap_error(err, errno, "root.path: %s", p);
	/* A rootfs that is a symlink would let the bundle author point us anywhere. */
	if (S_ISLNK(st.st_mode))
		return kap_error_plain(err, EINVAL, "root.path: %s is a symlink", p);
	if (!S_ISDIR(st.st_mode))
		return kap_error_plain(err, ENOTDIR, "root.path: %s is not a directory", p);
	*out = realpath(p, NULL);
	if (!*out)
		return kap_error(err, errno, "root.path: resolve %s", p);
	return 0;
}

static int check_spec(const struct kap_spec *spec, const struct kapsel_create_options *o,
		      bool run_mode, struct kapsel_error **err)
{
	if (!spec->process)
		return kap_error_plain(err, EINVAL, "process: missing");
	if (!spec->process->args || !spec->process->args[0])
		return kap_error_plain(err, EINVAL, "process.args: must not be empty");
	/*
	 * A namespace type not listed is the runtime's (config-linux.md#namespaces), mount
	 * included: the container is then chrooted into its rootfs and its mounts land in the
	 * runtime's mount namespace, as with runc and crun. What would change the mount that
	 * holds the rootfs, which then is the host's, is refused.
	 */
	if (!spec->namespaces[KAP_NS_MNT].enabled) {
		if (spec->root_readonly)
			return kap_error_plain(err, EINVAL,
					       "root.readonly: needs a mount namespace in "
					       "linux.namespaces");
		if (spec->rootfs_propagation)
			return kap_error_plain(
			    err, EINVAL,
			    "linux.rootfsPropagation: needs a mount namespace in "
			    "linux.namespaces");
	}
	const struct kap_namespace *uts = &spec->namespaces[KAP_NS_UTS];
	const char *uts_field = spec->hostname && *spec->hostname	? "hostname"
				: spec->domainname && *spec->domainname ? "domainname"
									: NULL;
	if (uts_field && !uts->enabled)
		return kap_error_plain(err, EINVAL, "%s: needs a uts namespace in linux.namespaces",
				       uts_field);
	if (uts_field && uts->path) {
		/* Joining the runtime's own uts namespace would rename the host. */
		struct stat a, b;
		if (stat(uts->path, &a) == 0 && stat("/proc/self/ns/uts", &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return kap_error_plain(err, EINVAL,
					       "%s: linux.namespaces uts path %s is the runtime's "
					       "own uts namespace",
					       uts_field, uts->path);
	}
	if (spec->process->terminal && !o->console_socket && (!run_mode || o->detach))
		return kap_error_plain(err, EINVAL,
				       "process.terminal is true: --console-socket is required "
				       "when the runtime does not stay attached");
	if (!spec->process->terminal && o->console_socket)
		return kap_error_plain(err, EINVAL,
				       "--console-socket given but process.terminal is false");
	bool newuser = spec->namespaces[KAP_NS_USER].enabled && !spec->namespaces[KAP_NS_USER].path;
	if (newuser && (!spec->n_uid_mappings || !spec->n_gid_mappings))
		return kap_error_plain(err, EINVAL,
				       "linux.uidMappings: required with a new user namespace");
	if (o->systemd_cgroup)
		return kap_error_plain(err, ENOTSUP,
				       "--systemd-cgroup: systemd cgroup driver not supported, use "
				       "the default cgroupfs driver");
	return kap_ns_validate(spec, err);
}

/*
 * Device cgroup rules as runc and crun apply them: the config's rules, then allow rules for the
 * default devices, /dev/pts, and every device the config creates (podman's config denies all
 * and relies on this). Returns the extended array (caller frees) or NULL when there are no
 * rules to extend.
 */
/* Whether a config rule is about exactly device d: then its access is the config's to say
 * (podman's --device /dev/x:/dev/y:r), and no implicit "rwm" widens it. */
static bool names_device(const struct kap_resources *res, const struct kap_device *d)
{
	char type = d->type == 'b' ? 'b' : 'c';
	for (size_t i = 0; i < res->n_devices; i++) {
		const struct kap_device_rule *r = &res->devices[i];
		if (r->type == type && r->major == d->major && r->minor == d->minor)
			return true;
	}
	return false;
}

static struct kap_device_rule *device_rules_with_defaults(const struct kap_spec *spec, size_t *n)
{
	static const struct kap_device_rule defaults[] = {
	    {true, 'c', -1, -1, "m"}, {true, 'b', -1, -1, "m"},	   {true, 'c', 1, 3, "rwm"},
	    {true, 'c', 1, 5, "rwm"}, {true, 'c', 1, 7, "rwm"},	   {true, 'c', 1, 8, "rwm"},
	    {true, 'c', 1, 9, "rwm"}, {true, 'c', 5, 0, "rwm"},	   {true, 'c', 5, 1, "rwm"},
	    {true, 'c', 5, 2, "rwm"}, {true, 'c', 136, -1, "rwm"},
	};
	const struct kap_resources *res = &spec->resources;
	if (!spec->has_resources || res->n_devices == 0)
		return NULL;
	size_t total = res->n_devices + KAP_ARRAY_SIZE(defaults) + spec->n_devices;
	struct kap_device_rule *rules = calloc(total, sizeof(*rules));
	if (!rules)
		return NULL;
	memcpy(rules, res->devices, res->n_devices * sizeof(*rules));
	memcpy(rules + res->n_devices, defaults, sizeof(defaults));
	size_t k = res->n_devices + KAP_ARRAY_SIZE(defaults);
	for (size_t i = 0; i < spec->n_devices; i++) {
		const struct kap_device *d = &spec->devices[i];
		if (d->type == 'p' || names_device(res, d))
			continue;
		rules[k++] = (struct kap_device_rule){true, d->type == 'b' ? 'b' : 'c', d->major,
						      d->minor, "rwm"};
	}
	*n = k;
	return rules;
}

/* Limits only a cgroup can enforce (device rules alone are not: a rootless container cannot
 * create device nodes anyway). */
static bool needs_cgroup_limits(const struct kap_spec *spec)
{
	const struct kap_resources *r = &spec->resources;
	if (!spec->has_resources)
		return false;
	return r->has_mem_limit || r->has_mem_reservation || r->has_mem_swap || r->has_cpu_shares ||
	       r->has_cpu_quota || r->has_cpu_period || r->cpu_cpus || r->cpu_mems ||
	       r->has_pids_limit || r->has_blkio_weight || r->n_throttle_read_bps ||
	       r->n_throttle_write_bps || r->n_throttle_read_iops || r->n_throttle_write_iops ||
	       r->n_hugepage_limits || r->n_unified || r->has_mem_kernel_tcp ||
	       r->has_net_classid || r->n_net_priorities || r->n_rdma;
}

/* Everything a failed create must undo. */
struct create_job {
	int rootfd, dirfd;
	const char *id;
	pid_t child, init;
	struct kap_cgroup *cg;
};

static void create_rollback(struct create_job *job)
{
	if (job->init > 0)
		kill(job->init, SIGKILL);
	if (job->child > 0 && job->child != job->init)
		kill(job->child, SIGKILL);
	if (job->child > 0)
		waitpid(job->child, NULL, 0);
	if (job->init > 0 && job->init != job->child)
		kap_wait_pid_gone(job->init, 5000);
	if (job->cg) {
		cleanup_error struct kapsel_error *e = NULL;
		if (kap_cgroup_destroy(job->cg, &e) < 0)
			kap_warn("cleanup: %s", e->msg);
		kap_cgroup_free(job->cg);
		job->cg = NULL;
	}
	if (job->dirfd >= 0)
		close(job->dirfd);
	kap_fs_rm_rf(job->rootfd, job->id);
}

static int create_container(const struct kapsel_create_options *o, bool run_mode,
			    struct created *out, struct kapsel_error **err)
{
	const char *root = root_or_default(o->root);
	int r = kap_state_validate_id(o->id, err);
	if (r < 0)
		return r;
	if (mkdir(root, 0700) < 0 && errno != EEXIST) {
		/* containerd passes a --root whose parents may not exist yet: mkdir -p. */
		cleanup_free char *p = strdup(root);
		for (char *s = p ? p + 1 : NULL; s && (s = strchr(s, '/')); s++) {
			*s = '\0';
			if (mkdir(p, 0711) < 0 && errno != EEXIST)
				break;
			*s = '/';
		}
		if (mkdir(root, 0700) < 0 && errno != EEXIST)
			return kap_error(err, errno, "create state root %s", root);
	}
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kap_error(err, errno, "open state root %s", root);

	/* Read and check the bundle before anything exists on disk. */
	cleanup_free char *bundle = realpath(o->bundle ? o->bundle : ".", NULL);
	if (!bundle)
		return kap_error(err, errno, "bundle %s", o->bundle ? o->bundle : ".");
	cleanup_free char *cfg_path = NULL, *cfg = NULL;
	size_t cfg_len = 0;
	if (asprintf(&cfg_path, "%s/config.json", bundle) < 0)
		return kap_error(err, ENOMEM, "config.json");
	r = kap_fs_read_file(AT_FDCWD, cfg_path, 16 << 20, &cfg, &cfg_len, err);
	if (r < 0)
		return r;
	cleanup_spec struct kap_spec *spec = NULL;
	r = kap_spec_parse(cfg, cfg_len, &spec, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", cfg_path);
	if ((r = check_spec(spec, o, run_mode, err)) < 0)
		return r;
	if ((r = kap_sysctl_validate(spec, err)) < 0)
		return r;
	cleanup_free char *rootfs = NULL;
	if ((r = kap_container_resolve_rootfs(spec, bundle, &rootfs, err)) < 0)
		return r;
	struct kap_seccomp *seccomp = NULL;
	if (spec->seccomp && (r = kap_seccomp_prepare(spec->seccomp, &seccomp, err)) < 0)
		return r;

	/* mkdir is the uniqueness check: two creates of one id cannot both pass it. */
	if (mkdirat(rootfd, o->id, 0700) < 0) {
		kap_seccomp_free(seccomp);
		if (errno == EEXIST)
			return kap_error_plain(err, EEXIST, "container %s already exists", o->id);
		return kap_error(err, errno, "create state directory %s/%s", root, o->id);
	}
	struct create_job job = {.rootfd = rootfd, .dirfd = -1, .id = o->id};
	int sync[2] = {-EBADF, -EBADF};
	cleanup_close int fifo_fd = -EBADF;
	struct kap_cgroup_join join = {.v2_dir = -EBADF};
	int master = -1;
	struct kap_state st = {.id = (char *)o->id, .bundle = bundle, .rootfs = rootfs};
	char created_at[64];
	now_rfc3339(created_at, sizeof(created_at));
	st.created = created_at;
	st.owner = "";
	cleanup_json struct kap_json *annotations = kap_json_new_object();
	for (size_t i = 0; i < spec->n_annotations; i++)
		kap_json_set(annotations, spec->annotation_keys[i],
			     kap_json_new_string(spec->annotation_values[i]));
	st.annotations = annotations;
	st.hooks_poststart = spec->hooks.n[KAP_HOOK_POSTSTART] > 0;
	st.hooks_poststop = spec->hooks.n[KAP_HOOK_POSTSTOP] > 0;

	job.dirfd = openat(rootfd, o->id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (job.dirfd < 0 || flock(job.dirfd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "open state directory %s/%s", root, o->id);
		goto fail;
	}
	kap_fault_point("create:state-dir");
	if ((r = kap_fs_write_atomic(job.dirfd, "config.json", cfg, cfg_len, 0600, false, err)) < 0)
		goto fail;
	if (mkfifoat(job.dirfd, "exec.fifo", 0600) < 0) {
		r = kap_error(err, errno, "mkfifo %s/%s/exec.fifo", root, o->id);
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sync) < 0) {
		r = kap_error(err, errno, "socketpair");
		goto fail;
	}
	/* O_RDWR never blocks on a fifo; the init inherits this fd and waits on it. */
	fifo_fd = openat(job.dirfd, "exec.fifo", O_RDWR | O_CLOEXEC);
	if (fifo_fd < 0) {
		r = kap_error(err, errno, "open %s/%s/exec.fifo", root, o->id);
		goto fail;
	}

	struct kap_init_ctx ctx = {
	    .spec = spec,
	    .sync_fd = sync[1],
	    .state_dirfd = job.dirfd,
	    .fifo_fd = fifo_fd,
	    .bundle = bundle,
	    .rootfs = rootfs,
	    .no_pivot = o->no_pivot,
	    .no_new_keyring = o->no_new_keyring,
	    .preserve_fds = o->preserve_fds,
	    .seccomp = seccomp,
	};
	uint64_t clone_flags = 0;
	for (int t = 0; t < KAP_NS_COUNT; t++) {
		const struct kap_namespace *ns = &spec->namespaces[t];
		ctx.new_ns[t] = ns->enabled && !ns->path;
		if (ns->path)
			ctx.two_stage = true;
		if (ctx.new_ns[t] && t != KAP_NS_CGROUP)
			clone_flags |= (uint64_t)kap_ns_clone_flag((enum kap_ns_type)t);
	}
	if (ctx.new_ns[KAP_NS_TIME])
		ctx.two_stage = true; /* offsets must be written before a process enters */
	st.own_pid_ns = ctx.new_ns[KAP_NS_PID];

	/* The cgroup exists before the process: the process joins it itself (see
	 * kap_cgroup_join_fds), which is 100x cheaper than the runtime moving it. */
	{
		struct kap_resources res = spec->resources;
		size_t nrules = 0;
		cleanup_free struct kap_device_rule *rules =
		    device_rules_with_defaults(spec, &nrules);
		if (rules) {
			res.devices = rules;
			res.n_devices = nrules;
		}
		r = kap_cgroup_create("/sys/fs/cgroup", spec->cgroups_path, o->id,
				      spec->has_resources ? &res : NULL, 0, &job.cg, err);
	}
	/* Root in a nested user namespace (rootless `kapsel run` drives us from there) owns no
	 * more of /sys/fs/cgroup than the user it maps to. */
	bool rootless = geteuid() != 0 || kap_userns_nested();
	if (r < 0 && rootless && (r == -EACCES || r == -EPERM || r == -EROFS) &&
	    !needs_cgroup_limits(spec)) {
		/* Rootless without a delegated cgroup: run without one (runc and crun do). */
		kap_debug("no cgroup for a rootless container: %s", *err ? (*err)->msg : "");
		kapsel_error_free(*err);
		*err = NULL;
		r = 0;
	}
	if (r < 0)
		goto fail;
	st.cgroup = job.cg ? kap_cgroup_to_json(job.cg) : NULL;
	st.creating = true;
	if ((r = kap_state_write(job.dirfd, &st, err)) < 0)
		goto fail;
	kap_fault_point("create:cgroup");
	if (job.cg && (r = kap_cgroup_join_fds(job.cg, &join, err)) < 0)
		goto fail;
	ctx.join = &join;

	struct clone_args ca = {.flags = ctx.two_stage ? 0 : clone_flags, .exit_signal = SIGCHLD};
	if (join.v2_dir >= 0) {
		ca.flags |= CLONE_INTO_CGROUP;
		ca.cgroup = (uint64_t)join.v2_dir;
	}
	pid_t pid = (pid_t)kap_clone3(&ca);
	if (pid < 0) {
		r = kap_error(err, errno, "clone container process");
		goto fail;
	}
	if (pid == 0) {
		close(sync[0]);
		/*
		 * Non-dumpable until execve (CVE-2016-9962): a process of the container cannot
		 * ptrace us or open /proc/<pid>/{fd,cwd,root}. A rootless runtime must still write
		 * our id maps through /proc/<pid>: then we are the only member of fresh
		 * namespaces until the maps are written, and become non-dumpable right after.
		 */
		ctx.defer_nondumpable = ctx.new_ns[KAP_NS_USER] && rootless;
		if (!ctx.defer_nondumpable)
			prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		if (kap_cgroup_join_self(&join) < 0) {
			struct kapsel_error *e = NULL;
			kap_error(&e, errno, "join cgroup %s", job.cg->path);
			kap_sync_send_error(ctx.sync_fd, e);
			_exit(127);
		}
		kap_cgroup_join_close(&join);
		/* No host fd (state root, state dir, image store...) may reach the container. */
		int keep[] = {ctx.sync_fd, ctx.fifo_fd, kap_log_fd()};
		if (kap_proc_close_fds_except((unsigned)ctx.preserve_fds, keep,
					      KAP_ARRAY_SIZE(keep)) < 0) {
			struct kapsel_error *e = NULL;
			kap_error(&e, errno, "close inherited fds");
			kap_sync_send_error(ctx.sync_fd, e);
			_exit(127);
		}
		ctx.state_dirfd = -1;
		if (ctx.two_stage)
			kap_ns_stage1(&ctx);
		/* Only id maps must be in place before the init goes on: wait for them. */
		struct kap_sync_msg m;
		struct kapsel_error *e = NULL;
		if (ctx.new_ns[KAP_NS_USER] &&
		    kap_sync_expect(ctx.sync_fd, KAP_SYNC_GO, &m, NULL, &e) < 0)
			_exit(127);
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		kap_init_main(&ctx);
	}
	job.child = pid;
	kap_cgroup_join_close(&join);
	close(fifo_fd);
	fifo_fd = -EBADF;
	close(sync[1]);
	sync[1] = -EBADF;
	kap_seccomp_free(seccomp);
	seccomp = NULL;

	kap_fault_point("create:cloned");
	if (!ctx.two_stage && ctx.new_ns[KAP_NS_USER] &&
	    (r = kap_userns_write_maps(pid, spec, err)) < 0)
		goto fail;
	/* No state write here: until the final one, the child dies by itself if we do (it reads
	 * EOF on the sync socket), and the cgroup recorded above is what delete --force needs. */
	st.pid = pid;
	kap_proc_stat(pid, &st.start_time, NULL);
	if (ctx.two_stage || ctx.new_ns[KAP_NS_USER])
		kap_sync_send(sync[0], KAP_SYNC_GO, 0, NULL, -1);

	struct kap_sync_msg m;
	for (;;) {
		int fd = -1;
		r = kap_sync_recv(sync[0], &m, &fd);
		if (r < 0) {
			r = kap_error_plain(err, EIO, "container process exited during setup");
			goto fail;
		}
		if (m.type == KAP_SYNC_ERROR) {
			r = kap_error_plain(err, m.value > 0 ? m.value : EIO, "%s", m.text);
			goto fail;
		}
		if (m.type == KAP_SYNC_USERMAP) {
			if ((r = kap_userns_write_maps(pid, spec, err)) < 0)
				goto fail;
			kap_sync_send(sync[0], KAP_SYNC_GO, 0, NULL, -1);
		} else if (m.type == KAP_SYNC_PID) {
			job.init = m.value;
			int status;
			waitpid(pid, &status, 0);
			job.child = 0;
			st.pid = m.value;
			kap_proc_stat(st.pid, &st.start_time, NULL);
			if ((r = kap_state_write(job.dirfd, &st, err)) < 0)
				goto fail;
		} else if (m.type == KAP_SYNC_HOOKS) {
			cleanup_free char *sj = state_json_text(&st, "creating");
			if ((r = kap_hooks_run(&spec->hooks, KAP_HOOK_PRESTART, sj, err)) < 0 ||
			    (r = kap_hooks_run(&spec->hooks, KAP_HOOK_CREATE_RUNTIME, sj, err)) < 0)
				goto fail;
			kap_fault_point("create:hooks");
			kap_sync_send(sync[0], KAP_SYNC_HOOKS_OK, 0, NULL, -1);
		} else if (m.type == KAP_SYNC_PTY) {
			if (o->console_socket) {
				r = kap_terminal_send_to_socket(o->console_socket, fd, err);
				close(fd);
				if (r < 0)
					goto fail;
			} else {
				master = fd;
			}
		} else if (m.type == KAP_SYNC_SECCOMP) {
			cleanup_free char *sj = state_json_text(&st, "creating");
			struct kap_seccomp *sc = NULL;
			r = kap_seccomp_prepare(spec->seccomp, &sc, err);
			if (r == 0)
				r = kap_seccomp_send_notify_fd(sc, fd, sj, err);
			kap_seccomp_free(sc);
			close(fd);
			if (r < 0)
				goto fail;
		} else if (m.type == KAP_SYNC_READY) {
			break;
		} else {
			if (fd >= 0)
				close(fd);
			r = kap_error_plain(err, EPROTO, "container setup: unexpected message %u",
					    m.type);
			goto fail;
		}
	}
	kap_fault_point("create:ready");
	if (!job.init)
		job.init = pid;
	st.creating = false;
	if ((r = kap_state_write(job.dirfd, &st, err)) < 0)
		goto fail;
	if (o->pid_file && (r = kap_fs_write_pid_file(o->pid_file, st.pid, err)) < 0)
		goto fail;
	kap_fault_point("create:recorded");
	kap_sync_send(sync[0], KAP_SYNC_DONE, 0, NULL, -1);
	close(sync[0]);
	kap_json_put(st.cgroup);
	kap_cgroup_free(job.cg);
	close(job.dirfd);
	if (out) {
		out->pid = st.pid;
		out->master = master;
	} else if (master >= 0) {
		close(master);
	}
	return 0;

fail:
	kap_cgroup_join_close(&join);
	if (sync[0] >= 0)
		close(sync[0]);
	if (sync[1] >= 0)
		close(sync[1]);
	kap_seccomp_free(seccomp);
	kap_json_put(st.cgroup);
	if (master >= 0)
		close(master);
	create_rollback(&job);
	return r < 0 ? r : -EIO;
}

API int kapsel_container_create(const struct kapsel_create_options *opts, struct kapsel_error **err)
{
	return create_container(opts, false, NULL, err);
}

static int start_locked(int dirfd, struct kap_state *st, struct kapsel_error **err)
{
	enum kap_status s = kap_container_status(dirfd, st);
	if (s != KAP_STATUS_CREATED)
		return kap_error_plain(err, EINVAL, "cannot start container %s: it is %s", st->id,
				       kap_status_name(s));
	/* A writer that cannot open finds no reader: the init (which holds the fifo O_RDWR)
	 * is gone. */
	cleanup_close int fifo = openat(dirfd, "exec.fifo", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fifo < 0 && errno == ENXIO)
		return kap_error_plain(err, ESRCH, "cannot start container %s: its init exited",
				       st->id);
	if (fifo < 0)
		return kap_error(err, errno, "open exec.fifo of %s", st->id);
	/*
	 * The init keeps its fifo fd, close-on-exec, until execve: the hangup seen by a reader
	 * when that last writer goes says the program runs (or the init died). A fifo reader
	 * only reports POLLHUP for writers that opened after it did (pipe_poll compares the
	 * writer counter), hence the reader first, then the writer that sends the byte.
	 */
	cleanup_close int done = openat(dirfd, "exec.fifo", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (done < 0)
		return kap_error(err, errno, "open exec.fifo of %s", st->id);
	cleanup_close int go = openat(dirfd, "exec.fifo", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (go < 0)
		return kap_error(err, errno, "open exec.fifo of %s", st->id);
	if (write(go, "0", 1) != 1)
		return kap_error(err, errno, "start container %s", st->id);
	close(steal_fd(go));
	close(steal_fd(fifo));
	unlinkat(dirfd, "exec.fifo", 0);
	/* events = 0: the byte still unread by the init must not wake us, only the hangup. */
	struct pollfd p = {.fd = done, .events = 0};
	int pr;
	do
		pr = poll(&p, 1, -1);
	while (pr < 0 && errno == EINTR);
	if (pr < 0)
		return kap_error(err, errno, "start container %s: wait for its exec", st->id);

	/* poststart failures are warnings, logged by kap_hooks_run (config.md#poststart). */
	cleanup_spec struct kap_spec *spec = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (st->hooks_poststart && load_spec_copy(dirfd, &spec, &e) == 0 &&
	    spec->hooks.n[KAP_HOOK_POSTSTART]) {
		cleanup_free char *sj = state_json_text(st, "running");
		kap_hooks_run(&spec->hooks, KAP_HOOK_POSTSTART, sj, NULL);
	}
	return 0;
}

API int kapsel_container_start(const char *root, const char *id, struct kapsel_error **err)
{
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root_or_default(root), id, LOCK_EX, &dirfd, &st, err);
	if (r < 0)
		return r;
	return start_locked(dirfd, st, err);
}

API int kapsel_container_rename(const char *root, const char *id, const char *new_id,
				const char *new_bundle, struct kapsel_error **err)
{
	root = root_or_default(root);
	int r = kap_state_validate_id(new_id, err);
	if (r < 0)
		return r;
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	if ((r = kap_container_load(root, id, LOCK_EX, &dirfd, &st, err)) < 0)
		return r;
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kap_error(err, errno, "open state root %s", root);
	/* The cgroup keeps its path (state.json records it); the directory and ids move. */
	char *nid = strdup(new_id), *nb = new_bundle ? strdup(new_bundle) : NULL, *nr = NULL;
	size_t bl = st->bundle ? strlen(st->bundle) : 0;
	if (nb && st->rootfs && bl && !strncmp(st->rootfs, st->bundle, bl) &&
	    st->rootfs[bl] == '/' && asprintf(&nr, "%s%s", nb, st->rootfs + bl) < 0)
		nr = NULL;
	if (!nid || (new_bundle && !nb)) {
		free(nid);
		free(nb);
		free(nr);
		return kap_error(err, ENOMEM, "rename %s", id);
	}
	if (renameat2(rootfd, id, rootfd, new_id, RENAME_NOREPLACE) < 0) {
		int e = errno;
		free(nid);
		free(nb);
		free(nr);
		return e == EEXIST
			   ? kap_error_plain(err, EEXIST, "container %s already exists", new_id)
			   : kap_error(err, e, "rename state of %s to %s", id, new_id);
	}
	free(st->id);
	st->id = nid;
	if (nb) {
		free(st->bundle);
		st->bundle = nb;
	}
	if (nr) {
		free(st->rootfs);
		st->rootfs = nr;
	}
	if ((r = kap_state_write(dirfd, st, err)) < 0)
		renameat2(rootfd, new_id, rootfd, id, RENAME_NOREPLACE);
	return r;
}

API int kapsel_container_state(const char *root, const char *id, char **json,
			       struct kapsel_error **err)
{
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root_or_default(root), id, 0, &dirfd, &st, err);
	if (r < 0)
		return r;
	enum kap_status s = kap_container_status(dirfd, st);
	cleanup_json struct kap_json *j = kap_state_oci_json(st, kap_status_name(s));
	if (!j || !(*json = kap_json_dump(j, true)))
		return kap_error(err, ENOMEM, "state");
	return 0;
}

static int signal_all(const struct kap_state *st, int sig, struct kapsel_error **err)
{
	if (!st->cgroup)
		return 0;
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	int r = kap_cgroup_from_json(st->cgroup, &cg, err);
	if (r < 0)
		return r;
	cleanup_free pid_t *pids = NULL;
	size_t n = 0;
	if ((r = kap_cgroup_pids(cg, &pids, &n, err)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		kill(pids[i], sig);
	/* A frozen task only acts on SIGKILL once thawed. */
	bool frozen = false;
	if (sig == SIGKILL && kap_cgroup_is_frozen(cg, &frozen, NULL) == 0 && frozen)
		kap_cgroup_freeze(cg, false, NULL);
	return 0;
}

static int signal_init(const struct kap_state *st, int sig, struct kapsel_error **err)
{
	cleanup_close int pfd = kap_pidfd_open(st->pid, 0);
	uint64_t start;
	/* Check the start time after taking the pidfd: the fd then pins the right process. */
	if (pfd < 0 || kap_proc_stat(st->pid, &start, NULL) < 0 || start != st->start_time)
		return kap_error_plain(err, ESRCH, "container %s is not running", st->id);
	if (kap_pidfd_send_signal(pfd, sig, NULL, 0) < 0)
		return kap_error(err, errno, "signal %d to container %s", sig, st->id);
	return 0;
}

API int kapsel_container_kill(const char *root, const char *id, int sig, bool all,
			      struct kapsel_error **err)
{
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root_or_default(root), id, LOCK_SH, &dirfd, &st, err);
	if (r < 0)
		return r;
	if (sig <= 0 || sig > 64)
		return kap_error_plain(err, EINVAL, "kill: invalid signal %d", sig);
	enum kap_status s = kap_container_status(dirfd, st);
	if (s == KAP_STATUS_STOPPED && !all)
		return kap_error_plain(err, ESRCH, "container %s is not running", id);
	if (all)
		return signal_all(st, sig, err);
	if (s == KAP_STATUS_PAUSED && sig == SIGKILL) {
		r = signal_init(st, sig, err);
		signal_all(st, SIGKILL, NULL);
		return r;
	}
	return signal_init(st, sig, err);
}

static int destroy(int rootfd_unused, const char *root, int dirfd, struct kap_state *st,
		   struct kapsel_error **err)
{
	(void)rootfd_unused;
	enum kap_status s = kap_container_status(dirfd, st);
	if (s != KAP_STATUS_STOPPED) {
		signal_init(st, SIGKILL, NULL);
		signal_all(st, SIGKILL, NULL);
		if (kap_wait_pid_gone(st->pid, 10000) < 0)
			return kap_error_plain(err, EBUSY, "container %s: init %d did not exit",
					       st->id, st->pid);
	} else if (!st->own_pid_ns) {
		/* Sharing the host pid ns, the init's children survive it: reap them too. */
		signal_all(st, SIGKILL, NULL);
	}
	cleanup_spec struct kap_spec *spec = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (st->hooks_poststop && load_spec_copy(dirfd, &spec, &e) == 0 &&
	    spec->hooks.n[KAP_HOOK_POSTSTOP]) {
		cleanup_free char *sj = state_json_text(st, "stopped");
		if (kap_hooks_run(&spec->hooks, KAP_HOOK_POSTSTOP, sj, &e) < 0)
			kap_warn("%s", e->msg);
	}
	if (st->cgroup) {
		cleanup_cgroup struct kap_cgroup *cg = NULL;
		int r = kap_cgroup_from_json(st->cgroup, &cg, err);
		if (r == 0)
			r = kap_cgroup_destroy(cg, err);
		if (r < 0)
			return r;
	}
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0 || kap_fs_rm_rf(rootfd, st->id) < 0)
		return kap_error(err, errno, "remove state of %s", st->id);
	return 0;
}

/*
 * A create killed between making its cgroup and recording it in state.json leaves the cgroup
 * known to nobody. config.json is in the state directory before any cgroup exists, so the
 * path (cgroupsPath or /kapsel/<id>) follows from it and the id alone.
 */
static void remove_orphan_cgroup(int rootfd, const char *id)
{
	cleanup_close int dirfd =
	    openat(rootfd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dirfd < 0)
		return; /* no state directory: create never got as far as a cgroup */
	cleanup_spec struct kap_spec *spec = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	if (load_spec_copy(dirfd, &spec, &e) < 0) {
		/* Killed before config.json was complete: no cgroup was made yet. */
		kap_debug("delete --force %s: %s", id, e->msg);
		return;
	}
	/* No cgroupfs (rootless, nested) is no reason to keep the state: say what stays. */
	if (kap_cgroup_remove_orphan("/sys/fs/cgroup", spec->cgroups_path, id, &e) < 0)
		kap_warn("delete --force %s: %s", id, e->msg);
}

API int kapsel_container_delete(const char *root, const char *id, bool force,
				struct kapsel_error **err)
{
	root = root_or_default(root);
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	cleanup_error struct kapsel_error *lerr = NULL;
	if (force)
		kap_sealed_sweep(root);
	int r = kap_container_load(root, id, LOCK_EX, &dirfd, &st, &lerr);
	if (r < 0 && force && kap_state_validate_id(id, NULL) == 0) {
		/* A missing container, or a state directory without a usable state.json (create
		 * was killed before recording anything): runc removes the directory and succeeds.
		 */
		cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rootfd >= 0)
			remove_orphan_cgroup(rootfd, id);
		if (rootfd < 0 || kap_fs_rm_rf(rootfd, id) == 0)
			return 0;
	}
	if (r < 0) {
		*err = steal_ptr(lerr);
		return r;
	}
	enum kap_status s = kap_container_status(dirfd, st);
	if (!force && (s == KAP_STATUS_RUNNING || s == KAP_STATUS_PAUSED))
		return kap_error_plain(err, EBUSY,
				       "cannot delete container %s: it is %s (use --force)", id,
				       kap_status_name(s));
	return destroy(-1, root, dirfd, st, err);
}

static int with_cgroup(const char *root, const char *id, int lock, struct kap_cgroup **cg,
		       int *status, struct kapsel_error **err)
{
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root_or_default(root), id, lock, &dirfd, &st, err);
	if (r < 0)
		return r;
	if (status)
		*status = (int)kap_container_status(dirfd, st);
	if (!st->cgroup)
		return kap_error_plain(err, ENOENT, "container %s has no cgroup", id);
	return kap_cgroup_from_json(st->cgroup, cg, err);
}

API int kapsel_container_pause(const char *root, const char *id, struct kapsel_error **err)
{
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	int s;
	int r = with_cgroup(root, id, LOCK_EX, &cg, &s, err);
	if (r < 0)
		return r;
	if (s != KAP_STATUS_RUNNING && s != KAP_STATUS_CREATED)
		return kap_error_plain(err, EINVAL, "cannot pause container %s: it is %s", id,
				       kap_status_name((enum kap_status)s));
	return kap_cgroup_freeze(cg, true, err);
}

API int kapsel_container_resume(const char *root, const char *id, struct kapsel_error **err)
{
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	int s;
	int r = with_cgroup(root, id, LOCK_EX, &cg, &s, err);
	if (r < 0)
		return r;
	if (s != KAP_STATUS_PAUSED)
		return kap_error_plain(err, EINVAL, "cannot resume container %s: it is not paused",
				       id);
	return kap_cgroup_freeze(cg, false, err);
}

API int kapsel_container_pids(const char *root, const char *id, pid_t **pids, size_t *n,
			      struct kapsel_error **err)
{
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	int r = with_cgroup(root, id, 0, &cg, NULL, err);
	if (r < 0)
		return r;
	return kap_cgroup_pids(cg, pids, n, err);
}

API int kapsel_container_list(const char *root, struct kapsel_container_info **list, size_t *n,
			      struct kapsel_error **err)
{
	root = root_or_default(root);
	*list = NULL;
	*n = 0;
	cleanup_dir DIR *d = opendir(root);
	if (!d && errno == ENOENT)
		return 0;
	if (!d)
		return kap_error(err, errno, "open state root %s", root);
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || kap_state_validate_id(de->d_name, NULL) < 0)
			continue;
		cleanup_close int dirfd = -EBADF;
		cleanup_state struct kap_state *st = NULL;
		if (kap_container_load(root, de->d_name, 0, &dirfd, &st, NULL) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			struct kapsel_container_info *nl = realloc(*list, cap * sizeof(**list));
			if (!nl) {
				kapsel_container_info_free(*list, *n);
				*list = NULL;
				*n = 0;
				return kap_error(err, ENOMEM, "list");
			}
			*list = nl;
		}
		enum kap_status s = kap_container_status(dirfd, st);
		struct kapsel_container_info *ci = &(*list)[(*n)++];
		ci->id = strdup(st->id);
		ci->pid = s == KAP_STATUS_STOPPED ? 0 : st->pid;
		ci->status = strdup(kap_status_name(s));
		ci->bundle = strdup(st->bundle ? st->bundle : "");
		ci->created = strdup(st->created ? st->created : "");
		struct stat sb;
		char owner[32];
		snprintf(owner, sizeof(owner), "%s",
			 fstat(dirfd, &sb) == 0 && sb.st_uid == 0 ? "root" : "");
		if (!*owner)
			snprintf(owner, sizeof(owner), "#%u", (unsigned)sb.st_uid);
		ci->owner = strdup(owner);
	}
	return 0;
}

API void kapsel_container_info_free(struct kapsel_container_info *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(list[i].id);
		free(list[i].status);
		free(list[i].bundle);
		free(list[i].created);
		free(list[i].owner);
	}
	free(list);
}

/* run: forward signals to the init and wait; shell-style exit status. */
int kap_wait_process(pid_t init, int master, pid_t *relay_pid)
{
	sigset_t set;
	sigemptyset(&set);
	static const int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(fwd); i++)
		sigaddset(&set, fwd[i]);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (master >= 0) {
		/* The relay runs in a child so this process can keep waiting and forwarding. */
		pid_t relay = fork();
		*relay_pid = relay;
		if (relay == 0) {
			sigprocmask(SIG_UNBLOCK, &set, NULL);
			kap_terminal_relay(master);
			_exit(0);
		}
		close(master);
	}
	for (;;) {
		int status;
		pid_t p;
		while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
			if (p == init)
				return WIFEXITED(status) ? WEXITSTATUS(status)
							 : 128 + WTERMSIG(status);
		}
		if (p < 0 && errno == ECHILD)
			return 255;
		int sig = 0;
		if (sigwait(&set, &sig) != 0 || sig == SIGCHLD)
			continue;
		/* A new size is the relay's to copy to the pty (the kernel then signals the
		 * container's foreground group); it may not share our terminal's signals. */
		if (sig == SIGWINCH && master >= 0 && *relay_pid > 0)
			kill(*relay_pid, sig);
		else
			kill(init, sig);
	}
}

static int wait_and_relay(void *ctx, pid_t init, int master)
{
	pid_t *relay = ctx;
	return kap_wait_process(init, master, relay);
}

API int kapsel_container_run_wait(const struct kapsel_create_options *opts,
				  int (*wait)(void *ctx, pid_t init, int master), void *ctx,
				  struct kapsel_error **err)
{
	/* Orphans of the intermediate process (two-stage create) must reparent to us. */
	if (!opts->detach)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	struct created c = {.master = -1};
	int r = create_container(opts, true, &c, err);
	if (r < 0)
		return r;
	const char *root = root_or_default(opts->root);
	{
		cleanup_close int dirfd = -EBADF;
		cleanup_state struct kap_state *st = NULL;
		r = kap_container_load(root, opts->id, LOCK_EX, &dirfd, &st, err);
		if (r == 0)
			r = start_locked(dirfd, st, err);
		if (r < 0) {
			if (c.master >= 0)
				close(c.master);
			if (dirfd >= 0 && st)
				destroy(-1, root, dirfd, st, NULL);
			return r;
		}
	}
	if (opts->detach)
		return 0;
	int status = wait(ctx, c.pid, c.master);
	cleanup_error struct kapsel_error *e = NULL;
	if (kapsel_container_delete(root, opts->id, true, &e) < 0)
		kap_warn("%s", e->msg);
	return status;
}

API int kapsel_container_run(const struct kapsel_create_options *opts, struct kapsel_error **err)
{
	pid_t relay = -1;
	int status = kapsel_container_run_wait(opts, wait_and_relay, &relay, err);
	/* Every holder of the pty is gone now: the relay drains the last output and ends. */
	if (relay > 0)
		waitpid(relay, NULL, 0);
	return status;
}
