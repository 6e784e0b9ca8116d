/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure logic of pulling: WWW-Authenticate challenges (RFC 7235), base64, auth.json lookup
 * and editing (containers-auth.json(5)), registry URLs, token URLs, the Accept header,
 * registries.conf insecure entries and Content-Range. The network side is tested in
 * tests/integration/test_pull.py against real and fake registries.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "image/image.h"

static void challenge_ok(const char *hdr, struct kap_auth_challenge *c)
{
	struct kapsel_error *err = NULL;
	memset(c, 0, sizeof(*c));
	if (kap_auth_challenge_parse(hdr, c, &err) < 0)
		fail_msg("%s: %s", hdr, err->msg);
}

static void test_challenge_bearer(void **state)
{
	struct kap_auth_challenge c;
	challenge_ok("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
		     "scope=\"repository:samalba/my-app:pull,push\"",
		     &c);
	assert_string_equal(c.scheme, "Bearer");
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	/* The comma inside the quoted scope does not end the parameter. */
	assert_string_equal(c.scope, "repository:samalba/my-app:pull,push");
	kap_auth_challenge_clear(&c);

	/* Case-insensitive names, spaces around '=' and ',', a token (unquoted) value. */
	challenge_ok(
	    "bearer  Realm = \"http://127.0.0.1:1/t\" , service=reg , error=\"invalid_token\"", &c);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "http://127.0.0.1:1/t");
	assert_string_equal(c.service, "reg");
	assert_string_equal(c.error, "invalid_token");
	assert_null(c.scope);
	kap_auth_challenge_clear(&c);

	/* Backslash escapes in quoted strings (RFC 9110 §5.6.4). */
	challenge_ok("Bearer realm=\"a\\\"b\\\\c\"", &c);
	assert_string_equal(c.realm, "a\"b\\c");
	kap_auth_challenge_clear(&c);
}

static void test_challenge_several(void **state)
{
	struct kap_auth_challenge c;
	/* Two challenges in one header: Bearer is preferred whatever the order. */
	challenge_ok("Basic realm=\"basic, realm\", Bearer realm=\"https://t/x\",scope=\"a,b\"",
		     &c);
	assert_string_equal(c.scheme, "Bearer");
	assert_string_equal(c.realm, "https://t/x");
	assert_string_equal(c.scope, "a,b");
	kap_auth_challenge_clear(&c);

	challenge_ok("Basic realm=\"Registry Realm\"", &c);
	assert_string_equal(c.scheme, "Basic");
	assert_string_equal(c.realm, "Registry Realm");
	kap_auth_challenge_clear(&c);

	/* A token68 challenge then a parameterised one. */
	challenge_ok("Negotiate abc==, Basic realm=\"r\"", &c);
	assert_string_equal(c.scheme, "Negotiate");
	kap_auth_challenge_clear(&c);

	challenge_ok("Bearer", &c);
	assert_string_equal(c.scheme, "Bearer");
	assert_null(c.realm);
	kap_auth_challenge_clear(&c);
}

static void test_challenge_bad(void **state)
{
	static const char *const bad[] = {
	    "", "   ", ",,,", "Bearer realm=\"unterminated", "=realm", "Bearer realm=\"x\", =y",
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(bad); i++) {
		struct kap_auth_challenge c = {0};
		struct kapsel_error *err = NULL;
		if (kap_auth_challenge_parse(bad[i], &c, &err) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_non_null(err);
		assert_non_null(strstr(err->msg, "WWW-Authenticate"));
		kapsel_error_free(err);
		assert_null(c.scheme);
	}
}

static void test_base64(void **state)
{
	static const struct {
		const char *plain, *b64;
	} v[] = {
	    /* RFC 4648 §10 test vectors */
	    {"", ""},
	    {"f", "Zg=="},
	    {"fo", "Zm8="},
	    {"foo", "Zm9v"},
	    {"foob", "Zm9vYg=="},
	    {"fooba", "Zm9vYmE="},
	    {"foobar", "Zm9vYmFy"},
	    {"user:pass:word", "dXNlcjpwYXNzOndvcmQ="},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(v); i++) {
		cleanup_free char *enc = kap_base64_encode(v[i].plain, strlen(v[i].plain));
		assert_string_equal(enc, v[i].b64);
		cleanup_free char *dec = NULL;
		size_t len = 0;
		assert_int_equal(kap_base64_decode(v[i].b64, &dec, &len), 0);
		assert_int_equal(len, strlen(v[i].plain));
		assert_string_equal(dec, v[i].plain);
	}
	/* Padding is optional; anything outside the alphabet is refused. */
	cleanup_free char *d = NULL;
	assert_int_equal(kap_base64_decode("Zm9vYg", &d, NULL), 0);
	assert_string_equal(d, "foob");
	char *x = NULL;
	assert_int_equal(kap_base64_decode("Zm9v!", &x, NULL), -EINVAL);
	assert_int_equal(kap_base64_decode("Z", &x, NULL), -EINVAL);
	assert_int_equal(kap_base64_decode("Zm 9v", &x, NULL), -EINVAL);
	assert_null(x);
	/* Binary bytes round-trip. */
	unsigned char bin[256];
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)i;
	cleanup_free char *e = kap_base64_encode(bin, sizeof(bin));
	cleanup_free char *back = NULL;
	size_t blen;
	assert_int_equal(kap_base64_decode(e, &back, &blen), 0);
	assert_int_equal(blen, sizeof(bin));
	assert_memory_equal(back, bin, sizeof(bin));
}

static void test_normalize_key(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
	    {"quay.io", "quay.io"},
	    {"https://index.docker.io/v1/", "docker.io"},
	    {"index.docker.io", "docker.io"},
	    {"registry-1.docker.io", "docker.io"},
	    {"http://Localhost:5000/", "localhost:5000"},
	    {"Quay.IO/Ns/Repo", "quay.io/Ns/Repo"},
	    {"127.0.0.1:5000/", "127.0.0.1:5000"},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(v); i++) {
		cleanup_free char *n = kap_auth_normalize_key(v[i].in);
		assert_string_equal(n, v[i].out);
	}
}

static void lookup(const char *json, const char *reg, const char *repo, int want_r,
		   const char *user, const char *pass)
{
	struct kap_credentials c = {0};
	struct kapsel_error *err = NULL;
	int r = kap_auth_lookup(json, strlen(json), "auth.json", reg, repo, &c, &err);
	if (r != want_r)
		fail_msg("%s/%s: got %d (%s), want %d", reg, repo, r, err ? err->msg : "", want_r);
	if (r == 0) {
		assert_string_equal(c.user, user);
		assert_string_equal(c.password, pass);
	}
	kap_credentials_clear(&c);
	kapsel_error_free(err);
}

static void test_auth_lookup(void **state)
{
	/* alice:secret, bob:pa:ss (':' in the password), carol:x, dave:d */
	const char *doc = "{\"auths\":{"
			  "\"127.0.0.1:5000\":{\"auth\":\"YWxpY2U6c2VjcmV0\"},"
			  "\"127.0.0.1:5000/team\":{\"auth\":\"Ym9iOnBhOnNz\"},"
			  "\"https://index.docker.io/v1/\":{\"auth\":\"Y2Fyb2w6eA==\"},"
			  "\"quay.io\":{\"auth\":\"\"},"
			  "\"ghcr.io\":{}"
			  "},\"credHelpers\":{\"gcr.io\":\"gcloud\"}}";
	lookup(doc, "127.0.0.1:5000", "library/app", 0, "alice", "secret");
	/* The longest namespace match wins, on path boundaries only. */
	lookup(doc, "127.0.0.1:5000", "team/app", 0, "bob", "pa:ss");
	lookup(doc, "127.0.0.1:5000", "teamx/app", 0, "alice", "secret");
	lookup(doc, "docker.io", "library/busybox", 0, "carol", "x");
	lookup(doc, "127.0.0.1:5001", "a", -ENOENT, NULL, NULL);
	lookup(doc, "quay.io", "a", -ENOENT, NULL, NULL);
	lookup(doc, "ghcr.io", "a", -ENOENT, NULL, NULL);
	lookup("{}", "quay.io", "a", -ENOENT, NULL, NULL);
	lookup("{\"auths\":{\"quay.io\":{\"auth\":\"!!!\"}}}", "quay.io", "a", -EINVAL, NULL, NULL);
	/* base64 of "nocolon" */
	lookup("{\"auths\":{\"quay.io\":{\"auth\":\"bm9jb2xvbg==\"}}}", "quay.io", "a", -EINVAL,
	       NULL, NULL);
	lookup("{\"auths\":[]}", "quay.io", "a", -EINVAL, NULL, NULL);
	lookup("[1]", "quay.io", "a", -EINVAL, NULL, NULL);
	lookup("{\"auths\":", "quay.io", "a", -EINVAL, NULL, NULL);

	struct kap_credentials c = {0};
	struct kapsel_error *err = NULL;
	const char *bad = "{\"auths\":{\"quay.io\":{\"auth\":\"bm9jb2xvbg==\"}}}";
	assert_int_equal(
	    kap_auth_lookup(bad, strlen(bad), "/x/auth.json", "quay.io", "a", &c, &err), -EINVAL);
	/* The error names the file and the entry. */
	assert_non_null(strstr(err->msg, "/x/auth.json"));
	assert_non_null(strstr(err->msg, "quay.io"));
	kapsel_error_free(err);
}

static char tmpdir[64];

static int setup_tmp(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kapsel-test-registry-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown_tmp(void **state)
{
	kap_fs_rm_rf(AT_FDCWD, tmpdir);
	return 0;
}

static void test_auth_file_update(void **state)
{
	char file[128];
	snprintf(file, sizeof(file), "%s/sub/dir/auth.json", tmpdir);
	struct kapsel_error *err = NULL;
	struct kap_credentials in = {.user = "u1", .password = "p:1"};
	assert_int_equal(kap_auth_file_update(file, "https://127.0.0.1:5000/", &in, &err), 0);
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	struct kap_credentials in2 = {.user = "u2", .password = "p2"};
	assert_int_equal(kap_auth_file_update(file, "quay.io", &in2, &err), 0);
	/* Replacing an entry keeps the others. */
	struct kap_credentials in3 = {.user = "u3", .password = "p3"};
	assert_int_equal(kap_auth_file_update(file, "127.0.0.1:5000", &in3, &err), 0);

	struct kap_credentials out = {0};
	assert_int_equal(kap_auth_find(file, "127.0.0.1:5000", "x", &out, &err), 0);
	assert_string_equal(out.user, "u3");
	assert_string_equal(out.password, "p3");
	assert_string_equal(out.source, file);
	kap_credentials_clear(&out);
	assert_int_equal(kap_auth_find(file, "quay.io", "x", &out, &err), 0);
	assert_string_equal(out.user, "u2");
	kap_credentials_clear(&out);

	/* Logout removes one entry; a second logout says it is not logged in. */
	assert_int_equal(kap_auth_file_update(file, "quay.io", NULL, &err), 0);
	assert_int_equal(kap_auth_find(file, "quay.io", "x", &out, &err), -ENOENT);
	assert_int_equal(kap_auth_file_update(file, "quay.io", NULL, &err), -ENOENT);
	assert_non_null(strstr(err->msg, "not logged in to quay.io"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_auth_find(file, "127.0.0.1:5000", "x", &out, &err), 0);
	kap_credentials_clear(&out);

	/* An explicit auth file that does not exist is an error; the search path is not. */
	char missing[128];
	snprintf(missing, sizeof(missing), "%s/missing.json", tmpdir);
	assert_int_equal(kap_auth_find(missing, "quay.io", "x", &out, &err), -ENOENT);
	assert_non_null(err);
	kapsel_error_free(err);
	err = NULL;
}

static void test_auth_search(void **state)
{
	char home[128], xdg[128], docker[160], cont[160];
	snprintf(home, sizeof(home), "%s/home", tmpdir);
	snprintf(xdg, sizeof(xdg), "%s/run", tmpdir);
	snprintf(docker, sizeof(docker), "%s/.docker/config.json", home);
	snprintf(cont, sizeof(cont), "%s/containers/auth.json", xdg);
	setenv("HOME", home, 1);
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	unsetenv("REGISTRY_AUTH_FILE");
	struct kapsel_error *err = NULL;
	struct kap_credentials d = {.user = "docker", .password = "d"};
	struct kap_credentials x = {.user = "xdg", .password = "x"};
	assert_int_equal(kap_auth_file_update(docker, "https://index.docker.io/v1/", &d, &err), 0);
	assert_int_equal(kap_auth_file_update(docker, "quay.io", &d, &err), 0);
	assert_int_equal(kap_auth_file_update(cont, "quay.io", &x, &err), 0);

	cleanup_free char *def = kap_auth_default_file();
	assert_string_equal(def, cont);
	struct kap_credentials out = {0};
	/* containers' file first, Docker's as the fallback. */
	assert_int_equal(kap_auth_find(NULL, "quay.io", "a", &out, &err), 0);
	assert_string_equal(out.user, "xdg");
	kap_credentials_clear(&out);
	assert_int_equal(kap_auth_find(NULL, "docker.io", "library/a", &out, &err), 0);
	assert_string_equal(out.user, "docker");
	assert_string_equal(out.source, docker);
	kap_credentials_clear(&out);
	assert_int_equal(kap_auth_find(NULL, "ghcr.io", "a", &out, &err), -ENOENT);
	assert_null(err);

	/* $REGISTRY_AUTH_FILE replaces the XDG file. */
	setenv("REGISTRY_AUTH_FILE", docker, 1);
	cleanup_free char *def2 = kap_auth_default_file();
	assert_string_equal(def2, docker);
	assert_int_equal(kap_auth_find(NULL, "quay.io", "a", &out, &err), 0);
	assert_string_equal(out.user, "docker");
	kap_credentials_clear(&out);
	unsetenv("REGISTRY_AUTH_FILE");
}

static void test_urls(void **state)
{
	cleanup_free char *a =
	    kap_registry_url("https", "docker.io", "library/busybox", "manifests", "latest");
	assert_string_equal(a, "https://registry-1.docker.io/v2/library/busybox/manifests/latest");
	cleanup_free char *b =
	    kap_registry_url("http", "127.0.0.1:5000", "a/b", "blobs", "sha256:0123");
	assert_string_equal(b, "http://127.0.0.1:5000/v2/a/b/blobs/sha256:0123");
	cleanup_free char *c = kap_registry_url("https", "quay.io", NULL, NULL, NULL);
	assert_string_equal(c, "https://quay.io/v2/");
	assert_string_equal(kap_registry_host("quay.io"), "quay.io");
}

static void test_token_url(void **state)
{
	struct kap_auth_challenge c = {.scheme = "Bearer",
				       .realm = "https://auth.docker.io/token",
				       .service = "registry.docker.io"};
	cleanup_free char *a = kap_registry_token_url(&c, "repository:library/busybox:pull");
	assert_string_equal(a, "https://auth.docker.io/token?service=registry.docker.io"
			       "&scope=repository%3Alibrary%2Fbusybox%3Apull");
	/* The challenge's scope wins; a realm with a query gets '&'. */
	c.realm = "http://h/t?x=1";
	c.scope = "repository:a b:pull,push";
	c.service = NULL;
	cleanup_free char *b = kap_registry_token_url(&c, "ignored");
	assert_string_equal(b, "http://h/t?x=1&scope=repository%3Aa%20b%3Apull%2Cpush");
	c.scope = NULL;
	cleanup_free char *d = kap_registry_token_url(&c, NULL);
	assert_string_equal(d, "http://h/t?x=1");
	c.realm = NULL;
	assert_null(kap_registry_token_url(&c, "x"));
}

static void test_accept(void **state)
{
	/* Registries answer 404 to a manifest type the client did not list: all four. */
	static const char *const types[] = {KAP_MT_OCI_MANIFEST, KAP_MT_OCI_INDEX,
					    KAP_MT_DOCKER_MANIFEST, KAP_MT_DOCKER_LIST};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(types); i++)
		assert_non_null(strstr(KAP_REGISTRY_ACCEPT, types[i]));
	assert_null(strstr(KAP_REGISTRY_ACCEPT, "v1+prettyjws"));
	assert_null(strchr(KAP_REGISTRY_ACCEPT, '\n'));
}

static void test_is_local(void **state)
{
	assert_true(kap_registry_is_local("localhost"));
	assert_true(kap_registry_is_local("LOCALHOST:5000"));
	assert_true(kap_registry_is_local("127.0.0.1:5000"));
	assert_true(kap_registry_is_local("127.1.2.3"));
	assert_true(kap_registry_is_local("[::1]:5000"));
	assert_false(kap_registry_is_local("128.0.0.1:5000"));
	assert_false(kap_registry_is_local("localhost.example.com"));
	assert_false(kap_registry_is_local("docker.io"));
	assert_false(kap_registry_is_local("[::2]:5000"));
}

static void test_registries_conf(void **state)
{
	const char *v2 = "unqualified-search-registries = [\"docker.io\"]\n"
			 "# insecure = true\n"
			 "[[registry]]\n"
			 "location = \"reg.example:5000\"\n"
			 "insecure = true  # plain http\n"
			 "[[registry.mirror]]\n"
			 "location = \"mirror.example\"\n"
			 "insecure = false\n"
			 "[[registry]]\n"
			 "prefix = \"quay.io/secure\"\n"
			 "location = \"quay.io\"\n"
			 "insecure = false\n"
			 "[[registry]]\n"
			 "location = \"quay.io\"\n"
			 "insecure = true\n"
			 "[[registry]]\n"
			 "location = \"*.internal\"\n"
			 "insecure = true\n"
			 "[[registry]]\n"
			 "location = 'other.example'\n";
	assert_true(kap_registries_conf_insecure(v2, "reg.example:5000", "a"));
	assert_false(kap_registries_conf_insecure(v2, "reg.example:5001", "a"));
	assert_false(kap_registries_conf_insecure(v2, "mirror.example", "a"));
	/* The longest prefix decides. */
	assert_true(kap_registries_conf_insecure(v2, "quay.io", "other/app"));
	assert_false(kap_registries_conf_insecure(v2, "quay.io", "secure/app"));
	assert_true(kap_registries_conf_insecure(v2, "quay.io", "securex/app"));
	assert_true(kap_registries_conf_insecure(v2, "a.b.internal", "x"));
	assert_false(kap_registries_conf_insecure(v2, "internal", "x"));
	assert_false(kap_registries_conf_insecure(v2, "other.example", "x"));
	assert_false(kap_registries_conf_insecure(v2, "docker.io", "library/x"));

	const char *v1 = "[registries.search]\nregistries = ['docker.io']\n"
			 "[registries.insecure]\nregistries = ['a.example:5000',\n"
			 "  \"b.example\"]\n[registries.block]\nregistries = ['c.example']\n";
	assert_true(kap_registries_conf_insecure(v1, "a.example:5000", "x"));
	assert_true(kap_registries_conf_insecure(v1, "b.example", "x"));
	assert_false(kap_registries_conf_insecure(v1, "c.example", "x"));
	assert_false(kap_registries_conf_insecure(v1, "docker.io", "x"));
	assert_false(kap_registries_conf_insecure("", "docker.io", "x"));
	assert_false(kap_registries_conf_insecure("[[registry]]\ninsecure=true\n", "x", "y"));
}

static void test_content_range(void **state)
{
	assert_int_equal(kap_http_content_range_start("bytes 100-199/200"), 100);
	assert_int_equal(kap_http_content_range_start("bytes 0-0/*"), 0);
	assert_int_equal(kap_http_content_range_start("BYTES 5-9/10"), 5);
	assert_int_equal(kap_http_content_range_start("bytes */200"), -1);
	assert_int_equal(kap_http_content_range_start("bytes -5"), -1);
	assert_int_equal(kap_http_content_range_start("items 1-2/3"), -1);
	assert_int_equal(kap_http_content_range_start(NULL), -1);
	assert_int_equal(kap_http_content_range_start("bytes 99999999999999999999-1/2"), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_challenge_bearer),
	    cmocka_unit_test(test_challenge_several),
	    cmocka_unit_test(test_challenge_bad),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_normalize_key),
	    cmocka_unit_test(test_auth_lookup),
	    cmocka_unit_test_setup_teardown(test_auth_file_update, setup_tmp, teardown_tmp),
	    cmocka_unit_test_setup_teardown(test_auth_search, setup_tmp, teardown_tmp),
	    cmocka_unit_test(test_urls),
	    cmocka_unit_test(test_token_url),
	    cmocka_unit_test(test_accept),
	    cmocka_unit_test(test_is_local),
	    cmocka_unit_test(test_registries_conf),
	    cmocka_unit_test(test_content_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
