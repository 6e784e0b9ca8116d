/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The store: blob writer commit/abort/mismatch leave nothing behind, layers are verified
 * against their diff_id before they appear, tag/resolve/lookup, users pin images, prune frees
 * exactly what nothing references, and stale temp files of dead writers are cleaned.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "image/image.h"
#include "tar-build.h"

static char base[64];

static int setup(void **state)
{
	snprintf(base, sizeof(base), "%s/kap-store-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(base))
		return -1;
	struct kap_store *s = NULL;
	char path[128];
	snprintf(path, sizeof(path), "%s/store", base);
	if (kap_store_open(path, &s, NULL) < 0)
		return -1;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	kap_store_close(*state);
	kap_fs_rm_rf(AT_FDCWD, base);
	return 0;
}

static size_t count(const char *sub)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/store/%s", base, sub);
	DIR *d = opendir(p);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void digest_of(const void *p, size_t n, char *out)
{
	struct kap_sha256 *h = kap_sha256_new();
	kap_sha256_update(h, p, n);
	kap_sha256_final(h, out);
}

static void test_sha256_vectors(void **state)
{
	char d[KAP_DIGEST_LEN + 1];
	digest_of("", 0, d);
	assert_string_equal(
	    d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	digest_of("abc", 3, d);
	assert_string_equal(
	    d, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(kap_digest_validate(d, "x", NULL), 0);
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_digest_validate("sha512:00", "layers[3]", &err), -ENOTSUP);
	assert_non_null(strstr(err->msg, "layers[3]"));
	kapsel_error_free(err);
}

static void test_blob_writer(void **state)
{
	struct kap_store *s = *state;
	struct kapsel_error *err = NULL;
	char d[KAP_DIGEST_LEN + 1], other[KAP_DIGEST_LEN + 1];
	digest_of("hello", 5, d);
	digest_of("world", 5, other);

	/* Commit with the right digest: the blob appears, tmp is empty. */
	struct kap_blob_writer *w;
	assert_int_equal(kap_blob_writer_new(s, d, 5, &w, NULL), 0);
	assert_int_equal(count("tmp"), 1);
	assert_int_equal(kap_blob_writer_write(w, "hel", 3, NULL), 0);
	assert_int_equal(kap_blob_writer_write(w, "lo", 2, NULL), 0);
	assert_int_equal(kap_blob_writer_commit(w, NULL), 0);
	assert_true(kap_store_has_blob(s, d));
	assert_int_equal(count("tmp"), 0);
	char *buf = NULL;
	size_t len;
	assert_int_equal(kap_store_read_blob(s, d, &buf, &len, NULL), 0);
	assert_int_equal(len, 5);
	free(buf);

	/* Wrong content for the digest: nothing stored, the error names both digests. */
	assert_int_equal(kap_blob_writer_new(s, other, -1, &w, NULL), 0);
	assert_int_equal(kap_blob_writer_write(w, "xorld", 5, NULL), 0);
	assert_int_equal(kap_blob_writer_commit(w, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, other));
	kapsel_error_free(err);
	err = NULL;
	assert_false(kap_store_has_blob(s, other));
	assert_int_equal(count("blobs/sha256"), 1);
	assert_int_equal(count("tmp"), 0);

	/* Size mismatch, too much data, abort. */
	assert_int_equal(kap_blob_writer_new(s, other, 6, &w, NULL), 0);
	assert_int_equal(kap_blob_writer_write(w, "world", 5, NULL), 0);
	assert_int_equal(kap_blob_writer_commit(w, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "size"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_blob_writer_new(s, other, 2, &w, NULL), 0);
	assert_int_equal(kap_blob_writer_write(w, "world", 5, &err), -EFBIG);
	kapsel_error_free(err);
	err = NULL;
	kap_blob_writer_abort(w);
	assert_int_equal(kap_blob_writer_new(s, NULL, -1, &w, NULL), 0);
	assert_int_equal(kap_blob_writer_write(w, "abc", 3, NULL), 0);
	kap_blob_writer_abort(w);
	assert_int_equal(count("blobs/sha256"), 1);
	assert_int_equal(count("tmp"), 0);

	/* A corrupted blob on disk is noticed when read. */
	char p[200];
	snprintf(p, sizeof(p), "%s/store/blobs/sha256/%s", base, d + 7);
	FILE *f = fopen(p, "w");
	fputs("HELLO", f);
	fclose(f);
	assert_int_equal(kap_store_read_blob(s, d, &buf, &len, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "corrupt"));
	kapsel_error_free(err);
	unlink(p);
}

/* A one-layer image: returns the manifest digest; layer/diff_id out. */
static void make_image(struct kap_store *s, const char *content, bool bad_diff_id, char *manifest,
		       char *layer_digest, char *diff_id)
{
	struct tarbuf t = {0};
	tb_dir(&t, "etc/");
	tb_file(&t, "etc/content", content);
	tb_end(&t);
	digest_of(t.data, t.len, diff_id);
	assert_int_equal(kap_store_put_blob(s, t.data, t.len, layer_digest, NULL), 0);
	char cfg[512], man[1024], cfg_digest[KAP_DIGEST_LEN + 1];
	snprintf(
	    cfg, sizeof(cfg),
	    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2024-01-01T00:00:00Z\","
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
	    bad_diff_id ? "sha256:1111111111111111111111111111111111111111111111111111111111111111"
			: diff_id);
	assert_int_equal(kap_store_put_blob(s, cfg, strlen(cfg), cfg_digest, NULL), 0);
	snprintf(man, sizeof(man),
		 "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
		 "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":"
		 "\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":%zu}]}",
		 KAP_MT_OCI_MANIFEST, KAP_MT_OCI_CONFIG, cfg_digest, strlen(cfg), layer_digest,
		 t.len);
	assert_int_equal(kap_store_put_blob(s, man, strlen(man), manifest, NULL), 0);
	free(t.data);
}

static void test_layers(void **state)
{
	struct kap_store *s = *state;
	struct kapsel_error *err = NULL;
	char man[KAP_DIGEST_LEN + 1], layer[KAP_DIGEST_LEN + 1], diff[KAP_DIGEST_LEN + 1];
	make_image(s, "one", false, man, layer, diff);

	/* A diff_id that does not match: error, and no layer dir, no temp dir left. */
	const char *wrong =
	    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
	assert_int_equal(kap_store_unpack_layer(s, layer, KAP_COMP_NONE, wrong, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "diff_id mismatch"));
	assert_non_null(strstr(err->msg, layer));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(count("layers"), 0);
	assert_int_equal(count("tmp"), 0);
	assert_null(kap_store_layer_path(s, wrong));

	if (kap_store_unpack_layer(s, layer, KAP_COMP_NONE, diff, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(kap_store_unpack_layer(s, layer, KAP_COMP_NONE, diff, NULL), 0);
	char *path = kap_store_layer_path(s, diff);
	assert_non_null(path);
	char p[300];
	snprintf(p, sizeof(p), "%s/etc/content", path);
	assert_int_equal(access(p, F_OK), 0);
	free(path);
	assert_int_equal(count("tmp"), 0);

	struct kap_manifest m;
	struct kap_image_config c;
	assert_int_equal(kap_store_load_image(s, man, &m, &c, NULL), 0);
	assert_string_equal(m.layers[0].digest, layer);
	assert_string_equal(c.diff_ids[0], diff);
	kap_manifest_clear(&m);
	kap_image_config_clear(&c);
}

static void test_tags_lookup_prune(void **state)
{
	struct kap_store *s = *state;
	struct kapsel_error *err = NULL;
	char man[KAP_DIGEST_LEN + 1], layer[KAP_DIGEST_LEN + 1], diff[KAP_DIGEST_LEN + 1];
	char man2[KAP_DIGEST_LEN + 1], layer2[KAP_DIGEST_LEN + 1], diff2[KAP_DIGEST_LEN + 1];
	char got[KAP_DIGEST_LEN + 1];
	make_image(s, "one", false, man, layer, diff);
	make_image(s, "two", false, man2, layer2, diff2);
	assert_int_equal(kap_store_unpack_layer(s, layer, KAP_COMP_NONE, diff, NULL), 0);
	assert_int_equal(kap_store_unpack_layer(s, layer2, KAP_COMP_NONE, diff2, NULL), 0);
	assert_int_equal(kap_store_tag(s, "docker.io/library/busybox:latest", man, NULL), 0);
	assert_int_equal(kap_store_tag(s, "localhost/two:1", man2, NULL), 0);
	assert_int_equal(kap_store_tag(s, "localhost/two:alias", man2, NULL), 0);

	assert_int_equal(kap_store_resolve(s, "docker.io/library/busybox:latest", got, NULL), 0);
	assert_string_equal(got, man);
	assert_int_equal(kap_store_resolve(s, "busybox", got, &err), -ENOENT);
	kapsel_error_free(err);
	err = NULL;
	char *name = NULL;
	assert_int_equal(kap_store_lookup(s, "busybox", &name, got, NULL), 0);
	assert_string_equal(name, "docker.io/library/busybox:latest");
	free(name);
	/* By ID: a prefix of the config digest (what `images` shows) or the manifest digest. */
	struct kap_manifest m;
	struct kap_image_config c;
	assert_int_equal(kap_store_load_image(s, man2, &m, &c, NULL), 0);
	char id[16];
	snprintf(id, sizeof(id), "%.12s", m.config.digest + 7);
	kap_manifest_clear(&m);
	kap_image_config_clear(&c);
	assert_int_equal(kap_store_lookup(s, id, &name, got, NULL), 0);
	assert_null(name);
	assert_string_equal(got, man2);
	assert_int_equal(kap_store_lookup(s, "localhost/none", NULL, got, &err), -ENOENT);
	kapsel_error_free(err);
	err = NULL;

	struct kap_store_image *list;
	size_t n;
	assert_int_equal(kap_store_list(s, &list, &n, NULL), 0);
	assert_int_equal(n, 3);
	kap_store_images_free(list, n);

	/* Everything is referenced: prune frees nothing. */
	size_t blobs = count("blobs/sha256");
	assert_int_equal(kap_store_prune(s, NULL), 0);
	assert_int_equal(count("blobs/sha256"), blobs);

	/* A container pins image two after its names are gone. */
	assert_int_equal(kap_store_add_user(s, "ctr1", man2, NULL), 0);
	char **users;
	assert_int_equal(kap_store_users(s, man2, &users, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_string_equal(users[0], "ctr1");
	kap_strvp(&users);
	assert_int_equal(kap_store_untag(s, "localhost/two:1", NULL), 0);
	assert_int_equal(kap_store_untag(s, "localhost/two:alias", NULL), 0);
	assert_int_equal(kap_store_untag(s, "localhost/two:alias", &err), -ENOENT);
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_store_prune(s, NULL), 0);
	assert_int_equal(count("layers"), 2);
	assert_int_equal(kap_store_remove_user(s, "ctr1"), 0);
	int64_t freed = kap_store_prune(s, NULL);
	assert_true(freed > 0);
	assert_int_equal(count("blobs/sha256"), blobs - 3);
	assert_int_equal(count("layers"), 1);
	assert_true(kap_store_has_layer(s, diff));
	assert_false(kap_store_has_layer(s, diff2));
	assert_int_equal(kap_store_add_user(s, "../x", man, &err), -EINVAL);
	kapsel_error_free(err);
}

static void test_stale_tmp(void **state)
{
	struct kap_store *s = *state;
	char p[200];
	/* A dead writer's leftover (old, unlocked), a live writer's (locked), a fresh one. */
	snprintf(p, sizeof(p), "%s/store/tmp/blob-dead", base);
	int fd = open(p, O_CREAT | O_WRONLY, 0600);
	struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
	futimens(fd, old);
	close(fd);
	snprintf(p, sizeof(p), "%s/store/tmp/layer-dead", base);
	mkdir(p, 0700);
	utimensat(AT_FDCWD, p, old, 0);
	snprintf(p, sizeof(p), "%s/store/tmp/blob-live", base);
	int live = open(p, O_CREAT | O_WRONLY, 0600);
	futimens(live, old);
	assert_int_equal(flock(live, LOCK_EX), 0);
	snprintf(p, sizeof(p), "%s/store/tmp/blob-fresh", base);
	close(open(p, O_CREAT | O_WRONLY, 0600));

	struct kap_store *again;
	snprintf(p, sizeof(p), "%s/store", base);
	assert_int_equal(kap_store_open(p, &again, NULL), 0);
	assert_int_equal(count("tmp"), 2);
	kap_store_close(again);
	/* prune removes every unlocked temp entry. */
	assert_true(kap_store_prune(s, NULL) >= 0);
	assert_int_equal(count("tmp"), 1);
	close(live);
	assert_true(kap_store_prune(s, NULL) >= 0);
	assert_int_equal(count("tmp"), 0);
}

static void test_bad_index(void **state)
{
	char p[200];
	struct kap_store_image *list;
	size_t n;
	struct kapsel_error *err = NULL;
	snprintf(p, sizeof(p), "%s/store/images.json", base);
	FILE *f = fopen(p, "w");
	fputs("{\"images\":{\"x\":{\"digest\":\"nope\"}}}", f);
	fclose(f);
	assert_int_equal(kap_store_list(*state, &list, &n, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "images.x.digest"));
	kapsel_error_free(err);
}

/* ---- kap_fs_rm_rf ---- */

/* base/<name> as a chain of `depth` directories "d", each holding a file "f". */
static void make_chain(const char *name, int depth)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/%s", base, name);
	assert_int_equal(mkdir(p, 0755), 0);
	int fd = open(p, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	for (int i = 0; i < depth; i++) {
		close(openat(fd, "f", O_CREAT | O_WRONLY, 0644));
		assert_int_equal(mkdirat(fd, "d", 0755), 0);
		int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
		assert_true(next >= 0);
		close(fd);
		fd = next;
	}
	close(fd);
}

static bool exists(const char *name)
{
	char p[200];
	snprintf(p, sizeof(p), "%s/%s", base, name);
	return access(p, F_OK) == 0;
}

static int rm_in_base(const char *name)
{
	int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	int r = kap_fs_rm_rf(fd, name);
	close(fd);
	return r;
}

/* 1,500 levels under a limit of 32 open files: the recursive walk held one fd per level. */
static void test_rm_rf_deep(void **state)
{
	(void)state;
	make_chain("deep", 1500);
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 32;
	int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	int r = kap_fs_rm_rf(fd, "deep");
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	close(fd);
	assert_int_equal(r, 0);
	assert_false(exists("deep"));
}

/* Symlinks in the tree are removed, never followed: what they point at stays. */
static void test_rm_rf_symlinks(void **state)
{
	(void)state;
	char target[200], link[200];
	make_chain("out", 2);
	make_chain("tree", 40);
	snprintf(target, sizeof(target), "%s/out", base);
	snprintf(link, sizeof(link), "%s/tree/d/d/to-dir", base);
	assert_int_equal(symlink(target, link), 0);
	snprintf(link, sizeof(link), "%s/tree/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/up", base);
	assert_int_equal(
	    symlink("../../../../../../../../../../../../../../../../../../../../../out", link), 0);
	snprintf(target, sizeof(target), "%s/out/f", base);
	snprintf(link, sizeof(link), "%s/tree/to-file", base);
	assert_int_equal(symlink(target, link), 0);
	/* A symlink as the start: unlinked, its target kept. */
	snprintf(link, sizeof(link), "%s/start", base);
	assert_int_equal(symlink("out", link), 0);
	assert_int_equal(rm_in_base("start"), 0);
	assert_int_equal(rm_in_base("tree"), 0);
	assert_false(exists("tree"));
	assert_false(exists("start"));
	assert_true(exists("out/f") && exists("out/d/f") && exists("out/d/d"));
	assert_int_equal(rm_in_base("nothing-here"), 0);
}

/*
 * A directory of the tree renamed out of it while the walk is below it: climbing back through
 * ".." would land in the directory it was moved to. The walk must notice and never touch that
 * directory's own entries. 30 rounds against a process that keeps moving it back and forth.
 */
static void test_rm_rf_moved_out(void **state)
{
	(void)state;
	for (int round = 0; round < 30; round++) {
		make_chain("out", 2);
		make_chain("tree", 200);
		char p[300] = "tree";
		for (int i = 0; i < 29; i++)
			strcat(p, "/d");
		char full[400];
		snprintf(full, sizeof(full), "%s/%s", base, p);
		int fd29 = open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		snprintf(full, sizeof(full), "%s/out", base);
		int outfd = open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(fd29 >= 0 && outfd >= 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			for (;;) {
				renameat(fd29, "d", outfd, "moved");
				renameat(outfd, "moved", fd29, "d");
			}
		}
		rm_in_base("tree");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(fd29);
		close(outfd);
		assert_true(exists("out/f"));
		assert_true(exists("out/d/f"));
		/* Entries moved in behind the walk may keep the tree: that is not an error here. */
		assert_int_equal(rm_in_base("tree"), 0);
		assert_int_equal(rm_in_base("out"), 0);
	}
}

/* A mount inside the tree is not entered (its files stay); only its removal fails. */
static void test_rm_rf_mount(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	make_chain("tree", 3);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A private mount namespace of this child only: the host sees no mount. */
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(77);
		char m[200], keep[220];
		snprintf(m, sizeof(m), "%s/tree/d/m", base);
		if (mkdir(m, 0755) < 0 || mount("tmpfs", m, "tmpfs", 0, "size=64k") < 0)
			_exit(77);
		snprintf(keep, sizeof(keep), "%s/keep", m);
		close(open(keep, O_CREAT | O_WRONLY, 0644));
		int r = rm_in_base("tree");
		_exit(r < 0 && access(keep, F_OK) == 0 ? 0 : 1);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		skip();
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(rm_in_base("tree"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256_vectors),
	    cmocka_unit_test_setup_teardown(test_blob_writer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_layers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tags_lookup_prune, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_tmp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_index, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rm_rf_deep, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rm_rf_symlinks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rm_rf_moved_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rm_rf_mount, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
