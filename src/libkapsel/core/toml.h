/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A TOML subset (TOML 1.0) for the containers configuration files (registries.conf(5) and its
 * drop-ins): tables, arrays of tables, dotted keys, basic and literal strings (single- and
 * multi-line), integers, booleans, arrays and inline tables. Floats and dates are refused with
 * a message: no containers file kapsel reads uses them. The input is hostile (any user can be
 * pointed at a file): nesting is bounded, every error is one line "FILE:LINE: what".
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <kapsel/error.h>

enum kap_toml_type {
	KAP_TOML_STRING,
	KAP_TOML_INTEGER,
	KAP_TOML_BOOL,
	KAP_TOML_ARRAY,
	KAP_TOML_TABLE,
};

struct kap_toml {
	enum kap_toml_type type;
	unsigned line; /* where the value (or the table's header) is */
	char *key;     /* member name in its table; NULL for an array element */
	char *str;     /* KAP_TOML_STRING: NUL-free UTF-8 */
	long long integer;
	bool boolean;
	/* KAP_TOML_ARRAY: elements; KAP_TOML_TABLE: members, in file order. */
	struct kap_toml **items;
	size_t n;
	/* Bookkeeping of TOML's rules on redefinition (toml.io/en/v1.0.0#table). */
	bool header; /* defined by a [table] header */
	bool sealed; /* an inline table or a static array: cannot be extended */
	bool aot;    /* an array of tables ([[name]]) */
	bool dotted; /* created by a dotted key: no [header] may define it later */
};

/* Parse text (len bytes, NULs refused); file names the source in errors. */
int kap_toml_parse(const char *text, size_t len, const char *file, struct kap_toml **root,
		   struct kapsel_error **err);
void kap_toml_free(struct kap_toml *t);
static inline void kap_toml_freep(struct kap_toml **t)
{
	kap_toml_free(*t);
}
#define cleanup_toml __attribute__((cleanup(kap_toml_freep)))

/* A table's member, or NULL. */
const struct kap_toml *kap_toml_get(const struct kap_toml *table, const char *key);
const char *kap_toml_type_name(enum kap_toml_type t);
