/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /etc/subuid and /etc/subgid as shadow's tools read them (subuid(5), lib/subordinateio.c):
 * owner by name or numeric uid, lines shadow would reject skipped, ranges in file order, and
 * the key that names a mapping's shifted layers in the store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "image/subid.h"

static char uidf[64], gidf[64];

static void files(const char *u, const char *g)
{
	strcpy(uidf, "/tmp/kapsel-subuid-XXXXXX");
	strcpy(gidf, "/tmp/kapsel-subgid-XXXXXX");
	int a = mkstemp(uidf), b = mkstemp(gidf);
	assert_true(a >= 0 && b >= 0);
	assert_int_equal(write(a, u, strlen(u)), (ssize_t)strlen(u));
	assert_int_equal(write(b, g, strlen(g)), (ssize_t)strlen(g));
	close(a);
	close(b);
}

static void done(void)
{
	unlink(uidf);
	unlink(gidf);
}

static int lookup(struct kap_idmap *m, const char *u, const char *g, struct kapsel_error **err)
{
	files(u, g);
	int r = kap_subid_lookup_files(m, uidf, gidf, err);
	done();
	return r;
}

static void test_ranges_by_uid_in_file_order(void **state)
{
	(void)state;
	char text[256];
	snprintf(text, sizeof(text),
		 "other:1000:10\n%u:300000:65536\n# a comment\n%u:abc:10\n%u:5\n%u:-1:10\n"
		 "%u:7:0\n%u:4294967295:2\n%u:100000:1000\n",
		 (unsigned)geteuid(), (unsigned)geteuid(), (unsigned)geteuid(), (unsigned)geteuid(),
		 (unsigned)geteuid(), (unsigned)geteuid(), (unsigned)geteuid());
	struct kap_idmap m;
	assert_int_equal(lookup(&m, text, text, NULL), 0);
	assert_int_equal(m.n_uids, 2);
	assert_int_equal(m.uids[0].start, 300000);
	assert_int_equal(m.uids[0].count, 65536);
	assert_int_equal(m.uids[1].start, 100000);
	assert_int_equal(m.uids[1].count, 1000);
	assert_int_equal(m.uid_count, 1 + 65536 + 1000);
	assert_int_equal(m.gid_count, 1 + 65536 + 1000);
	char d[256];
	kap_subid_describe(&m, false, d, sizeof(d));
	assert_non_null(strstr(d, "uids 0-66536"));
	assert_non_null(strstr(d, " 300000:65536 100000:1000)"));
	assert_int_equal(strlen(m.key), 16);

	/* Another range is another mapping. */
	struct kap_idmap m2;
	assert_int_equal(lookup(&m2, text, "other:1:2\n", NULL), -ENOENT);
	snprintf(text, sizeof(text), "%u:300001:65536\n", (unsigned)geteuid());
	assert_int_equal(lookup(&m2, text, text, NULL), 0);
	assert_string_not_equal(m.key, m2.key);
}

static void test_no_ranges_and_half_ranges(void **state)
{
	(void)state;
	struct kap_idmap m;
	assert_int_equal(lookup(&m, "other:1000:10\n", "", NULL), 0);
	assert_int_equal(m.n_uids, 0);
	assert_int_equal(kap_subid_lookup_files(&m, "/nonexistent/a", "/nonexistent/b", NULL), 0);
	assert_int_equal(m.n_uids, 0);

	char text[64];
	snprintf(text, sizeof(text), "%u:300000:65536\n", (unsigned)geteuid());
	struct kapsel_error *err = NULL;
	assert_int_equal(lookup(&m, text, "", &err), -ENOENT);
	assert_non_null(strstr(err->msg, "but none in /tmp/kapsel-subgid-"));
	assert_int_equal(m.n_uids, 0);
	kapsel_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ranges_by_uid_in_file_order),
	    cmocka_unit_test(test_no_ranges_and_half_ranges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
