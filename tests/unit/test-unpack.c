/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer writer: every entry type with its metadata, whiteouts in overlayfs form, gzip (ISA-L
 * and the libarchive fallback) and zstd, and every hostile shape from issue 3 — each must fail
 * naming the entry (or be neutralised inside the layer), and nothing may appear or change
 * outside the layer directory: a sibling directory with a sentinel file is checked after each
 * case.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cmocka.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "image/image.h"
#include "tar-build.h"

struct scratch {
	char base[64];
	int layer;
};

static void scratch_new(struct scratch *s)
{
	snprintf(s->base, sizeof(s->base), "%s/kap-unpack-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(s->base));
	char p[128];
	snprintf(p, sizeof(p), "%s/layer", s->base);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/outside", s->base);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/outside/sentinel", s->base);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs("sentinel", f);
	fclose(f);
	chmod(p, 0644);
	snprintf(p, sizeof(p), "%s/layer", s->base);
	s->layer = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(s->layer >= 0);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

/* Nothing outside the layer appeared or changed; then remove everything. */
static void scratch_done(struct scratch *s)
{
	char p[128];
	struct stat st;
	assert_int_equal(count_entries(s->base), 2);
	snprintf(p, sizeof(p), "%s/outside", s->base);
	assert_int_equal(count_entries(p), 1);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	snprintf(p, sizeof(p), "%s/outside/sentinel", s->base);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_uid, getuid());
	char buf[32] = "";
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "sentinel");
	close(s->layer);
	kap_fs_rm_rf(AT_FDCWD, s->base);
}

static int memfd_of(const void *data, size_t len)
{
	int fd = memfd_create("layer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static int unpack(struct scratch *s, const void *data, size_t len, enum kap_compression c,
		  const struct kap_unpack_opts *o, char *diff_id, struct kapsel_error **err)
{
	cleanup_close int fd = memfd_of(data, len);
	return kap_unpack_layer(fd, c, s->layer, o, diff_id, err);
}

/* Unpack must fail, and its message must contain `needle` (the entry). */
static void expect_fail(const struct tarbuf *t, const struct kap_unpack_opts *o, const char *needle)
{
	struct scratch s;
	struct kapsel_error *err = NULL;
	scratch_new(&s);
	int r = unpack(&s, t->data, t->len, KAP_COMP_NONE, o, NULL, &err);
	if (r >= 0)
		fail_msg("unpack succeeded, expected an error naming \"%s\"", needle);
	assert_non_null(err);
	if (!strstr(err->msg, needle))
		fail_msg("error \"%s\" does not name \"%s\"", err->msg, needle);
	kapsel_error_free(err);
	scratch_done(&s);
}

static void sha256_of(const void *data, size_t len, char *out)
{
	struct kap_sha256 *h = kap_sha256_new();
	assert_non_null(h);
	kap_sha256_update(h, data, len);
	kap_sha256_final(h, out);
}

static bool root(void)
{
	return geteuid() == 0;
}

static void build_everything(struct tarbuf *t)
{
	tb_dir(t, "./");
	tb_add(t, (struct tb_entry){.name = "a/", .type = '5', .mode = 0750, .mtime = 1500000000},
	       NULL, 0);
	static const char *const xattr[] = {"SCHILY.xattr.user.kapsel", "yes",
					    "SCHILY.xattr.trusted.overlay.opaque", "y", NULL};
	tb_pax(t, xattr);
	tb_add(t,
	       (struct tb_entry){.name = "a/suid",
				 .type = '0',
				 .mode = 04755,
				 .uid = 1000,
				 .gid = 1001,
				 .mtime = 1400000000},
	       "#!/bin/sh\n", 10);
	tb_add(t, (struct tb_entry){.name = "a/sticky/", .type = '5', .mode = 01777}, NULL, 0);
	tb_symlink(t, "a/abs-link", "/etc/passwd");
	tb_symlink(t, "a/rel-link", "suid");
	tb_hardlink(t, "a/hard", "a/suid");
	tb_add(t,
	       (struct tb_entry){
		   .name = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3},
	       NULL, 0);
	tb_add(t, (struct tb_entry){.name = "dev/sda", .type = '4', .mode = 0660, .major = 8}, NULL,
	       0);
	tb_add(t, (struct tb_entry){.name = "fifo", .type = '6', .mode = 0600}, NULL, 0);
	/* Whiteouts, overlayfs form. */
	tb_file(t, "a/.wh.gone", "");
	tb_dir(t, "opaque/");
	tb_file(t, "opaque/.wh..wh..opq", "");
	tb_file(t, "opaque/kept", "kept");
	/* Implicit parents, an absolute path (stripped), and a duplicate (later wins). */
	tb_file(t, "deep/er/file", "deep");
	tb_file(t, "/abs/file", "abs");
	tb_file(t, "dup", "first");
	tb_file(t, "dup", "second");
	/* A long name through pax. */
	char longname[300];
	memset(longname, 'x', 200);
	strcpy(longname + 200, "/long-file");
	static char pathrec[320];
	snprintf(pathrec, sizeof(pathrec), "%s", longname);
	const char *const kv[] = {"path", pathrec, NULL};
	tb_pax(t, kv);
	tb_file(t, "placeholder", "long");
	tb_end(t);
}

static void check_everything(int layer, bool as_root)
{
	struct stat st;
	assert_int_equal(fstatat(layer, "a", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_mtime, 1500000000);
	assert_int_equal(fstatat(layer, "a/suid", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 10);
	assert_int_equal(st.st_mtime, 1400000000);
	assert_int_equal(st.st_nlink, 2);
	if (as_root) {
		assert_int_equal(st.st_mode & 07777, 04755);
		assert_int_equal(st.st_uid, 1000);
		assert_int_equal(st.st_gid, 1001);
	}
	ino_t ino = st.st_ino;
	assert_int_equal(fstatat(layer, "a/hard", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_ino, ino);
	assert_int_equal(fstatat(layer, "a/sticky", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_mode & 07777, 01777);
	char target[64] = "";
	assert_int_equal(readlinkat(layer, "a/abs-link", target, sizeof(target)), 11);
	assert_memory_equal(target, "/etc/passwd", 11);
	assert_int_equal(readlinkat(layer, "a/rel-link", target, sizeof(target)), 4);

	/* xattrs: user.* kept; trusted.overlay.* from the layer dropped (forged overlay data). */
	char val[16] = "";
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/a/suid", layer);
	ssize_t n = getxattr(proc, "user.kapsel", val, sizeof(val));
	if (n >= 0)
		assert_memory_equal(val, "yes", 3);
	else
		assert_int_equal(errno, EOPNOTSUPP);
	assert_true(getxattr(proc, "trusted.overlay.opaque", val, sizeof(val)) < 0);

	if (as_root) {
		assert_int_equal(fstatat(layer, "dev/null", &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(S_ISCHR(st.st_mode));
		assert_int_equal(st.st_rdev, makedev(1, 3));
		assert_int_equal(st.st_mode & 07777, 0666);
		assert_int_equal(fstatat(layer, "dev/sda", &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(S_ISBLK(st.st_mode));
		assert_int_equal(st.st_rdev, makedev(8, 0));
	}
	assert_int_equal(fstatat(layer, "fifo", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISFIFO(st.st_mode));

	assert_int_equal(fstatat(layer, "a/gone", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(0, 0));
	assert_int_equal(faccessat(layer, "a/.wh.gone", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(faccessat(layer, "opaque/.wh..wh..opq", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(faccessat(layer, "opaque/kept", F_OK, AT_SYMLINK_NOFOLLOW), 0);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/opaque", layer);
	n = getxattr(proc, as_root ? "trusted.overlay.opaque" : "user.overlay.opaque", val,
		     sizeof(val));
	assert_int_equal(n, 1);
	assert_int_equal(val[0], 'y');

	assert_int_equal(faccessat(layer, "deep/er/file", F_OK, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(faccessat(layer, "abs/file", F_OK, AT_SYMLINK_NOFOLLOW), 0);
	char buf[16] = "";
	int fd = openat(layer, "dup", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 6);
	close(fd);
	assert_memory_equal(buf, "second", 6);
	char longname[300];
	memset(longname, 'x', 200);
	strcpy(longname + 200, "/long-file");
	assert_int_equal(faccessat(layer, longname, F_OK, AT_SYMLINK_NOFOLLOW), 0);
}

static void test_every_entry_type(void **state)
{
	struct tarbuf t = {0};
	build_everything(&t);
	struct scratch s;
	struct kapsel_error *err = NULL;
	char diff_id[KAP_DIGEST_LEN + 1], want[KAP_DIGEST_LEN + 1];
	struct kap_unpack_opts o = {.rootless = !root()};
	scratch_new(&s);
	if (unpack(&s, t.data, t.len, KAP_COMP_NONE, &o, diff_id, &err) < 0)
		fail_msg("%s", err->msg);
	sha256_of(t.data, t.len, want);
	assert_string_equal(diff_id, want);
	check_everything(s.layer, root());
	scratch_done(&s);
	free(t.data);
}

static void gzip_buf(const struct tarbuf *t, struct tarbuf *out)
{
	z_stream z = {0};
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	out->cap = deflateBound(&z, t->len) + 64;
	out->data = malloc(out->cap);
	z.next_in = (unsigned char *)t->data;
	z.avail_in = (unsigned)t->len;
	z.next_out = (unsigned char *)out->data;
	z.avail_out = (unsigned)out->cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	out->len = z.total_out;
	deflateEnd(&z);
}

static void zstd_buf(const struct tarbuf *t, struct tarbuf *out)
{
	out->cap = ZSTD_compressBound(t->len);
	out->data = malloc(out->cap);
	out->len = ZSTD_compress(out->data, out->cap, t->data, t->len, 3);
	assert_false(ZSTD_isError(out->len));
}

static void roundtrip(enum kap_compression c, bool fallback)
{
	struct tarbuf t = {0}, z = {0};
	build_everything(&t);
	if (c == KAP_COMP_GZIP)
		gzip_buf(&t, &z);
	else
		zstd_buf(&t, &z);
	struct scratch s;
	struct kapsel_error *err = NULL;
	char diff_id[KAP_DIGEST_LEN + 1], want[KAP_DIGEST_LEN + 1];
	struct kap_unpack_opts o = {.rootless = !root()};
	kap_unpack_force_gzip_fallback(fallback);
	scratch_new(&s);
	int r = unpack(&s, z.data, z.len, c, &o, diff_id, &err);
	kap_unpack_force_gzip_fallback(false);
	if (r < 0)
		fail_msg("%s", err->msg);
	sha256_of(t.data, t.len, want);
	assert_string_equal(diff_id, want);
	check_everything(s.layer, root());
	scratch_done(&s);

	/* Truncated: every cut must fail, never succeed with half a layer. */
	size_t cuts[] = {0, 1, 10, z.len / 2, z.len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		scratch_new(&s);
		kap_unpack_force_gzip_fallback(fallback);
		r = unpack(&s, z.data, cuts[i], c, &o, NULL, &err);
		kap_unpack_force_gzip_fallback(false);
		if (r >= 0)
			fail_msg("truncated at %zu of %zu: accepted", cuts[i], z.len);
		assert_non_null(strstr(err->msg, c == KAP_COMP_GZIP ? "gzip" : "zstd"));
		kapsel_error_free(err);
		err = NULL;
		scratch_done(&s);
	}
	/* Corrupt: flip bytes in the middle of the compressed data. */
	for (size_t i = z.len / 3; i < z.len / 3 + 16; i++)
		z.data[i] ^= 0x5a;
	scratch_new(&s);
	kap_unpack_force_gzip_fallback(fallback);
	r = unpack(&s, z.data, z.len, c, &o, NULL, &err);
	kap_unpack_force_gzip_fallback(false);
	assert_true(r < 0);
	kapsel_error_free(err);
	scratch_done(&s);
	free(t.data);
	free(z.data);
}

static void test_gzip_isal(void **state)
{
	roundtrip(KAP_COMP_GZIP, false);
}

static void test_gzip_fallback(void **state)
{
	roundtrip(KAP_COMP_GZIP, true);
}

static void test_zstd(void **state)
{
	roundtrip(KAP_COMP_ZSTD, false);
}

static void test_gzip_multi_member(void **state)
{
	struct tarbuf t = {0}, a = {0}, b = {0}, first = {0}, second = {0};
	build_everything(&t);
	tb_raw(&a, t.data, t.len / 2);
	tb_raw(&b, t.data + t.len / 2, t.len - t.len / 2);
	gzip_buf(&a, &first);
	gzip_buf(&b, &second);
	tb_raw(&first, second.data, second.len);
	struct scratch s;
	struct kapsel_error *err = NULL;
	struct kap_unpack_opts o = {.rootless = !root()};
	scratch_new(&s);
	if (unpack(&s, first.data, first.len, KAP_COMP_GZIP, &o, NULL, &err) < 0)
		fail_msg("%s", err->msg);
	scratch_done(&s);
	/* Garbage after the last member is corruption, not padding. */
	tb_raw(&first, "garbage", 7);
	scratch_new(&s);
	assert_true(unpack(&s, first.data, first.len, KAP_COMP_GZIP, &o, NULL, &err) < 0);
	assert_non_null(strstr(err->msg, "gzip"));
	kapsel_error_free(err);
	scratch_done(&s);
	free(t.data), free(a.data), free(b.data), free(first.data), free(second.data);
}

static void test_dotdot(void **state)
{
	struct tarbuf t = {0};
	tb_file(&t, "../evil", "x");
	tb_end(&t);
	expect_fail(&t, NULL, "../evil");
	free(t.data);
	t = (struct tarbuf){0};
	tb_file(&t, "a/b/../../../outside/sentinel", "x");
	tb_end(&t);
	expect_fail(&t, NULL, "a/b/../../../outside/sentinel");
	free(t.data);
	t = (struct tarbuf){0};
	tb_dir(&t, "/../../");
	tb_end(&t);
	expect_fail(&t, NULL, "/../../");
	free(t.data);
}

static void test_symlink_then_write_through(void **state)
{
	struct tarbuf t = {0};
	tb_symlink(&t, "s", "../outside");
	tb_file(&t, "s/evil", "x");
	tb_end(&t);
	expect_fail(&t, NULL, "s/evil");
	free(t.data);
	/* An absolute target is the layer's own root once confined, and still refused. */
	t = (struct tarbuf){0};
	tb_symlink(&t, "s", "/");
	tb_file(&t, "s/etc-evil", "x");
	tb_end(&t);
	expect_fail(&t, NULL, "s/etc-evil");
	free(t.data);
	/* Through a symlinked directory further up. */
	t = (struct tarbuf){0};
	tb_dir(&t, "d/");
	tb_symlink(&t, "d/up", "../..");
	tb_dir(&t, "d/up/outside/x/");
	tb_end(&t);
	expect_fail(&t, NULL, "d/up/outside/x/");
	free(t.data);
}

static void test_symlink_replaced_not_followed(void **state)
{
	/* A later file of the same name replaces the symlink; it never writes through it. */
	struct tarbuf t = {0};
	struct scratch s;
	struct kapsel_error *err = NULL;
	char target[128];
	tb_symlink(&t, "l", "../outside/sentinel");
	tb_file(&t, "l", "pwned");
	tb_symlink(&t, "d", "../outside");
	tb_add(&t, (struct tb_entry){.name = "d/", .type = '5', .mode = 0777}, NULL, 0);
	/* And a directory replaced by a symlink: its mode fix-up must not follow it. */
	tb_add(&t, (struct tb_entry){.name = "e/", .type = '5', .mode = 0777}, NULL, 0);
	snprintf(target, sizeof(target), "%s", "../outside");
	tb_symlink(&t, "e", target);
	tb_end(&t);
	scratch_new(&s);
	struct kap_unpack_opts o = {.rootless = !root()};
	if (unpack(&s, t.data, t.len, KAP_COMP_NONE, &o, NULL, &err) < 0)
		fail_msg("%s", err->msg);
	struct stat st;
	assert_int_equal(fstatat(s.layer, "l", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(fstatat(s.layer, "d", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(fstatat(s.layer, "e", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISLNK(st.st_mode));
	scratch_done(&s);
	free(t.data);
}

static void test_hardlinks(void **state)
{
	struct tarbuf t = {0};
	tb_hardlink(&t, "h", "../outside/sentinel");
	tb_end(&t);
	expect_fail(&t, NULL, "\"h\"");
	free(t.data);
	t = (struct tarbuf){0};
	tb_hardlink(&t, "h", "missing");
	tb_end(&t);
	expect_fail(&t, NULL, "\"h\"");
	free(t.data);
	t = (struct tarbuf){0};
	tb_symlink(&t, "s", "../outside");
	tb_hardlink(&t, "h", "s/sentinel");
	tb_end(&t);
	expect_fail(&t, NULL, "\"h\"");
	free(t.data);
	t = (struct tarbuf){0};
	tb_hardlink(&t, "h", "/");
	tb_end(&t);
	expect_fail(&t, NULL, "\"h\"");
	free(t.data);
	t = (struct tarbuf){0};
	tb_dir(&t, "dir/");
	tb_hardlink(&t, "h", "dir");
	tb_end(&t);
	expect_fail(&t, NULL, "\"h\"");
	free(t.data);
}

static void test_devices_rootless(void **state)
{
	struct tarbuf t = {0};
	struct kap_unpack_opts o = {.rootless = true};
	tb_add(&t, (struct tb_entry){.name = "dev/mem", .type = '3', .major = 1, .minor = 1}, NULL,
	       0);
	tb_end(&t);
	expect_fail(&t, &o, "dev/mem");
	free(t.data);
	t = (struct tarbuf){0};
	tb_add(&t, (struct tb_entry){.name = "sda", .type = '4', .major = 8}, NULL, 0);
	tb_end(&t);
	expect_fail(&t, &o, "sda");
	free(t.data);
}

static void test_absurd_sizes(void **state)
{
	struct tarbuf t = {0};
	struct kap_unpack_opts o = {.max_entry_size = 1 << 20};
	/* Claims 2 MiB, carries 2 MiB of zeros: over the limit before anything is written. */
	static char big[2 << 20];
	tb_add(&t, (struct tb_entry){.name = "big", .type = '0'}, big, sizeof(big));
	tb_end(&t);
	expect_fail(&t, &o, "big");
	free(t.data);
	/* A petabyte through pax (the default limit), with no data behind it. */
	t = (struct tarbuf){0};
	const char *const kv[] = {"size", "1125899906842624", NULL};
	tb_pax(&t, kv);
	tb_add(&t, (struct tb_entry){.name = "huge", .type = '0', .size = 1}, "x", 1);
	tb_end(&t);
	expect_fail(&t, NULL, "huge");
	free(t.data);
}

static void test_bad_whiteouts_and_junk(void **state)
{
	struct tarbuf t = {0};
	tb_file(&t, "d/.wh...", "");
	tb_end(&t);
	expect_fail(&t, NULL, "d/.wh...");
	free(t.data);
	/* A stream that is not tar at all. */
	t = (struct tarbuf){0};
	tb_raw(&t, "this is not a tar archive, just text that is long enough to fill a block", 72);
	static const char pad[1024];
	tb_raw(&t, pad, sizeof(pad));
	expect_fail(&t, NULL, "tar");
	free(t.data);
	/* A truncated tar: header promises more data than the stream has. */
	t = (struct tarbuf){0};
	tb_add(&t, (struct tb_entry){.name = "cut", .type = '0', .size = 4096}, "abc", 3);
	expect_fail(&t, NULL, "cut");
	free(t.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_entry_type),
	    cmocka_unit_test(test_gzip_isal),
	    cmocka_unit_test(test_gzip_fallback),
	    cmocka_unit_test(test_zstd),
	    cmocka_unit_test(test_gzip_multi_member),
	    cmocka_unit_test(test_dotdot),
	    cmocka_unit_test(test_symlink_then_write_through),
	    cmocka_unit_test(test_symlink_replaced_not_followed),
	    cmocka_unit_test(test_hardlinks),
	    cmocka_unit_test(test_devices_rootless),
	    cmocka_unit_test(test_absurd_sizes),
	    cmocka_unit_test(test_bad_whiteouts_and_junk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
