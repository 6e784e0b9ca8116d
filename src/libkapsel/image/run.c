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
#include <sys/file.h>
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
#include "image/image.h"
#include "net/net.h"

#define API __attribute__((visibility("default")))

#define META	 "container.json"
#define LOG_FILE "ctr.log"
#define PID_FILE "ctr.pid"

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
	uid_t uid = geteuid();
	gid_t gid = getegid();
	pid_t pid = fork();
	if (pid < 0)
		return r;
	if (pid == 0) {
		if (userns_enter(uid, gid, false, NULL) < 0)
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
	*m = (struct meta){0};
}

static int meta_write(int cdirfd, const struct meta *m, struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = kap_json_new_object();
	if (!j)
		return kap_error(err, ENOMEM, META);
	const struct {
		const char *k, *v;
	} strs[] = {
	    {"name", m->name},	       {"image", m->image},	      {"imageName", m->image_name},
	    {"manifest", m->manifest}, {"command", m->command},	      {"root", m->root},
	    {"state", m->state},       {"stopSignal", m->stop_signal}};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(strs); i++)
		if (strs[i].v)
			kap_json_set(j, strs[i].k, kap_json_new_string(strs[i].v));
	kap_json_set(j, "created", kap_json_new_int64(m->created));
	kap_json_set(j, "finished", kap_json_new_int64(m->finished));
	kap_json_set(j, "exitCode", kap_json_new_int64(m->exit_code));
	kap_json_set(j, "monitorPid", kap_json_new_int64(m->monitor_pid));
	kap_json_set(j, "rm", kap_json_new_bool(m->rm));
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
	    (r = kap_json_read_bool(j, META, "rm", &m->rm, err)) < 0) {
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
	char *cdir; /* absolute */
	const char *name;
};

static void ctr_close(struct ctr *c)
{
	if (c->cdirfd >= 0)
		close(c->cdirfd);
	if (c->dirfd >= 0)
		close(c->dirfd);
	free(c->cdir);
	free(c->store_path);
	if (c->store)
		kap_store_close(c->store);
	*c = (struct ctr){.dirfd = -1, .cdirfd = -1};
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
static int ctr_open(const char *store, const char *name, struct ctr *c, struct kapsel_error **err)
{
	*c = (struct ctr){.dirfd = -1, .cdirfd = -1, .name = name};
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

static bool process_alive(int64_t pid)
{
	return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/*
 * Give back what the container held on its network: the lease, the veth, the published ports
 * and the namespace kapsel bound for it. Only a container that had a namespace of ours can
 * hold any (the lease is written after the namespace exists).
 */
static int net_down(struct ctr *c, struct kapsel_error **err)
{
	if (faccessat(c->cdirfd, "netns", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	const char *store = c->store ? kap_store_path(c->store) : c->store_path;
	cleanup_free char *ns = NULL;
	if (asprintf(&ns, "%s/netns", c->cdir) < 0)
		return kap_error(err, ENOMEM, "container %s", c->name);
	/* The runtime's delete ended every process of the container: with the mount gone,
	 * nothing holds the namespace. */
	kap_net_netns_remove(ns);
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
	if (m.rm) {
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

/* ---- run ---- */

/* What the user typed (a name, a reference, an ID prefix) -> the stored image. */
static int resolve_image(struct kap_store *s, const char *image, char **name, char *digest,
			 struct kapsel_error **err)
{
	/* Only the embedded default is loaded implicitly: it needs no network. */
	int r = kap_image_ensure_default(s, image, err);
	if (r < 0)
		return r;
	cleanup_error struct kapsel_error *e = NULL;
	r = kap_store_lookup(s, image, name, digest, &e);
	if (r == -ENOENT)
		return kap_error_plain(err, ENOENT, "image %s not found locally; kapsel pull %s",
				       image, image);
	if (r < 0) {
		*err = steal_ptr(e);
		return r;
	}
	if (!*name && !(*name = strdup(digest)))
		return kap_error(err, ENOMEM, "image %s", image);
	return 0;
}

/* The image's layers as lower directories, top first; unpacks a layer the store lacks. */
static int layer_dirs(struct kap_store *s, const struct kap_manifest *m,
		      const struct kap_image_config *cfg, char ***out, struct kapsel_error **err)
{
	if (cfg->n_diff_ids != m->n_layers)
		return kap_error_plain(err, EINVAL, "image config has %zu diff_ids for %zu layers",
				       cfg->n_diff_ids, m->n_layers);
	cleanup_strv char **v = calloc(cfg->n_diff_ids + 1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "layers");
	for (size_t i = 0; i < cfg->n_diff_ids; i++) {
		const char *diff_id = cfg->diff_ids[i];
		char *p = kap_store_layer_path(s, diff_id);
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
	bool rootless; /* not root on the host: mount and run from a user namespace */
};

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
	struct kap_manifest man = {0};
	cleanup_image_config struct kap_image_config cfg = {0};
	cleanup_strv char **lowers = NULL;
	if ((r = kap_store_load_image(c->store, digest, &man, &cfg, err)) < 0)
		return kap_error_wrap(err, "image %s", o->image);
	r = layer_dirs(c->store, &man, &cfg, &lowers, err);
	kap_manifest_clear(&man);
	if (r < 0)
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
	if (p->rootless && geteuid() != 0 &&
	    (r = userns_enter(geteuid(), getegid(), true, err)) < 0)
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

	/* --net NETWORK: a namespace of our own, wired to the network's bridge before the
	 * container exists; the runtime joins it by path. */
	bool host_net = o->net && !strcmp(o->net, "host");
	bool own_net = o->net && !host_net && strcmp(o->net, "none");
	struct kap_net_result net = {0};
	cleanup_free char *netns_path = NULL, *resolv_path = NULL;
	if (own_net) {
		if (asprintf(&netns_path, "%s/netns", c->cdir) < 0) {
			r = kap_error(err, ENOMEM, "container %s", name);
			return r;
		}
		if ((r = kap_net_netns_create(netns_path, err)) < 0)
			return r;
		kap_fault_point("net:netns");
		cleanup_close int nsfd = open(netns_path, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0) {
			r = kap_error(err, errno, "open %s", netns_path);
			return r;
		}
		struct kap_net_request rq = {
		    .store = c->store_path,
		    .network = o->net,
		    .container = name,
		    .ip = o->ip,
		    .mac = o->mac,
		    .ports = o->ports,
		    .aliases = o->aliases,
		    .netns_fd = nsfd,
		};
		if ((r = kap_net_attach(&rq, &net, err)) < 0)
			return r;
	}

	/* podman's /etc/hosts and /etc/hostname: the container knows its own name. */
	char hostname[65];
	snprintf(hostname, sizeof(hostname), "%s", o->hostname ? o->hostname : name);
	cleanup_free char *hosts = NULL, *hosts_path = NULL, *hostname_path = NULL;
	char hn_line[80];
	snprintf(hn_line, sizeof(hn_line), "%s\n", hostname);
	if (!host_net) {
		size_t len = 0;
		FILE *f = open_memstream(&hosts, &len);
		if (!f) {
			r = kap_error(err, ENOMEM, "hosts");
			return r;
		}
		fprintf(f, "127.0.0.1\tlocalhost%s%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
			net.ip[0] ? "" : " ", net.ip[0] ? "" : hostname);
		if (net.ip[0])
			fprintf(f, "%s\t%s %s\n", net.ip, hostname, name);
		for (char *const *h = o->add_hosts; h && *h; h++) {
			const char *colon = strchr(*h, ':');
			fprintf(f, "%s\t%.*s\n", colon + 1, (int)(colon - *h), *h);
		}
		if (fclose(f) != 0 || !hosts) {
			r = kap_error(err, ENOMEM, "hosts");
			return r;
		}
	}
	if ((hosts && (r = write_small(c->cdirfd, "hosts", hosts, err)) < 0) ||
	    (r = write_small(c->cdirfd, "hostname", hn_line, err)) < 0)
		return r;
	if ((hosts && asprintf(&hosts_path, "%s/hosts", c->cdir) < 0) ||
	    asprintf(&hostname_path, "%s/hostname", c->cdir) < 0) {
		r = kap_error(err, ENOMEM, "hosts");
		return r;
	}
	/* resolv.conf: --dns, else (on a network) the host's minus loopback nameservers, which
	 * the container's own lo cannot reach (podman does the same); on a user-defined
	 * network the network's responder comes first: it refuses names it does not know, and
	 * the resolver moves on to the host's. */
	bool own_dns = o->dns && *o->dns;
	if (own_dns || own_net) {
		cleanup_free char *text = NULL, *host_conf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);
		if (!f) {
			r = kap_error(err, ENOMEM, "resolv.conf");
			return r;
		}
		for (char *const *d = own_dns ? o->dns : NULL; d && *d; d++)
			fprintf(f, "nameserver %s\n", *d);
		if (!own_dns && net.dns)
			fprintf(f, "nameserver %s\n", net.gateway);
		if (!own_dns && kap_fs_read_file(AT_FDCWD, "/etc/resolv.conf", 1 << 16, &host_conf,
						 NULL, NULL) == 0) {
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

	struct kap_bundle_env be = {
	    .rootfs = merged,
	    .image_name = canonical,
	    .hostname = hostname,
	    .hosts_file = hosts_path,
	    .hostname_file = hostname_path,
	    .resolv_file = resolv_path,
	    .netns_path = netns_path,
	    .rootless = p->rootless,
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
	};
	if (!p->m.name || !p->m.image || !p->m.image_name || !p->m.manifest || !p->m.command ||
	    !p->m.root || !p->m.state) {
		r = kap_error(err, ENOMEM, META);
		return r;
	}
	return meta_write(c->cdirfd, &p->m, err);
}

static int read_pid(int cdirfd, pid_t *pid)
{
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(cdirfd, PID_FILE, 64, &buf, NULL, NULL) < 0)
		return -ENOENT;
	long v = strtol(buf, NULL, 10);
	if (v <= 0)
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

/*
 * The monitor of a detached container (double-forked, its own session): creates and starts
 * the container as its child, reports "OK" or the error on `report`, waits for the init and
 * finishes the container. Never returns.
 */
static __attribute__((noreturn)) void monitor(struct prepared *p, const char *root, int report)
{
	struct ctr *c = &p->c;
	cleanup_error struct kapsel_error *e = NULL;
	int logfd = openat(c->cdirfd, LOG_FILE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (logfd < 0 || nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0 ||
	    dup2(logfd, STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0) {
		dprintf(report, "Econtainer log %s/%s: %s", c->cdir, LOG_FILE, strerror(errno));
		_exit(1);
	}
	close(logfd);
	close(nullfd);
	/* Orphans of a two-stage create reparent to us, and we reap the init ourselves. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	cleanup_free char *pid_file = NULL;
	if (asprintf(&pid_file, "%s/%s", c->cdir, PID_FILE) < 0)
		_exit(1);
	struct kapsel_create_options co = {
	    .root = root, .id = c->name, .bundle = c->cdir, .pid_file = pid_file};
	pid_t pid = 0;
	int r = kapsel_container_create(&co, &e);
	if (r == 0 && (r = kapsel_container_start(root, c->name, &e)) < 0)
		kapsel_container_delete(root, c->name, true, NULL);
	if (r == 0 && read_pid(c->cdirfd, &pid) < 0)
		r = kap_error_plain(&e, EIO, "container %s: no pid recorded", c->name);
	if (r == 0 && (meta_set_state(&p->m, "running") < 0 ||
		       (p->m.monitor_pid = getpid(), meta_write(c->cdirfd, &p->m, &e)) < 0))
		r = e ? -e->code : -ENOMEM;
	if (r < 0) {
		dprintf(report, "E%s", e ? e->msg : strerror(-r));
		prepared_fail(p, root);
		_exit(1);
	}
	if (write(report, "OK", 2) != 2)
		kap_warn("monitor: report to kapsel run: %s", strerror(errno));
	close(report);

	int code = -1, status;
	for (;;) {
		pid_t w = waitpid(-1, &status, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break; /* ECHILD: the init was not ours to reap */
		if (w == pid) {
			code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
	}
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

static int run_foreground(struct prepared *p, const struct kapsel_run_options *o, const char *root,
			  struct kapsel_error **err)
{
	struct ctr *c = &p->c;
	p->m.monitor_pid = getpid();
	if (meta_set_state(&p->m, "running") < 0)
		return kap_error(err, ENOMEM, META);
	int r = meta_write(c->cdirfd, &p->m, err);
	if (r < 0)
		return r;
	/* Without -i the container reads nothing of ours (podman gives it /dev/null). */
	cleanup_close int saved_in = -EBADF;
	if (!o->interactive && !o->tty) {
		cleanup_close int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		saved_in = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
		if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0)
			return kap_error(err, errno, "stdin: /dev/null");
	}
	struct kapsel_create_options co = {.root = root, .id = c->name, .bundle = c->cdir};
	int status = kapsel_container_run(&co, err);
	if (saved_in >= 0)
		dup2(saved_in, STDIN_FILENO);
	if (status < 0)
		return status;
	cleanup_error struct kapsel_error *e = NULL;
	if (ctr_finish(c, root, status, &e) < 0)
		kap_warn("%s", e->msg);
	return status;
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
	int r = kap_bundle_check(o, err);
	if (r < 0)
		return r;
	if (o->net && strcmp(o->net, "none") && strcmp(o->net, "host")) {
		if (geteuid() != 0 || kap_userns_nested())
			return kap_error_plain(
			    err, EPERM,
			    "--net %s: a rootless container has no bridge network "
			    "(use none or host)",
			    o->net);
		struct kap_net_request rq = {.store = o->store,
					     .network = o->net,
					     .ip = o->ip,
					     .mac = o->mac,
					     .ports = o->ports};
		if ((r = kap_net_check(&rq, err)) < 0)
			return r;
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
	const char *root = root_or_default(o->root);
	struct prepared p = {.c = {.dirfd = -1, .cdirfd = -1, .name = name},
			     .rootless = geteuid() != 0 || kap_userns_nested()};
	struct kapsel_run_options eff = *o;
	if (p.rootless && !cgroup_delegated()) {
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
		eff.has_pids_limit = true;
		eff.pids_limit = 0;
	}
	o = &eff;
	if ((r = prepare(o, name, &p, err)) < 0) {
		prepared_fail(&p, root);
		return r;
	}
	kap_store_close(p.c.store);
	p.c.store = NULL;
	r = o->detach ? run_detached(&p, root, err) : run_foreground(&p, o, root, err);
	if (r < 0 && !o->detach) {
		/* Nothing ran: leave no trace of it, as if it never existed. */
		prepared_fail(&p, root);
		return r;
	}
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

/* ---- ps ---- */

static char *status_of(const struct meta *m)
{
	if (strcmp(m->state, "running"))
		return strdup(m->state);
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

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool init_stopped(const struct meta *m)
{
	cleanup_free char *s = runtime_status(m->root, m->name);
	return !s || !strcmp(s, "stopped");
}

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
	int sig = m.stop_signal ? kapsel_signal_parse(m.stop_signal) : SIGTERM;
	if (sig <= 0)
		sig = SIGTERM;
	cleanup_error struct kapsel_error *e = NULL;
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

static int copy_fd(int fd, FILE *out, struct kapsel_error **err)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kap_error(err, errno, "read log");
		if (n == 0)
			break;
		if (fwrite(buf, 1, (size_t)n, out) != (size_t)n)
			return kap_error(err, errno, "write log");
	}
	fflush(out);
	return 0;
}

API int kapsel_image_logs(const char *store, const char *root, const char *name, bool follow,
			  FILE *out, struct kapsel_error **err)
{
	(void)root;
	struct ctr c;
	int r = ctr_open(store, name, &c, err);
	if (r < 0) {
		ctr_close(&c);
		return r;
	}
	cleanup_close int fd = openat(c.cdirfd, LOG_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno != ENOENT) {
		r = kap_error(err, errno, "open log of %s", name);
		goto out;
	}
	for (;;) {
		bool done = !follow || finished(&c);
		if (fd < 0)
			fd = openat(c.cdirfd, LOG_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		/* After "done" one more read drains what the container wrote last. */
		if (fd >= 0 && (r = copy_fd(fd, out, err)) < 0)
			break;
		if (done)
			break;
		sleep_ms(100);
	}
out:
	ctr_close(&c);
	return r;
}
