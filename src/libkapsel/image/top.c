/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel top` and `kapsel stats` for image containers, as podman-top(1) and podman-stats(1)
 * show them. The processes are those of the container's cgroup (the runtime's list, as `kapsel
 * ps ID` uses), read from /proc; user and group names come from the container's own
 * /etc/passwd and /etc/group, read confined to its root. Statistics are the runtime's cgroup
 * statistics (`events --stats`, which reads v1, v2 and hybrid layouts alike) plus the network
 * counters of the init's namespace (/proc/PID/net/dev).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/tools.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/ctr-ref.h"
#include "oci/spec.h"

#define API __attribute__((visibility("default")))

static const char *ref_root(const struct kap_ctr_ref *r)
{
	return r->root && *r->root ? r->root : KAPSEL_DEFAULT_ROOT;
}

static int open_running(const char *store, const char *name, struct kap_ctr_ref *r,
			struct kapsel_error **err)
{
	int rc = kap_ctr_ref_open(store, name, r, err);
	if (rc < 0)
		return rc;
	if (r->pid <= 0) {
		rc = kap_error_plain(err, EINVAL, "container %s is not running (%s)", name,
				     strcmp(r->state, "running") ? r->state : "exited");
		kap_ctr_ref_clear(r);
	}
	return rc;
}

/* ---- one process from /proc ---- */

struct proc {
	pid_t hpid, pid, ppid_host, pgid_host;
	char state;
	int tty_major, tty_minor;
	uint64_t utime, stime, start; /* clock ticks */
	long nice;
	uint64_t vsize, rss_pages;
	uid_t ruid, euid;
	gid_t rgid, egid;
	uint64_t cap[5]; /* inh, prm, eff, bnd, amb */
	int seccomp;
	int ns_depth; /* entries in NSpid: how deep its pid namespace is */
	char comm[64];
	char *args;
};

static int read_proc(pid_t hpid, struct proc *p)
{
	char path[64], buf[4096];
	*p = (struct proc){.hpid = hpid, .pid = hpid, .seccomp = -1};
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)hpid);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	/* proc(5): "pid (comm) state ..."; comm may hold spaces and parentheses. */
	char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
	if (!lp || !rp || rp < lp)
		return -EINVAL;
	snprintf(p->comm, sizeof(p->comm), "%.*s", (int)(rp - lp - 1), lp + 1);
	unsigned long long f[24] = {0};
	char *s = rp + 2;
	p->state = *s;
	s += 2;
	/* Fields 4 (ppid) .. 24 (rss), by number. */
	for (int i = 4; i <= 24 && *s; i++) {
		char *end;
		long long v = strtoll(s, &end, 10);
		f[i - 1] = (unsigned long long)v;
		if (i == 19)
			p->nice = (long)v;
		s = *end ? end + 1 : end;
	}
	p->ppid_host = (pid_t)f[3];
	p->pgid_host = (pid_t)f[4];
	p->tty_major = (int)major((dev_t)f[6]);
	p->tty_minor = (int)minor((dev_t)f[6]);
	p->utime = f[13];
	p->stime = f[14];
	p->start = f[21];
	p->vsize = f[22];
	p->rss_pages = f[23];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)hpid);
	cleanup_fclose FILE *st = fopen(path, "re");
	char line[512];
	while (st && fgets(line, sizeof(line), st)) {
		unsigned long a, b;
		if (sscanf(line, "Uid: %lu %lu", &a, &b) == 2)
			p->ruid = (uid_t)a, p->euid = (uid_t)b;
		else if (sscanf(line, "Gid: %lu %lu", &a, &b) == 2)
			p->rgid = (gid_t)a, p->egid = (gid_t)b;
		else if (!strncmp(line, "NSpid:", 6)) {
			/* The last one is the pid in the container's own namespace. */
			char *save = NULL, *last = NULL;
			for (char *t = strtok_r(line + 6, " \t\n", &save); t;
			     t = strtok_r(NULL, " \t\n", &save), p->ns_depth++)
				last = t;
			if (last)
				p->pid = (pid_t)strtol(last, NULL, 10);
		} else if (!strncmp(line, "Cap", 3)) {
			static const char *const keys[] = {
			    "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"};
			for (int i = 0; i < 5; i++)
				if (!strncmp(line, keys[i], strlen(keys[i])))
					p->cap[i] = strtoull(line + strlen(keys[i]), NULL, 16);
		} else if (sscanf(line, "Seccomp: %d", &p->seccomp) == 1) {
		}
	}

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)hpid);
	cleanup_free char *cmd = NULL;
	size_t len = 0;
	if (kap_fs_read_file(AT_FDCWD, path, 1 << 20, &cmd, &len, NULL) == 0 && len > 0) {
		while (len > 0 && cmd[len - 1] == '\0')
			len--;
		for (size_t i = 0; i < len; i++)
			if (cmd[i] == '\0')
				cmd[i] = ' ';
		cmd[len] = '\0';
	}
	/* A kernel thread or a zombie has no command line: ps shows [comm]. */
	if (cmd && *cmd)
		p->args = steal_ptr(cmd);
	else if (asprintf(&p->args, "[%s]", p->comm) < 0)
		p->args = NULL;
	return p->args ? 0 : -ENOMEM;
}

/* ---- names inside the container ---- */

struct ids {
	int rootfd;	      /* the init's root */
	char *passwd, *group; /* the container's files, NULL when absent */
	char uid_map[512], gid_map[512];
};

/* Host id -> the container's, through its map ("in out count" lines); itself without one. */
static unsigned long map_back(const char *map, unsigned long host)
{
	if (!*map)
		return host;
	const char *s = map;
	unsigned long in, out, cnt;
	int used;
	while (sscanf(s, "%lu %lu %lu%n", &in, &out, &cnt, &used) == 3) {
		if (host >= out && host - out < cnt)
			return in + (host - out);
		s += used;
	}
	return 65534; /* unmapped: the overflow id */
}

/* The name for id in a passwd- or group-format file (first and third fields). */
static char *lookup_name(const char *file, unsigned long id)
{
	if (file) {
		const char *l = file;
		while (*l) {
			const char *e = strchrnul(l, '\n');
			const char *c1 = memchr(l, ':', (size_t)(e - l));
			const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(e - c1 - 1)) : NULL;
			if (c2 && c2 + 1 < e) {
				char *end;
				unsigned long v = strtoul(c2 + 1, &end, 10);
				if (end > c2 + 1 && *end == ':' && v == id)
					return strndup(l, (size_t)(c1 - l));
			}
			l = *e ? e + 1 : e;
		}
	}
	char *s;
	return asprintf(&s, "%lu", id) < 0 ? NULL : s;
}

/* A small file of the container's, opened confined to its root. */
static char *read_in_root(int rootfd, const char *path)
{
	cleanup_close int fd = kap_fs_open_in_root(rootfd, path, O_RDONLY, 0, NULL);
	if (fd < 0)
		return NULL;
	cleanup_fclose FILE *f = fdopen(fd, "r");
	if (!f)
		return NULL;
	fd = -EBADF;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	size_t got;
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *nb = cap < (4u << 20) ? realloc(buf, cap * 2 + 1) : NULL;
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (buf)
		buf[n] = '\0';
	return buf;
}

static void ids_load(struct ids *ids, pid_t init)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)init);
	ids->rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ids->rootfd >= 0) {
		ids->passwd = read_in_root(ids->rootfd, "etc/passwd");
		ids->group = read_in_root(ids->rootfd, "etc/group");
	}
	const char *maps[] = {"uid_map", "gid_map"};
	char *dst[] = {ids->uid_map, ids->gid_map};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)init, maps[i]);
		cleanup_fclose FILE *f = fopen(path, "re");
		size_t n = f ? fread(dst[i], 1, sizeof(ids->uid_map) - 1, f) : 0;
		dst[i][n] = '\0';
		/* The identity map of the initial namespace means none. */
		unsigned long a, b, c;
		if (sscanf(dst[i], "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 &&
		    c == 4294967295UL)
			dst[i][0] = '\0';
	}
}

static void ids_clear(struct ids *ids)
{
	if (ids->rootfd >= 0)
		close(ids->rootfd);
	free(ids->passwd);
	free(ids->group);
}

/* ---- descriptors ---- */

enum desc {
	D_USER,
	D_PID,
	D_PPID,
	D_PCPU,
	D_ETIME,
	D_TTY,
	D_TIME,
	D_ARGS,
	D_COMM,
	D_GROUP,
	D_NICE,
	D_PGID,
	D_RGROUP,
	D_RUSER,
	D_VSZ,
	D_RSS,
	D_STATE,
	D_STIME,
	D_HPID,
	D_HUSER,
	D_HGROUP,
	D_CAPAMB,
	D_CAPBND,
	D_CAPEFF,
	D_CAPINH,
	D_CAPPRM,
	D_SECCOMP,
};

static const struct {
	const char *name, *aix, *header;
} descs[] = {
    [D_USER] = {"user", "%U", "USER"},
    [D_PID] = {"pid", "%p", "PID"},
    [D_PPID] = {"ppid", "%P", "PPID"},
    [D_PCPU] = {"pcpu", "%C", "%CPU"},
    [D_ETIME] = {"etime", "%t", "ELAPSED"},
    [D_TTY] = {"tty", "%y", "TTY"},
    [D_TIME] = {"time", "%x", "TIME"},
    [D_ARGS] = {"args", "%a", "COMMAND"},
    [D_COMM] = {"comm", "%c", "COMMAND"},
    [D_GROUP] = {"group", "%G", "GROUP"},
    [D_NICE] = {"nice", "%n", "NI"},
    [D_PGID] = {"pgid", "%r", "PGID"},
    [D_RGROUP] = {"rgroup", "%g", "RGROUP"},
    [D_RUSER] = {"ruser", "%u", "RUSER"},
    [D_VSZ] = {"vsz", "%z", "VSZ"},
    [D_RSS] = {"rss", NULL, "RSS"},
    [D_STATE] = {"state", NULL, "STATE"},
    [D_STIME] = {"stime", NULL, "STIME"},
    [D_HPID] = {"hpid", NULL, "HPID"},
    [D_HUSER] = {"huser", NULL, "HUSER"},
    [D_HGROUP] = {"hgroup", NULL, "HGROUP"},
    [D_CAPAMB] = {"capamb", NULL, "AMBIENT CAPS"},
    [D_CAPBND] = {"capbnd", NULL, "BOUNDING CAPS"},
    [D_CAPEFF] = {"capeff", NULL, "EFFECTIVE CAPS"},
    [D_CAPINH] = {"capinh", NULL, "INHERITED CAPS"},
    [D_CAPPRM] = {"capprm", NULL, "PERMITTED CAPS"},
    [D_SECCOMP] = {"seccomp", NULL, "SECCOMP"},
};

static int find_desc(const char *s)
{
	for (size_t i = 0; i < KAP_ARRAY_SIZE(descs); i++)
		if (!strcmp(s, descs[i].name) || (descs[i].aix && !strcmp(s, descs[i].aix)))
			return (int)i;
	return -1;
}

/* Go's time.Duration.String(), which podman prints: "1h2m3.5s", "250ms", "0s". */
static void go_duration(uint64_t ns, char *buf, size_t len)
{
	const uint64_t G = 1000000000, M = 1000000, K = 1000;
	if (ns == 0) {
		snprintf(buf, len, "0s");
		return;
	}
	/* Below a second Go picks the unit; the fraction drops its trailing zeros. */
	uint64_t div = ns >= G ? G : ns >= M ? M : ns >= K ? K : 1;
	int digits = div == G ? 9 : div == M ? 6 : div == K ? 3 : 0;
	const char *unit = div == G ? "s" : div == M ? "ms" : div == K ? "µs" : "ns";
	uint64_t whole = ns / div, frac = ns % div;
	char num[48];
	if (div == G)
		whole %= 60;
	int n = snprintf(num, sizeof(num), "%" PRIu64, whole);
	if (digits && frac) {
		n += snprintf(num + n, sizeof(num) - (size_t)n, ".%0*" PRIu64, digits, frac);
		while (num[n - 1] == '0')
			num[--n] = '\0';
	}
	uint64_t s = ns / G, h = s / 3600, m = s / 60 % 60;
	if (h)
		snprintf(buf, len, "%" PRIu64 "h%" PRIu64 "m%s%s", h, m, num, unit);
	else if (m)
		snprintf(buf, len, "%" PRIu64 "m%s%s", m, num, unit);
	else
		snprintf(buf, len, "%s%s", num, unit);
}

/* Capability names without "CAP_", comma-separated; podman's "none" and "full". */
static char *caps_string(uint64_t set)
{
	int last = kap_cap_last();
	uint64_t all = last >= 63 ? ~0ULL : ((1ULL << (last + 1)) - 1);
	if (set == 0)
		return strdup("none");
	if ((set & all) == all)
		return strdup("full");
	size_t cap = 1024, n = 0;
	char *s = calloc(1, cap);
	for (int i = 0; s && i < 64; i++) {
		if (!(set & (1ULL << i)))
			continue;
		const char *nm = kap_cap_name(i);
		char num[16];
		if (!nm) {
			snprintf(num, sizeof(num), "%d", i);
			nm = num;
		} else if (!strncmp(nm, "CAP_", 4)) {
			nm += 4;
		}
		int w = snprintf(s + n, cap - n, "%s%s", n ? "," : "", nm);
		if (w > 0 && (size_t)w < cap - n)
			n += (size_t)w;
	}
	return s;
}

/* /proc/uptime's first field ("12345.67", in centiseconds), in nanoseconds, exactly. */
static uint64_t read_uptime_ns(void)
{
	char buf[64];
	cleanup_fclose FILE *f = fopen("/proc/uptime", "re");
	unsigned long long sec = 0, cs = 0;
	if (!f || !fgets(buf, sizeof(buf), f) || sscanf(buf, "%llu.%2llu", &sec, &cs) < 1)
		return 0;
	return (uint64_t)sec * 1000000000ULL + (uint64_t)cs * 10000000ULL;
}

static uint64_t ticks_ns(uint64_t ticks, long hz)
{
	return ticks / (uint64_t)hz * 1000000000ULL +
	       ticks % (uint64_t)hz * 1000000000ULL / (uint64_t)hz;
}

/*
 * host's pid as the container sees it; 0 when host is not in the container's pid namespace
 * (the runtime that started an exec'd process, the monitor), as podman shows such a parent.
 */
static pid_t ns_pid_of(pid_t host, int depth)
{
	struct proc p;
	if (host <= 0 || read_proc(host, &p) < 0)
		return 0;
	free(p.args);
	return p.ns_depth == depth ? p.pid : 0;
}

static char *cell(enum desc d, const struct proc *p, const struct ids *ids, uint64_t uptime_ns,
		  long hz)
{
	char buf[128];
	uint64_t cpu_ns = ticks_ns(p->utime + p->stime, hz);
	uint64_t start_ns = ticks_ns(p->start, hz);
	uint64_t elapsed_ns = uptime_ns > start_ns ? uptime_ns - start_ns : 0;
	switch (d) {
	case D_USER:
		return lookup_name(ids->passwd, map_back(ids->uid_map, p->euid));
	case D_RUSER:
		return lookup_name(ids->passwd, map_back(ids->uid_map, p->ruid));
	case D_GROUP:
		return lookup_name(ids->group, map_back(ids->gid_map, p->egid));
	case D_RGROUP:
		return lookup_name(ids->group, map_back(ids->gid_map, p->rgid));
	case D_HUSER: {
		struct passwd *pw = getpwuid(p->euid);
		if (pw)
			return strdup(pw->pw_name);
		snprintf(buf, sizeof(buf), "%u", (unsigned)p->euid);
		break;
	}
	case D_HGROUP: {
		struct group *gr = getgrgid(p->egid);
		if (gr)
			return strdup(gr->gr_name);
		snprintf(buf, sizeof(buf), "%u", (unsigned)p->egid);
		break;
	}
	case D_PID:
		snprintf(buf, sizeof(buf), "%d", (int)p->pid);
		break;
	case D_HPID:
		snprintf(buf, sizeof(buf), "%d", (int)p->hpid);
		break;
	case D_PPID:
		/* A parent outside the container (the runtime, the monitor) is 0, as podman has it.
		 */
		snprintf(buf, sizeof(buf), "%d",
			 (int)(p->pid == 1 ? 0 : ns_pid_of(p->ppid_host, p->ns_depth)));
		break;
	case D_PGID:
		snprintf(buf, sizeof(buf), "%d", (int)ns_pid_of(p->pgid_host, p->ns_depth));
		break;
	case D_PCPU:
		snprintf(buf, sizeof(buf), "%.3f",
			 elapsed_ns ? (double)cpu_ns * 100.0 / (double)elapsed_ns : 0.0);
		break;
	case D_ETIME:
		go_duration(elapsed_ns, buf, sizeof(buf));
		break;
	case D_TIME:
		go_duration(cpu_ns, buf, sizeof(buf));
		break;
	case D_TTY:
		/* devices.txt: 136-143 are the Unix98 pty slaves, 4 the virtual consoles. */
		if (p->tty_major >= 136 && p->tty_major <= 143)
			snprintf(buf, sizeof(buf), "pts/%d",
				 (p->tty_major - 136) * 256 + p->tty_minor);
		else if (p->tty_major == 4 && p->tty_minor < 64)
			snprintf(buf, sizeof(buf), "tty%d", p->tty_minor);
		else if (p->tty_major == 0)
			snprintf(buf, sizeof(buf), "?");
		else
			snprintf(buf, sizeof(buf), "%d:%d", p->tty_major, p->tty_minor);
		break;
	case D_ARGS:
		return strdup(p->args);
	case D_COMM:
		return strdup(p->comm);
	case D_NICE:
		snprintf(buf, sizeof(buf), "%ld", p->nice);
		break;
	case D_VSZ:
		snprintf(buf, sizeof(buf), "%" PRIu64, p->vsize / 1024);
		break;
	case D_RSS:
		snprintf(buf, sizeof(buf), "%" PRIu64,
			 p->rss_pages * (uint64_t)sysconf(_SC_PAGESIZE) / 1024);
		break;
	case D_STATE:
		snprintf(buf, sizeof(buf), "%c", p->state);
		break;
	case D_STIME: {
		time_t t = time(NULL) - (time_t)(elapsed_ns / 1000000000ULL);
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
		break;
	}
	case D_CAPINH:
	case D_CAPPRM:
	case D_CAPEFF:
	case D_CAPBND:
	case D_CAPAMB:
		return caps_string(p->cap[d == D_CAPINH	  ? 0
					  : d == D_CAPPRM ? 1
					  : d == D_CAPEFF ? 2
					  : d == D_CAPBND ? 3
							  : 4]);
	case D_SECCOMP:
		snprintf(buf, sizeof(buf), "%s",
			 p->seccomp == 2   ? "filter"
			 : p->seccomp == 1 ? "strict"
			 : p->seccomp == 0 ? "disabled"
					   : "?");
		break;
	}
	return strdup(buf);
}

API void kapsel_top_clear(struct kapsel_top *t)
{
	if (t->header)
		for (size_t i = 0; i < t->n_cols; i++)
			free(t->header[i]);
	if (t->cells)
		for (size_t i = 0; i < t->n_cols * t->n_rows; i++)
			free(t->cells[i]);
	free(t->header);
	free(t->cells);
	*t = (struct kapsel_top){0};
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
	return (x > y) - (x < y);
}

API int kapsel_image_top(const char *store, const char *name, char *const *descriptors,
			 struct kapsel_top *out, struct kapsel_error **err)
{
	*out = (struct kapsel_top){0};
	static const enum desc defaults[] = {D_USER,  D_PID, D_PPID, D_PCPU,
					     D_ETIME, D_TTY, D_TIME, D_ARGS};
	enum desc cols[64];
	size_t n_cols = 0;
	for (char *const *d = descriptors; d && *d; d++) {
		/* "pid,user" and "pid user" alike, as podman splits them. */
		cleanup_free char *copy = strdup(*d);
		if (!copy)
			return kap_error(err, ENOMEM, "top");
		char *save = NULL;
		for (char *t = strtok_r(copy, ", \t", &save); t;
		     t = strtok_r(NULL, ", \t", &save)) {
			int i = find_desc(t);
			if (i < 0)
				return kap_error_plain(err, EINVAL,
						       "top: unknown descriptor \"%s\" (see "
						       "'kapsel top --help')",
						       t);
			if (n_cols == KAP_ARRAY_SIZE(cols))
				return kap_error_plain(err, E2BIG, "top: more than %zu descriptors",
						       KAP_ARRAY_SIZE(cols));
			cols[n_cols++] = (enum desc)i;
		}
	}
	if (n_cols == 0) {
		memcpy(cols, defaults, sizeof(defaults));
		n_cols = KAP_ARRAY_SIZE(defaults);
	}

	struct kap_ctr_ref r;
	int rc = open_running(store, name, &r, err);
	if (rc < 0)
		return rc;
	pid_t *pids = NULL;
	size_t n = 0;
	rc = kapsel_container_pids(ref_root(&r), name, &pids, &n, err);
	struct ids ids = {.rootfd = -EBADF};
	if (rc >= 0)
		ids_load(&ids, r.pid);
	kap_ctr_ref_clear(&r);
	if (rc < 0)
		return rc;
	qsort(pids, n, sizeof(*pids), cmp_pid);

	struct kapsel_top t = {.n_cols = n_cols};
	t.header = calloc(n_cols, sizeof(char *));
	t.cells = calloc(n_cols * (n ? n : 1), sizeof(char *));
	for (size_t i = 0; t.header && i < n_cols; i++)
		if (!(t.header[i] = strdup(descs[cols[i]].header)))
			rc = -ENOMEM;
	if (!t.header || !t.cells)
		rc = -ENOMEM;
	uint64_t uptime = read_uptime_ns();
	long hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0)
		hz = 100;
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		struct proc p;
		if (read_proc(pids[i], &p) < 0)
			continue; /* exited meanwhile */
		for (size_t c = 0; c < n_cols; c++)
			if (!(t.cells[t.n_rows * n_cols + c] = cell(cols[c], &p, &ids, uptime, hz)))
				rc = -ENOMEM;
		t.n_rows++;
		free(p.args);
	}
	free(pids);
	ids_clear(&ids);
	if (rc < 0) {
		kapsel_top_clear(&t);
		return kap_error(err, ENOMEM, "top %s", name);
	}
	*out = t;
	return 0;
}

/* ---- stats ---- */

API void kapsel_stats_free(struct kapsel_stats *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		free(s[i].name);
	free(s);
}

static uint64_t json_u64_at(const struct kap_json *j, const char *const *path)
{
	for (; j && *path; path++)
		j = kap_json_get(j, *path);
	return j ? kap_json_uint64(j) : 0;
}

static uint64_t host_memory(void)
{
	struct sysinfo si;
	if (sysinfo(&si) < 0)
		return 0;
	return (uint64_t)si.totalram * si.mem_unit;
}

/* Bytes received and sent on every interface of the init's network namespace but lo. */
static void net_io(pid_t pid, uint64_t *rx, uint64_t *tx)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/net/dev", (int)pid);
	cleanup_fclose FILE *f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue; /* the two header lines */
		*colon = '\0';
		const char *ifname = line + strspn(line, " ");
		if (!strcmp(ifname, "lo"))
			continue;
		/* Receive: bytes packets errs drop fifo frame compressed multicast; then
		 * transmit: bytes ... (proc_net(5)). */
		unsigned long long v[9];
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) == 9) {
			*rx += v[0];
			*tx += v[8];
		}
	}
}

static void blk_io(const struct kap_json *data, uint64_t *rd, uint64_t *wr)
{
	struct kap_json *blkio = data ? kap_json_get(data, "blkio") : NULL;
	struct kap_json *arr = blkio ? kap_json_get(blkio, "ioServiceBytesRecursive") : NULL;
	for (size_t i = 0; arr && i < kap_json_array_len(arr); i++) {
		struct kap_json *e = kap_json_array_at(arr, i);
		struct kap_json *op = kap_json_get(e, "op"), *v = kap_json_get(e, "value");
		const char *o = op ? kap_json_string(op) : NULL;
		if (!o || !v)
			continue;
		if (!strcasecmp(o, "read"))
			*rd += kap_json_uint64(v);
		else if (!strcasecmp(o, "write"))
			*wr += kap_json_uint64(v);
	}
}

static int sample(const char *store, const char *name, struct kapsel_stats *s,
		  struct kapsel_error **err)
{
	struct kap_ctr_ref r;
	int rc = open_running(store, name, &r, err);
	if (rc < 0)
		return rc;
	*s = (struct kapsel_stats){0};
	/* The runtime's statistics, one `events --stats` record. */
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	if (!mem) {
		kap_ctr_ref_clear(&r);
		return kap_error(err, errno, "stats %s", name);
	}
	rc = kapsel_container_events(ref_root(&r), name, true, 0, mem, err);
	fclose(mem);
	cleanup_free char *text = buf;
	cleanup_json struct kap_json *ev = NULL;
	if (rc >= 0)
		rc = kap_json_parse(text, len, "stats", &ev, err);
	if (rc < 0) {
		kap_ctr_ref_clear(&r);
		return rc;
	}
	struct kap_json *data = kap_json_get(ev, "data");
	s->cpu_ns = json_u64_at(data, (const char *const[]){"cpu", "usage", "total", NULL});
	uint64_t usage = json_u64_at(data, (const char *const[]){"memory", "usage", "usage", NULL});
	/* Page cache the kernel may drop at once is not the container's use (docker's rule):
	 * v1's total_inactive_file, v2's inactive_file. */
	uint64_t inactive =
	    json_u64_at(data, (const char *const[]){"memory", "raw", "total_inactive_file", NULL});
	if (!inactive)
		inactive = json_u64_at(
		    data, (const char *const[]){"memory", "raw", "inactive_file", NULL});
	s->mem_usage = inactive < usage ? usage - inactive : usage;
	uint64_t limit = json_u64_at(data, (const char *const[]){"memory", "usage", "limit", NULL});
	uint64_t host = host_memory();
	/* v1 says "no limit" with a page-rounded INT64_MAX, v2 with "max": the host's memory. */
	s->mem_limit = limit && (!host || limit < host) ? limit : host;
	s->pids = json_u64_at(data, (const char *const[]){"pids", "current", NULL});
	blk_io(data, &s->blk_read, &s->blk_write);
	net_io(r.pid, &s->net_rx, &s->net_tx);

	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	s->system_ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
	struct proc p;
	long hz = sysconf(_SC_CLK_TCK);
	if (read_proc(r.pid, &p) == 0) {
		uint64_t up = read_uptime_ns(), start = ticks_ns(p.start, hz > 0 ? hz : 100);
		s->up_ns = up > start ? up - start : 0;
		free(p.args);
	}
	kap_ctr_ref_clear(&r);
	if (!(s->name = strdup(name)))
		return kap_error(err, ENOMEM, "stats %s", name);
	return 0;
}

API int kapsel_image_stats(const char *store, char *const *names, struct kapsel_stats **out,
			   size_t *n, struct kapsel_error **err)
{
	*out = NULL;
	*n = 0;
	cleanup_strv char **all = NULL;
	bool given = names && names[0];
	if (!given) {
		int rc = kap_ctr_ref_names(store, &all, err);
		if (rc < 0)
			return rc;
		names = all;
	}
	size_t cnt = 0;
	while (names[cnt])
		cnt++;
	struct kapsel_stats *v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return kap_error(err, ENOMEM, "stats");
	size_t got = 0;
	for (size_t i = 0; i < cnt; i++) {
		cleanup_error struct kapsel_error *e = NULL;
		int rc = sample(store, names[i], &v[got], &e);
		if (rc < 0) {
			/* Listing them all: whatever is not running (or stopped meanwhile) is not
			 * shown. Named: it is the user's mistake. */
			if (!given)
				continue;
			kapsel_stats_free(v, got);
			*err = steal_ptr(e);
			return rc;
		}
		got++;
	}
	*out = v;
	*n = got;
	return 0;
}
