/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references as docker and podman read them (distribution/reference grammar.go):
 *
 *   reference  := name [ ":" tag ] [ "@" digest ]
 *   name       := [domain "/"] path-component ["/" path-component]*
 *   domain     := host [":" port]      host: dns labels or an [IPv6] literal
 *   path-comp  := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 *   tag        := [\w][\w.-]{0,127}
 *
 * The first component is a registry only when it contains '.' or ':', is "localhost", or has an
 * upper-case letter (splitDockerDomain); otherwise the registry is docker.io, and a one-component
 * docker.io name lives under library/.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "image/image.h"

#define NAME_MAX_TOTAL 255
#define TAG_MAX	       128

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component between slashes. */
static bool path_component_ok(const char *p, size_t len)
{
	if (len == 0 || !is_alnum_lower(p[0]) || !is_alnum_lower(p[len - 1]))
		return false;
	for (size_t i = 0; i < len;) {
		if (is_alnum_lower(p[i])) {
			i++;
			continue;
		}
		/* A separator: ".", "_", "__" or a run of "-", always between alnums. */
		size_t run = 0;
		if (p[i] == '.') {
			run = 1;
		} else if (p[i] == '_') {
			run = (i + 1 < len && p[i + 1] == '_') ? 2 : 1;
		} else if (p[i] == '-') {
			while (i + run < len && p[i + run] == '-')
				run++;
		} else {
			return false;
		}
		i += run;
		if (i >= len || !is_alnum_lower(p[i]))
			return false;
	}
	return true;
}

static bool host_label_ok(const char *p, size_t len)
{
	if (len == 0 || !isalnum((unsigned char)p[0]) || !isalnum((unsigned char)p[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '-')
			return false;
	return true;
}

static bool domain_ok(const char *d)
{
	const char *end = d + strlen(d);
	if (*d == '[') {
		/* [IPv6]:port */
		const char *close = strchr(d, ']');
		if (!close || close == d + 1)
			return false;
		for (const char *p = d + 1; p < close; p++)
			if (!isxdigit((unsigned char)*p) && *p != ':')
				return false;
		d = close + 1;
		if (*d == '\0')
			return true;
		if (*d != ':')
			return false;
	} else {
		const char *colon = strchr(d, ':');
		const char *host_end = colon ? colon : end;
		for (const char *p = d; p <= host_end;) {
			const char *dot = memchr(p, '.', (size_t)(host_end - p));
			const char *lend = dot ? dot : host_end;
			if (!host_label_ok(p, (size_t)(lend - p)))
				return false;
			p = lend + 1;
		}
		d = host_end;
		if (*d == '\0')
			return true;
	}
	/* ":port" */
	d++;
	if (*d == '\0')
		return false;
	for (; *d; d++)
		if (!isdigit((unsigned char)*d))
			return false;
	return true;
}

static bool tag_ok(const char *t)
{
	size_t len = strlen(t);
	if (len == 0 || len > TAG_MAX)
		return false;
	if (!(isalnum((unsigned char)t[0]) || t[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
			return false;
	return true;
}

static bool has_upper(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			return true;
	return false;
}

void kap_ref_clear(struct kap_ref *r)
{
	if (!r)
		return;
	free(r->registry);
	free(r->repository);
	free(r->tag);
	free(r->digest);
	memset(r, 0, sizeof(*r));
}

int kap_ref_parse(const char *s, struct kap_ref *out, struct kapsel_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return kap_error_plain(err, EINVAL, "invalid reference: empty");
	if (strlen(s) > 4096)
		return kap_error_plain(err, EINVAL, "invalid reference: longer than 4096 bytes");
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return kap_error_plain(err, EINVAL,
					       "invalid reference \"%s\": contains a space or "
					       "non-ASCII character",
					       s);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "parse reference");

	struct kap_ref r = {0};
	char *at = strchr(copy, '@');
	if (at) {
		*at = '\0';
		cleanup_error struct kapsel_error *derr = NULL;
		if (kap_digest_validate(at + 1, "digest", &derr) < 0)
			return kap_error_plain(err, derr->code, "invalid reference \"%s\": %s", s,
					       derr->msg);
		r.digest = strdup(at + 1);
		if (!r.digest)
			return kap_error(err, ENOMEM, "parse reference");
	}

	char *name = copy;
	char *last_slash = strrchr(name, '/');
	char *colon = strrchr(last_slash ? last_slash : name, ':');
	if (colon) {
		*colon = '\0';
		if (!tag_ok(colon + 1)) {
			kap_ref_clear(&r);
			return kap_error_plain(
			    err, EINVAL,
			    "invalid reference \"%s\": invalid tag \"%s\" (letters, "
			    "digits, '_', '.', '-'; at most 128)",
			    s, colon + 1);
		}
		r.tag = strdup(colon + 1);
	}
	if (!*name) {
		kap_ref_clear(&r);
		return kap_error_plain(err, EINVAL, "invalid reference \"%s\": missing repository",
				       s);
	}

	const char *domain = "docker.io", *path = name;
	char *slash = strchr(name, '/');
	if (slash) {
		size_t first = (size_t)(slash - name);
		if (memchr(name, '.', first) || memchr(name, ':', first) ||
		    (first == 9 && !strncmp(name, "localhost", 9)) || has_upper(name, first)) {
			*slash = '\0';
			domain = name;
			path = slash + 1;
		}
	}
	if (!domain_ok(domain)) {
		kap_ref_clear(&r);
		return kap_error_plain(
		    err, EINVAL, "invalid reference \"%s\": invalid registry \"%s\"", s, domain);
	}
	if (!strcmp(domain, "index.docker.io") || !strcmp(domain, "registry-1.docker.io"))
		domain = "docker.io";
	if (!*path) {
		kap_ref_clear(&r);
		return kap_error_plain(err, EINVAL, "invalid reference \"%s\": missing repository",
				       s);
	}
	if (has_upper(path, strlen(path))) {
		kap_ref_clear(&r);
		return kap_error_plain(
		    err, EINVAL, "invalid reference \"%s\": repository \"%s\" must be lowercase", s,
		    path);
	}
	for (const char *p = path;;) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (!path_component_ok(p, len)) {
			kap_ref_clear(&r);
			return kap_error_plain(
			    err, EINVAL,
			    "invalid reference \"%s\": invalid repository component "
			    "\"%.*s\" in \"%s\"",
			    s, (int)len, p, path);
		}
		if (!e)
			break;
		p = e + 1;
	}

	bool library = !strcmp(domain, "docker.io") && !strchr(path, '/');
	r.registry = strdup(domain);
	if (asprintf(&r.repository, "%s%s", library ? "library/" : "", path) < 0)
		r.repository = NULL;
	if (!r.tag && !r.digest)
		r.tag = strdup("latest");
	if (!r.registry || !r.repository || (!r.tag && !r.digest) || (colon && !r.tag)) {
		kap_ref_clear(&r);
		return kap_error(err, ENOMEM, "parse reference");
	}
	if (strlen(r.registry) + 1 + strlen(r.repository) > NAME_MAX_TOTAL) {
		kap_ref_clear(&r);
		return kap_error_plain(err, EINVAL,
				       "invalid reference \"%s\": name longer than %d characters",
				       s, NAME_MAX_TOTAL);
	}
	*out = r;
	return 0;
}

char *kap_ref_string(const struct kap_ref *r)
{
	char *s = NULL;
	if (asprintf(&s, "%s/%s%s%s%s%s", r->registry, r->repository, r->tag ? ":" : "",
		     r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "") < 0)
		return NULL;
	return s;
}
