/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI distribution API (distribution-spec 1.1, "Pull") over libcurl. libcurl is bound with
 * dlopen on first use (core/dl.h): linking it would cost every kapsel process, including the
 * container start path, ~5 ms and ~10 MiB.
 *
 * One struct kap_registry per (registry, repository): it finds the API (https, or plain http
 * where allowed), holds the Authorization header (Bearer token or Basic, shared by every
 * transfer and refreshed on 401) and a small pool of curl easy handles so that parallel blob
 * downloads each have their own connection and sequential ones reuse it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "image/image.h"

#define ERRBODY_MAX  (64u << 10)
#define TOKEN_MAX    (1u << 20)
#define CONF_MAX     (1u << 20)
#define MAX_ATTEMPTS 4 /* 1 + 3 retries: 0.2 s, 0.6 s, 1.8 s apart */
#define POOL_SIZE    8
#define USER_AGENT   "kapsel/" KAPSEL_VERSION

/* ---- libcurl, bound lazily ---- */

static struct {
	void *h;
	__typeof__(curl_global_init) *global_init;
	__typeof__(curl_easy_init) *easy_init;
	__typeof__(curl_easy_setopt) *easy_setopt;
	__typeof__(curl_easy_perform) *easy_perform;
	__typeof__(curl_easy_getinfo) *easy_getinfo;
	__typeof__(curl_easy_cleanup) *easy_cleanup;
	__typeof__(curl_easy_reset) *easy_reset;
	__typeof__(curl_easy_strerror) *easy_strerror;
	__typeof__(curl_slist_append) *slist_append;
	__typeof__(curl_slist_free_all) *slist_free_all;
} curl;

static pthread_mutex_t curl_init_lock = PTHREAD_MUTEX_INITIALIZER;
static bool curl_ready;

static int curl_bind(struct kapsel_error **err)
{
	static const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("curl_global_init", curl.global_init),
	    KAP_DL_SYM("curl_easy_init", curl.easy_init),
	    KAP_DL_SYM("curl_easy_setopt", curl.easy_setopt),
	    KAP_DL_SYM("curl_easy_perform", curl.easy_perform),
	    KAP_DL_SYM("curl_easy_getinfo", curl.easy_getinfo),
	    KAP_DL_SYM("curl_easy_cleanup", curl.easy_cleanup),
	    KAP_DL_SYM("curl_easy_reset", curl.easy_reset),
	    KAP_DL_SYM("curl_easy_strerror", curl.easy_strerror),
	    KAP_DL_SYM("curl_slist_append", curl.slist_append),
	    KAP_DL_SYM("curl_slist_free_all", curl.slist_free_all),
	};
	int r = 0;
	pthread_mutex_lock(&curl_init_lock);
	if (curl_ready)
		goto out;
	r = kap_dl_bind("libcurl.so.4", "libcurl4", &curl.h, syms, KAP_ARRAY_SIZE(syms), err);
	if (r < 0)
		goto out;
	/* curl_global_init is not thread-safe: once, here, before any transfer thread. */
	if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		r = kap_error_plain(err, EIO, "libcurl: global initialisation failed");
		goto out;
	}
	curl_ready = true;
out:
	pthread_mutex_unlock(&curl_init_lock);
	return r;
}

/* ---- pure helpers (unit-tested) ---- */

const char *kap_registry_host(const char *registry)
{
	return strcmp(registry, "docker.io") ? registry : "registry-1.docker.io";
}

char *kap_registry_url(const char *scheme, const char *registry, const char *repository,
		       const char *kind, const char *reference)
{
	char *url = NULL;
	int n;
	if (!repository)
		n = asprintf(&url, "%s://%s/v2/", scheme, kap_registry_host(registry));
	else
		n = asprintf(&url, "%s://%s/v2/%s/%s/%s", scheme, kap_registry_host(registry),
			     repository, kind, reference);
	return n < 0 ? NULL : url;
}

/* RFC 3986 §2.3: everything but unreserved characters is percent-encoded. */
static void append_escaped(char *out, size_t *len, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || strchr("-._~", c))
			out[(*len)++] = (char)c;
		else
			*len += (size_t)sprintf(out + *len, "%%%02X", c);
	}
	out[*len] = '\0';
}

char *kap_registry_token_url(const struct kap_auth_challenge *c, const char *default_scope)
{
	if (!c->realm || !*c->realm)
		return NULL;
	const char *scope = c->scope && *c->scope ? c->scope : default_scope;
	const char *service = c->service && *c->service ? c->service : NULL;
	/* Escaping at most triples a value's length. */
	size_t cap = strlen(c->realm) + 32 + (service ? 3 * strlen(service) : 0) +
		     (scope ? 3 * strlen(scope) : 0);
	char *url = malloc(cap);
	if (!url)
		return NULL;
	size_t len = (size_t)sprintf(url, "%s", c->realm);
	char sep = strchr(url, '?') ? '&' : '?';
	if (service) {
		len += (size_t)sprintf(url + len, "%cservice=", sep);
		append_escaped(url, &len, service);
		sep = '&';
	}
	if (scope) {
		len += (size_t)sprintf(url + len, "%cscope=", sep);
		append_escaped(url, &len, scope);
	}
	return url;
}

/* The host part of "host[:port]" or "[v6]:port". */
static char *registry_hostname(const char *registry)
{
	if (registry[0] == '[') {
		const char *end = strchr(registry, ']');
		return end ? strndup(registry + 1, (size_t)(end - registry - 1)) : NULL;
	}
	const char *colon = strchr(registry, ':');
	if (colon && strchr(colon + 1, ':'))
		return strdup(registry); /* a bare IPv6 address */
	return strndup(registry, colon ? (size_t)(colon - registry) : strlen(registry));
}

bool kap_registry_is_local(const char *registry)
{
	cleanup_free char *host = registry_hostname(registry);
	if (!host)
		return false;
	if (!strcasecmp(host, "localhost"))
		return true;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

int64_t kap_http_content_range_start(const char *value)
{
	if (!value || strncasecmp(value, "bytes ", 6))
		return -1;
	const char *p = value + 6;
	if (!isdigit((unsigned char)*p))
		return -1;
	char *end;
	errno = 0;
	long long start = strtoll(p, &end, 10);
	if (errno || *end != '-')
		return -1;
	return start;
}

/*
 * containers-registries.conf(5): v2 [[registry]] tables with prefix/location and insecure
 * (the longest matching prefix wins), and v1's [registries.insecure] registries = [...].
 * Only what decides insecure is read; a TOML parser for two keys would be out of proportion.
 */
struct conf_entry {
	char pattern[512];
	bool insecure, has_prefix;
};

static bool conf_pattern_matches(const char *pattern, const char *registry, const char *repository,
				 size_t *score)
{
	if (!strncmp(pattern, "*.", 2)) {
		cleanup_free char *host = registry_hostname(registry);
		size_t hl = host ? strlen(host) : 0, pl = strlen(pattern + 1);
		if (!host || hl <= pl || strcasecmp(host + hl - pl, pattern + 1))
			return false;
		*score = pl;
		return true;
	}
	size_t rl = strlen(registry);
	if (strncmp(pattern, registry, rl))
		return false;
	if (pattern[rl] == '\0') {
		*score = rl;
		return true;
	}
	if (pattern[rl] != '/' || !repository)
		return false;
	const char *ns = pattern + rl + 1;
	size_t nl = strlen(ns);
	if (strncmp(ns, repository, nl) || (repository[nl] && repository[nl] != '/'))
		return false;
	*score = rl + 1 + nl;
	return true;
}

/* The next quoted string in p ("..." or '...') into out; returns the rest or NULL. */
static const char *conf_string(const char *p, char *out, size_t size)
{
	while (*p && *p != '"' && *p != '\'')
		p++;
	if (!*p)
		return NULL;
	char q = *p++;
	size_t n = 0;
	for (; *p && *p != q; p++) {
		if (q == '"' && *p == '\\' && p[1])
			p++;
		if (n + 1 < size)
			out[n++] = *p;
	}
	out[n] = '\0';
	return *p ? p + 1 : NULL;
}

bool kap_registries_conf_insecure(const char *text, const char *registry, const char *repository)
{
	enum { NONE, REGISTRY, MIRROR, V1_INSECURE, OTHER } section = NONE;
	struct conf_entry cur = {0};
	bool have = false, result = false, in_v1_array = false;
	size_t best = 0;
	const char *line = text;

#define FINISH_ENTRY()                                                                             \
	do {                                                                                       \
		size_t score_;                                                                     \
		if (have && cur.pattern[0] &&                                                      \
		    conf_pattern_matches(cur.pattern, registry, repository, &score_) &&            \
		    score_ >= best) {                                                              \
			best = score_;                                                             \
			result = cur.insecure;                                                     \
		}                                                                                  \
		memset(&cur, 0, sizeof(cur));                                                      \
		have = false;                                                                      \
	} while (0)

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char buf[1024];
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		memcpy(buf, line, len);
		buf[len] = '\0';
		line = nl ? nl + 1 : NULL;

		/* Strip a comment that is not inside a string. */
		char q = 0;
		for (char *c = buf; *c; c++) {
			if (q) {
				if (*c == '\\' && q == '"' && c[1])
					c++;
				else if (*c == q)
					q = 0;
			} else if (*c == '"' || *c == '\'') {
				q = *c;
			} else if (*c == '#') {
				*c = '\0';
				break;
			}
		}
		char *s = buf;
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			continue;

		if (in_v1_array) {
			char val[512];
			const char *p = s;
			while ((p = conf_string(p, val, sizeof(val)))) {
				size_t score;
				if (conf_pattern_matches(val, registry, repository, &score) &&
				    score >= best) {
					best = score;
					result = true;
				}
			}
			if (strchr(s, ']'))
				in_v1_array = false;
			continue;
		}
		if (*s == '[') {
			if (section == REGISTRY || section == MIRROR)
				if (strncmp(s, "[[registry.mirror]]", 19))
					FINISH_ENTRY();
			if (!strncmp(s, "[[registry]]", 12)) {
				section = REGISTRY;
				have = true;
			} else if (!strncmp(s, "[[registry.mirror]]", 19)) {
				section = MIRROR;
			} else if (!strncmp(s, "[registries.insecure]", 21)) {
				section = V1_INSECURE;
			} else {
				section = OTHER;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq)
			continue;
		char *k = s, *ke = eq;
		while (ke > k && isspace((unsigned char)ke[-1]))
			ke--;
		*ke = '\0';
		char *v = eq + 1;
		while (isspace((unsigned char)*v))
			v++;
		if (section == REGISTRY) {
			if (!strcmp(k, "prefix")) {
				conf_string(v, cur.pattern, sizeof(cur.pattern));
				cur.has_prefix = true;
			} else if (!strcmp(k, "location") && !cur.has_prefix) {
				conf_string(v, cur.pattern, sizeof(cur.pattern));
			} else if (!strcmp(k, "insecure")) {
				cur.insecure = !strncmp(v, "true", 4);
			}
		} else if (section == V1_INSECURE && !strcmp(k, "registries")) {
			char val[512];
			const char *p = v;
			while ((p = conf_string(p, val, sizeof(val)))) {
				size_t score;
				if (conf_pattern_matches(val, registry, repository, &score) &&
				    score >= best) {
					best = score;
					result = true;
				}
			}
			in_v1_array = !strchr(v, ']');
		}
	}
	if (section == REGISTRY || section == MIRROR)
		FINISH_ENTRY();
#undef FINISH_ENTRY
	return result;
}

static bool conf_file_insecure(int dirfd, const char *path, const char *registry,
			       const char *repository)
{
	cleanup_free char *text = NULL;
	struct kapsel_error *e = NULL;
	if (kap_fs_read_file(dirfd, path, CONF_MAX, &text, NULL, &e) < 0) {
		kapsel_error_free(e);
		return false;
	}
	return kap_registries_conf_insecure(text, registry, repository);
}

/* $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf and its .d drop-ins. */
static bool registry_conf_insecure(const char *registry, const char *repository)
{
	const char *env = getenv("CONTAINERS_REGISTRIES_CONF");
	if (env && *env)
		return conf_file_insecure(AT_FDCWD, env, registry, repository);
	bool insecure =
	    conf_file_insecure(AT_FDCWD, "/etc/containers/registries.conf", registry, repository);
	struct dirent **names = NULL;
	int n = scandir("/etc/containers/registries.conf.d", &names, NULL, alphasort);
	cleanup_close int dfd =
	    n > 0 ? open("/etc/containers/registries.conf.d", O_PATH | O_DIRECTORY | O_CLOEXEC)
		  : -EBADF;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(names[i]->d_name);
		if (dfd >= 0 && l > 5 && !strcmp(names[i]->d_name + l - 5, ".conf"))
			insecure |= conf_file_insecure(dfd, names[i]->d_name, registry, repository);
		free(names[i]);
	}
	free(names);
	return insecure;
}

/* ---- the registry handle ---- */

struct kap_registry {
	char *registry, *repository, *label;
	const char *scheme;
	bool insecure; /* TLS unverified (plain http allowed at open) */
	struct kap_credentials creds;
	bool has_creds;
	const volatile sig_atomic_t *cancel;
	atomic_bool cancelled;
	pthread_mutex_t lock; /* auth_header, auth_gen, pool */
	pthread_mutex_t auth_lock;
	char *auth_header;
	unsigned auth_gen;
	CURL *pool[POOL_SIZE];
	size_t n_pool;
};

const char *kap_registry_label(const struct kap_registry *r)
{
	return r->label;
}

void kap_registry_cancel(struct kap_registry *r)
{
	atomic_store(&r->cancelled, true);
}

static bool cancelled(struct kap_registry *r)
{
	return atomic_load(&r->cancelled) || (r->cancel && *r->cancel);
}

static CURL *handle_get(struct kap_registry *r)
{
	CURL *h = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->n_pool > 0)
		h = r->pool[--r->n_pool];
	pthread_mutex_unlock(&r->lock);
	return h ? h : curl.easy_init();
}

static void handle_put(struct kap_registry *r, CURL *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&r->lock);
	if (r->n_pool < POOL_SIZE) {
		r->pool[r->n_pool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (h)
		curl.easy_cleanup(h);
}

void kap_registry_close(struct kap_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_pool; i++)
		curl.easy_cleanup(r->pool[i]);
	free(r->registry);
	free(r->repository);
	free(r->label);
	if (r->auth_header)
		explicit_bzero(r->auth_header, strlen(r->auth_header));
	free(r->auth_header);
	kap_credentials_clear(&r->creds);
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->auth_lock);
	free(r);
}

/* ---- one HTTP transfer ---- */

struct membuf {
	char *data;
	size_t len, cap;
};

static bool membuf_append(struct membuf *b, const void *p, size_t n, size_t limit)
{
	if (b->len + n > limit)
		return false;
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		while (nc < b->len + n + 1)
			nc *= 2;
		char *nd = realloc(b->data, nc);
		if (!nd)
			return false;
		b->data = nd;
		b->cap = nc;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

enum body_mode { BODY_DISCARD, BODY_MEMORY, BODY_SINK };

struct xfer {
	struct kap_registry *r;
	const char *what; /* "manifest \"latest\"", "blob sha256:..." */
	/* request */
	const char *accept;
	const char *auth; /* an Authorization header of its own (token requests) */
	bool own_auth;	  /* send `auth`, not the registry's */
	bool handle_401;  /* authenticate and retry once on 401 */
	bool retry_connect;
	enum body_mode mode;
	size_t limit;
	const struct kap_blob_sink *sink;
	int64_t size;
	/* request method and body (push): NULL method is GET; a body comes from memory or from
	 * up_fd at [up_off, up_off + up_len) */
	const char *method;
	const char *req_type;	  /* Content-Type of the body */
	const char *extra_header; /* one more header line ("Content-Range: 0-99") */
	const char *up_mem;
	int up_fd;
	int64_t up_off, up_len, up_pos;
	bool has_body;
	/* response */
	long status;
	char *www_auth, *content_type, *content_range, *location;
	struct membuf body, errbody;
	int64_t offset; /* bytes given to the sink */
	bool started, too_big;
	bool answered;		  /* a response line arrived (this attempt) */
	struct timespec quiet_at; /* when the last byte arrived, or the attempt began */
	curl_off_t seen;	  /* bytes (both ways) at quiet_at */
	bool warned;		  /* the "no answer" note was given */
	int sink_r;
	struct kapsel_error *sink_err;
	char errbuf[CURL_ERROR_SIZE];
};

static void xfer_reset_response(struct xfer *x)
{
	x->status = 0;
	free(x->www_auth);
	free(x->content_type);
	free(x->content_range);
	free(x->location);
	x->www_auth = x->content_type = x->content_range = x->location = NULL;
	x->errbody.len = 0;
	x->body.len = 0;
	x->started = false;
	x->too_big = false;
	x->errbuf[0] = '\0';
}

static void xfer_free(struct xfer *x)
{
	xfer_reset_response(x);
	free(x->body.data);
	free(x->errbody.data);
	kapsel_error_free(x->sink_err);
}

static char *header_value(const char *p, size_t n)
{
	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' '))
		n--;
	return strndup(p, n);
}

static size_t on_header(char *b, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nitems;
	if (n >= 5 && !strncmp(b, "HTTP/", 5)) {
		/* A new response (redirects, 100-continue): forget the previous one's headers. */
		xfer_reset_response(x);
		x->answered = true;
		const char *sp = memchr(b, ' ', n);
		x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		return n;
	}
	const char *colon = memchr(b, ':', n);
	if (!colon)
		return n;
	size_t nl = (size_t)(colon - b), vl = n - nl - 1;
	char **slot = NULL;
	if (nl == 16 && !strncasecmp(b, "WWW-Authenticate", nl))
		slot = &x->www_auth;
	else if (nl == 12 && !strncasecmp(b, "Content-Type", nl))
		slot = &x->content_type;
	else if (nl == 13 && !strncasecmp(b, "Content-Range", nl))
		slot = &x->content_range;
	else if (nl == 8 && !strncasecmp(b, "Location", nl))
		slot = &x->location;
	if (!slot)
		return n;
	cleanup_free char *v = header_value(colon + 1, vl);
	if (!v)
		return 0;
	if (slot == &x->www_auth && *slot) {
		/* Several WWW-Authenticate fields combine into one list (RFC 9110 §5.3). */
		char *joined = NULL;
		if (strlen(*slot) < 8192 && asprintf(&joined, "%s, %s", *slot, v) >= 0) {
			free(*slot);
			*slot = joined;
		}
		return n;
	}
	free(*slot);
	*slot = steal_ptr(v);
	return n;
}

static size_t sink_body(struct xfer *x, const char *p, size_t n)
{
	if (!x->started) {
		x->started = true;
		if (x->offset > 0 && x->status == 206) {
			int64_t start = kap_http_content_range_start(x->content_range);
			if (start != x->offset) {
				x->sink_r = kap_error_plain(
				    &x->sink_err, EPROTO,
				    "%s: %s: resumed at byte %lld, asked for byte %lld",
				    x->r->label, x->what, (long long)start, (long long)x->offset);
				return 0;
			}
		} else if (x->offset > 0 || x->status == 206) {
			/* The server ignored Range (200) or sent a range we did not ask for:
			 * start over from byte 0. */
			if (x->status == 206) {
				x->sink_r = kap_error_plain(&x->sink_err, EPROTO,
							    "%s: %s: unrequested partial content",
							    x->r->label, x->what);
				return 0;
			}
			x->sink_r = x->sink->restart(x->sink->ctx, &x->sink_err);
			if (x->sink_r < 0)
				return 0;
			x->offset = 0;
		}
	}
	if (x->size >= 0 && (int64_t)n > x->size - x->offset) {
		x->sink_r = kap_error_plain(
		    &x->sink_err, EFBIG, "%s: %s: larger than the %lld bytes its descriptor gives",
		    x->r->label, x->what, (long long)x->size);
		return 0;
	}
	x->sink_r = x->sink->write(x->sink->ctx, p, n, &x->sink_err);
	if (x->sink_r < 0)
		return 0;
	x->offset += (int64_t)n;
	return n;
}

static size_t on_body(char *p, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nitems;
	if (cancelled(x->r))
		return 0;
	if (x->status < 200 || x->status >= 300) {
		/* Error bodies: keep the start for the message, drop the rest. */
		size_t room = ERRBODY_MAX - x->errbody.len;
		membuf_append(&x->errbody, p, n < room ? n : room, ERRBODY_MAX);
		return n;
	}
	switch (x->mode) {
	case BODY_DISCARD:
		return n;
	case BODY_MEMORY:
		if (!membuf_append(&x->body, p, n, x->limit)) {
			x->too_big = true;
			return 0;
		}
		return n;
	case BODY_SINK:
		return sink_body(x, p, n);
	}
	return 0;
}

/*
 * How long a request may go without a byte before it is dropped (CURLOPT_LOW_SPEED_TIME):
 * 60 s, or $KAPSEL_REGISTRY_TIMEOUT seconds (slow links; tests).
 */
static long stall_timeout_s(void)
{
	const char *v = getenv("KAPSEL_REGISTRY_TIMEOUT");
	char *end;
	long t = v ? strtol(v, &end, 10) : 0;
	return v && *v && !*end && t > 0 && t <= 3600 ? t : 60;
}

static double since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = ud;
	/* A registry that accepted the connection and says nothing would otherwise leave the
	 * user looking at no output for the whole timeout: say what we wait for, once. */
	if (dlnow + ulnow != x->seen) {
		x->seen = dlnow + ulnow;
		clock_gettime(CLOCK_MONOTONIC, &x->quiet_at);
	} else if (!x->warned) {
		long limit = stall_timeout_s();
		double quiet = since(&x->quiet_at);
		if (quiet >= (limit < 20 ? (double)limit / 2 : 10.0)) {
			x->warned = true;
			kap_warn("%s: %s: no answer for %.0f s (giving up after %ld s)",
				 x->r->label, x->what, quiet, limit);
		}
	}
	return cancelled(x->r) ? 1 : 0;
}

static bool retriable_curl(CURLcode cc, bool retry_connect)
{
	switch (cc) {
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	case CURLE_COULDNT_CONNECT:
		return retry_connect;
	default:
		return false;
	}
}

static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return ETIMEDOUT;
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		return ECONNRESET;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_TOO_MANY_REDIRECTS:
		return EPROTO;
	case CURLE_OUT_OF_MEMORY:
		return ENOMEM;
	default:
		return EIO;
	}
}

/* Sleep before retry `attempt` (1-based), waking early when cancelled. */
static void backoff(struct kap_registry *r, int attempt)
{
	long ms = 200;
	for (int i = 1; i < attempt; i++)
		ms *= 3;
	for (long slept = 0; slept < ms && !cancelled(r); slept += 50)
		nanosleep(&(struct timespec){.tv_nsec = 50 * 1000000L}, NULL);
}

/* A registry error body ({"errors":[{"code","message"}]}, distribution-spec "Error Codes")
 * as one printable line, or NULL. */
static char *error_summary(const struct membuf *b)
{
	if (!b->len)
		return NULL;
	if (b->data[0] != '{') {
		/* A plain-text answer ("Method not allowed"): its first line, when it is text. */
		size_t n = strcspn(b->data, "\r\n");
		if (n == 0 || n > 200)
			return NULL;
		for (size_t i = 0; i < n; i++)
			if (!isprint((unsigned char)b->data[i]))
				return NULL;
		return strndup(b->data, n);
	}
	cleanup_json struct kap_json *doc = NULL;
	struct kapsel_error *e = NULL;
	if (kap_json_parse(b->data, b->len, "error body", &doc, &e) < 0) {
		kapsel_error_free(e);
		return NULL;
	}
	struct kap_json *errors = kap_json_get(doc, "errors");
	struct kap_json *first = kap_json_array_at(errors, 0);
	if (kap_json_type(errors) != KAP_JSON_ARRAY || kap_json_type(first) != KAP_JSON_OBJECT)
		return NULL;
	const char *code = kap_json_string(kap_json_get(first, "code"));
	const char *msg = kap_json_string(kap_json_get(first, "message"));
	char *out = NULL;
	if (asprintf(&out, "%s%s%s", code ? code : "", code && msg ? ": " : "", msg ? msg : "") < 0)
		return NULL;
	/* Hostile text goes to a terminal: printable ASCII only, bounded. */
	for (char *c = out; *c; c++)
		if (!isprint((unsigned char)*c))
			*c = '?';
	if (strlen(out) > 200)
		out[200] = '\0';
	return out;
}

static int status_error(struct kap_registry *r, struct xfer *x, struct kapsel_error **err)
{
	cleanup_free char *summary = error_summary(&x->errbody);
	char detail[256] = "";
	if (summary && *summary)
		snprintf(detail, sizeof(detail), ": %s", summary);
	switch (x->status) {
	case 401:
		if (r->has_creds)
			return kap_error_plain(
			    err, EACCES,
			    "%s: %s: the credentials for %s%s%s were rejected (HTTP 401%s)",
			    r->label, x->what, r->registry, r->creds.source ? " from " : "",
			    r->creds.source ? r->creds.source : "", detail);
		return kap_error_plain(err, EACCES,
				       "%s: %s: authentication required (HTTP 401%s); log in with "
				       "'kapsel login %s'",
				       r->label, x->what, detail, r->registry);
	case 403:
		return kap_error_plain(err, EACCES, "%s: %s: access denied (HTTP 403%s)", r->label,
				       x->what, detail);
	case 404:
		return kap_error_plain(err, ENOENT, "%s: %s: not found (HTTP 404%s)", r->label,
				       x->what, detail);
	case 429:
		return kap_error_plain(err, EAGAIN,
				       "%s: %s: too many requests (HTTP 429%s) after %d attempts",
				       r->label, x->what, detail, MAX_ATTEMPTS);
	default:
		if (x->status >= 500)
			return kap_error_plain(
			    err, EIO, "%s: %s: server error (HTTP %ld%s) after %d attempts",
			    r->label, x->what, x->status, detail, MAX_ATTEMPTS);
		return kap_error_plain(err, EPROTO, "%s: %s: unexpected HTTP status %ld%s",
				       r->label, x->what, x->status, detail);
	}
}

static int authenticate(struct kap_registry *r, const char *challenge, unsigned gen,
			const char *what, const char *scope, struct kapsel_error **err);

static struct curl_slist *request_headers(struct kap_registry *r, struct xfer *x, unsigned *gen,
					  bool *ok)
{
	struct curl_slist *l = NULL, *n;
	char buf[96];
	*ok = false;
	if (x->accept) {
		cleanup_free char *a = NULL;
		if (asprintf(&a, "Accept: %s", x->accept) < 0)
			return NULL;
		if (!(n = curl.slist_append(l, a)))
			goto fail;
		l = n;
	}
	if (x->req_type) {
		cleanup_free char *ct = NULL;
		if (asprintf(&ct, "Content-Type: %s", x->req_type) < 0)
			goto fail;
		if (!(n = curl.slist_append(l, ct)))
			goto fail;
		l = n;
	}
	if (x->extra_header) {
		if (!(n = curl.slist_append(l, x->extra_header)))
			goto fail;
		l = n;
	}
	if (x->has_body) {
		/* No "Expect: 100-continue" round trip before each upload. */
		if (!(n = curl.slist_append(l, "Expect:")))
			goto fail;
		l = n;
	}
	if (x->mode == BODY_SINK && x->offset > 0) {
		snprintf(buf, sizeof(buf), "Range: bytes=%lld-", (long long)x->offset);
		if (!(n = curl.slist_append(l, buf)))
			goto fail;
		l = n;
	}
	if (x->own_auth) {
		if (x->auth) {
			if (!(n = curl.slist_append(l, x->auth)))
				goto fail;
			l = n;
		}
	} else {
		pthread_mutex_lock(&r->lock);
		*gen = r->auth_gen;
		bool have = r->auth_header != NULL;
		n = have ? curl.slist_append(l, r->auth_header) : l;
		pthread_mutex_unlock(&r->lock);
		if (have && !n)
			goto fail;
		l = n;
	}
	*ok = true;
	return l;
fail:
	curl.slist_free_all(l);
	return NULL;
}

#define SETOPT(h, o, v) curl.easy_setopt((h), (o), (v))

/* The request body: from memory, or pread from the blob (a retry starts it again). */
static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t want = size * nitems;
	int64_t left = x->up_len - x->up_pos;
	if (cancelled(x->r))
		return CURL_READFUNC_ABORT;
	if (left <= 0)
		return 0;
	if ((int64_t)want > left)
		want = (size_t)left;
	if (x->up_mem) {
		memcpy(buf, x->up_mem + x->up_pos, want);
	} else {
		ssize_t n = pread(x->up_fd, buf, want, (off_t)(x->up_off + x->up_pos));
		if (n <= 0)
			return CURL_READFUNC_ABORT;
		want = (size_t)n;
	}
	x->up_pos += (int64_t)want;
	return want;
}

static void setup_handle(struct kap_registry *r, CURL *h, struct xfer *x, const char *url,
			 struct curl_slist *headers)
{
	curl.easy_reset(h);
	SETOPT(h, CURLOPT_URL, url);
	SETOPT(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
	SETOPT(h, CURLOPT_USERAGENT, USER_AGENT);
	SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Blob downloads are redirected to storage (S3, CDNs). curl >= 7.58 sends a custom
	 * Authorization header only to the host (and, since 7.83, port and scheme) it was set
	 * for, unless CURLOPT_UNRESTRICTED_AUTH says otherwise. */
	SETOPT(h, CURLOPT_FOLLOWLOCATION, 1L);
	SETOPT(h, CURLOPT_MAXREDIRS, 10L);
	SETOPT(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	long stall = stall_timeout_s();
	SETOPT(h, CURLOPT_CONNECTTIMEOUT, stall < 30 ? stall : 30L);
	/* A stalled connection (no byte for a minute) is dropped and retried. */
	SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	SETOPT(h, CURLOPT_LOW_SPEED_TIME, stall);
	if (r->insecure) {
		SETOPT(h, CURLOPT_SSL_VERIFYPEER, 0L);
		SETOPT(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	SETOPT(h, CURLOPT_HTTPHEADER, headers);
	SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(h, CURLOPT_HEADERDATA, x);
	SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(h, CURLOPT_WRITEDATA, x);
	SETOPT(h, CURLOPT_NOPROGRESS, 0L);
	SETOPT(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	SETOPT(h, CURLOPT_XFERINFODATA, x);
	SETOPT(h, CURLOPT_ERRORBUFFER, x->errbuf);
	if (x->method && !strcmp(x->method, "HEAD")) {
		SETOPT(h, CURLOPT_NOBODY, 1L);
	} else if (x->method) {
		/* Uploads answer 201/202 with a Location to use next, never a redirect to follow.
		 */
		SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
		if (x->has_body) {
			SETOPT(h, CURLOPT_UPLOAD, 1L);
			SETOPT(h, CURLOPT_READFUNCTION, on_read);
			SETOPT(h, CURLOPT_READDATA, x);
			SETOPT(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->up_len);
		} else if (!strcmp(x->method, "POST")) {
			SETOPT(h, CURLOPT_POST, 1L);
			SETOPT(h, CURLOPT_POSTFIELDSIZE, 0L);
			SETOPT(h, CURLOPT_POSTFIELDS, "");
		}
		SETOPT(h, CURLOPT_CUSTOMREQUEST, x->method);
	}
}

/*
 * Run x against url until it has a final answer: retries dropped connections and 5xx/429
 * with backoff (a blob resumes with Range), authenticates once on 401 when x->handle_401.
 * Returns 0 with x->status set (any status), or -errno for transport failures.
 */
static int transfer(struct kap_registry *r, struct xfer *x, const char *url,
		    struct kapsel_error **err)
{
	CURL *h = handle_get(r);
	if (!h)
		return kap_error_plain(err, ENOMEM, "%s: %s: libcurl handle", r->label, x->what);
	bool auth_retried = false;
	int ret = 0;
	for (int attempt = 1;; attempt++) {
		unsigned gen = 0;
		bool ok;
		struct curl_slist *headers = request_headers(r, x, &gen, &ok);
		if (!ok) {
			ret = kap_error(err, ENOMEM, "%s: %s", r->label, x->what);
			break;
		}
		xfer_reset_response(x);
		x->up_pos = 0;
		x->answered = x->warned = false;
		x->seen = 0;
		clock_gettime(CLOCK_MONOTONIC, &x->quiet_at);
		setup_handle(r, h, x, url, headers);
		CURLcode cc = curl.easy_perform(h);
		curl.slist_free_all(headers);
		if (x->sink_r < 0) {
			if (err && !*err)
				*err = steal_ptr(x->sink_err);
			ret = x->sink_r;
			break;
		}
		if (cancelled(r)) {
			ret = kap_error_plain(err, EINTR, "%s: %s: interrupted", r->label, x->what);
			break;
		}
		if (x->too_big) {
			ret = kap_error_plain(err, EFBIG, "%s: %s: larger than %zu bytes", r->label,
					      x->what, x->limit);
			break;
		}
		/* A 2xx body that ended early without a transport error (no Content-Length). */
		if (cc == CURLE_OK && x->mode == BODY_SINK && x->status / 100 == 2 &&
		    x->size >= 0 && x->offset != x->size)
			cc = CURLE_PARTIAL_FILE;
		if (cc == CURLE_OPERATION_TIMEDOUT && !x->answered) {
			/* Not a word in the whole timeout (a registry that accepts and never
			 * answers, a black hole): asking again would only multiply the wait. */
			ret = kap_error_plain(err, ETIMEDOUT, "%s: %s: no answer within %ld s (%s)",
					      r->label, x->what, stall_timeout_s(),
					      x->errbuf[0] ? x->errbuf : curl.easy_strerror(cc));
			break;
		}
		if (cc != CURLE_OK) {
			if (retriable_curl(cc, x->retry_connect) && attempt < MAX_ATTEMPTS) {
				kap_debug("%s: %s: %s; retrying", r->label, x->what,
					  x->errbuf[0] ? x->errbuf : curl.easy_strerror(cc));
				backoff(r, attempt);
				continue;
			}
			char tries[32] = "";
			if (attempt > 1)
				snprintf(tries, sizeof(tries), " (after %d attempts)", attempt);
			ret = kap_error_plain(
			    err, curl_errno(cc), "%s: %s: %s%s", r->label, x->what,
			    x->errbuf[0] ? x->errbuf : curl.easy_strerror(cc), tries);
			break;
		}
		if (x->status == 401 && x->handle_401 && !auth_retried) {
			auth_retried = true;
			ret = authenticate(r, x->www_auth, gen, x->what, NULL, err);
			if (ret < 0)
				break;
			attempt--; /* not a failure of the transfer */
			continue;
		}
		if ((x->status >= 500 || x->status == 429) && attempt < MAX_ATTEMPTS) {
			kap_debug("%s: %s: HTTP %ld; retrying", r->label, x->what, x->status);
			backoff(r, attempt);
			continue;
		}
		break;
	}
	handle_put(r, h);
	return ret;
}

/* ---- authentication (distribution "token" spec, RFC 7617) ---- */

static char *basic_header(const struct kap_credentials *c)
{
	cleanup_free char *plain = NULL;
	if (asprintf(&plain, "%s:%s", c->user, c->password) < 0)
		return NULL;
	cleanup_free char *b64 = kap_base64_encode(plain, strlen(plain));
	explicit_bzero(plain, strlen(plain));
	char *h = NULL;
	if (!b64 || asprintf(&h, "Authorization: Basic %s", b64) < 0)
		h = NULL;
	if (b64)
		explicit_bzero(b64, strlen(b64));
	return h;
}

static bool token_ok(const char *t)
{
	if (!t || !*t || strlen(t) > 16384)
		return false;
	for (; *t; t++)
		if (!isgraph((unsigned char)*t))
			return false; /* no CR/LF: it becomes a header line */
	return true;
}

static int parse_token(const char *body, size_t len, const char *what, const char *label,
		       char **token, struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int ret = kap_json_parse(body, len, what, &doc, err);
	if (ret < 0)
		return ret;
	/* "token", or OAuth2's "access_token" (distribution token spec, "Token Response"). */
	const char *t = kap_json_string(kap_json_get(doc, "token"));
	if (!t)
		t = kap_json_string(kap_json_get(doc, "access_token"));
	if (!token_ok(t))
		return kap_error_plain(err, EPROTO, "%s: %s: no usable token in the response",
				       label, what);
	*token = strdup(t);
	if (!*token)
		return kap_error(err, ENOMEM, "%s", what);
	return 0;
}

static int fetch_token(struct kap_registry *r, const struct kap_auth_challenge *c,
		       const char *scope, char **token, struct kapsel_error **err)
{
	cleanup_free char *url = kap_registry_token_url(c, scope);
	if (!url)
		return kap_error_plain(
		    err, EPROTO, "%s: the registry asks for a Bearer token but names no realm",
		    r->label);
	if (strncasecmp(url, "https://", 8) && strncasecmp(url, "http://", 7))
		return kap_error_plain(err, EPROTO, "%s: token realm \"%.100s\" is not an HTTP URL",
				       r->label, c->realm);
	if (r->has_creds && !r->insecure && strncasecmp(url, "https://", 8))
		return kap_error_plain(err, EPROTO,
				       "%s: refusing to send credentials to the plain-HTTP token "
				       "service %.100s",
				       r->label, c->realm);
	cleanup_free char *basic = r->has_creds ? basic_header(&r->creds) : NULL;
	if (r->has_creds && !basic)
		return kap_error(err, ENOMEM, "%s", r->label);
	char what[160];
	snprintf(what, sizeof(what), "token from %.120s", c->realm);
	struct xfer x = {.r = r,
			 .what = what,
			 .own_auth = true,
			 .auth = basic,
			 .mode = BODY_MEMORY,
			 .limit = TOKEN_MAX,
			 .size = -1,
			 .retry_connect = true};
	int ret = transfer(r, &x, url, err);
	if (basic)
		explicit_bzero(basic, strlen(basic));
	if (ret < 0)
		goto out;
	if (x.status == 401 || x.status == 403) {
		if (r->has_creds)
			ret = kap_error_plain(
			    err, EACCES,
			    "%s: the credentials for %s%s%s were rejected by the "
			    "token service %.120s (HTTP %ld)",
			    r->label, r->registry, r->creds.source ? " from " : "",
			    r->creds.source ? r->creds.source : "", c->realm, x.status);
		else
			ret = kap_error_plain(err, EACCES,
					      "%s: authentication required (the token service "
					      "%.120s refused anonymous access: HTTP %ld); log in "
					      "with 'kapsel login %s'",
					      r->label, c->realm, x.status, r->registry);
		goto out;
	}
	if (x.status != 200) {
		ret = status_error(r, &x, err);
		goto out;
	}
	ret = parse_token(x.body.data ? x.body.data : "", x.body.len, what, r->label, token, err);
out:
	if (x.body.data)
		explicit_bzero(x.body.data, x.body.len);
	xfer_free(&x);
	return ret;
}

/*
 * Answer a 401's challenge: fetch a Bearer token (anonymous or with the credentials) or use
 * Basic. Transfers that hit 401 at the same time wait on auth_lock; whoever comes second
 * sees a newer auth_gen than its request used and just retries with the fresh header.
 */
static int authenticate(struct kap_registry *r, const char *challenge, unsigned gen,
			const char *what, const char *scope, struct kapsel_error **err)
{
	int ret = 0;
	pthread_mutex_lock(&r->auth_lock);
	pthread_mutex_lock(&r->lock);
	bool fresh = r->auth_gen != gen;
	bool had_basic = r->auth_header && !strncmp(r->auth_header, "Authorization: Basic ", 21);
	pthread_mutex_unlock(&r->lock);
	if (fresh)
		goto out;
	if (!challenge) {
		ret = kap_error_plain(err, EACCES,
				      "%s: %s: authentication required (HTTP 401 without a "
				      "WWW-Authenticate challenge)",
				      r->label, what);
		goto out;
	}
	struct kap_auth_challenge c = {0};
	ret = kap_auth_challenge_parse(challenge, &c, err);
	if (ret < 0) {
		kap_error_wrap(err, "%s: %s", r->label, what);
		goto out;
	}
	char *header = NULL;
	if (!strcasecmp(c.scheme, "Bearer")) {
		cleanup_free char *token = NULL;
		ret = fetch_token(r, &c, scope, &token, err);
		if (ret == 0 && asprintf(&header, "Authorization: Bearer %s", token) < 0)
			ret = kap_error(err, ENOMEM, "%s", r->label);
		if (token)
			explicit_bzero(token, strlen(token));
	} else if (!strcasecmp(c.scheme, "Basic")) {
		if (!r->has_creds)
			ret = kap_error_plain(err, EACCES,
					      "%s: %s: authentication required (HTTP 401, Basic); "
					      "log in with 'kapsel login %s'",
					      r->label, what, r->registry);
		else if (had_basic)
			ret = kap_error_plain(err, EACCES,
					      "%s: %s: the credentials for %s%s%s were rejected "
					      "(HTTP 401)",
					      r->label, what, r->registry,
					      r->creds.source ? " from " : "",
					      r->creds.source ? r->creds.source : "");
		else if (!(header = basic_header(&r->creds)))
			ret = kap_error(err, ENOMEM, "%s", r->label);
	} else {
		ret = kap_error_plain(err, ENOTSUP,
				      "%s: %s: unsupported authentication scheme \"%.40s\"",
				      r->label, what, c.scheme);
	}
	kap_auth_challenge_clear(&c);
	if (ret < 0)
		goto out;
	pthread_mutex_lock(&r->lock);
	if (r->auth_header)
		explicit_bzero(r->auth_header, strlen(r->auth_header));
	free(r->auth_header);
	r->auth_header = header;
	r->auth_gen++;
	pthread_mutex_unlock(&r->lock);
out:
	pthread_mutex_unlock(&r->auth_lock);
	return ret;
}

/* ---- open: find the API, authenticate ---- */

static int ping(struct kap_registry *r, struct xfer *x, struct kapsel_error **err)
{
	cleanup_free char *url = kap_registry_url(r->scheme, r->registry, NULL, NULL, NULL);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	return transfer(r, x, url, err);
}

int kap_registry_open(const char *registry, const char *repository,
		      const struct kap_registry_opts *o, struct kap_registry **out,
		      struct kapsel_error **err)
{
	int ret = curl_bind(err);
	if (ret < 0)
		return ret;
	struct kap_registry *r = calloc(1, sizeof(*r));
	if (!r)
		return kap_error(err, ENOMEM, "%s", registry);
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->auth_lock, NULL);
	r->registry = strdup(registry);
	r->repository = repository ? strdup(repository) : NULL;
	if (repository)
		ret = asprintf(&r->label, "%s/%s", registry, repository);
	else
		ret = (r->label = strdup(registry)) ? 0 : -1;
	if (!r->registry || (repository && !r->repository) || ret < 0 || !r->label) {
		r->label = NULL;
		kap_registry_close(r);
		return kap_error(err, ENOMEM, "%s", registry);
	}
	r->cancel = o->cancel;
	if (o->creds && o->creds->user) {
		r->creds.user = strdup(o->creds->user);
		r->creds.password = strdup(o->creds->password ? o->creds->password : "");
		r->creds.source = o->creds->source ? strdup(o->creds->source) : NULL;
		r->has_creds = true;
		if (!r->creds.user || !r->creds.password) {
			kap_registry_close(r);
			return kap_error(err, ENOMEM, "%s", registry);
		}
	}
	bool allow_http = o->insecure || kap_registry_is_local(registry) ||
			  registry_conf_insecure(registry, repository);
	/* Registries allowed plain HTTP also get unverified TLS (docker and podman treat
	 * "insecure" registries the same way): https first, then http. */
	r->insecure = allow_http;
	r->scheme = "https";

	struct xfer x = {.r = r, .what = "API check (GET /v2/)", .mode = BODY_DISCARD, .size = -1};
	struct kapsel_error *https_err = NULL;
	ret = ping(r, &x, &https_err);
	/* No answer at all is no TLS problem that plain HTTP would solve (an HTTP server answers
	 * a TLS hello with an error at once): report it rather than wait again. */
	if (ret < 0 && allow_http && ret != -EINTR && ret != -ETIMEDOUT) {
		r->scheme = "http";
		ret = ping(r, &x, err);
		if (ret < 0)
			kap_debug("%s: https: %s", r->label, https_err->msg);
		kapsel_error_free(https_err);
	} else if (ret < 0) {
		if (ret == -EPROTO)
			kap_error_plain(err, EPROTO,
					"%s (a plain-HTTP registry needs --insecure, or insecure = "
					"true in registries.conf)",
					https_err->msg);
		else if (err && !*err)
			err[0] = steal_ptr(https_err);
		kapsel_error_free(https_err);
	}
	if (ret < 0)
		goto fail;

	char scope[600] = "";
	if (repository)
		snprintf(scope, sizeof(scope), "repository:%s:%s", repository,
			 o->push ? "pull,push" : "pull");
	if (x.status == 401) {
		/* Authenticate now, for the repository's pull scope, so that the parallel blob
		 * downloads start with a token instead of each meeting a 401. */
		ret = authenticate(r, x.www_auth, 0, x.what, scope[0] ? scope : NULL, err);
		if (ret < 0)
			goto fail;
		if (o->login) {
			/* Prove the credentials work for the API itself. */
			ret = ping(r, &x, err);
			if (ret < 0)
				goto fail;
		}
	}
	if (x.status == 401 && o->login) {
		ret = status_error(r, &x, err);
		goto fail;
	}
	if (x.status != 200 && x.status != 401) {
		ret =
		    kap_error_plain(err, EPROTO,
				    "%s: not an OCI distribution registry (GET %s://%s/v2/ "
				    "answered HTTP %ld)",
				    r->registry, r->scheme, kap_registry_host(registry), x.status);
		goto fail;
	}
	kap_debug("%s: API at %s://%s/v2/%s", r->label, r->scheme, kap_registry_host(registry),
		  r->auth_header ? " (authenticated)" : "");
	xfer_free(&x);
	*out = r;
	return 0;
fail:
	xfer_free(&x);
	kap_registry_close(r);
	return ret;
}

/* ---- manifests and blobs ---- */

int kap_registry_get_manifest(struct kap_registry *r, const char *reference, char **buf,
			      size_t *len, char **media_type, struct kapsel_error **err)
{
	char what[128];
	snprintf(what, sizeof(what), "manifest \"%.100s\"", reference);
	cleanup_free char *url =
	    kap_registry_url(r->scheme, r->registry, r->repository, "manifests", reference);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .accept = KAP_REGISTRY_ACCEPT,
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_MEMORY,
			 .limit = KAP_MANIFEST_MAX,
			 .size = -1};
	int ret = transfer(r, &x, url, err);
	if (ret == 0 && x.status != 200)
		ret = status_error(r, &x, err);
	if (ret == 0) {
		char *mt = NULL;
		if (x.content_type) {
			/* "application/json; charset=utf-8": the type without parameters. */
			size_t n = strcspn(x.content_type, "; \t");
			mt = strndup(x.content_type, n);
			if (!mt)
				ret = kap_error(err, ENOMEM, "%s", what);
		}
		if (ret == 0 && !x.body.data && !(x.body.data = calloc(1, 1)))
			ret = kap_error(err, ENOMEM, "%s", what);
		if (ret == 0) {
			*buf = steal_ptr(x.body.data);
			*len = x.body.len;
			*media_type = mt;
		}
	}
	xfer_free(&x);
	return ret;
}

int kap_registry_get_blob(struct kap_registry *r, const char *digest, int64_t size,
			  const struct kap_blob_sink *sink, struct kapsel_error **err)
{
	char what[96];
	/* "blob sha256:0123456789ab": enough of the digest to recognise it. */
	snprintf(what, sizeof(what), "blob %.19s", digest);
	cleanup_free char *url =
	    kap_registry_url(r->scheme, r->registry, r->repository, "blobs", digest);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_SINK,
			 .sink = sink,
			 .size = size};
	int ret = transfer(r, &x, url, err);
	if (ret == 0 && x.status / 100 != 2)
		ret = status_error(r, &x, err);
	xfer_free(&x);
	return ret;
}

/* ---- push (distribution-spec "Pushing blobs", "Pushing Manifests") ---- */

int kap_registry_has_blob(struct kap_registry *r, const char *digest, struct kapsel_error **err)
{
	char what[96];
	snprintf(what, sizeof(what), "blob %.19s", digest);
	cleanup_free char *url =
	    kap_registry_url(r->scheme, r->registry, r->repository, "blobs", digest);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .method = "HEAD",
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_DISCARD,
			 .size = -1};
	int ret = transfer(r, &x, url, err);
	if (ret == 0)
		ret = x.status == 200 ? 1 : x.status == 404 ? 0 : status_error(r, &x, err);
	xfer_free(&x);
	return ret;
}

/*
 * distribution-spec "Mounting a blob from another repository": POST
 * /v2/<name>/blobs/uploads/?mount=<digest>&from=<other>. 201: the registry linked the blob,
 * nothing to upload (1). 202: it could not (no such blob there, no permission, no mount
 * support) and began an upload session instead (0; the caller uploads, and the abandoned
 * session expires on the registry's side). Another status is an error as for any request.
 */
int kap_registry_mount_blob(struct kap_registry *r, const char *digest, const char *from,
			    struct kapsel_error **err)
{
	for (const char *c = from; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr("._-/", *c))
			return 0; /* not a repository name: no mount, an upload */
	char what[96];
	snprintf(what, sizeof(what), "mount of blob %.19s", digest);
	cleanup_free char *start =
	    kap_registry_url(r->scheme, r->registry, r->repository, "blobs", "uploads/");
	cleanup_free char *url = NULL;
	if (!start || asprintf(&url, "%s?mount=%s&from=%s", start, digest, from) < 0)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .method = "POST",
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_DISCARD,
			 .size = -1};
	int ret = transfer(r, &x, url, err);
	if (ret == 0)
		ret = x.status == 201 ? 1 : x.status == 202 ? 0 : status_error(r, &x, err);
	xfer_free(&x);
	return ret;
}

/* A Location header -> an absolute URL with `param` appended to its query. */
static char *upload_url(struct kap_registry *r, const char *location, const char *param)
{
	char *out = NULL;
	const char *sep = strchr(location, '?') ? "&" : "?";
	int n;
	if (!strncmp(location, "http://", 7) || !strncmp(location, "https://", 8))
		n = asprintf(&out, "%s%s%s", location, param ? sep : "", param ? param : "");
	else
		n = asprintf(&out, "%s://%s%s%s%s%s", r->scheme, kap_registry_host(r->registry),
			     location[0] == '/' ? "" : "/", location, param ? sep : "",
			     param ? param : "");
	return n < 0 ? NULL : out;
}

static bool location_ok(const char *l)
{
	if (!l || !*l || strlen(l) > 8192)
		return false;
	for (; *l; l++)
		if (!isgraph((unsigned char)*l))
			return false;
	return true;
}

/* One attempt at the whole upload: POST, then PUT (monolithic) or PATCHes + PUT (chunked). */
static int upload_once(struct kap_registry *r, const char *digest, int fd, int64_t size,
		       int64_t chunk, const char *what, struct kapsel_error **err)
{
	cleanup_free char *start =
	    kap_registry_url(r->scheme, r->registry, r->repository, "blobs", "uploads/");
	if (!start)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .method = "POST",
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_DISCARD,
			 .size = -1};
	int ret = transfer(r, &x, start, err);
	if (ret == 0 && x.status != 202)
		ret = status_error(r, &x, err);
	if (ret == 0 && !location_ok(x.location))
		ret = kap_error_plain(err, EPROTO, "%s: %s: upload started without a Location",
				      r->label, what);
	cleanup_free char *loc = ret == 0 ? strdup(x.location) : NULL;
	xfer_free(&x);
	if (ret < 0)
		return ret;
	if (!loc)
		return kap_error(err, ENOMEM, "%s", r->label);

	int64_t off = 0;
	while (chunk > 0 && off < size) {
		int64_t n = size - off < chunk ? size - off : chunk;
		char range[80];
		/* distribution-spec "Pushing a blob in chunks": the inclusive byte range. */
		snprintf(range, sizeof(range), "Content-Range: %lld-%lld", (long long)off,
			 (long long)(off + n - 1));
		cleanup_free char *url = upload_url(r, loc, NULL);
		if (!url)
			return kap_error(err, ENOMEM, "%s", r->label);
		struct xfer p = {.r = r,
				 .what = what,
				 .method = "PATCH",
				 .req_type = "application/octet-stream",
				 .has_body = true,
				 .up_fd = fd,
				 .up_off = off,
				 .up_len = n,
				 .extra_header = range,
				 .handle_401 = true,
				 .mode = BODY_DISCARD,
				 .size = -1};
		ret = transfer(r, &p, url, err);
		if (ret == 0 && p.status != 202)
			ret = status_error(r, &p, err);
		if (ret == 0 && !location_ok(p.location))
			ret = kap_error_plain(err, EPROTO,
					      "%s: %s: chunk accepted without a Location", r->label,
					      what);
		if (ret == 0) {
			free(loc);
			loc = strdup(p.location);
			if (!loc)
				ret = kap_error(err, ENOMEM, "%s", r->label);
		}
		xfer_free(&p);
		if (ret < 0)
			return ret;
		off += n;
	}

	char param[96];
	snprintf(param, sizeof(param), "digest=%s", digest);
	cleanup_free char *url = upload_url(r, loc, param);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	bool mono = chunk <= 0;
	struct xfer f = {.r = r,
			 .what = what,
			 .method = "PUT",
			 .req_type = "application/octet-stream",
			 .has_body = true,
			 .up_fd = fd,
			 .up_off = 0,
			 .up_len = mono ? size : 0,
			 .handle_401 = true,
			 .mode = BODY_DISCARD,
			 .size = -1};
	ret = transfer(r, &f, url, err);
	if (ret == 0 && f.status != 201)
		ret = status_error(r, &f, err);
	xfer_free(&f);
	return ret;
}

int kap_registry_put_blob(struct kap_registry *r, const char *digest, int fd, int64_t size,
			  int64_t chunk, struct kapsel_error **err)
{
	char what[96];
	snprintf(what, sizeof(what), "upload of blob %.19s", digest);
	/* A failed session (a chunk refused after a dropped connection) starts over: the
	 * registry discards an upload that never got its final PUT. */
	for (int attempt = 1;; attempt++) {
		struct kapsel_error *e = NULL;
		int ret = upload_once(r, digest, fd, size, chunk, what, &e);
		if (ret == 0)
			return 0;
		bool again = attempt < MAX_ATTEMPTS && ret != -EINTR && ret != -EACCES &&
			     ret != -ENOMEM && !cancelled(r);
		if (!again) {
			if (err && !*err)
				*err = e;
			else
				kapsel_error_free(e);
			return ret;
		}
		kap_debug("%s; starting the upload again", e->msg);
		kapsel_error_free(e);
		backoff(r, attempt);
	}
}

int kap_registry_put_manifest(struct kap_registry *r, const char *reference, const char *media_type,
			      const char *buf, size_t len, struct kapsel_error **err)
{
	char what[128];
	snprintf(what, sizeof(what), "manifest \"%.100s\"", reference);
	cleanup_free char *url =
	    kap_registry_url(r->scheme, r->registry, r->repository, "manifests", reference);
	if (!url)
		return kap_error(err, ENOMEM, "%s", r->label);
	struct xfer x = {.r = r,
			 .what = what,
			 .method = "PUT",
			 .req_type = media_type,
			 .has_body = true,
			 .up_mem = buf,
			 .up_len = (int64_t)len,
			 .handle_401 = true,
			 .retry_connect = true,
			 .mode = BODY_DISCARD,
			 .size = -1};
	int ret = transfer(r, &x, url, err);
	if (ret == 0 && x.status != 201)
		ret = status_error(r, &x, err);
	xfer_free(&x);
	return ret;
}
