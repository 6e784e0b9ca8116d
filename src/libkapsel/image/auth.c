/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry credentials: the containers-auth.json(5) files podman, skopeo and buildah share (and
 * Docker's ~/.docker/config.json, same "auths" shape), the WWW-Authenticate challenges that say
 * how to use them, and kapsel login/logout. Everything parsed here comes from a file a user may
 * have edited by hand or from a registry: hostile.
 */
#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kapsel/registry.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

#define API	      __attribute__((visibility("default")))
#define AUTH_FILE_MAX (4u << 20)
#define HEADER_MAX    8192

/* ---- base64 (RFC 4648 §4) ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kap_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		*o++ = b64_alphabet[(v >> 18) & 63];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? b64_alphabet[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_alphabet, c) : NULL;
	return p ? (int)(p - b64_alphabet) : -1;
}

int kap_base64_decode(const char *s, char **out, size_t *len)
{
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '=')
		n--;
	/* One leftover character cannot encode a byte: not base64. */
	if (n % 4 == 1)
		return -EINVAL;
	cleanup_free char *buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return -ENOMEM;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(s[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	buf[o] = '\0';
	*out = steal_ptr(buf);
	if (len)
		*len = o;
	return 0;
}

/* ---- WWW-Authenticate (RFC 7235 §4.1, RFC 9110 §11.6.1) ---- */

static bool is_tchar(char c)
{
	return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* A token or quoted-string value; *out is the unescaped value. NULL on a malformed value. */
static const char *parse_value(const char *p, char **out)
{
	if (*p != '"') {
		const char *s = p;
		/* token68 values may end in '=' padding (RFC 7235 §2.1). */
		while (is_tchar(*p) || *p == '/' || *p == '=')
			p++;
		*out = strndup(s, (size_t)(p - s));
		return *out ? p : NULL;
	}
	p++;
	size_t cap = strlen(p) + 1, n = 0;
	char *v = malloc(cap);
	if (!v)
		return NULL;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;
		v[n++] = *p;
	}
	if (*p != '"') {
		free(v);
		return NULL;
	}
	v[n] = '\0';
	*out = v;
	return p + 1;
}

static void set_param(struct kap_auth_challenge *c, const char *name, size_t nlen, char *value)
{
	char **slot = NULL;
	if (nlen == 5 && !strncasecmp(name, "realm", 5))
		slot = &c->realm;
	else if (nlen == 7 && !strncasecmp(name, "service", 7))
		slot = &c->service;
	else if (nlen == 5 && !strncasecmp(name, "scope", 5))
		slot = &c->scope;
	else if (nlen == 5 && !strncasecmp(name, "error", 5))
		slot = &c->error;
	if (slot && !*slot)
		*slot = value;
	else
		free(value);
}

void kap_auth_challenge_clear(struct kap_auth_challenge *c)
{
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/*
 * challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ], and a header may list several
 * challenges separated by commas: a name followed by '=' is a parameter of the current
 * challenge, a name followed by anything else starts the next one.
 */
int kap_auth_challenge_parse(const char *header, struct kap_auth_challenge *out,
			     struct kapsel_error **err)
{
	struct kap_auth_challenge best = {0}, cur = {0};
	const char *p = header;
	if (strlen(header) > HEADER_MAX)
		return kap_error_plain(err, EINVAL, "WWW-Authenticate: longer than %d bytes",
				       HEADER_MAX);
	for (;;) {
		p = skip_ows(p);
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *name = p;
		while (is_tchar(*p))
			p++;
		size_t nlen = (size_t)(p - name);
		if (nlen == 0)
			goto bad;
		const char *q = skip_ows(p);
		bool param = *q == '=' && cur.scheme && q[1] != '=';
		if (param) {
			char *value = NULL;
			p = parse_value(skip_ows(q + 1), &value);
			if (!p)
				goto bad;
			set_param(&cur, name, nlen, value);
			continue;
		}
		if (cur.scheme && *q == '=') {
			/* token68 of the current scheme ("Basic dXNlcg=="): no parameters. */
			while (*q == '=')
				q++;
			p = q;
			continue;
		}
		/* A new challenge: keep the previous one if it is the best so far. */
		if (cur.scheme) {
			if (!best.scheme || (strcasecmp(best.scheme, "Bearer") &&
					     !strcasecmp(cur.scheme, "Bearer"))) {
				kap_auth_challenge_clear(&best);
				best = cur;
			} else {
				kap_auth_challenge_clear(&cur);
			}
			memset(&cur, 0, sizeof(cur));
		}
		cur.scheme = strndup(name, nlen);
		if (!cur.scheme)
			goto nomem;
		p = q;
	}
	if (cur.scheme) {
		if (!best.scheme ||
		    (strcasecmp(best.scheme, "Bearer") && !strcasecmp(cur.scheme, "Bearer"))) {
			kap_auth_challenge_clear(&best);
			best = cur;
		} else {
			kap_auth_challenge_clear(&cur);
		}
	}
	if (!best.scheme)
		return kap_error_plain(err, EINVAL, "WWW-Authenticate: no challenge in \"%.80s\"",
				       header);
	*out = best;
	return 0;
bad:
	kap_auth_challenge_clear(&cur);
	kap_auth_challenge_clear(&best);
	return kap_error_plain(err, EINVAL, "WWW-Authenticate: malformed at \"%.40s\"", p);
nomem:
	kap_auth_challenge_clear(&cur);
	kap_auth_challenge_clear(&best);
	return kap_error(err, ENOMEM, "WWW-Authenticate");
}

/* ---- auth.json ---- */

void kap_credentials_clear(struct kap_credentials *c)
{
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	free(c->user);
	free(c->password);
	free(c->source);
	memset(c, 0, sizeof(*c));
}

char *kap_auth_normalize_key(const char *key)
{
	bool had_scheme = false;
	if (!strncasecmp(key, "https://", 8)) {
		key += 8;
		had_scheme = true;
	} else if (!strncasecmp(key, "http://", 7)) {
		key += 7;
		had_scheme = true;
	}
	size_t n = strlen(key);
	/* Docker's legacy keys are URLs ("https://index.docker.io/v1/"): their path is an API
	 * version, not a namespace (containers-auth.json(5)). */
	if (had_scheme) {
		const char *slash = strchr(key, '/');
		if (slash)
			n = (size_t)(slash - key);
	}
	while (n > 0 && key[n - 1] == '/')
		n--;
	char *out = strndup(key, n);
	if (!out)
		return NULL;
	char *slash = strchr(out, '/');
	size_t host = slash ? (size_t)(slash - out) : strlen(out);
	for (size_t i = 0; i < host; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	static const char *const hub[] = {"index.docker.io", "registry-1.docker.io"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(hub); i++) {
		size_t hl = strlen(hub[i]);
		if (host == hl && !strncmp(out, hub[i], hl)) {
			char *r = NULL;
			if (asprintf(&r, "docker.io%s", out + hl) < 0)
				r = NULL;
			free(out);
			return r;
		}
	}
	return out;
}

/* How much of registry/repository the normalised key covers: 0 none, else its length. */
static size_t key_match(const char *key, const char *registry, const char *repository)
{
	size_t rl = strlen(registry);
	if (strncmp(key, registry, rl))
		return 0;
	if (key[rl] == '\0')
		return rl;
	if (key[rl] != '/' || !repository)
		return 0;
	const char *ns = key + rl + 1;
	size_t nl = strlen(ns);
	if (strncmp(ns, repository, nl) || (repository[nl] != '\0' && repository[nl] != '/'))
		return 0;
	return rl + 1 + nl;
}

static int decode_entry(const struct kap_json *entry, const char *path, struct kap_credentials *out,
			struct kapsel_error **err)
{
	cleanup_free char *auth = NULL;
	int r = kap_json_read_string(entry, path, "auth", &auth, err);
	if (r < 0)
		return r;
	if (!auth || !*auth)
		return -ENOENT; /* e.g. an entry only naming a credential helper */
	cleanup_free char *plain = NULL;
	size_t len = 0;
	if (kap_base64_decode(auth, &plain, &len) < 0)
		return kap_error_plain(err, EINVAL, "%s.auth: not base64", path);
	char *colon = memchr(plain, ':', len);
	if (!colon || strlen(plain) != len)
		return kap_error_plain(err, EINVAL, "%s.auth: expected base64 of \"user:password\"",
				       path);
	out->user = strndup(plain, (size_t)(colon - plain));
	out->password = strdup(colon + 1);
	explicit_bzero(plain, len);
	if (!out->user || !out->password) {
		kap_credentials_clear(out);
		return kap_error(err, ENOMEM, "%s", path);
	}
	return 0;
}

int kap_auth_lookup(const char *json, size_t len, const char *what, const char *registry,
		    const char *repository, struct kap_credentials *out, struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int r = kap_json_parse(json, len, what, &doc, err);
	if (r < 0)
		return r;
	if (kap_json_type(doc) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected a JSON object", what);
	struct kap_json *auths = NULL;
	r = kap_json_read_member(doc, what, "auths", KAP_JSON_OBJECT, &auths, err);
	if (r < 0)
		return r;
	if (!auths)
		return -ENOENT;
	cleanup_free char *want = kap_auth_normalize_key(registry);
	if (!want)
		return kap_error(err, ENOMEM, "%s", what);
	struct kap_json *best = NULL;
	const char *best_key = NULL;
	size_t best_len = 0;
	struct kap_json_iter it = kap_json_iter(auths);
	const char *key;
	struct kap_json *val;
	while (kap_json_iter_next(&it, &key, &val)) {
		cleanup_free char *norm = kap_auth_normalize_key(key);
		if (!norm)
			return kap_error(err, ENOMEM, "%s", what);
		size_t m = key_match(norm, want, repository);
		if (m > best_len && kap_json_type(val) == KAP_JSON_OBJECT) {
			best = val;
			best_key = key;
			best_len = m;
		}
	}
	if (!best)
		return -ENOENT;
	cleanup_free char *path = NULL;
	if (asprintf(&path, "%s: auths[\"%s\"]", what, best_key) < 0)
		return kap_error(err, ENOMEM, "%s", what);
	return decode_entry(best, path, out, err);
}

static char *home_path(const char *rel)
{
	const char *home = getenv("HOME");
	char *p = NULL;
	if (!home || !*home)
		return NULL;
	if (asprintf(&p, "%s/%s", home, rel) < 0)
		return NULL;
	return p;
}

char *kap_auth_default_file(void)
{
	const char *env = getenv("REGISTRY_AUTH_FILE");
	char *p = NULL;
	if (env && *env)
		return strdup(env);
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg && *xdg) {
		if (asprintf(&p, "%s/containers/auth.json", xdg) < 0)
			return NULL;
		return p;
	}
	/* What podman uses for root without a login session. */
	if (geteuid() == 0) {
		if (asprintf(&p, "/run/containers/%u/auth.json", (unsigned)geteuid()) < 0)
			return NULL;
		return p;
	}
	return home_path(".config/containers/auth.json");
}

static int lookup_file(const char *file, bool must_exist, const char *registry,
		       const char *repository, struct kap_credentials *out,
		       struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(AT_FDCWD, file, AUTH_FILE_MAX, &buf, &len, &e);
	if (r == -ENOENT && !must_exist) {
		kapsel_error_free(e);
		return -ENOENT;
	}
	if (r < 0) {
		if (err && !*err)
			*err = e;
		else
			kapsel_error_free(e);
		return kap_error_wrap(err, "auth file");
	}
	r = kap_auth_lookup(buf, len, file, registry, repository, out, err);
	explicit_bzero(buf, len);
	if (r == 0) {
		out->source = strdup(file);
		if (!out->source) {
			kap_credentials_clear(out);
			return kap_error(err, ENOMEM, "%s", file);
		}
		kap_debug("credentials for %s from %s", registry, file);
	}
	return r;
}

int kap_auth_find(const char *auth_file, const char *registry, const char *repository,
		  struct kap_credentials *out, struct kapsel_error **err)
{
	if (auth_file)
		return lookup_file(auth_file, true, registry, repository, out, err);
	char *files[4] = {NULL};
	files[0] = kap_auth_default_file();
	files[1] = home_path(".config/containers/auth.json");
	files[2] = home_path(".docker/config.json");
	int r = -ENOENT;
	for (size_t i = 0; i < 3 && r == -ENOENT; i++) {
		if (!files[i])
			continue;
		bool dup = false;
		for (size_t k = 0; k < i; k++)
			dup |= files[k] && !strcmp(files[k], files[i]);
		if (!dup)
			r = lookup_file(files[i], false, registry, repository, out, err);
	}
	for (size_t i = 0; i < 3; i++)
		free(files[i]);
	return r;
}

/* mkdir -p of file's parent directory, 0700: the file holds secrets. */
static int make_parent(const char *file, struct kapsel_error **err)
{
	cleanup_free char *dir = strdup(file);
	if (!dir)
		return kap_error(err, ENOMEM, "%s", file);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return kap_error(err, errno, "create %s", dir);
		*p = c;
		if (!c)
			break;
	}
	return 0;
}

int kap_auth_file_update(const char *file, const char *registry, const struct kap_credentials *c,
			 struct kapsel_error **err)
{
	cleanup_free char *key = kap_auth_normalize_key(registry);
	if (!key)
		return kap_error(err, ENOMEM, "%s", file);
	cleanup_json struct kap_json *doc = NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(AT_FDCWD, file, AUTH_FILE_MAX, &buf, &len, &e);
	if (r == -ENOENT) {
		kapsel_error_free(e);
		doc = kap_json_new_object();
	} else if (r < 0) {
		if (err && !*err)
			*err = e;
		else
			kapsel_error_free(e);
		return r;
	} else {
		r = kap_json_parse(buf, len, file, &doc, err);
		explicit_bzero(buf, len);
		if (r < 0)
			return r;
		if (kap_json_type(doc) != KAP_JSON_OBJECT)
			return kap_error_plain(err, EINVAL, "%s: expected a JSON object", file);
	}
	if (!doc)
		return kap_error(err, ENOMEM, "%s", file);
	struct kap_json *auths = NULL;
	r = kap_json_read_member(doc, file, "auths", KAP_JSON_OBJECT, &auths, err);
	if (r < 0)
		return r;

	/* json.h has no member removal: rebuild "auths" without the registry's entries (any key
	 * that normalises to it, e.g. Docker's "https://index.docker.io/v1/"). */
	struct kap_json *fresh = kap_json_new_object();
	if (!fresh)
		return kap_error(err, ENOMEM, "%s", file);
	bool removed = false;
	if (auths) {
		struct kap_json_iter it = kap_json_iter(auths);
		const char *k;
		struct kap_json *v;
		while (kap_json_iter_next(&it, &k, &v)) {
			cleanup_free char *norm = kap_auth_normalize_key(k);
			if (norm && !strcmp(norm, key)) {
				removed = true;
				continue;
			}
			kap_json_set(fresh, k, kap_json_get_ref(v));
		}
	}
	if (c) {
		cleanup_free char *plain = NULL;
		if (asprintf(&plain, "%s:%s", c->user, c->password) < 0) {
			kap_json_put(fresh);
			return kap_error(err, ENOMEM, "%s", file);
		}
		cleanup_free char *b64 = kap_base64_encode(plain, strlen(plain));
		explicit_bzero(plain, strlen(plain));
		struct kap_json *entry = kap_json_new_object();
		struct kap_json *s = b64 ? kap_json_new_string(b64) : NULL;
		if (b64)
			explicit_bzero(b64, strlen(b64));
		if (!entry || !s) {
			kap_json_put(entry);
			kap_json_put(s);
			kap_json_put(fresh);
			return kap_error(err, ENOMEM, "%s", file);
		}
		kap_json_set(entry, "auth", s);
		kap_json_set(fresh, key, entry);
	} else if (!removed) {
		kap_json_put(fresh);
		return kap_error_plain(err, ENOENT, "not logged in to %s (no entry in %s)", key,
				       file);
	}
	kap_json_set(doc, "auths", fresh);

	cleanup_free char *text = kap_json_dump(doc, true);
	if (!text)
		return kap_error(err, ENOMEM, "%s", file);
	r = make_parent(file, err);
	if (r < 0)
		return r;
	cleanup_free char *dir = strdup(file);
	if (!dir)
		return kap_error(err, ENOMEM, "%s", file);
	char *slash = strrchr(dir, '/');
	const char *name = slash ? slash + 1 : dir;
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	cleanup_close int dfd = open(slash ? dir : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kap_error(err, errno, "open %s", slash ? dir : ".");
	size_t tlen = strlen(text);
	/* umask cannot widen 0600; an existing file keeps the mode it had only if we let it, so
	 * the temp file is created fresh with 0600 every time. */
	r = kap_fs_write_atomic(dfd, name, text, tlen, 0600, true, err);
	explicit_bzero(text, tlen);
	return r;
}

/* ---- kapsel login / logout ---- */

/* The registry part of what a user typed: "https://host:5000/" -> "host:5000". */
static char *registry_arg(const char *arg, struct kapsel_error **err)
{
	char *key = kap_auth_normalize_key(arg);
	if (!key)
		return NULL;
	if (!*key || strchr(key, '/') || strpbrk(key, " \t\r\n@")) {
		kap_error_plain(err, EINVAL, "\"%s\": expected a registry (host[:port])", arg);
		free(key);
		return NULL;
	}
	return key;
}

API int kapsel_login(const char *registry, const char *user, const char *password,
		     const struct kapsel_login_options *o, struct kapsel_error **err)
{
	struct kapsel_login_options none = {0};
	if (!o)
		o = &none;
	if (!user || !*user || strchr(user, ':'))
		return kap_error_plain(err, EINVAL, "login: a user name (without ':') is required");
	if (!password || !*password)
		return kap_error_plain(err, EINVAL, "login: an empty password is not accepted");
	cleanup_free char *reg = registry_arg(registry, err);
	if (!reg)
		return err && *err ? -(*err)->code : -ENOMEM;
	struct kap_credentials c = {.user = (char *)user, .password = (char *)password};
	struct kap_registry_opts ro = {.insecure = o->insecure, .creds = &c, .login = true};
	struct kap_registry *r = NULL;
	sigset_t pipe, old;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &old);
	int ret = kap_registry_open(reg, NULL, &ro, &r, err);
	kap_registry_close(r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		return ret;
	cleanup_free char *file = o->auth_file ? strdup(o->auth_file) : kap_auth_default_file();
	if (!file)
		return kap_error_plain(err, ENOENT, "login: no auth file: set REGISTRY_AUTH_FILE");
	return kap_auth_file_update(file, reg, &c, err);
}

API int kapsel_logout(const char *registry, const struct kapsel_login_options *o, bool all,
		      struct kapsel_error **err)
{
	struct kapsel_login_options none = {0};
	if (!o)
		o = &none;
	cleanup_free char *file = o->auth_file ? strdup(o->auth_file) : kap_auth_default_file();
	if (!file)
		return kap_error_plain(err, ENOENT, "logout: no auth file: set REGISTRY_AUTH_FILE");
	if (all) {
		if (unlink(file) < 0 && errno != ENOENT)
			return kap_error(err, errno, "remove %s", file);
		return 0;
	}
	cleanup_free char *reg = registry_arg(registry, err);
	if (!reg)
		return err && *err ? -(*err)->code : -ENOMEM;
	return kap_auth_file_update(file, reg, NULL, err);
}
