/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image config + `kapsel run` flags -> an OCI runtime config.json, with podman's defaults:
 * Entrypoint/Cmd as docker defines them (image-spec config.md#properties, docker's "CMD and
 * ENTRYPOINT interact"), Env merged by key, User resolved through the image's /etc/passwd and
 * /etc/group as runc's GetExecUser does, podman's default capabilities, mounts, masked and
 * read-only paths, the default seccomp profile, and resources from the flags.
 *
 * The image's files are hostile input: /etc/passwd and /etc/group are opened inside the
 * container's root (openat2 RESOLVE_IN_ROOT; the merged overlay of the image's layers, so
 * whiteouts, opaque directories and symlinks across layers mean what the kernel makes them
 * mean), refused unless regular files, and read with a size limit.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <kapsel/run.h>

#include "container/container.h"
#include "container/seccomp-default.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/image.h"
#include "image/runflags.h"
#include "net/net.h"
#include "oci/spec.h"

#define DEFAULT_PATH   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define ETC_FILE_LIMIT (4u << 20)
/* podman's containers.conf default pids_limit. */
#define DEFAULT_PIDS_LIMIT 2048
#define CPU_PERIOD	   100000

/* podman 4's default_capabilities (containers.conf). */
static const char *const default_caps[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE",	   "CAP_FOWNER",     "CAP_FSETID",
    "CAP_KILL",	   "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",    "CAP_SETGID",
    "CAP_SETPCAP", "CAP_SETUID",	   "CAP_SYS_CHROOT",
};

/* runtime-spec config-linux.md#masked-paths / #readonly-paths, podman's lists. */
static const char *const masked_paths[] = {
    "/proc/acpi",	 "/proc/kcore",
    "/proc/keys",	 "/proc/latency_stats",
    "/proc/timer_list",	 "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",	 "/sys/devices/virtual/powercap",
};
static const char *const readonly_paths[] = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

/* ---- small parsers (exposed for the unit tests) ---- */

int kap_bundle_parse_memory(const char *s, int64_t *out, struct kapsel_error **err)
{
	/* docker's RAMInBytes: a decimal number and an optional b/k/m/g suffix (binary). */
	if (!s || !*s || !isdigit((unsigned char)*s))
		return kap_error_plain(err, EINVAL,
				       "--memory: invalid size \"%s\" (e.g. 512m, 1g, 1048576)",
				       s ? s : "");
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return kap_error_plain(err, ERANGE, "--memory: \"%s\" is too large", s);
	unsigned shift = 0;
	if (*end) {
		switch (tolower((unsigned char)*end)) {
		case 'b':
			break;
		case 'k':
			shift = 10;
			break;
		case 'm':
			shift = 20;
			break;
		case 'g':
			shift = 30;
			break;
		default:
			return kap_error_plain(
			    err, EINVAL, "--memory: invalid size \"%s\" (suffix b, k, m or g)", s);
		}
		end++;
		/* "512mb" and "1gb" are accepted by docker too. */
		if (shift && tolower((unsigned char)*end) == 'b')
			end++;
		if (*end)
			return kap_error_plain(
			    err, EINVAL, "--memory: invalid size \"%s\" (suffix b, k, m or g)", s);
	}
	if (v > ((unsigned long long)INT64_MAX >> shift))
		return kap_error_plain(err, ERANGE, "--memory: \"%s\" is too large", s);
	v <<= shift;
	/* podman refuses less than 6 MiB: the container could not even start. */
	if (v < (6u << 20))
		return kap_error_plain(err, EINVAL, "--memory: %s is below the minimum of 6m", s);
	*out = (int64_t)v;
	return 0;
}

int kap_bundle_parse_cpus(const char *s, int64_t *quota, struct kapsel_error **err)
{
	/* Fixed point with up to five decimals: the quota in microseconds per 100 ms period. */
	const char *p = s ? s : "";
	int64_t whole = 0, frac = 0, scale = CPU_PERIOD;
	bool digits = false;
	for (; isdigit((unsigned char)*p); p++, digits = true) {
		whole = whole * 10 + (*p - '0');
		if (whole > 1 << 20)
			return kap_error_plain(err, ERANGE, "--cpus: \"%s\" is too large", s);
	}
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++, digits = true) {
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
		}
	}
	if (!digits || *p)
		return kap_error_plain(err, EINVAL, "--cpus: invalid number \"%s\" (e.g. 0.5, 2)",
				       s ? s : "");
	int64_t q = whole * CPU_PERIOD + frac;
	/* The kernel's minimum quota is 1 ms (kernel/sched/core.c min_cfs_quota_period). */
	if (q < 1000)
		return kap_error_plain(err, EINVAL, "--cpus: %s is below the minimum of 0.01", s);
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	if (online > 0 && q > (int64_t)online * CPU_PERIOD)
		return kap_error_plain(err, EINVAL,
				       "--cpus: %s is more than the %ld CPUs available", s, online);
	*quota = q;
	return 0;
}

int kap_bundle_parse_volume(const char *spec, char **host, char **ctr, bool *ro,
			    struct kapsel_error **err)
{
	cleanup_free char *copy = strdup(spec ? spec : "");
	if (!copy)
		return kap_error(err, ENOMEM, "-v");
	char *save = NULL;
	char *h = strtok_r(copy, ":", &save);
	char *c = strtok_r(NULL, ":", &save);
	char *opts = strtok_r(NULL, "", &save);
	if (!h || !c || strchr(spec, ':') == spec)
		return kap_error_plain(
		    err, EINVAL, "-v %s: expected HOST:CONTAINER[:ro|rw] (both absolute)", spec);
	if (h[0] != '/')
		return kap_error_plain(err, EINVAL, "-v %s: host path %s is not absolute", spec, h);
	if (c[0] != '/')
		return kap_error_plain(err, EINVAL, "-v %s: container path %s is not absolute",
				       spec, c);
	for (char *o = opts ? strtok_r(opts, ",", &save) : NULL; o;
	     o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "ro"))
			*ro = true;
		else if (!strcmp(o, "rw"))
			*ro = false;
		else
			return kap_error_plain(err, EINVAL,
					       "-v %s: unknown option \"%s\" (ro or rw)", spec, o);
	}
	struct stat st;
	if (stat(h, &st) < 0)
		return kap_error(err, errno, "-v %s: host path %s", spec, h);
	if (!(*host = strdup(h)) || !(*ctr = strdup(c))) {
		free(*host);
		*host = NULL;
		return kap_error(err, ENOMEM, "-v");
	}
	return 0;
}

/* ---- users and groups ---- */

void kap_exec_user_clear(struct kap_exec_user *u)
{
	free(u->groups);
	free(u->home);
	free(u->name);
	*u = (struct kap_exec_user){0};
}

/* The whole of rootfd/path (confined to the root), or "" when it does not exist. */
static int read_in_root(int rootfd, const char *path, char **out, struct kapsel_error **err)
{
	cleanup_error struct kapsel_error *e = NULL;
	/* O_NONBLOCK: a fifo planted at /etc/passwd must not hang us; S_ISREG refuses it. */
	cleanup_close int fd = kap_fs_open_in_root(rootfd, path, O_RDONLY | O_NONBLOCK, 0, &e);
	if (fd < 0 && (-fd == ENOENT || -fd == ENOTDIR)) {
		*out = strdup("");
		return *out ? 0 : kap_error(err, ENOMEM, "read %s", path);
	}
	if (fd < 0) {
		*err = steal_ptr(e);
		return fd;
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kap_error(err, errno, "image %s", path);
	if (!S_ISREG(st.st_mode))
		return kap_error_plain(err, EINVAL, "image %s: not a regular file", path);
	char fdpath[32];
	return kap_fs_read_file(AT_FDCWD, kap_fs_fd_path(fd, fdpath), ETC_FILE_LIMIT, out, NULL,
				err) < 0
		   ? kap_error_wrap(err, "image %s", path)
		   : 0;
}

/* Split "a:b:c" in place into at most max fields; returns the count. */
static size_t split_fields(char *line, char **f, size_t max)
{
	size_t n = 0;
	f[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == ':') {
			*p = '\0';
			f[n++] = p + 1;
		}
	}
	return n;
}

static bool parse_id(const char *s, uint32_t *out)
{
	if (!*s || !isdigit((unsigned char)*s))
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	/* (uid_t)-1 means "unchanged" to the kernel's set*id calls. */
	if (errno || *end || v >= UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

struct passwd_entry {
	char *name, *home;
	uint32_t uid, gid;
};

/* Find by name (when name) or by uid in an /etc/passwd text; the text is modified. */
static bool find_passwd(char *text, const char *name, uint32_t uid, struct passwd_entry *out)
{
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *f[7];
		size_t n;
		uint32_t u, g;
		if (*l == '#' || (n = split_fields(l, f, 7)) < 4)
			continue;
		if (!parse_id(f[2], &u) || !parse_id(f[3], &g))
			continue;
		if (name ? strcmp(f[0], name) != 0 : u != uid)
			continue;
		*out = (struct passwd_entry){
		    .name = f[0], .home = n >= 6 && *f[5] ? f[5] : NULL, .uid = u, .gid = g};
		return true;
	}
	return false;
}

static int add_gid(struct kap_exec_user *u, uint32_t gid)
{
	for (size_t i = 0; i < u->n_groups; i++)
		if (u->groups[i] == gid)
			return 0;
	uint32_t *ng = realloc(u->groups, (u->n_groups + 1) * sizeof(*ng));
	if (!ng)
		return -ENOMEM;
	u->groups = ng;
	u->groups[u->n_groups++] = gid;
	return 0;
}

/*
 * runc's GetExecUser semantics: "name", "uid", "name:group", "uid:gid" ... A named user must
 * exist; a numeric one need not (gid 0 then). Supplementary groups (from /etc/group membership)
 * only when the group is implicit.
 */
static int resolve_user(int rootfd, const char *spec, struct kap_exec_user *out,
			struct kapsel_error **err)
{
	cleanup_free char *copy = strdup(spec ? spec : "");
	if (!copy)
		return kap_error(err, ENOMEM, "user");
	char *user = copy, *group = strchr(copy, ':');
	if (group)
		*group++ = '\0';
	if (group && !*group)
		return kap_error_plain(err, EINVAL, "user \"%s\": empty group", spec);

	cleanup_free char *passwd = NULL, *grp = NULL;
	int r;
	if (rootfd >= 0) {
		if ((r = read_in_root(rootfd, "/etc/passwd", &passwd, err)) < 0 ||
		    (r = read_in_root(rootfd, "/etc/group", &grp, err)) < 0)
			return r;
	} else if (!(passwd = strdup("")) || !(grp = strdup(""))) {
		return kap_error(err, ENOMEM, "user");
	}

	struct passwd_entry pw = {0};
	bool found = false;
	uint32_t uid = 0, gid = 0;
	if (!*user) {
		/* "" (no User in the image, no -u): root, looked up for HOME. */
		found = find_passwd(passwd, NULL, 0, &pw);
	} else if (parse_id(user, &uid)) {
		found = find_passwd(passwd, NULL, uid, &pw);
	} else {
		found = find_passwd(passwd, user, 0, &pw);
		if (!found)
			return kap_error_plain(
			    err, ENOENT, "user \"%s\": no such user in the image's /etc/passwd",
			    user);
	}
	if (found) {
		uid = pw.uid;
		gid = pw.gid;
		if (!(out->name = strdup(pw.name)) || (pw.home && !(out->home = strdup(pw.home))))
			return kap_error(err, ENOMEM, "user");
	}

	char *save = NULL;
	bool group_found = false;
	if (group && parse_id(group, &gid))
		group_found = true;
	for (char *l = strtok_r(grp, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *f[4];
		uint32_t g;
		size_t nf;
		if (*l == '#' || (nf = split_fields(l, f, 4)) < 3 || !parse_id(f[2], &g))
			continue;
		if (group) {
			if (!group_found && !strcmp(f[0], group)) {
				gid = g;
				group_found = true;
			}
			continue;
		}
		if (!found || nf < 4)
			continue;
		char *msave = NULL;
		for (char *m = strtok_r(f[3], ",", &msave); m; m = strtok_r(NULL, ",", &msave)) {
			if (!strcmp(m, out->name) && g != gid && add_gid(out, g) < 0)
				return kap_error(err, ENOMEM, "user");
		}
	}
	if (group && !group_found)
		return kap_error_plain(
		    err, ENOENT, "group \"%s\": no such group in the image's /etc/group", group);
	out->uid = uid;
	out->gid = gid;
	return 0;
}

int kap_bundle_resolve_user(int rootfd, const char *spec, struct kap_exec_user *out,
			    struct kapsel_error **err)
{
	*out = (struct kap_exec_user){0};
	int r = resolve_user(rootfd, spec, out, err);
	if (r < 0)
		kap_exec_user_clear(out);
	return r;
}

/* ---- process.args ---- */

static int strv_push(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	nv[++*n] = NULL;
	return 0;
}

/* --entrypoint: a JSON array of strings when it starts with '[', else one program. */
static int entrypoint_args(const char *e, char ***v, size_t *n, struct kapsel_error **err)
{
	if (!*e)
		return 0; /* --entrypoint "": no entrypoint */
	if (*e != '[')
		return strv_push(v, n, e) < 0 ? kap_error(err, ENOMEM, "--entrypoint") : 0;
	cleanup_json struct kap_json *j = NULL;
	int r = kap_json_parse(e, strlen(e), "--entrypoint", &j, err);
	if (r < 0)
		return r;
	if (kap_json_type(j) != KAP_JSON_ARRAY)
		return kap_error_plain(err, EINVAL, "--entrypoint: expected a JSON array");
	for (size_t i = 0; i < kap_json_array_len(j); i++) {
		struct kap_json *s = kap_json_array_at(j, i);
		if (kap_json_type(s) != KAP_JSON_STRING)
			return kap_error_plain(err, EINVAL, "--entrypoint[%zu]: expected a string",
					       i);
		if (strv_push(v, n, kap_json_string(s)) < 0)
			return kap_error(err, ENOMEM, "--entrypoint");
	}
	return 0;
}

int kap_bundle_args(const struct kap_image_config *img, const char *entrypoint, char *const *cmd,
		    char ***out, struct kapsel_error **err)
{
	cleanup_strv char **v = NULL;
	size_t n = 0;
	int r;
	if (entrypoint) {
		if ((r = entrypoint_args(entrypoint, &v, &n, err)) < 0)
			return r;
	} else {
		for (char **p = img->entrypoint; p && *p; p++)
			if (strv_push(&v, &n, *p) < 0)
				return kap_error(err, ENOMEM, "args");
	}
	/* Arguments after IMAGE replace Cmd; a new entrypoint drops the image's Cmd (docker). */
	char *const *c = cmd && cmd[0] ? cmd : entrypoint ? NULL : img->cmd;
	for (; c && *c; c++)
		if (strv_push(&v, &n, *c) < 0)
			return kap_error(err, ENOMEM, "args");
	if (n == 0)
		return kap_error_plain(err, EINVAL,
				       "no command: the image has no Entrypoint or Cmd, give one "
				       "after the image name");
	*out = steal_ptr(v);
	return 0;
}

/* ---- env ---- */

static int env_set(char ***v, size_t *n, const char *kv)
{
	const char *eq = strchr(kv, '=');
	size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
	for (size_t i = 0; i < *n; i++) {
		if (!strncmp((*v)[i], kv, klen) && (*v)[i][klen] == '=') {
			char *s = strdup(kv);
			if (!s)
				return -ENOMEM;
			free((*v)[i]);
			(*v)[i] = s;
			return 0;
		}
	}
	return strv_push(v, n, kv);
}

static bool env_has(char **v, size_t n, const char *key)
{
	size_t klen = strlen(key);
	for (size_t i = 0; i < n; i++)
		if (!strncmp(v[i], key, klen) && v[i][klen] == '=')
			return true;
	return false;
}

int kap_bundle_env(const struct kap_image_config *img, char *const *user_env, bool tty,
		   const char *hostname, const char *home, char ***out, struct kapsel_error **err)
{
	cleanup_strv char **v = NULL;
	size_t n = 0;
	char buf[320];
	if (strv_push(&v, &n, DEFAULT_PATH) < 0)
		return kap_error(err, ENOMEM, "env");
	if (tty && env_set(&v, &n, "TERM=xterm") < 0)
		return kap_error(err, ENOMEM, "env");
	if (hostname) {
		snprintf(buf, sizeof(buf), "HOSTNAME=%s", hostname);
		if (env_set(&v, &n, buf) < 0)
			return kap_error(err, ENOMEM, "env");
	}
	for (char **p = img ? img->env : NULL; p && *p; p++) {
		if (!strchr(*p, '=') || **p == '=')
			continue; /* malformed image entries are dropped, as podman does */
		if (env_set(&v, &n, *p) < 0)
			return kap_error(err, ENOMEM, "env");
	}
	for (char *const *p = user_env; p && *p; p++) {
		const char *kv = *p;
		cleanup_free char *tmp = NULL;
		if (!*kv || *kv == '=')
			return kap_error_plain(err, EINVAL, "-e \"%s\": expected KEY=VALUE or KEY",
					       kv);
		if (!strchr(kv, '=')) {
			/* -e KEY: the value from our environment, or nothing when unset. */
			const char *val = getenv(kv);
			if (!val)
				continue;
			if (asprintf(&tmp, "%s=%s", kv, val) < 0)
				return kap_error(err, ENOMEM, "env");
			kv = tmp;
		}
		if (env_set(&v, &n, kv) < 0)
			return kap_error(err, ENOMEM, "env");
	}
	if (!env_has(v, n, "HOME")) {
		snprintf(buf, sizeof(buf), "HOME=%s", home && *home ? home : "/");
		if (strv_push(&v, &n, buf) < 0)
			return kap_error(err, ENOMEM, "env");
	}
	*out = steal_ptr(v);
	return 0;
}

/* ---- capabilities and security options ---- */

static int cap_lookup(const char *name, const char *flag, struct kapsel_error **err)
{
	char buf[64];
	if (strncasecmp(name, "CAP_", 4) != 0) {
		snprintf(buf, sizeof(buf), "CAP_%s", name);
		name = buf;
	}
	int c = kap_cap_from_name(name);
	if (c < 0)
		return kap_error_plain(err, EINVAL, "%s: unknown capability \"%s\"", flag, name);
	return c;
}

/* "Every capability" is every one we hold ourselves (podman's --privileged): root here may
 * lack some (CAP_SYS_RESOURCE on this machine), and capset cannot grant those. */
static uint64_t all_caps(void)
{
	uint64_t caps = 0;
	for (int c = 0; c <= kap_cap_last() && c < 64; c++)
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			caps |= UINT64_C(1) << c;
	return caps;
}

static bool strv_has_all(char *const *v)
{
	for (; v && *v; v++)
		if (!strcasecmp(*v, "ALL"))
			return true;
	return false;
}

/* podman: default set, ALL in --cap-add means every capability, ALL in --cap-drop none. */
int kap_bundle_caps(const struct kapsel_run_options *o, uint64_t *out, uint64_t *added,
		    struct kapsel_error **err)
{
	uint64_t caps = 0, add = 0;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(default_caps); i++)
		caps |= UINT64_C(1) << kap_cap_from_name(default_caps[i]);
	if (o->privileged || strv_has_all(o->cap_add))
		caps = all_caps();
	if (strv_has_all(o->cap_drop))
		caps = 0;
	for (char *const *p = o->cap_add; p && *p; p++) {
		if (!strcasecmp(*p, "ALL"))
			continue;
		int c = cap_lookup(*p, "--cap-add", err);
		if (c < 0)
			return c;
		caps |= UINT64_C(1) << c;
		add |= UINT64_C(1) << c;
	}
	for (char *const *p = o->cap_drop; p && *p; p++) {
		if (!strcasecmp(*p, "ALL"))
			continue;
		int c = cap_lookup(*p, "--cap-drop", err);
		if (c < 0)
			return c;
		caps &= ~(UINT64_C(1) << c);
		add &= ~(UINT64_C(1) << c);
	}
	*out = caps;
	if (added)
		*added = add;
	return 0;
}

struct security {
	bool seccomp_unconfined;
	const char *seccomp_file;
	bool no_new_privs;
	const char *apparmor;
};

static int parse_security_opts(char *const *opts, struct security *s, struct kapsel_error **err)
{
	for (char *const *p = opts; p && *p; p++) {
		const char *o = *p;
		/* podman accepts both "key=value" and the older "key:value". */
		size_t klen = strcspn(o, "=:");
		const char *val = o[klen] ? o + klen + 1 : NULL;
		if (!strncmp(o, "seccomp", klen) && klen == 7 && val) {
			if (!strcmp(val, "unconfined"))
				s->seccomp_unconfined = true;
			else if (*val)
				s->seccomp_file = val;
			else
				return kap_error_plain(err, EINVAL,
						       "--security-opt %s: expected "
						       "seccomp=unconfined|FILE",
						       o);
		} else if (!strncmp(o, "no-new-privileges", klen) && klen == 17) {
			if (!val || !strcmp(val, "true"))
				s->no_new_privs = true;
			else if (!strcmp(val, "false"))
				s->no_new_privs = false;
			else
				return kap_error_plain(
				    err, EINVAL, "--security-opt %s: expected true or false", o);
		} else if (!strncmp(o, "apparmor", klen) && klen == 8 && val && *val) {
			s->apparmor = strcmp(val, "unconfined") ? val : NULL;
		} else if (!strncmp(o, "label", klen) && klen == 5 && val &&
			   !strcmp(val, "disable")) {
			/* No SELinux labelling is done, so disabling it changes nothing. */
		} else {
			return kap_error_plain(
			    err, EINVAL,
			    "--security-opt %s: unknown option (seccomp=unconfined|FILE, "
			    "no-new-privileges, apparmor=PROFILE, label=disable)",
			    o);
		}
	}
	return 0;
}

static bool valid_hostname(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > 64 || *h == '-' || *h == '.')
		return false;
	for (; *h; h++)
		if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.')
			return false;
	return true;
}

int kap_bundle_check(const struct kapsel_run_options *o, struct kapsel_error **err)
{
	int64_t v;
	uint64_t caps;
	struct security sec = {0};
	int r;
	if (o->memory && (r = kap_bundle_parse_memory(o->memory, &v, err)) < 0)
		return r;
	if (o->cpus && (r = kap_bundle_parse_cpus(o->cpus, &v, err)) < 0)
		return r;
	for (char *const *p = o->volumes; p && *p; p++) {
		cleanup_free char *h = NULL, *c = NULL;
		bool ro = false;
		/* -v NAME:/path is a named volume (runflags.c checks it). */
		if (!kap_runflags_volume_named(*p) &&
		    (r = kap_bundle_parse_volume(*p, &h, &c, &ro, err)) < 0)
			return r;
	}
	if ((r = kap_runflags_check(o, err)) < 0)
		return r;
	if ((r = kap_bundle_caps(o, &caps, NULL, err)) < 0 ||
	    (r = parse_security_opts(o->security_opts, &sec, err)) < 0)
		return r;
	if (o->workdir && o->workdir[0] != '/')
		return kap_error_plain(err, EINVAL, "-w %s: the working directory must be absolute",
				       o->workdir);
	if (o->hostname && !valid_hostname(o->hostname))
		return kap_error_plain(err, EINVAL, "--hostname \"%s\": not a valid host name",
				       o->hostname);
	bool publishes = (o->ports && *o->ports) || o->publish_all;
	enum kap_net_mode mode =
	    kap_net_mode_of(o->net, geteuid() != 0 || kap_userns_nested(), publishes);
	bool own_net = mode == KAP_NET_NETWORK;
	if ((mode == KAP_NET_CONTAINER && !o->net[10]) || (mode == KAP_NET_NS && !o->net[3]))
		return kap_error_plain(err, EINVAL, "--net %s: expected container:NAME or ns:PATH",
				       o->net);
	/* A network's name (net/network.c checks that it exists). */
	if (own_net &&
	    (!*o->net || !isalnum((unsigned char)o->net[0]) ||
	     strspn(o->net, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
		 strlen(o->net)))
		return kap_error_plain(err, EINVAL,
				       "--net %s: expected none, host or a network name", o->net);
	const char *needs_net = o->aliases && *o->aliases ? "--network-alias"
				: o->ip			  ? "--ip"
				: o->ip6		  ? "--ip6"
				: o->mac		  ? "--mac-address"
				: o->ports && *o->ports	  ? "-p"
				: o->publish_all	  ? "-P"
							  : NULL;
	/* pasta forwards published ports too; addresses and names are a network's. */
	if (needs_net && !own_net && !(mode == KAP_NET_PASTA && publishes && needs_net[1] == 'p'))
		return kap_error_plain(err, EINVAL, "%s needs --net NETWORK (not none or host)",
				       needs_net);
	for (char *const *p = o->expose; p && *p; p++) {
		uint16_t port;
		char proto[4];
		if ((r = kap_net_parse_expose("--expose", *p, &port, proto, err)) < 0)
			return r;
	}
	for (char *const *p = o->aliases; p && *p; p++)
		if (!valid_hostname(*p) || strchr(*p, '.'))
			return kap_error_plain(
			    err, EINVAL, "--network-alias \"%s\": not a host name (one label)", *p);
	for (char *const *p = o->dns; p && *p; p++) {
		struct in_addr a;
		if (inet_pton(AF_INET, *p, &a) != 1)
			return kap_error_plain(err, EINVAL, "--dns %s: not an IPv4 address", *p);
	}
	for (char *const *p = o->add_hosts; p && *p; p++) {
		const char *colon = strchr(*p, ':');
		struct in_addr a;
		bool ok = colon && colon > *p && inet_pton(AF_INET, colon + 1, &a) == 1;
		for (const char *c = *p; ok && c < colon; c++)
			ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			     (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_';
		if (!ok)
			return kap_error_plain(err, EINVAL, "--add-host %s: expected NAME:IPv4",
					       *p);
	}
	return 0;
}

/* ---- JSON building ---- */

static struct kap_json *strv_json(char *const *v)
{
	struct kap_json *a = kap_json_new_array();
	for (; a && v && *v; v++)
		kap_json_append(a, kap_json_new_string(*v));
	return a;
}

static struct kap_json *caps_json(uint64_t mask)
{
	struct kap_json *a = kap_json_new_array();
	for (int c = 0; a && c < 64; c++)
		if (mask & (UINT64_C(1) << c) && kap_cap_name(c))
			kap_json_append(a, kap_json_new_string(kap_cap_name(c)));
	return a;
}

static struct kap_json *mount_json(const char *dest, const char *type, const char *src,
				   const char *const *opts)
{
	struct kap_json *m = kap_json_new_object();
	if (!m)
		return NULL;
	kap_json_set(m, "destination", kap_json_new_string(dest));
	kap_json_set(m, "type", kap_json_new_string(type));
	kap_json_set(m, "source", kap_json_new_string(src));
	struct kap_json *a = kap_json_new_array();
	for (; a && opts && *opts; opts++)
		kap_json_append(a, kap_json_new_string(*opts));
	kap_json_set(m, "options", a);
	return m;
}

/*
 * --privileged: every device node of the host's /dev in linux.devices, as podman lists them
 * (its GetDevices, after runc's): the directories that are mounts of their own (pts, shm,
 * mqueue) or links (fd) are skipped, and so are console and ptmx, which the container's own
 * terminal and devpts provide.
 */
static int add_host_devices(struct kap_json *devices, const char *path, int depth,
			    struct kapsel_error **err)
{
	static const char *const skip[] = {"pts",   "shm",     "fd",   "mqueue",     ".lxc",
					   ".udev", "console", "ptmx", ".lxd-mounts"};
	DIR *d = kap_fs_opendir_at(AT_FDCWD, path, O_NOFOLLOW);
	if (!d)
		return depth ? 0 : kap_error(err, errno, "--privileged: open /dev");
	struct dirent *de;
	int r = 0;
	while (r == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		bool skipped = !strcmp(n, ".") || !strcmp(n, "..");
		for (size_t i = 0; i < KAP_ARRAY_SIZE(skip) && !skipped; i++)
			skipped = !strcmp(n, skip[i]);
		struct stat st;
		if (skipped || fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		char child[PATH_MAX];
		if (snprintf(child, sizeof(child), "%s/%s", path, n) >= (int)sizeof(child))
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth < 8)
				r = add_host_devices(devices, child, depth + 1, err);
			continue;
		}
		if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
			continue;
		struct kap_json *dev = kap_json_new_object();
		if (!dev) {
			r = kap_error(err, ENOMEM, "--privileged");
			break;
		}
		kap_json_set(dev, "path", kap_json_new_string(child));
		kap_json_set(dev, "type", kap_json_new_string(S_ISCHR(st.st_mode) ? "c" : "b"));
		kap_json_set(dev, "major", kap_json_new_int64(major(st.st_rdev)));
		kap_json_set(dev, "minor", kap_json_new_int64(minor(st.st_rdev)));
		kap_json_set(dev, "fileMode", kap_json_new_int64(st.st_mode & 07777));
		kap_json_set(dev, "uid", kap_json_new_int64(st.st_uid));
		kap_json_set(dev, "gid", kap_json_new_int64(st.st_gid));
		kap_json_append(devices, dev);
	}
	closedir(d);
	return r;
}

static int add_mounts(struct kap_json *mounts, const struct kapsel_run_options *o,
		      const struct kap_bundle_env *be, struct kapsel_error **err)
{
	bool priv = o->privileged;
	const char *proc[] = {"nosuid", "noexec", "nodev", NULL};
	const char *dev[] = {"nosuid", "strictatime", "mode=755", "size=65536k", NULL};
	/* gid=5 (tty) does not exist in a rootless container, which maps only gid 0: devpts
	 * would refuse the mount (EINVAL), so the ptys get the creator's group instead. */
	const char *pts[] = {"nosuid",	    "noexec",
			     "newinstance", "ptmxmode=0666",
			     "mode=0620",   be->rootless ? NULL : "gid=5",
			     NULL};
	const char *shm[] = {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL};
	const char *mq[] = {"nosuid", "noexec", "nodev", NULL};
	const char *sys[] = {"nosuid", "noexec", "nodev", priv ? "rw" : "ro", NULL};
	const char *cg[] = {"nosuid", "noexec", "nodev", "relatime", priv ? "rw" : "ro", NULL};
	kap_json_append(mounts, mount_json("/proc", "proc", "proc", proc));
	kap_json_append(mounts, mount_json("/dev", "tmpfs", "tmpfs", dev));
	kap_json_append(mounts, mount_json("/dev/pts", "devpts", "devpts", pts));
	kap_json_append(mounts, mount_json("/dev/shm", "tmpfs", "shm", shm));
	kap_json_append(mounts, mount_json("/dev/mqueue", "mqueue", "mqueue", mq));
	bool host_net = o->net && !strcmp(o->net, "host");
	if (be->rootless && host_net) {
		/* sysfs may only be mounted by the owner of the network namespace; rootless with
		 * the host's, bind the host's /sys read-only instead (as runc's rootless spec). */
		const char *sys_bind[] = {"rbind", "rprivate", "nosuid", "noexec",
					  "nodev", "ro",       NULL};
		kap_json_append(mounts, mount_json("/sys", "bind", "/sys", sys_bind));
	} else {
		kap_json_append(mounts, mount_json("/sys", "sysfs", "sysfs", sys));
	}
	kap_json_append(mounts, mount_json("/sys/fs/cgroup", "cgroup", "cgroup", cg));
	if (o->read_only) {
		/* podman's read_only_tmpfs: scratch space where programs expect it. */
		const char *tmp[] = {"nosuid", "nodev", "mode=1777", NULL};
		const char *run[] = {"nosuid", "nodev", "mode=755", NULL};
		kap_json_append(mounts, mount_json("/tmp", "tmpfs", "tmpfs", tmp));
		kap_json_append(mounts, mount_json("/var/tmp", "tmpfs", "tmpfs", tmp));
		kap_json_append(mounts, mount_json("/run", "tmpfs", "tmpfs", run));
	}
	const char *etc_ro[] = {"rbind", "rprivate", "nosuid", "nodev", "noexec", "ro", NULL};
	if (be->hosts_file)
		kap_json_append(mounts, mount_json("/etc/hosts", "bind", be->hosts_file, etc_ro));
	if (be->hostname_file)
		kap_json_append(mounts,
				mount_json("/etc/hostname", "bind", be->hostname_file, etc_ro));
	if (be->resolv_file)
		kap_json_append(mounts,
				mount_json("/etc/resolv.conf", "bind", be->resolv_file, etc_ro));
	else if (host_net && access("/etc/resolv.conf", F_OK) == 0)
		kap_json_append(mounts,
				mount_json("/etc/resolv.conf", "bind", "/etc/resolv.conf", etc_ro));
	for (char *const *p = o->volumes; p && *p; p++) {
		cleanup_free char *h = NULL, *c = NULL;
		bool ro = false;
		if (kap_runflags_volume_named(*p))
			continue;
		int r = kap_bundle_parse_volume(*p, &h, &c, &ro, err);
		if (r < 0)
			return r;
		const char *bind[] = {"rbind", "rprivate", ro ? "ro" : "rw", NULL};
		kap_json_append(mounts, mount_json(c, "bind", h, bind));
	}
	/* --tmpfs, --mount, named volumes and --init's reaper. */
	return kap_runflags_add_mounts(mounts, o, be->volumes_dir, be->init_path, be->rootless,
				       err);
}

static struct kap_json *str_list_json(const char *const *v, size_t n)
{
	struct kap_json *a = kap_json_new_array();
	for (size_t i = 0; a && i < n; i++)
		kap_json_append(a, kap_json_new_string(v[i]));
	return a;
}

static int add_linux(struct kap_json *root, const struct kapsel_run_options *o,
		     const struct kap_bundle_env *be, uint64_t bounding, const struct security *sec,
		     struct kapsel_error **err)
{
	struct kap_json *lx = kap_json_new_object();
	if (!lx)
		return kap_error(err, ENOMEM, "config.json");
	kap_json_set(root, "linux", lx);

	/* config-linux.md#namespaces: a new network namespace holds only lo. */
	struct kap_json *ns = kap_json_new_array();
	static const char *const types[] = {"pid", "ipc", "uts", "mount", "cgroup", "network"};
	bool host_net = o->net && !strcmp(o->net, "host");
	for (size_t i = 0; i < KAP_ARRAY_SIZE(types); i++) {
		if (host_net && !strcmp(types[i], "network"))
			continue;
		struct kap_json *t = kap_json_new_object();
		kap_json_set(t, "type", kap_json_new_string(types[i]));
		/* The namespace kapsel made and wired up before the container (as podman). */
		if (be->netns_path && !strcmp(types[i], "network"))
			kap_json_set(t, "path", kap_json_new_string(be->netns_path));
		kap_json_append(ns, t);
	}
	kap_json_set(lx, "namespaces", ns);

	struct kap_json *res = kap_json_new_object();
	if (!be->rootless) {
		/* Deny all, then the runtime adds the default devices (runtime-spec
		 * config-linux.md#default-devices) as runc and crun do; --privileged allows every
		 * device. Rootless has no rules: it cannot make device nodes at all, the ones it
		 * gets are the host's bound in, and a device program needs host privilege. */
		struct kap_json *devs = kap_json_new_array();
		struct kap_json *rule = kap_json_new_object();
		kap_json_set(rule, "allow", kap_json_new_bool(o->privileged));
		kap_json_set(rule, "access", kap_json_new_string("rwm"));
		kap_json_append(devs, rule);
		kap_json_set(res, "devices", devs);
	}
	struct kap_json *nodes = NULL;
	if (!be->rootless && (o->privileged || (o->devices && *o->devices))) {
		if (!(nodes = kap_json_new_array()))
			return kap_error(err, ENOMEM, "linux.devices");
		kap_json_set(lx, "devices", nodes);
	}
	if (o->privileged && !be->rootless) {
		int rr = add_host_devices(nodes, "/dev", 0, err);
		if (rr < 0)
			return rr;
	}
	/* --device: the node, and a rule allowing it (rootless: a bind mount, see
	 * kap_runflags_add_mounts). */
	if (nodes) {
		int rr = kap_runflags_add_devices(nodes, kap_json_get(res, "devices"), o, err);
		if (rr < 0)
			return rr;
	}
	int64_t v;
	int r;
	if (o->memory) {
		if ((r = kap_bundle_parse_memory(o->memory, &v, err)) < 0)
			return r;
		struct kap_json *mem = kap_json_new_object();
		kap_json_set(mem, "limit", kap_json_new_int64(v));
		kap_json_set(res, "memory", mem);
	}
	if (o->cpus) {
		if ((r = kap_bundle_parse_cpus(o->cpus, &v, err)) < 0)
			return r;
		struct kap_json *cpu = kap_json_new_object();
		kap_json_set(cpu, "quota", kap_json_new_int64(v));
		kap_json_set(cpu, "period", kap_json_new_int64(CPU_PERIOD));
		kap_json_set(res, "cpu", cpu);
	}
	int64_t pids = o->has_pids_limit ? o->pids_limit : DEFAULT_PIDS_LIMIT;
	if (pids > 0) {
		struct kap_json *p = kap_json_new_object();
		kap_json_set(p, "limit", kap_json_new_int64(pids));
		kap_json_set(res, "pids", p);
	}
	kap_json_set(lx, "resources", res);

	if (!o->privileged) {
		kap_json_set(lx, "maskedPaths",
			     str_list_json(masked_paths, KAP_ARRAY_SIZE(masked_paths)));
		kap_json_set(lx, "readonlyPaths",
			     str_list_json(readonly_paths, KAP_ARRAY_SIZE(readonly_paths)));
	}

	/* podman: --privileged also turns seccomp off. */
	if (sec->seccomp_file) {
		cleanup_json struct kap_json *prof = NULL;
		if ((r = kap_json_parse_file(sec->seccomp_file, &prof, err)) < 0)
			return kap_error_wrap(err, "--security-opt seccomp=%s", sec->seccomp_file);
		if (kap_json_type(prof) != KAP_JSON_OBJECT)
			return kap_error_plain(err, EINVAL,
					       "--security-opt seccomp=%s: expected a JSON object",
					       sec->seccomp_file);
		kap_json_set(lx, "seccomp", kap_json_get_ref(prof));
	} else if (!sec->seccomp_unconfined && !o->privileged) {
		struct kap_json *prof = kap_seccomp_default_profile(bounding);
		if (!prof)
			return kap_error(err, ENOMEM, "seccomp profile");
		kap_json_set(lx, "seccomp", prof);
	}
	return 0;
}

static int add_process(struct kap_json *root, const struct kap_image_config *img,
		       const struct kapsel_run_options *o, const struct kap_bundle_env *be,
		       int rootfd, uint64_t bounding, uint64_t added, const struct security *sec,
		       struct kapsel_error **err)
{
	struct kap_json *p = kap_json_new_object();
	if (!p)
		return kap_error(err, ENOMEM, "config.json");
	kap_json_set(root, "process", p);
	kap_json_set(p, "terminal", kap_json_new_bool(o->tty));
	struct winsize ws;
	if (o->tty && !o->detach &&
	    (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 ||
	     ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) &&
	    ws.ws_row && ws.ws_col) {
		/*
		 * The pty gets our terminal's size before the process runs (config.md#process
		 * consoleSize): a program that asks at once must not see 0x0, which it would if
		 * only the relay set it once the container was already running.
		 */
		struct kap_json *cs = kap_json_new_object();
		if (!cs)
			return kap_error(err, ENOMEM, "config.json");
		kap_json_set(p, "consoleSize", cs);
		kap_json_set(cs, "height", kap_json_new_int64(ws.ws_row));
		kap_json_set(cs, "width", kap_json_new_int64(ws.ws_col));
	}

	struct kap_exec_user u = {0};
	const char *spec = o->user ? o->user : img->user ? img->user : "";
	int r = kap_bundle_resolve_user(rootfd, spec, &u, err);
	if (r < 0)
		return kap_error_wrap(err, "%s", o->user ? "-u" : "image config User");
	bool ranges = be->rootless && be->uid_count > 1;
	if (be->rootless && !ranges && (u.uid != 0 || u.gid != 0)) {
		r = kap_error_plain(
		    err, EINVAL,
		    "%s \"%s\": user %" PRIu32 ":%" PRIu32
		    " does not exist in a rootless container, which maps only "
		    "root (0:0) to your user (no /etc/subuid and /etc/subgid ranges)",
		    o->user ? "-u" : "image config User", spec, u.uid, u.gid);
		kap_exec_user_clear(&u);
		return r;
	}
	if (ranges && (u.uid >= be->uid_count || u.gid >= be->gid_count)) {
		r = kap_error_plain(err, EINVAL,
				    "%s \"%s\": user %" PRIu32 ":%" PRIu32
				    " does not exist in this rootless container, which maps uids "
				    "0-%" PRIu32 " and gids 0-%" PRIu32
				    " (your /etc/subuid and /etc/subgid ranges)",
				    o->user ? "-u" : "image config User", spec, u.uid, u.gid,
				    be->uid_count - 1, be->gid_count - 1);
		kap_exec_user_clear(&u);
		return r;
	}
	/*
	 * Rootless with only the user's own id, setgroups(2) is denied (user_namespaces(7)): the
	 * groups stay the user's. newgidmap allows it with ranges; groups beyond them go.
	 */
	if (be->rootless && !ranges)
		u.n_groups = 0;
	for (size_t i = 0; ranges && i < u.n_groups;)
		if (u.groups[i] >= be->gid_count)
			u.groups[i] = u.groups[--u.n_groups];
		else
			i++;
	struct kap_json *uj = kap_json_new_object();
	kap_json_set(uj, "uid", kap_json_new_int64(u.uid));
	kap_json_set(uj, "gid", kap_json_new_int64(u.gid));
	if (u.n_groups) {
		struct kap_json *g = kap_json_new_array();
		for (size_t i = 0; i < u.n_groups; i++)
			kap_json_append(g, kap_json_new_int64(u.groups[i]));
		kap_json_set(uj, "additionalGids", g);
	}
	kap_json_set(p, "user", uj);

	cleanup_strv char **args = NULL, **env = NULL, **user_env = NULL;
	r = kap_bundle_args(img, o->entrypoint, o->cmd, &args, err);
	/* --init: the reaper runs the command as its child. */
	if (r == 0 && be->init_path)
		r = kap_runflags_init_args(&args, err);
	/* --env-file's entries, then --env's. */
	if (r == 0)
		r = kap_runflags_env(o, &user_env, err);
	if (r == 0)
		r = kap_bundle_env(img, user_env, o->tty, be->hostname, u.home, &env, err);
	uint32_t uid = u.uid;
	kap_exec_user_clear(&u);
	if (r < 0)
		return r;
	kap_json_set(p, "args", strv_json(args));
	kap_json_set(p, "env", strv_json(env));
	const char *cwd = o->workdir ? o->workdir : img->working_dir;
	cleanup_free char *abs = NULL;
	if (!cwd || !*cwd)
		cwd = "/";
	else if (*cwd != '/') {
		/* image-spec leaves a relative WorkingDir undefined; docker makes it absolute. */
		if (asprintf(&abs, "/%s", cwd) < 0)
			return kap_error(err, ENOMEM, "cwd");
		cwd = abs;
	}
	kap_json_set(p, "cwd", kap_json_new_string(cwd));

	/* podman: a non-root user gets the bounding set only, plus what --cap-add names. */
	struct kap_json *caps = kap_json_new_object();
	uint64_t eff = uid == 0 ? bounding : added;
	kap_json_set(caps, "bounding", caps_json(bounding));
	kap_json_set(caps, "effective", caps_json(eff));
	kap_json_set(caps, "permitted", caps_json(eff));
	if (uid != 0 && eff) {
		kap_json_set(caps, "inheritable", caps_json(eff));
		kap_json_set(caps, "ambient", caps_json(eff));
	}
	kap_json_set(p, "capabilities", caps);
	kap_json_set(p, "noNewPrivileges", kap_json_new_bool(sec->no_new_privs));
	if ((r = kap_runflags_add_rlimits(p, o, err)) < 0)
		return r;
	if (sec->apparmor)
		kap_json_set(p, "apparmorProfile", kap_json_new_string(sec->apparmor));
	return 0;
}

int kap_bundle_config(const struct kap_image_config *img, const struct kapsel_run_options *o,
		      const struct kap_bundle_env *be, int rootfd, struct kap_json **out,
		      struct kapsel_error **err)
{
	int r = kap_bundle_check(o, err);
	if (r < 0)
		return r;
	struct security sec = {0};
	uint64_t bounding, added;
	if ((r = parse_security_opts(o->security_opts, &sec, err)) < 0 ||
	    (r = kap_bundle_caps(o, &bounding, &added, err)) < 0)
		return r;

	cleanup_json struct kap_json *root = kap_json_new_object();
	if (!root)
		return kap_error(err, ENOMEM, "config.json");
	kap_json_set(root, "ociVersion", kap_json_new_string("1.0.2"));
	if ((r = add_process(root, img, o, be, rootfd, bounding, added, &sec, err)) < 0)
		return r;
	struct kap_json *rj = kap_json_new_object();
	kap_json_set(rj, "path", kap_json_new_string(be->rootfs));
	kap_json_set(rj, "readonly", kap_json_new_bool(o->read_only));
	kap_json_set(root, "root", rj);
	if (be->hostname)
		kap_json_set(root, "hostname", kap_json_new_string(be->hostname));

	struct kap_json *mounts = kap_json_new_array();
	kap_json_set(root, "mounts", mounts);
	if ((r = add_mounts(mounts, o, be, err)) < 0 ||
	    (r = add_linux(root, o, be, bounding, &sec, err)) < 0)
		return r;

	struct kap_json *ann = kap_json_new_object();
	if (be->image_name)
		kap_json_set(ann, "io.kapsel.image", kap_json_new_string(be->image_name));
	if (img->exposed_ports && img->exposed_ports[0]) {
		/* Recorded for tools (and a later port-forwarding engine); nothing is published. */
		size_t len = 1;
		for (char **p = img->exposed_ports; *p; p++)
			len += strlen(*p) + 1;
		cleanup_free char *ports = calloc(1, len);
		if (!ports)
			return kap_error(err, ENOMEM, "annotations");
		for (char **p = img->exposed_ports; *p; p++) {
			if (p != img->exposed_ports)
				strcat(ports, ",");
			strcat(ports, *p);
		}
		kap_json_set(ann, "io.kapsel.image.exposedPorts", kap_json_new_string(ports));
	}
	if (img->stop_signal)
		kap_json_set(ann, "io.kapsel.image.stopSignal",
			     kap_json_new_string(img->stop_signal));
	kap_json_set(root, "annotations", ann);
	*out = steal_ptr(root);
	return 0;
}
