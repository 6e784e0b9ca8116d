/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.json decoder (OCI runtime-spec 1.0-1.2, Linux). Pure: no syscalls besides reading the
 * file in kap_spec_load. Every error names the JSON path of the offending field, because that is
 * all a user (or podman/containerd relaying our last log line) has to go on. Unknown fields are
 * ignored (runtime-spec config.md: "Runtimes MUST ignore unknown properties"); fields the spec
 * defines but kapsel does not implement (intelRdt, ioPriority, ...) are ignored too, so newer
 * bundles still run.
 *
 * Memory discipline: every decoder writes into a zeroed struct that is already reachable from
 * its owner (arrays are allocated at full length and counted before they are filled), so a
 * failure anywhere leaves a partially filled tree that the matching free function releases.
 */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/syscalls.h"
#include "oci/spec.h"

/* config.json is small; anything bigger is hostile or broken (runc has no limit, crun none). */
#define KAP_SPEC_MAX_SIZE (16u << 20)

/* Long enough for every path we build ourselves; user keys in messages are printed with %s. */
#define JPATH_MAX 512

/* ---------------------------------------------------------------------------------------- */
/* JSON path building and typed readers on top of core/json.h                               */

/* A path too long for the buffer (only a caller-supplied prefix can do that) ends in "...". */
static const char *jtrunc(char *buf, int n)
{
	if (n >= JPATH_MAX)
		memcpy(buf + JPATH_MAX - 4, "...", 4);
	return buf;
}

/* "path.key", or "key" at the top level. */
static const char *jkey(char *buf, const char *path, const char *key)
{
	return jtrunc(buf, snprintf(buf, JPATH_MAX, "%s%s%s", path, *path ? "." : "", key));
}

/* "path.key[i]" */
static const char *jidx(char *buf, const char *path, const char *key, size_t i)
{
	return jtrunc(buf, snprintf(buf, JPATH_MAX, "%s%s%s[%zu]", path, *path ? "." : "", key, i));
}

static int err_missing(struct kapsel_error **err, const char *path, const char *key)
{
	char b[JPATH_MAX];
	return kap_error_plain(err, EINVAL, "%s: missing", jkey(b, path, key));
}

static int err_not_absolute(struct kapsel_error **err, const char *path, const char *key,
			    const char *value)
{
	char b[JPATH_MAX];
	return kap_error_plain(err, EINVAL, "%s: \"%s\" is not an absolute path",
			       jkey(b, path, key), value);
}

static int read_required_string(const struct kap_json *obj, const char *path, const char *key,
				char **out, struct kapsel_error **err)
{
	int r = kap_json_read_string(obj, path, key, out, err);
	if (r == 0)
		return err_missing(err, path, key);
	return r;
}

/* An optional non-negative integer no larger than max. */
static int read_uint_max(const struct kap_json *obj, const char *path, const char *key,
			 uint64_t max, uint64_t *out, struct kapsel_error **err)
{
	uint64_t v = 0;
	int r = kap_json_read_uint64(obj, path, key, &v, err);
	if (r <= 0)
		return r;
	if (v > max) {
		char b[JPATH_MAX];
		return kap_error_plain(err, ERANGE, "%s: %llu out of range (0..%llu)",
				       jkey(b, path, key), (unsigned long long)v,
				       (unsigned long long)max);
	}
	*out = v;
	return 1;
}

static int read_u32(const struct kap_json *obj, const char *path, const char *key, uint32_t *out,
		    struct kapsel_error **err)
{
	uint64_t v;
	int r = read_uint_max(obj, path, key, UINT32_MAX, &v, err);
	if (r > 0)
		*out = (uint32_t)v;
	return r;
}

static int read_required_u32(const struct kap_json *obj, const char *path, const char *key,
			     uint32_t *out, struct kapsel_error **err)
{
	int r = read_u32(obj, path, key, out, err);
	if (r == 0)
		return err_missing(err, path, key);
	return r;
}

static int read_u16(const struct kap_json *obj, const char *path, const char *key, uint16_t *out,
		    struct kapsel_error **err)
{
	uint64_t v;
	int r = read_uint_max(obj, path, key, UINT16_MAX, &v, err);
	if (r > 0)
		*out = (uint16_t)v;
	return r;
}

static int read_required_int64(const struct kap_json *obj, const char *path, const char *key,
			       int64_t *out, struct kapsel_error **err)
{
	int r = kap_json_read_int64(obj, path, key, out, err);
	if (r == 0)
		return err_missing(err, path, key);
	return r;
}

static int read_required_uint64(const struct kap_json *obj, const char *path, const char *key,
				uint64_t *out, struct kapsel_error **err)
{
	int r = kap_json_read_uint64(obj, path, key, out, err);
	if (r == 0)
		return err_missing(err, path, key);
	return r;
}

static int read_object(const struct kap_json *obj, const char *path, const char *key,
		       struct kap_json **out, struct kapsel_error **err)
{
	return kap_json_read_member(obj, path, key, KAP_JSON_OBJECT, out, err);
}

/* Member `key` as an array; *n its length (0 when absent). */
static int read_array(const struct kap_json *obj, const char *path, const char *key,
		      struct kap_json **out, size_t *n, struct kapsel_error **err)
{
	int r = kap_json_read_member(obj, path, key, KAP_JSON_ARRAY, out, err);
	*n = r > 0 ? kap_json_array_len(*out) : 0;
	return r;
}

/* Element i of array path.key, which must be an object; elem_path receives "path.key[i]". */
static int array_object_at(const struct kap_json *arr, const char *path, const char *key, size_t i,
			   char *elem_path, struct kap_json **out, struct kapsel_error **err)
{
	jidx(elem_path, path, key, i);
	*out = kap_json_array_at(arr, i);
	if (kap_json_type(*out) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object", elem_path);
	return 0;
}

/* calloc that treats n == 0 as "nothing to allocate" rather than as failure. */
static int alloc_array(void **out, size_t n, size_t size, const char *path, const char *key,
		       struct kapsel_error **err)
{
	*out = NULL;
	if (n == 0)
		return 0;
	*out = calloc(n, size);
	if (!*out) {
		char b[JPATH_MAX];
		return kap_error(err, ENOMEM, "%s", jkey(b, path, key));
	}
	return 0;
}

/*
 * A JSON object of string values (annotations, sysctl, unified) into parallel NULL-terminated
 * key/value vectors. A non-string value is an error naming its key.
 */
static int read_string_map(const struct kap_json *obj, const char *path, const char *key,
			   char ***keys_out, char ***values_out, size_t *n_out,
			   struct kapsel_error **err)
{
	struct kap_json *map;
	char b[JPATH_MAX];
	int r = read_object(obj, path, key, &map, err);
	if (r <= 0)
		return r;
	size_t n = 0;
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(map); kap_json_iter_next(&it, &k, &v);)
		n++;
	char **keys = calloc(n + 1, sizeof(char *));
	char **values = calloc(n + 1, sizeof(char *));
	*keys_out = keys;
	*values_out = values;
	*n_out = 0;
	if (!keys || !values)
		return kap_error(err, ENOMEM, "%s", jkey(b, path, key));
	size_t i = 0;
	for (struct kap_json_iter it = kap_json_iter(map); kap_json_iter_next(&it, &k, &v); i++) {
		if (kap_json_type(v) != KAP_JSON_STRING)
			return kap_error_plain(err, EINVAL, "%s.%s: expected string",
					       jkey(b, path, key), k);
		keys[i] = strdup(k);
		values[i] = strdup(kap_json_string(v));
		*n_out = i + 1;
		if (!keys[i] || !values[i])
			return kap_error(err, ENOMEM, "%s", jkey(b, path, key));
	}
	return 1;
}

static void free_strv(char **v)
{
	kap_strvp(&v);
}

/* Free a key/value map of n entries (vectors may hold NULL holes after a failed strdup). */
static void free_string_map(char **keys, char **values, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(keys ? keys[i] : NULL);
		free(values ? values[i] : NULL);
	}
	free(keys);
	free(values);
}

/* ---------------------------------------------------------------------------------------- */
/* Namespace names (runtime-spec config-linux.md#namespaces and /proc/PID/ns)                */

static const struct {
	const char *name, *proc;
	int flag;
} ns_table[KAP_NS_COUNT] = {
    [KAP_NS_PID] = {"pid", "pid", CLONE_NEWPID},
    [KAP_NS_NET] = {"network", "net", CLONE_NEWNET},
    [KAP_NS_MNT] = {"mount", "mnt", CLONE_NEWNS},
    [KAP_NS_IPC] = {"ipc", "ipc", CLONE_NEWIPC},
    [KAP_NS_UTS] = {"uts", "uts", CLONE_NEWUTS},
    [KAP_NS_USER] = {"user", "user", CLONE_NEWUSER},
    [KAP_NS_CGROUP] = {"cgroup", "cgroup", CLONE_NEWCGROUP},
    [KAP_NS_TIME] = {"time", "time", CLONE_NEWTIME},
};

const char *kap_ns_name(enum kap_ns_type t)
{
	return (unsigned)t < KAP_NS_COUNT ? ns_table[t].name : NULL;
}

const char *kap_ns_proc_name(enum kap_ns_type t)
{
	return (unsigned)t < KAP_NS_COUNT ? ns_table[t].proc : NULL;
}

int kap_ns_clone_flag(enum kap_ns_type t)
{
	return (unsigned)t < KAP_NS_COUNT ? ns_table[t].flag : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* process (runtime-spec config.md#process)                                                 */

static int decode_cap_set(const struct kap_json *caps, const char *path, const char *key,
			  uint64_t *mask, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	char b[JPATH_MAX];
	int r = read_array(caps, path, key, &arr, &n, err);
	if (r <= 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *e = kap_json_array_at(arr, i);
		if (kap_json_type(e) != KAP_JSON_STRING)
			return kap_error_plain(err, EINVAL, "%s: expected string",
					       jidx(b, path, key, i));
		int cap = kap_cap_from_name(kap_json_string(e));
		if (cap < 0)
			return kap_error_plain(err, EINVAL, "%s: unknown capability %s",
					       jidx(b, path, key, i), kap_json_string(e));
		*mask |= UINT64_C(1) << cap;
	}
	return 1;
}

static int decode_capabilities(const struct kap_json *proc, const char *path, struct kap_process *p,
			       struct kapsel_error **err)
{
	struct kap_json *caps;
	char cpath[JPATH_MAX];
	int r = read_object(proc, path, "capabilities", &caps, err);
	if (r <= 0)
		return r;
	p->has_caps = true;
	jkey(cpath, path, "capabilities");
	if ((r = decode_cap_set(caps, cpath, "bounding", &p->caps.bounding, err)) < 0 ||
	    (r = decode_cap_set(caps, cpath, "effective", &p->caps.effective, err)) < 0 ||
	    (r = decode_cap_set(caps, cpath, "inheritable", &p->caps.inheritable, err)) < 0 ||
	    (r = decode_cap_set(caps, cpath, "permitted", &p->caps.permitted, err)) < 0 ||
	    (r = decode_cap_set(caps, cpath, "ambient", &p->caps.ambient, err)) < 0)
		return r;
	return 0;
}

static int decode_rlimits(const struct kap_json *proc, const char *path, struct kap_process *p,
			  struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(proc, path, "rlimits", &arr, &n, err);
	if (r <= 0)
		return r;
	if ((r = alloc_array((void **)&p->rlimits, n, sizeof(*p->rlimits), path, "rlimits", err)) <
	    0)
		return r;
	p->n_rlimits = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		cleanup_free char *type = NULL;
		struct kap_rlimit *rl = &p->rlimits[i];
		if ((r = array_object_at(arr, path, "rlimits", i, ep, &o, err)) < 0 ||
		    (r = read_required_string(o, ep, "type", &type, err)) < 0)
			return r;
		rl->resource = kap_rlimit_from_name(type);
		if (rl->resource < 0)
			return kap_error_plain(err, EINVAL, "%s: unknown rlimit %s",
					       jkey(b, ep, "type"), type);
		/* config.md#posix-process: "If a duplicate type is used, runtime MUST error". */
		for (size_t j = 0; j < i; j++)
			if (p->rlimits[j].resource == rl->resource)
				return kap_error_plain(err, EINVAL, "%s: duplicate rlimit %s",
						       jkey(b, ep, "type"), type);
		if ((r = read_required_uint64(o, ep, "soft", &rl->soft, err)) < 0 ||
		    (r = read_required_uint64(o, ep, "hard", &rl->hard, err)) < 0)
			return r;
	}
	return 0;
}

static int decode_user(const struct kap_json *proc, const char *path, struct kap_user *u,
		       struct kapsel_error **err)
{
	struct kap_json *user, *gids;
	char up[JPATH_MAX], b[JPATH_MAX];
	size_t n;
	uint32_t v;
	int r = read_object(proc, path, "user", &user, err);
	if (r <= 0)
		return r;
	jkey(up, path, "user");
	if ((r = read_u32(user, up, "uid", &u->uid, err)) < 0 ||
	    (r = read_u32(user, up, "gid", &u->gid, err)) < 0)
		return r;
	/* (uid_t)-1 is "leave unchanged" to setresuid/setresgid: the process would stay root. */
	if (u->uid == (uid_t)-1)
		return kap_error_plain(err, EINVAL, "%s: 4294967295 is not a valid uid",
				       jkey(b, up, "uid"));
	if (u->gid == (gid_t)-1)
		return kap_error_plain(err, EINVAL, "%s: 4294967295 is not a valid gid",
				       jkey(b, up, "gid"));
	if ((r = read_u32(user, up, "umask", &v, err)) < 0)
		return r;
	if (r > 0) {
		if (v > 07777)
			return kap_error_plain(err, ERANGE, "%s: %#o out of range (0..07777)",
					       jkey(b, up, "umask"), v);
		u->has_umask = true;
		u->umask = (mode_t)v;
	}
	if ((r = read_array(user, up, "additionalGids", &gids, &n, err)) < 0)
		return r;
	if ((r = alloc_array((void **)&u->additional_gids, n, sizeof(gid_t), up, "additionalGids",
			     err)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *e = kap_json_array_at(gids, i);
		if (kap_json_type(e) != KAP_JSON_INT || kap_json_int64(e) < 0 ||
		    kap_json_uint64(e) >= UINT32_MAX)
			return kap_error_plain(err, EINVAL, "%s: expected a gid (0..4294967294)",
					       jidx(b, up, "additionalGids", i));
		u->additional_gids[i] = (gid_t)kap_json_uint64(e);
		u->n_additional_gids = i + 1;
	}
	return kap_json_read_string(user, up, "username", &u->username, err);
}

static int decode_process(const struct kap_json *obj, const char *path, struct kap_process *p,
			  struct kapsel_error **err)
{
	struct kap_json *console;
	char b[JPATH_MAX];
	int64_t oom;
	int r;

	if ((r = kap_json_read_bool(obj, path, "terminal", &p->terminal, err)) < 0)
		return r;
	if ((r = read_object(obj, path, "consoleSize", &console, err)) < 0)
		return r;
	if (r > 0) {
		uint32_t h = 0, w = 0;
		jkey(b, path, "consoleSize");
		if ((r = read_u32(console, b, "height", &h, err)) < 0 ||
		    (r = read_u32(console, b, "width", &w, err)) < 0)
			return r;
		p->console_height = h;
		p->console_width = w;
	}
	if ((r = decode_user(obj, path, &p->user, err)) < 0)
		return r;
	if ((r = kap_json_read_strv(obj, path, "args", &p->args, err)) < 0 ||
	    (r = kap_json_read_string(obj, path, "commandLine", &p->command_line, err)) < 0)
		return r;
	/* config.md#process: args is REQUIRED and non-empty; commandLine is its Windows twin. */
	if (!p->command_line) {
		if (!p->args)
			return err_missing(err, path, "args");
		if (!p->args[0])
			return kap_error_plain(err, EINVAL, "%s: must not be empty",
					       jkey(b, path, "args"));
	}
	if ((r = kap_json_read_strv(obj, path, "env", &p->env, err)) < 0)
		return r;
	/* config.md#process: cwd "MUST be an absolute path" (runc rejects anything else too). */
	if ((r = read_required_string(obj, path, "cwd", &p->cwd, err)) < 0)
		return r;
	if (p->cwd[0] != '/')
		return err_not_absolute(err, path, "cwd", p->cwd);
	if ((r = decode_capabilities(obj, path, p, err)) < 0 ||
	    (r = decode_rlimits(obj, path, p, err)) < 0)
		return r;
	if ((r = kap_json_read_bool(obj, path, "noNewPrivileges", &p->no_new_privileges, err)) <
		0 ||
	    (r = kap_json_read_string(obj, path, "apparmorProfile", &p->apparmor_profile, err)) <
		0 ||
	    (r = kap_json_read_string(obj, path, "selinuxLabel", &p->selinux_label, err)) < 0)
		return r;
	if ((r = kap_json_read_int64(obj, path, "oomScoreAdj", &oom, err)) < 0)
		return r;
	if (r > 0) {
		/* The kernel's range for /proc/PID/oom_score_adj (OOM_SCORE_ADJ_MIN..MAX). */
		if (oom < -1000 || oom > 1000)
			return kap_error_plain(err, ERANGE, "%s: %lld out of range (-1000..1000)",
					       jkey(b, path, "oomScoreAdj"), (long long)oom);
		p->has_oom_score_adj = true;
		p->oom_score_adj = (int)oom;
	}
	return 0;
}

int kap_spec_parse_process(const struct kap_json *obj, const char *path, struct kap_process **out,
			   struct kapsel_error **err)
{
	if (!path)
		path = "process";
	if (kap_json_type(obj) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object",
				       *path ? path : "process");
	struct kap_process *p = calloc(1, sizeof(*p));
	if (!p)
		return kap_error(err, ENOMEM, "%s", path);
	int r = decode_process(obj, path, p, err);
	if (r < 0) {
		kap_process_free(p);
		return r;
	}
	*out = p;
	return 0;
}

void kap_process_free(struct kap_process *p)
{
	if (!p)
		return;
	free(p->user.additional_gids);
	free(p->user.username);
	free_strv(p->args);
	free(p->command_line);
	free_strv(p->env);
	free(p->cwd);
	free(p->rlimits);
	free(p->apparmor_profile);
	free(p->selinux_label);
	free(p);
}

/* ---------------------------------------------------------------------------------------- */
/* mounts (runtime-spec config.md#mounts, options as in mount(8) and runc)                   */

enum mount_opt_kind {
	OPT_SET,	 /* set flag */
	OPT_CLEAR,	 /* clear flag, remember it was asked for */
	OPT_PROPAGATION, /* MS_PRIVATE/MS_SLAVE/... for a second mount(2) call */
	OPT_IGNORE,	 /* understood, handled elsewhere or not at all */
};

static const struct mount_opt {
	const char *name;
	enum mount_opt_kind kind;
	unsigned long flag;
	/* A per-mount attribute with an "r"-prefixed recursive form (runc 1.1: rro, rnosuid...). */
	bool has_recursive;
} mount_opts[] = {
    {"defaults", OPT_IGNORE, 0, false},
    {"ro", OPT_SET, MS_RDONLY, true},
    {"rw", OPT_CLEAR, MS_RDONLY, true},
    {"nosuid", OPT_SET, MS_NOSUID, true},
    {"suid", OPT_CLEAR, MS_NOSUID, true},
    {"nodev", OPT_SET, MS_NODEV, true},
    {"dev", OPT_CLEAR, MS_NODEV, true},
    {"noexec", OPT_SET, MS_NOEXEC, true},
    {"exec", OPT_CLEAR, MS_NOEXEC, true},
    {"sync", OPT_SET, MS_SYNCHRONOUS, false},
    {"async", OPT_CLEAR, MS_SYNCHRONOUS, false},
    {"dirsync", OPT_SET, MS_DIRSYNC, false},
    {"remount", OPT_SET, MS_REMOUNT, false},
    {"mand", OPT_SET, MS_MANDLOCK, false},
    {"nomand", OPT_CLEAR, MS_MANDLOCK, false},
    {"noatime", OPT_SET, MS_NOATIME, true},
    {"atime", OPT_CLEAR, MS_NOATIME, true},
    {"nodiratime", OPT_SET, MS_NODIRATIME, true},
    {"diratime", OPT_CLEAR, MS_NODIRATIME, true},
    {"relatime", OPT_SET, MS_RELATIME, true},
    {"norelatime", OPT_CLEAR, MS_RELATIME, true},
    {"strictatime", OPT_SET, MS_STRICTATIME, true},
    {"nostrictatime", OPT_CLEAR, MS_STRICTATIME, true},
    {"nosymfollow", OPT_SET, MS_NOSYMFOLLOW, true},
    {"symfollow", OPT_CLEAR, MS_NOSYMFOLLOW, true},
    {"lazytime", OPT_SET, MS_LAZYTIME, false},
    {"nolazytime", OPT_CLEAR, MS_LAZYTIME, false},
    {"iversion", OPT_SET, MS_I_VERSION, false},
    {"noiversion", OPT_CLEAR, MS_I_VERSION, false},
    {"silent", OPT_SET, MS_SILENT, false},
    {"loud", OPT_CLEAR, MS_SILENT, false},
    {"bind", OPT_SET, MS_BIND, false},
    {"rbind", OPT_SET, MS_BIND | MS_REC, false},
    {"private", OPT_PROPAGATION, MS_PRIVATE, false},
    {"rprivate", OPT_PROPAGATION, MS_PRIVATE | MS_REC, false},
    {"slave", OPT_PROPAGATION, MS_SLAVE, false},
    {"rslave", OPT_PROPAGATION, MS_SLAVE | MS_REC, false},
    {"shared", OPT_PROPAGATION, MS_SHARED, false},
    {"rshared", OPT_PROPAGATION, MS_SHARED | MS_REC, false},
    {"unbindable", OPT_PROPAGATION, MS_UNBINDABLE, false},
    {"runbindable", OPT_PROPAGATION, MS_UNBINDABLE | MS_REC, false},
    /* runc extensions that need no flag here: copy-up of tmpfs content and idmapped mounts
     * (config.md#mounts uidMappings/gidMappings); kapsel does not implement them. */
    {"tmpcopyup", OPT_IGNORE, 0, false},
    {"idmap", OPT_IGNORE, 0, false},
    {"ridmap", OPT_IGNORE, 0, false},
};

static const struct mount_opt *find_mount_opt(const char *name)
{
	for (size_t i = 0; i < KAP_ARRAY_SIZE(mount_opts); i++)
		if (!strcmp(name, mount_opts[i].name))
			return &mount_opts[i];
	return NULL;
}

static void apply_mount_opt(struct kap_mount *m, const struct mount_opt *o)
{
	switch (o->kind) {
	case OPT_SET:
		m->flags |= o->flag;
		m->clear_flags &= ~o->flag;
		break;
	case OPT_CLEAR:
		m->flags &= ~o->flag;
		m->clear_flags |= o->flag;
		break;
	case OPT_PROPAGATION:
		/* mount(2) takes one propagation type per call: the last one given wins. */
		m->propagation = o->flag;
		break;
	case OPT_IGNORE:
		break;
	}
}

static int decode_mount_options(struct kap_mount *m, const char *mpath, struct kapsel_error **err)
{
	size_t cap = 1;
	for (char **o = m->options; o && *o; o++)
		cap += strlen(*o) + 1;
	cleanup_free char *data = calloc(1, cap);
	char *end = data;
	if (!data) {
		char b[JPATH_MAX];
		return kap_error(err, ENOMEM, "%s", jkey(b, mpath, "options"));
	}
	for (char **o = m->options; o && *o; o++) {
		const char *name = *o;
		const struct mount_opt *opt = find_mount_opt(name);
		if (opt) {
			if (opt->kind == OPT_IGNORE && strcmp(name, "defaults"))
				kap_debug("%s: ignoring mount option \"%s\"", m->destination, name);
			apply_mount_opt(m, opt);
			continue;
		}
		/*
		 * Recursive attributes (rro, rnosuid, ...) need mount_setattr(AT_RECURSIVE). Apply
		 * the plain flag to the mount itself, which keeps the intent for the common case
		 * of a bind mount without submounts.
		 */
		if (name[0] == 'r' && (opt = find_mount_opt(name + 1)) && opt->has_recursive) {
			kap_debug("%s: mount option \"%s\" applied to the mount only, not its "
				  "submounts",
				  m->destination, name);
			apply_mount_opt(m, opt);
			continue;
		}
		/* mount(8) strips userspace-only x-* options before calling mount(2). */
		if (!strncmp(name, "x-", 2)) {
			kap_debug("%s: ignoring mount option \"%s\"", m->destination, name);
			continue;
		}
		if (!*name)
			continue;
		if (end != data)
			*end++ = ',';
		end = stpcpy(end, name);
	}
	if (m->type && !strcmp(m->type, "bind"))
		m->flags |= MS_BIND;
	m->bind = m->flags & MS_BIND;
	m->recursive = m->bind && (m->flags & MS_REC);
	m->bind_ro = m->bind && (m->flags & MS_RDONLY);
	if (end != data)
		m->data = steal_ptr(data);
	return 0;
}

static int decode_mounts(const struct kap_json *doc, struct kap_spec *s, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(doc, "", "mounts", &arr, &n, err);
	if (r <= 0)
		return r;
	if ((r = alloc_array((void **)&s->mounts, n, sizeof(*s->mounts), "", "mounts", err)) < 0)
		return r;
	s->n_mounts = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_mount *m = &s->mounts[i];
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		if ((r = array_object_at(arr, "", "mounts", i, ep, &o, err)) < 0 ||
		    (r = read_required_string(o, ep, "destination", &m->destination, err)) < 0 ||
		    (r = kap_json_read_string(o, ep, "type", &m->type, err)) < 0 ||
		    (r = kap_json_read_string(o, ep, "source", &m->source, err)) < 0 ||
		    (r = kap_json_read_strv(o, ep, "options", &m->options, err)) < 0)
			return r;
		if (!*m->destination)
			return kap_error_plain(err, EINVAL, "%s: must not be empty",
					       jkey(b, ep, "destination"));
		/*
		 * config.md#mounts: destination SHOULD be absolute; before 1.1 it could be
		 * relative, meaning relative to "/" in the container (what runc does).
		 */
		if (m->destination[0] != '/') {
			char *abs = NULL;
			if (asprintf(&abs, "/%s", m->destination) < 0)
				return kap_error(err, ENOMEM, "%s", jkey(b, ep, "destination"));
			kap_debug("%s: relative destination \"%s\" taken as \"%s\"", ep,
				  m->destination, abs);
			free(m->destination);
			m->destination = abs;
		}
		if ((r = decode_mount_options(m, ep, err)) < 0)
			return r;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* hooks (runtime-spec config.md#posix-platform-hooks)                                       */

static const char *const hook_names[KAP_HOOK_KIND_COUNT] = {
    [KAP_HOOK_PRESTART] = "prestart",
    [KAP_HOOK_CREATE_RUNTIME] = "createRuntime",
    [KAP_HOOK_CREATE_CONTAINER] = "createContainer",
    [KAP_HOOK_START_CONTAINER] = "startContainer",
    [KAP_HOOK_POSTSTART] = "poststart",
    [KAP_HOOK_POSTSTOP] = "poststop",
};

static int decode_hooks(const struct kap_json *doc, struct kap_hooks *h, struct kapsel_error **err)
{
	struct kap_json *hooks;
	int r = read_object(doc, "", "hooks", &hooks, err);
	if (r <= 0)
		return r;
	for (int k = 0; k < KAP_HOOK_KIND_COUNT; k++) {
		struct kap_json *arr;
		size_t n;
		if ((r = read_array(hooks, "hooks", hook_names[k], &arr, &n, err)) < 0 ||
		    (r = alloc_array((void **)&h->list[k], n, sizeof(struct kap_hook), "hooks",
				     hook_names[k], err)) < 0)
			return r;
		h->n[k] = n;
		for (size_t i = 0; i < n; i++) {
			struct kap_hook *hk = &h->list[k][i];
			struct kap_json *o;
			char ep[JPATH_MAX], b[JPATH_MAX];
			int64_t timeout;
			if ((r = array_object_at(arr, "hooks", hook_names[k], i, ep, &o, err)) <
				0 ||
			    (r = read_required_string(o, ep, "path", &hk->path, err)) < 0)
				return r;
			/* "path ... MUST be absolute"; a relative one would resolve against the
			 * runtime's cwd, which is not something a bundle author can rely on. */
			if (hk->path[0] != '/')
				return err_not_absolute(err, ep, "path", hk->path);
			if ((r = kap_json_read_strv(o, ep, "args", &hk->args, err)) < 0 ||
			    (r = kap_json_read_strv(o, ep, "env", &hk->env, err)) < 0 ||
			    (r = kap_json_read_int64(o, ep, "timeout", &timeout, err)) < 0)
				return r;
			if (r > 0) {
				/* "timeout ... MUST be greater than zero" */
				if (timeout <= 0)
					return kap_error_plain(err, EINVAL,
							       "%s: must be greater than zero",
							       jkey(b, ep, "timeout"));
				if (timeout > INT_MAX)
					return kap_error_plain(err, ERANGE, "%s: %lld out of range",
							       jkey(b, ep, "timeout"),
							       (long long)timeout);
				hk->has_timeout = true;
				hk->timeout = (int)timeout;
			}
		}
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* linux.resources (runtime-spec config-linux.md#control-groups)                             */

static int decode_memory(const struct kap_json *res, const char *path, struct kap_resources *r,
			 struct kapsel_error **err)
{
	struct kap_json *m;
	char mp[JPATH_MAX];
	int rc = read_object(res, path, "memory", &m, err);
	if (rc <= 0)
		return rc;
	jkey(mp, path, "memory");
	if ((rc = kap_json_read_int64(m, mp, "limit", &r->mem_limit, err)) < 0)
		return rc;
	r->has_mem_limit = rc > 0;
	if ((rc = kap_json_read_int64(m, mp, "reservation", &r->mem_reservation, err)) < 0)
		return rc;
	r->has_mem_reservation = rc > 0;
	if ((rc = kap_json_read_int64(m, mp, "swap", &r->mem_swap, err)) < 0)
		return rc;
	r->has_mem_swap = rc > 0;
	if ((rc = kap_json_read_int64(m, mp, "kernel", &r->mem_kernel, err)) < 0)
		return rc;
	r->has_mem_kernel = rc > 0;
	if ((rc = kap_json_read_uint64(m, mp, "swappiness", &r->mem_swappiness, err)) < 0)
		return rc;
	r->has_mem_swappiness = rc > 0;
	if ((rc = kap_json_read_bool(m, mp, "disableOOMKiller", &r->disable_oom_killer, err)) < 0)
		return rc;
	r->has_disable_oom_killer = rc > 0;
	if ((rc = kap_json_read_int64(m, mp, "kernelTCP", &r->mem_kernel_tcp, err)) < 0)
		return rc;
	r->has_mem_kernel_tcp = rc > 0;
	return 0;
}

/*
 * A name that ends up inside a line written to a cgroup file ("eth0 5", "mlx5_1 hca_handle=3"):
 * non-empty, shorter than max, no blank or control character that would split the line.
 */
static int check_cg_name(const char *s, size_t max, const char *what, struct kapsel_error **err)
{
	size_t n = strlen(s);
	bool ok = n > 0 && n < max;
	for (size_t i = 0; ok && i < n; i++)
		ok = (unsigned char)s[i] > ' ' && s[i] != 0x7f && s[i] != '/';
	if (ok)
		return 0;
	/* Shown on one line: control characters as '?'. */
	char shown[72];
	size_t k = 0;
	for (; k < n && k < sizeof(shown) - 1; k++)
		shown[k] = (unsigned char)s[k] < ' ' || s[k] == 0x7f ? '?' : s[k];
	shown[k] = '\0';
	return kap_error_plain(err, EINVAL, "%s: invalid name \"%s\"", what, shown);
}

/* config-linux.md#network: classID (net_cls), priorities (net_prio). */
static int decode_network(const struct kap_json *res, const char *path, struct kap_resources *r,
			  struct kapsel_error **err)
{
	struct kap_json *net, *arr;
	char np[JPATH_MAX];
	size_t n;
	int rc = read_object(res, path, "network", &net, err);
	if (rc <= 0)
		return rc;
	jkey(np, path, "network");
	if ((rc = read_u32(net, np, "classID", &r->net_classid, err)) < 0)
		return rc;
	r->has_net_classid = rc > 0;
	if ((rc = read_array(net, np, "priorities", &arr, &n, err)) < 0 ||
	    (rc = alloc_array((void **)&r->net_priorities, n, sizeof(*r->net_priorities), np,
			      "priorities", err)) < 0)
		return rc;
	r->n_net_priorities = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_net_priority *p = &r->net_priorities[i];
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		if ((rc = array_object_at(arr, np, "priorities", i, ep, &o, err)) < 0 ||
		    (rc = read_required_string(o, ep, "name", &p->name, err)) < 0 ||
		    (rc = check_cg_name(p->name, 16 /* IFNAMSIZ */, jkey(b, ep, "name"), err)) <
			0 ||
		    (rc = read_required_u32(o, ep, "priority", &p->priority, err)) < 0)
			return rc;
	}
	return 0;
}

/* config-linux.md#rdma: {"<device>": {"hcaHandles": N, "hcaObjects": N}}. */
static int decode_rdma(const struct kap_json *res, const char *path, struct kap_resources *r,
		       struct kapsel_error **err)
{
	struct kap_json *map, *v;
	char rp[JPATH_MAX];
	const char *k;
	int rc = read_object(res, path, "rdma", &map, err);
	if (rc <= 0)
		return rc;
	jkey(rp, path, "rdma");
	size_t n = 0;
	for (struct kap_json_iter it = kap_json_iter(map); kap_json_iter_next(&it, &k, &v);)
		n++;
	if ((rc = alloc_array((void **)&r->rdma, n, sizeof(*r->rdma), path, "rdma", err)) < 0)
		return rc;
	for (struct kap_json_iter it = kap_json_iter(map); kap_json_iter_next(&it, &k, &v);) {
		struct kap_rdma_limit *l = &r->rdma[r->n_rdma];
		char ep[JPATH_MAX];
		jkey(ep, rp, k);
		if (!(l->device = strdup(k)))
			return kap_error(err, ENOMEM, "%s", ep);
		r->n_rdma++;
		if ((rc = check_cg_name(k, 64, ep, err)) < 0)
			return rc;
		if (kap_json_type(v) != KAP_JSON_OBJECT)
			return kap_error_plain(err, EINVAL, "%s: expected object", ep);
		if ((rc = read_u32(v, ep, "hcaHandles", &l->hca_handles, err)) < 0)
			return rc;
		l->has_hca_handles = rc > 0;
		if ((rc = read_u32(v, ep, "hcaObjects", &l->hca_objects, err)) < 0)
			return rc;
		l->has_hca_objects = rc > 0;
		if (!l->has_hca_handles && !l->has_hca_objects)
			return kap_error_plain(err, EINVAL, "%s: neither hcaHandles nor hcaObjects",
					       ep);
	}
	return 0;
}

static int decode_cpu(const struct kap_json *res, const char *path, struct kap_resources *r,
		      struct kapsel_error **err)
{
	struct kap_json *c;
	char cp[JPATH_MAX];
	int rc = read_object(res, path, "cpu", &c, err);
	if (rc <= 0)
		return rc;
	jkey(cp, path, "cpu");
	if ((rc = kap_json_read_uint64(c, cp, "shares", &r->cpu_shares, err)) < 0)
		return rc;
	r->has_cpu_shares = rc > 0;
	if ((rc = kap_json_read_int64(c, cp, "quota", &r->cpu_quota, err)) < 0)
		return rc;
	r->has_cpu_quota = rc > 0;
	if ((rc = kap_json_read_uint64(c, cp, "period", &r->cpu_period, err)) < 0)
		return rc;
	r->has_cpu_period = rc > 0;
	if ((rc = kap_json_read_int64(c, cp, "realtimeRuntime", &r->cpu_rt_runtime, err)) < 0)
		return rc;
	r->has_cpu_rt_runtime = rc > 0;
	if ((rc = kap_json_read_uint64(c, cp, "realtimePeriod", &r->cpu_rt_period, err)) < 0)
		return rc;
	r->has_cpu_rt_period = rc > 0;
	if ((rc = kap_json_read_string(c, cp, "cpus", &r->cpu_cpus, err)) < 0 ||
	    (rc = kap_json_read_string(c, cp, "mems", &r->cpu_mems, err)) < 0)
		return rc;
	if ((rc = kap_json_read_int64(c, cp, "idle", &r->cpu_idle, err)) < 0)
		return rc;
	r->has_cpu_idle = rc > 0;
	return 0;
}

static int decode_throttles(const struct kap_json *blkio, const char *path, const char *key,
			    struct kap_throttle **out, size_t *n_out, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(blkio, path, key, &arr, &n, err);
	if (r <= 0)
		return r;
	if ((r = alloc_array((void **)out, n, sizeof(**out), path, key, err)) < 0)
		return r;
	*n_out = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o;
		char ep[JPATH_MAX];
		if ((r = array_object_at(arr, path, key, i, ep, &o, err)) < 0 ||
		    (r = read_required_int64(o, ep, "major", &(*out)[i].major, err)) < 0 ||
		    (r = read_required_int64(o, ep, "minor", &(*out)[i].minor, err)) < 0 ||
		    (r = read_required_uint64(o, ep, "rate", &(*out)[i].rate, err)) < 0)
			return r;
	}
	return 0;
}

static int decode_blkio(const struct kap_json *res, const char *path, struct kap_resources *r,
			struct kapsel_error **err)
{
	struct kap_json *bio, *arr;
	char bp[JPATH_MAX];
	size_t n;
	int rc = read_object(res, path, "blockIO", &bio, err);
	if (rc <= 0)
		return rc;
	jkey(bp, path, "blockIO");
	if ((rc = read_u16(bio, bp, "weight", &r->blkio_weight, err)) < 0)
		return rc;
	r->has_blkio_weight = rc > 0;
	if ((rc = read_u16(bio, bp, "leafWeight", &r->blkio_leaf_weight, err)) < 0)
		return rc;
	r->has_blkio_leaf_weight = rc > 0;
	if ((rc = read_array(bio, bp, "weightDevice", &arr, &n, err)) < 0 ||
	    (rc = alloc_array((void **)&r->blkio_weight_device, n, sizeof(*r->blkio_weight_device),
			      bp, "weightDevice", err)) < 0)
		return rc;
	r->n_blkio_weight_device = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_weight_device *wd = &r->blkio_weight_device[i];
		struct kap_json *o;
		char ep[JPATH_MAX];
		if ((rc = array_object_at(arr, bp, "weightDevice", i, ep, &o, err)) < 0 ||
		    (rc = read_required_int64(o, ep, "major", &wd->major, err)) < 0 ||
		    (rc = read_required_int64(o, ep, "minor", &wd->minor, err)) < 0)
			return rc;
		if ((rc = read_u16(o, ep, "weight", &wd->weight, err)) < 0)
			return rc;
		wd->has_weight = rc > 0;
		if ((rc = read_u16(o, ep, "leafWeight", &wd->leaf_weight, err)) < 0)
			return rc;
		wd->has_leaf_weight = rc > 0;
	}
	if ((rc = decode_throttles(bio, bp, "throttleReadBpsDevice", &r->throttle_read_bps,
				   &r->n_throttle_read_bps, err)) < 0 ||
	    (rc = decode_throttles(bio, bp, "throttleWriteBpsDevice", &r->throttle_write_bps,
				   &r->n_throttle_write_bps, err)) < 0 ||
	    (rc = decode_throttles(bio, bp, "throttleReadIOPSDevice", &r->throttle_read_iops,
				   &r->n_throttle_read_iops, err)) < 0 ||
	    (rc = decode_throttles(bio, bp, "throttleWriteIOPSDevice", &r->throttle_write_iops,
				   &r->n_throttle_write_iops, err)) < 0)
		return rc;
	return 0;
}

static int decode_hugepages(const struct kap_json *res, const char *path, struct kap_resources *r,
			    struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int rc = read_array(res, path, "hugepageLimits", &arr, &n, err);
	if (rc <= 0)
		return rc;
	if ((rc = alloc_array((void **)&r->hugepage_limits, n, sizeof(*r->hugepage_limits), path,
			      "hugepageLimits", err)) < 0)
		return rc;
	r->n_hugepage_limits = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o;
		char ep[JPATH_MAX];
		if ((rc = array_object_at(arr, path, "hugepageLimits", i, ep, &o, err)) < 0 ||
		    (rc = read_required_string(o, ep, "pageSize", &r->hugepage_limits[i].page_size,
					       err)) < 0 ||
		    (rc = read_required_uint64(o, ep, "limit", &r->hugepage_limits[i].limit, err)) <
			0)
			return rc;
	}
	return 0;
}

/* A device number in a rule: absent or -1 is the "*" wildcard. */
static int read_dev_number(const struct kap_json *o, const char *path, const char *key,
			   int64_t *out, struct kapsel_error **err)
{
	*out = -1;
	int r = kap_json_read_int64(o, path, key, out, err);
	if (r > 0 && *out < -1) {
		char b[JPATH_MAX];
		return kap_error_plain(err, ERANGE, "%s: %lld out of range", jkey(b, path, key),
				       (long long)*out);
	}
	return r;
}

static int decode_device_rules(const struct kap_json *res, const char *path,
			       struct kap_resources *r, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int rc = read_array(res, path, "devices", &arr, &n, err);
	if (rc <= 0)
		return rc;
	if ((rc = alloc_array((void **)&r->devices, n, sizeof(*r->devices), path, "devices", err)) <
	    0)
		return rc;
	r->n_devices = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_device_rule *d = &r->devices[i];
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		cleanup_free char *type = NULL, *access = NULL;
		if ((rc = array_object_at(arr, path, "devices", i, ep, &o, err)) < 0)
			return rc;
		if ((rc = kap_json_read_bool(o, ep, "allow", &d->allow, err)) < 0)
			return rc;
		if (rc == 0)
			return err_missing(err, ep, "allow");
		if ((rc = kap_json_read_string(o, ep, "type", &type, err)) < 0)
			return rc;
		/* config-linux.md#allowed-device-list: a (all), c, b; absent means "a". */
		d->type = 'a';
		if (type) {
			if (strlen(type) != 1 || !strchr("acb", type[0]))
				return kap_error_plain(err, EINVAL,
						       "%s: unknown device type \"%s\" (expected "
						       "a, c or b)",
						       jkey(b, ep, "type"), type);
			d->type = type[0];
		}
		if ((rc = read_dev_number(o, ep, "major", &d->major, err)) < 0 ||
		    (rc = read_dev_number(o, ep, "minor", &d->minor, err)) < 0 ||
		    (rc = kap_json_read_string(o, ep, "access", &access, err)) < 0)
			return rc;
		/* Absent access means all of rwm (as in runc and crun); store canonical order. */
		if (!access) {
			strcpy(d->access, "rwm");
			continue;
		}
		bool want[3] = {false, false, false};
		for (const char *a = access; *a; a++) {
			const char *p = strchr("rwm", *a);
			if (!p)
				return kap_error_plain(err, EINVAL,
						       "%s: invalid access \"%s\" (expected a "
						       "subset of \"rwm\")",
						       jkey(b, ep, "access"), access);
			want[p - "rwm"] = true;
		}
		char *w = d->access;
		for (int k = 0; k < 3; k++)
			if (want[k])
				*w++ = "rwm"[k];
		*w = '\0';
	}
	return 0;
}

static int decode_resources(const struct kap_json *obj, const char *path, struct kap_resources *r,
			    struct kapsel_error **err)
{
	struct kap_json *pids;
	char b[JPATH_MAX];
	int rc;
	if ((rc = decode_memory(obj, path, r, err)) < 0 || (rc = decode_cpu(obj, path, r, err)) < 0)
		return rc;
	if ((rc = read_object(obj, path, "pids", &pids, err)) < 0)
		return rc;
	if (rc > 0) {
		if ((rc = kap_json_read_int64(pids, jkey(b, path, "pids"), "limit", &r->pids_limit,
					      err)) < 0)
			return rc;
		r->has_pids_limit = rc > 0;
	}
	if ((rc = decode_blkio(obj, path, r, err)) < 0 ||
	    (rc = decode_hugepages(obj, path, r, err)) < 0 ||
	    (rc = decode_device_rules(obj, path, r, err)) < 0 ||
	    (rc = decode_network(obj, path, r, err)) < 0 ||
	    (rc = decode_rdma(obj, path, r, err)) < 0 ||
	    (rc = read_string_map(obj, path, "unified", &r->unified_keys, &r->unified_values,
				  &r->n_unified, err)) < 0)
		return rc;
	return 0;
}

int kap_spec_parse_resources(const struct kap_json *obj, const char *path,
			     struct kap_resources *out, struct kapsel_error **err)
{
	struct kap_resources r = {0};
	if (!path)
		path = "linux.resources";
	if (kap_json_type(obj) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object",
				       *path ? path : "resources");
	/* Decode into a local so that *out is untouched on failure (update keeps the old). */
	int rc = decode_resources(obj, path, &r, err);
	if (rc < 0) {
		kap_resources_clear(&r);
		return rc;
	}
	*out = r;
	return 0;
}

void kap_resources_clear(struct kap_resources *r)
{
	if (!r)
		return;
	free(r->cpu_cpus);
	free(r->cpu_mems);
	free(r->blkio_weight_device);
	free(r->throttle_read_bps);
	free(r->throttle_write_bps);
	free(r->throttle_read_iops);
	free(r->throttle_write_iops);
	for (size_t i = 0; i < r->n_hugepage_limits; i++)
		free(r->hugepage_limits[i].page_size);
	free(r->hugepage_limits);
	free(r->devices);
	for (size_t i = 0; i < r->n_net_priorities; i++)
		free(r->net_priorities[i].name);
	free(r->net_priorities);
	for (size_t i = 0; i < r->n_rdma; i++)
		free(r->rdma[i].device);
	free(r->rdma);
	free_string_map(r->unified_keys, r->unified_values, r->n_unified);
	memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------------------------------- */
/* linux (runtime-spec config-linux.md)                                                      */

static int decode_namespaces(const struct kap_json *lx, struct kap_spec *s,
			     struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(lx, "linux", "namespaces", &arr, &n, err);
	if (r <= 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		cleanup_free char *type = NULL, *path = NULL;
		if ((r = array_object_at(arr, "linux", "namespaces", i, ep, &o, err)) < 0 ||
		    (r = read_required_string(o, ep, "type", &type, err)) < 0 ||
		    (r = kap_json_read_string(o, ep, "path", &path, err)) < 0)
			return r;
		int t = 0;
		while (t < KAP_NS_COUNT && strcmp(type, ns_table[t].name))
			t++;
		if (t == KAP_NS_COUNT)
			return kap_error_plain(err, EINVAL, "%s: unknown namespace type \"%s\"",
					       jkey(b, ep, "type"), type);
		/* "Duplicated namespaces ... MUST generate an error" (config-linux.md#namespaces)
		 */
		if (s->namespaces[t].enabled)
			return kap_error_plain(err, EINVAL, "%s: duplicate namespace \"%s\"",
					       jkey(b, ep, "type"), type);
		s->namespaces[t].enabled = true;
		/* An empty path means "create one", as in runc. */
		if (path && *path) {
			if (path[0] != '/')
				return err_not_absolute(err, ep, "path", path);
			s->namespaces[t].path = steal_ptr(path);
		}
	}
	return 0;
}

static int decode_id_mappings(const struct kap_json *lx, const char *key,
			      struct kap_id_mapping **out, size_t *n_out, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(lx, "linux", key, &arr, &n, err);
	if (r <= 0)
		return r;
	if ((r = alloc_array((void **)out, n, sizeof(**out), "linux", key, err)) < 0)
		return r;
	*n_out = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_json *o;
		char ep[JPATH_MAX];
		if ((r = array_object_at(arr, "linux", key, i, ep, &o, err)) < 0 ||
		    (r = read_required_u32(o, ep, "containerID", &(*out)[i].container_id, err)) <
			0 ||
		    (r = read_required_u32(o, ep, "hostID", &(*out)[i].host_id, err)) < 0 ||
		    (r = read_required_u32(o, ep, "size", &(*out)[i].size, err)) < 0)
			return r;
	}
	return 0;
}

static int decode_devices(const struct kap_json *lx, struct kap_spec *s, struct kapsel_error **err)
{
	struct kap_json *arr;
	size_t n;
	int r = read_array(lx, "linux", "devices", &arr, &n, err);
	if (r <= 0)
		return r;
	if ((r = alloc_array((void **)&s->devices, n, sizeof(*s->devices), "linux", "devices",
			     err)) < 0)
		return r;
	s->n_devices = n;
	for (size_t i = 0; i < n; i++) {
		struct kap_device *d = &s->devices[i];
		struct kap_json *o;
		char ep[JPATH_MAX], b[JPATH_MAX];
		cleanup_free char *type = NULL;
		uint32_t v;
		if ((r = array_object_at(arr, "linux", "devices", i, ep, &o, err)) < 0 ||
		    (r = read_required_string(o, ep, "path", &d->path, err)) < 0)
			return r;
		if (d->path[0] != '/')
			return err_not_absolute(err, ep, "path", d->path);
		if ((r = read_required_string(o, ep, "type", &type, err)) < 0)
			return r;
		/* config-linux.md#devices: c (char), b (block), u (unbuffered char), p (FIFO). */
		if (strlen(type) != 1 || !strchr("cbup", type[0]))
			return kap_error_plain(err, EINVAL,
					       "%s: unknown device type \"%s\" (expected c, b, u "
					       "or p)",
					       jkey(b, ep, "type"), type);
		d->type = type[0];
		/* major/minor are REQUIRED for c, b and u and meaningless for p. */
		if (d->type != 'p') {
			if ((r = read_required_int64(o, ep, "major", &d->major, err)) < 0 ||
			    (r = read_required_int64(o, ep, "minor", &d->minor, err)) < 0)
				return r;
			if (d->major < 0 || d->major > UINT32_MAX)
				return kap_error_plain(err, ERANGE, "%s: %lld out of range",
						       jkey(b, ep, "major"), (long long)d->major);
			if (d->minor < 0 || d->minor > UINT32_MAX)
				return kap_error_plain(err, ERANGE, "%s: %lld out of range",
						       jkey(b, ep, "minor"), (long long)d->minor);
		}
		if ((r = read_u32(o, ep, "fileMode", &v, err)) < 0)
			return r;
		if (r > 0) {
			/* Permission bits only: the file type comes from "type". */
			if (v > 07777)
				return kap_error_plain(err, ERANGE,
						       "%s: %#o out of range (0..07777)",
						       jkey(b, ep, "fileMode"), v);
			d->has_mode = true;
			d->mode = (mode_t)v;
		}
		if ((r = read_u32(o, ep, "uid", &v, err)) < 0)
			return r;
		if ((d->has_uid = r > 0))
			d->uid = (uid_t)v;
		if ((r = read_u32(o, ep, "gid", &v, err)) < 0)
			return r;
		if ((d->has_gid = r > 0))
			d->gid = (gid_t)v;
	}
	return 0;
}

static int decode_sysctl(const struct kap_json *lx, struct kap_spec *s, struct kapsel_error **err)
{
	char **keys = NULL, **values = NULL;
	size_t n = 0;
	int r = read_string_map(lx, "linux", "sysctl", &keys, &values, &n, err);
	if (r > 0 && n > 0) {
		s->sysctls = calloc(n, sizeof(*s->sysctls));
		if (!s->sysctls)
			r = kap_error(err, ENOMEM, "linux.sysctl");
	}
	if (r > 0) {
		/* Move the strings: the map vectors are freed below without their contents. */
		for (size_t i = 0; i < n; i++) {
			s->sysctls[i].key = steal_ptr(keys[i]);
			s->sysctls[i].value = steal_ptr(values[i]);
		}
		s->n_sysctls = n;
	}
	free_string_map(keys, values, n);
	return r < 0 ? r : 0;
}

static int decode_rootfs_propagation(const struct kap_json *lx, struct kap_spec *s,
				     struct kapsel_error **err)
{
	cleanup_free char *prop = NULL;
	int r = kap_json_read_string(lx, "linux", "rootfsPropagation", &prop, err);
	if (r <= 0 || !*prop)
		return r;
	/* config-linux.md#rootfs-mount-propagation; the r* forms apply to the whole tree. */
	static const struct {
		const char *name;
		unsigned long flags;
	} props[] = {
	    {"private", MS_PRIVATE},	   {"rprivate", MS_PRIVATE | MS_REC},
	    {"slave", MS_SLAVE},	   {"rslave", MS_SLAVE | MS_REC},
	    {"shared", MS_SHARED},	   {"rshared", MS_SHARED | MS_REC},
	    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(props); i++) {
		if (!strcmp(prop, props[i].name)) {
			s->rootfs_propagation = props[i].flags;
			return 0;
		}
	}
	return kap_error_plain(err, EINVAL, "linux.rootfsPropagation: unknown propagation \"%s\"",
			       prop);
}

static int decode_time_offset(const struct kap_json *offsets, const char *key,
			      struct kap_time_offset *t, struct kapsel_error **err)
{
	struct kap_json *o;
	char tp[JPATH_MAX], b[JPATH_MAX];
	uint32_t ns = 0;
	int r = read_object(offsets, "linux.timeOffsets", key, &o, err);
	if (r <= 0)
		return r;
	jkey(tp, "linux.timeOffsets", key);
	if ((r = kap_json_read_int64(o, tp, "secs", &t->secs, err)) < 0 ||
	    (r = read_u32(o, tp, "nanosecs", &ns, err)) < 0)
		return r;
	/* /proc/PID/timens_offsets rejects nanoseconds outside [0, NSEC_PER_SEC). */
	if (ns >= 1000000000u)
		return kap_error_plain(err, ERANGE, "%s: %u out of range (0..999999999)",
				       jkey(b, tp, "nanosecs"), ns);
	t->nanosecs = ns;
	t->has = true;
	return 0;
}

static int decode_personality(const struct kap_json *lx, struct kap_spec *s,
			      struct kapsel_error **err)
{
	struct kap_json *o;
	cleanup_free char *domain = NULL;
	int r = read_object(lx, "linux", "personality", &o, err);
	if (r <= 0)
		return r;
	if ((r = read_required_string(o, "linux.personality", "domain", &domain, err)) < 0)
		return r;
	/* config-linux.md#personality: only LINUX and LINUX32 are defined; flags are unused. */
	if (!strcmp(domain, "LINUX"))
		s->personality = PER_LINUX;
	else if (!strcmp(domain, "LINUX32"))
		s->personality = PER_LINUX32;
	else
		return kap_error_plain(err, EINVAL,
				       "linux.personality.domain: unknown domain \"%s\" (expected "
				       "LINUX or LINUX32)",
				       domain);
	s->has_personality = true;
	return 0;
}

static int decode_linux(const struct kap_json *doc, struct kap_spec *s, struct kapsel_error **err)
{
	struct kap_json *lx, *res, *offsets, *seccomp;
	int r = read_object(doc, "", "linux", &lx, err);
	if (r <= 0)
		return r;
	if ((r = decode_namespaces(lx, s, err)) < 0 ||
	    (r = decode_id_mappings(lx, "uidMappings", &s->uid_mappings, &s->n_uid_mappings, err)) <
		0 ||
	    (r = decode_id_mappings(lx, "gidMappings", &s->gid_mappings, &s->n_gid_mappings, err)) <
		0 ||
	    (r = decode_devices(lx, s, err)) < 0 ||
	    (r = kap_json_read_string(lx, "linux", "cgroupsPath", &s->cgroups_path, err)) < 0)
		return r;
	if ((r = read_object(lx, "linux", "resources", &res, err)) < 0)
		return r;
	if (r > 0) {
		if ((r = kap_spec_parse_resources(res, "linux.resources", &s->resources, err)) < 0)
			return r;
		s->has_resources = true;
	}
	if ((r = decode_sysctl(lx, s, err)) < 0 ||
	    (r = kap_json_read_strv(lx, "linux", "maskedPaths", &s->masked_paths, err)) < 0 ||
	    (r = kap_json_read_strv(lx, "linux", "readonlyPaths", &s->readonly_paths, err)) < 0 ||
	    (r = decode_rootfs_propagation(lx, s, err)) < 0 ||
	    (r = kap_json_read_string(lx, "linux", "mountLabel", &s->mount_label, err)) < 0)
		return r;
	if ((r = read_object(lx, "linux", "timeOffsets", &offsets, err)) < 0)
		return r;
	if (r > 0 && ((r = decode_time_offset(offsets, "monotonic", &s->time_monotonic, err)) < 0 ||
		      (r = decode_time_offset(offsets, "boottime", &s->time_boottime, err)) < 0))
		return r;
	if ((r = decode_personality(lx, s, err)) < 0)
		return r;
	/* Kept raw: container/seccomp.c maps it onto libseccomp and reports its own paths. */
	if ((r = read_object(lx, "linux", "seccomp", &seccomp, err)) < 0)
		return r;
	if (r > 0)
		s->seccomp = kap_json_get_ref(seccomp);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The document                                                                              */

static int check_oci_version(const char *v, struct kapsel_error **err)
{
	/* Semantic version; any 1.x is ours (config.md#specification-version). */
	const char *p = v;
	while (isdigit((unsigned char)*p))
		p++;
	if (p - v != 1 || v[0] != '1' || (*p && *p != '.'))
		return kap_error_plain(err, EINVAL,
				       "ociVersion: unsupported version %s (kapsel supports 1.x)",
				       *v ? v : "\"\"");
	return 0;
}

static int decode_spec(const struct kap_json *doc, struct kap_spec *s, struct kapsel_error **err)
{
	struct kap_json *proc, *root;
	int r;
	if (kap_json_type(doc) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "config.json: expected object, got %s",
				       kap_json_type_name(kap_json_type(doc)));
	if ((r = read_required_string(doc, "", "ociVersion", &s->oci_version, err)) < 0 ||
	    (r = check_oci_version(s->oci_version, err)) < 0)
		return r;
	if ((r = read_object(doc, "", "process", &proc, err)) < 0)
		return r;
	if (r > 0 && (r = kap_spec_parse_process(proc, "process", &s->process, err)) < 0)
		return r;
	/* config.md#root: optional for VM-based runtimes, REQUIRED on Linux. */
	if ((r = read_object(doc, "", "root", &root, err)) < 0 ||
	    (r = read_required_string(root, "root", "path", &s->root_path, err)) < 0)
		return r;
	if (!*s->root_path)
		return kap_error_plain(err, EINVAL, "root.path: must not be empty");
	if ((r = kap_json_read_bool(root, "root", "readonly", &s->root_readonly, err)) < 0 ||
	    (r = kap_json_read_string(doc, "", "hostname", &s->hostname, err)) < 0 ||
	    (r = kap_json_read_string(doc, "", "domainname", &s->domainname, err)) < 0 ||
	    (r = decode_mounts(doc, s, err)) < 0 || (r = decode_hooks(doc, &s->hooks, err)) < 0 ||
	    (r = read_string_map(doc, "", "annotations", &s->annotation_keys, &s->annotation_values,
				 &s->n_annotations, err)) < 0 ||
	    (r = decode_linux(doc, s, err)) < 0)
		return r;
	return 0;
}

static int parse_named(const char *buf, size_t len, const char *what, struct kap_spec **out,
		       struct kapsel_error **err)
{
	struct kap_json *doc = NULL;
	int r = kap_json_parse(buf, len, what, &doc, err);
	if (r < 0)
		return r;
	struct kap_spec *s = calloc(1, sizeof(*s));
	if (!s) {
		kap_json_put(doc);
		return kap_error(err, ENOMEM, "%s", what);
	}
	s->json = doc;
	if ((r = decode_spec(doc, s, err)) < 0) {
		kap_spec_free(s);
		return r;
	}
	*out = s;
	return 0;
}

int kap_spec_parse(const char *buf, size_t len, struct kap_spec **out, struct kapsel_error **err)
{
	return parse_named(buf, len, "config.json", out, err);
}

int kap_spec_load(const char *bundle, struct kap_spec **out, struct kapsel_error **err)
{
	cleanup_free char *path = NULL, *buf = NULL;
	size_t len = 0;
	if (asprintf(&path, "%s/config.json", bundle && *bundle ? bundle : ".") < 0)
		return kap_error(err, ENOMEM, "load config.json");
	int r = kap_fs_read_file(AT_FDCWD, path, KAP_SPEC_MAX_SIZE, &buf, &len, err);
	if (r < 0)
		return r;
	return parse_named(buf, len, path, out, err);
}

static void free_mount(struct kap_mount *m)
{
	free(m->destination);
	free(m->type);
	free(m->source);
	free_strv(m->options);
	free(m->data);
	free(m->uid_mappings);
	free(m->gid_mappings);
}

void kap_spec_free(struct kap_spec *s)
{
	if (!s)
		return;
	free(s->oci_version);
	kap_process_free(s->process);
	free(s->root_path);
	free(s->hostname);
	free(s->domainname);
	for (size_t i = 0; i < s->n_mounts; i++)
		free_mount(&s->mounts[i]);
	free(s->mounts);
	for (int k = 0; k < KAP_HOOK_KIND_COUNT; k++) {
		for (size_t i = 0; i < s->hooks.n[k]; i++) {
			free(s->hooks.list[k][i].path);
			free_strv(s->hooks.list[k][i].args);
			free_strv(s->hooks.list[k][i].env);
		}
		free(s->hooks.list[k]);
	}
	free_string_map(s->annotation_keys, s->annotation_values, s->n_annotations);
	for (int t = 0; t < KAP_NS_COUNT; t++)
		free(s->namespaces[t].path);
	free(s->uid_mappings);
	free(s->gid_mappings);
	for (size_t i = 0; i < s->n_devices; i++)
		free(s->devices[i].path);
	free(s->devices);
	free(s->cgroups_path);
	kap_resources_clear(&s->resources);
	for (size_t i = 0; i < s->n_sysctls; i++) {
		free(s->sysctls[i].key);
		free(s->sysctls[i].value);
	}
	free(s->sysctls);
	free_strv(s->masked_paths);
	free_strv(s->readonly_paths);
	free(s->mount_label);
	kap_json_put(s->seccomp);
	kap_json_put(s->json);
	free(s);
}
