/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where a blob is known to be: <store>/blob-sources/<hex> lists "registry/repository" lines,
 * one per repository a pull fetched the blob from or a push sent it to. Push reads it to ask
 * the registry for a cross-repository mount (distribution-spec "Mounting a blob from another
 * repository") instead of uploading bytes the registry already has under another name.
 *
 * A hint, never trusted: the registry decides (201 mounted, 202 upload instead), a bad or
 * missing record only costs the upload it would have saved, and the file is read as hostile
 * input like every store file (bounded, each line checked). Appends are single short writes
 * with O_APPEND, so concurrent pulls and pushes interleave whole lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "image/image.h"

#define SOURCES_DIR	"blob-sources"
#define SOURCES_MAX	8192 /* bytes per blob: a few dozen repositories */
#define SOURCE_LINE_MAX 512

static int sources_dir(struct kap_store *s, bool create)
{
	cleanup_close int sfd = open(kap_store_path(s), O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return -errno;
	if (create && mkdirat(sfd, SOURCES_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(sfd, SOURCES_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static bool line_ok(const char *l, size_t n)
{
	if (n == 0 || n >= SOURCE_LINE_MAX || !memchr(l, '/', n))
		return false;
	for (size_t i = 0; i < n; i++)
		if (l[i] <= ' ' || l[i] > '~')
			return false;
	return true;
}

/* Calls fn for each valid line; stops when it returns nonzero (which is returned). */
static int each_source(struct kap_store *s, const char *digest,
		       int (*fn)(void *, const char *, size_t), void *ctx)
{
	if (kap_digest_validate(digest, "digest", NULL) < 0)
		return -EINVAL;
	cleanup_close int dfd = sources_dir(s, false);
	if (dfd < 0)
		return 0;
	cleanup_free char *buf = NULL;
	size_t len;
	if (kap_fs_read_file(dfd, digest + 7, SOURCES_MAX + SOURCE_LINE_MAX, &buf, &len, NULL) < 0)
		return 0;
	for (size_t off = 0; off < len;) {
		const char *nl = memchr(buf + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
		if (line_ok(buf + off, n)) {
			int r = fn(ctx, buf + off, n);
			if (r)
				return r;
		}
		off += n + 1;
	}
	return 0;
}

struct match {
	const char *want;
	size_t want_len;
};

static int same(void *ctx, const char *l, size_t n)
{
	const struct match *m = ctx;
	return n == m->want_len && !memcmp(l, m->want, n);
}

int kap_blob_source_add(struct kap_store *s, const char *digest, const char *registry,
			const char *repository)
{
	char line[SOURCE_LINE_MAX + 1];
	int n = snprintf(line, sizeof(line), "%s/%s", registry, repository);
	if (n <= 0 || !line_ok(line, (size_t)n))
		return -EINVAL;
	struct match m = {line, (size_t)n};
	int r = each_source(s, digest, same, &m);
	if (r < 0)
		return r;
	if (r)
		return 0; /* recorded already */
	cleanup_close int dfd = sources_dir(s, true);
	if (dfd < 0)
		return dfd;
	cleanup_close int fd =
	    openat(dfd, digest + 7, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size > SOURCES_MAX)
		return 0; /* full: the first ones recorded are as good as later ones */
	line[n++] = '\n';
	return kap_fs_write_all(fd, line, (size_t)n) < 0 ? -errno : 0;
}

struct collect {
	const char *registry;
	size_t reg_len;
	const char *except;
	char **out;
	size_t n;
};

static int collect(void *ctx, const char *l, size_t n)
{
	struct collect *c = ctx;
	if (n <= c->reg_len + 1 || memcmp(l, c->registry, c->reg_len) || l[c->reg_len] != '/')
		return 0;
	const char *repo = l + c->reg_len + 1;
	size_t rl = n - c->reg_len - 1;
	if (strlen(c->except) == rl && !memcmp(repo, c->except, rl))
		return 0;
	char **nv = realloc(c->out, (c->n + 2) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	c->out = nv;
	if (!(nv[c->n] = strndup(repo, rl)))
		return -ENOMEM;
	nv[++c->n] = NULL;
	return 0;
}

int kap_blob_sources(struct kap_store *s, const char *digest, const char *registry,
		     const char *except, char ***out)
{
	struct collect c = {.registry = registry, .reg_len = strlen(registry), .except = except};
	int r = each_source(s, digest, collect, &c);
	if (r < 0) {
		kap_strvp(&c.out);
		return r;
	}
	*out = c.out;
	return (int)c.n;
}
