/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The starter config.json that `kapsel spec` writes: the same document as `runc spec` (runc
 * libcontainer/specconv/example.go), with kapsel's hostname, and with --rootless converted the
 * way runc's ToRootless does it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"

#define API __attribute__((visibility("default")))

static const char *const default_caps[] = {
    "CAP_AUDIT_WRITE",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
};

static const char *const default_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
};

static const struct {
	const char *destination, *type, *source;
	const char *options[7]; /* NULL-terminated; proc has none */
} default_mounts[] = {
    {"/proc", "proc", "proc", {NULL}},
    {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
    {"/dev/pts",
     "devpts",
     "devpts",
     {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
    {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
    {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
    {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
    {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}},
};

/* Without its own network namespace sysfs cannot be mounted in a user namespace: bind it. */
static const char *const rootless_sys_options[] = {"rbind", "nosuid", "noexec",
						   "nodev", "ro",     NULL};

/* runtime-spec config-linux.md#masked-paths; the tpm entry is what current runc masks too. */
static const char *const masked_paths[] = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/tpm",
};

static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static const char *const default_namespaces[] = {
    "pid", "network", "ipc", "uts", "mount", "cgroup",
};

/* Records allocation failures and drops children of a failed parent; checked once at the end. */
static struct kap_json *add(bool *oom, struct kap_json *parent, const char *key,
			    struct kap_json *val)
{
	if (!val) {
		*oom = true;
		return NULL;
	}
	if (!parent) {
		kap_json_put(val);
		return NULL;
	}
	if (key)
		kap_json_set(parent, key, val);
	else
		kap_json_append(parent, val);
	return val;
}

static void add_strv(bool *oom, struct kap_json *parent, const char *key, const char *const *v,
		     size_t n)
{
	struct kap_json *arr = add(oom, parent, key, kap_json_new_array());
	for (size_t i = 0; i < n && v[i]; i++)
		add(oom, arr, NULL, kap_json_new_string(v[i]));
}

static void add_process(bool *oom, struct kap_json *doc)
{
	struct kap_json *p = add(oom, doc, "process", kap_json_new_object());
	add(oom, p, "terminal", kap_json_new_bool(true));
	struct kap_json *user = add(oom, p, "user", kap_json_new_object());
	add(oom, user, "uid", kap_json_new_int64(0));
	add(oom, user, "gid", kap_json_new_int64(0));
	add_strv(oom, p, "args", (const char *const[]){"sh"}, 1);
	add_strv(oom, p, "env", default_env, KAP_ARRAY_SIZE(default_env));
	add(oom, p, "cwd", kap_json_new_string("/"));

	struct kap_json *caps = add(oom, p, "capabilities", kap_json_new_object());
	/* No inheritable set: runc dropped it (CVE-2022-29162), so exec'd programs gain nothing. */
	add_strv(oom, caps, "bounding", default_caps, KAP_ARRAY_SIZE(default_caps));
	add_strv(oom, caps, "effective", default_caps, KAP_ARRAY_SIZE(default_caps));
	add_strv(oom, caps, "permitted", default_caps, KAP_ARRAY_SIZE(default_caps));

	struct kap_json *rlimits = add(oom, p, "rlimits", kap_json_new_array());
	struct kap_json *nofile = add(oom, rlimits, NULL, kap_json_new_object());
	add(oom, nofile, "type", kap_json_new_string("RLIMIT_NOFILE"));
	add(oom, nofile, "hard", kap_json_new_int64(1024));
	add(oom, nofile, "soft", kap_json_new_int64(1024));
	add(oom, p, "noNewPrivileges", kap_json_new_bool(true));
}

static void add_mounts(bool *oom, struct kap_json *doc, bool rootless)
{
	struct kap_json *mounts = add(oom, doc, "mounts", kap_json_new_array());
	for (size_t i = 0; i < KAP_ARRAY_SIZE(default_mounts); i++) {
		const char *dest = default_mounts[i].destination, *type = default_mounts[i].type;
		const char *source = default_mounts[i].source;
		const char *const *options = default_mounts[i].options;
		if (rootless && !strcmp(dest, "/sys")) {
			type = "none";
			source = "/sys";
			options = rootless_sys_options;
		}
		struct kap_json *m = add(oom, mounts, NULL, kap_json_new_object());
		add(oom, m, "destination", kap_json_new_string(dest));
		add(oom, m, "type", kap_json_new_string(type));
		add(oom, m, "source", kap_json_new_string(source));
		if (!options[0])
			continue;
		struct kap_json *opts = add(oom, m, "options", kap_json_new_array());
		for (size_t j = 0; options[j]; j++) {
			/* A rootless user owns one uid and one gid: uid=/gid= would not map. */
			if (rootless &&
			    (!strncmp(options[j], "uid=", 4) || !strncmp(options[j], "gid=", 4)))
				continue;
			add(oom, opts, NULL, kap_json_new_string(options[j]));
		}
	}
}

/* [{"containerID": 0, "hostID": id, "size": 1}] */
static void add_mapping(bool *oom, struct kap_json *lnx, const char *key, unsigned id)
{
	struct kap_json *arr = add(oom, lnx, key, kap_json_new_array());
	struct kap_json *m = add(oom, arr, NULL, kap_json_new_object());
	add(oom, m, "containerID", kap_json_new_int64(0));
	add(oom, m, "hostID", kap_json_new_int64(id));
	add(oom, m, "size", kap_json_new_int64(1));
}

static void add_linux(bool *oom, struct kap_json *doc, bool rootless)
{
	struct kap_json *lnx = add(oom, doc, "linux", kap_json_new_object());
	if (rootless) {
		add_mapping(oom, lnx, "uidMappings", geteuid());
		add_mapping(oom, lnx, "gidMappings", getegid());
	} else {
		/* Deny all devices; the runtime adds the default /dev nodes back. */
		struct kap_json *res = add(oom, lnx, "resources", kap_json_new_object());
		struct kap_json *devices = add(oom, res, "devices", kap_json_new_array());
		struct kap_json *deny = add(oom, devices, NULL, kap_json_new_object());
		add(oom, deny, "allow", kap_json_new_bool(false));
		add(oom, deny, "access", kap_json_new_string("rwm"));
	}

	struct kap_json *nss = add(oom, lnx, "namespaces", kap_json_new_array());
	for (size_t i = 0; i < KAP_ARRAY_SIZE(default_namespaces); i++) {
		/* Rootless keeps the host network: an unprivileged user cannot configure one. */
		if (rootless && !strcmp(default_namespaces[i], "network"))
			continue;
		struct kap_json *ns = add(oom, nss, NULL, kap_json_new_object());
		add(oom, ns, "type", kap_json_new_string(default_namespaces[i]));
	}
	if (rootless) {
		struct kap_json *ns = add(oom, nss, NULL, kap_json_new_object());
		add(oom, ns, "type", kap_json_new_string("user"));
	}

	add_strv(oom, lnx, "maskedPaths", masked_paths, KAP_ARRAY_SIZE(masked_paths));
	add_strv(oom, lnx, "readonlyPaths", readonly_paths, KAP_ARRAY_SIZE(readonly_paths));
}

API int kapsel_spec_default(bool rootless, char **json, struct kapsel_error **err)
{
	bool oom = false;
	cleanup_json struct kap_json *doc = kap_json_new_object();
	if (!doc)
		return kap_error(err, ENOMEM, "spec");
	add(&oom, doc, "ociVersion", kap_json_new_string(KAPSEL_OCI_VERSION));
	add_process(&oom, doc);
	struct kap_json *root = add(&oom, doc, "root", kap_json_new_object());
	add(&oom, root, "path", kap_json_new_string("rootfs"));
	add(&oom, root, "readonly", kap_json_new_bool(true));
	add(&oom, doc, "hostname", kap_json_new_string("kapsel"));
	add_mounts(&oom, doc, rootless);
	add_linux(&oom, doc, rootless);
	if (oom)
		return kap_error(err, ENOMEM, "spec");

	char *s = kap_json_dump(doc, true);
	if (!s)
		return kap_error(err, ENOMEM, "spec");
	*json = s;
	return 0;
}
