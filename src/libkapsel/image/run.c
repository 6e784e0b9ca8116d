/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel run IMAGE CMD` and the commands around it (ps, stop, rm, logs): image -> overlay
 * rootfs -> config.json -> the OCI runtime (include/kapsel/container.h), as podman does it with
 * conmon and crun.
 *
 * Per container, under <store>/containers/<name>/ (the bundle directory):
 *   config.json         the generated runtime config
 *   container.json      what ps/stop/rm need: image, command, times, state, exit code
 *   upper/ work/        the overlay's writable layer
 *   merged/             the overlay mount (host mount namespace; the container's mount
 *                       namespace gets a copy at create and pivots into it)
 *   hosts, hostname     bind-mounted read-only at /etc/hosts and /etc/hostname
 *   ctr.log             stdout + stderr of a detached container
 * The container's name is its runtime id, so `kapsel exec NAME`, `kapsel kill NAME` and the
 * rest of the runtime commands work on it. A detached container gets a monitor process (what
 * conmon is to podman): it holds the container as its child, records the exit status, and
 * cleans up (--rm included) when the container exits.
 *
 * Rootless (a non-root user), `kapsel run` first moves itself into a user namespace that maps
 * root to the user (uid and gid only, as `kapsel spec --rootless` does) and a mount namespace
 * of its own, mounts the overlay there with "userxattr" (the store unpacks layers for that),
 * and drives the runtime from inside: the config has no user namespace of its own, the
 * container shares ours, and the runtime treats root in a nested user namespace as rootless
 * (no cgroup unless delegated, device nodes bound from the host). The overlay mount lives only
 * in that mount namespace: the foreground kapsel or the monitor of a detached container holds
 * it and unmounts it when the container ends; `kapsel exec NAME` joins the namespaces through
 * the container's init. A rootless container gains nothing the user lacks: everything it
 * creates is owned by the user, and host files of other users appear as the overflow id.
 *
 * A user with /etc/subuid and /etc/subgid ranges gets podman's wider mapping instead (0 the
 * user, 1.. the ranges; image/subid.c): the image's owners exist in the container, so its
 * layers are used as copies unpacked inside that namespace, which the kernel stored with the
 * shifted host ids (<store>/idmapped/<mapping>/, made once per layer and mapping). Debian 12's
 * 6.1 kernel has no idmapped overlayfs layers (6.5 and later) to do without the copies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/run.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/proc.h"
#include "core/syscalls.h"
#include "image/ctr-ref.h"
#include "image/image.h"
#include "image/runflags.h"
#include "image/shortnames.h"
#include "image/subid.h"
#include "net/net.h"
#include "net/pasta.h"
#include "run/run-vm.h"

#define API __attribute__((visibility("default")))

#define META	 "container.json"
#define LOG_FILE "ctr.log"
#define PID_FILE "ctr.pid"
/* The monitor's socket for `kapsel attach` (conmon's attach socket, SOCK_SEQPACKET). */
#define ATTACH_SOCK "attach"
/* run --vm --net NETWORK: the VM's network (run/run-vm.h), and the sign that it holds a lease */
#define VM_NET	   KAP_RUN_VM_NET
#define ATTACH_MAX 8

/* linux/magic.h; spelled out, as container/mount.c does, to keep the uAPI header out. */
#define CGROUP2_SUPER_MAGIC 0x63677270

static void store_closep(struct kap_store **s)
{
	if (*s)
		kap_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(store_closep)))

static const char *root_or_default(const char *root)
{
	return root && *root ? root : KAPSEL_DEFAULT_ROOT;
}

/* ---- rootless ---- */

/*
 * Make this process root of a new user namespace that maps uid 0 and gid 0 to the caller's
 * ids and nothing else (user_namespaces(7): an unprivileged process may write exactly that
 * into its own maps, after denying setgroups). mount_ns: also a mount namespace owned by it,
 * where the overlay can be mounted, slave to the host's so nothing mounted here leaks out.
 * Must be called while single-threaded (unshare(2) refuses CLONE_NEWUSER otherwise).
 */
static int userns_enter(uid_t uid, gid_t gid, bool mount_ns, struct kapsel_error **err)
{
	if (unshare(CLONE_NEWUSER | (mount_ns ? CLONE_NEWNS : 0)) < 0) {
		int e = errno;
		return kap_error(err, e, "rootless: create a user namespace%s",
				 e == EPERM || e == ENOSPC
				     ? " (are unprivileged user namespaces disabled? see "
				       "sysctl user.max_user_namespaces)"
				     : "");
	}
	char map[64];
	int n;
	if (kap_fs_write_at(AT_FDCWD, "/proc/self/setgroups", "deny", 4, err) < 0)
		return kap_error_wrap(err, "rootless");
	n = snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
	if (kap_fs_write_at(AT_FDCWD, "/proc/self/uid_map", map, (size_t)n, err) < 0)
		return kap_error_wrap(err, "rootless: map uid %u", (unsigned)uid);
	n = snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
	if (kap_fs_write_at(AT_FDCWD, "/proc/self/gid_map", map, (size_t)n, err) < 0)
		return kap_error_wrap(err, "rootless: map gid %u", (unsigned)gid);
	if (mount_ns && mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return kap_error(err, errno, "rootless: make / a slave mount");
	return 0;
}

/*
 * The user's namespace: with subordinate ranges (m->n_uids) through newuidmap/newgidmap,
 * otherwise the single-id one above.
 */
static int rootless_enter(const struct kap_idmap *m, bool mount_ns, struct kapsel_error **err)
{
	if (m->n_uids)
		return kap_subid_enter(m, mount_ns, err);
	kap_debug("rootless: no /etc/subuid and /etc/subgid ranges for %s: mapping only uid %u "
		  "and gid %u (to 0)",
		  *m->user ? m->user : "this user", (unsigned)m->uid, (unsigned)m->gid);
	return userns_enter(m->uid, m->gid, mount_ns, err);
}

/*
 * Whether a rootless runtime could create this container's cgroup: the runtime puts it at
 * /sys/fs/cgroup/kapsel/<name> (no cgroupsPath), so the user needs that directory, or the
 * root to create it in, delegated (writable). Only cgroup2 is delegated to users.
 */
static bool cgroup_delegated(void)
{
	struct statfs sf;
	if (statfs("/sys/fs/cgroup", &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC)
		return false;
	if (access("/sys/fs/cgroup/kapsel", W_OK | X_OK) == 0)
		return true;
	return errno == ENOENT && access("/sys/fs/cgroup", W_OK | X_OK) == 0;
}

/*
 * rm -rf dirfd/name. A rootless container's files all belong to the user, but their modes may
 * shut the owner out (overlay's work/work is mode 000; the container may chmod its own files):
 * what the user cannot remove is removed by a child that is root of a user namespace mapping
 * only the user, whose CAP_DAC_OVERRIDE reaches exactly the user's files and nothing else.
 */
static int remove_tree(int dirfd, const char *name)
{
	int r = kap_fs_rm_rf(dirfd, name);
	if (r == 0 || geteuid() == 0)
		return r;
	/* With subordinate ranges, what the container made as its other ids is theirs. */
	struct kap_idmap m;
	if (kap_subid_lookup(&m, NULL) < 0)
		m.n_uids = 0;
	pid_t pid = fork();
	if (pid < 0)
		return r;
	if (pid == 0) {
		if (rootless_enter(&m, false, NULL) < 0)
			_exit(-r);
		r = kap_fs_rm_rf(dirfd, name);
		_exit(r < 0 ? -r : 0);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0
	       : WIFEXITED(status)			     ? -WEXITSTATUS(status)
							     : r;
}

/* ---- container.json ---- */

struct meta {
	char *name, *image, *image_name, *manifest, *command, *root, *state, *stop_signal;
	int64_t created, finished, exit_code, monitor_pid;
	bool rm;
	/* run --vm: the process runs in a VM its monitor holds; the runtime has no container
	 * (status, stop and kill ask the monitor: run/run-vm.c) */
	bool vm;
	/* --restart, kept by the monitor: the policy ("no" when absent), its N (0: no limit),
	 * how often it restarted, and whether `kapsel stop` ended it (podman's StoppedByUser). */
	char *restart;
	int64_t restart_max, restart_count;
	bool stopped;
	/* What `start` needs to put it on its network again: the network, the address it had
	 * (asked for again), the --ip6 address, --mac-address, -p and --network-alias. */
	char *net, *ip, *ip6, *mac;
	char **ports, **aliases;
	/* run --vm's --vm-kernel, --vm-cpus and --vm-memory (NULL: not given): `start` boots
	 * the same VM again. */
	char *vm_kernel, *vm_cpus, *vm_memory;
};

static void meta_clear(struct meta *m)
{
	free(m->name);
	free(m->image);
	free(m->image_name);
	free(m->manifest);
	free(m->command);
	free(m->root);
	free(m->state);
	free(m->stop_signal);
	free(m->restart);
	free(m->net);
	free(m->ip);
	free(m->ip6);
	free(m->mac);
	kap_strvp(&m->ports);
	kap_strvp(&m->aliases);
	free(m->vm_kernel);
	free(m->vm_cpus);
	free(m->vm_memory);
	*m = (struct meta){0};
}

static int strv_dup(char *const *v, char ***out)
{
	size_t n = 0;
	while (v[n])
		n++;
	cleanup_strv char **c = calloc(n + 1, sizeof(char *));
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!(c[i] = strdup(v[i])))
			return -ENOMEM;
	*out = steal_ptr(c);
	return 0;
}

static struct kap_json *strv_json(char *const *v)
{
	struct kap_json *a = kap_json_new_array();
	for (char *const *p = v; a && p && *p; p++)
		kap_json_append(a, kap_json_new_string(*p));
	return a;
}

static int meta_write(int cdirfd, const struct meta *m, struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = kap_json_new_object();
	if (!j)
		return kap_error(err, ENOMEM, META);
	const struct {
		const char *k, *v;
	} strs[] = {{"name", m->name},
		    {"image", m->image},
		    {"imageName", m->image_name},
		    {"manifest", m->manifest},
		    {"command", m->command},
		    {"root", m->root},
		    {"state", m->state},
		    {"stopSignal", m->stop_signal},
		    {"restartPolicy", m->restart},
		    {"network", m->net},
		    {"ip", m->ip},
		    {"ip6", m->ip6},
		    {"macAddress", m->mac},
		    {"vmKernel", m->vm_kernel},
		    {"vmCpus", m->vm_cpus},
		    {"vmMemory", m->vm_memory}};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(strs); i++)
		if (strs[i].v)
			kap_json_set(j, strs[i].k, kap_json_new_string(strs[i].v));
	kap_json_set(j, "created", kap_json_new_int64(m->created));
	kap_json_set(j, "finished", kap_json_new_int64(m->finished));
	kap_json_set(j, "exitCode", kap_json_new_int64(m->exit_code));
	kap_json_set(j, "monitorPid", kap_json_new_int64(m->monitor_pid));
	kap_json_set(j, "rm", kap_json_new_bool(m->rm));
	if (m->vm)
		kap_json_set(j, "vm", kap_json_new_bool(true));
	kap_json_set(j, "restartMax", kap_json_new_int64(m->restart_max));
	kap_json_set(j, "restartCount", kap_json_new_int64(m->restart_count));
	kap_json_set(j, "stoppedByUser", kap_json_new_bool(m->stopped));
	if (m->ports)
		kap_json_set(j, "ports", strv_json(m->ports));
	if (m->aliases)
		kap_json_set(j, "aliases", strv_json(m->aliases));
	cleanup_free char *text = kap_json_dump(j, true);
	if (!text)
		return kap_error(err, ENOMEM, META);
	return kap_fs_write_atomic(cdirfd, META, text, strlen(text), 0600, false, err);
}

static int meta_read(int cdirfd, const char *name, struct meta *m, struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(cdirfd, META, 1 << 20, &buf, &len, &e);
	if (r < 0)
		return kap_error_plain(err, -r, "container %s: %s", name, e->msg);
	cleanup_json struct kap_json *j = NULL;
	if ((r = kap_json_parse(buf, len, META, &j, err)) < 0)
		return r;
	*m = (struct meta){.exit_code = -1};
	if ((r = kap_json_read_string(j, META, "name", &m->name, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "image", &m->image, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "imageName", &m->image_name, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "manifest", &m->manifest, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "command", &m->command, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "root", &m->root, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "state", &m->state, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "stopSignal", &m->stop_signal, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "created", &m->created, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "finished", &m->finished, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "exitCode", &m->exit_code, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "monitorPid", &m->monitor_pid, err)) < 0 ||
	    (r = kap_json_read_bool(j, META, "rm", &m->rm, err)) < 0 ||
	    (r = kap_json_read_bool(j, META, "vm", &m->vm, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "restartPolicy", &m->restart, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "restartMax", &m->restart_max, err)) < 0 ||
	    (r = kap_json_read_int64(j, META, "restartCount", &m->restart_count, err)) < 0 ||
	    (r = kap_json_read_bool(j, META, "stoppedByUser", &m->stopped, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "network", &m->net, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "ip", &m->ip, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "ip6", &m->ip6, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "macAddress", &m->mac, err)) < 0 ||
	    (r = kap_json_read_strv(j, META, "ports", &m->ports, err)) < 0 ||
	    (r = kap_json_read_strv(j, META, "aliases", &m->aliases, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "vmKernel", &m->vm_kernel, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "vmCpus", &m->vm_cpus, err)) < 0 ||
	    (r = kap_json_read_string(j, META, "vmMemory", &m->vm_memory, err)) < 0) {
		meta_clear(m);
		return r;
	}
	if (!m->state && !(m->state = strdup("created"))) {
		meta_clear(m);
		return kap_error(err, ENOMEM, META);
	}
	return 0;
}

static int meta_set_state(struct meta *m, const char *state)
{
	char *s = strdup(state);
	if (!s)
		return -ENOMEM;
	free(m->state);
	m->state = s;
	return 0;
}

static void image_config_clearp(struct kap_image_config *c)
{
	kap_image_config_clear(c);
}
#define cleanup_image_config __attribute__((cleanup(image_config_clearp)))

/* ---- the containers directory ---- */

struct ctr {
	/* Open only while needed: a forked monitor must not inherit the store's lock fds for
	 * the container's lifetime (flock belongs to the shared open file). */
	struct kap_store *store;
	char *store_path;
	int dirfd; /* <store>/containers */
	int cdirfd;
	int setupfd; /* SETUP_LOCK, held from the directory's creation until it runs */
	char *cdir;  /* absolute */
	const char *name;
	char *own_name; /* name, once a rename moved the container under us */
};

static void ctr_close(struct ctr *c)
{
	if (c->cdirfd >= 0)
		close(c->cdirfd);
	if (c->setupfd >= 0)
		close(c->setupfd);
	if (c->dirfd >= 0)
		close(c->dirfd);
	free(c->cdir);
	free(c->own_name);
	free(c->store_path);
	if (c->store)
		kap_store_close(c->store);
	*c = (struct ctr){.dirfd = -1, .cdirfd = -1, .setupfd = -1};
}

static int open_containers_dir(struct kap_store *s, struct kapsel_error **err)
{
	const char *sp = kap_store_path(s);
	cleanup_close int sfd = open(sp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return kap_error(err, errno, "open store %s", sp);
	if (mkdirat(sfd, "containers", 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create %s/containers", sp);
	int fd = openat(sfd, "containers", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "open %s/containers", sp);
	return fd;
}

static int validate_name(const char *name, struct kapsel_error **err)
{
	size_t n = strlen(name);
	/* podman's rule ([a-zA-Z0-9][a-zA-Z0-9_.-]*), a subset of what a runtime id allows. */
	bool ok = n > 0 && n <= 128 &&
		  strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", name[0]);
	for (size_t i = 1; ok && i < n; i++)
		ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
			    name[i]) != NULL;
	if (!ok)
		return kap_error_plain(
		    err, EINVAL,
		    "container name \"%s\": must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
		    "(at most 128 characters)",
		    name);
	return 0;
}

/* Open an existing container's directory (and the store). */
/*
 * Who answers for a container's address while nobody has recorded a monitor for it: the
 * kapsel that makes it holds an flock on SETUP_LOCK from the directory's creation until the
 * record says "running" with the monitor's pid. A lease whose container has neither a live
 * setup nor a live monitor (nor a live init) belongs to nobody: reap_orphans gives it back.
 */
#define SETUP_LOCK ".setup"

static int setup_begin(struct ctr *c, struct kapsel_error **err)
{
	c->setupfd =
	    openat(c->cdirfd, SETUP_LOCK, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (c->setupfd < 0 || flock(c->setupfd, LOCK_EX) < 0)
		return kap_error(err, errno, "container %s: create %s/%s", c->name, c->cdir,
				 SETUP_LOCK);
	return 0;
}

/* The record names a monitor now. A forked monitor drops its copy, the kapsel that made the
 * container its own when it exits (the lock holds while either has it). */
static void setup_end(struct ctr *c)
{
	if (c->setupfd < 0)
		return;
	unlinkat(c->cdirfd, SETUP_LOCK, 0);
	close(c->setupfd);
	c->setupfd = -1;
}

static int ctr_open(const char *store, const char *name, struct ctr *c, struct kapsel_error **err)
{
	*c = (struct ctr){.dirfd = -1, .cdirfd = -1, .setupfd = -1, .name = name};
	int r = validate_name(name, err);
	if (r < 0)
		return r;
	if ((r = kap_store_open(store, &c->store, err)) < 0)
		return r;
	if ((c->dirfd = open_containers_dir(c->store, err)) < 0)
		return c->dirfd;
	c->cdirfd = openat(c->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->cdirfd < 0 && errno == ENOENT)
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	if (c->cdirfd < 0)
		return kap_error(err, errno, "open container %s", name);
	if (asprintf(&c->cdir, "%s/containers/%s", kap_store_path(c->store), name) < 0)
		return kap_error(err, ENOMEM, "container %s", name);
	return 0;
}

/*
 * `kapsel rename` moves the directory under whoever holds it open (a monitor, stop, wait): the
 * fds follow, the names do not. Called with the record just read; takes its name.
 */
static int ctr_follow(struct ctr *c, const struct meta *m)
{
	if (!m->name || !c->cdir || !strcmp(m->name, c->name))
		return 0;
	const char *slash = strrchr(c->cdir, '/');
	char *n = strdup(m->name), *d = NULL;
	if (!n || !slash || asprintf(&d, "%.*s/%s", (int)(slash - c->cdir), c->cdir, m->name) < 0) {
		free(n);
		return -ENOMEM;
	}
	free(c->own_name);
	free(c->cdir);
	c->own_name = n;
	c->name = n;
	c->cdir = d;
	return 0;
}

/* "running", "paused", "created" or "stopped" from the runtime; NULL when it has no state. */
static char *runtime_status(const char *root, const char *name)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_free char *json = NULL;
	if (kapsel_container_state(root, name, &json, &e) < 0)
		return NULL;
	cleanup_json struct kap_json *j = NULL;
	char *status = NULL;
	if (kap_json_parse(json, strlen(json), "state", &j, &e) < 0 ||
	    kap_json_read_string(j, "state", "status", &status, &e) < 0)
		return NULL;
	return status;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Alive and not a zombie: a killed monitor stays one until its new parent reaps it, which
 * an init that reaps lazily (a container's, a CI runner's) may take a while to do. */
static bool process_alive(int64_t pid)
{
	if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno != EPERM))
		return false;
	char path[32], buf[256];
	snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", pid);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		return true; /* no procfs: kill's answer stands */
	buf[n] = 0;
	const char *end = strrchr(buf, ')'); /* comm may hold anything, ')' included */
	return !end || end[1] != ' ' || (end[2] != 'Z' && end[2] != 'X');
}

/*
 * Give back what the container held on its network: the lease, the veth, the published ports
 * and the namespace kapsel bound for it. Only a container that had a namespace of ours can
 * hold any (the lease is written after the namespace exists).
 */
static int net_down(struct ctr *c, struct kapsel_error **err)
{
	const char *store = c->store ? kap_store_path(c->store) : c->store_path;
	/* A VM's: the lease and ports; its tap went with its VMM. */
	if (faccessat(c->cdirfd, VM_NET, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		int r = kap_net_detach(store, c->name, true, err);
		if (r == 0)
			unlinkat(c->cdirfd, VM_NET, 0);
		return r;
	}
	if (faccessat(c->cdirfd, "netns", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	cleanup_free char *ns = NULL;
	if (asprintf(&ns, "%s/netns", c->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", c->name);
	/* The runtime's delete ended every process of the container: with the mount gone,
	 * nothing holds the namespace. */
	kap_net_netns_remove(ns);
	kap_pasta_stop(c->cdirfd);
	return kap_net_detach(store, c->name, true, err);
}

/* Remove everything of the container: runtime state, mount, image reference, directory. */
static int ctr_remove(struct ctr *c, const char *root, struct kapsel_error **err)
{
	cleanup_error struct kapsel_error *e = NULL;
	if (kapsel_container_delete(root, c->name, true, &e) < 0 && e->code != ENOENT) {
		*err = steal_ptr(e);
		return -(*err)->code;
	}
	int r;
	if (!c->store && c->store_path && kap_store_open(c->store_path, &c->store, err) < 0)
		return -(*err)->code;
	if ((r = net_down(c, err)) < 0)
		return r;
	cleanup_free char *merged = NULL;
	if (asprintf(&merged, "%s/merged", c->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", c->name);
	if ((r = kap_overlay_umount(merged, err)) < 0)
		return r;
	if (c->store)
		kap_store_remove_user(c->store, c->name);
	if ((r = remove_tree(c->dirfd, c->name)) < 0)
		return kap_error(err, -r, "remove %s", c->cdir);
	return 0;
}

/*
 * After the container's init exited: drop the runtime state (cgroups, leftover processes),
 * unmount the rootfs, record the exit, and with --rm remove it all. Under the directory lock,
 * so a concurrent stop/rm and the monitor do this once.
 */
static int ctr_finish(struct ctr *c, const char *root, int exit_code, struct kapsel_error **err)
{
	if (flock(c->cdirfd, LOCK_EX) < 0)
		return kap_error(err, errno, "lock container %s", c->name);
	struct meta m;
	cleanup_error struct kapsel_error *e = NULL;
	int r = meta_read(c->cdirfd, c->name, &m, &e);
	if (r == -ENOENT)
		return 0; /* removed meanwhile (rm -f, or the monitor of a --rm container) */
	if (r < 0) {
		flock(c->cdirfd, LOCK_UN);
		*err = steal_ptr(e);
		return r;
	}
	if (ctr_follow(c, &m) < 0) {
		meta_clear(&m);
		flock(c->cdirfd, LOCK_UN);
		return kap_error(err, ENOMEM, "container %s", c->name);
	}
	unlinkat(c->cdirfd, ATTACH_SOCK, 0);
	if (m.rm) {
		/* For a `kapsel wait` that watches: the code, for the moment the record lasts. */
		if (exit_code >= 0 && meta_set_state(&m, "exited") == 0) {
			m.exit_code = exit_code;
			meta_write(c->cdirfd, &m, NULL);
		}
		r = ctr_remove(c, root, err);
		meta_clear(&m);
		return r;
	}
	if (kapsel_container_delete(root, c->name, true, &e) < 0)
		kap_warn("container %s: %s", c->name, e->msg);
	/* An exited container holds no address or port (podman tears its network down too). */
	cleanup_error struct kapsel_error *ne = NULL;
	if (net_down(c, &ne) < 0)
		kap_warn("container %s: %s", c->name, ne->msg);
	cleanup_free char *merged = NULL;
	if (asprintf(&merged, "%s/merged", c->cdir) < 0)
		r = kap_error(err, ENOMEM, "container %s", c->name);
	else
		r = kap_overlay_umount(merged, err);
	/* The monitor knows the exit status; a later stop/rm that finds it gone does not. */
	if (r == 0 && (strcmp(m.state, "exited") || exit_code >= 0)) {
		if (meta_set_state(&m, "exited") < 0)
			r = kap_error(err, ENOMEM, META);
		m.exit_code = exit_code;
		m.finished = time(NULL);
		m.monitor_pid = 0;
		if (r == 0)
			r = meta_write(c->cdirfd, &m, err);
	}
	meta_clear(&m);
	flock(c->cdirfd, LOCK_UN);
	return r;
}

static bool init_stopped(const struct meta *m)
{
	/* A VM container's process lives as long as its monitor (it holds the VMM). */
	if (m->vm)
		return !process_alive(m->monitor_pid);
	cleanup_free char *s = runtime_status(m->root, m->name);
	return !s || !strcmp(s, "stopped");
}

/*
 * A container whose kapsel died (kill -9 of its monitor, or of the kapsel making it) keeps its
 * lease, veth, ports and namespace while nobody notices it is over. Before an address is
 * taken (and before networks are listed or removed), every lease holder is looked at: one
 * still being made (SETUP_LOCK held), with a live monitor, or whose init outlived its
 * monitor keeps what it has; of the others the network goes (and a "running" one is finished
 * as its monitor would have: unmounted, recorded as exited). The rest of a half-made
 * container waits for rm -f, as before.
 */
static void reap_one(const char *store, const char *name)
{
	struct ctr c = {.dirfd = -1, .cdirfd = -1, .setupfd = -1, .name = name};
	struct meta m;
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_close int setup = -1;
	int r;
	if (validate_name(name, NULL) < 0 || !(c.store_path = strdup(store)) ||
	    asprintf(&c.cdir, "%s/containers/%s", store, name) < 0)
		goto out;
	c.cdirfd = open(c.cdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c.cdirfd < 0)
		goto out; /* gone: the network's own sweep gives its lease back */
	setup = openat(c.cdirfd, SETUP_LOCK, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (setup >= 0 && flock(setup, LOCK_EX | LOCK_NB) < 0)
		goto out; /* being made right now */
	if (flock(c.cdirfd, LOCK_EX) < 0)
		goto out;
	r = meta_read(c.cdirfd, name, &m, NULL);
	if (r == 0 && !strcmp(m.state, "running")) {
		bool live = process_alive(m.monitor_pid) || !init_stopped(&m);
		flock(c.cdirfd, LOCK_UN);
		if (!live && ctr_finish(&c, m.root, -1, &e) < 0)
			kap_warn("container %s: %s", name, e->msg);
		meta_clear(&m);
		goto out;
	}
	if (r == 0)
		meta_clear(&m);
	/* Killed before its record (r < 0), or before it ran ("created"); or its finish was. */
	if (r == 0 || r == -ENOENT) {
		if (net_down(&c, &e) < 0)
			kap_warn("container %s: %s", name, e->msg);
	}
	flock(c.cdirfd, LOCK_UN);
out:
	ctr_close(&c);
}

static void reap_orphans(const char *store)
{
	cleanup_strv char **names = NULL;
	if (geteuid() != 0 || kap_net_holders(store, &names, NULL) < 0)
		return;
	for (char **n = names; *n; n++)
		reap_one(store, *n);
}

API void kapsel_image_reap(const char *store)
{
	cleanup_free char *path = store ? strdup(store) : kap_store_default_path();
	if (path)
		reap_orphans(path);
}

/* ---- run ---- */

/*
 * --restart as podman-run(1) takes it: no, on-failure[:N] (N > 0 restarts at most), always,
 * unless-stopped. Without a daemon that outlives a reboot the last two behave alike: both
 * restart until `kapsel stop`.
 */
static int parse_restart(const char *s, char **policy, int64_t *max, struct kapsel_error **err)
{
	*max = 0;
	const char *colon = strchr(s, ':');
	size_t n = colon ? (size_t)(colon - s) : strlen(s);
	static const char *const names[] = {"no", "on-failure", "always", "unless-stopped"};
	size_t i = 0;
	while (i < KAP_ARRAY_SIZE(names) && (strlen(names[i]) != n || strncmp(s, names[i], n)))
		i++;
	if (i == KAP_ARRAY_SIZE(names))
		return kap_error_plain(err, EINVAL,
				       "--restart \"%s\": expected no, on-failure[:N], always or "
				       "unless-stopped",
				       s);
	if (colon) {
		char *end;
		errno = 0;
		long long v = strtoll(colon + 1, &end, 10);
		if (i != 1 || errno || end == colon + 1 || *end || v < 1)
			return kap_error_plain(err, EINVAL,
					       "--restart \"%s\": only on-failure takes a count "
					       "(a positive integer)",
					       s);
		*max = v;
	}
	if (policy && !(*policy = strdup(names[i])))
		return kap_error(err, ENOMEM, "--restart");
	return 0;
}

/* What the user typed (a name, a reference, an ID prefix) -> the stored image. */
static int resolve_image(struct kap_store *s, const char *image, char **name, char *digest,
			 struct kapsel_error **err)
{
	/* Only the embedded default is loaded implicitly: it needs no network. */
	int r = kap_image_ensure_default(s, image, err);
	if (r < 0)
		return r;
	/* Short names as registries.conf(5) resolves them: localhost/NAME before docker.io. */
	cleanup_error struct kapsel_error *e = NULL;
	r = kap_image_resolve_local(s, image, name, digest, &e);
	if (r == -ENOENT)
		return kap_error_plain(err, ENOENT, "image %s not found locally; kapsel pull %s",
				       image, image);
	if (r < 0)
		*err = steal_ptr(e);
	return r;
}

/* The image's layers as lower directories, top first; unpacks a layer the store lacks. */
/*
 * The overlay's lower directories, top first. idmap with ranges: the copies shifted into
 * them, made here (the caller is root of that namespace) on first use.
 */
static int layer_dirs(struct kap_store *s, const struct kap_manifest *m,
		      const struct kap_image_config *cfg, const struct kap_idmap *idmap,
		      char ***out, struct kapsel_error **err)
{
	char uid_range[256], gid_range[256];
	struct kap_unpack_opts uo = {.rootless = true};
	if (idmap && idmap->n_uids) {
		kap_subid_describe(idmap, false, uid_range, sizeof(uid_range));
		kap_subid_describe(idmap, true, gid_range, sizeof(gid_range));
		uo.uid_count = idmap->uid_count;
		uo.gid_count = idmap->gid_count;
		uo.uid_range = uid_range;
		uo.gid_range = gid_range;
	}
	if (cfg->n_diff_ids != m->n_layers)
		return kap_error_plain(err, EINVAL, "image config has %zu diff_ids for %zu layers",
				       cfg->n_diff_ids, m->n_layers);
	cleanup_strv char **v = calloc(cfg->n_diff_ids + 1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "layers");
	for (size_t i = 0; i < cfg->n_diff_ids; i++) {
		const char *diff_id = cfg->diff_ids[i];
		char *p = NULL;
		if (uo.uid_count) {
			enum kap_compression comp;
			int r = kap_layer_compression(m->layers[i].media_type, &comp, err);
			if (r == 0)
				r = kap_store_idmapped_layer(s, idmap->key, &uo,
							     m->layers[i].digest, comp, diff_id, &p,
							     err);
			if (r < 0)
				return r;
			v[cfg->n_diff_ids - 1 - i] = p;
			continue;
		}
		p = kap_store_layer_path(s, diff_id);
		if (!p) {
			enum kap_compression comp;
			int r = kap_layer_compression(m->layers[i].media_type, &comp, err);
			if (r == 0)
				r = kap_store_unpack_layer(s, m->layers[i].digest, comp, diff_id,
							   err);
			if (r < 0)
				return r;
			if (!(p = kap_store_layer_path(s, diff_id)))
				return kap_error_plain(err, ENOENT, "layer %s: not in the store",
						       diff_id);
		}
		v[cfg->n_diff_ids - 1 - i] = p;
	}
	*out = steal_ptr(v);
	return 0;
}

static char *join_args(char *const *args)
{
	size_t len = 1;
	for (char *const *p = args; p && *p; p++)
		len += strlen(*p) + 1;
	char *s = calloc(1, len);
	for (char *const *p = args; s && p && *p; p++) {
		if (p != args)
			strcat(s, " ");
		strcat(s, *p);
	}
	return s;
}

static int write_small(int dirfd, const char *name, const char *text, struct kapsel_error **err)
{
	return kap_fs_write_atomic(dirfd, name, text, strlen(text), 0644, false, err);
}

struct prepared {
	struct ctr c;
	struct meta m;
	bool mounted, created_dir;
	bool rootless;		/* not root on the host: mount and run from a user namespace */
	struct kap_idmap idmap; /* rootless: the user's subordinate ranges (n_uids 0: none) */
	const struct kapsel_run_options *o; /* run -d --vm: its --vm-* flags (start: NULL) */
};

static void manifest_clearp(struct kap_manifest *m)
{
	kap_manifest_clear(m);
}
#define cleanup_manifest __attribute__((cleanup(manifest_clearp)))

/* Rootless (not root of a nested namespace already): the ranges the namespace will map. */
static int lookup_idmap(struct prepared *p, struct kapsel_error **err)
{
	memset(&p->idmap, 0, sizeof(p->idmap));
	if (!p->rootless || geteuid() == 0)
		return 0;
	return kap_subid_lookup(&p->idmap, err);
}

static void prepared_fail(struct prepared *p, const char *root)
{
	if (p->created_dir) {
		cleanup_error struct kapsel_error *e = NULL;
		if (ctr_remove(&p->c, root, &e) < 0)
			kap_warn("cleanup of container %s: %s", p->c.name, e->msg);
	}
	meta_clear(&p->m);
	ctr_close(&p->c);
}

/* Everything up to a bundle ready for the runtime. */
static int prepare(const struct kapsel_run_options *o, const char *name, struct prepared *p,
		   struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	int r = kap_store_open(o->store, &c->store, err);
	if (r < 0)
		return r;
	if (!(c->store_path = strdup(kap_store_path(c->store))))
		return kap_error(err, ENOMEM, "store");
	cleanup_free char *canonical = NULL;
	char digest[KAP_DIGEST_LEN + 1];
	if ((r = resolve_image(c->store, o->image, &canonical, digest, err)) < 0)
		return r;
	cleanup_manifest struct kap_manifest man = {0};
	cleanup_image_config struct kap_image_config cfg = {0};
	cleanup_strv char **lowers = NULL;
	if ((r = kap_store_load_image(c->store, digest, &man, &cfg, err)) < 0)
		return kap_error_wrap(err, "image %s", o->image);
	if ((r = kap_image_platform_check(o->image, cfg.os, cfg.architecture, err)) < 0)
		return r;
	if ((r = lookup_idmap(p, err)) < 0)
		return r;
	/* The shifted copies can only be made inside the namespace: below. */
	if (!p->idmap.n_uids && (r = layer_dirs(c->store, &man, &cfg, NULL, &lowers, err)) < 0)
		return r;

	if ((c->dirfd = open_containers_dir(c->store, err)) < 0) {
		r = c->dirfd;
		return r;
	}
	if (mkdirat(c->dirfd, name, 0700) < 0) {
		r = errno == EEXIST
			? kap_error_plain(err, EEXIST, "container name %s is already in use", name)
			: kap_error(err, errno, "create container directory %s", name);
		return r;
	}
	p->created_dir = true;
	c->cdirfd = openat(c->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->cdirfd < 0 ||
	    asprintf(&c->cdir, "%s/containers/%s", kap_store_path(c->store), name) < 0) {
		r = kap_error(err, errno ? errno : ENOMEM, "open container directory %s", name);
		return r;
	}
	if ((r = setup_begin(c, err)) < 0)
		return r;
	static const char *const subdirs[] = {"upper", "work", "merged"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(subdirs); i++) {
		if (mkdirat(c->cdirfd, subdirs[i], 0755) < 0) {
			r = kap_error(err, errno, "create %s/%s", c->cdir, subdirs[i]);
			return r;
		}
	}
	/* Recorded before the rootfs exists: rmi must never remove layers we are mounting. */
	if ((r = kap_store_add_user(c->store, name, digest, err)) < 0)
		return r;

	cleanup_free char *upper = NULL, *work = NULL, *merged = NULL;
	if (asprintf(&upper, "%s/upper", c->cdir) < 0 || asprintf(&work, "%s/work", c->cdir) < 0 ||
	    asprintf(&merged, "%s/merged", c->cdir) < 0) {
		r = kap_error(err, ENOMEM, "container %s", name);
		return r;
	}
	size_t n_lowers = cfg.n_diff_ids;
	cleanup_free char *empty = NULL;
	char *one[2] = {NULL, NULL};
	if (n_lowers == 0) {
		/* An image without layers: overlay still wants a lower directory. */
		if (mkdirat(c->cdirfd, "empty", 0755) < 0 ||
		    asprintf(&empty, "%s/empty", c->cdir) < 0) {
			r = kap_error(err, errno ? errno : ENOMEM, "create %s/empty", c->cdir);
			return r;
		}
		one[0] = empty;
	}
	/* Everything above belongs to the user; the mount needs the namespaces (a process that
	 * is root of a nested user namespace already, kapsel in a container, has them). */
	if (p->rootless && geteuid() != 0 && (r = rootless_enter(&p->idmap, true, err)) < 0)
		return r;
	if (p->idmap.n_uids && (r = layer_dirs(c->store, &man, &cfg, &p->idmap, &lowers, err)) < 0)
		return r;
	if ((r = kap_overlay_mount(n_lowers ? lowers : one, n_lowers ? n_lowers : 1, upper, work,
				   merged, p->rootless, err)) < 0)
		return r;
	p->mounted = true;
	cleanup_close int rootfd = open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		r = kap_error(err, errno, "open %s", merged);
		return r;
	}

	/* --net NETWORK (or pasta): a namespace of our own, wired to the network's bridge (or
	 * to pasta) before the container exists; container:NAME and ns:PATH: one that exists.
	 * The runtime joins it by path. */
	bool publishes = (o->ports && *o->ports) || o->publish_all;
	enum kap_net_mode mode = kap_net_mode_of(o->net, p->rootless, publishes);
	bool host_net = mode == KAP_NET_HOST;
	bool own_net = mode == KAP_NET_NETWORK, pasta = mode == KAP_NET_PASTA;
	cleanup_net_result struct kap_net_result net = {0};
	cleanup_free char *netns_path = NULL, *resolv_path = NULL, *joined = NULL;
	/* run --vm --net NETWORK: no namespace; the VM's tap joins the bridge (run/run-vm.c).
	 * Its record (VM_NET) exists before the lease, as a namespace would. */
	bool vm_net = own_net && o->vm;
	if (vm_net && (r = write_small(c->cdirfd, VM_NET, "", err)) < 0)
		return r;
	if ((own_net && !vm_net) || pasta) {
		if (asprintf(&netns_path, "%s/netns", c->cdir) < 0) {
			r = kap_error(err, ENOMEM, "container %s", name);
			return r;
		}
		if ((r = pasta ? kap_net_netns_create_apart(netns_path, err)
			       : kap_net_netns_create(netns_path, err)) < 0)
			return r;
		kap_fault_point("net:netns");
	}
	if (pasta && (r = kap_pasta_start(netns_path, o->ports, c->cdir, c->cdirfd, err)) < 0)
		return r;
	if (mode == KAP_NET_CONTAINER &&
	    (r = kap_ctr_ref_netns(c->store_path, o->net + 10, &netns_path, &joined, err)) < 0)
		return r;
	if (mode == KAP_NET_NS) {
		if ((r = kap_net_ns_check(o->net + 3, err)) < 0)
			return r;
		if (!(netns_path = strdup(o->net + 3)))
			return kap_error(err, ENOMEM, "container %s", name);
	}
	if (own_net) {
		cleanup_close int nsfd = vm_net ? -1 : open(netns_path, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0 && !vm_net) {
			r = kap_error(err, errno, "open %s", netns_path);
			return r;
		}
		reap_orphans(c->store_path);
		struct kap_net_request rq = {
		    .store = c->store_path,
		    .network = o->net,
		    .container = name,
		    .ip = o->ip,
		    .ip6 = o->ip6,
		    .mac = o->mac,
		    .ports = o->ports,
		    .aliases = o->aliases,
		    .publish_all = o->publish_all,
		    .expose = {cfg.exposed_ports, o->expose},
		    .netns_fd = nsfd,
		    .vm = vm_net,
		};
		if ((r = kap_net_attach(&rq, &net, err)) < 0 ||
		    (vm_net && (r = kap_run_vm_net_write(c->cdirfd, &net, err)) < 0))
			return r;
	}
	/* A joined container's hosts and resolv.conf are ours too (podman shares them). */
	cleanup_free char *joined_hosts = NULL, *joined_resolv = NULL;
	if (joined) {
		cleanup_close int jfd = open(joined, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (jfd >= 0) {
			kap_fs_read_file(jfd, "hosts", 1 << 20, &joined_hosts, NULL, NULL);
			kap_fs_read_file(jfd, "resolv.conf", 1 << 16, &joined_resolv, NULL, NULL);
		}
	}

	/* podman's /etc/hosts and /etc/hostname: the container knows its own name. */
	char hostname[65];
	snprintf(hostname, sizeof(hostname), "%s", o->hostname ? o->hostname : name);
	cleanup_free char *hosts = NULL, *hosts_path = NULL, *hostname_path = NULL;
	char hn_line[80];
	snprintf(hn_line, sizeof(hn_line), "%s\n", hostname);
	/*
	 * One hosts file for every kind of network: --net host gets a copy of the host's
	 * /etc/hosts (as podman makes) with our name on 127.0.1.1; otherwise localhost, with our
	 * name there unless a network gave us an address of our own. --add-host lines go last.
	 */
	cleanup_free char *host_hosts = NULL;
	if (host_net &&
	    kap_fs_read_file(AT_FDCWD, "/etc/hosts", 1 << 20, &host_hosts, NULL, NULL) < 0 &&
	    !(host_hosts = strdup("127.0.0.1\tlocalhost\n::1\tlocalhost\n"))) {
		r = kap_error(err, ENOMEM, "hosts");
		return r;
	}
	size_t hosts_len = 0;
	FILE *hf = open_memstream(&hosts, &hosts_len);
	if (!hf) {
		r = kap_error(err, ENOMEM, "hosts");
		return r;
	}
	if (joined_hosts) {
		fputs(joined_hosts, hf);
	} else if (host_net) {
		size_t hl = strlen(host_hosts);
		fprintf(hf, "%s%s127.0.1.1\t%s\n", host_hosts,
			hl && host_hosts[hl - 1] != '\n' ? "\n" : "", hostname);
	} else {
		fprintf(hf, "127.0.0.1\tlocalhost%s%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
			net.ip[0] ? "" : " ", net.ip[0] ? "" : hostname);
		if (net.ip[0])
			fprintf(hf, "%s\t%s %s\n", net.ip, hostname, name);
		if (net.ip6[0])
			fprintf(hf, "%s\t%s %s\n", net.ip6, hostname, name);
	}
	for (char *const *h = o->add_hosts; h && *h; h++) {
		const char *colon = strchr(*h, ':');
		fprintf(hf, "%s\t%.*s\n", colon + 1, (int)(colon - *h), *h);
	}
	if (fclose(hf) != 0 || !hosts) {
		r = kap_error(err, ENOMEM, "hosts");
		return r;
	}
	if ((r = write_small(c->cdirfd, "hosts", hosts, err)) < 0 ||
	    (r = write_small(c->cdirfd, "hostname", hn_line, err)) < 0)
		return r;
	if (asprintf(&hosts_path, "%s/hosts", c->cdir) < 0 ||
	    asprintf(&hostname_path, "%s/hostname", c->cdir) < 0) {
		r = kap_error(err, ENOMEM, "hosts");
		return r;
	}
	/* resolv.conf: --dns, else (on a network) the host's minus loopback nameservers, which
	 * the container's own lo cannot reach (podman does the same); on a user-defined
	 * network the network's responder comes first: it refuses names it does not know, and
	 * the resolver moves on to the host's. */
	bool own_dns = o->dns && *o->dns;
	if (own_dns || own_net || pasta || joined_resolv) {
		cleanup_free char *text = NULL, *host_conf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);
		if (!f) {
			r = kap_error(err, ENOMEM, "resolv.conf");
			return r;
		}
		for (char *const *d = own_dns ? o->dns : NULL; d && *d; d++)
			fprintf(f, "nameserver %s\n", *d);
		if (!own_dns && joined_resolv)
			fputs(joined_resolv, f);
		/* The responder listens on both gateways of a dual-stack network: a resolver
		 * that prefers IPv6 (or a container whose IPv4 is filtered) still finds it. */
		if (!own_dns && net.dns)
			fprintf(f, "nameserver %s\n", net.gateway);
		if (!own_dns && net.dns && net.gateway6[0])
			fprintf(f, "nameserver %s\n", net.gateway6);
		if (!own_dns && !joined_resolv &&
		    kap_fs_read_file(AT_FDCWD, "/etc/resolv.conf", 1 << 16, &host_conf, NULL,
				     NULL) == 0) {
			for (char *line = strtok(host_conf, "\n"); line; line = strtok(NULL, "\n"))
				if (strncmp(line, "nameserver 127.", 15) &&
				    strncmp(line, "nameserver ::1", 14))
					fprintf(f, "%s\n", line);
		}
		if (fclose(f) != 0 || !text) {
			r = kap_error(err, ENOMEM, "resolv.conf");
			return r;
		}
		if ((r = write_small(c->cdirfd, "resolv.conf", text, err)) < 0)
			return r;
		if (asprintf(&resolv_path, "%s/resolv.conf", c->cdir) < 0) {
			r = kap_error(err, ENOMEM, "resolv.conf");
			return r;
		}
	}

	/* podman creates a missing working directory (in the upper layer). */
	const char *cwd = o->workdir ? o->workdir : cfg.working_dir;
	if (cwd && *cwd && strcmp(cwd, "/")) {
		int fd = kap_fs_mkdir_in_root(rootfd, cwd, 0755, false, err);
		if (fd < 0) {
			r = kap_error_wrap(err, "working directory");
			return r;
		}
		close(fd);
	}

	/* Named volumes: made on first use, filled from the image, recorded as used by us. */
	cleanup_free char *volumes_dir = NULL, *init_path = NULL;
	struct kap_run_mount *mnts = NULL;
	size_t n_mnts = 0;
	if ((r = kap_runflags_mounts(o, &mnts, &n_mnts, err)) < 0)
		return r;
	r = kap_volume_attach(c->store, c->cdirfd, mnts, n_mnts, rootfd, err);
	kap_run_mounts_free(mnts, n_mnts);
	if (r < 0)
		return r;
	if (asprintf(&volumes_dir, "%s/volumes", kap_store_path(c->store)) < 0) {
		r = kap_error(err, ENOMEM, "container %s", name);
		return r;
	}
	if (o->init && (r = kap_runflags_init_path(o, &init_path, err)) < 0)
		return r;

	struct kap_bundle_env be = {
	    .rootfs = merged,
	    .image_name = canonical,
	    .hostname = hostname,
	    .hosts_file = hosts_path,
	    .hostname_file = hostname_path,
	    .resolv_file = resolv_path,
	    .netns_path = netns_path,
	    .volumes_dir = volumes_dir,
	    .init_path = init_path,
	    .rootless = p->rootless,
	    .uid_count = p->idmap.n_uids ? p->idmap.uid_count : 1,
	    .gid_count = p->idmap.n_uids ? p->idmap.gid_count : 1,
	};
	cleanup_json struct kap_json *config = NULL;
	if ((r = kap_bundle_config(&cfg, o, &be, rootfd, &config, err)) < 0)
		return r;
	cleanup_free char *text = kap_json_dump(config, true);
	if (!text) {
		r = kap_error(err, ENOMEM, "config.json");
		return r;
	}
	if ((r = kap_fs_write_atomic(c->cdirfd, "config.json", text, strlen(text), 0600, false,
				     err)) < 0)
		return r;

	cleanup_strv char **args = NULL;
	if ((r = kap_bundle_args(&cfg, o->entrypoint, o->cmd, &args, err)) < 0)
		return r;
	p->m = (struct meta){
	    .name = strdup(name),
	    .image = strdup(o->image),
	    .image_name = strdup(canonical),
	    .manifest = strdup(digest),
	    .command = join_args(args),
	    .root = strdup(root_or_default(o->root)),
	    .state = strdup("created"),
	    .stop_signal = cfg.stop_signal ? strdup(cfg.stop_signal) : NULL,
	    .created = time(NULL),
	    .exit_code = -1,
	    .rm = o->rm,
	    .vm = o->vm,
	    .net = own_net ? strdup(o->net)
		   : pasta ? strdup("pasta")
			   : NULL,
	    .ip = net.ip[0] ? strdup(net.ip) : NULL,
	    /* Derived IPv6 addresses follow the IPv4 one by themselves. */
	    .ip6 = o->ip6 && net.ip6[0] ? strdup(net.ip6) : NULL,
	    .mac = o->mac ? strdup(o->mac) : NULL,
	    /* A kernel by its absolute path: start may run from anywhere. */
	    .vm_kernel = o->vm && o->vm_kernel ? realpath(o->vm_kernel, NULL) : NULL,
	    .vm_cpus = o->vm && o->vm_cpus ? strdup(o->vm_cpus) : NULL,
	    .vm_memory = o->vm && o->vm_memory ? strdup(o->vm_memory) : NULL,
	};
	if (o->vm && o->vm_kernel && !p->m.vm_kernel)
		return kap_error(err, errno, "--vm-kernel %s", o->vm_kernel);
	if ((o->vm_cpus && o->vm && !p->m.vm_cpus) || (o->vm_memory && o->vm && !p->m.vm_memory))
		return kap_error(err, ENOMEM, META);
	if ((o->restart &&
	     (r = parse_restart(o->restart, &p->m.restart, &p->m.restart_max, err)) < 0) ||
	    (own_net && net.ports && *net.ports && (r = strv_dup(net.ports, &p->m.ports)) < 0) ||
	    (pasta && o->ports && *o->ports && (r = strv_dup(o->ports, &p->m.ports)) < 0) ||
	    (own_net && o->aliases && *o->aliases && (r = strv_dup(o->aliases, &p->m.aliases)) < 0))
		return r == -ENOMEM ? kap_error(err, ENOMEM, META) : r;
	if (!p->m.name || !p->m.image || !p->m.image_name || !p->m.manifest || !p->m.command ||
	    !p->m.root || !p->m.state) {
		r = kap_error(err, ENOMEM, META);
		return r;
	}
	return meta_write(c->cdirfd, &p->m, err);
}

/* What a monitor watches: the container's init, its output and, in the foreground, us. */
struct watch {
	int logfd;
	int out, err;		 /* read ends of the container's stdout and stderr pipes, or -1 */
	int pass_out, pass_err;	 /* where the output also goes (a foreground run), or -1 */
	int back_out, back_err;	 /* our own stdout and stderr again, once the container has its */
	bool input;		 /* relay our stdin to the container's terminal (-it) */
	int unknown;		 /* the status to return when the init's is unknown */
	sigset_t signals;	 /* SIGCHLD and the forwarded ones, blocked: read from a signalfd */
	int listen;		 /* the attach socket (a detached container), or -1 */
	int clients[ATTACH_MAX]; /* attached `kapsel attach`es, or -1; kept across restarts */
};

/*
 * The attach protocol, one SOCK_SEQPACKET message each. From the monitor: a first byte
 * ATTACH_HELLO with 't' (the container has a terminal) or 'p' (pipes), then ATTACH_STDOUT or
 * ATTACH_STDERR and the bytes. From the client: ATTACH_STDIN and bytes for the terminal, or
 * ATTACH_RESIZE and a struct winsize. The monitor closes the socket when the container ends.
 */
static bool write_all(int fd, const char *p, size_t n);

enum { ATTACH_HELLO, ATTACH_STDOUT, ATTACH_STDERR, ATTACH_STDIN = 0x10, ATTACH_RESIZE };

static void watch_init(struct watch *w, int unknown)
{
	*w = (struct watch){.logfd = -1,
			    .out = -1,
			    .err = -1,
			    .pass_out = -1,
			    .pass_err = -1,
			    .back_out = -1,
			    .back_err = -1,
			    .unknown = unknown,
			    .listen = -1};
	for (size_t i = 0; i < ATTACH_MAX; i++)
		w->clients[i] = -1;
}

static void attach_close(struct watch *w)
{
	for (size_t i = 0; i < ATTACH_MAX; i++)
		if (w->clients[i] >= 0) {
			close(w->clients[i]);
			w->clients[i] = -1;
		}
	if (w->listen >= 0)
		close(w->listen);
	w->listen = -1;
}

/* The socket lives in the container's directory; /proc/self/fd keeps the path short. */
static int attach_path(int cdirfd, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/" ATTACH_SOCK, cdirfd);
	return 0;
}

static int attach_listen(struct ctr *c, struct watch *w, struct kapsel_error **err)
{
	struct sockaddr_un sa;
	attach_path(c->cdirfd, &sa);
	unlinkat(c->cdirfd, ATTACH_SOCK, 0);
	w->listen = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (w->listen < 0)
		return kap_error(err, errno, "attach socket");
	if (bind(w->listen, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(w->listen, 4) < 0)
		return kap_error(err, errno, "attach socket %s/%s", c->cdir, ATTACH_SOCK);
	return 0;
}

static void attach_accept(struct watch *w, bool tty)
{
	int fd = accept4(w->listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	for (size_t i = 0; i < ATTACH_MAX; i++)
		if (w->clients[i] < 0) {
			char hello[2] = {ATTACH_HELLO, tty ? 't' : 'p'};
			if (send(fd, hello, 2, MSG_NOSIGNAL) == 2) {
				w->clients[i] = fd;
				return;
			}
			break;
		}
	close(fd); /* full: podman too caps its attach sessions */
}

/* Output for every attached client; one that cannot take it now misses it (as conmon). */
static void attach_send(struct watch *w, char *msg, size_t n)
{
	for (size_t i = 0; i < ATTACH_MAX; i++)
		if (w->clients[i] >= 0 &&
		    send(w->clients[i], msg, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
		    errno != EAGAIN && errno != ENOBUFS) {
			close(w->clients[i]);
			w->clients[i] = -1;
		}
}

/* A client's message: keystrokes for the terminal, or its new size. */
static void attach_input(struct watch *w, size_t i, int master)
{
	char buf[4097];
	ssize_t k = recv(w->clients[i], buf, sizeof(buf), MSG_DONTWAIT);
	if (k < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (k <= 0) {
		close(w->clients[i]);
		w->clients[i] = -1;
		return;
	}
	if (master < 0)
		return;
	if (buf[0] == ATTACH_STDIN)
		write_all(master, buf + 1, (size_t)k - 1);
	else if (buf[0] == ATTACH_RESIZE && (size_t)k == 1 + sizeof(struct winsize)) {
		struct winsize ws;
		memcpy(&ws, buf + 1, sizeof(ws));
		ioctl(master, TIOCSWINSZ, &ws);
	}
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void reap(pid_t init, int *status, bool *reaped)
{
	int st;
	pid_t w;
	while ((w = waitpid(-1, &st, WNOHANG)) > 0)
		if (w == init) {
			*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			*reaped = true;
		}
	if (w < 0 && errno == ECHILD)
		*reaped = true; /* the init was not ours to reap: its status is unknown (-1) */
}

static void copy_winsize(int master)
{
	struct winsize ws;
	if ((ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
	     ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) &&
	    ws.ws_row && ws.ws_col)
		ioctl(master, TIOCSWINSZ, &ws);
}

/*
 * The monitor's one loop (conmon's job, in one process: no relay process, no pump thread):
 * reaps the init, forwards our signals to it, copies its output into the log (logs.c) and,
 * in the foreground, to our stdout and stderr, and relays a terminal. Returns the init's
 * status, shell style, once it is reaped and its output has ended; w->unknown when unknown.
 */
static int watch_container(void *ctx, pid_t init, int master)
{
	struct watch *w = ctx;
	/* The container has its stdout and stderr now: ours back, so that only it holds the
	 * pipes' write ends and they end when it does. */
	if (w->back_out >= 0)
		dup2(w->back_out, STDOUT_FILENO);
	if (w->back_err >= 0)
		dup2(w->back_err, STDERR_FILENO);
	int sfd = signalfd(-1, &w->signals, SFD_CLOEXEC | SFD_NONBLOCK);
	struct termios saved;
	bool raw = false;
	if (master >= 0 && w->input && isatty(STDIN_FILENO) &&
	    tcgetattr(STDIN_FILENO, &saved) == 0) {
		struct termios t = saved;
		cfmakeraw(&t);
		raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
	}
	if (master >= 0)
		copy_winsize(master);
	/* With a terminal, its master carries the output (as stdout); else the two pipes. Then
	 * the attach socket and its clients. */
	enum { NFIX = 5 };
	struct pollfd fds[NFIX + ATTACH_MAX] = {
	    {.fd = sfd, .events = POLLIN},
	    {.fd = master >= 0 ? master : w->out, .events = POLLIN},
	    {.fd = master >= 0 ? -1 : w->err, .events = POLLIN},
	    {.fd = master >= 0 && w->input ? STDIN_FILENO : -1, .events = POLLIN},
	    {.fd = w->listen, .events = POLLIN},
	};
	if (master >= 0) {
		/* The pipes are nobody's now: the pty is the container's stdout and stderr. */
		if (w->out >= 0)
			close(w->out);
		if (w->err >= 0)
			close(w->err);
	}
	w->out = w->err = -1; /* ours to close below, in fds */
	int pass[3] = {-1, w->pass_out, w->pass_err};
	int status = -1;
	bool reaped = false;
	char msg[1 + 65536], *buf = msg + 1;
	for (;;) {
		if (!reaped)
			reap(init, &status, &reaped);
		if (reaped && fds[1].fd < 0 && fds[2].fd < 0)
			break;
		for (size_t i = 0; i < ATTACH_MAX; i++)
			fds[NFIX + i] = (struct pollfd){.fd = w->clients[i], .events = POLLIN};
		/* Once the init is gone its pid namespace is too; output that still does not
		 * end is held by something outside the container: stop waiting for it. */
		int n = poll(fds, NFIX + ATTACH_MAX, reaped ? 2000 : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (fds[0].fd >= 0 && fds[0].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGCHLD)
					continue;
				if (sig == SIGWINCH && master >= 0)
					copy_winsize(master); /* the kernel tells the container */
				else if (!reaped)
					kill(init, sig);
			}
		}
		for (int i = 1; i <= 2; i++) {
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			ssize_t k = read(fds[i].fd, buf, sizeof(msg) - 1);
			if (k < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (k <= 0) { /* EOF, or EIO: the pty's last slave closed */
				close(fds[i].fd);
				fds[i].fd = -1;
				continue;
			}
			/* A reader that went away (a closed terminal) stops the copy, not the log.
			 */
			if (pass[i] >= 0 && !write_all(pass[i], buf, (size_t)k))
				pass[i] = -1;
			kap_log_record(w->logfd, i == 2, buf, (size_t)k);
			msg[0] = i == 2 ? ATTACH_STDERR : ATTACH_STDOUT;
			attach_send(w, msg, (size_t)k + 1);
		}
		if (fds[4].fd >= 0 && fds[4].revents)
			attach_accept(w, master >= 0);
		for (size_t i = 0; i < ATTACH_MAX; i++)
			if (fds[NFIX + i].fd >= 0 && fds[NFIX + i].revents)
				attach_input(w, i, master);
		if (fds[3].fd >= 0 && fds[3].revents) {
			ssize_t k = read(STDIN_FILENO, buf, sizeof(msg) - 1);
			if (k < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (k <= 0 || !write_all(master, buf, (size_t)k))
				fds[3].fd = -1; /* stdin closed: keep copying the output */
		}
	}
	if (raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (fds[1].fd >= 0)
		close(fds[1].fd);
	if (fds[2].fd >= 0)
		close(fds[2].fd);
	if (sfd >= 0)
		close(sfd);
	return status >= 0 ? status : w->unknown;
}

/*
 * The container's stdout and stderr become pipes the monitor reads (they are our stdout and
 * stderr while the runtime creates it); pass: the output goes to our stdout and stderr too.
 */
static int watch_setup(struct ctr *c, bool pass, struct watch *w, struct kapsel_error **err)
{
	w->logfd = openat(c->cdirfd, LOG_FILE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (w->logfd < 0)
		return kap_error(err, errno, "container log %s/%s", c->cdir, LOG_FILE);
	int po[2], pe[2];
	if (pipe2(po, O_CLOEXEC) < 0)
		return kap_error(err, errno, "container stdout: pipe");
	if (pipe2(pe, O_CLOEXEC) < 0) {
		close(po[0]);
		close(po[1]);
		return kap_error(err, errno, "container stderr: pipe");
	}
	w->out = po[0];
	w->err = pe[0];
	w->back_out = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	w->back_err = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	if (pass) {
		w->pass_out = w->back_out;
		w->pass_err = w->back_err;
	}
	int r = 0;
	if (dup2(po[1], STDOUT_FILENO) < 0 || dup2(pe[1], STDERR_FILENO) < 0)
		r = kap_error(err, errno, "container stdout and stderr");
	close(po[1]);
	close(pe[1]);
	return r;
}

static void watch_clear(struct watch *w)
{
	int *fds[] = {&w->logfd, &w->out, &w->err, &w->back_out, &w->back_err};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(fds); i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

/*
 * --restart (podman-run(1)): after the init exited, whether the policy runs it again; records
 * the exit and the count when it does. Under the container's lock, as `kapsel stop` sets
 * "stoppedByUser" under it: a stop either comes before (no restart) or finds the new init.
 */
static bool restart_due(struct ctr *c, int code)
{
	if (code < 0 || flock(c->cdirfd, LOCK_EX) < 0)
		return false;
	struct meta m;
	bool again = false;
	if (meta_read(c->cdirfd, c->name, &m, NULL) == 0) {
		const char *p = m.restart ? m.restart : "no";
		bool limit = m.restart_max == 0 || m.restart_count < m.restart_max;
		again = !m.stopped && ctr_follow(c, &m) == 0 &&
			(!strcmp(p, "always") || !strcmp(p, "unless-stopped") ||
			 (!strcmp(p, "on-failure") && code != 0 && limit));
		if (again) {
			m.restart_count++;
			m.exit_code = code;
			again = meta_write(c->cdirfd, &m, NULL) == 0;
		}
		meta_clear(&m);
	}
	flock(c->cdirfd, LOCK_UN);
	return again;
}

/* Whether `kapsel stop` ended the container's policy (or its record is gone). */
static bool stop_requested(struct ctr *c)
{
	struct meta m;
	if (meta_read(c->cdirfd, c->name, &m, NULL) < 0)
		return true;
	bool stopped = m.stopped;
	meta_clear(&m);
	return stopped;
}

/* One monitor's runs of a container: the first, then those its restart policy asks for. */
struct runs {
	struct prepared *p;
	struct watch *w;
	struct kapsel_create_options co;
	bool want_pid_file;
	char *pid_file;
	int report; /* kapsel run -d (or start) waits here for "OK" or the error; -1 after */
	int n;	    /* runs so far */
};

static int runs_started(void *ctx, pid_t init, int master)
{
	struct runs *x = ctx;
	struct ctr *c = &x->p->c;
	cleanup_error struct kapsel_error *e = NULL;
	if (x->report >= 0) {
		if (meta_set_state(&x->p->m, "running") < 0 ||
		    (x->p->m.monitor_pid = getpid(), meta_write(c->cdirfd, &x->p->m, &e)) < 0) {
			dprintf(x->report, "E%s", e ? e->msg : strerror(ENOMEM));
			kill(init, SIGKILL);
		} else {
			setup_end(c);
			if (write(x->report, "OK", 2) != 2)
				kap_warn("monitor: report to kapsel run: %s", strerror(errno));
		}
		close(x->report);
		x->report = -1;
	} else if (x->n > 0 && stop_requested(c)) {
		kill(init, SIGKILL); /* stopped while we made it again */
	}
	/* -dit: we hold the terminal's master (nothing types into it), so the shell in the
	 * container waits for input rather than reading EOF; kapsel exec -it gets in. */
	int status = watch_container(x->w, init, master);
	/* The runtime deletes the container by co.id once we return: a rename moved it. */
	struct meta m;
	if (meta_read(c->cdirfd, c->name, &m, NULL) == 0) {
		if (ctr_follow(c, &m) == 0)
			x->co.id = c->name;
		meta_clear(&m);
	}
	return status;
}

/*
 * Runs the container until it exits for good: each run gets its output pipes (pipes: the
 * monitor reads them; pass: and copies them to our stdout and stderr) and, after it, the
 * restart policy's verdict, with a delay doubling from 100 ms to 10 s between runs (docker's)
 * so that a command that fails at once does not spin. Returns the last run's status, or the
 * first run's error (nothing ran) with *err set.
 */
static int run_loop(struct runs *x, const char *root, bool pipes, bool pass,
		    struct kapsel_error **err)
{
	struct ctr *c = &x->p->c;
	long delay = 100;
	int status = -1;
	for (;; x->n++) {
		x->co.root = root;
		x->co.id = c->name;
		x->co.bundle = c->cdir;
		if (x->want_pid_file) {
			free(x->pid_file);
			if (asprintf(&x->pid_file, "%s/%s", c->cdir, PID_FILE) < 0)
				x->pid_file = NULL;
			x->co.pid_file = x->pid_file;
		}
		cleanup_error struct kapsel_error *e = NULL;
		int r = 0;
		if (pipes) {
			r = watch_setup(c, pass, x->w, &e);
		} else if (x->w->logfd < 0) {
			/* A terminal's output: the log only (pass_out is our stdout). */
			x->w->logfd = openat(c->cdirfd, LOG_FILE,
					     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (x->w->logfd < 0)
				r = kap_error(&e, errno, "container log %s/%s", c->cdir, LOG_FILE);
		}
		time_t t0 = time(NULL);
		if (r == 0)
			r = kapsel_container_run_wait(&x->co, runs_started, x, &e);
		if (x->w->back_out >= 0)
			dup2(x->w->back_out, STDOUT_FILENO);
		if (x->w->back_err >= 0)
			dup2(x->w->back_err, STDERR_FILENO);
		watch_clear(x->w);
		if (r < 0 && x->n == 0) {
			*err = steal_ptr(e);
			return r;
		}
		if (r < 0) {
			kap_warn("container %s: restart: %s", c->name, e->msg);
			return status;
		}
		status = r;
		if (!restart_due(c, status))
			return status;
		if (time(NULL) - t0 >= 10)
			delay = 100; /* it ran a while: start over */
		/* In steps: a `kapsel stop` meanwhile is answered at once. */
		for (long ms = 0; ms < delay; ms += 100) {
			sleep_ms(100);
			if (stop_requested(c))
				return status;
		}
		delay = delay < 5000 ? delay * 2 : 10000;
		cleanup_error struct kapsel_error *de = NULL;
		if (kapsel_container_delete(root, c->name, true, &de) < 0)
			kap_warn("container %s: %s", c->name, de->msg);
	}
}

struct vm_run {
	struct prepared *p;
	int report;
};

/* The agent has the spec: the VM container runs; kapsel run -d (or start) returns. */
static int vm_started(void *ctx, struct kapsel_error **err)
{
	struct vm_run *x = ctx;
	struct ctr *c = &x->p->c;
	if (meta_set_state(&x->p->m, "running") < 0)
		return kap_error(err, ENOMEM, META);
	x->p->m.monitor_pid = getpid();
	int r = meta_write(c->cdirfd, &x->p->m, err);
	if (r < 0)
		return r;
	setup_end(c);
	if (write(x->report, "OK", 2) != 2)
		kap_warn("monitor: report to kapsel run: %s", strerror(errno));
	close(x->report);
	x->report = -1;
	return 0;
}

/* A VM container's attach clients: the socket and protocol of a plain container's. */
static void vm_attach_output(void *ctx, bool is_err, const void *buf, size_t len)
{
	char msg[1 + 4096];
	for (const char *p = buf; len;) {
		size_t n = len < sizeof(msg) - 1 ? len : sizeof(msg) - 1;
		msg[0] = is_err ? ATTACH_STDERR : ATTACH_STDOUT;
		memcpy(msg + 1, p, n);
		attach_send(ctx, msg, n + 1);
		p += n;
		len -= n;
	}
}

static size_t vm_attach_fds(void *ctx, struct pollfd *p, size_t max)
{
	struct watch *w = ctx;
	if (max < 1 + ATTACH_MAX)
		return 0;
	p[0] = (struct pollfd){.fd = w->listen, .events = POLLIN};
	for (size_t i = 0; i < ATTACH_MAX; i++)
		p[1 + i] = (struct pollfd){.fd = w->clients[i], .events = POLLIN};
	return 1 + ATTACH_MAX;
}

static void vm_attach_ready(void *ctx, const struct pollfd *p, size_t n, struct kap_run_vm_io *io)
{
	struct watch *w = ctx;
	for (size_t i = 0; i + 1 < n; i++) {
		if (!p[1 + i].revents || w->clients[i] < 0)
			continue;
		char buf[4097];
		ssize_t k = recv(w->clients[i], buf, sizeof(buf), MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (k <= 0) {
			close(w->clients[i]);
			w->clients[i] = -1;
		} else if (buf[0] == ATTACH_STDIN) {
			kap_run_vm_input(io, buf + 1, (size_t)k - 1);
		} else if (buf[0] == ATTACH_RESIZE && (size_t)k == 1 + sizeof(struct winsize)) {
			struct winsize ws;
			memcpy(&ws, buf + 1, sizeof(ws));
			kap_run_vm_resize(io, ws.ws_row, ws.ws_col);
		}
	}
	if (p[0].revents)
		attach_accept(w, kap_run_vm_tty(io));
}

/*
 * The monitor of a detached VM container: the VMM is its child (run/run-vm.c), the output
 * goes into the log, signals come on <cdir>/vm.ctl (kill, stop), and the exit is recorded and
 * cleaned up as for any container. A VM that fails before its agent has the spec is reported
 * on `report` and leaves nothing. Never returns.
 */
static __attribute__((noreturn)) void vm_monitor(struct prepared *p, const char *root, int report)
{
	struct ctr *c = &p->c;
	cleanup_error struct kapsel_error *e = NULL;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	const struct kapsel_run_options *o = p->o;
	struct vm_run x = {.p = p, .report = report};
	int status;
	struct watch w;
	watch_init(&w, -1);
	const struct kap_run_vm_attach att = {
	    .ctx = &w, .output = vm_attach_output, .fds = vm_attach_fds, .ready = vm_attach_ready};
	int logfd = openat(c->cdirfd, LOG_FILE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		status = kap_error(&e, errno, "container log %s/%s", c->cdir, LOG_FILE);
	else
		status = attach_listen(c, &w, &e);
	if (status == 0) {
		struct kap_run_vm a = {.name = c->name,
				       .store = c->store_path,
				       .cdir = c->cdir,
				       .kernel = p->m.vm_kernel,
				       .cpus = p->m.vm_cpus,
				       .memory = p->m.vm_memory,
				       .tty = o && o->tty,
				       .signals = set,
				       .logfd = logfd,
				       .started = vm_started,
				       .ctx = &x,
				       .attach = &att};
		status = kap_run_vm(&a, &e);
	}
	attach_close(&w);
	if (status < 0 && x.report >= 0) {
		/* It never ran: as monitor() leaves a container that never ran. */
		dprintf(x.report, "E%s", e ? e->msg : strerror(-status));
		if (logfd >= 0)
			close(logfd);
		if (!p->created_dir) {
			cleanup_error struct kapsel_error *fe = NULL;
			if (ctr_finish(c, root, -1, &fe) < 0)
				kap_warn("%s", fe->msg);
		}
		prepared_fail(p, root);
		_exit(1);
	}
	if (status < 0) {
		/* The VM died under the process: why, where `kapsel logs` shows it. */
		cleanup_free char *line = NULL;
		if (asprintf(&line, "kapsel: %s\n", e ? e->msg : strerror(-status)) > 0)
			kap_log_record(logfd, true, line, strlen(line));
		status = 125;
	}
	close(logfd);
	cleanup_error struct kapsel_error *fe = NULL;
	if (ctr_finish(c, root, status, &fe) < 0)
		kap_warn("%s", fe->msg);
	_exit(0);
}

/*
 * The monitor of a detached container (double-forked, its own session): runs the container
 * as its child, reports "OK" or the error on `report`, watches the init (its output, or its
 * terminal's, into the log; attach clients on its socket), restarts it as its policy says,
 * and finishes the container. Never returns.
 */
static __attribute__((noreturn)) void monitor(struct prepared *p, const char *root, int report)
{
	struct ctr *c = &p->c;
	cleanup_error struct kapsel_error *e = NULL;
	struct watch w;
	watch_init(&w, -1);
	/* Nothing of kapsel run's stdio stays with us: the caller may be a pipe. */
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0 || dup2(nullfd, STDOUT_FILENO) < 0 ||
	    dup2(nullfd, STDERR_FILENO) < 0) {
		dprintf(report, "E/dev/null: %s", strerror(errno));
		_exit(1);
	}
	close(nullfd);
	if (p->m.vm)
		vm_monitor(p, root, report);
	sigemptyset(&w.signals);
	sigaddset(&w.signals, SIGCHLD);
	sigprocmask(SIG_BLOCK, &w.signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (attach_listen(c, &w, &e) < 0) {
		dprintf(report, "E%s", e->msg);
		_exit(1);
	}
	struct runs x = {.p = p, .w = &w, .report = report, .want_pid_file = true};
	int code = run_loop(&x, root, true, false, &e);
	if (code < 0 && x.report >= 0) {
		/* It never ran: nothing to finish; a new container leaves nothing behind, a
		 * started one is as it was (exited). */
		dprintf(report, "E%s", e ? e->msg : strerror(-code));
		attach_close(&w);
		if (!p->created_dir) {
			cleanup_error struct kapsel_error *fe = NULL;
			if (ctr_finish(c, root, -1, &fe) < 0)
				kap_warn("%s", fe->msg);
		}
		prepared_fail(p, root);
		_exit(1);
	}
	attach_close(&w);
	free(x.pid_file);
	cleanup_error struct kapsel_error *fe = NULL;
	if (ctr_finish(c, root, code, &fe) < 0)
		kap_warn("%s", fe->msg);
	_exit(0);
}

/*
 * Nothing the caller passed us (a test harness's pipe, say) may stay open in a process that
 * outlives it. kapsel opens its own fds O_CLOEXEC; what lacks the flag was inherited.
 */
static void close_inherited_fds(void)
{
	cleanup_dir DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	int self = dirfd(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);
		if (fd < 3 || fd == self)
			continue;
		int fl = fcntl(fd, F_GETFD);
		if (fl >= 0 && !(fl & FD_CLOEXEC))
			close(fd);
	}
}

static int run_detached(struct prepared *p, const char *root, struct kapsel_error **err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return kap_error(err, errno, "pipe");
	fflush(NULL);
	pid_t first = fork();
	if (first < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return kap_error(err, errno, "fork");
	}
	if (first == 0) {
		close(pipefd[0]);
		setsid();
		pid_t mon = fork();
		if (mon == 0) {
			signal(SIGHUP, SIG_IGN);
			close_inherited_fds();
			monitor(p, root, pipefd[1]);
		}
		_exit(mon < 0 ? 1 : 0);
	}
	close(pipefd[1]);
	int st;
	while (waitpid(first, &st, 0) < 0 && errno == EINTR)
		;
	char msg[2048];
	size_t n = 0;
	for (;;) {
		ssize_t k = read(pipefd[0], msg + n, sizeof(msg) - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
		if (n == sizeof(msg) - 1)
			break;
	}
	close(pipefd[0]);
	msg[n] = '\0';
	if (n >= 2 && !strcmp(msg, "OK"))
		return 0;
	if (n && msg[0] == 'E')
		return kap_error_plain(err, EIO, "%s", msg + 1);
	return kap_error_plain(err, EIO, "container %s: the monitor process died", p->c.name);
}

/* o as it applies here: rootless without a delegated cgroup, no limits. */
static int effective_options(const struct kapsel_run_options *o, struct prepared *p,
			     struct kapsel_run_options *eff, struct kapsel_error **err)
{
	p->rootless = geteuid() != 0 || kap_userns_nested();
	*eff = *o;
	if (p->rootless && !cgroup_delegated()) {
		/* Limits need a cgroup: refuse the ones asked for, drop podman's default pids
		 * limit (rootless podman does too without a delegated pids controller). */
		const char *flag = o->memory				    ? "--memory"
				   : o->cpus				    ? "--cpus"
				   : o->has_pids_limit && o->pids_limit > 0 ? "--pids-limit"
									    : NULL;
		if (flag)
			return kap_error_plain(err, EPERM,
					       "%s needs a delegated cgroup for uid %u (a writable "
					       "/sys/fs/cgroup/kapsel on cgroup2); none is, so "
					       "a rootless container cannot be limited",
					       flag, (unsigned)geteuid());
		eff->has_pids_limit = true;
		eff->pids_limit = 0;
	}
	return 0;
}

/* The foreground run itself, in the monitor: create, start, watch, finish. */
static int foreground(struct prepared *p, const struct kapsel_run_options *o, const char *root,
		      const sigset_t *signals, struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	p->m.monitor_pid = getpid();
	if (meta_set_state(&p->m, "running") < 0)
		return kap_error(err, ENOMEM, META);
	int r = meta_write(c->cdirfd, &p->m, err);
	if (r < 0)
		return r;
	setup_end(c);
	/* Without -i the container reads nothing of ours (podman gives it /dev/null). */
	if (!o->interactive && !o->tty) {
		cleanup_close int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0)
			return kap_error(err, errno, "stdin: /dev/null");
	}
	struct watch w;
	watch_init(&w, 255);
	w.input = o->interactive;
	w.signals = *signals;
	/* A closed terminal must not end us: the container's output still goes to the log. */
	signal(SIGPIPE, SIG_IGN);
	if (o->tty)
		w.pass_out = STDOUT_FILENO;
	struct runs x = {.p = p, .w = &w, .report = -1};
	int status = run_loop(&x, root, !o->tty, true, err);
	if (status < 0)
		return status;
	cleanup_error struct kapsel_error *e = NULL;
	if (ctr_finish(c, root, status, &e) < 0)
		kap_warn("%s", e->msg);
	return status;
}

/*
 * run --vm: the same monitor and cleanup, the VMM in place of the container engine; the
 * composition itself is run/run-vm.c.
 */
static int vm_foreground(struct prepared *p, const struct kapsel_run_options *o, const char *root,
			 const sigset_t *signals, struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	p->m.monitor_pid = getpid();
	if (meta_set_state(&p->m, "running") < 0)
		return kap_error(err, ENOMEM, META);
	int r = meta_write(c->cdirfd, &p->m, err);
	if (r < 0)
		return r;
	setup_end(c);
	struct kap_run_vm a = {.name = c->name,
			       .store = c->store_path,
			       .cdir = c->cdir,
			       .kernel = o->vm_kernel,
			       .cpus = o->vm_cpus,
			       .memory = o->vm_memory,
			       .interactive = o->interactive,
			       .tty = o->tty,
			       .signals = *signals,
			       .logfd = -1};
	int status = kap_run_vm(&a, err);
	if (status < 0)
		return status;
	cleanup_error struct kapsel_error *e = NULL;
	if (ctr_finish(c, root, status, &e) < 0)
		kap_warn("%s", e->msg);
	return status;
}

/*
 * A foreground run goes through a monitor too (conmon's role for `podman run`): a child in a
 * session of its own that prepares the container, creates it as its child, watches it,
 * records its exit status and honours --rm, so that a `kapsel run` killed with SIGKILL
 * orphans nothing. It is forked first, before the image and the bundle are touched: what it
 * then writes is its own memory, not copies of ours (the start path stays as fast). We
 * forward our signals to it, and its exit status is the container's; an error before the
 * container ran comes back on a pipe, with its errno, after the monitor removed what it made.
 * Returns the status, or -errno with *err set.
 */
static int run_foreground(const struct kapsel_run_options *o, const char *name, const char *root,
			  struct kapsel_error **err)
{
	static const int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	sigset_t set, old;
	sigemptyset(&set);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(fwd); i++)
		sigaddset(&set, fwd[i]);
	sigaddset(&set, SIGCHLD);
	int rep[2];
	if (pipe2(rep, O_CLOEXEC) < 0)
		return kap_error(err, errno, "pipe");
	/* Blocked before the fork: the monitor inherits them blocked and takes them with
	 * sigwait once the container runs; none kills it while it creates the container. */
	sigprocmask(SIG_BLOCK, &set, &old);
	fflush(NULL);
	pid_t self = getpid();
	pid_t mon = fork();
	if (mon < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(rep[0]);
		close(rep[1]);
		return kap_error(err, errno, "fork the monitor");
	}
	if (mon == 0) {
		close(rep[0]);
		/* Out of the terminal's process group: its signals reach us through kapsel run
		 * only (once each), and its hangup does not end us. */
		setsid();
		/* The setup is ours now: a fault test that stops and kills kapsel run at a step
		 * (net:leased, ...) kills the process doing it. */
		kap_fault_proxy(self);
		cleanup_error struct kapsel_error *e = NULL;
		struct prepared p = {.c = {.dirfd = -1, .cdirfd = -1, .setupfd = -1, .name = name}};
		struct kapsel_run_options eff;
		int status = effective_options(o, &p, &eff, &e);
		if (status == 0 && (status = prepare(&eff, name, &p, &e)) == 0) {
			kap_store_close(p.c.store);
			p.c.store = NULL;
			status = eff.vm ? vm_foreground(&p, &eff, root, &set, &e)
					: foreground(&p, &eff, root, &set, &e);
		}
		/* One line, one write: "S<status>" once all is done, or "E<errno> <message>"
		 * after the monitor removed what it made (nothing ran: no trace of it). */
		if (status < 0) {
			char *m = NULL;
			if (asprintf(&m, "E%d %s", e ? e->code : -status,
				     e ? e->msg : strerror(-status)) > 0) {
				for (char *c = m; *c; c++)
					*c = *c == '\n' ? ' ' : *c;
				dprintf(rep[1], "%s\n", m);
			}
			free(m);
			prepared_fail(&p, root);
			_exit(1);
		}
		dprintf(rep[1], "S%d\n", status & 0xff);
		_exit(status & 0xff);
	}
	close(rep[1]);
	/*
	 * Forward our signals and wait for the monitor's line. Its exit (freeing its memory)
	 * is no part of ours: with the status in hand we return, and the zombie is reaped by
	 * whoever inherits it when kapsel run exits.
	 */
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	char msg[2048];
	size_t n = 0;
	struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = rep[0], .events = POLLIN}};
	while (!(n && msg[n - 1] == '\n') && n < sizeof(msg) - 1) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		struct signalfd_siginfo si;
		if (fds[0].revents && read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
		    si.ssi_signo != SIGCHLD)
			kill(mon, (int)si.ssi_signo);
		if (fds[1].revents) {
			ssize_t k = read(rep[0], msg + n, sizeof(msg) - 1 - n);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break; /* the monitor died without a word */
			n += (size_t)k;
		}
	}
	if (sfd >= 0)
		close(sfd);
	close(rep[0]);
	msg[n] = '\0';
	if (n && msg[0] == 'S') {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return (int)strtol(msg + 1, NULL, 10);
	}
	int wst = 0;
	while (waitpid(mon, &wst, 0) < 0 && errno == EINTR)
		;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (n && msg[0] == 'E') {
		char *text = NULL;
		long code = strtol(msg + 1, &text, 10);
		if (n && msg[n - 1] == '\n')
			msg[n - 1] = '\0';
		return kap_error_plain(err, code > 0 && code < 4096 ? (int)code : EIO, "%s",
				       text && *text == ' ' ? text + 1 : msg + 1);
	}
	if (WIFEXITED(wst))
		return WEXITSTATUS(wst);
	/* The monitor itself died (killed): the container may still run; stop would find it. */
	return kap_error_plain(err, EIO, "container %s: the monitor process died (signal %d)", name,
			       WTERMSIG(wst));
}

static int generate_name(char *buf, size_t len)
{
	unsigned char rnd[6];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -errno;
	snprintf(buf, len, "kapsel-%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
	return 0;
}

API int kapsel_image_run(const struct kapsel_run_options *o, char **name_out,
			 struct kapsel_error **err)
{
	if (!o->image || !*o->image)
		return kap_error_plain(err, EINVAL, "run: no image given");
	/* Every flag is checked before anything exists on disk. */
	/* What --vm cannot honour is said first, whatever else is wrong with it. */
	int r = o->vm ? kap_run_vm_check(o, err) : 0;
	if (r < 0 || (r = kap_bundle_check(o, err)) < 0)
		return r;
	bool rootless = geteuid() != 0 || kap_userns_nested();
	enum kap_net_mode mode =
	    kap_net_mode_of(o->net, rootless, (o->ports && *o->ports) || o->publish_all);
	if (mode == KAP_NET_NETWORK) {
		if (rootless)
			return kap_error_plain(
			    err, EPERM,
			    "--net %s: a rootless container has no bridge network "
			    "(use none, host or pasta)",
			    o->net);
		struct kap_net_request rq = {.store = o->store,
					     .network = o->net,
					     .ip = o->ip,
					     .ip6 = o->ip6,
					     .mac = o->mac,
					     .ports = o->ports};
		if ((r = kap_net_check(&rq, err)) < 0)
			return r;
	} else if (mode == KAP_NET_CONTAINER) {
		cleanup_free char *path = NULL, *dir = NULL;
		if ((r = kap_ctr_ref_netns(o->store, o->net + 10, &path, &dir, err)) < 0)
			return r;
	} else if (mode == KAP_NET_NS) {
		if ((r = kap_net_ns_check(o->net + 3, err)) < 0)
			return r;
	} else if (mode == KAP_NET_PASTA && o->publish_all) {
		/* pasta forwards the ports it is given; the free ones are picked (and kept
		 * apart) by a network's IPAM, which a rootless user has none of. */
		return kap_error_plain(err, EINVAL, "-P needs --net NETWORK (with pasta use -p)");
	}
	char gen[32];
	const char *name = o->name;
	if (!name) {
		if ((r = generate_name(gen, sizeof(gen))) < 0)
			return kap_error(err, -r, "getrandom");
		name = gen;
	}
	if ((r = validate_name(name, err)) < 0)
		return r;
	if (o->restart) {
		int64_t max;
		cleanup_free char *policy = NULL;
		if ((r = parse_restart(o->restart, &policy, &max, err)) < 0)
			return r;
		/* podman's rule: a container removed at its exit has nothing to restart. */
		if (o->rm && strcmp(policy, "no"))
			return kap_error_plain(err, EINVAL,
					       "the --rm option conflicts with --restart %s "
					       "(a restart policy other than \"no\")",
					       o->restart);
	}
	const char *root = root_or_default(o->root);
	if (!o->detach)
		return run_foreground(o, name, root, err);
	struct prepared p = {.c = {.dirfd = -1, .cdirfd = -1, .setupfd = -1, .name = name}};
	struct kapsel_run_options eff;
	if ((r = effective_options(o, &p, &eff, err)) < 0)
		return r;
	o = &eff;
	p.o = o;
	if ((r = prepare(o, name, &p, err)) < 0) {
		prepared_fail(&p, root);
		return r;
	}
	kap_store_close(p.c.store);
	p.c.store = NULL;
	r = run_detached(&p, root, err);
	if (r < 0) {
		/* The monitor removed what it could; make sure, then report. */
		p.created_dir = faccessat(p.c.dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		prepared_fail(&p, root);
		return r;
	}
	if (name_out && !(*name_out = strdup(name)))
		r = kap_error(err, ENOMEM, "name");
	meta_clear(&p.m);
	ctr_close(&p.c);
	return r;
}

/* ---- exec -u ---- */

API int kapsel_image_exec_user(const char *root, const char *id, const char *user, char **ids,
			       struct kapsel_error **err)
{
	struct kapsel_container_info *list = NULL;
	size_t n = 0;
	int r = kapsel_container_list(root, &list, &n, err);
	if (r < 0)
		return r;
	pid_t pid = 0;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].id, id))
			pid = list[i].pid;
	kapsel_container_info_free(list, n);
	if (pid <= 0)
		return 0; /* not running: exec reports that itself */
	/* The container's own files, as its init sees them (a rootless overlay lives only in
	 * the container's mount namespace); read confined to that root. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	cleanup_close int rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kap_error(err, errno, "container %s: open %s", id, path);
	struct kap_exec_user u;
	if ((r = kap_bundle_resolve_user(rootfd, user, &u, err)) < 0)
		return kap_error_wrap(err, "--user %s", user);
	r = asprintf(ids, "%" PRIu32 ":%" PRIu32, u.uid, u.gid);
	kap_exec_user_clear(&u);
	if (r < 0)
		return kap_error(err, ENOMEM, "-u");
	return 1;
}

/* ---- ps ---- */

static char *status_of(const struct meta *m)
{
	if (strcmp(m->state, "running"))
		return strdup(m->state);
	if (m->vm)
		return strdup(init_stopped(m) ? "exited" : "running");
	cleanup_free char *s = runtime_status(m->root, m->name);
	if (s && strcmp(s, "stopped"))
		return steal_ptr(s);
	/* The init is gone and whoever finishes it (the monitor) has not yet. */
	return strdup("exited");
}

API void kapsel_ps_entries_free(struct kapsel_ps_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(e[i].name);
		free(e[i].image);
		free(e[i].command);
		free(e[i].status);
	}
	free(e);
}

static int by_created(const void *a, const void *b)
{
	const struct kapsel_ps_entry *x = a, *y = b;
	return x->created < y->created	 ? 1
	       : x->created > y->created ? -1
					 : strcmp(x->name, y->name);
}

/* ---- state of one container, for an error message ---- */

API int kapsel_image_container_status(const char *store, const char *name, char **status,
				      struct kapsel_error **err)
{
	*status = NULL;
	/* Read only: a runtime command about a missing container must not create a store. */
	cleanup_free char *path = store ? strdup(store) : kap_store_default_path();
	if (!path)
		return kap_error(err, ENOMEM, "store");
	cleanup_free char *cdir = NULL;
	if (validate_name(name, NULL) < 0)
		return 0;
	if (asprintf(&cdir, "%s/containers/%s", path, name) < 0)
		return kap_error(err, ENOMEM, "store");
	cleanup_close int cfd = open(cdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct meta m;
	if (cfd < 0 || meta_read(cfd, name, &m, NULL) < 0)
		return 0;
	*status = status_of(&m);
	meta_clear(&m);
	return *status ? 1 : kap_error(err, ENOMEM, "container %s", name);
}

API int kapsel_image_ps(const char *store, const char *root, bool all, struct kapsel_ps_entry **out,
			size_t *n, struct kapsel_error **err)
{
	(void)root; /* each container records the state root it was run with */
	*out = NULL;
	*n = 0;
	cleanup_store struct kap_store *s = NULL;
	int r = kap_store_open(store, &s, err);
	if (r < 0)
		return r;
	int dfd = open_containers_dir(s, err);
	if (dfd < 0)
		return dfd;
	cleanup_dir DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return kap_error(err, errno, "list containers");
	}
	struct kapsel_ps_entry *list = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		cleanup_close int cfd =
		    openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct meta m;
		if (cfd < 0 || meta_read(cfd, de->d_name, &m, NULL) < 0)
			continue; /* being created or removed right now */
		char *status = status_of(&m);
		if (!status || (!all && strcmp(status, "running") && strcmp(status, "paused"))) {
			free(status);
			meta_clear(&m);
			continue;
		}
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			struct kapsel_ps_entry *nl = realloc(list, cap * sizeof(*list));
			if (!nl) {
				free(status);
				meta_clear(&m);
				kapsel_ps_entries_free(list, cnt);
				return kap_error(err, ENOMEM, "ps");
			}
			list = nl;
		}
		list[cnt++] = (struct kapsel_ps_entry){
		    .name = steal_ptr(m.name),
		    .image = steal_ptr(m.image),
		    .command = steal_ptr(m.command),
		    .created = m.created,
		    .finished = m.finished,
		    .status = status,
		    .exit_code = (int)m.exit_code,
		};
		meta_clear(&m);
		if (!list[cnt - 1].name || !list[cnt - 1].image || !list[cnt - 1].command) {
			kapsel_ps_entries_free(list, cnt);
			return kap_error(err, ENOMEM, "ps");
		}
	}
	if (cnt)
		qsort(list, cnt, sizeof(*list), by_created);
	*out = list;
	*n = cnt;
	return 0;
}

/* ---- stop / rm / logs ---- */

/* Whether the container is finished (meta says exited, or its directory is gone: --rm). */
static bool finished(struct ctr *c)
{
	struct meta m;
	if (meta_read(c->cdirfd, c->name, &m, NULL) < 0)
		return true;
	bool done = strcmp(m.state, "running") != 0;
	meta_clear(&m);
	return done;
}

/* Wait for the monitor (or the foreground kapsel run) to finish; do it ourselves if it died. */
static int wait_finished(struct ctr *c, const struct meta *m, struct kapsel_error **err)
{
	for (int i = 0; i < 200 && !finished(c); i++) {
		if (!process_alive(m->monitor_pid))
			break;
		sleep_ms(25);
	}
	if (finished(c))
		return 0;
	return ctr_finish(c, m->root, -1, err);
}

/* Waits up to ms for a VM container's monitor to end. */
static bool vm_gone_within(const struct meta *m, long ms)
{
	for (long t = 0; t < ms && !init_stopped(m); t += 25)
		sleep_ms(25);
	return init_stopped(m);
}

/*
 * stop for a VM container: the stop signal reaches the process through the agent, SIGKILL the
 * same way after the timeout; a VM that still runs 10 s later (a wedged guest) ends with its
 * monitor, which takes the VMM along (PR_SET_PDEATHSIG, run/run-vm.c).
 */
static int vm_stop(struct ctr *c, const struct meta *m, int sig, int timeout_s,
		   struct kapsel_error **err)
{
	if (!init_stopped(m))
		kap_run_vm_signal(c->cdirfd, c->name, sig, NULL);
	if (!vm_gone_within(m, (long)timeout_s * 1000)) {
		kap_run_vm_signal(c->cdirfd, c->name, SIGKILL, NULL);
		if (!vm_gone_within(m, 10000)) {
			kill((pid_t)m->monitor_pid, SIGKILL);
			if (!vm_gone_within(m, 10000))
				return kap_error_plain(err, EBUSY,
						       "container %s: its VM monitor (pid %" PRId64
						       ") did not end after SIGKILL",
						       c->name, m->monitor_pid);
		}
	}
	return wait_finished(c, m, err);
}

/* Reads a store container's record without creating a store: 1 for a VM container. */
static int vm_lookup(const char *store, const char *name, int *cdirfd, char **cdir, struct meta *m,
		     struct kapsel_error **err)
{
	*cdirfd = -1;
	*cdir = NULL;
	cleanup_free char *path = store ? strdup(store) : kap_store_default_path();
	if (!path)
		return kap_error(err, ENOMEM, "store");
	if (validate_name(name, NULL) < 0)
		return 0;
	if (asprintf(cdir, "%s/containers/%s", path, name) < 0) {
		*cdir = NULL;
		return kap_error(err, ENOMEM, "store");
	}
	*cdirfd = open(*cdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*cdirfd < 0 || meta_read(*cdirfd, name, m, NULL) < 0)
		return 0;
	if (m->vm)
		return 1;
	meta_clear(m);
	return 0;
}

API int kapsel_image_vm_kill(const char *store, const char *name, int sig,
			     struct kapsel_error **err)
{
	struct meta m = {0};
	cleanup_free char *cdir = NULL;
	cleanup_close int cdirfd = -1;
	int r = vm_lookup(store, name, &cdirfd, &cdir, &m, err);
	if (r <= 0)
		return r;
	if (strcmp(m.state, "running") || init_stopped(&m))
		r = kap_error_plain(err, ESRCH, "container %s is not running", name);
	else if ((r = kap_run_vm_signal(cdirfd, name, sig, err)) == 0)
		r = 1;
	meta_clear(&m);
	return r;
}

API int kapsel_image_vm_exec(const char *store, const struct kapsel_exec_options *o, int *status,
			     struct kapsel_error **err)
{
	struct meta m = {0};
	cleanup_free char *cdir = NULL;
	cleanup_close int cdirfd = -1;
	int r = vm_lookup(store, o->id, &cdirfd, &cdir, &m, err);
	if (r <= 0)
		return r;
	if (strcmp(m.state, "running") || init_stopped(&m))
		r = kap_error_plain(err, ESRCH, "container %s is not running", o->id);
	else if ((r = kap_run_vm_exec(cdir, o->id, o, err)) >= 0) {
		*status = r;
		r = 1;
	}
	meta_clear(&m);
	return r;
}

API int kapsel_image_stop(const char *store, const char *root, const char *name, int timeout_s,
			  struct kapsel_error **err)
{
	(void)root;
	struct ctr c;
	struct meta m = {0};
	int r = ctr_open(store, name, &c, err);
	if (r == 0)
		r = meta_read(c.cdirfd, name, &m, err);
	if (r < 0 || strcmp(m.state, "running")) {
		meta_clear(&m);
		ctr_close(&c);
		return r; /* stopping a stopped container succeeds, as in podman */
	}
	/* Ends its restart policy: the monitor reads this before it runs the container again,
	 * and kills an init it made while we wrote it. */
	if (flock(c.cdirfd, LOCK_EX) == 0) {
		struct meta cur;
		if (meta_read(c.cdirfd, name, &cur, NULL) == 0) {
			cur.stopped = true;
			meta_write(c.cdirfd, &cur, NULL);
			meta_clear(&cur);
		}
		flock(c.cdirfd, LOCK_UN);
	}
	int sig = m.stop_signal ? kapsel_signal_parse(m.stop_signal) : SIGTERM;
	if (sig <= 0)
		sig = SIGTERM;
	/* Declared before the first goto: a jump past it would free an unset pointer. */
	cleanup_error struct kapsel_error *e = NULL;
	if (m.vm) {
		r = vm_stop(&c, &m, sig, timeout_s, err);
		goto out;
	}
	if (!init_stopped(&m) && kapsel_container_kill(m.root, name, sig, false, &e) < 0 &&
	    e->code != ESRCH && e->code != ENOENT) {
		*err = steal_ptr(e);
		r = -(*err)->code;
		goto out;
	}
	for (long ms = 0; ms < (long)timeout_s * 1000 && !init_stopped(&m); ms += 25)
		sleep_ms(25);
	if (!init_stopped(&m)) {
		kapsel_error_free(steal_ptr(e));
		kapsel_container_kill(m.root, name, SIGKILL, true, NULL);
		/* Without a cgroup (rootless) "all" finds no processes: the init's death ends its
		 * pid namespace, and every process in it. */
		kapsel_container_kill(m.root, name, SIGKILL, false, NULL);
		for (int i = 0; i < 400 && !init_stopped(&m); i++)
			sleep_ms(25);
		if (!init_stopped(&m)) {
			r = kap_error_plain(err, EBUSY, "container %s did not stop after SIGKILL",
					    name);
			goto out;
		}
	}
	r = wait_finished(&c, &m, err);
out:
	meta_clear(&m);
	ctr_close(&c);
	return r;
}

API int kapsel_image_rm(const char *store, const char *root, const char *name, bool force,
			struct kapsel_error **err)
{
	(void)root;
	struct ctr c;
	struct meta m = {0};
	int r = ctr_open(store, name, &c, err);
	cleanup_error struct kapsel_error *me = NULL;
	if (r == 0 && (r = meta_read(c.cdirfd, name, &m, &me)) == -ENOENT && force) {
		/* kapsel died while making it, before container.json: what exists goes. */
		if (flock(c.cdirfd, LOCK_EX) < 0)
			r = kap_error(err, errno, "lock container %s", name);
		else
			r = ctr_remove(&c, root_or_default(root), err);
		goto out;
	}
	if (r < 0 && me)
		*err = steal_ptr(me);
	if (r < 0)
		goto out;
	if (!strcmp(m.state, "running")) {
		if (!init_stopped(&m) && !force) {
			r = kap_error_plain(err, EBUSY,
					    "container %s is running: stop it first or use rm -f",
					    name);
			goto out;
		}
		meta_clear(&m);
		ctr_close(&c);
		if ((r = kapsel_image_stop(store, root, name, 0, err)) < 0)
			return r;
		cleanup_error struct kapsel_error *e = NULL;
		if ((r = ctr_open(store, name, &c, &e)) < 0) {
			ctr_close(&c);
			/* A --rm container is gone once stopped. */
			if (r == -ENOENT)
				return 0;
			*err = steal_ptr(e);
			return r;
		}
		if ((r = meta_read(c.cdirfd, name, &m, err)) < 0)
			goto out;
	}
	if (flock(c.cdirfd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "lock container %s", name);
		goto out;
	}
	r = ctr_remove(&c, m.root, err);
out:
	meta_clear(&m);
	ctr_close(&c);
	return r;
}

static bool log_done(void *c)
{
	return finished(c);
}

API int kapsel_image_logs(const char *store, const char *root, const char *name,
			  const struct kapsel_logs_options *o, struct kapsel_error **err)
{
	(void)root;
	struct ctr c;
	int r = ctr_open(store, name, &c, err);
	if (r < 0) {
		ctr_close(&c);
		return r;
	}
	cleanup_close int fd = openat(c.cdirfd, LOG_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	/* The monitor makes the log before the container starts; none is an empty one. */
	if (fd < 0 && errno == ENOENT)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		r = kap_error(err, errno, "open log of %s", name);
	else
		r = kap_log_read(fd, o, log_done, &c, err);
	ctr_close(&c);
	return r;
}

/* ---- start / restart ---- */

/* Mount the container's overlay again (its upper layer kept what it wrote). */
static int remount(struct prepared *p, struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	cleanup_manifest struct kap_manifest man = {0};
	cleanup_image_config struct kap_image_config cfg = {0};
	cleanup_strv char **lowers = NULL;
	int r = kap_store_load_image(c->store, p->m.manifest, &man, &cfg, err);
	if (r < 0)
		return kap_error_wrap(err, "container %s: image %s", c->name, p->m.image);
	if ((r = lookup_idmap(p, err)) < 0)
		return r;
	if (!p->idmap.n_uids && (r = layer_dirs(c->store, &man, &cfg, NULL, &lowers, err)) < 0)
		return r;
	cleanup_free char *upper = NULL, *work = NULL, *merged = NULL, *empty = NULL;
	if (asprintf(&upper, "%s/upper", c->cdir) < 0 || asprintf(&work, "%s/work", c->cdir) < 0 ||
	    asprintf(&merged, "%s/merged", c->cdir) < 0 ||
	    asprintf(&empty, "%s/empty", c->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", c->name);
	char *one[2] = {empty, NULL};
	if (p->rootless && geteuid() != 0 && (r = rootless_enter(&p->idmap, true, err)) < 0)
		return r;
	if (p->idmap.n_uids && (r = layer_dirs(c->store, &man, &cfg, &p->idmap, &lowers, err)) < 0)
		return r;
	size_t n = cfg.n_diff_ids;
	if ((r = kap_overlay_mount(n ? lowers : one, n ? n : 1, upper, work, merged, p->rootless,
				   err)) < 0)
		return r;
	p->mounted = true;
	return 0;
}

/* Its network again, as run made it: the same network, address, MAC, ports and aliases. */
static int renet(struct prepared *p, struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	if (!p->m.net)
		return 0;
	cleanup_free char *ns = NULL;
	if (asprintf(&ns, "%s/netns", c->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", c->name);
	bool pasta = !strcmp(p->m.net, "pasta");
	int r = 0;
	if (p->m.vm)
		r = write_small(c->cdirfd, VM_NET, "", err);
	else
		r = pasta ? kap_net_netns_create_apart(ns, err) : kap_net_netns_create(ns, err);
	if (r < 0)
		return r;
	if (pasta)
		return kap_pasta_start(ns, p->m.ports, c->cdir, c->cdirfd, err);
	cleanup_close int nsfd = p->m.vm ? -1 : open(ns, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 && !p->m.vm)
		return kap_error(err, errno, "open %s", ns);
	reap_orphans(c->store_path);
	struct kap_net_request rq = {
	    .store = c->store_path,
	    .network = p->m.net,
	    .container = c->name,
	    .ip = p->m.ip,
	    .ip6 = p->m.ip6,
	    .mac = p->m.mac,
	    .ports = p->m.ports,
	    .aliases = p->m.aliases,
	    .netns_fd = nsfd,
	    .vm = p->m.vm,
	};
	cleanup_net_result struct kap_net_result res = {0};
	if ((r = kap_net_attach(&rq, &res, err)) < 0)
		return r;
	return p->m.vm ? kap_run_vm_net_write(c->cdirfd, &res, err) : 0;
}

API int kapsel_image_start(const char *store, const char *root, const char *name,
			   struct kapsel_error **err)
{
	(void)root; /* the container's own state root, as run recorded it */
	struct prepared p = {0};
	struct ctr *c = &p.c;
	cleanup_error struct kapsel_error *fe = NULL;
	int r = ctr_open(store, name, c, err);
	if (r < 0) {
		ctr_close(c);
		return r;
	}
	if (!(c->store_path = strdup(kap_store_path(c->store)))) {
		r = kap_error(err, ENOMEM, "store");
		goto out;
	}
	if (flock(c->cdirfd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "lock container %s", name);
		goto out;
	}
	if ((r = meta_read(c->cdirfd, name, &p.m, err)) < 0)
		goto out;
	if (!strcmp(p.m.state, "running") && process_alive(p.m.monitor_pid))
		goto out; /* running (or being started): podman's start succeeds */
	if (!strcmp(p.m.state, "running")) {
		/* Its monitor died unnoticed: finish it first. */
		flock(c->cdirfd, LOCK_UN);
		if ((r = ctr_finish(c, p.m.root, -1, err)) < 0)
			goto out;
		meta_clear(&p.m);
		if (flock(c->cdirfd, LOCK_EX) < 0 ||
		    (r = meta_read(c->cdirfd, name, &p.m, err)) < 0) {
			r = r < 0 ? r : kap_error(err, errno, "lock container %s", name);
			goto out;
		}
	}
	/* Claimed: a second start or a stop sees it running, with us as its monitor so far. */
	char *was = p.m.state;
	p.m.state = strdup("running");
	p.m.monitor_pid = getpid();
	p.m.stopped = false;
	if (!p.m.state) {
		p.m.state = was;
		r = kap_error(err, ENOMEM, META);
		goto out;
	}
	r = meta_write(c->cdirfd, &p.m, err);
	free(p.m.state);
	p.m.state = was;
	p.m.monitor_pid = 0;
	flock(c->cdirfd, LOCK_UN);
	if (r < 0)
		goto out;
	p.rootless = geteuid() != 0 || kap_userns_nested();
	const char *croot = p.m.root;
	if ((r = remount(&p, err)) == 0 && (r = renet(&p, err)) == 0) {
		kap_store_close(c->store);
		c->store = NULL;
		r = run_detached(&p, croot, err);
		goto out; /* on failure its monitor put it back as it was (exited) */
	}
	/* Back as it was: exited, unmounted, off its network. */
	meta_write(c->cdirfd, &p.m, NULL);
	if (ctr_finish(c, croot, -1, &fe) < 0)
		kap_warn("%s", fe->msg);
out:
	meta_clear(&p.m);
	ctr_close(c);
	return r;
}

API int kapsel_image_restart(const char *store, const char *root, const char *name, int timeout_s,
			     struct kapsel_error **err)
{
	int r = kapsel_image_stop(store, root, name, timeout_s, err);
	return r < 0 ? r : kapsel_image_start(store, root, name, err);
}

/* ---- wait ---- */

API int kapsel_image_wait(const char *store, const char *name, const char *condition, int *code,
			  struct kapsel_error **err)
{
	bool want_running = condition && !strcmp(condition, "running");
	if (condition && !want_running && strcmp(condition, "stopped") &&
	    strcmp(condition, "exited"))
		return kap_error_plain(err, EINVAL,
				       "--condition \"%s\": expected stopped, exited or running",
				       condition);
	struct ctr c;
	int r = ctr_open(store, name, &c, err);
	if (r < 0) {
		ctr_close(&c);
		return r;
	}
	/*
	 * No polling: container.json is replaced atomically (a rename into the directory) at
	 * every change, and a monitor that dies without a word wakes us through its pidfd.
	 */
	cleanup_close int pidfd = -EBADF;
	cleanup_close int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", c.cdirfd);
	if (in < 0 || inotify_add_watch(in, path,
					IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_DELETE_SELF |
					    IN_ONLYDIR) < 0) {
		r = kap_error(err, errno, "watch container %s", name);
		goto out;
	}
	int64_t count0 = -1, mon = 0;
	bool seen = false;
	int last = -1;
	for (;;) {
		struct meta m;
		if (meta_read(c.cdirfd, name, &m, NULL) < 0) {
			/* Removed (--rm): the code its last record held, if we saw it. */
			if (seen)
				*code = last;
			r = seen ? 0
				 : kap_error_plain(err, ENOENT,
						   "container %s was removed before its exit code "
						   "could be read",
						   name);
			break;
		}
		bool running = !strcmp(m.state, "running");
		if (count0 < 0)
			count0 = m.restart_count;
		if (!strcmp(m.state, "exited")) {
			seen = true;
			last = (int)m.exit_code;
		}
		if (want_running && running && !init_stopped(&m)) {
			*code = -1; /* podman prints -1 for a condition that is not an exit */
			meta_clear(&m);
			break;
		}
		if (!want_running && (!strcmp(m.state, "exited") || m.restart_count > count0)) {
			*code = (int)m.exit_code; /* an exit, a restart since */
			meta_clear(&m);
			break;
		}
		if (running && m.monitor_pid != mon) {
			mon = m.monitor_pid;
			if (pidfd >= 0)
				close(pidfd);
			pidfd = mon > 0 ? kap_pidfd_open((pid_t)mon, 0) : -EBADF;
		}
		if (running && mon > 0 && !process_alive(mon) && init_stopped(&m)) {
			/* The monitor died unnoticed: finish for it (stop and rm do too). */
			cleanup_error struct kapsel_error *fe = NULL;
			if (ctr_finish(&c, m.root, -1, &fe) < 0)
				kap_warn("%s", fe->msg);
			meta_clear(&m);
			continue;
		}
		meta_clear(&m);
		struct pollfd fds[2] = {{.fd = in, .events = POLLIN},
					{.fd = pidfd, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0 && errno != EINTR) {
			r = kap_error(err, errno, "wait for container %s", name);
			break;
		}
		char ev[4096];
		while (read(in, ev, sizeof(ev)) > 0)
			;
		if (fds[1].revents) {
			close(pidfd);
			pidfd = -EBADF;
			mon = -1;
		}
	}
out:
	ctr_close(&c);
	return r;
}

/* ---- rename ---- */

/* config.json names files in the container's directory by absolute path: move them along. */
static int config_follow(int cdirfd, const char *from, const char *to, struct kapsel_error **err)
{
	cleanup_free char *text = NULL, *qf = kap_json_quote(from), *qt = kap_json_quote(to);
	size_t len;
	int r = kap_fs_read_file(cdirfd, "config.json", 1 << 24, &text, &len, err);
	if (r < 0)
		return r;
	if (!qf || !qt)
		return kap_error(err, ENOMEM, "config.json");
	/* "<from>/...: the quote and the slash pin it to a whole path's start. */
	size_t lf = strlen(qf) - 1, lt = strlen(qt) - 1;
	qf[lf] = qt[lt] = '/';
	size_t cap = len + 1;
	for (const char *p = text; (p = strstr(p, qf)); p += lf + 1)
		cap += lt + 1;
	cleanup_free char *out = malloc(cap);
	if (!out)
		return kap_error(err, ENOMEM, "config.json");
	char *o = out;
	const char *p = text, *hit;
	while ((hit = strstr(p, qf))) {
		memcpy(o, p, (size_t)(hit - p));
		o += hit - p;
		memcpy(o, qt, lt + 1);
		o += lt + 1;
		p = hit + lf + 1;
	}
	strcpy(o, p);
	return kap_fs_write_atomic(cdirfd, "config.json", out, strlen(out), 0600, false, err);
}

API int kapsel_image_rename(const char *store, const char *name, const char *new_name,
			    struct kapsel_error **err)
{
	int r = validate_name(new_name, err);
	if (r < 0)
		return r;
	struct ctr c;
	struct meta m = {0};
	if ((r = ctr_open(store, name, &c, err)) < 0) {
		ctr_close(&c);
		return r;
	}
	cleanup_free char *to = NULL, *live = NULL, *taken = NULL;
	cleanup_error struct kapsel_error *se = NULL;
	bool moved = false, config = false;
	if (flock(c.cdirfd, LOCK_EX) < 0) {
		r = kap_error(err, errno, "lock container %s", name);
		goto out;
	}
	if ((r = meta_read(c.cdirfd, name, &m, err)) < 0)
		goto out;
	if (!strcmp(name, new_name)) {
		r = kap_error_plain(err, EEXIST, "container %s is already named %s", name,
				    new_name);
		goto out;
	}
	/* The runtime knows a container that still has a process (or its record) by name. */
	live = runtime_status(m.root, name);
	taken = runtime_status(m.root, new_name);
	if (taken) {
		r = kap_error_plain(err, EEXIST, "container name %s is already in use", new_name);
		goto out;
	}
	if (live && m.net) {
		/* Its address lease and port rules go by name; only a stopped one holds none. */
		r = kap_error_plain(err, EBUSY,
				    "container %s is running on network %s: stop it to rename it",
				    name, m.net);
		goto out;
	}
	if (asprintf(&to, "%.*s/%s", (int)(strrchr(c.cdir, '/') - c.cdir), c.cdir, new_name) < 0) {
		r = kap_error(err, ENOMEM, "rename");
		goto out;
	}
	/* Atomic against a concurrent run --name NEW: whoever takes the name first has it. */
	if (renameat2(c.dirfd, name, c.dirfd, new_name, RENAME_NOREPLACE) < 0) {
		r = errno == EEXIST
			? kap_error_plain(err, EEXIST, "container name %s is already in use",
					  new_name)
			: kap_error(err, errno, "rename %s to %s", c.cdir, to);
		goto out;
	}
	moved = true;
	if ((r = config_follow(c.cdirfd, c.cdir, to, err)) < 0)
		goto out;
	config = true;
	if (live && (r = kapsel_container_rename(m.root, name, new_name, to, err)) < 0)
		goto out;
	char *n = strdup(new_name);
	if (!n) {
		r = kap_error(err, ENOMEM, "rename");
		goto out;
	}
	free(m.name);
	m.name = n;
	if ((r = meta_write(c.cdirfd, &m, err)) < 0) {
		if (live)
			kapsel_container_rename(m.root, new_name, name, c.cdir, NULL);
		goto out;
	}
	/* rmi's record of who uses the image goes by name too. */
	kap_store_remove_user(c.store, name);
	if (kap_store_add_user(c.store, new_name, m.manifest, &se) < 0)
		kap_warn("container %s: %s", new_name, se->msg);
out:
	if (r < 0 && config)
		config_follow(c.cdirfd, to, c.cdir, NULL);
	if (r < 0 && moved)
		renameat2(c.dirfd, new_name, c.dirfd, name, RENAME_NOREPLACE);
	meta_clear(&m);
	ctr_close(&c);
	return r;
}

/* ---- attach ---- */

/* ctrl-p ctrl-q, podman's and docker's default detach keys. */
#define DETACH_1 0x10
#define DETACH_2 0x11

API int kapsel_image_attach(const char *store, const char *name, bool no_stdin,
			    struct kapsel_error **err)
{
	struct ctr c;
	struct meta m = {0};
	int r = ctr_open(store, name, &c, err);
	if (r == 0)
		r = meta_read(c.cdirfd, name, &m, err);
	cleanup_close int sock = -EBADF;
	if (r < 0)
		goto out;
	if (strcmp(m.state, "running") || init_stopped(&m)) {
		r = kap_error_plain(err, EINVAL,
				    "container %s is not running: attach needs it running", name);
		goto out;
	}
	struct sockaddr_un sa;
	attach_path(c.cdirfd, &sa);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		r = e == ENOENT || e == ECONNREFUSED
			? kap_error_plain(err, e,
					  "container %s: nothing to attach to (only a container "
					  "run with -d has its output kept for attach)",
					  name)
			: kap_error(err, e, "attach to container %s", name);
		goto out;
	}
	char buf[1 + 65536];
	ssize_t k = recv(sock, buf, sizeof(buf), 0);
	if (k != 2 || buf[0] != ATTACH_HELLO) {
		r = kap_error_plain(err, EPROTO,
				    "attach to container %s: no answer from its monitor", name);
		goto out;
	}
	bool tty = buf[1] == 't';
	bool input = tty && !no_stdin;
	struct termios saved;
	bool raw = false;
	if (input && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
		struct termios t = saved;
		cfmakeraw(&t);
		raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
	}
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	sigprocmask(SIG_BLOCK, &set, &old);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	bool first = true, pending = false, detached = false;
	struct pollfd fds[3] = {{.fd = sock, .events = POLLIN},
				{.fd = input ? STDIN_FILENO : -1, .events = POLLIN},
				{.fd = tty ? sfd : -1, .events = POLLIN}};
	for (;;) {
		if (tty && first) {
			first = false;
			fds[2].revents = POLLIN; /* our size, once at the start */
		} else if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[2].fd >= 0 && fds[2].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
			struct winsize ws;
			if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
			    ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
				char msg[1 + sizeof(ws)] = {ATTACH_RESIZE};
				memcpy(msg + 1, &ws, sizeof(ws));
				send(sock, msg, sizeof(msg), MSG_NOSIGNAL);
			}
			fds[2].revents = 0;
		}
		if (fds[0].revents) {
			k = recv(sock, buf, sizeof(buf), 0);
			if (k <= 0)
				break; /* the container ended: its monitor closed us */
			int to = buf[0] == ATTACH_STDERR ? STDERR_FILENO : STDOUT_FILENO;
			if (k > 1 && !write_all(to, buf + 1, (size_t)k - 1))
				break;
		}
		if (fds[1].fd >= 0 && fds[1].revents) {
			char in[4096], out[1 + 4097] = {ATTACH_STDIN};
			ssize_t n = read(STDIN_FILENO, in, sizeof(in));
			if (n <= 0) {
				fds[1].fd = -1;
				continue;
			}
			/* ctrl-p holds back until the next key says whether it detaches. */
			size_t o = 1;
			for (ssize_t i = 0; i < n; i++) {
				unsigned char ch = (unsigned char)in[i];
				if (pending && ch == DETACH_2) {
					detached = true;
					break;
				}
				if (pending)
					out[o++] = DETACH_1;
				pending = ch == DETACH_1;
				if (!pending)
					out[o++] = (char)ch;
			}
			if (o > 1)
				send(sock, out, o, MSG_NOSIGNAL);
			if (detached)
				break;
		}
	}
	if (raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (sfd >= 0)
		close(sfd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (detached) {
		r = 0;
		goto out;
	}
	/* Its exit status is ours, as podman attach returns it. */
	close(steal_fd(sock));
	int code = -1;
	meta_clear(&m);
	ctr_close(&c);
	r = kapsel_image_wait(store, name, "exited", &code, err);
	return r < 0 ? r : code < 0 ? 0 : code;
out:
	meta_clear(&m);
	ctr_close(&c);
	return r;
}
