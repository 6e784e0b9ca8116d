/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A subset of Go's text/template (https://pkg.go.dev/text/template) for --format, evaluated
 * over JSON documents instead of Go values, as podman's commands use it:
 *
 *   text {{.A.B}} {{json .Config}} {{.Config.Env | join ","}} {{index .Labels "k"}}
 *   {{if .State.Running}}up{{else}}down{{end}} {{range .Env}}{{.}} {{end}} {{with .X}}..{{end}}
 *   {{- trims the space before}} {{trims the space after -}} {{$.Name}} and comments
 *   (an action holding only slash-star ... star-slash)
 *
 * Functions: json, upper, lower, title, join, index, len, truncate, eq, ne, not, and, or.
 * Values print as Go's fmt %v prints them: arrays "[a b]", objects "map[k:v]" with sorted
 * keys, a missing value "<no value>". A field that is not in the object is an error (podman's
 * values are Go structs: "can't evaluate field"), not an empty string, so that a typo is seen.
 * A field .Name also finds the JSON key "name" and .ID "Id" (case is ignored when no key
 * matches exactly), as podman's Go field names sit over JSON tags spelt otherwise.
 *
 * The template is user input that may come from anywhere (scripts, other tools): the parser
 * never reads past the text, bounds nesting (MAX_DEPTH, so recursion is bounded), and the
 * executor bounds its work (MAX_STEPS: nested ranges multiply) and its output (MAX_OUTPUT).
 * Every failure is one line naming line:column of the action, as Go's "template: 1:8: ...".
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <kapsel/format.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "core/template.h"

#define API __attribute__((visibility("default")))

#define MAX_DEPTH  64		      /* nested if/range/with */
#define MAX_ARGS   16		      /* operands of one command */
#define MAX_CMDS   16		      /* commands of one pipeline */
#define MAX_FIELDS 64		      /* .A.B.C... */
#define MAX_STEPS  (1u << 22)	      /* node executions and values printed */
#define MAX_OUTPUT ((size_t)64 << 20) /* bytes */

enum arg_kind { ARG_FIELD, ARG_VAR, ARG_STRING, ARG_INT, ARG_BOOL, ARG_NIL };

struct arg {
	enum arg_kind kind;
	char **fields; /* ARG_FIELD/ARG_VAR: the chain; none: "." or "$" */
	size_t n_fields;
	char *s; /* ARG_STRING */
	size_t s_len;
	int64_t i;  /* ARG_INT, ARG_BOOL */
	size_t pos; /* where it starts (errors) */
};

struct func;

struct cmd {
	const struct func *fn; /* NULL: a single operand */
	struct arg args[MAX_ARGS];
	size_t n_args;
	size_t pos;
};

struct pipeline {
	struct cmd *cmds;
	size_t n_cmds;
};

enum node_kind { NODE_TEXT, NODE_ACTION, NODE_IF, NODE_RANGE, NODE_WITH };

struct node {
	enum node_kind kind;
	struct node *next;
	size_t pos; /* offset of the action (errors) */
	char *text; /* NODE_TEXT */
	size_t len;
	struct pipeline pipe;	 /* the action, or the condition */
	struct node *body, *alt; /* if/range/with: {{else}} part in alt */
};

struct kapsel_template {
	char *src; /* for line:column in execution errors */
	size_t src_len;
	struct node *root;
};

/* ---- positions ---- */

static void line_col(const char *s, size_t len, size_t pos, unsigned *line, unsigned *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < pos && i < len; i++) {
		if (s[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static int tmpl_error(struct kapsel_error **err, const char *s, size_t len, size_t pos,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int tmpl_error(struct kapsel_error **err, const char *s, size_t len, size_t pos,
		      const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	unsigned line, col;
	line_col(s, len, pos, &line, &col);
	return kap_error_plain(err, EINVAL, "template: %u:%u: %s", line, col, msg);
}

/* A name or a value quoted for a message, cut short and with control bytes escaped. */
static void quote_short(const char *s, size_t n, char *buf, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 8 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
		if (i == 40 && i + 1 < n) {
			o += (size_t)snprintf(buf + o, size - o, "...");
			break;
		}
	}
	buf[o] = '\0';
}

/* ---- freeing ---- */

static void arg_clear(struct arg *a)
{
	for (size_t i = 0; i < a->n_fields; i++)
		free(a->fields[i]);
	free(a->fields);
	free(a->s);
	*a = (struct arg){0};
}

static void pipeline_clear(struct pipeline *p)
{
	for (size_t i = 0; i < p->n_cmds; i++)
		for (size_t j = 0; j < p->cmds[i].n_args; j++)
			arg_clear(&p->cmds[i].args[j]);
	free(p->cmds);
	*p = (struct pipeline){0};
}

static void nodes_free(struct node *n)
{
	while (n) {
		struct node *next = n->next;
		free(n->text);
		pipeline_clear(&n->pipe);
		nodes_free(n->body);
		nodes_free(n->alt);
		free(n);
		n = next;
	}
}

void kap_template_free(struct kapsel_template *t)
{
	if (!t)
		return;
	nodes_free(t->root);
	free(t->src);
	free(t);
}

/* ---- functions ---- */

struct exec;
typedef int (*func_call)(struct exec *x, size_t pos, struct kap_json **args, size_t n,
			 struct kap_json **out);

struct func {
	const char *name;
	int min, max; /* argument counts; max -1: any */
	func_call call;
};

/* ---- the parser ---- */

struct parser {
	const char *s;
	size_t len, pos;
	bool trim_next; /* the last action ended with " -}}" */
	int depth;
	struct kapsel_error **err;
};

enum term { TERM_EOF, TERM_END, TERM_ELSE };

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_ident(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static const struct func *find_func(const char *name, size_t n);

static int perr(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int perr(struct parser *p, size_t pos, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tmpl_error(p->err, p->s, p->len, pos, "%s", msg);
}

static void skip_space(struct parser *p)
{
	while (p->pos < p->len && is_space(p->s[p->pos]))
		p->pos++;
}

/* At "}}", or at "-}}" after a space (Go: the trim marker needs the space). Consumes it. */
static bool at_close(struct parser *p)
{
	const char *s = p->s + p->pos;
	size_t left = p->len - p->pos;
	if (left >= 2 && s[0] == '}' && s[1] == '}') {
		p->pos += 2;
		return true;
	}
	if (left >= 3 && s[0] == '-' && s[1] == '}' && s[2] == '}' && p->pos > 0 &&
	    is_space(p->s[p->pos - 1])) {
		p->pos += 3;
		p->trim_next = true;
		return true;
	}
	return false;
}

static int parse_chain(struct parser *p, struct arg *a)
{
	/* p->pos is at the '.' of ".A.B" or just past "$". */
	while (p->pos < p->len && p->s[p->pos] == '.') {
		size_t start = ++p->pos;
		while (p->pos < p->len && is_ident(p->s[p->pos]))
			p->pos++;
		if (p->pos == start) {
			if (a->n_fields == 0 && a->kind == ARG_FIELD)
				return 0; /* "." alone */
			return perr(p, start - 1, "expected a field name after \".\"");
		}
		if (a->n_fields == MAX_FIELDS)
			return perr(p, start, "more than %d fields in a chain", MAX_FIELDS);
		char **nf = realloc(a->fields, (a->n_fields + 1) * sizeof(char *));
		if (!nf)
			return kap_error(p->err, ENOMEM, "template");
		a->fields = nf;
		if (!(a->fields[a->n_fields] = strndup(p->s + start, p->pos - start)))
			return kap_error(p->err, ENOMEM, "template");
		a->n_fields++;
	}
	if (p->pos < p->len && !is_space(p->s[p->pos]) && p->s[p->pos] != '}' &&
	    p->s[p->pos] != '|' && p->s[p->pos] != '-')
		return perr(p, p->pos, "unexpected \"%c\" after a field", p->s[p->pos]);
	return 0;
}

static int parse_string(struct parser *p, struct arg *a)
{
	char q = p->s[p->pos];
	size_t start = p->pos++;
	char *buf = malloc(p->len - p->pos + 1);
	if (!buf)
		return kap_error(p->err, ENOMEM, "template");
	size_t o = 0;
	for (;;) {
		if (p->pos >= p->len || (q == '"' && p->s[p->pos] == '\n')) {
			free(buf);
			return perr(p, start, "unterminated string");
		}
		char c = p->s[p->pos++];
		if (c == q)
			break;
		if (q == '"' && c == '\\') {
			if (p->pos >= p->len) {
				free(buf);
				return perr(p, start, "unterminated string");
			}
			char e = p->s[p->pos++];
			switch (e) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case '\\':
			case '"':
				c = e;
				break;
			default:
				free(buf);
				return perr(p, p->pos - 2, "unknown escape \"\\%c\" in a string",
					    isprint((unsigned char)e) ? e : '?');
			}
		}
		buf[o++] = c;
	}
	buf[o] = '\0';
	a->kind = ARG_STRING;
	a->s = buf;
	a->s_len = o;
	return 0;
}

static int parse_int(struct parser *p, struct arg *a)
{
	size_t start = p->pos;
	bool neg = p->s[p->pos] == '-';
	if (neg)
		p->pos++;
	uint64_t v = 0;
	size_t digits = 0;
	while (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) {
		unsigned d = (unsigned)(p->s[p->pos++] - '0');
		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return perr(p, start, "number out of range");
		v = v * 10 + d;
		digits++;
	}
	if (!digits || (p->pos < p->len && !is_space(p->s[p->pos]) && p->s[p->pos] != '}' &&
			p->s[p->pos] != '|'))
		return perr(p, start, "bad number");
	a->kind = ARG_INT;
	a->i = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/* One operand; *ident receives a bare identifier's span (a function name) instead. */
static int parse_operand(struct parser *p, struct arg *a, size_t *ident_len)
{
	*ident_len = 0;
	*a = (struct arg){0};
	char c = p->s[p->pos];
	if (c == '.') {
		a->kind = ARG_FIELD;
		return parse_chain(p, a);
	}
	if (c == '$') {
		p->pos++;
		a->kind = ARG_VAR;
		if (p->pos < p->len && is_ident(p->s[p->pos]))
			return perr(p, p->pos - 1, "variables other than $ are not supported");
		return parse_chain(p, a);
	}
	if (c == '"' || c == '`')
		return parse_string(p, a);
	if (isdigit((unsigned char)c) || c == '-')
		return parse_int(p, a);
	if (isalpha((unsigned char)c) || c == '_') {
		size_t start = p->pos;
		while (p->pos < p->len && is_ident(p->s[p->pos]))
			p->pos++;
		*ident_len = p->pos - start;
		return 0;
	}
	if (c == '(' || c == ')')
		return perr(p, p->pos, "parenthesised pipelines are not supported");
	if (c == ':' || c == '=')
		return perr(p, p->pos, "variable assignment is not supported");
	char q[48];
	quote_short(&c, 1, q, sizeof(q));
	return perr(p, p->pos, "unexpected \"%s\" in an action", q);
}

/* Parses up to and including "}}"; an empty pipeline is an error. */
static int parse_pipeline(struct parser *p, size_t action_pos, struct pipeline *pl)
{
	*pl = (struct pipeline){0};
	struct cmd *cur = NULL;
	for (;;) {
		skip_space(p);
		if (p->pos >= p->len)
			return perr(p, action_pos, "unclosed action");
		size_t tok = p->pos;
		if (at_close(p)) {
			if (!cur || (cur->n_args == 0 && !cur->fn))
				return perr(p, tok,
					    pl->n_cmds ? "missing command after \"|\""
						       : "missing value in action");
			return 0;
		}
		if (p->s[p->pos] == '|') {
			if (!cur || (cur->n_args == 0 && !cur->fn))
				return perr(p, tok, "missing command before \"|\"");
			p->pos++;
			cur = NULL;
			continue;
		}
		if (!cur) {
			if (pl->n_cmds == MAX_CMDS)
				return perr(p, tok, "more than %d commands in a pipeline",
					    MAX_CMDS);
			struct cmd *nc = realloc(pl->cmds, (pl->n_cmds + 1) * sizeof(*nc));
			if (!nc)
				return kap_error(p->err, ENOMEM, "template");
			pl->cmds = nc;
			cur = &pl->cmds[pl->n_cmds++];
			*cur = (struct cmd){.pos = tok};
		}
		struct arg a;
		size_t ident;
		int r = parse_operand(p, &a, &ident);
		if (r < 0) {
			arg_clear(&a);
			return r;
		}
		if (ident) {
			const char *name = p->s + tok;
			if ((ident == 4 && !strncmp(name, "true", 4)) ||
			    (ident == 5 && !strncmp(name, "false", 5))) {
				a.kind = ARG_BOOL;
				a.i = ident == 4;
			} else if (ident == 3 && !strncmp(name, "nil", 3)) {
				a.kind = ARG_NIL;
			} else {
				const struct func *f = find_func(name, ident);
				char q[64];
				quote_short(name, ident, q, sizeof(q));
				if (!f)
					return perr(p, tok, "function \"%s\" not defined", q);
				if (cur->fn || cur->n_args)
					return perr(p, tok, "function \"%s\" given as an argument",
						    q);
				cur->fn = f;
				continue;
			}
		}
		if (!cur->fn && cur->n_args == 1) {
			arg_clear(&a);
			return perr(p, tok, "can't give an argument to a non-function");
		}
		if (pl->n_cmds > 1 && !cur->fn) {
			arg_clear(&a);
			return perr(p, tok, "a pipeline can only continue with a function");
		}
		if (cur->n_args == MAX_ARGS) {
			arg_clear(&a);
			return perr(p, tok, "more than %d arguments", MAX_ARGS);
		}
		a.pos = tok;
		cur->args[cur->n_args++] = a;
	}
}

static int parse_list(struct parser *p, struct node **out, enum term *term, size_t *term_pos);

static bool keyword(struct parser *p, const char *kw)
{
	size_t n = strlen(kw);
	if (p->len - p->pos < n || strncmp(p->s + p->pos, kw, n) ||
	    (p->pos + n < p->len && is_ident(p->s[p->pos + n])))
		return false;
	p->pos += n;
	return true;
}

static int expect_close(struct parser *p, size_t action_pos, const char *what)
{
	skip_space(p);
	if (p->pos >= p->len)
		return perr(p, action_pos, "unclosed action");
	if (!at_close(p))
		return perr(p, p->pos, "unexpected text after {{%s}}", what);
	return 0;
}

static int parse_control(struct parser *p, struct node *n, const char *what)
{
	int r = parse_pipeline(p, n->pos, &n->pipe);
	if (r < 0)
		return r;
	if (++p->depth > MAX_DEPTH)
		return perr(p, n->pos, "more than %d nested actions", MAX_DEPTH);
	enum term t;
	size_t tpos;
	if ((r = parse_list(p, &n->body, &t, &tpos)) < 0)
		return r;
	if (t == TERM_ELSE && (r = parse_list(p, &n->alt, &t, &tpos)) < 0)
		return r;
	if (t == TERM_ELSE)
		return perr(p, tpos, "a second {{else}} for {{%s}}", what);
	if (t != TERM_END)
		return perr(p, n->pos, "{{%s}} has no {{end}}", what);
	p->depth--;
	return 0;
}

static void append_node(struct node ***tail, struct node *n)
{
	**tail = n;
	*tail = &n->next;
}

static int parse_list(struct parser *p, struct node **out, enum term *term, size_t *term_pos)
{
	struct node *head = NULL, **tail = &head;
	int r = 0;
	*term = TERM_EOF;
	for (;;) {
		const char *open =
		    p->pos < p->len ? memmem(p->s + p->pos, p->len - p->pos, "{{", 2) : NULL;
		size_t end = open ? (size_t)(open - p->s) : p->len;
		size_t start = p->pos;
		if (p->trim_next) {
			while (start < end && is_space(p->s[start]))
				start++;
			p->trim_next = false;
		}
		/* "{{- " (Go: the space is part of the marker; "{{-3}}" is the number -3). */
		bool trim_left =
		    open && end + 3 < p->len && p->s[end + 2] == '-' && is_space(p->s[end + 3]);
		size_t text_end = end;
		if (trim_left)
			while (text_end > start && is_space(p->s[text_end - 1]))
				text_end--;
		if (text_end > start) {
			struct node *t = calloc(1, sizeof(*t));
			char *copy = malloc(text_end - start + 1);
			if (!t || !copy) {
				free(t);
				free(copy);
				r = kap_error(p->err, ENOMEM, "template");
				goto fail;
			}
			memcpy(copy, p->s + start, text_end - start);
			copy[text_end - start] = '\0';
			*t = (struct node){
			    .kind = NODE_TEXT, .pos = start, .text = copy, .len = text_end - start};
			append_node(&tail, t);
		}
		if (!open) {
			p->pos = p->len;
			break;
		}
		size_t action = end;
		p->pos = end + (trim_left ? 4 : 2);
		skip_space(p);
		if (p->len - p->pos >= 2 && !strncmp(p->s + p->pos, "/*", 2)) {
			const char *close = memmem(p->s + p->pos + 2, p->len - p->pos - 2, "*/", 2);
			if (!close) {
				r = perr(p, action, "unclosed comment");
				goto fail;
			}
			p->pos = (size_t)(close - p->s) + 2;
			if ((r = expect_close(p, action, "/* */")) < 0)
				goto fail;
			continue;
		}
		if (keyword(p, "end")) {
			if ((r = expect_close(p, action, "end")) < 0)
				goto fail;
			if (p->depth == 0) {
				r = perr(p, action,
					 "{{end}} without {{if}}, {{range}} or {{with}}");
				goto fail;
			}
			*term = TERM_END;
			*term_pos = action;
			break;
		}
		if (keyword(p, "else")) {
			skip_space(p);
			if (keyword(p, "if") || keyword(p, "with")) {
				r = perr(p, action,
					 "{{else if}} and {{else with}} are not supported");
				goto fail;
			}
			if ((r = expect_close(p, action, "else")) < 0)
				goto fail;
			if (p->depth == 0) {
				r = perr(p, action,
					 "{{else}} without {{if}}, {{range}} or {{with}}");
				goto fail;
			}
			*term = TERM_ELSE;
			*term_pos = action;
			break;
		}
		struct node *n = calloc(1, sizeof(*n));
		if (!n) {
			r = kap_error(p->err, ENOMEM, "template");
			goto fail;
		}
		n->pos = action;
		append_node(&tail, n);
		const char *what = NULL;
		if (keyword(p, "if")) {
			n->kind = NODE_IF;
			what = "if";
		} else if (keyword(p, "range")) {
			n->kind = NODE_RANGE;
			what = "range";
		} else if (keyword(p, "with")) {
			n->kind = NODE_WITH;
			what = "with";
		} else if (keyword(p, "define") || keyword(p, "template") || keyword(p, "block") ||
			   keyword(p, "break") || keyword(p, "continue")) {
			r = perr(p, action, "this action is not supported");
			goto fail;
		} else {
			n->kind = NODE_ACTION;
		}
		r = what ? parse_control(p, n, what) : parse_pipeline(p, action, &n->pipe);
		if (r < 0)
			goto fail;
	}
	*out = head;
	return 0;
fail:
	nodes_free(head);
	return r;
}

int kap_template_parse(const char *text, size_t len, struct kapsel_template **out,
		       struct kapsel_error **err)
{
	*out = NULL;
	struct kapsel_template *t = calloc(1, sizeof(*t));
	if (!t || !(t->src = malloc(len + 1))) {
		free(t);
		return kap_error(err, ENOMEM, "template");
	}
	memcpy(t->src, text, len);
	t->src[len] = '\0';
	t->src_len = len;
	struct parser p = {.s = t->src, .len = len, .err = err};
	enum term term;
	size_t tpos = 0;
	int r = parse_list(&p, &t->root, &term, &tpos);
	if (r < 0) {
		kap_template_free(t);
		return r;
	}
	*out = t;
	return 0;
}

/* ---- execution ---- */

struct exec {
	const struct kapsel_template *t;
	const struct kap_json *root; /* $ */
	char *buf;
	size_t len, cap;
	unsigned steps;
	struct kapsel_error **err;
};

static int xerr(struct exec *x, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int xerr(struct exec *x, size_t pos, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tmpl_error(x->err, x->t->src, x->t->src_len, pos, "%s", msg);
}

static int step(struct exec *x, size_t pos)
{
	if (++x->steps > MAX_STEPS)
		return xerr(x, pos, "too much work (more than %u steps)", MAX_STEPS);
	return 0;
}

/* Appends to the output; only limits and memory fail. Callers report a position. */
static int put(struct exec *x, const char *s, size_t n)
{
	if (n > MAX_OUTPUT - x->len)
		return -E2BIG;
	if (x->len + n + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 256;
		while (cap < x->len + n + 1)
			cap *= 2;
		char *nb = realloc(x->buf, cap);
		if (!nb)
			return -ENOMEM;
		x->buf = nb;
		x->cap = cap;
	}
	memcpy(x->buf + x->len, s, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return 0;
}

static int puts_(struct exec *x, const char *s)
{
	return put(x, s, strlen(s));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* An object's keys, sorted (Go prints and ranges over maps in key order). Caller frees. */
static const char **sorted_keys(const struct kap_json *o, size_t *n)
{
	size_t cnt = 0;
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(o); kap_json_iter_next(&it, &k, &v);)
		cnt++;
	const char **keys = calloc(cnt + 1, sizeof(char *));
	if (!keys)
		return NULL;
	size_t i = 0;
	for (struct kap_json_iter it = kap_json_iter(o); kap_json_iter_next(&it, &k, &v);)
		keys[i++] = k;
	qsort(keys, cnt, sizeof(char *), cmp_str);
	*n = cnt;
	return keys;
}

/* fmt's %v of v. */
static int print_value(struct exec *x, size_t pos, const struct kap_json *v, bool top)
{
	int r = step(x, pos);
	if (r < 0)
		return r;
	switch (kap_json_type(v)) {
	case KAP_JSON_NULL:
		return puts_(x, top ? "<no value>" : "<nil>");
	case KAP_JSON_STRING:
		return puts_(x, kap_json_string(v));
	case KAP_JSON_ARRAY: {
		size_t n = kap_json_array_len(v);
		if ((r = puts_(x, "[")) < 0)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((i && (r = puts_(x, " ")) < 0) ||
			    (r = print_value(x, pos, kap_json_array_at(v, i), false)) < 0)
				return r;
		return puts_(x, "]");
	}
	case KAP_JSON_OBJECT: {
		size_t n = 0;
		cleanup_free const char **keys = sorted_keys(v, &n);
		if (!keys)
			return -ENOMEM;
		if ((r = puts_(x, "map[")) < 0)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((i && (r = puts_(x, " ")) < 0) || (r = puts_(x, keys[i])) < 0 ||
			    (r = puts_(x, ":")) < 0 ||
			    (r = print_value(x, pos, kap_json_get(v, keys[i]), false)) < 0)
				return r;
		return puts_(x, "]");
	}
	default: {
		/* Numbers and booleans as JSON writes them (Go's %v agrees for these). */
		cleanup_free char *s = kap_json_dump(v, false);
		return s ? puts_(x, s) : -ENOMEM;
	}
	}
}

static char *value_string(struct exec *x, size_t pos, const struct kap_json *v, int *r)
{
	size_t saved = x->len;
	*r = print_value(x, pos, v, true);
	if (*r < 0) {
		x->len = saved;
		return NULL;
	}
	char *s = strndup(x->buf ? x->buf + saved : "", x->len - saved);
	x->len = saved;
	if (x->buf)
		x->buf[saved] = '\0';
	if (!s)
		*r = -ENOMEM;
	return s;
}

static bool truth(const struct kap_json *v)
{
	switch (kap_json_type(v)) {
	case KAP_JSON_NULL:
		return false;
	case KAP_JSON_BOOL:
		return kap_json_bool(v);
	case KAP_JSON_INT:
		return kap_json_int64(v) != 0;
	case KAP_JSON_STRING:
		return kap_json_string(v)[0] != '\0';
	case KAP_JSON_ARRAY:
		return kap_json_array_len(v) != 0;
	case KAP_JSON_OBJECT: {
		const char *k;
		struct kap_json *val;
		struct kap_json_iter it = kap_json_iter(v);
		return kap_json_iter_next(&it, &k, &val);
	}
	default: {
		cleanup_free char *s = kap_json_dump(v, false);
		return s && strtod(s, NULL) != 0;
	}
	}
}

static bool has_member(const struct kap_json *o, const char *key)
{
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(o); kap_json_iter_next(&it, &k, &v);)
		if (!strcmp(k, key))
			return true;
	return false;
}

/*
 * Member f of o: the key f, else the first key equal to f ignoring case. podman's templates
 * name Go fields ({{.Host.Kernel}}, {{.ID}}) whose JSON names are camelCase or spelt
 * otherwise ("host", "kernel", "Id"); the JSON is what kapsel has.
 */
static bool member(const struct kap_json *o, const char *f, const struct kap_json **out)
{
	*out = kap_json_get(o, f);
	if (*out || has_member(o, f))
		return true;
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(o); kap_json_iter_next(&it, &k, &v);) {
		if (!strcasecmp(k, f)) {
			*out = v;
			return true;
		}
	}
	return false;
}

static struct kap_json *ref(const struct kap_json *v)
{
	return v ? kap_json_get_ref((struct kap_json *)v) : NULL;
}

static int eval_arg(struct exec *x, size_t pos, const struct arg *a, const struct kap_json *dot,
		    struct kap_json **out)
{
	*out = NULL;
	switch (a->kind) {
	case ARG_STRING:
		*out = kap_json_new_string(a->s);
		return *out ? 0 : -ENOMEM;
	case ARG_INT:
		*out = kap_json_new_int64(a->i);
		return *out ? 0 : -ENOMEM;
	case ARG_BOOL:
		*out = kap_json_new_bool(a->i != 0);
		return *out ? 0 : -ENOMEM;
	case ARG_NIL:
		return 0;
	case ARG_FIELD:
	case ARG_VAR:
		break;
	}
	const struct kap_json *v = a->kind == ARG_VAR ? x->root : dot;
	char path[256] = "";
	size_t pl = 0;
	for (size_t i = 0; i < a->n_fields; i++) {
		const char *f = a->fields[i];
		char q[64];
		quote_short(f, strlen(f), q, sizeof(q));
		enum kap_json_type t = kap_json_type(v);
		if (t != KAP_JSON_OBJECT)
			return xerr(x, pos, "can't evaluate field %s in %s%s (%s)", q,
				    a->kind == ARG_VAR ? "$" : ".", path,
				    t == KAP_JSON_NULL ? "no value" : kap_json_type_name(t));
		const struct kap_json *m;
		if (!member(v, f, &m))
			return xerr(x, pos, "can't evaluate field %s in %s%s (no such field)", q,
				    a->kind == ARG_VAR ? "$" : ".", path);
		v = m;
		if (pl < sizeof(path) - 1)
			pl +=
			    (size_t)snprintf(path + pl, sizeof(path) - pl, "%s%s", i ? "." : "", q);
		if (pl >= sizeof(path))
			pl = sizeof(path) - 1;
	}
	*out = ref(v);
	return 0;
}

static void put_all(struct kap_json **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kap_json_put(v[i]);
}

static int eval_pipeline(struct exec *x, const struct pipeline *pl, const struct kap_json *dot,
			 struct kap_json **out)
{
	struct kap_json *prev = NULL;
	bool have_prev = false;
	for (size_t c = 0; c < pl->n_cmds; c++) {
		const struct cmd *cmd = &pl->cmds[c];
		struct kap_json *args[MAX_ARGS + 1];
		size_t n = 0;
		int r = 0;
		for (; n < cmd->n_args; n++)
			if ((r = eval_arg(x, cmd->args[n].pos, &cmd->args[n], dot, &args[n])) < 0)
				break;
		if (r < 0) {
			put_all(args, n);
			kap_json_put(prev);
			return r;
		}
		if (have_prev) /* "X | f a": f a X */
			args[n++] = steal_ptr(prev);
		if (!cmd->fn) {
			prev = n ? args[0] : NULL;
			have_prev = true;
			continue;
		}
		const struct func *f = cmd->fn;
		if ((int)n < f->min || (f->max >= 0 && (int)n > f->max)) {
			put_all(args, n);
			if (f->min == f->max)
				return xerr(x, cmd->pos, "%s takes %d argument%s, got %zu", f->name,
					    f->min, f->min == 1 ? "" : "s", n);
			return xerr(x, cmd->pos, "%s takes at least %d arguments, got %zu", f->name,
				    f->min, n);
		}
		r = f->call(x, cmd->pos, args, n, &prev);
		put_all(args, n);
		if (r < 0)
			return r;
		have_prev = true;
	}
	*out = prev;
	return 0;
}

static int exec_list(struct exec *x, const struct node *n, const struct kap_json *dot);

static int limit_error(struct exec *x, size_t pos, int r)
{
	if (r == -E2BIG)
		return xerr(x, pos, "output larger than %zu MiB", MAX_OUTPUT >> 20);
	if (r == -ENOMEM)
		return kap_error(x->err, ENOMEM, "template");
	return r;
}

static int exec_node(struct exec *x, const struct node *n, const struct kap_json *dot)
{
	int r = step(x, n->pos);
	if (r < 0)
		return r;
	if (n->kind == NODE_TEXT)
		return limit_error(x, n->pos, put(x, n->text, n->len));
	struct kap_json *v = NULL;
	if ((r = eval_pipeline(x, &n->pipe, dot, &v)) < 0)
		return limit_error(x, n->pos, r);
	switch (n->kind) {
	case NODE_ACTION:
		r = limit_error(x, n->pos, print_value(x, n->pos, v, true));
		break;
	case NODE_IF:
		r = exec_list(x, truth(v) ? n->body : n->alt, dot);
		break;
	case NODE_WITH:
		r = truth(v) ? exec_list(x, n->body, v) : exec_list(x, n->alt, dot);
		break;
	case NODE_RANGE: {
		enum kap_json_type t = kap_json_type(v);
		if (t == KAP_JSON_ARRAY) {
			size_t cnt = kap_json_array_len(v);
			for (size_t i = 0; i < cnt && r >= 0; i++)
				r = exec_list(x, n->body, kap_json_array_at(v, i));
			if (cnt == 0)
				r = exec_list(x, n->alt, dot);
		} else if (t == KAP_JSON_OBJECT) {
			size_t cnt = 0;
			cleanup_free const char **keys = sorted_keys(v, &cnt);
			if (!keys) {
				r = kap_error(x->err, ENOMEM, "template");
				break;
			}
			for (size_t i = 0; i < cnt && r >= 0; i++)
				r = exec_list(x, n->body, kap_json_get(v, keys[i]));
			if (cnt == 0)
				r = exec_list(x, n->alt, dot);
		} else if (t == KAP_JSON_NULL) {
			r = exec_list(x, n->alt, dot);
		} else {
			r = xerr(x, n->pos, "range can't iterate over a %s", kap_json_type_name(t));
		}
		break;
	}
	case NODE_TEXT:
		break;
	}
	kap_json_put(v);
	return r;
}

static int exec_list(struct exec *x, const struct node *n, const struct kap_json *dot)
{
	for (; n; n = n->next) {
		int r = exec_node(x, n, dot);
		if (r < 0)
			return r;
	}
	return 0;
}

int kap_template_exec(const struct kapsel_template *t, const struct kap_json *doc, char **out,
		      size_t *len, struct kapsel_error **err)
{
	struct exec x = {.t = t, .root = doc, .err = err};
	int r = exec_list(&x, t->root, doc);
	if (r >= 0 && !x.buf && (r = puts_(&x, "")) < 0)
		r = kap_error(err, ENOMEM, "template");
	if (r < 0) {
		free(x.buf);
		return r;
	}
	*out = x.buf;
	if (len)
		*len = x.len;
	return 0;
}

/* ---- the functions ---- */

static int new_string(char *s, struct kap_json **out)
{
	if (!s)
		return -ENOMEM;
	*out = kap_json_new_string(s);
	free(s);
	return *out ? 0 : -ENOMEM;
}

static int fn_json(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)x, (void)pos, (void)n;
	if (!a[0])
		return new_string(strdup("null"), out);
	return new_string(kap_json_dump(a[0], false), out);
}

static int fn_case(struct exec *x, size_t pos, struct kap_json *a, struct kap_json **out, int mode)
{
	int r;
	char *s = value_string(x, pos, a, &r);
	if (!s)
		return r;
	bool word_start = true;
	for (char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (mode == 0)
			*p = (char)toupper(c);
		else if (mode == 1)
			*p = (char)tolower(c);
		else if (word_start)
			*p = (char)toupper(c);
		word_start = isspace(c) || c == '-' || c == '_';
	}
	return new_string(s, out);
}

static int fn_upper(struct exec *x, size_t pos, struct kap_json **a, size_t n,
		    struct kap_json **out)
{
	(void)n;
	return fn_case(x, pos, a[0], out, 0);
}

static int fn_lower(struct exec *x, size_t pos, struct kap_json **a, size_t n,
		    struct kap_json **out)
{
	(void)n;
	return fn_case(x, pos, a[0], out, 1);
}

static int fn_title(struct exec *x, size_t pos, struct kap_json **a, size_t n,
		    struct kap_json **out)
{
	(void)n;
	return fn_case(x, pos, a[0], out, 2);
}

/* join LIST SEP (podman's argument order; Go's strings.Join). */
static int fn_join(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)n;
	if (kap_json_type(a[0]) != KAP_JSON_ARRAY)
		return xerr(x, pos, "join: expected a list, got %s",
			    kap_json_type_name(kap_json_type(a[0])));
	if (kap_json_type(a[1]) != KAP_JSON_STRING)
		return xerr(x, pos, "join: the separator must be a string");
	size_t saved = x->len;
	int r = 0;
	size_t cnt = kap_json_array_len(a[0]);
	for (size_t i = 0; i < cnt && r >= 0; i++) {
		if (i)
			r = puts_(x, kap_json_string(a[1]));
		if (r >= 0)
			r = print_value(x, pos, kap_json_array_at(a[0], i), false);
	}
	char *s = r >= 0 ? strndup(x->buf ? x->buf + saved : "", x->len - saved) : NULL;
	x->len = saved;
	if (x->buf)
		x->buf[saved] = '\0';
	if (r < 0)
		return r;
	return new_string(s, out);
}

/* index X K...: object member K (missing: "", as Go's map[string]string gives) or element K. */
static int fn_index(struct exec *x, size_t pos, struct kap_json **a, size_t n,
		    struct kap_json **out)
{
	const struct kap_json *v = a[0];
	for (size_t i = 1; i < n; i++) {
		enum kap_json_type t = kap_json_type(v), kt = kap_json_type(a[i]);
		if (t == KAP_JSON_OBJECT && kt == KAP_JSON_STRING) {
			const char *k = kap_json_string(a[i]);
			if (!has_member(v, k)) {
				*out = kap_json_new_string("");
				return *out ? 0 : -ENOMEM;
			}
			v = kap_json_get(v, k);
		} else if (t == KAP_JSON_ARRAY && kt == KAP_JSON_INT) {
			int64_t k = kap_json_int64(a[i]);
			if (k < 0 || (uint64_t)k >= kap_json_array_len(v))
				return xerr(x, pos, "index out of range: %" PRId64, k);
			v = kap_json_array_at(v, (size_t)k);
		} else {
			return xerr(x, pos, "can't index a %s with a %s", kap_json_type_name(t),
				    kap_json_type_name(kt));
		}
	}
	*out = ref(v);
	return 0;
}

static int fn_len(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)n;
	size_t l = 0;
	switch (kap_json_type(a[0])) {
	case KAP_JSON_STRING:
		l = strlen(kap_json_string(a[0]));
		break;
	case KAP_JSON_ARRAY:
		l = kap_json_array_len(a[0]);
		break;
	case KAP_JSON_OBJECT: {
		const char *k;
		struct kap_json *v;
		for (struct kap_json_iter it = kap_json_iter(a[0]);
		     kap_json_iter_next(&it, &k, &v);)
			l++;
		break;
	}
	default:
		return xerr(x, pos, "len of a %s", kap_json_type_name(kap_json_type(a[0])));
	}
	*out = kap_json_new_int64((int64_t)l);
	return *out ? 0 : -ENOMEM;
}

/* truncate S N: the first N bytes of S's text (podman's truncate). */
static int fn_truncate(struct exec *x, size_t pos, struct kap_json **a, size_t n,
		       struct kap_json **out)
{
	(void)n;
	if (kap_json_type(a[1]) != KAP_JSON_INT || kap_json_int64(a[1]) < 0)
		return xerr(x, pos, "truncate: the length must be a number >= 0");
	int r;
	char *s = value_string(x, pos, a[0], &r);
	if (!s)
		return r;
	if ((uint64_t)kap_json_int64(a[1]) < strlen(s))
		s[kap_json_int64(a[1])] = '\0';
	return new_string(s, out);
}

/* Go's eq on basic values: same kind and value; we compare kinds and printed forms. */
static int equal(struct exec *x, size_t pos, struct kap_json *a, struct kap_json *b, bool *eq)
{
	enum kap_json_type ta = kap_json_type(a), tb = kap_json_type(b);
	if (ta == KAP_JSON_ARRAY || ta == KAP_JSON_OBJECT || tb == KAP_JSON_ARRAY ||
	    tb == KAP_JSON_OBJECT)
		return xerr(x, pos, "eq: can't compare a %s and a %s", kap_json_type_name(ta),
			    kap_json_type_name(tb));
	if (ta != tb) {
		*eq = false;
		return 0;
	}
	int r;
	cleanup_free char *sa = value_string(x, pos, a, &r);
	if (!sa)
		return r;
	cleanup_free char *sb = value_string(x, pos, b, &r);
	if (!sb)
		return r;
	*eq = !strcmp(sa, sb);
	return 0;
}

static int fn_eq(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	/* eq A B C...: A equals any of the others. */
	bool any = false;
	for (size_t i = 1; i < n && !any; i++) {
		int r = equal(x, pos, a[0], a[i], &any);
		if (r < 0)
			return r;
	}
	*out = kap_json_new_bool(any);
	return *out ? 0 : -ENOMEM;
}

static int fn_ne(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)n;
	bool eq;
	int r = equal(x, pos, a[0], a[1], &eq);
	if (r < 0)
		return r;
	*out = kap_json_new_bool(!eq);
	return *out ? 0 : -ENOMEM;
}

static int fn_not(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)x, (void)pos, (void)n;
	*out = kap_json_new_bool(!truth(a[0]));
	return *out ? 0 : -ENOMEM;
}

/* and/or return the deciding argument, as Go's do (every argument is evaluated here). */
static int fn_and(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)x, (void)pos;
	size_t i = 0;
	while (i + 1 < n && truth(a[i]))
		i++;
	*out = ref(a[i]);
	return 0;
}

static int fn_or(struct exec *x, size_t pos, struct kap_json **a, size_t n, struct kap_json **out)
{
	(void)x, (void)pos;
	size_t i = 0;
	while (i + 1 < n && !truth(a[i]))
		i++;
	*out = ref(a[i]);
	return 0;
}

static const struct func funcs[] = {
    {"and", 1, -1, fn_and},    {"eq", 2, -1, fn_eq},	  {"index", 1, -1, fn_index},
    {"join", 2, 2, fn_join},   {"json", 1, 1, fn_json},	  {"len", 1, 1, fn_len},
    {"lower", 1, 1, fn_lower}, {"ne", 2, 2, fn_ne},	  {"not", 1, 1, fn_not},
    {"or", 1, -1, fn_or},      {"title", 1, 1, fn_title}, {"truncate", 2, 2, fn_truncate},
    {"upper", 1, 1, fn_upper},
};

static const struct func *find_func(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++)
		if (strlen(funcs[i].name) == n && !strncmp(funcs[i].name, name, n))
			return &funcs[i];
	return NULL;
}

/* ---- the public API (include/kapsel/format.h) ---- */

API int kapsel_template_parse(const char *text, struct kapsel_template **out,
			      struct kapsel_error **err)
{
	return kap_template_parse(text, strlen(text), out, err);
}

API int kapsel_template_render(const struct kapsel_template *t, const char *json, char **out,
			       struct kapsel_error **err)
{
	cleanup_json struct kap_json *doc = NULL;
	int r = kap_json_parse(json, strlen(json), "template input", &doc, err);
	if (r < 0)
		return r;
	return kap_template_exec(t, doc, out, NULL, err);
}

API void kapsel_template_free(struct kapsel_template *t)
{
	kap_template_free(t);
}
