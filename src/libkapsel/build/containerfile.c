/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Containerfile / Dockerfile parsing (the Dockerfile reference, docs.docker.com/reference/
 * dockerfile, which buildah and BuildKit both follow).
 *
 * The file is hostile input: a build context downloaded from anywhere. Three rules:
 *  - bound everything: the file size, the number of instructions and of words, the depth of
 *    nested ${...} and the size of an expansion (a chain of $a$a$a... over a long value would
 *    otherwise grow without limit);
 *  - no recursion on input structure except the bounded ${...} nesting;
 *  - every error is one line naming file:line and the instruction, with any text quoted from
 *    the input cut short and stripped of control characters.
 *
 * Lexing, in the reference's order: parser directives (`# escape=`, `# syntax=`) only before
 * anything else; comment lines dropped (also inside a continued instruction); a line ending in
 * the escape character continues on the next; each instruction then splits into its keyword,
 * `--flags` (for the instructions that take them) and its arguments. Words keep their quotes:
 * variables are substituted and quotes removed at build time by kap_cf_expand, when the
 * stage's ARG and ENV values are known ("Environment replacement").
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "build/build.h"
#include "core/cleanup.h"
#include "core/error.h"

#define EXPAND_MAX	 (1u << 20)
#define EXPAND_MAX_DEPTH 32

static const char *const kind_names[] = {
    [KAP_CF_FROM] = "FROM",
    [KAP_CF_RUN] = "RUN",
    [KAP_CF_COPY] = "COPY",
    [KAP_CF_ADD] = "ADD",
    [KAP_CF_ENV] = "ENV",
    [KAP_CF_ARG] = "ARG",
    [KAP_CF_WORKDIR] = "WORKDIR",
    [KAP_CF_USER] = "USER",
    [KAP_CF_ENTRYPOINT] = "ENTRYPOINT",
    [KAP_CF_CMD] = "CMD",
    [KAP_CF_EXPOSE] = "EXPOSE",
    [KAP_CF_LABEL] = "LABEL",
    [KAP_CF_VOLUME] = "VOLUME",
    [KAP_CF_STOPSIGNAL] = "STOPSIGNAL",
    [KAP_CF_SHELL] = "SHELL",
    [KAP_CF_HEALTHCHECK] = "HEALTHCHECK",
    [KAP_CF_MAINTAINER] = "MAINTAINER",
};

const char *kap_cf_kind_name(enum kap_cf_kind k)
{
	if ((size_t)k < KAP_ARRAY_SIZE(kind_names) && kind_names[k])
		return kind_names[k];
	return "?";
}

/* Flags each instruction accepts (Dockerfile reference); others are an error. */
static const char *const from_flags[] = {"platform", NULL};
static const char *const run_flags[] = {"network", NULL};
static const char *const copy_flags[] = {"from", "chown", "chmod", "link", NULL};
static const char *const add_flags[] = {"chown", "chmod", "link", NULL};
static const char *const hc_flags[] = {"interval",	 "timeout", "start-period",
				       "start-interval", "retries", NULL};

static const char *const *flags_of(enum kap_cf_kind k)
{
	switch (k) {
	case KAP_CF_FROM:
		return from_flags;
	case KAP_CF_RUN:
		return run_flags;
	case KAP_CF_COPY:
		return copy_flags;
	case KAP_CF_ADD:
		return add_flags;
	case KAP_CF_HEALTHCHECK:
		return hc_flags;
	default:
		return NULL;
	}
}

/* Input text quoted in an error: at most 40 bytes, control and non-ASCII bytes as '?'. */
static void quote_input(char *dst, size_t cap, const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len && n + 4 < cap; i++) {
		if (n >= 40) {
			memcpy(dst + n, "...", 3);
			n += 3;
			break;
		}
		unsigned char c = (unsigned char)s[i];
		dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[n] = '\0';
}

struct parser {
	const char *path;
	struct kap_containerfile *cf;
	struct kapsel_error **err;
	unsigned line;
	const char *kw; /* the instruction being parsed */
};

__attribute__((format(printf, 2, 3))) static int perr(struct parser *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->kw)
		return kap_error_plain(p->err, EINVAL, "%s:%u: %s: %s", p->path, p->line, p->kw,
				       msg);
	return kap_error_plain(p->err, EINVAL, "%s:%u: %s", p->path, p->line, msg);
}

/* A growable string. */
struct sbuf {
	char *s;
	size_t len, cap;
};

static int sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (!ns)
			return -ENOMEM;
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int sb_addc(struct sbuf *b, char c)
{
	return sb_add(b, &c, 1);
}

/* ---- words ---- */

struct words {
	char **v;
	size_t n, cap;
};

static void words_clear(struct words *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i]);
	free(w->v);
	*w = (struct words){0};
}
#define _cleanup_words __attribute__((cleanup(words_clear)))

static int words_push(struct parser *p, struct words *w, char *s)
{
	if (w->n >= KAP_CF_MAX_ARGS) {
		free(s);
		return perr(p, "more than %u arguments", KAP_CF_MAX_ARGS);
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 8;
		char **nv = realloc(w->v, cap * sizeof(*nv));
		if (!nv) {
			free(s);
			return kap_error(p->err, ENOMEM, "parse %s", p->path);
		}
		w->v = nv;
		w->cap = cap;
	}
	w->v[w->n++] = s;
	return 0;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static const char *skip_space(const char *s)
{
	while (*s && is_space(*s))
		s++;
	return s;
}

/*
 * The end of the word starting at s: whitespace outside quotes ends it; the escape character
 * takes the next character with it; quotes must close. NULL (error set) when one does not.
 */
static const char *word_end(struct parser *p, const char *s, char escape)
{
	while (*s && !is_space(*s)) {
		if (*s == escape) {
			s += s[1] ? 2 : 1;
		} else if (*s == '\'' || *s == '"') {
			char q = *s++;
			while (*s && *s != q) {
				if (q == '"' && *s == escape && s[1])
					s++;
				s++;
			}
			if (!*s) {
				perr(p, "unterminated %s quote", q == '"' ? "double" : "single");
				return NULL;
			}
			s++;
		} else {
			s++;
		}
	}
	return s;
}

/* Split s into words (quotes kept). */
static int split_words(struct parser *p, const char *s, char escape, struct words *out)
{
	for (s = skip_space(s); *s; s = skip_space(s)) {
		const char *e = word_end(p, s, escape);
		if (!e)
			return -EINVAL;
		char *w = strndup(s, (size_t)(e - s));
		if (!w)
			return kap_error(p->err, ENOMEM, "parse %s", p->path);
		int r = words_push(p, out, w);
		if (r < 0)
			return r;
		s = e;
	}
	return 0;
}

/* ---- JSON arrays of strings (exec form) ---- */

static int utf8_put(struct sbuf *b, uint32_t cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return sb_add(b, u, n);
}

static int hex4(const char *s, uint32_t *out)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/*
 * Parse a JSON array of strings (RFC 8259 strings; \u0000 refused since arguments are C
 * strings). 1: parsed into out; 0: not such an array (the caller falls back to the shell form,
 * as the reference says); < 0: out of memory.
 */
static int parse_json_array(struct parser *p, const char *s, struct words *out)
{
	struct words w = {0};
	struct sbuf b = {0};
	int ret = 0;

	s = skip_space(s);
	if (*s++ != '[')
		goto out;
	s = skip_space(s);
	if (*s == ']') {
		s++;
		goto end;
	}
	for (;;) {
		s = skip_space(s);
		if (*s++ != '"')
			goto out;
		b.len = 0;
		if (sb_add(&b, "", 0) < 0)
			goto nomem;
		while (*s != '"') {
			unsigned char c = (unsigned char)*s;
			if (c == '\0' || c < 0x20)
				goto out;
			if (c != '\\') {
				if (sb_addc(&b, *s++) < 0)
					goto nomem;
				continue;
			}
			s++;
			char e = *s++;
			const char *simple = strchr("\"\\/bfnrt", e);
			if (e && simple) {
				static const char map[] = "\"\\/\b\f\n\r\t";
				if (sb_addc(&b, map[simple - "\"\\/bfnrt"]) < 0)
					goto nomem;
			} else if (e == 'u') {
				uint32_t cp;
				if (strnlen(s, 4) < 4 || hex4(s, &cp) < 0 || cp == 0)
					goto out;
				s += 4;
				if (cp >= 0xd800 && cp < 0xdc00) {
					uint32_t lo;
					if (s[0] != '\\' || s[1] != 'u' || strnlen(s + 2, 4) < 4 ||
					    hex4(s + 2, &lo) < 0 || lo < 0xdc00 || lo >= 0xe000)
						goto out;
					s += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp < 0xe000) {
					goto out;
				}
				if (utf8_put(&b, cp) < 0)
					goto nomem;
			} else {
				goto out;
			}
		}
		s++;
		char *dup = strdup(b.s);
		if (!dup)
			goto nomem;
		if (words_push(p, &w, dup) < 0) {
			ret = -EINVAL;
			goto out;
		}
		s = skip_space(s);
		if (*s == ',') {
			s++;
			continue;
		}
		if (*s++ != ']')
			goto out;
		break;
	}
end:
	if (*skip_space(s))
		goto out;
	*out = w;
	w = (struct words){0};
	ret = 1;
out:
	words_clear(&w);
	free(b.s);
	return ret;
nomem:
	ret = kap_error(p->err, ENOMEM, "parse %s", p->path);
	goto out;
}

/* ---- helpers for the instruction table ---- */

static bool valid_arg_name(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

/* Stage names: the reference's ^[a-z][a-z0-9-_.]*$ after lowering the case. */
static bool valid_stage_name(const char *s)
{
	if (!isalpha((unsigned char)s[0]))
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

int kap_cf_duration(const char *s, long long *ns)
{
	static const struct {
		const char *unit;
		long long mult;
	} units[] = {
	    {"ns", 1},		 {"us", 1000},	       {"\xc2\xb5s", 1000},   {"ms", 1000000},
	    {"s", 1000000000LL}, {"m", 60000000000LL}, {"h", 3600000000000LL}};
	long long total = 0;
	if (!*s)
		return -EINVAL;
	if (strcmp(s, "0") == 0) {
		*ns = 0;
		return 0;
	}
	while (*s) {
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		long long v = 0;
		while (isdigit((unsigned char)*s)) {
			if (v > 1000000000000LL)
				return -ERANGE;
			v = v * 10 + (*s++ - '0');
		}
		size_t best = 0;
		long long mult = 0;
		for (size_t i = 0; i < KAP_ARRAY_SIZE(units); i++) {
			size_t l = strlen(units[i].unit);
			if (strncmp(s, units[i].unit, l) == 0 && l > best) {
				best = l;
				mult = units[i].mult;
			}
		}
		if (!best)
			return -EINVAL;
		s += best;
		if (__builtin_mul_overflow(v, mult, &v) || __builtin_add_overflow(total, v, &total))
			return -ERANGE;
	}
	*ns = total;
	return 0;
}

/* key=value words (ENV, LABEL), or the legacy `ENV key value...` form. */
static int parse_pairs(struct parser *p, const char *rest, char escape, struct words *out)
{
	struct words w = {0};
	int r = split_words(p, rest, escape, &w);
	if (r < 0)
		goto out;
	if (w.n == 0) {
		r = perr(p, "needs at least one key=value");
		goto out;
	}
	if (!strchr(w.v[0], '=')) {
		/* Legacy form: the first word is the key, the rest of the line its value. */
		const char *v = skip_space(rest);
		v = skip_space(v + strlen(w.v[0]));
		if (!*v) {
			r = perr(p, "%s has no value", w.v[0]);
			goto out;
		}
		char *val = strdup(v);
		if (!val) {
			r = kap_error(p->err, ENOMEM, "parse %s", p->path);
			goto out;
		}
		size_t l = strlen(val);
		while (l && is_space(val[l - 1]))
			val[--l] = '\0';
		if ((r = words_push(p, out, steal_ptr(w.v[0]))) < 0) {
			free(val);
			goto out;
		}
		if ((r = words_push(p, out, val)) < 0)
			goto out;
		r = 0;
		goto out;
	}
	for (size_t i = 0; i < w.n; i++) {
		char *eq = strchr(w.v[i], '=');
		char q[64];
		quote_input(q, sizeof(q), w.v[i], strlen(w.v[i]));
		if (!eq) {
			r = perr(p, "expected key=value, got '%s'", q);
			goto out;
		}
		if (eq == w.v[i]) {
			r = perr(p, "empty key in '%s'", q);
			goto out;
		}
		char *key = strndup(w.v[i], (size_t)(eq - w.v[i]));
		char *val = strdup(eq + 1);
		if (!key || !val) {
			free(key);
			free(val);
			r = kap_error(p->err, ENOMEM, "parse %s", p->path);
			goto out;
		}
		if ((r = words_push(p, out, key)) < 0) {
			free(val);
			goto out;
		}
		if ((r = words_push(p, out, val)) < 0)
			goto out;
	}
	r = 0;
out:
	words_clear(&w);
	return r;
}

/* The exec form when the text is a JSON array of strings, else the shell form (one word: the
 * text). */
static int parse_cmd(struct parser *p, const char *rest, struct words *out, bool *json)
{
	rest = skip_space(rest);
	int r = parse_json_array(p, rest, out);
	if (r < 0)
		return r;
	if (r == 1) {
		*json = true;
		return 0;
	}
	*json = false;
	if (!*rest)
		return perr(p, "needs a command");
	char *s = strdup(rest);
	if (!s)
		return kap_error(p->err, ENOMEM, "parse %s", p->path);
	size_t l = strlen(s);
	while (l && is_space(s[l - 1]))
		s[--l] = '\0';
	return words_push(p, out, s);
}

/* Exactly one word (USER, STOPSIGNAL, WORKDIR keeps the whole rest). */
static int one_word(struct parser *p, const char *rest, char escape, struct words *out)
{
	int r = split_words(p, rest, escape, out);
	if (r < 0)
		return r;
	if (out->n != 1)
		return perr(p, "takes exactly one argument, got %zu", out->n);
	return 0;
}

static int parse_flags(struct parser *p, enum kap_cf_kind k, const char **rest, char escape,
		       struct kap_cf_instr *in)
{
	const char *const *allowed = flags_of(k);
	const char *s = skip_space(*rest);

	while (allowed && s[0] == '-' && s[1] == '-') {
		const char *e = word_end(p, s, escape);
		if (!e)
			return -EINVAL;
		const char *name = s + 2;
		const char *eq = memchr(name, '=', (size_t)(e - name));
		size_t nl = eq ? (size_t)(eq - name) : (size_t)(e - name);
		bool known = false;
		for (const char *const *a = allowed; *a; a++)
			if (strlen(*a) == nl && strncmp(*a, name, nl) == 0)
				known = true;
		if (!known) {
			char q[64];
			quote_input(q, sizeof(q), s, (size_t)(e - s));
			return perr(p, "unknown flag %s", q);
		}
		struct kap_cf_flag *nf = realloc(in->flags, (in->n_flags + 1) * sizeof(*nf));
		if (!nf)
			return kap_error(p->err, ENOMEM, "parse %s", p->path);
		in->flags = nf;
		nf[in->n_flags].name = strndup(name, nl);
		nf[in->n_flags].value = eq ? strndup(eq + 1, (size_t)(e - eq - 1)) : strdup("");
		in->n_flags++;
		if (!nf[in->n_flags - 1].name || !nf[in->n_flags - 1].value)
			return kap_error(p->err, ENOMEM, "parse %s", p->path);
		s = skip_space(e);
	}
	*rest = s;
	return 0;
}

static int check_flags(struct parser *p, struct kap_cf_instr *in)
{
	for (size_t i = 0; i < in->n_flags; i++) {
		const char *n = in->flags[i].name, *v = in->flags[i].value;
		char q[64];
		quote_input(q, sizeof(q), v, strlen(v));
		if (strcmp(n, "chmod") == 0) {
			char *end;
			errno = 0;
			unsigned long m = strtoul(v, &end, 8);
			if (!*v || *end || errno || m > 07777 || *v == '-' || *v == '+')
				return perr(p, "--chmod: '%s' is not an octal mode", q);
		} else if (strcmp(n, "retries") == 0) {
			char *end;
			errno = 0;
			long r = strtol(v, &end, 10);
			if (!*v || *end || errno || r < 0 || r > 1000000)
				return perr(p, "--retries: '%s' is not a count", q);
		} else if (strcmp(n, "interval") == 0 || strcmp(n, "timeout") == 0 ||
			   strcmp(n, "start-period") == 0 || strcmp(n, "start-interval") == 0) {
			long long ns;
			if (kap_cf_duration(v, &ns) < 0)
				return perr(p, "--%s: '%s' is not a duration", n, q);
		} else if (strcmp(n, "link") != 0 && !*v) {
			return perr(p, "--%s needs a value", n);
		} else if (strcmp(n, "network") == 0 && strcmp(v, "none") != 0 &&
			   strcmp(v, "host") != 0 && strcmp(v, "default") != 0) {
			return perr(p, "--network: '%s' is not none, host or default", q);
		}
	}
	return 0;
}

static int kind_of(const char *kw, size_t n, enum kap_cf_kind *out)
{
	for (size_t i = 0; i < KAP_ARRAY_SIZE(kind_names); i++) {
		if (kind_names[i] && strlen(kind_names[i]) == n &&
		    strncasecmp(kind_names[i], kw, n) == 0) {
			*out = (enum kap_cf_kind)i;
			return 0;
		}
	}
	return -ENOENT;
}

/* One logical line (continuations joined) -> one instruction appended to cf. */
static int parse_instruction(struct parser *p, const char *text, char escape)
{
	struct kap_containerfile *cf = p->cf;
	const char *kw = skip_space(text);
	const char *kw_end = kw;
	while (*kw_end && !is_space(*kw_end))
		kw_end++;
	enum kap_cf_kind k;

	p->kw = NULL;
	if (kind_of(kw, (size_t)(kw_end - kw), &k) < 0) {
		char q[64];
		quote_input(q, sizeof(q), kw, (size_t)(kw_end - kw));
		if (strcasecmp(q, "ONBUILD") == 0)
			return perr(p, "ONBUILD is not supported");
		return perr(p, "unknown instruction %s", q);
	}
	p->kw = kind_names[k];
	if (cf->n >= KAP_CF_MAX_INSTRS)
		return perr(p, "more than %u instructions", KAP_CF_MAX_INSTRS);

	struct kap_cf_instr *ni = realloc(cf->instrs, (cf->n + 1) * sizeof(*ni));
	if (!ni)
		return kap_error(p->err, ENOMEM, "parse %s", p->path);
	cf->instrs = ni;
	struct kap_cf_instr *in = &cf->instrs[cf->n++];
	*in = (struct kap_cf_instr){.kind = k, .line = p->line};
	in->text = strdup(kw);
	if (!in->text)
		return kap_error(p->err, ENOMEM, "parse %s", p->path);
	size_t tl = strlen(in->text);
	while (tl && is_space(in->text[tl - 1]))
		in->text[--tl] = '\0';

	const char *rest = kw_end;
	int r = parse_flags(p, k, &rest, escape, in);
	if (r < 0)
		return r;
	if ((r = check_flags(p, in)) < 0)
		return r;

	_cleanup_words struct words w = {0};
	switch (k) {
	case KAP_CF_FROM:
		if ((r = split_words(p, rest, escape, &w)) < 0)
			return r;
		if (w.n == 3 && strcasecmp(w.v[1], "AS") == 0) {
			for (char *c = w.v[2]; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			if (!valid_stage_name(w.v[2])) {
				char q[64];
				quote_input(q, sizeof(q), w.v[2], strlen(w.v[2]));
				return perr(p, "invalid stage name '%s'", q);
			}
			free(w.v[1]);
			w.v[1] = w.v[2];
			w.n = 2;
		} else if (w.n != 1) {
			return perr(p, "expected FROM image [AS name]");
		}
		break;
	case KAP_CF_RUN:
	case KAP_CF_CMD:
	case KAP_CF_ENTRYPOINT:
		if ((r = parse_cmd(p, rest, &w, &in->json)) < 0)
			return r;
		break;
	case KAP_CF_SHELL:
		if ((r = parse_json_array(p, rest, &w)) < 0)
			return r;
		if (r == 0 || w.n == 0)
			return perr(p, "needs a JSON array of strings, e.g. [\"/bin/sh\", \"-c\"]");
		in->json = true;
		break;
	case KAP_CF_COPY:
	case KAP_CF_ADD:
		if ((r = parse_json_array(p, rest, &w)) < 0)
			return r;
		in->json = r == 1;
		if (!in->json && (r = split_words(p, rest, escape, &w)) < 0)
			return r;
		if (w.n < 2)
			return perr(p, "needs at least one source and a destination");
		break;
	case KAP_CF_ENV:
	case KAP_CF_LABEL:
		if ((r = parse_pairs(p, rest, escape, &w)) < 0)
			return r;
		break;
	case KAP_CF_ARG: {
		_cleanup_words struct words raw = {0};
		if ((r = split_words(p, rest, escape, &raw)) < 0)
			return r;
		if (raw.n == 0)
			return perr(p, "needs a name");
		for (size_t i = 0; i < raw.n; i++) {
			char *eq = strchr(raw.v[i], '=');
			size_t nl = eq ? (size_t)(eq - raw.v[i]) : strlen(raw.v[i]);
			if (!valid_arg_name(raw.v[i], nl)) {
				char q[64];
				quote_input(q, sizeof(q), raw.v[i], nl);
				return perr(p, "invalid name '%s'", q);
			}
			char *name = strndup(raw.v[i], nl);
			if (!name)
				return kap_error(p->err, ENOMEM, "parse %s", p->path);
			if ((r = words_push(p, &w, name)) < 0)
				return r;
			char *def = NULL;
			if (eq && !(def = strdup(eq + 1)))
				return kap_error(p->err, ENOMEM, "parse %s", p->path);
			if ((r = words_push(p, &w, def)) < 0)
				return r;
		}
		break;
	}
	case KAP_CF_WORKDIR:
	case KAP_CF_MAINTAINER: {
		rest = skip_space(rest);
		if (!*rest)
			return perr(p, "needs an argument");
		if (!word_end(p, rest, escape))
			return -EINVAL;
		/* Quotes must balance over the whole text, which stays one word. */
		for (const char *s = rest; *s;) {
			const char *e = word_end(p, s, escape);
			if (!e)
				return -EINVAL;
			s = skip_space(e);
		}
		char *s = strdup(rest);
		if (!s)
			return kap_error(p->err, ENOMEM, "parse %s", p->path);
		size_t l = strlen(s);
		while (l && is_space(s[l - 1]))
			s[--l] = '\0';
		if ((r = words_push(p, &w, s)) < 0)
			return r;
		break;
	}
	case KAP_CF_USER:
	case KAP_CF_STOPSIGNAL:
		if ((r = one_word(p, rest, escape, &w)) < 0)
			return r;
		break;
	case KAP_CF_EXPOSE:
		if ((r = split_words(p, rest, escape, &w)) < 0)
			return r;
		if (w.n == 0)
			return perr(p, "needs at least one port");
		break;
	case KAP_CF_VOLUME:
		if ((r = parse_json_array(p, rest, &w)) < 0)
			return r;
		in->json = r == 1;
		if (!in->json && (r = split_words(p, rest, escape, &w)) < 0)
			return r;
		if (w.n == 0)
			return perr(p, "needs at least one path");
		break;
	case KAP_CF_HEALTHCHECK: {
		rest = skip_space(rest);
		const char *e = rest;
		while (*e && !is_space(*e))
			e++;
		if ((size_t)(e - rest) == 4 && strncasecmp(rest, "NONE", 4) == 0) {
			if (*skip_space(e) || in->n_flags)
				return perr(p, "NONE takes no arguments or flags");
			in->healthcheck_none = true;
			break;
		}
		if ((size_t)(e - rest) != 3 || strncasecmp(rest, "CMD", 3) != 0)
			return perr(p, "expected NONE or CMD");
		if ((r = parse_cmd(p, e, &w, &in->json)) < 0)
			return r;
		break;
	}
	}
	in->args = steal_ptr(w.v);
	in->n_args = w.n;
	w.n = 0;
	return 0;
}

/*
 * Parser directives (reference "Parser directives"): `# key=value` lines at the very top; the
 * first line that is not one (blank lines and ordinary comments included) ends them.
 * Returns the offset after the directives.
 */
static int parse_directives(struct parser *p, const char *buf, size_t len, size_t *off,
			    char *escape)
{
	size_t pos = 0;
	bool seen_escape = false, seen_syntax = false;

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;
		const char *s = buf + pos, *e = buf + end;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		if (s == e || *s != '#')
			break;
		s++;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		const char *k = s;
		while (s < e && (isalnum((unsigned char)*s) || *s == '_' || *s == '-'))
			s++;
		size_t kl = (size_t)(s - k);
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		if (kl == 0 || s == e || *s != '=')
			break;
		s++;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		const char *v = s;
		while (e > v && is_space(e[-1]))
			e--;
		p->line++;
		if (kl == 6 && strncasecmp(k, "escape", 6) == 0) {
			if (seen_escape)
				return perr(p, "escape directive given twice");
			if (e - v != 1 || (*v != '\\' && *v != '`'))
				return perr(p, "escape directive must be \\ or `");
			*escape = *v;
			seen_escape = true;
		} else if (kl == 6 && strncasecmp(k, "syntax", 6) == 0) {
			/* The frontend image BuildKit would use; kapsel is its own frontend. */
			if (seen_syntax)
				return perr(p, "syntax directive given twice");
			seen_syntax = true;
		} else {
			/* An unknown directive is a comment and ends the directives. */
			p->line--;
			break;
		}
		pos = nl ? end + 1 : len;
	}
	*off = pos;
	return 0;
}

int kap_cf_parse(const char *path, const char *buf, size_t len, struct kap_containerfile *out,
		 struct kapsel_error **err)
{
	struct parser p = {.path = path, .cf = out, .err = err, .line = 0};
	struct sbuf acc = {0};
	unsigned start = 0;
	size_t pos = 0; /* set by parse_directives; gcc -O2 cannot see it */
	int r;

	*out = (struct kap_containerfile){.escape = '\\'};
	if (len > KAP_CF_MAX_SIZE)
		return kap_error_plain(err, EFBIG, "%s: larger than %u bytes", path,
				       KAP_CF_MAX_SIZE);
	out->path = strdup(path);
	if (!out->path)
		return kap_error(err, ENOMEM, "parse %s", path);
	if ((r = parse_directives(&p, buf, len, &pos, &out->escape)) < 0)
		goto fail;

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;
		const char *s = buf + pos, *e = buf + end;
		p.line++;
		pos = nl ? end + 1 : len;
		if (memchr(s, '\0', (size_t)(e - s))) {
			p.kw = NULL;
			r = perr(&p, "NUL byte in the file");
			goto fail;
		}
		while (e > s && is_space(e[-1]))
			e--;
		const char *t = s;
		while (t < e && is_space(*t))
			t++;
		/* Blank and comment lines are dropped, also inside a continued instruction. */
		if (t == e || *t == '#')
			continue;
		if (acc.len == 0)
			start = p.line;
		bool cont = e[-1] == out->escape;
		if (cont)
			e--;
		if (sb_add(&acc, s, (size_t)(e - s)) < 0) {
			r = kap_error(err, ENOMEM, "parse %s", path);
			goto fail;
		}
		if (cont && pos < len)
			continue;
		unsigned here = p.line;
		p.line = start;
		r = parse_instruction(&p, acc.s, out->escape);
		p.line = here;
		acc.len = 0;
		if (r < 0)
			goto fail;
	}
	if (acc.len) {
		p.line = start;
		if ((r = parse_instruction(&p, acc.s, out->escape)) < 0)
			goto fail;
	}

	/* Only ARG may come before the first FROM (reference "Understand how ARG and FROM
	 * interact"). */
	bool from = false;
	for (size_t i = 0; i < out->n && !from; i++) {
		struct kap_cf_instr *in = &out->instrs[i];
		if (in->kind == KAP_CF_FROM) {
			from = true;
		} else if (in->kind != KAP_CF_ARG) {
			p.line = in->line;
			p.kw = kind_names[in->kind];
			r = perr(&p, "comes before the first FROM");
			goto fail;
		}
	}
	if (!from) {
		r = kap_error_plain(err, EINVAL, "%s: no FROM instruction", path);
		goto fail;
	}
	free(acc.s);
	return 0;
fail:
	free(acc.s);
	kap_containerfile_clear(out);
	return r;
}

void kap_containerfile_clear(struct kap_containerfile *cf)
{
	for (size_t i = 0; i < cf->n; i++) {
		struct kap_cf_instr *in = &cf->instrs[i];
		free(in->text);
		for (size_t j = 0; j < in->n_flags; j++) {
			free(in->flags[j].name);
			free(in->flags[j].value);
		}
		free(in->flags);
		for (size_t j = 0; j < in->n_args; j++)
			free(in->args[j]);
		free(in->args);
	}
	free(cf->instrs);
	free(cf->path);
	*cf = (struct kap_containerfile){0};
}

const char *kap_cf_flag(const struct kap_cf_instr *in, const char *name)
{
	const char *v = NULL;
	for (size_t i = 0; i < in->n_flags; i++)
		if (strcmp(in->flags[i].name, name) == 0)
			v = in->flags[i].value;
	return v;
}

/* ---- word expansion ---- */

struct expander {
	char escape;
	char *const *vars;
	const char *word; /* for errors */
	struct kapsel_error **err;
};

static const char *lookup(const struct expander *x, const char *name, size_t n)
{
	const char *found = NULL;
	for (char *const *v = x->vars; v && *v; v++)
		if (strncmp(*v, name, n) == 0 && (*v)[n] == '=')
			found = *v + n + 1;
	return found;
}

static int xerr(const struct expander *x, const char *what)
{
	char q[64];
	quote_input(q, sizeof(q), x->word, strlen(x->word));
	return kap_error_plain(x->err, EINVAL, "%s in '%s'", what, q);
}

static int put(const struct expander *x, struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n > EXPAND_MAX)
		return xerr(x, "expansion larger than 1 MiB");
	if (sb_add(b, s, n) < 0)
		return kap_error(x->err, ENOMEM, "expand");
	return 0;
}

static int expand_into(const struct expander *x, const char *s, size_t n, bool quotes, int depth,
		       struct sbuf *b);

/* At s[0] == '$': substitute; *used: how many bytes were consumed. */
static int expand_var(const struct expander *x, const char *s, size_t n, int depth, struct sbuf *b,
		      size_t *used)
{
	if (n >= 2 && s[1] == '{') {
		size_t i = 2, name = 2;
		while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		size_t name_len = i - name;
		if (i >= n)
			return xerr(x, "unterminated ${");
		if (name_len == 0)
			return xerr(x, "bad substitution");
		const char *val = lookup(x, s + name, name_len);
		if (s[i] == '}') {
			*used = i + 1;
			return val ? put(x, b, val, strlen(val)) : 0;
		}
		if (s[i] != ':' || i + 1 >= n || (s[i + 1] != '-' && s[i + 1] != '+'))
			return xerr(x, "bad substitution");
		char op = s[i + 1];
		size_t w = i + 2, j = w;
		int nest = 1;
		for (; j < n; j++) {
			if (s[j] == x->escape && j + 1 < n) {
				j++;
				continue;
			}
			if (s[j] == '{')
				nest++;
			else if (s[j] == '}' && --nest == 0)
				break;
		}
		if (j >= n)
			return xerr(x, "unterminated ${");
		*used = j + 1;
		bool set = val && *val;
		if ((op == '-' && !set) || (op == '+' && set))
			return expand_into(x, s + w, j - w, false, depth + 1, b);
		if (op == '-')
			return put(x, b, val, strlen(val));
		return 0;
	}
	if (n >= 2 && (isalpha((unsigned char)s[1]) || s[1] == '_')) {
		size_t i = 1;
		while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		*used = i;
		const char *val = lookup(x, s + 1, i - 1);
		return val ? put(x, b, val, strlen(val)) : 0;
	}
	*used = 1;
	return put(x, b, "$", 1);
}

static int expand_into(const struct expander *x, const char *s, size_t n, bool quotes, int depth,
		       struct sbuf *b)
{
	int r;
	if (depth > EXPAND_MAX_DEPTH)
		return xerr(x, "${...} nested too deeply");
	for (size_t i = 0; i < n;) {
		char c = s[i];
		if (c == x->escape) {
			if (i + 1 < n) {
				if ((r = put(x, b, s + i + 1, 1)) < 0)
					return r;
				i += 2;
			} else {
				if ((r = put(x, b, s + i, 1)) < 0)
					return r;
				i++;
			}
		} else if (c == '\'' && quotes) {
			const char *e = memchr(s + i + 1, '\'', n - i - 1);
			if (!e)
				return xerr(x, "unterminated single quote");
			if ((r = put(x, b, s + i + 1, (size_t)(e - s - i - 1))) < 0)
				return r;
			i = (size_t)(e - s) + 1;
		} else if (c == '"' && quotes) {
			i++;
			while (i < n && s[i] != '"') {
				if (s[i] == x->escape && i + 1 < n &&
				    (s[i + 1] == '"' || s[i + 1] == '$' || s[i + 1] == x->escape)) {
					if ((r = put(x, b, s + i + 1, 1)) < 0)
						return r;
					i += 2;
				} else if (s[i] == '$') {
					size_t used;
					if ((r = expand_var(x, s + i, n - i, depth, b, &used)) < 0)
						return r;
					i += used;
				} else {
					if ((r = put(x, b, s + i, 1)) < 0)
						return r;
					i++;
				}
			}
			if (i >= n)
				return xerr(x, "unterminated double quote");
			i++;
		} else if (c == '$') {
			size_t used;
			if ((r = expand_var(x, s + i, n - i, depth, b, &used)) < 0)
				return r;
			i += used;
		} else {
			if ((r = put(x, b, s + i, 1)) < 0)
				return r;
			i++;
		}
	}
	return 0;
}

int kap_cf_expand(const char *word, char escape, char *const *vars, char **out,
		  struct kapsel_error **err)
{
	struct expander x = {.escape = escape, .vars = vars, .word = word, .err = err};
	struct sbuf b = {0};
	int r = put(&x, &b, "", 0);
	if (r == 0)
		r = expand_into(&x, word, strlen(word), true, 0, &b);
	if (r < 0) {
		free(b.s);
		return r;
	}
	*out = b.s;
	return 0;
}
