/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer writer (build/layer.c) on a directory made without privileges: entries in byte
 * order, hardlinks to the first name, long names through PAX, mtimes clamped, left-out paths,
 * and the same tree giving the same digests (read back through the store's own tar reader).
 */
#include <errno.h>
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

#include "build/build.h"
#include "core/fs.h"
#include "image/image.h"

static char base[64];
static struct kap_store *store;

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "%s/kap-layer-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(base))
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/store", base);
	return kap_store_open(path, &store, NULL) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	kap_store_close(store);
	kap_fs_rm_rf(AT_FDCWD, base);
	return 0;
}

static void put(int dfd, const char *name, const char *data)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

#define LONG_DIR  "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define LONG_FILE "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"

/* A tree: b/ (with z, a), a -> b/z symlink, c hardlinked to b/a, a long path, skip.me. */
static int make_tree(const char *name)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/%s", base, name);
	assert_int_equal(mkdir(p, 0755), 0);
	int dfd = open(p, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	assert_int_equal(mkdirat(dfd, "b", 0755), 0);
	put(dfd, "b/z", "zzz");
	put(dfd, "b/a", "aaa");
	assert_int_equal(symlinkat("b/z", dfd, "a"), 0);
	assert_int_equal(linkat(dfd, "b/a", dfd, "c", 0), 0);
	assert_int_equal(mkdirat(dfd, LONG_DIR, 0755), 0);
	put(dfd, LONG_DIR "/" LONG_FILE, "long");
	put(dfd, "skip.me", "no");
	return dfd;
}

static void test_layer_contents(void **state)
{
	(void)state;
	int dfd = make_tree("t1");
	const char *skip[] = {"skip.me", NULL};
	struct kap_built_layer l;
	struct kapsel_error *err = NULL;
	if (kap_build_layer(store, dfd, 1000, skip, &l, &err) < 0)
		fail_msg("%s", err->msg);
	close(dfd);

	int fd = kap_store_open_blob(store, l.digest, NULL);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, l.size);
	struct kap_tar *t;
	assert_int_equal(kap_tar_open(fd, KAP_COMP_GZIP, &t, NULL), 0);
	static const struct {
		const char *path;
		char type;
	} want[] = {
	    {"a", 'l'},
	    {"b", 'd'},
	    {"b/a", 'f'},
	    {"b/z", 'f'},
	    {"c", 'h'},
	    {LONG_DIR, 'd'},
	    {LONG_DIR "/" LONG_FILE, 'f'},
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const char *path;
		char type;
		int64_t size;
		assert_int_equal(kap_tar_next(t, &path, &type, &size, NULL), 1);
		if (strcmp(path, want[i].path) || type != want[i].type)
			fail_msg("entry %zu: %s (%c), want %s (%c)", i, path, type, want[i].path,
				 want[i].type);
		if (type == 'h') {
			char *target;
			bool hard;
			assert_int_equal(kap_tar_link(t, &target, &hard, NULL), 0);
			assert_true(hard);
			assert_string_equal(target, "b/a"); /* the first name in byte order */
			free(target);
		}
	}
	const char *path;
	char type;
	int64_t size;
	assert_int_equal(kap_tar_next(t, &path, &type, &size, NULL), 0); /* skip.me left out */
	kap_tar_close(t);
	close(fd);

	/* The same tree elsewhere (other inode numbers, later mtimes): the same digests when the
	 * mtimes are clamped, as SOURCE_DATE_EPOCH asks. */
	dfd = make_tree("t2");
	struct kap_built_layer l2;
	assert_int_equal(kap_build_layer(store, dfd, 1000, skip, &l2, NULL), 0);
	assert_string_equal(l.digest, l2.digest);
	assert_string_equal(l.diff_id, l2.diff_id);
	/* Without the left-out list the tar differs. */
	struct kap_built_layer l3;
	assert_int_equal(kap_build_layer(store, dfd, 1000, NULL, &l3, NULL), 0);
	assert_string_not_equal(l.diff_id, l3.diff_id);
	close(dfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layer_contents),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
