/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references with docker's and podman's defaulting (distribution/reference normalize.go),
 * and the error text of bad ones: each must name the part that is wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image/image.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void ok(const char *in, const char *registry, const char *repo, const char *tag,
	       const char *digest, const char *canonical)
{
	struct kap_ref r;
	struct kapsel_error *err = NULL;
	if (kap_ref_parse(in, &r, &err) < 0)
		fail_msg("%s: %s", in, err->msg);
	assert_string_equal(r.registry, registry);
	assert_string_equal(r.repository, repo);
	if (tag)
		assert_string_equal(r.tag, tag);
	else
		assert_null(r.tag);
	if (digest)
		assert_string_equal(r.digest, digest);
	else
		assert_null(r.digest);
	char *s = kap_ref_string(&r);
	assert_string_equal(s, canonical);
	/* The canonical form parses back to itself. */
	struct kap_ref again;
	assert_int_equal(kap_ref_parse(s, &again, NULL), 0);
	char *s2 = kap_ref_string(&again);
	assert_string_equal(s2, s);
	free(s);
	free(s2);
	kap_ref_clear(&again);
	kap_ref_clear(&r);
}

static void bad(const char *in, const char *needle)
{
	struct kap_ref r;
	struct kapsel_error *err = NULL;
	if (kap_ref_parse(in, &r, &err) == 0)
		fail_msg("\"%s\" was accepted", in);
	assert_non_null(err);
	if (!strstr(err->msg, needle))
		fail_msg("\"%s\": error \"%s\" lacks \"%s\"", in, err->msg, needle);
	assert_int_equal(err->code, err->code > 0 ? err->code : -1);
	kapsel_error_free(err);
}

static void test_defaults(void **state)
{
	ok("busybox", "docker.io", "library/busybox", "latest", NULL,
	   "docker.io/library/busybox:latest");
	ok("busybox:1.36", "docker.io", "library/busybox", "1.36", NULL,
	   "docker.io/library/busybox:1.36");
	ok("user/app", "docker.io", "user/app", "latest", NULL, "docker.io/user/app:latest");
	ok("docker.io/busybox", "docker.io", "library/busybox", "latest", NULL,
	   "docker.io/library/busybox:latest");
	ok("index.docker.io/library/busybox:x", "docker.io", "library/busybox", "x", NULL,
	   "docker.io/library/busybox:x");
	ok("quay.io/podman/hello", "quay.io", "podman/hello", "latest", NULL,
	   "quay.io/podman/hello:latest");
	/* One component on another registry gets no library/ prefix. */
	ok("quay.io/hello", "quay.io", "hello", "latest", NULL, "quay.io/hello:latest");
}

static void test_registries(void **state)
{
	ok("localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest");
	ok("localhost:5000/x", "localhost:5000", "x", "latest", NULL, "localhost:5000/x:latest");
	ok("127.0.0.1:5000/a/b:t@sha256:" D64, "127.0.0.1:5000", "a/b", "t", "sha256:" D64,
	   "127.0.0.1:5000/a/b:t@sha256:" D64);
	ok("127.0.0.1:5000/a/b@sha256:" D64, "127.0.0.1:5000", "a/b", NULL, "sha256:" D64,
	   "127.0.0.1:5000/a/b@sha256:" D64);
	ok("[::1]:5000/app:1", "[::1]:5000", "app", "1", NULL, "[::1]:5000/app:1");
	ok("Registry.Example/app", "Registry.Example", "app", "latest", NULL,
	   "Registry.Example/app:latest");
	/* No slash: "localhost:5000" is the image localhost with tag 5000, as docker reads it. */
	ok("localhost:5000", "docker.io", "library/localhost", "5000", NULL,
	   "docker.io/library/localhost:5000");
	ok("a.b-c/d__e.f-g--h/i_j:T_a.g-1", "a.b-c", "d__e.f-g--h/i_j", "T_a.g-1", NULL,
	   "a.b-c/d__e.f-g--h/i_j:T_a.g-1");
}

static void test_bad(void **state)
{
	bad("", "empty");
	bad("Busybox", "repository \"Busybox\" must be lowercase");
	bad("docker.io/Library/busybox", "lowercase");
	bad("busybox:", "invalid tag \"\"");
	bad("busybox:-x", "invalid tag \"-x\"");
	bad("busybox:a/b", "invalid registry \"busybox:a\"");
	bad("busybox@sha256:abc", "digest");
	bad("busybox@md5:" D64, "unsupported digest algorithm \"md5\"");
	bad("busybox@sha256:" D64 "00", "digest");
	bad("busybox@sha256:"
	    "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
	    "lowercase hex");
	bad("a..b/c", "invalid registry \"a..b\"");
	bad("-x.io/c", "invalid registry");
	bad("localhost:port/x", "invalid registry \"localhost:port\"");
	bad("x.io/", "missing repository");
	bad("x.io/a//b", "invalid repository component \"\"");
	bad("x.io/a_/b", "invalid repository component \"a_\"");
	bad("x.io/a___b", "invalid repository component");
	bad("has space", "space");
	bad(":tag", "missing repository");
	bad("@sha256:" D64, "missing repository");
	char longname[400];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	bad(longname, "longer than 255");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_registries),
	    cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
