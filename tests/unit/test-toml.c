/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The TOML subset of core/toml.c: what registries.conf files use parses to the values TOML 1.0
 * gives them; what TOML forbids (redefinitions, bad escapes, NULs) fails with one line that
 * names file and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/toml.h"

static struct kap_toml *parse_ok(const char *text)
{
	struct kap_toml *t = NULL;
	struct kapsel_error *err = NULL;
	if (kap_toml_parse(text, strlen(text), "t.conf", &t, &err) < 0)
		fail_msg("%s: %s", text, err->msg);
	assert_non_null(t);
	return t;
}

/* Fails with "t.conf:LINE: ..." containing needle, on one line. */
static void parse_bad(const char *text, size_t len, unsigned line, const char *needle)
{
	struct kap_toml *t = NULL;
	struct kapsel_error *err = NULL;
	assert_true(kap_toml_parse(text, len, "t.conf", &t, &err) < 0);
	assert_null(t);
	assert_non_null(err);
	char prefix[32];
	snprintf(prefix, sizeof(prefix), "t.conf:%u: ", line);
	if (strncmp(err->msg, prefix, strlen(prefix)) || !strstr(err->msg, needle) ||
	    strchr(err->msg, '\n'))
		fail_msg("%s: got \"%s\", want \"%s...%s\"", text, err->msg, prefix, needle);
	kapsel_error_free(err);
}

static const char *str(const struct kap_toml *t, const char *key)
{
	const struct kap_toml *v = kap_toml_get(t, key);
	assert_non_null(v);
	assert_int_equal(v->type, KAP_TOML_STRING);
	return v->str;
}

static void test_registries_conf_shape(void **state)
{
	struct kap_toml *t = parse_ok("# comment\n"
				      "unqualified-search-registries = [\"a.io\", 'b.io:5000',\n"
				      "  # inside\n"
				      "  \"c.io\", ]\n"
				      "short-name-mode = \"enforcing\"  # trailing\n"
				      "\n"
				      "[aliases]\n"
				      "  \"fedora\" = \"registry.fedoraproject.org/fedora\"\n"
				      "  'opensuse/leap' = 'registry.opensuse.org/opensuse/leap'\n"
				      "  bare-key_1 = \"x.io/y\"\n"
				      "[[registry]]\n"
				      "location = \"a.io\"\n"
				      "insecure = true\n"
				      "[[registry.mirror]]\n"
				      "location = \"m.io\"\n"
				      "[[registry]]\n"
				      "prefix = \"b.io\"\r\n"
				      "blocked = false\n");
	const struct kap_toml *s = kap_toml_get(t, "unqualified-search-registries");
	assert_int_equal(s->type, KAP_TOML_ARRAY);
	assert_int_equal(s->n, 3);
	assert_string_equal(s->items[1]->str, "b.io:5000");
	assert_int_equal(s->items[2]->line, 4);
	assert_string_equal(str(t, "short-name-mode"), "enforcing");
	const struct kap_toml *a = kap_toml_get(t, "aliases");
	assert_int_equal(a->type, KAP_TOML_TABLE);
	assert_int_equal(a->n, 3);
	assert_string_equal(str(a, "opensuse/leap"), "registry.opensuse.org/opensuse/leap");
	assert_string_equal(str(a, "bare-key_1"), "x.io/y");
	assert_int_equal(kap_toml_get(a, "fedora")->line, 8);
	const struct kap_toml *r = kap_toml_get(t, "registry");
	assert_int_equal(r->type, KAP_TOML_ARRAY);
	assert_int_equal(r->n, 2);
	assert_true(kap_toml_get(r->items[0], "insecure")->boolean);
	assert_string_equal(str(kap_toml_get(r->items[0], "mirror")->items[0], "location"), "m.io");
	assert_string_equal(str(r->items[1], "prefix"), "b.io");
	assert_false(kap_toml_get(r->items[1], "blocked")->boolean);
	kap_toml_free(t);
}

static void test_strings(void **state)
{
	struct kap_toml *t = parse_ok("a = \"q\\\"b\\\\s\\t\\u00e9\\U0001F600\"\n"
				      "b = 'C:\\no\\escapes'\n"
				      "c = \"\"\"\nline1\n  line2 \\\n   joined\"\"\"\n"
				      "d = '''\nraw \\n'''\n"
				      "e = \"\"\"two quotes end\"\"\"\"\"\n"
				      "f = \"\"\n");
	assert_string_equal(str(t, "a"), "q\"b\\s\t\xc3\xa9\xf0\x9f\x98\x80");
	assert_string_equal(str(t, "b"), "C:\\no\\escapes");
	assert_string_equal(str(t, "c"), "line1\n  line2 joined");
	assert_string_equal(str(t, "d"), "raw \\n");
	assert_string_equal(str(t, "e"), "two quotes end\"\"");
	assert_string_equal(str(t, "f"), "");
	assert_int_equal(kap_toml_get(t, "d")->line, 7);
	kap_toml_free(t);
}

static void test_numbers_keys_tables(void **state)
{
	struct kap_toml *t = parse_ok("n = -1_000\nh = 0xff\no = 0o17\nb = 0b101\nz = 0\n"
				      "max = 9223372036854775807\nmin = -9223372036854775808\n"
				      "x.y . \"z\" = 1\n"
				      "i = { k = 'v', deep.er = [1, [2]] }\n"
				      "[t.u]\nv = 1\n[t]\nw = 2\n");
	assert_int_equal(kap_toml_get(t, "n")->integer, -1000);
	assert_int_equal(kap_toml_get(t, "h")->integer, 255);
	assert_int_equal(kap_toml_get(t, "o")->integer, 15);
	assert_int_equal(kap_toml_get(t, "b")->integer, 5);
	assert_int_equal(kap_toml_get(t, "z")->integer, 0);
	assert_true(kap_toml_get(t, "max")->integer == INT64_MAX);
	assert_true(kap_toml_get(t, "min")->integer == INT64_MIN);
	assert_int_equal(kap_toml_get(kap_toml_get(kap_toml_get(t, "x"), "y"), "z")->integer, 1);
	const struct kap_toml *i = kap_toml_get(t, "i");
	assert_string_equal(str(i, "k"), "v");
	const struct kap_toml *deep = kap_toml_get(kap_toml_get(i, "deep"), "er");
	assert_int_equal(deep->items[1]->items[0]->integer, 2);
	const struct kap_toml *tt = kap_toml_get(t, "t");
	assert_int_equal(kap_toml_get(tt, "w")->integer, 2);
	assert_int_equal(kap_toml_get(kap_toml_get(tt, "u"), "v")->integer, 1);
	kap_toml_free(t);

	t = parse_ok("");
	assert_int_equal(t->n, 0);
	kap_toml_free(t);
	t = parse_ok("\xef\xbb\xbf# only a BOM and a comment");
	kap_toml_free(t);
}

static void test_errors(void **state)
{
	parse_bad("a = 1\na = 2\n", 11, 2, "duplicate key \"a\" (first on line 1)");
	parse_bad("[t]\n[t]\n", 8, 2, "[t]: \"t\" is already defined");
	parse_bad("a = 1\n[a]\n", 10, 2, "already defined");
	parse_bad("a = [1]\n[[a]]\n", 14, 2, "is already an array");
	parse_bad("[[a]]\n[a]\n", 10, 2, "already defined");
	parse_bad("i = {x = 1}\n[i]\n", 16, 2, "already defined");
	parse_bad("x.y = 1\n[x.y]\n", 14, 2, "already defined");
	parse_bad("[a.b]\n[a]\nb.c = 1\n", 18, 3, "key \"b\": already defined");
	parse_bad("a = \"open\n", 10, 1, "newline in a single-line string");
	parse_bad("a = \"\\q\"\n", 8, 1, "invalid escape 'q' after");
	parse_bad("a = \"\\u0000\"\n", 12, 1, "not an allowed character");
	parse_bad("a = \"\\ud800\"\n", 12, 1, "not an allowed character");
	parse_bad("a = 1.5\n", 8, 1, "floats and dates are not supported");
	parse_bad("a = 1979-05-27\n", 15, 1, "floats and dates are not supported");
	parse_bad("a = 9223372036854775808\n", 24, 1, "out of range");
	parse_bad("a = 012\n", 8, 1, "leading zeros");
	parse_bad("a = 1__0\n", 9, 1, "'_' must be between digits");
	parse_bad("a = tru\n", 8, 1, "expected a value");
	parse_bad("a = \n", 5, 1, "expected a value");
	parse_bad("a 1\n", 4, 1, "expected '=' after key \"a\"");
	parse_bad("a = 1 b = 2\n", 12, 1, "unexpected 'b'");
	parse_bad("\n\n[a\n", 5, 3, "expected ']' after [a");
	parse_bad("a = [1 2]\n", 10, 1, "expected ',' or ']'");
	parse_bad("a = {x = 1\n", 11, 1, "expected ',' or '}'");
	parse_bad("a = \"x\0y\"\n", 10, 1, "NUL byte");
	parse_bad("# ok\na = \"\xff\"\n", 12, 2, "invalid UTF-8");
	parse_bad("a = \"\xc0\xaf\"\n", 9, 1, "invalid UTF-8");
	parse_bad("a = \"\x01\"\n", 8, 1, "control character 0x01");
	parse_bad("= 1\n", 4, 1, "expected a key");

	/* Nesting is bounded: deep arrays fail instead of recursing without end. */
	char deep[200] = "a = ";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	parse_bad(deep, strlen(deep), 1, "nested more than 16 deep");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_registries_conf_shape),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_numbers_keys_tables),
	    cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
