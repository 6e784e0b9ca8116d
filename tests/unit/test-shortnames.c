/* SPDX-License-Identifier: Apache-2.0 */
/*
 * registries.conf short-name semantics (containers-registries.conf(5),
 * containers-registries.conf.d(5)): merging of drop-ins, validation of aliases and search
 * registries, and the candidate lists for the store and for pulling.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image/shortnames.h"

static void add(struct kap_registries_conf *c, const char *file, const char *text)
{
	struct kapsel_error *err = NULL;
	if (kap_registries_conf_parse(c, text, strlen(text), file, &err) < 0)
		fail_msg("%s: %s", file, err->msg);
}

static void bad(const char *text, const char *needle)
{
	struct kap_registries_conf c = {0};
	struct kapsel_error *err = NULL;
	add(&c, "base.conf", "unqualified-search-registries = ['keep.io']\n");
	assert_true(kap_registries_conf_parse(&c, text, strlen(text), "r.conf", &err) < 0);
	if (!strstr(err->msg, needle) || strchr(err->msg, '\n'))
		fail_msg("%s: got \"%s\", want \"%s\"", text, err->msg, needle);
	/* A bad file changes nothing. */
	assert_int_equal(c.n_search, 1);
	assert_string_equal(c.search[0], "keep.io");
	kapsel_error_free(err);
	kap_registries_conf_clear(&c);
}

/* The candidates, joined with spaces. */
static void expect(char **v, const char *want)
{
	char got[1024] = "";
	for (char **p = v; p && *p; p++) {
		if (p != v)
			strcat(got, " ");
		strcat(got, *p);
	}
	assert_string_equal(got, want);
	kap_strv_free(v);
}

static void test_merge(void **state)
{
	struct kap_registries_conf c = {0};
	add(&c, "main.conf",
	    "unqualified-search-registries = ['a.io', 'b.io:5000']\n"
	    "[aliases]\n\"demo\" = \"a.io/team/demo\"\n\"other\" = \"b.io/other\"\n");
	add(&c, "d/10.conf", "[aliases]\n\"demo\" = \"c.io/demo\"\n");
	add(&c, "d/20.conf", "short-name-mode = \"disabled\"\n");
	assert_int_equal(c.n_search, 2);
	assert_string_equal(c.search_where, "main.conf:1");
	assert_int_equal(c.mode, KAP_SHORT_NAME_DISABLED);
	assert_int_equal(c.n_aliases, 2);
	assert_string_equal(c.aliases[0].value, "c.io/demo");
	assert_string_equal(c.aliases[0].where, "d/10.conf:2");
	/* A later file that sets the search registries replaces them. */
	add(&c, "d/30.conf", "unqualified-search-registries = ['z.io']\n");
	assert_int_equal(c.n_search, 1);
	assert_string_equal(c.search[0], "z.io");
	kap_registries_conf_clear(&c);

	/* Version 1's [registries.search]. */
	add(&c, "v1.conf", "[registries.search]\nregistries = ['v1.io']\n");
	assert_int_equal(c.n_search, 1);
	assert_string_equal(c.search[0], "v1.io");
	kap_registries_conf_clear(&c);
}

static void test_validation(void **state)
{
	bad("unqualified-search-registries = 'a.io'\n", "r.conf:1: unqualified-search-registries: "
							"expected an array of strings");
	bad("unqualified-search-registries = [1]\n",
	    "expected an array of strings, found an integer");
	bad("unqualified-search-registries = ['noregistry']\n",
	    "r.conf:1: unqualified-search-registries: \"noregistry\" is not a registry");
	bad("unqualified-search-registries = ['a.io/ns']\n", "\"a.io/ns\" is not a registry");
	bad("short-name-mode = 'sometimes'\n", "r.conf:1: short-name-mode: expected");
	bad("aliases = 1\n", "r.conf:1: aliases: expected a table");
	bad("[aliases]\n'x.io/demo' = 'a.io/demo'\n",
	    "r.conf:2: alias \"x.io/demo\": the key must be");
	bad("[aliases]\n'demo:1' = 'a.io/demo'\n", "the key must be a short name");
	bad("[aliases]\n'demo' = 'demo2'\n",
	    "r.conf:2: alias \"demo\" = \"demo2\": the value must");
	bad("[aliases]\n'demo' = 'a.io/demo:1'\n", "without tag or digest");
	bad("[aliases]\n'demo' = 1\n", "expected a string, not an integer");
	bad("unqualified-search-registries = []\n[registries.search]\nregistries = []\n",
	    "cannot be mixed");
	bad("[aliases\n", "r.conf:1: expected ']'");
}

static void test_candidates(void **state)
{
	struct kap_registries_conf c = {0};
	char **v = NULL;
	const char *alias = NULL;
	add(&c, "r.conf",
	    "unqualified-search-registries = ['127.0.0.1:5000', 'docker.io']\n"
	    "[aliases]\n'fedora' = 'registry.fedoraproject.org/fedora'\n");
	assert_int_equal(kap_shortname_local(&c, "demo:1", &v, NULL), 0);
	expect(v, "localhost/demo:1 127.0.0.1:5000/demo:1 docker.io/library/demo:1");
	assert_int_equal(kap_shortname_local(&c, "fedora:39", &v, NULL), 0);
	expect(v, "registry.fedoraproject.org/fedora:39 localhost/fedora:39 "
		  "127.0.0.1:5000/fedora:39 docker.io/library/fedora:39");

	assert_int_equal(kap_shortname_pull(&c, "demo", &v, &alias, NULL), 0);
	assert_null(alias);
	expect(v, "127.0.0.1:5000/demo:latest docker.io/library/demo:latest");
	/* An alias is the only candidate. */
	assert_int_equal(
	    kap_shortname_pull(
		&c,
		"fedora@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		&v, &alias, NULL),
	    0);
	assert_string_equal(alias, "r.conf:3");
	expect(v, "registry.fedoraproject.org/"
		  "fedora@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	/* A qualified name is itself. */
	assert_int_equal(kap_shortname_pull(&c, "quay.io/x/y:2", &v, &alias, NULL), 0);
	expect(v, "quay.io/x/y:2");

	/* enforcing with two search registries: kapsel cannot prompt, so it refuses. */
	add(&c, "e.conf", "short-name-mode = 'enforcing'\n");
	struct kapsel_error *err = NULL;
	assert_true(kap_shortname_pull(&c, "demo", &v, NULL, &err) < 0);
	assert_non_null(strstr(err->msg, "short name \"demo\": short-name-mode is \"enforcing\" "
					 "(e.conf:1)"));
	kapsel_error_free(err);
	kap_registries_conf_clear(&c);

	/* No search registries: docker's normalisation. */
	assert_int_equal(kap_shortname_pull(&c, "busybox", &v, NULL, NULL), 0);
	expect(v, "docker.io/library/busybox:latest");
	assert_true(kap_ref_is_short("a/b"));
	assert_false(kap_ref_is_short("localhost/b"));
	assert_false(kap_ref_is_short("a:5/b"));
	assert_false(kap_ref_is_short("Upper/b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_merge),
	    cmocka_unit_test(test_validation),
	    cmocka_unit_test(test_candidates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
