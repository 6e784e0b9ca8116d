/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container status is derived, never stored: the init process alive (same pid *and* start time,
 * so a recycled pid is not mistaken for it), the exec fifo still present (created), and the
 * freezer state (paused).
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "container/cgroup/cgroup.h"
#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/syscalls.h"

const char *kap_status_name(enum kap_status s)
{
	static const char *const names[] = {"creating", "created", "running", "paused", "stopped"};
	return names[s];
}

static bool init_alive(const struct kap_state *st)
{
	uint64_t start;
	char state;
	if (st->pid <= 0 || kap_proc_stat(st->pid, &start, &state) < 0)
		return false;
	return start == st->start_time && state != 'Z' && state != 'X';
}

enum kap_status kap_container_status(int state_dirfd, const struct kap_state *st)
{
	if (!init_alive(st))
		return KAP_STATUS_STOPPED;
	if (st->creating)
		return KAP_STATUS_CREATING;
	if (faccessat(state_dirfd, "exec.fifo", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return KAP_STATUS_CREATED;
	if (st->cgroup) {
		cleanup_cgroup struct kap_cgroup *cg = NULL;
		bool frozen = false;
		if (kap_cgroup_from_json(st->cgroup, &cg, NULL) == 0 &&
		    kap_cgroup_is_frozen(cg, &frozen, NULL) == 0 && frozen)
			return KAP_STATUS_PAUSED;
	}
	return KAP_STATUS_RUNNING;
}

int kap_container_load(const char *root, const char *id, int lock, int *dirfd,
		       struct kap_state **st, struct kapsel_error **err)
{
	int r = kap_state_validate_id(id, err);
	if (r < 0)
		return r;
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0 && errno == ENOENT)
		return kap_error_plain(err, ENOENT, "container %s does not exist", id);
	if (rootfd < 0)
		return kap_error(err, errno, "open state root %s", root);
	cleanup_close int fd = openat(rootfd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return kap_error_plain(err, ENOENT, "container %s does not exist", id);
	if (fd < 0)
		return kap_error(err, errno, "open state of container %s", id);
	if (lock && flock(fd, lock) < 0)
		return kap_error(err, errno, "lock container %s", id);
	if (st) {
		r = kap_state_read(fd, id, st, err);
		if (r < 0)
			return r;
	}
	*dirfd = steal_fd(fd);
	return 0;
}

/* newuidmap/newgidmap (Debian's uidmap): map /etc/subuid ranges for an unprivileged user. */
static int run_idmap_helper(const char *helper, pid_t pid, const struct kap_id_mapping *m, size_t n,
			    const char *field, struct kapsel_error **err)
{
	char *argv[3 + 3 * 64 + 1];
	char buf[3 * 64][16], pidbuf[16];
	if (n > 64)
		return kap_error_plain(err, E2BIG, "%s: too many mappings", field);
	snprintf(pidbuf, sizeof(pidbuf), "%d", pid);
	size_t a = 0;
	argv[a++] = (char *)helper;
	argv[a++] = pidbuf;
	for (size_t k = 0; k < n; k++) {
		snprintf(buf[3 * k], 16, "%u", m[k].container_id);
		snprintf(buf[3 * k + 1], 16, "%u", m[k].host_id);
		snprintf(buf[3 * k + 2], 16, "%u", m[k].size);
		argv[a++] = buf[3 * k];
		argv[a++] = buf[3 * k + 1];
		argv[a++] = buf[3 * k + 2];
	}
	argv[a] = NULL;
	pid_t child = fork();
	if (child < 0)
		return kap_error(err, errno, "%s: fork %s", field, helper);
	if (child == 0) {
		execvp(helper, argv);
		_exit(127);
	}
	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return kap_error_plain(err, ENOENT,
				       "%s: %s not found (install Debian's uidmap for id ranges "
				       "as an unprivileged user)",
				       field, helper);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return kap_error_plain(err, EPERM,
				       "%s: %s failed (are the ranges in /etc/sub%cid?)", field,
				       helper, helper[3] == 'u' ? 'u' : 'g');
	return 0;
}

int kap_userns_write_maps(pid_t pid, const struct kap_spec *spec, struct kapsel_error **err)
{
	const struct {
		const char *file, *field, *helper;
		const struct kap_id_mapping *m;
		size_t n;
		unsigned self;
	} maps[] = {
	    {"gid_map", "linux.gidMappings", "newgidmap", spec->gid_mappings, spec->n_gid_mappings,
	     (unsigned)getegid()},
	    {"uid_map", "linux.uidMappings", "newuidmap", spec->uid_mappings, spec->n_uid_mappings,
	     (unsigned)geteuid()},
	};
	bool root = geteuid() == 0;
	for (size_t i = 0; i < 2; i++) {
		char buf[4096], path[64];
		size_t off = 0;
		if (maps[i].n == 0)
			return kap_error_plain(
			    err, EINVAL, "%s: required with a new user namespace", maps[i].field);
		/*
		 * An unprivileged user may map only its own id, once, and only after denying
		 * setgroups (user_namespaces(7)); anything else goes through the setuid helpers.
		 */
		bool own = maps[i].n == 1 && maps[i].m[0].size == 1 &&
			   maps[i].m[0].host_id == maps[i].self;
		if (!root && !own) {
			int r = run_idmap_helper(maps[i].helper, pid, maps[i].m, maps[i].n,
						 maps[i].field, err);
			if (r < 0)
				return r;
			continue;
		}
		if (!root && i == 0) {
			snprintf(path, sizeof(path), "/proc/%d/setgroups", pid);
			if (kap_fs_write_at(AT_FDCWD, path, "deny", 4, err) < 0)
				return kap_error_wrap(err, "%s", maps[i].field);
		}
		for (size_t k = 0; k < maps[i].n; k++) {
			int n = snprintf(buf + off, sizeof(buf) - off, "%u %u %u\n",
					 maps[i].m[k].container_id, maps[i].m[k].host_id,
					 maps[i].m[k].size);
			if (n < 0 || (size_t)n >= sizeof(buf) - off)
				return kap_error_plain(err, E2BIG, "%s: too many mappings",
						       maps[i].field);
			off += (size_t)n;
		}
		snprintf(path, sizeof(path), "/proc/%d/%s", pid, maps[i].file);
		if (kap_fs_write_at(AT_FDCWD, path, buf, off, err) < 0)
			return kap_error_wrap(err, "%s", maps[i].field);
	}
	return 0;
}

bool kap_userns_nested(void)
{
	/* Only the initial user namespace maps the whole range "0 0 4294967295" (runc's
	 * RunningInUserNS reads it the same way). Not cached: a process may unshare later. */
	char buf[128] = "";
	cleanup_close int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		return false; /* no /proc: assume the initial namespace, as before */
	buf[n] = '\0';
	unsigned long a, b, c;
	return !(sscanf(buf, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 &&
		 c == 4294967295UL);
}

int kap_wait_pid_gone(pid_t pid, int timeout_ms)
{
	int pfd = kap_pidfd_open(pid, 0);
	if (pfd < 0)
		return errno == ESRCH ? 0 : -errno;
	struct pollfd p = {.fd = pfd, .events = POLLIN};
	int r;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	close(pfd);
	return r > 0 ? 0 : -ETIMEDOUT;
}
