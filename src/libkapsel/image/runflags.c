/* SPDX-License-Identifier: Apache-2.0 */
/*
 * podman's `run` flags for what surrounds the process, each turned into config.json:
 *
 *   --env-file FILE       K=V lines -> process.env, before --env (podman-run(1) --env-file)
 *   --ulimit N=S[:H]      process.rlimits (runtime-spec config.md#posix-process)
 *   --device H[:C][:rwm]  linux.devices and an allow rule in linux.resources.devices
 *                         (config-linux.md#devices, #allowed-device-list)
 *   --tmpfs, --mount, -v NAME:/path
 *                         mounts (config.md#mounts); a named volume is a bind of
 *                         <store>/volumes/NAME/_data (volume.c)
 *   --init                kapsel-init bind-mounted read-only at /run/kapsel-init and put in
 *                         front of the command (as podman's catatonit at /run/podman-init)
 *
 * Every value is checked by kap_runflags_check before anything exists on disk, and every error
 * names the flag and the value that is wrong.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "image/image.h"
#include "image/runflags.h"

static int strv_add(char ***v, size_t *n, const char *s)
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

/* ---- --env-file ---- */

/*
 * podman's format (pkg/env ParseFile): leading blanks are ignored, "#" starts a comment line,
 * blank lines are skipped, K=V is taken literally (no quotes, no expansion), K alone takes the
 * value from our environment. A name must be non-empty and free of blanks.
 */
static int env_file_read(const char *path, char ***v, size_t *n, struct kapsel_error **err)
{
	cleanup_fclose FILE *f = fopen(path, "re");
	if (!f)
		return kap_error(err, errno, "--env-file %s", path);
	cleanup_free char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (strlen(line) != (size_t)len)
			return kap_error_plain(err, EINVAL, "--env-file %s:%u: a NUL byte", path,
					       lineno);
		const char *s = line + strspn(line, " \t");
		if (!*s || *s == '#')
			continue;
		size_t klen = strcspn(s, "=");
		if (klen == 0)
			return kap_error_plain(err, EINVAL,
					       "--env-file %s:%u: \"%s\": no variable name", path,
					       lineno, s);
		for (size_t i = 0; i < klen; i++)
			if (isspace((unsigned char)s[i]))
				return kap_error_plain(err, EINVAL,
						       "--env-file %s:%u: variable name \"%.*s\" "
						       "contains whitespace",
						       path, lineno, (int)klen, s);
		if (strv_add(v, n, s) < 0)
			return kap_error(err, ENOMEM, "--env-file %s", path);
	}
	if (ferror(f))
		return kap_error(err, errno ? errno : EIO, "--env-file %s: read", path);
	return 0;
}

int kap_runflags_env(const struct kapsel_run_options *o, char ***out, struct kapsel_error **err)
{
	cleanup_strv char **v = NULL;
	size_t n = 0;
	int r;
	for (char *const *p = o->env_files; p && *p; p++)
		if ((r = env_file_read(*p, &v, &n, err)) < 0)
			return r;
	/* --env after the files: podman lets it override them. */
	for (char *const *p = o->env; p && *p; p++)
		if (strv_add(&v, &n, *p) < 0)
			return kap_error(err, ENOMEM, "env");
	if (!v && !(v = calloc(1, sizeof(char *))))
		return kap_error(err, ENOMEM, "env");
	*out = steal_ptr(v);
	return 0;
}

/* ---- --ulimit ---- */

/* podman's names (docker's go-units ulimit table), as setrlimit(2) knows them. */
static const struct {
	const char *name, *type;
} ulimits[] = {
    {"as", "RLIMIT_AS"},
    {"core", "RLIMIT_CORE"},
    {"cpu", "RLIMIT_CPU"},
    {"data", "RLIMIT_DATA"},
    {"fsize", "RLIMIT_FSIZE"},
    {"locks", "RLIMIT_LOCKS"},
    {"memlock", "RLIMIT_MEMLOCK"},
    {"msgqueue", "RLIMIT_MSGQUEUE"},
    {"nice", "RLIMIT_NICE"},
    {"nofile", "RLIMIT_NOFILE"},
    {"nproc", "RLIMIT_NPROC"},
    {"rss", "RLIMIT_RSS"},
    {"rtprio", "RLIMIT_RTPRIO"},
    {"rttime", "RLIMIT_RTTIME"},
    {"sigpending", "RLIMIT_SIGPENDING"},
    {"stack", "RLIMIT_STACK"},
};

/* A limit value: decimal, or -1 / "unlimited" for RLIM_INFINITY. */
static bool limit_value(const char *s, size_t len, uint64_t *out)
{
	char buf[32];
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (!strcmp(buf, "unlimited") || !strcmp(buf, "-1")) {
		*out = UINT64_MAX;
		return true;
	}
	if (!isdigit((unsigned char)buf[0]))
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

int kap_runflags_parse_ulimit(const char *spec, const char **type, uint64_t *soft, uint64_t *hard,
			      struct kapsel_error **err)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec)
		return kap_error_plain(err, EINVAL, "--ulimit %s: expected NAME=SOFT[:HARD]", spec);
	size_t nlen = (size_t)(eq - spec);
	*type = NULL;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(ulimits); i++)
		if (strlen(ulimits[i].name) == nlen && !strncmp(spec, ulimits[i].name, nlen))
			*type = ulimits[i].type;
	if (!*type)
		return kap_error_plain(err, EINVAL,
				       "--ulimit %s: unknown limit \"%.*s\" (as, core, cpu, data, "
				       "fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, "
				       "rtprio, rttime, sigpending, stack)",
				       spec, (int)nlen, spec);
	const char *v = eq + 1;
	const char *colon = strchr(v, ':');
	size_t slen = colon ? (size_t)(colon - v) : strlen(v);
	if (!limit_value(v, slen, soft) ||
	    (colon && !limit_value(colon + 1, strlen(colon + 1), hard)))
		return kap_error_plain(err, EINVAL,
				       "--ulimit %s: expected a number or \"unlimited\" for %s",
				       spec, colon ? "SOFT:HARD" : "SOFT");
	/* podman: a soft limit alone is the hard one too. */
	if (!colon)
		*hard = *soft;
	if (*soft > *hard)
		return kap_error_plain(err, EINVAL,
				       "--ulimit %s: the soft limit is above the hard limit", spec);
	return 0;
}

int kap_runflags_add_rlimits(struct kap_json *process, const struct kapsel_run_options *o,
			     struct kapsel_error **err)
{
	if (!o->ulimits || !*o->ulimits)
		return 0;
	struct kap_json *arr = kap_json_new_array();
	if (!arr)
		return kap_error(err, ENOMEM, "process.rlimits");
	kap_json_set(process, "rlimits", arr);
	for (char *const *p = o->ulimits; *p; p++) {
		const char *type;
		uint64_t soft, hard;
		int r = kap_runflags_parse_ulimit(*p, &type, &soft, &hard, err);
		if (r < 0)
			return r;
		struct kap_json *l = kap_json_new_object();
		if (!l)
			return kap_error(err, ENOMEM, "process.rlimits");
		kap_json_set(l, "type", kap_json_new_string(type));
		kap_json_set(l, "soft", kap_json_new_uint64(soft));
		kap_json_set(l, "hard", kap_json_new_uint64(hard));
		kap_json_append(arr, l);
	}
	return 0;
}

static int check_ulimits(char *const *v, struct kapsel_error **err)
{
	for (char *const *p = v; p && *p; p++) {
		const char *type, *other;
		uint64_t s, h;
		int r = kap_runflags_parse_ulimit(*p, &type, &s, &h, err);
		if (r < 0)
			return r;
		/* config.md#posix-process: a duplicate type is an error for the runtime. */
		for (char *const *q = v; q < p; q++)
			if (kap_runflags_parse_ulimit(*q, &other, &s, &h, NULL) == 0 &&
			    !strcmp(other, type))
				return kap_error_plain(err, EINVAL,
						       "--ulimit %s: %.*s is given twice", *p,
						       (int)strcspn(*p, "="), *p);
	}
	return 0;
}

/* ---- --device ---- */

/* Absolute, and no ".." component: a destination must say plainly where it goes. */
static bool good_dst(const char *p)
{
	if (p[0] != '/')
		return false;
	for (const char *c = p; (c = strstr(c, "..")); c += 2)
		if ((c == p || c[-1] == '/') && (c[2] == '/' || !c[2]))
			return false;
	return true;
}

struct device {
	char host[PATH_MAX], ctr[PATH_MAX];
	char access[4];
	struct stat st;
};

static bool is_access(const char *s)
{
	if (!*s || strlen(s) > 3)
		return false;
	for (const char *c = s; *c; c++)
		if (!strchr("rwm", *c) || strchr(c + 1, *c))
			return false;
	return true;
}

/* podman's HOST[:CONTAINER][:PERMISSIONS], where a second part made of r, w, m is the
 * permissions (pkg/specgen ParseDevice). */
static int parse_device(const char *spec, struct device *d, struct kapsel_error **err)
{
	char copy[2 * PATH_MAX + 8];
	if (snprintf(copy, sizeof(copy), "%s", spec) >= (int)sizeof(copy))
		return kap_error_plain(err, ENAMETOOLONG, "--device %.64s...: too long", spec);
	char *parts[4] = {0};
	size_t n = 0;
	for (char *save = NULL, *t = strtok_r(copy, ":", &save); t; t = strtok_r(NULL, ":", &save))
		if (n < KAP_ARRAY_SIZE(parts))
			parts[n++] = t;
	if (n == 0 || n > 3 || spec[0] == ':' || strstr(spec, "::") ||
	    spec[strlen(spec) - 1] == ':')
		return kap_error_plain(err, EINVAL, "--device %s: expected HOST[:CONTAINER][:rwm]",
				       spec);
	const char *ctr = parts[0], *acc = "rwm";
	if (n == 2 && is_access(parts[1]))
		acc = parts[1];
	else if (n >= 2)
		ctr = parts[1];
	if (n == 3)
		acc = parts[2];
	if (!is_access(acc))
		return kap_error_plain(err, EINVAL,
				       "--device %s: permissions \"%s\": expected some of r, w, m",
				       spec, acc);
	if (parts[0][0] != '/' || !good_dst(ctr))
		return kap_error_plain(err, EINVAL,
				       "--device %s: %s is not an absolute path without \"..\"",
				       spec, parts[0][0] != '/' ? parts[0] : ctr);
	snprintf(d->host, sizeof(d->host), "%s", parts[0]);
	snprintf(d->ctr, sizeof(d->ctr), "%s", ctr);
	snprintf(d->access, sizeof(d->access), "%s", acc);
	/* Follows links: /dev/disk/by-id/... name the node they point at. */
	if (stat(d->host, &d->st) < 0)
		return kap_error(err, errno, "--device %s: %s", spec, d->host);
	if (!S_ISCHR(d->st.st_mode) && !S_ISBLK(d->st.st_mode))
		return kap_error_plain(err, EINVAL, "--device %s: %s is not a device node", spec,
				       d->host);
	return 0;
}

static bool has_device_path(const struct kap_json *devices, const char *path)
{
	for (size_t i = 0; i < kap_json_array_len(devices); i++) {
		const char *p =
		    kap_json_string(kap_json_get(kap_json_array_at(devices, i), "path"));
		if (p && !strcmp(p, path))
			return true;
	}
	return false;
}

int kap_runflags_add_devices(struct kap_json *devices, struct kap_json *rules,
			     const struct kapsel_run_options *o, struct kapsel_error **err)
{
	for (char *const *p = o->devices; p && *p; p++) {
		struct device d;
		int r = parse_device(*p, &d, err);
		if (r < 0)
			return r;
		const char *type = S_ISCHR(d.st.st_mode) ? "c" : "b";
		/* --privileged already lists every host node under its own path. */
		if (!has_device_path(devices, d.ctr)) {
			struct kap_json *dev = kap_json_new_object();
			if (!dev)
				return kap_error(err, ENOMEM, "--device");
			kap_json_set(dev, "path", kap_json_new_string(d.ctr));
			kap_json_set(dev, "type", kap_json_new_string(type));
			kap_json_set(dev, "major", kap_json_new_int64(major(d.st.st_rdev)));
			kap_json_set(dev, "minor", kap_json_new_int64(minor(d.st.st_rdev)));
			kap_json_set(dev, "fileMode", kap_json_new_int64(d.st.st_mode & 07777));
			kap_json_set(dev, "uid", kap_json_new_int64(d.st.st_uid));
			kap_json_set(dev, "gid", kap_json_new_int64(d.st.st_gid));
			kap_json_append(devices, dev);
		}
		if (!rules)
			continue;
		/* After the deny-all rule: the device cgroup takes the last match. */
		struct kap_json *rule = kap_json_new_object();
		if (!rule)
			return kap_error(err, ENOMEM, "--device");
		kap_json_set(rule, "allow", kap_json_new_bool(true));
		kap_json_set(rule, "type", kap_json_new_string(type));
		kap_json_set(rule, "major", kap_json_new_int64(major(d.st.st_rdev)));
		kap_json_set(rule, "minor", kap_json_new_int64(minor(d.st.st_rdev)));
		kap_json_set(rule, "access", kap_json_new_string(d.access));
		kap_json_append(rules, rule);
	}
	return 0;
}

/* ---- --tmpfs, --mount, -v NAME:/path ---- */

void kap_run_mounts_free(struct kap_run_mount *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].src);
		free(m[i].dst);
		free(m[i].opts);
		free(m[i].propagation);
	}
	free(m);
}

static void run_mount_clear(struct kap_run_mount *m)
{
	free(m->src);
	free(m->dst);
	free(m->opts);
	free(m->propagation);
	*m = (struct kap_run_mount){0};
}

/* tmpfs(5) options (and the generic mount flags) a --tmpfs may carry. */
static bool tmpfs_option(const char *o)
{
	static const char *const with_value[] = {
	    "size=", "mode=", "uid=", "gid=", "nr_inodes=", "nr_blocks=", "huge=", "mpol="};
	static const char *const flags[] = {
	    "ro",	"rw",	 "exec",    "noexec",	 "suid",       "nosuid",      "dev",
	    "nodev",	"atime", "noatime", "relatime",	 "norelatime", "strictatime", "nodiratime",
	    "diratime", "sync",	 "async",   "tmpcopyup", "notmpcopyup"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(with_value); i++)
		if (!strncmp(o, with_value[i], strlen(with_value[i])) && o[strlen(with_value[i])])
			return true;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(flags); i++)
		if (!strcmp(o, flags[i]))
			return true;
	return false;
}

int kap_runflags_parse_tmpfs(const char *spec, struct kap_run_mount *m, struct kapsel_error **err)
{
	*m = (struct kap_run_mount){.type = KAP_RUN_TMPFS};
	const char *colon = strchr(spec, ':');
	size_t dlen = colon ? (size_t)(colon - spec) : strlen(spec);
	if (!(m->dst = strndup(spec, dlen)))
		return kap_error(err, ENOMEM, "--tmpfs");
	if (!good_dst(m->dst)) {
		run_mount_clear(m);
		return kap_error_plain(
		    err, EINVAL, "--tmpfs %s: the path must be absolute, without \"..\"", spec);
	}
	if (colon && colon[1]) {
		cleanup_free char *copy = strdup(colon + 1);
		if (!copy || !(m->opts = strdup(colon + 1))) {
			run_mount_clear(m);
			return kap_error(err, ENOMEM, "--tmpfs");
		}
		for (char *save = NULL, *o = strtok_r(copy, ",", &save); o;
		     o = strtok_r(NULL, ",", &save)) {
			if (!tmpfs_option(o)) {
				int r = kap_error_plain(
				    err, EINVAL, "--tmpfs %s: unknown option \"%s\"", spec, o);
				run_mount_clear(m);
				return r;
			}
		}
	}
	return 0;
}

/* "true"/"false" for a boolean key given as key=value; a bare key is true. */
static int mount_bool(const char *spec, const char *key, const char *val, bool *out,
		      struct kapsel_error **err)
{
	if (!val || !strcmp(val, "true") || !strcmp(val, "1"))
		*out = true;
	else if (!strcmp(val, "false") || !strcmp(val, "0"))
		*out = false;
	else
		return kap_error_plain(err, EINVAL, "--mount %s: %s=%s: expected true or false",
				       spec, key, val);
	return 0;
}

static int set_str(char **field, const char *val, const char *spec, const char *key,
		   struct kapsel_error **err)
{
	if (!val || !*val)
		return kap_error_plain(err, EINVAL, "--mount %s: %s needs a value", spec, key);
	free(*field);
	if (!(*field = strdup(val)))
		return kap_error(err, ENOMEM, "--mount");
	return 0;
}

/* tmpfs(5): size in bytes with an optional k, m, g or a % of RAM; mode in octal. */
static int tmpfs_value(const char *spec, const char *k, const char *val, bool size,
		       struct kapsel_error **err)
{
	char *end = NULL;
	bool ok = val && isdigit((unsigned char)*val);
	if (ok && size) {
		(void)strtoull(val, &end, 10);
		ok = !*end || (strchr("kKmMgG%", *end) && !end[1]);
	} else if (ok) {
		(void)strtoul(val, &end, 8);
		ok = !*end;
	}
	if (!ok)
		return kap_error_plain(err, EINVAL, "--mount %s: %s=%s: expected %s", spec, k,
				       val ? val : "",
				       size ? "a size (64m, 1g, ...)" : "an octal mode");
	return 0;
}

/*
 * podman's --mount: type=bind|tmpfs|volume and comma-separated KEY[=VALUE] options
 * (podman-run(1) --mount). Each key is accepted only for the types it belongs to.
 */
static int parse_mount(const char *spec, struct kap_run_mount *m, struct kapsel_error **err)
{
	cleanup_free char *copy = strdup(spec);
	if (!copy)
		return kap_error(err, ENOMEM, "--mount");
	/* The type first: it decides what the other keys may be. */
	const char *type = NULL;
	for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save))
		if (!strncmp(kv, "type=", 5))
			type = spec + (kv - copy) + 5;
	size_t tlen = type ? strcspn(type, ",") : 0;
	if (!type)
		return kap_error_plain(err, EINVAL, "--mount %s: no type= (bind, tmpfs or volume)",
				       spec);
	if (tlen == 4 && !strncmp(type, "bind", 4))
		m->type = KAP_RUN_BIND;
	else if (tlen == 5 && !strncmp(type, "tmpfs", 5))
		m->type = KAP_RUN_TMPFS;
	else if (tlen == 6 && !strncmp(type, "volume", 6))
		m->type = KAP_RUN_VOLUME;
	else
		return kap_error_plain(err, EINVAL,
				       "--mount %s: type \"%.*s\": expected bind, tmpfs or volume",
				       spec, (int)tlen, type);
	strcpy(copy, spec);
	cleanup_free char *tmpfs_opts = NULL;
	size_t olen = 0;
	FILE *of = NULL;
	int r = 0;
	for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv && r == 0;
	     kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');
		if (val)
			*val++ = '\0';
		const char *k = kv;
		bool is_bind = m->type == KAP_RUN_BIND, is_tmpfs = m->type == KAP_RUN_TMPFS;
		bool b;
		if (!strcmp(k, "type")) {
			continue;
		} else if (!strcmp(k, "src") || !strcmp(k, "source")) {
			if (is_tmpfs)
				goto wrong_type;
			r = set_str(&m->src, val, spec, k, err);
		} else if (!strcmp(k, "dst") || !strcmp(k, "destination") || !strcmp(k, "target")) {
			r = set_str(&m->dst, val, spec, k, err);
		} else if (!strcmp(k, "ro") || !strcmp(k, "readonly")) {
			r = mount_bool(spec, k, val, &m->ro, err);
		} else if (!strcmp(k, "rw")) {
			if ((r = mount_bool(spec, k, val, &b, err)) == 0)
				m->ro = !b;
		} else if (!strcmp(k, "bind-propagation") && is_bind) {
			static const char *const props[] = {"private", "rprivate", "shared",
							    "rshared", "slave",	   "rslave"};
			bool ok = false;
			for (size_t i = 0; val && i < KAP_ARRAY_SIZE(props); i++)
				ok = ok || !strcmp(val, props[i]);
			if (!ok)
				r = kap_error_plain(err, EINVAL,
						    "--mount %s: bind-propagation=%s: expected "
						    "[r]private, [r]shared or [r]slave",
						    spec, val ? val : "");
			else
				r = set_str(&m->propagation, val, spec, k, err);
		} else if (!strcmp(k, "bind-nonrecursive") && is_bind) {
			r = mount_bool(spec, k, val, &m->nonrecursive, err);
		} else if ((!strcmp(k, "tmpfs-size") || !strcmp(k, "tmpfs-mode")) && is_tmpfs) {
			bool size = k[6] == 's';
			if ((r = tmpfs_value(spec, k, val, size, err)) < 0)
				break;
			if (!of && !(of = open_memstream(&tmpfs_opts, &olen))) {
				r = kap_error(err, ENOMEM, "--mount");
				break;
			}
			fprintf(of, "%s%s=%s", ftell(of) > 0 ? "," : "", size ? "size" : "mode",
				val);
		} else if ((!strcmp(k, "volume-nocopy") || !strcmp(k, "nocopy")) &&
			   m->type == KAP_RUN_VOLUME) {
			r = mount_bool(spec, k, val, &m->nocopy, err);
		} else {
			bool known = !strcmp(k, "bind-propagation") ||
				     !strcmp(k, "bind-nonrecursive") || !strcmp(k, "tmpfs-size") ||
				     !strcmp(k, "tmpfs-mode") || !strcmp(k, "volume-nocopy") ||
				     !strcmp(k, "nocopy");
			if (known)
				goto wrong_type;
			r = kap_error_plain(err, EINVAL, "--mount %s: unknown option \"%s\"", spec,
					    k);
		}
		continue;
	wrong_type:
		r = kap_error_plain(err, EINVAL, "--mount %s: \"%s\" is not an option of type=%.*s",
				    spec, k, (int)tlen, type);
	}
	if (of && fclose(of) != 0 && r == 0)
		r = kap_error(err, ENOMEM, "--mount");
	if (r < 0)
		return r;
	m->opts = steal_ptr(tmpfs_opts);
	if (!m->dst)
		return kap_error_plain(err, EINVAL, "--mount %s: no dst= (destination, target)",
				       spec);
	if (!good_dst(m->dst))
		return kap_error_plain(
		    err, EINVAL, "--mount %s: destination %s must be absolute, without \"..\"",
		    spec, m->dst);
	if (m->type == KAP_RUN_BIND) {
		struct stat st;
		if (!m->src)
			return kap_error_plain(err, EINVAL,
					       "--mount %s: type=bind needs src=", spec);
		if (m->src[0] != '/')
			return kap_error_plain(err, EINVAL, "--mount %s: source %s is not absolute",
					       spec, m->src);
		if (stat(m->src, &st) < 0)
			return kap_error(err, errno, "--mount %s: source %s", spec, m->src);
	} else if (m->type == KAP_RUN_VOLUME) {
		/* Anonymous volumes (no src) would outlive --rm here: not supported. */
		if (!m->src)
			return kap_error_plain(err, EINVAL,
					       "--mount %s: type=volume needs src=NAME (anonymous "
					       "volumes are not supported)",
					       spec);
		if (!kap_volume_name_valid(m->src))
			return kap_error_plain(err, EINVAL,
					       "--mount %s: \"%s\" is not a valid volume name "
					       "([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
					       spec, m->src);
	}
	return 0;
}

int kap_runflags_parse_mount(const char *spec, struct kap_run_mount *m, struct kapsel_error **err)
{
	*m = (struct kap_run_mount){0};
	int r = parse_mount(spec, m, err);
	if (r < 0)
		run_mount_clear(m);
	return r;
}

bool kap_runflags_volume_named(const char *spec)
{
	return spec && *spec && *spec != '/' && *spec != '.' && *spec != ':' && strchr(spec, ':');
}

/* -v NAME:/path[:ro|rw|nocopy,...] */
static int parse_named_volume(const char *spec, struct kap_run_mount *m, struct kapsel_error **err)
{
	*m = (struct kap_run_mount){.type = KAP_RUN_VOLUME};
	cleanup_free char *copy = strdup(spec);
	if (!copy)
		return kap_error(err, ENOMEM, "-v");
	char *save = NULL;
	char *name = strtok_r(copy, ":", &save);
	char *dst = strtok_r(NULL, ":", &save);
	char *opts = strtok_r(NULL, "", &save);
	int r = 0;
	if (!kap_volume_name_valid(name))
		r = kap_error_plain(
		    err, EINVAL,
		    "-v %s: \"%s\" is neither an absolute host path nor a volume name "
		    "([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
		    spec, name);
	else if (!dst || !good_dst(dst))
		r = kap_error_plain(err, EINVAL,
				    "-v %s: the container path must be absolute, without \"..\"",
				    spec);
	for (char *o = opts && r == 0 ? strtok_r(opts, ",", &save) : NULL; o;
	     o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "ro"))
			m->ro = true;
		else if (!strcmp(o, "rw"))
			m->ro = false;
		else if (!strcmp(o, "nocopy"))
			m->nocopy = true;
		else
			r = kap_error_plain(err, EINVAL,
					    "-v %s: unknown option \"%s\" (ro, rw or nocopy)", spec,
					    o);
		if (r < 0)
			break;
	}
	if (r == 0 && (!(m->src = strdup(name)) || !(m->dst = strdup(dst))))
		r = kap_error(err, ENOMEM, "-v");
	if (r < 0)
		run_mount_clear(m);
	return r;
}

int kap_runflags_mounts(const struct kapsel_run_options *o, struct kap_run_mount **out, size_t *n,
			struct kapsel_error **err)
{
	size_t cap = 0;
	for (char *const *v[] = {o->tmpfs, o->mounts, o->volumes}, *const **l = v; l < v + 3; l++)
		for (char *const *p = *l; p && *p; p++)
			cap++;
	struct kap_run_mount *m = calloc(cap + 1, sizeof(*m));
	if (!m)
		return kap_error(err, ENOMEM, "mounts");
	size_t k = 0;
	int r = 0;
	for (char *const *p = o->tmpfs; r == 0 && p && *p; p++)
		if ((r = kap_runflags_parse_tmpfs(*p, &m[k], err)) == 0)
			k++;
	for (char *const *p = o->mounts; r == 0 && p && *p; p++)
		if ((r = kap_runflags_parse_mount(*p, &m[k], err)) == 0)
			k++;
	for (char *const *p = o->volumes; r == 0 && p && *p; p++)
		if (kap_runflags_volume_named(*p) && (r = parse_named_volume(*p, &m[k], err)) == 0)
			k++;
	if (r < 0) {
		kap_run_mounts_free(m, k);
		return r;
	}
	*out = m;
	*n = k;
	return 0;
}

static struct kap_json *mount_obj(const char *dst, const char *type, const char *src)
{
	struct kap_json *j = kap_json_new_object();
	if (!j)
		return NULL;
	kap_json_set(j, "destination", kap_json_new_string(dst));
	kap_json_set(j, "type", kap_json_new_string(type));
	kap_json_set(j, "source", kap_json_new_string(src));
	return j;
}

static void add_opts(struct kap_json *arr, const char *csv)
{
	cleanup_free char *copy = csv ? strdup(csv) : NULL;
	for (char *save = NULL, *o = copy ? strtok_r(copy, ",", &save) : NULL; o;
	     o = strtok_r(NULL, ",", &save))
		kap_json_append(arr, kap_json_new_string(o));
}

int kap_runflags_add_mounts(struct kap_json *mounts, const struct kapsel_run_options *o,
			    const char *volumes_dir, const char *init_path, bool rootless,
			    struct kapsel_error **err)
{
	for (char *const *p = o->devices; rootless && p && *p; p++) {
		struct device d;
		int rr = parse_device(*p, &d, err);
		if (rr < 0)
			return rr;
		struct kap_json *j = mount_obj(d.ctr, "bind", d.host);
		struct kap_json *opts = kap_json_new_array();
		if (!j || !opts) {
			kap_json_put(j);
			kap_json_put(opts);
			return kap_error(err, ENOMEM, "--device");
		}
		add_opts(opts, strchr(d.access, 'w') ? "bind,rprivate,nosuid,noexec"
						     : "bind,rprivate,nosuid,noexec,ro");
		kap_json_set(j, "options", opts);
		kap_json_append(mounts, j);
	}
	struct kap_run_mount *m = NULL;
	size_t n = 0;
	int r = kap_runflags_mounts(o, &m, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		cleanup_free char *vsrc = NULL;
		const char *type = "bind", *src = m[i].src;
		if (m[i].type == KAP_RUN_TMPFS) {
			type = src = "tmpfs";
		} else if (m[i].type == KAP_RUN_VOLUME) {
			if (!volumes_dir || asprintf(&vsrc, "%s/%s/_data", volumes_dir, src) < 0) {
				r = kap_error(err, volumes_dir ? ENOMEM : EINVAL, "volume %s", src);
				break;
			}
			src = vsrc;
		}
		struct kap_json *j = mount_obj(m[i].dst, type, src);
		struct kap_json *opts = kap_json_new_array();
		if (!j || !opts) {
			kap_json_put(j);
			kap_json_put(opts);
			r = kap_error(err, ENOMEM, "mounts");
			break;
		}
		kap_json_set(j, "options", opts);
		if (m[i].type == KAP_RUN_TMPFS) {
			/* podman's defaults for a --tmpfs; the user's options come after and win.
			 */
			add_opts(opts, "rw,noexec,nosuid,nodev");
			add_opts(opts, m[i].opts);
		} else {
			kap_json_append(opts,
					kap_json_new_string(m[i].nonrecursive ? "bind" : "rbind"));
			kap_json_append(
			    opts,
			    kap_json_new_string(m[i].propagation ? m[i].propagation : "rprivate"));
			if (m[i].type == KAP_RUN_VOLUME)
				add_opts(opts, "nosuid,nodev");
		}
		if (m[i].ro)
			kap_json_append(opts, kap_json_new_string("ro"));
		kap_json_append(mounts, j);
	}
	kap_run_mounts_free(m, n);
	if (r < 0 || !init_path)
		return r;
	/* The reaper is the host's file, read-only: the container cannot change what runs as
	 * its PID 1 next time. */
	struct kap_json *j = mount_obj(KAP_INIT_CTR_PATH, "bind", init_path);
	struct kap_json *opts = kap_json_new_array();
	if (!j || !opts) {
		kap_json_put(j);
		kap_json_put(opts);
		return kap_error(err, ENOMEM, "mounts");
	}
	add_opts(opts, "bind,rprivate,nosuid,nodev,ro");
	kap_json_set(j, "options", opts);
	kap_json_append(mounts, j);
	return 0;
}

/* Two mounts on one destination: the second would hide the first (podman refuses too). */
static int check_destinations(const struct kapsel_run_options *o, const struct kap_run_mount *m,
			      size_t n, struct kapsel_error **err)
{
	size_t cap = n;
	for (char *const *p = o->volumes; p && *p; p++)
		cap++;
	cleanup_strv char **dsts = calloc(cap + 2, sizeof(char *));
	if (!dsts)
		return kap_error(err, ENOMEM, "mounts");
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!(dsts[k++] = strdup(m[i].dst)))
			return kap_error(err, ENOMEM, "mounts");
	for (char *const *p = o->volumes; p && *p; p++) {
		if (kap_runflags_volume_named(*p))
			continue;
		cleanup_free char *h = NULL;
		char *c = NULL;
		bool ro;
		if (kap_bundle_parse_volume(*p, &h, &c, &ro, NULL) == 0)
			dsts[k++] = c;
	}
	for (size_t i = 0; i < k; i++) {
		size_t li = strlen(dsts[i]);
		while (li > 1 && dsts[i][li - 1] == '/')
			dsts[i][--li] = '\0';
		for (size_t j = 0; j < i; j++)
			if (!strcmp(dsts[i], dsts[j]))
				return kap_error_plain(
				    err, EINVAL, "mount destination %s is given twice", dsts[i]);
	}
	if (o->init)
		for (size_t i = 0; i < k; i++)
			if (!strcmp(dsts[i], KAP_INIT_CTR_PATH))
				return kap_error_plain(
				    err, EINVAL, "mount destination %s: --init uses it", dsts[i]);
	return 0;
}

int kap_runflags_check(const struct kapsel_run_options *o, struct kapsel_error **err)
{
	cleanup_strv char **env = NULL;
	int r = kap_runflags_env(o, &env, err);
	if (r < 0 || (r = check_ulimits(o->ulimits, err)) < 0)
		return r;
	for (char *const *p = o->devices; p && *p; p++) {
		struct device d;
		if ((r = parse_device(*p, &d, err)) < 0)
			return r;
	}
	struct kap_run_mount *m = NULL;
	size_t n = 0;
	if ((r = kap_runflags_mounts(o, &m, &n, err)) < 0)
		return r;
	r = check_destinations(o, m, n, err);
	kap_run_mounts_free(m, n);
	if (r < 0)
		return r;
	if (o->init_path && !o->init)
		return kap_error_plain(err, EINVAL, "--init-path %s needs --init", o->init_path);
	if (o->init) {
		cleanup_free char *path = NULL;
		if ((r = kap_runflags_init_path(o, &path, err)) < 0)
			return r;
	}
	return 0;
}

/* ---- --init ---- */

int kap_runflags_init_args(char ***args, struct kapsel_error **err)
{
	size_t n = 0;
	while (*args && (*args)[n])
		n++;
	char **v = calloc(n + 3, sizeof(char *));
	if (!v || !(v[0] = strdup(KAP_INIT_CTR_PATH)) || !(v[1] = strdup("--"))) {
		if (v)
			free(v[0]);
		free(v);
		return kap_error(err, ENOMEM, "--init");
	}
	memcpy(v + 2, *args, n * sizeof(char *));
	free(*args);
	*args = v;
	return 0;
}

static bool usable_init(const char *path, struct kapsel_error **err, bool report)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		if (report)
			kap_error(err, errno, "--init-path %s", path);
		return false;
	}
	if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0) {
		if (report)
			kap_error_plain(err, EACCES, "--init-path %s: not an executable file",
					path);
		return false;
	}
	return true;
}

int kap_runflags_init_path(const struct kapsel_run_options *o, char **path,
			   struct kapsel_error **err)
{
	if (o->init_path) {
		if (o->init_path[0] != '/')
			return kap_error_plain(err, EINVAL, "--init-path %s: not an absolute path",
					       o->init_path);
		if (!usable_init(o->init_path, err, true))
			return -(*err)->code;
		if (!(*path = strdup(o->init_path)))
			return kap_error(err, ENOMEM, "--init-path");
		return 0;
	}
	/* The build tree's (baked in, as the default image is), then next to the binary as
	 * meson installs it: <prefix>/bin/kapsel and <prefix>/libexec/kapsel/kapsel-init. */
#ifdef KAPSEL_INIT_BUILD_PATH
	if (usable_init(KAPSEL_INIT_BUILD_PATH, err, false))
		return (*path = strdup(KAPSEL_INIT_BUILD_PATH)) ? 0
								: kap_error(err, ENOMEM, "--init");
#endif
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;
	if (len > 0) {
		exe[len] = '\0';
		if ((slash = strrchr(exe, '/'))) {
			*slash = '\0';
			if (asprintf(path, "%s/../libexec/kapsel/kapsel-init", exe) < 0)
				return kap_error(err, ENOMEM, "--init");
			if (usable_init(*path, err, false))
				return 0;
			free(*path);
			*path = NULL;
		}
	}
	return kap_error_plain(err, ENOENT,
			       "--init: kapsel-init not found (not built, or not installed in "
			       "libexec/kapsel next to kapsel); --init-path names another");
}
