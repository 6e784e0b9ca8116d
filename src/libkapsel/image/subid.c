/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rootless `kapsel run` with the user's subordinate ids (subuid(5), subgid(5)).
 *
 * An unprivileged process may map only its own uid and gid into a user namespace it creates
 * (user_namespaces(7)), so an image's files owned by 1000 would be the overflow id inside. The
 * administrator grants a user ranges of host ids in /etc/subuid and /etc/subgid, and the
 * setuid helpers newuidmap(1) and newgidmap(1) (Debian's uidmap) write maps that use them for
 * a process of that user. As podman does, container id 0 is the user and 1.. are the ranges in
 * file order. The helpers must run in the parent user namespace of the new one (a process
 * inside it has no privilege over the host's ids, and the setuid bit of a file owned by an
 * unmapped root does not apply there), so a child forked before unshare(2) runs them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "core/log.h"
#include "image/subid.h"

/*
 * shadow's subordinate_parse(): "owner:start:count", owner a login name or a numeric uid.
 * Lines it rejects are kept in the file but never match (lib/subordinateio.c); so are ours,
 * and ranges the kernel would refuse (empty, or past 2^32) are skipped with them.
 */
static int read_ranges(const char *file, const struct kap_idmap *m, struct kap_subid_range *out,
		       size_t *n, struct kapsel_error **err)
{
	*n = 0;
	cleanup_fclose FILE *f = fopen(file, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		return kap_error(err, errno, "open %s", file);
	}
	char line[512];
	char uidbuf[16];
	snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned)m->uid);
	for (unsigned no = 1; fgets(line, sizeof(line), f); no++) {
		line[strcspn(line, "\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c1 || !c2 || strchr(c2 + 1, ':') || c1 == line) {
			if (*line)
				kap_debug("%s:%u: not owner:start:count, ignored", file, no);
			continue;
		}
		*c1 = *c2 = '\0';
		char *end1, *end2;
		errno = 0;
		unsigned long long start = strtoull(c1 + 1, &end1, 10);
		unsigned long long count = strtoull(c2 + 1, &end2, 10);
		if (errno || end1 == c1 + 1 || *end1 || end2 == c2 + 1 || *end2 || c1[1] == '-' ||
		    c2[1] == '-' || count == 0 || start + count > (1ULL << 32)) {
			kap_debug("%s:%u: range \"%s:%s\" is not valid, ignored", file, no, c1 + 1,
				  c2 + 1);
			continue;
		}
		if (strcmp(line, m->user) && strcmp(line, uidbuf))
			continue;
		if (*n == KAP_SUBID_MAX) {
			kap_debug("%s:%u: more than %d ranges for %s, ignored", file, no,
				  KAP_SUBID_MAX, m->user);
			continue;
		}
		out[(*n)++] = (struct kap_subid_range){(uint32_t)start, (uint32_t)count};
	}
	return 0;
}

static uint32_t total(const struct kap_subid_range *r, size_t n)
{
	uint64_t t = 1;
	for (size_t i = 0; i < n; i++)
		t += r[i].count;
	return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

int kap_subid_lookup_files(struct kap_idmap *m, const char *subuid, const char *subgid,
			   struct kapsel_error **err)
{
	memset(m, 0, sizeof(*m));
	m->uid = geteuid();
	m->gid = getegid();
	struct passwd *pw = getpwuid(m->uid);
	snprintf(m->user, sizeof(m->user), "%s", pw ? pw->pw_name : "");
	int r;
	if ((r = read_ranges(subuid, m, m->uids, &m->n_uids, err)) < 0 ||
	    (r = read_ranges(subgid, m, m->gids, &m->n_gids, err)) < 0)
		return r;
	if (!m->n_uids != !m->n_gids) {
		r = kap_error_plain(err, ENOENT, "user %s (uid %u) has ranges in %s but none in %s",
				    m->user, (unsigned)m->uid, m->n_uids ? subuid : subgid,
				    m->n_uids ? subgid : subuid);
		m->n_uids = m->n_gids = 0;
		return r;
	}
	m->uid_count = total(m->uids, m->n_uids);
	m->gid_count = total(m->gids, m->n_gids);
	/* FNV-1a over the whole mapping: another range, or another user, is another key. */
	uint64_t h = 0xcbf29ce484222325ULL;
	char text[64];
	for (int g = 0; g < 2; g++) {
		const struct kap_subid_range *v = g ? m->gids : m->uids;
		size_t n = g ? m->n_gids : m->n_uids;
		int len = snprintf(text, sizeof(text), "%c0:%u:1;", g ? 'g' : 'u',
				   g ? (unsigned)m->gid : (unsigned)m->uid);
		for (size_t i = 0;; i++) {
			for (int k = 0; k < len; k++)
				h = (h ^ (unsigned char)text[k]) * 0x100000001b3ULL;
			if (i == n)
				break;
			len = snprintf(text, sizeof(text), "%u:%u;", v[i].start, v[i].count);
		}
	}
	snprintf(m->key, sizeof(m->key), "%016" PRIx64, h);
	return 0;
}

int kap_subid_lookup(struct kap_idmap *m, struct kapsel_error **err)
{
	return kap_subid_lookup_files(m, "/etc/subuid", "/etc/subgid", err);
}

void kap_subid_describe(const struct kap_idmap *m, bool gids, char *buf, size_t len)
{
	const struct kap_subid_range *v = gids ? m->gids : m->uids;
	size_t n = gids ? m->n_gids : m->n_uids;
	int o = snprintf(buf, len, "%s 0-%u (0: %u; /etc/sub%cid of %s:", gids ? "gids" : "uids",
			 (gids ? m->gid_count : m->uid_count) - 1,
			 gids ? (unsigned)m->gid : (unsigned)m->uid, gids ? 'g' : 'u', m->user);
	for (size_t i = 0; i < n && o > 0 && (size_t)o < len; i++)
		o += snprintf(buf + o, len - (size_t)o, " %u:%u", v[i].start, v[i].count);
	if (o > 0 && (size_t)o < len)
		snprintf(buf + o, len - (size_t)o, ")");
}

/* The helper's path from $PATH, as execvp would find it (podman looks it up the same way). */
static int find_helper(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t l = strcspn(p, ":");
		if (l && snprintf(out, len, "%.*s/%s", (int)l, p, name) < (int)len &&
		    access(out, X_OK) == 0)
			return 0;
		p += l;
		if (*p == ':')
			p++;
	}
	return -ENOENT;
}

/* The child's part: argv for `helper PID 0 SELF 1 1 START COUNT ...`, run and waited for. */
static int run_helper(const char *helper, pid_t pid, unsigned self, const struct kap_subid_range *v,
		      size_t n)
{
	char *argv[5 + 3 * KAP_SUBID_MAX + 1];
	char num[3 + 3 * KAP_SUBID_MAX][16];
	size_t a = 0, k = 0;
	argv[a++] = (char *)helper;
#define ARG(fmt, x) (snprintf(num[k], 16, fmt, x), argv[a++] = num[k++])
	ARG("%d", (int)pid);
	argv[a++] = (char *)"0";
	ARG("%u", self);
	argv[a++] = (char *)"1";
	uint64_t next = 1;
	for (size_t i = 0; i < n; i++) {
		ARG("%" PRIu64, next);
		ARG("%u", v[i].start);
		ARG("%u", v[i].count);
		next += v[i].count;
	}
#undef ARG
	argv[a] = NULL;
	pid_t c = fork();
	if (c < 0)
		return -1;
	if (c == 0) {
		execv(helper, argv);
		_exit(127);
	}
	int status;
	while (waitpid(c, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int kap_subid_enter(const struct kap_idmap *m, bool mount_ns, struct kapsel_error **err)
{
	char uidmap[4096], gidmap[4096];
	if (find_helper("newuidmap", uidmap, sizeof(uidmap)) < 0 ||
	    find_helper("newgidmap", gidmap, sizeof(gidmap)) < 0)
		return kap_error_plain(
		    err, ENOENT,
		    "rootless: %s not found in PATH, which maps the /etc/subuid "
		    "and /etc/subgid ranges of user %s (install Debian's uidmap)",
		    access(uidmap, X_OK) ? "newuidmap" : "newgidmap", m->user);
	int go[2], done[2];
	if (pipe2(go, O_CLOEXEC) < 0)
		return kap_error(err, errno, "rootless: pipe");
	if (pipe2(done, O_CLOEXEC) < 0) {
		int e = errno;
		close(go[0]);
		close(go[1]);
		return kap_error(err, e, "rootless: pipe");
	}
	pid_t self = getpid();
	pid_t child = fork();
	if (child < 0) {
		int e = errno;
		close(go[0]);
		close(go[1]);
		close(done[0]);
		close(done[1]);
		return kap_error(err, e, "rootless: fork for newuidmap");
	}
	if (child == 0) {
		close(go[1]);
		close(done[0]);
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(0); /* the parent gave up before unsharing */
		/* gid first: newgidmap decides about setgroups, which must precede gid_map. */
		unsigned char st[2];
		st[0] =
		    (unsigned char)run_helper(gidmap, self, (unsigned)m->gid, m->gids, m->n_gids);
		st[1] = st[0] ? 0
			      : (unsigned char)run_helper(uidmap, self, (unsigned)m->uid, m->uids,
							  m->n_uids);
		_exit(write(done[1], st, 2) == 2 ? 0 : 1);
	}
	close(go[0]);
	close(done[1]);
	int r = 0;
	if (unshare(CLONE_NEWUSER | (mount_ns ? CLONE_NEWNS : 0)) < 0) {
		int e = errno;
		r = kap_error(err, e, "rootless: create a user namespace%s",
			      e == EPERM || e == ENOSPC
				  ? " (are unprivileged user namespaces disabled? see "
				    "sysctl user.max_user_namespaces)"
				  : "");
	}
	unsigned char st[2] = {255, 255};
	if (r == 0 && write(go[1], "x", 1) == 1 && read(done[0], st, 2) == 2 && !st[0] && !st[1])
		r = 0;
	else if (r == 0) {
		char what[128];
		kap_subid_describe(m, st[0] != 0, what, sizeof(what));
		r = kap_error_plain(err, EPERM, "rootless: %s exited with status %u mapping %s",
				    st[0] ? gidmap : uidmap, st[0] ? st[0] : st[1], what);
	}
	close(go[1]);
	close(done[0]);
	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (r < 0)
		return r;
	if (mount_ns && mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return kap_error(err, errno, "rootless: make / a slave mount");
	return 0;
}
