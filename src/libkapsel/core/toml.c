/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TOML subset parser (toml.io/en/v1.0.0), for registries.conf(5) and its drop-ins.
 *
 * Threat: the file may come from anyone a user can be talked into pointing kapsel at
 * (CONTAINERS_REGISTRIES_CONF), so every byte is hostile. The rules that answer it:
 *  - one pass over a bounded buffer, the cursor never passes `end`; NULs are refused, so every
 *    string handed out is a C string that means what the file said;
 *  - nesting (arrays, inline tables, dotted keys) is bounded, so recursion is too, and the
 *    number of members per table is bounded, so the duplicate-key checks stay linear-ish;
 *  - TOML's redefinition rules are enforced (a key or table defined twice is an error, not a
 *    silent override), so what a reader sees is what the file said once.
 * Every error is one line, "FILE:LINE: what", with the key when there is one.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/toml.h"

#define MAX_DEPTH   16	 /* arrays and inline tables inside each other */
#define MAX_PARTS   16	 /* components of one dotted key */
#define MAX_MEMBERS 4096 /* members of one table, elements of one array */

struct parser {
	const char *p, *end;
	const char *file;
	unsigned line;
	struct kapsel_error **err;
};

__attribute__((format(printf, 2, 3))) static int perr(struct parser *ps, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Keys and values quoted in the message may hold escaped control characters. */
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return kap_error_plain(ps->err, EINVAL, "%s:%u: %s", ps->file, ps->line, msg);
}

/* A character for a one-line message: 'c' when printable, else its code. */
#define SHOW(c) show((c), (char[8]){0})
static const char *show(char c, char *buf)
{
	unsigned char u = (unsigned char)c;
	snprintf(buf, 8, u > 0x20 && u < 0x7f ? "'%c'" : "0x%02x", u);
	return buf;
}

static int oom(struct parser *ps)
{
	return kap_error(ps->err, ENOMEM, "%s:%u", ps->file, ps->line);
}

const char *kap_toml_type_name(enum kap_toml_type t)
{
	static const char *const names[] = {"a string", "an integer", "a boolean", "an array",
					    "a table"};
	return t <= KAP_TOML_TABLE ? names[t] : "a value";
}

void kap_toml_free(struct kap_toml *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		kap_toml_free(t->items[i]);
	free(t->items);
	free(t->key);
	free(t->str);
	free(t);
}

const struct kap_toml *kap_toml_get(const struct kap_toml *table, const char *key)
{
	if (!table || table->type != KAP_TOML_TABLE)
		return NULL;
	for (size_t i = 0; i < table->n; i++)
		if (!strcmp(table->items[i]->key, key))
			return table->items[i];
	return NULL;
}

static struct kap_toml *node(enum kap_toml_type type, unsigned line)
{
	struct kap_toml *t = calloc(1, sizeof(*t));
	if (t) {
		t->type = type;
		t->line = line;
	}
	return t;
}

/* Append child to an array or table; takes ownership of child either way. */
static int append(struct parser *ps, struct kap_toml *parent, struct kap_toml *child)
{
	if (parent->n >= MAX_MEMBERS) {
		kap_toml_free(child);
		return perr(ps, "more than %d entries in one %s", MAX_MEMBERS,
			    parent->type == KAP_TOML_ARRAY ? "array" : "table");
	}
	if ((parent->n & (parent->n - 1)) == 0) {
		size_t cap = parent->n ? parent->n * 2 : 4;
		struct kap_toml **v = realloc(parent->items, cap * sizeof(*v));
		if (!v) {
			kap_toml_free(child);
			return oom(ps);
		}
		parent->items = v;
	}
	parent->items[parent->n++] = child;
	return 0;
}

/* ---- lexical pieces ---- */

static bool bare_key_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static bool at_newline(const struct parser *ps)
{
	return ps->p < ps->end &&
	       (*ps->p == '\n' || (*ps->p == '\r' && ps->p + 1 < ps->end && ps->p[1] == '\n'));
}

static void take_newline(struct parser *ps)
{
	ps->p += *ps->p == '\r' ? 2 : 1;
	ps->line++;
}

/* A comment runs to the end of the line; control characters other than tab are invalid. */
static int skip_comment(struct parser *ps)
{
	if (ps->p >= ps->end || *ps->p != '#')
		return 0;
	for (; ps->p < ps->end && !at_newline(ps); ps->p++) {
		unsigned char c = (unsigned char)*ps->p;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return perr(ps, "control character 0x%02x in a comment", c);
	}
	return 0;
}

/* Whitespace, comments and newlines (inside arrays). */
static int skip_blank(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		int r = skip_comment(ps);
		if (r < 0)
			return r;
		if (!at_newline(ps))
			return 0;
		take_newline(ps);
	}
}

/* After a key/value pair or a header: only a comment may follow on the line. */
static int end_of_line(struct parser *ps)
{
	skip_ws(ps);
	int r = skip_comment(ps);
	if (r < 0)
		return r;
	if (ps->p >= ps->end)
		return 0;
	if (!at_newline(ps))
		return perr(ps, "unexpected %s after a value (one key = value per line)",
			    SHOW(*ps->p));
	take_newline(ps);
	return 0;
}

/* ---- strings ---- */

struct buf {
	char *s;
	size_t len, cap;
};

static int put(struct parser *ps, struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 32;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *v = realloc(b->s, cap);
		if (!v)
			return oom(ps);
		b->s = v;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int put_utf8(struct parser *ps, struct buf *b, uint32_t cp)
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
	return put(ps, b, u, n);
}

/* \uXXXX or \UXXXXXXXX: a Unicode scalar value; NUL is refused (C strings). */
static int unicode_escape(struct parser *ps, struct buf *b, size_t digits)
{
	uint32_t cp = 0;
	for (size_t i = 0; i < digits; i++) {
		if (ps->p >= ps->end)
			return perr(ps, "unterminated \\u escape");
		char c = *ps->p++;
		uint32_t v;
		if (c >= '0' && c <= '9')
			v = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v = (uint32_t)(c - 'A' + 10);
		else
			return perr(ps, "invalid hex digit %s in a \\u escape", SHOW(c));
		cp = cp << 4 | v;
	}
	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return perr(ps, "\\u escape U+%04X is not an allowed character", cp);
	return put_utf8(ps, b, cp);
}

/*
 * A string starting at the cursor (on its first quote). Basic strings ("...", """...""")
 * take escapes, literal ones ('...', '''...''') none; the multi-line forms drop a newline
 * right after the opening delimiter, and in a basic one a backslash at the end of a line
 * drops the line break and the whitespace after it (toml.io#string).
 */
static int parse_string(struct parser *ps, char **out)
{
	char q = *ps->p;
	bool multi = ps->end - ps->p >= 3 && ps->p[1] == q && ps->p[2] == q;
	struct buf b = {0};
	int r = 0;
	ps->p += multi ? 3 : 1;
	if (multi && at_newline(ps))
		take_newline(ps);
	for (;;) {
		if (ps->p >= ps->end) {
			r = perr(ps, "unterminated string");
			goto out;
		}
		char c = *ps->p;
		if (c == q) {
			if (!multi) {
				ps->p++;
				break;
			}
			size_t n = 0;
			while (ps->p + n < ps->end && ps->p[n] == q)
				n++;
			if (n >= 3) {
				/* Up to two quotes may end the content: """a"""" is a". */
				if (n > 5) {
					r = perr(ps, "too many quotes closing a string");
					goto out;
				}
				if ((r = put(ps, &b, ps->p, n - 3)) < 0)
					goto out;
				ps->p += n;
				break;
			}
			if ((r = put(ps, &b, ps->p, n)) < 0)
				goto out;
			ps->p += n;
			continue;
		}
		if (at_newline(ps)) {
			if (!multi) {
				r = perr(ps, "newline in a single-line string");
				goto out;
			}
			if ((r = put(ps, &b, "\n", 1)) < 0)
				goto out;
			take_newline(ps);
			continue;
		}
		unsigned char uc = (unsigned char)c;
		if ((uc < 0x20 && c != '\t') || uc == 0x7f) {
			r = perr(ps, "control character 0x%02x in a string", uc);
			goto out;
		}
		if (c != '\\' || q == '\'') {
			if ((r = put(ps, &b, &c, 1)) < 0)
				goto out;
			ps->p++;
			continue;
		}
		ps->p++;
		if (ps->p >= ps->end) {
			r = perr(ps, "unterminated string");
			goto out;
		}
		char e = *ps->p++;
		static const char from[] = "btnfr\"\\", to[] = "\b\t\n\f\r\"\\";
		const char *k = strchr(from, e);
		if (k && e) {
			r = put(ps, &b, &to[k - from], 1);
		} else if (e == 'u' || e == 'U') {
			r = unicode_escape(ps, &b, e == 'u' ? 4 : 8);
		} else if (multi && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
			/* Line-ending backslash: only whitespace may follow it on its line. */
			ps->p--;
			skip_ws(ps);
			if (!at_newline(ps)) {
				r = perr(ps, "'\\' followed by text on its line in a string");
				goto out;
			}
			while (ps->p < ps->end &&
			       (*ps->p == ' ' || *ps->p == '\t' || at_newline(ps))) {
				if (at_newline(ps))
					take_newline(ps);
				else
					ps->p++;
			}
		} else {
			r = perr(ps, "invalid escape %s after '\\' in a string", SHOW(e));
		}
		if (r < 0)
			goto out;
	}
	if (!b.s && (r = put(ps, &b, "", 0)) < 0)
		goto out;
	*out = b.s;
	return 0;
out:
	free(b.s);
	return r;
}

/* ---- keys ---- */

struct key {
	char *part[MAX_PARTS];
	size_t n;
};

static void key_clear(struct key *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->part[i]);
	k->n = 0;
}

/* bare-key or quoted-key, joined by dots with optional whitespace around them. */
static int parse_key_parts(struct parser *ps, struct key *k)
{
	k->n = 0;
	for (;;) {
		skip_ws(ps);
		if (k->n == MAX_PARTS)
			return perr(ps, "a dotted key with more than %d parts", MAX_PARTS);
		char *part = NULL;
		if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '\'')) {
			if (ps->end - ps->p >= 3 && ps->p[1] == *ps->p && ps->p[2] == *ps->p)
				return perr(ps, "a multi-line string cannot be a key");
			int r = parse_string(ps, &part);
			if (r < 0)
				return r;
		} else {
			const char *s = ps->p;
			while (ps->p < ps->end && bare_key_char(*ps->p))
				ps->p++;
			if (ps->p == s) {
				if (ps->p >= ps->end || at_newline(ps))
					return perr(ps, "expected a key");
				return perr(ps, "expected a key, found %s", SHOW(*ps->p));
			}
			if (!(part = strndup(s, (size_t)(ps->p - s))))
				return oom(ps);
		}
		k->part[k->n++] = part;
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '.')
			return 0;
		ps->p++;
	}
}

static int parse_key(struct parser *ps, struct key *k)
{
	int r = parse_key_parts(ps, k);
	if (r < 0)
		key_clear(k);
	return r;
}

/* "a.b.c" for messages (quoted parts are not re-quoted: the message is for a human). */
static const char *key_name(const struct key *k, size_t upto, char *out, size_t size)
{
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < upto && len < size; i++)
		len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "." : "", k->part[i]);
	return out;
}

/* ---- values ---- */

static int parse_value(struct parser *ps, int depth, struct kap_toml **out);
static int insert_kv(struct parser *ps, struct kap_toml *table, struct key *k,
		     struct kap_toml *value);

static int parse_integer(struct parser *ps, struct kap_toml **out)
{
	const char *s = ps->p;
	while (ps->p < ps->end &&
	       (bare_key_char(*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
		ps->p++;
	size_t n = (size_t)(ps->p - s);
	char tok[80];
	if (n >= sizeof(tok))
		return perr(ps, "number too long");
	memcpy(tok, s, n);
	tok[n] = '\0';
	if (strpbrk(tok, ".:") || strstr(tok, "inf") || strstr(tok, "nan") ||
	    (strpbrk(tok, "eE") && !strpbrk(tok, "xX")) || (n > 4 && tok[4] == '-'))
		return perr(ps, "\"%s\": floats and dates are not supported here", tok);
	/* Underscores only between digits; no leading zeros; 0x / 0o / 0b prefixes. */
	const char *d = tok;
	bool neg = false;
	if (*d == '+' || *d == '-')
		neg = *d++ == '-';
	int base = 10;
	if (d[0] == '0' && (d[1] == 'x' || d[1] == 'o' || d[1] == 'b')) {
		if (tok[0] == '+' || tok[0] == '-')
			return perr(ps, "\"%s\": a sign on a hex, octal or binary integer", tok);
		base = d[1] == 'x' ? 16 : d[1] == 'o' ? 8 : 2;
		d += 2;
	} else if (d[0] == '0' && d[1]) {
		return perr(ps, "\"%s\": leading zeros in an integer", tok);
	}
	char digits[80];
	size_t nd = 0;
	for (const char *c = d; *c; c++) {
		if (*c == '_') {
			if (c == d || !c[1] || c[1] == '_')
				return perr(ps, "\"%s\": '_' must be between digits", tok);
			continue;
		}
		digits[nd++] = *c;
	}
	digits[nd] = '\0';
	if (!nd)
		return perr(ps, "\"%s\": expected a value", tok);
	errno = 0;
	char *end;
	unsigned long long v = strtoull(digits, &end, base);
	if (*end || digits[0] == '-' || digits[0] == '+')
		return perr(ps, "\"%s\": not an integer", tok);
	if (errno || v > (unsigned long long)INT64_MAX + (neg ? 1 : 0))
		return perr(ps, "\"%s\": integer out of range", tok);
	struct kap_toml *t = node(KAP_TOML_INTEGER, ps->line);
	if (!t)
		return oom(ps);
	t->integer = neg ? (long long)(0 - v) : (long long)v;
	*out = t;
	return 0;
}

static int parse_array(struct parser *ps, int depth, struct kap_toml **out)
{
	struct kap_toml *a = node(KAP_TOML_ARRAY, ps->line);
	if (!a)
		return oom(ps);
	a->sealed = true;
	ps->p++; /* [ */
	int r;
	for (;;) {
		if ((r = skip_blank(ps)) < 0)
			goto fail;
		if (ps->p < ps->end && *ps->p == ']')
			break;
		struct kap_toml *v = NULL;
		if ((r = parse_value(ps, depth + 1, &v)) < 0 || (r = append(ps, a, v)) < 0)
			goto fail;
		if ((r = skip_blank(ps)) < 0)
			goto fail;
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == ']')
			break;
		r = perr(ps, "expected ',' or ']' in an array");
		goto fail;
	}
	ps->p++; /* ] */
	*out = a;
	return 0;
fail:
	kap_toml_free(a);
	return r;
}

/* { k = v, ... } on one line (TOML 1.0: no newlines, no trailing comma). */
static int parse_inline_table(struct parser *ps, int depth, struct kap_toml **out)
{
	struct kap_toml *t = node(KAP_TOML_TABLE, ps->line);
	if (!t)
		return oom(ps);
	ps->p++; /* { */
	struct key k = {0};
	int r;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
		goto done;
	}
	for (;;) {
		if ((r = parse_key(ps, &k)) < 0)
			goto fail;
		if (ps->p >= ps->end || *ps->p != '=') {
			r = perr(ps, "expected '=' after key \"%s\"", k.part[k.n - 1]);
			goto fail;
		}
		ps->p++;
		skip_ws(ps);
		struct kap_toml *v = NULL;
		if ((r = parse_value(ps, depth + 1, &v)) < 0 || (r = insert_kv(ps, t, &k, v)) < 0)
			goto fail;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == '}') {
			ps->p++;
			break;
		}
		r = perr(ps, "expected ',' or '}' in an inline table");
		goto fail;
	}
done:
	t->sealed = true;
	*out = t;
	return 0;
fail:
	key_clear(&k);
	kap_toml_free(t);
	return r;
}

static int parse_value(struct parser *ps, int depth, struct kap_toml **out)
{
	*out = NULL;
	if (depth > MAX_DEPTH)
		return perr(ps, "arrays or inline tables nested more than %d deep", MAX_DEPTH);
	if (ps->p >= ps->end || at_newline(ps))
		return perr(ps, "expected a value");
	char c = *ps->p;
	if (c == '"' || c == '\'') {
		struct kap_toml *t = node(KAP_TOML_STRING, ps->line);
		if (!t)
			return oom(ps);
		int r = parse_string(ps, &t->str);
		if (r < 0) {
			kap_toml_free(t);
			return r;
		}
		*out = t;
		return 0;
	}
	if (c == '[')
		return parse_array(ps, depth, out);
	if (c == '{')
		return parse_inline_table(ps, depth, out);
	if ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'i' || c == 'n')
		return parse_integer(ps, out);
	for (int b = 0; b < 2; b++) {
		const char *word = b ? "true" : "false";
		size_t n = strlen(word);
		if ((size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, word, n) &&
		    (ps->p + n == ps->end || !bare_key_char(ps->p[n]))) {
			struct kap_toml *t = node(KAP_TOML_BOOL, ps->line);
			if (!t)
				return oom(ps);
			t->boolean = b;
			ps->p += n;
			*out = t;
			return 0;
		}
	}
	return perr(ps, "expected a value, found %s", SHOW(c));
}

/* ---- tables ---- */

static struct kap_toml *member(struct kap_toml *table, const char *key)
{
	return (struct kap_toml *)kap_toml_get(table, key);
}

static struct kap_toml *new_table(struct parser *ps, struct kap_toml *parent, const char *key)
{
	struct kap_toml *t = node(KAP_TOML_TABLE, ps->line);
	if (!t || !(t->key = strdup(key))) {
		kap_toml_free(t);
		oom(ps);
		return NULL;
	}
	return append(ps, parent, t) < 0 ? NULL : t;
}

/* key = value into table, creating the dotted key's intermediate tables. Owns value. */
static int insert_kv(struct parser *ps, struct kap_toml *table, struct key *k,
		     struct kap_toml *value)
{
	char name[256];
	int r = 0;
	for (size_t i = 0; i + 1 < k->n; i++) {
		struct kap_toml *m = member(table, k->part[i]);
		if (!m) {
			if (!(m = new_table(ps, table, k->part[i]))) {
				r = -ENOMEM;
				goto out;
			}
			m->dotted = true;
		} else if (m->type != KAP_TOML_TABLE || !m->dotted || m->sealed) {
			r = perr(ps, "key \"%s\": already defined on line %u",
				 key_name(k, i + 1, name, sizeof(name)), m->line);
			goto out;
		}
		table = m;
	}
	const struct kap_toml *old = member(table, k->part[k->n - 1]);
	if (old) {
		r = perr(ps, "duplicate key \"%s\" (first on line %u)",
			 key_name(k, k->n, name, sizeof(name)), old->line);
		goto out;
	}
	/* The last part becomes the value's key. */
	value->key = k->part[k->n - 1];
	k->part[--k->n] = NULL;
	r = append(ps, table, value);
	value = NULL;
out:
	kap_toml_free(value);
	key_clear(k);
	return r;
}

/* [a.b] or [[a.b]]: the table that key/value lines go into from here on. */
static int parse_header(struct parser *ps, struct kap_toml *root, struct kap_toml **current)
{
	bool aot = ps->end - ps->p >= 2 && ps->p[1] == '[';
	ps->p += aot ? 2 : 1;
	struct key k = {0};
	char name[256];
	int r = parse_key(ps, &k);
	if (r < 0)
		return r;
	if (ps->p >= ps->end || *ps->p != ']' ||
	    (aot && (ps->end - ps->p < 2 || ps->p[1] != ']'))) {
		r = perr(ps, "expected '%s' after [%s%s", aot ? "]]" : "]", aot ? "[" : "",
			 key_name(&k, k.n, name, sizeof(name)));
		goto out;
	}
	ps->p += aot ? 2 : 1;
	struct kap_toml *t = root;
	for (size_t i = 0; i < k.n; i++) {
		struct kap_toml *m = member(t, k.part[i]);
		bool last = i + 1 == k.n;
		key_name(&k, i + 1, name, sizeof(name));
		if (last && aot) {
			if (!m) {
				if (!(m = node(KAP_TOML_ARRAY, ps->line)) ||
				    !(m->key = strdup(k.part[i]))) {
					kap_toml_free(m);
					r = oom(ps);
					goto out;
				}
				m->aot = true;
				if ((r = append(ps, t, m)) < 0)
					goto out;
			} else if (m->type != KAP_TOML_ARRAY || !m->aot) {
				r = perr(ps, "[[%s]]: \"%s\" is already %s (line %u)", name, name,
					 kap_toml_type_name(m->type), m->line);
				goto out;
			}
			struct kap_toml *el = node(KAP_TOML_TABLE, ps->line);
			if (!el) {
				r = oom(ps);
				goto out;
			}
			el->header = true;
			if ((r = append(ps, m, el)) < 0)
				goto out;
			t = el;
			break;
		}
		if (!m) {
			if (!(m = new_table(ps, t, k.part[i]))) {
				r = -ENOMEM;
				goto out;
			}
			m->header = last;
			t = m;
			continue;
		}
		if (m->type == KAP_TOML_ARRAY && m->aot && !last) {
			/* [a.b] after [[a]]: b belongs to a's latest element. */
			t = m->items[m->n - 1];
			continue;
		}
		if (m->type != KAP_TOML_TABLE || m->sealed || (last && (m->header || m->dotted))) {
			r = perr(ps, "[%s]: \"%s\" is already defined (line %u)", name, name,
				 m->line);
			goto out;
		}
		if (last) {
			m->header = true;
			m->line = ps->line;
		}
		t = m;
	}
	*current = t;
	r = end_of_line(ps);
out:
	key_clear(&k);
	return r;
}

/* Valid UTF-8 without NULs (TOML 1.0: a document is UTF-8; C strings stop at NUL). */
static int check_encoding(struct parser *ps)
{
	const unsigned char *s = (const unsigned char *)ps->p, *e = (const unsigned char *)ps->end;
	unsigned line = 1;
	while (s < e) {
		unsigned char c = *s;
		size_t n = c < 0x80		? 1
			   : (c & 0xe0) == 0xc0 ? 2
			   : (c & 0xf0) == 0xe0 ? 3
			   : (c & 0xf8) == 0xf0 ? 4
						: 0;
		bool ok = n && (size_t)(e - s) >= n && c != 0;
		for (size_t i = 1; ok && i < n; i++)
			ok = (s[i] & 0xc0) == 0x80;
		if (ok && n > 1) {
			uint32_t cp = n == 2   ? (uint32_t)(c & 0x1f)
				      : n == 3 ? (uint32_t)(c & 0x0f)
					       : (uint32_t)(c & 0x07);
			for (size_t i = 1; i < n; i++)
				cp = cp << 6 | (s[i] & 0x3f);
			static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
			ok = cp >= min[n] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
		}
		if (!ok) {
			ps->line = line;
			return perr(ps, c ? "invalid UTF-8" : "NUL byte");
		}
		if (c == '\n')
			line++;
		s += n;
	}
	return 0;
}

int kap_toml_parse(const char *text, size_t len, const char *file, struct kap_toml **root,
		   struct kapsel_error **err)
{
	struct parser ps = {.p = text, .end = text + len, .file = file, .line = 1, .err = err};
	*root = NULL;
	int r = check_encoding(&ps);
	if (r < 0)
		return r;
	/* A UTF-8 byte order mark is allowed at the start. */
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		ps.p += 3;
	struct kap_toml *top = node(KAP_TOML_TABLE, 1), *current;
	if (!top)
		return oom(&ps);
	current = top;
	struct key k = {0};
	while (ps.p < ps.end) {
		if ((r = skip_blank(&ps)) < 0)
			goto fail;
		if (ps.p >= ps.end)
			break;
		if (*ps.p == '[') {
			if ((r = parse_header(&ps, top, &current)) < 0)
				goto fail;
			continue;
		}
		if ((r = parse_key(&ps, &k)) < 0)
			goto fail;
		char name[256];
		if (ps.p >= ps.end || *ps.p != '=') {
			r = perr(&ps, "expected '=' after key \"%s\"",
				 key_name(&k, k.n, name, sizeof(name)));
			goto fail;
		}
		ps.p++;
		skip_ws(&ps);
		struct kap_toml *v = NULL;
		if ((r = parse_value(&ps, 0, &v)) < 0)
			goto fail;
		/* insert_kv clears k and owns v; the line is the value's. */
		if ((r = insert_kv(&ps, current, &k, v)) < 0 || (r = end_of_line(&ps)) < 0)
			goto fail;
	}
	*root = top;
	return 0;
fail:
	key_clear(&k);
	kap_toml_free(top);
	return r;
}
