/* SPDX-License-Identifier: Apache-2.0 */
/*
 * linux.sysctl (config-linux.md#sysctl): kernel parameters written through /proc/sys by the
 * container init, before pivot_root, with the runtime's privileges. Two attacks follow from
 * trusting the keys:
 *  - a key is a path: "kernel.//.//.//.tmp.x" becomes /proc/sys/kernel/../../../tmp/x, a host
 *    file. Every component of the path must be a plain name, and the file is opened beneath a
 *    /proc/sys fd (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so nothing can leave /proc/sys;
 *  - most sysctls are global: "kernel.core_pattern" written from a container changes the
 *    host. Only the parameters a namespace owns are allowed, and only when the container has
 *    that namespace of its own (not inherited from the runtime, nor joined from the host's),
 *    the same list runc accepts.
 * Validation runs in `create` before anything exists; the write is the init's.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/syscalls.h"

/* The ipc namespace's parameters (ipc/ipc_sysctl.c, ipc/mq_sysctl.c). */
static const char *const ipc_keys[] = {
    "kernel.msgmax",	  "kernel.msgmnb",	"kernel.msgmni",      "kernel.sem",
    "kernel.shmall",	  "kernel.shmmax",	"kernel.shmmni",      "kernel.shm_rmid_forced",
    "kernel.auto_msgmni", "kernel.msg_next_id", "kernel.sem_next_id", "kernel.shm_next_id",
};

/* Whether the container has a namespace of type t that is not the runtime's own. */
static bool own_namespace(const struct kap_spec *spec, enum kap_ns_type t)
{
	const struct kap_namespace *ns = &spec->namespaces[t];
	if (!ns->enabled)
		return false;
	if (!ns->path)
		return true;
	char self[64];
	struct stat a, b;
	snprintf(self, sizeof(self), "/proc/self/ns/%s", kap_ns_proc_name(t));
	if (stat(ns->path, &a) < 0 || stat(self, &b) < 0)
		return true; /* the join itself will fail and say why */
	return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

/* Turn a key into a path below /proc/sys: dots separate, slashes stand for dots
 * (net.ipv4.conf.eth0/1.forwarding is the interface "eth0.1"). */
static int key_to_path(const char *key, char *out, size_t len, struct kapsel_error **err)
{
	size_t n = strlen(key);
	if (n == 0 || n >= len)
		return kap_error_plain(err, EINVAL, "linux.sysctl: invalid key \"%s\"", key);
	for (size_t i = 0; i <= n; i++)
		out[i] = key[i] == '.' ? '/' : key[i] == '/' ? '.' : key[i];
	/* Every component a plain name: no empty, "." or ".." (each would walk elsewhere). */
	for (const char *c = out; *c;) {
		const char *end = strchrnul(c, '/');
		size_t l = (size_t)(end - c);
		if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
			return kap_error_plain(err, EINVAL,
					       "linux.sysctl: invalid key \"%s\" (empty, \".\" or "
					       "\"..\" component)",
					       key);
		c = *end ? end + 1 : end;
	}
	if (out[n - 1] == '/')
		return kap_error_plain(err, EINVAL, "linux.sysctl: invalid key \"%s\"", key);
	return 0;
}

static int check_key(const struct kap_spec *spec, const char *key, struct kapsel_error **err)
{
	char path[512];
	int r = key_to_path(key, path, sizeof(path), err);
	if (r < 0)
		return r;
	enum kap_ns_type need = KAP_NS_COUNT;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(ipc_keys); i++)
		if (!strcmp(key, ipc_keys[i]))
			need = KAP_NS_IPC;
	if (!strncmp(key, "fs.mqueue.", 10))
		need = KAP_NS_IPC;
	else if (!strncmp(key, "net.", 4))
		need = KAP_NS_NET;
	else if (!strcmp(key, "kernel.hostname") || !strcmp(key, "kernel.domainname"))
		need = KAP_NS_UTS;
	if (need == KAP_NS_COUNT)
		return kap_error_plain(
		    err, EPERM,
		    "linux.sysctl: %s is not namespaced: it would change the host "
		    "kernel",
		    key);
	if (!own_namespace(spec, need))
		return kap_error_plain(
		    err, EPERM,
		    "linux.sysctl: %s needs a %s namespace of the container's own "
		    "in linux.namespaces",
		    key, kap_ns_name(need));
	return 0;
}

int kap_sysctl_validate(const struct kap_spec *spec, struct kapsel_error **err)
{
	for (size_t i = 0; i < spec->n_sysctls; i++) {
		int r = check_key(spec, spec->sysctls[i].key, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_sysctl_write(const struct kap_spec *spec, struct kapsel_error **err)
{
	if (!spec->n_sysctls)
		return 0;
	/* Opened now, in the container's namespaces: /proc/sys/net follows the opener's netns. */
	cleanup_close int sys = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sys < 0)
		return kap_error(err, errno, "linux.sysctl: open /proc/sys");
	for (size_t i = 0; i < spec->n_sysctls; i++) {
		const char *key = spec->sysctls[i].key, *v = spec->sysctls[i].value;
		char path[512];
		int r = check_key(spec, key, err);
		if (r < 0 || (r = key_to_path(key, path, sizeof(path), err)) < 0)
			return r;
		cleanup_close int fd = kap_openat2(sys, path, O_WRONLY | O_CLOEXEC, 0,
						   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
						       RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
		if (fd < 0)
			return kap_error(err, errno, "linux.sysctl %s: open /proc/sys/%s", key,
					 path);
		if (write(fd, v, strlen(v)) < 0)
			return kap_error(err, errno, "linux.sysctl %s: write \"%s\"", key, v);
	}
	return 0;
}
