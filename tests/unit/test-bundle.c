/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image config + `kapsel run` flags -> config.json (image/bundle.c): Entrypoint/Cmd as docker
 * combines them, Env merging, users and groups from a fake image /etc (names, numbers, hostile
 * files), -v / --memory / --cpus parsing, and the defaults of the generated document.
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

#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/image.h"

static char *ep_sh[] = {"/bin/sh", "-c", NULL};
static char *cmd_echo[] = {"echo", "hi", NULL};

static void assert_strv(char **got, const char *const *want)
{
	size_t i = 0;
	for (; want[i]; i++) {
		assert_non_null(got[i]);
		assert_string_equal(got[i], want[i]);
	}
	assert_null(got[i]);
}

static char **args_of(const struct kap_image_config *img, const char *ep, char **cmd)
{
	char **out = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_bundle_args(img, ep, cmd, &out, &err);
	if (r < 0) {
		kapsel_error_free(err);
		return NULL;
	}
	return out;
}

static void test_args(void **state)
{
	(void)state;
	struct kap_image_config img = {.entrypoint = ep_sh, .cmd = cmd_echo};
	char *user_cmd[] = {"date", NULL};
	char *empty[] = {NULL};
	cleanup_strv char **a = args_of(&img, NULL, NULL);
	assert_strv(a, (const char *const[]){"/bin/sh", "-c", "echo", "hi", NULL});
	cleanup_strv char **b = args_of(&img, NULL, user_cmd);
	assert_strv(b, (const char *const[]){"/bin/sh", "-c", "date", NULL});
	cleanup_strv char **b2 = args_of(&img, NULL, empty);
	assert_strv(b2, (const char *const[]){"/bin/sh", "-c", "echo", "hi", NULL});
	/* A new entrypoint drops the image's Cmd (docker, podman). */
	cleanup_strv char **c = args_of(&img, "/bin/true", NULL);
	assert_strv(c, (const char *const[]){"/bin/true", NULL});
	cleanup_strv char **d = args_of(&img, "/bin/echo", user_cmd);
	assert_strv(d, (const char *const[]){"/bin/echo", "date", NULL});
	cleanup_strv char **e = args_of(&img, "", user_cmd);
	assert_strv(e, (const char *const[]){"date", NULL});
	cleanup_strv char **f = args_of(&img, "[\"env\", \"-i\"]", user_cmd);
	assert_strv(f, (const char *const[]){"env", "-i", "date", NULL});

	struct kap_image_config only_cmd = {.cmd = cmd_echo};
	cleanup_strv char **g = args_of(&only_cmd, NULL, NULL);
	assert_strv(g, (const char *const[]){"echo", "hi", NULL});

	struct kap_image_config none = {0};
	struct kapsel_error *err = NULL;
	char **out = NULL;
	assert_int_equal(kap_bundle_args(&none, NULL, NULL, &out, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "no command"));
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_bundle_args(&none, "", NULL, &out, &err), -EINVAL);
	kapsel_error_free(err);
	err = NULL;
	assert_int_equal(kap_bundle_args(&img, "[1]", NULL, &out, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "--entrypoint[0]"));
	kapsel_error_free(err);
	err = NULL;
	assert_true(kap_bundle_args(&img, "[\"x\"", NULL, &out, &err) < 0);
	kapsel_error_free(err);
}

static void test_env(void **state)
{
	(void)state;
	char *img_env[] = {"PATH=/opt/bin:/bin", "A=1", "=bad", "noequals", "KEEP=yes", NULL};
	struct kap_image_config img = {.env = img_env};
	setenv("KAPSEL_TEST_FROM_HOST", "host value", 1);
	unsetenv("KAPSEL_TEST_UNSET");
	char *user[] = {"A=2", "B=x=y", "KAPSEL_TEST_FROM_HOST", "KAPSEL_TEST_UNSET", NULL};
	cleanup_strv char **env = NULL;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_bundle_env(&img, user, true, "box", "/home/me", &env, &err), 0);
	assert_strv(env, (const char *const[]){
			     "PATH=/opt/bin:/bin", "TERM=xterm", "HOSTNAME=box", "A=2", "KEEP=yes",
			     "B=x=y", "KAPSEL_TEST_FROM_HOST=host value", "HOME=/home/me", NULL});

	/* No image env: the default PATH; HOME from the user, "/" without one. */
	cleanup_strv char **env2 = NULL;
	struct kap_image_config bare = {0};
	char *home[] = {"HOME=/custom", NULL};
	assert_int_equal(kap_bundle_env(&bare, home, false, NULL, "/root", &env2, &err), 0);
	assert_strv(env2, (const char *const[]){
			      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			      "HOME=/custom", NULL});
	cleanup_strv char **env3 = NULL;
	assert_int_equal(kap_bundle_env(&bare, NULL, false, NULL, NULL, &env3, &err), 0);
	assert_string_equal(env3[1], "HOME=/");

	char *bad[] = {"=x", NULL};
	char **out = NULL;
	assert_int_equal(kap_bundle_env(&bare, bad, false, NULL, NULL, &out, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "-e \"=x\""));
	kapsel_error_free(err);
}

/* A fake image root: /etc/passwd and /etc/group as an image would ship them. */
static char root_dir[] = "/tmp/kapsel-test-bundle.XXXXXX";
static int rootfd = -1;

static void write_file(const char *rel, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root_dir, rel);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup_root(void **state)
{
	(void)state;
	if (!mkdtemp(root_dir))
		return -1;
	char etc[512];
	snprintf(etc, sizeof(etc), "%s/etc", root_dir);
	mkdir(etc, 0755);
	write_file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
				 "# a comment\n"
				 "broken line\n"
				 "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
				 "bob:x:1001:100::/home/bob\n"
				 "short:x:1002:1002\n"
				 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
	write_file("etc/group", "root:x:0:\n"
				"wheel:x:10:alice\n"
				"users:x:100:alice,bob\n"
				"alice:x:1000:\n"
				"bad:x:notanumber:alice\n"
				"nogroup:x:65534:\n");
	rootfd = open(root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return rootfd < 0 ? -1 : 0;
}

static int teardown_root(void **state)
{
	(void)state;
	close(rootfd);
	kap_fs_rm_rf(AT_FDCWD, root_dir);
	return 0;
}

static void check_user(const char *spec, uint32_t uid, uint32_t gid, const char *home,
		       const uint32_t *groups, size_t n)
{
	struct kap_exec_user u;
	struct kapsel_error *err = NULL;
	int r = kap_bundle_resolve_user(rootfd, spec, &u, &err);
	if (r < 0)
		fail_msg("user %s: %s", spec, err->msg);
	assert_int_equal(u.uid, uid);
	assert_int_equal(u.gid, gid);
	if (home)
		assert_string_equal(u.home, home);
	else
		assert_null(u.home);
	assert_int_equal(u.n_groups, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(u.groups[i], groups[i]);
	kap_exec_user_clear(&u);
}

static void check_user_fails(const char *spec, const char *needle)
{
	struct kap_exec_user u;
	struct kapsel_error *err = NULL;
	assert_true(kap_bundle_resolve_user(rootfd, spec, &u, &err) < 0);
	assert_non_null(err);
	if (!strstr(err->msg, needle))
		fail_msg("user %s: \"%s\" lacks \"%s\"", spec, err->msg, needle);
	kapsel_error_free(err);
}

static void test_users(void **state)
{
	(void)state;
	const uint32_t alice_groups[] = {10, 100};
	check_user("", 0, 0, "/root", NULL, 0);
	check_user("root", 0, 0, "/root", NULL, 0);
	check_user("alice", 1000, 1000, "/home/alice", alice_groups, 2);
	check_user("1000", 1000, 1000, "/home/alice", alice_groups, 2);
	/* bob's primary group is users (100): not repeated as supplementary. */
	check_user("bob", 1001, 100, "/home/bob", NULL, 0);
	check_user("short", 1002, 1002, NULL, NULL, 0);
	check_user("nobody", 65534, 65534, "/nonexistent", NULL, 0);
	/* An explicit group: that gid, no supplementary groups (runc's GetExecUser). */
	check_user("alice:users", 1000, 100, "/home/alice", NULL, 0);
	check_user("alice:10", 1000, 10, "/home/alice", NULL, 0);
	check_user("1000:4242", 1000, 4242, "/home/alice", NULL, 0);
	/* Numeric ids need not exist. */
	check_user("4242", 4242, 0, NULL, NULL, 0);
	check_user("4242:4343", 4242, 4343, NULL, NULL, 0);
	check_user("4242:nogroup", 4242, 65534, NULL, NULL, 0);

	check_user_fails("mallory", "no such user");
	check_user_fails("alice:nosuchgroup", "no such group");
	check_user_fails("alice:", "empty group");
	check_user_fails("4294967295", "no such user"); /* (uid_t)-1 is not a uid */
	check_user_fails("-1", "no such user");

	/* Without a root (no image files) only numbers work. */
	struct kap_exec_user u;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_bundle_resolve_user(-1, "7:8", &u, &err), 0);
	assert_int_equal(u.uid, 7);
	assert_int_equal(u.gid, 8);
	kap_exec_user_clear(&u);
}

static void test_users_hostile(void **state)
{
	(void)state;
	/* /etc/passwd as a symlink out of the root resolves inside it (to nothing here). */
	char path[512];
	snprintf(path, sizeof(path), "%s/etc/passwd", root_dir);
	char saved[512];
	snprintf(saved, sizeof(saved), "%s/etc/passwd.real", root_dir);
	assert_int_equal(rename(path, saved), 0);
	assert_int_equal(symlink("../../../../../../../../etc/passwd", path), 0);
	/* The host's root entry must not be found through the link: inside the root the link
	 * points at itself's target, /etc/passwd of the root, a loop -> an error, never the host
	 * file. */
	struct kap_exec_user u;
	struct kapsel_error *err = NULL;
	int r = kap_bundle_resolve_user(rootfd, "root", &u, &err);
	assert_true(r < 0);
	kapsel_error_free(err);
	err = NULL;
	unlink(path);
	assert_int_equal(symlink("/../../../../etc/shadow", path), 0);
	check_user_fails("root", "no such user");
	unlink(path);

	/* A fifo must not hang us; a directory is refused. */
	assert_int_equal(mkfifo(path, 0644), 0);
	check_user_fails("root", "not a regular file");
	unlink(path);
	assert_int_equal(mkdir(path, 0755), 0);
	check_user_fails("root", "not a regular file");
	rmdir(path);
	assert_int_equal(rename(saved, path), 0);
	check_user("alice", 1000, 1000, "/home/alice", (const uint32_t[]){10, 100}, 2);
}

static void check_volume_fails(const char *spec, const char *needle)
{
	char *h = NULL, *c = NULL;
	bool ro = false;
	struct kapsel_error *err = NULL;
	assert_true(kap_bundle_parse_volume(spec, &h, &c, &ro, &err) < 0);
	if (!strstr(err->msg, needle))
		fail_msg("-v %s: \"%s\" lacks \"%s\"", spec, err->msg, needle);
	kapsel_error_free(err);
	assert_null(h);
}

static void test_volumes(void **state)
{
	(void)state;
	char *h = NULL, *c = NULL;
	bool ro = false;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_bundle_parse_volume("/tmp:/data:ro", &h, &c, &ro, &err), 0);
	assert_string_equal(h, "/tmp");
	assert_string_equal(c, "/data");
	assert_true(ro);
	free(h);
	free(c);
	ro = true;
	assert_int_equal(kap_bundle_parse_volume("/tmp:/data:rw", &h, &c, &ro, &err), 0);
	assert_false(ro);
	free(h);
	free(c);
	check_volume_fails("/tmp", "expected HOST:CONTAINER");
	check_volume_fails(":/data", "expected HOST:CONTAINER");
	check_volume_fails("", "expected HOST:CONTAINER");
	check_volume_fails("tmp:/data", "not absolute");
	check_volume_fails("/tmp:data", "not absolute");
	check_volume_fails("/tmp:/data:rx", "unknown option \"rx\"");
	check_volume_fails("/nonexistent-kapsel-test:/data", "No such file or directory");
}

static void check_memory(const char *s, int64_t want)
{
	int64_t v = 0;
	struct kapsel_error *err = NULL;
	if (kap_bundle_parse_memory(s, &v, &err) < 0)
		fail_msg("--memory %s: %s", s, err->msg);
	assert_int_equal(v, want);
}

static void check_memory_fails(const char *s, const char *needle)
{
	int64_t v = 0;
	struct kapsel_error *err = NULL;
	assert_true(kap_bundle_parse_memory(s, &v, &err) < 0);
	if (!strstr(err->msg, needle))
		fail_msg("--memory %s: \"%s\" lacks \"%s\"", s, err->msg, needle);
	kapsel_error_free(err);
}

static void test_memory_cpus(void **state)
{
	(void)state;
	check_memory("512m", 512LL << 20);
	check_memory("512M", 512LL << 20);
	check_memory("1g", 1LL << 30);
	check_memory("1gb", 1LL << 30);
	check_memory("6m", 6LL << 20);
	check_memory("10485760", 10LL << 20);
	check_memory("10240k", 10LL << 20);
	check_memory("10485760b", 10LL << 20);
	check_memory_fails("", "invalid size");
	check_memory_fails("m", "invalid size");
	check_memory_fails("-5m", "invalid size");
	check_memory_fails("12x", "suffix b, k, m or g");
	check_memory_fails("12mm", "suffix b, k, m or g");
	check_memory_fails("1k", "minimum of 6m");
	check_memory_fails("99999999999999999999", "too large");
	check_memory_fails("9999999999999g", "too large");

	int64_t q = 0;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_bundle_parse_cpus("0.5", &q, &err), 0);
	assert_int_equal(q, 50000);
	assert_int_equal(kap_bundle_parse_cpus("1", &q, &err), 0);
	assert_int_equal(q, 100000);
	assert_int_equal(kap_bundle_parse_cpus(".25", &q, &err), 0);
	assert_int_equal(q, 25000);
	const char *bad[] = {"", "abc", "1.2.3", "0.001", "-1", "1e3", "100000"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_true(kap_bundle_parse_cpus(bad[i], &q, &err) < 0);
		kapsel_error_free(err);
		err = NULL;
	}
}

/* Member `key` of the object at a dotted path ("process.user"). */
static struct kap_json *at(struct kap_json *j, const char *path)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	char *save = NULL;
	for (char *k = strtok_r(buf, ".", &save); j && k; k = strtok_r(NULL, ".", &save))
		j = kap_json_get(j, k);
	return j;
}

static bool array_has(struct kap_json *a, const char *s)
{
	for (size_t i = 0; i < kap_json_array_len(a); i++)
		if (!strcmp(kap_json_string(kap_json_array_at(a, i)), s))
			return true;
	return false;
}

static struct kap_json *config(const struct kapsel_run_options *o,
			       const struct kap_image_config *img)
{
	struct kap_bundle_env be = {
	    .rootfs = "/r", .image_name = "docker.io/library/x:latest", .hostname = "box"};
	struct kap_json *j = NULL;
	struct kapsel_error *err = NULL;
	if (kap_bundle_config(img, o, &be, rootfd, &j, &err) < 0)
		fail_msg("config: %s", err->msg);
	return j;
}

static void test_config(void **state)
{
	(void)state;
	char *ports[] = {"80/tcp", "53/udp", NULL};
	struct kap_image_config img = {
	    .cmd = cmd_echo, .user = "alice", .working_dir = "srv", .exposed_ports = ports};
	struct kapsel_run_options o = {.image = "x"};
	cleanup_json struct kap_json *j = config(&o, &img);
	assert_int_equal(kap_json_int64(at(j, "process.user.uid")), 1000);
	assert_int_equal(kap_json_array_len(at(j, "process.user.additionalGids")), 2);
	assert_string_equal(kap_json_string(at(j, "process.cwd")), "/srv");
	assert_false(kap_json_bool(at(j, "process.noNewPrivileges")));
	/* Non-root: the default set bounds, nothing effective. */
	assert_int_equal(kap_json_array_len(at(j, "process.capabilities.bounding")), 11);
	assert_int_equal(kap_json_array_len(at(j, "process.capabilities.effective")), 0);
	struct kap_json *ann = at(j, "annotations");
	assert_string_equal(kap_json_string(kap_json_get(ann, "io.kapsel.image.exposedPorts")),
			    "80/tcp,53/udp");
	assert_non_null(at(j, "linux.seccomp"));
	assert_int_equal(kap_json_array_len(at(j, "linux.maskedPaths")), 10);
	assert_int_equal(kap_json_array_len(at(j, "linux.readonlyPaths")), 6);
	assert_int_equal(kap_json_array_len(at(j, "linux.namespaces")), 6);
	assert_int_equal(kap_json_int64(at(j, "linux.resources.pids.limit")), 2048);
	struct kap_json *dev = kap_json_array_at(at(j, "linux.resources.devices"), 0);
	assert_false(kap_json_bool(kap_json_get(dev, "allow")));
	assert_string_equal(kap_json_string(at(j, "hostname")), "box");
	assert_false(kap_json_bool(at(j, "root.readonly")));

	char *vols[] = {"/tmp:/data:ro", NULL};
	char *add[] = {"net_admin", NULL};
	char *drop[] = {"CAP_KILL", "chown", NULL};
	char *sec[] = {"no-new-privileges", "seccomp=unconfined", NULL};
	struct kapsel_run_options o2 = {.image = "x",
					.user = "0",
					.memory = "64m",
					.cpus = "0.5",
					.has_pids_limit = true,
					.pids_limit = 0,
					.read_only = true,
					.volumes = vols,
					.net = "host",
					.cap_add = add,
					.cap_drop = drop,
					.security_opts = sec,
					.tty = true};
	cleanup_json struct kap_json *k = config(&o2, &img);
	struct kap_json *eff = at(k, "process.capabilities.effective");
	assert_int_equal(kap_json_array_len(eff), 10);
	assert_true(array_has(eff, "CAP_NET_ADMIN"));
	assert_false(array_has(eff, "CAP_KILL"));
	assert_false(array_has(eff, "CAP_CHOWN"));
	assert_true(kap_json_bool(at(k, "process.noNewPrivileges")));
	assert_true(kap_json_bool(at(k, "process.terminal")));
	assert_null(at(k, "linux.seccomp"));
	assert_null(at(k, "linux.resources.pids"));
	assert_int_equal(kap_json_int64(at(k, "linux.resources.memory.limit")), 64LL << 20);
	assert_int_equal(kap_json_int64(at(k, "linux.resources.cpu.quota")), 50000);
	assert_int_equal(kap_json_int64(at(k, "linux.resources.cpu.period")), 100000);
	assert_true(kap_json_bool(at(k, "root.readonly")));
	assert_int_equal(kap_json_array_len(at(k, "linux.namespaces")), 5);
	struct kap_json *mounts = at(k, "mounts");
	bool found = false;
	for (size_t i = 0; i < kap_json_array_len(mounts); i++) {
		struct kap_json *m = kap_json_array_at(mounts, i);
		if (!strcmp(kap_json_string(kap_json_get(m, "destination")), "/data")) {
			found = true;
			assert_string_equal(kap_json_string(kap_json_get(m, "source")), "/tmp");
			assert_true(array_has(kap_json_get(m, "options"), "ro"));
		}
	}
	assert_true(found);

	/* --privileged: every capability, no seccomp, no masked paths, devices allowed. */
	struct kapsel_run_options o3 = {.image = "x", .user = "root", .privileged = true};
	cleanup_json struct kap_json *p = config(&o3, &img);
	assert_true(kap_json_array_len(at(p, "process.capabilities.effective")) > 30);
	assert_null(at(p, "linux.seccomp"));
	assert_null(at(p, "linux.maskedPaths"));
	dev = kap_json_array_at(at(p, "linux.resources.devices"), 0);
	assert_true(kap_json_bool(kap_json_get(dev, "allow")));

	/* --cap-drop ALL --cap-add X: only X. */
	char *all[] = {"ALL", NULL};
	char *one[] = {"SYS_PTRACE", NULL};
	struct kapsel_run_options o4 = {.image = "x", .user = "0", .cap_drop = all, .cap_add = one};
	cleanup_json struct kap_json *q = config(&o4, &img);
	eff = at(q, "process.capabilities.effective");
	assert_int_equal(kap_json_array_len(eff), 1);
	assert_true(array_has(eff, "CAP_SYS_PTRACE"));
}

static void check_bad_flags(struct kapsel_run_options o, const char *needle)
{
	struct kapsel_error *err = NULL;
	o.image = "x";
	assert_true(kap_bundle_check(&o, &err) < 0);
	if (!strstr(err->msg, needle))
		fail_msg("\"%s\" lacks \"%s\"", err->msg, needle);
	kapsel_error_free(err);
}

static void test_bad_flags(void **state)
{
	(void)state;
	char *bad_cap[] = {"CAP_FLY", NULL};
	char *bad_sec[] = {"seccomp", NULL};
	char *bad_sec2[] = {"frobnicate=1", NULL};
	char *bad_vol[] = {"/tmp:/x", "./relative:/y", NULL};
	check_bad_flags((struct kapsel_run_options){.cap_add = bad_cap}, "unknown capability");
	check_bad_flags((struct kapsel_run_options){.security_opts = bad_sec}, "unknown option");
	check_bad_flags((struct kapsel_run_options){.security_opts = bad_sec2}, "unknown option");
	check_bad_flags((struct kapsel_run_options){.volumes = bad_vol}, "./relative:/y");
	check_bad_flags((struct kapsel_run_options){.memory = "lots"}, "--memory");
	check_bad_flags((struct kapsel_run_options){.cpus = "x"}, "--cpus");
	check_bad_flags((struct kapsel_run_options){.workdir = "rel"}, "must be absolute");
	check_bad_flags((struct kapsel_run_options){.hostname = "bad host"}, "not a valid host");
	/* Any other word names a network (issue 12); what cannot be a name is still refused. */
	check_bad_flags((struct kapsel_run_options){.net = "br/idge"},
			"expected none, host or a network name");
	/* container:NAME and ns:PATH join a namespace (issue 12); without the name or path
	 * they are refused. */
	check_bad_flags((struct kapsel_run_options){.net = "container:"},
			"--net container:: expected container:NAME or ns:PATH");
	check_bad_flags((struct kapsel_run_options){.net = "ns:"},
			"--net ns:: expected container:NAME or ns:PATH");
	check_bad_flags((struct kapsel_run_options){.ip = "10.88.0.5"}, "--ip needs --net NETWORK");
	/* -dit is podman's way to keep a shell waiting in the background (issue 16): no error. */
	struct kapsel_run_options dit = {.image = "x", .tty = true, .detach = true};
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_bundle_check(&dit, &err), 0);
	assert_null(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_args),    cmocka_unit_test(test_env),
	    cmocka_unit_test(test_users),   cmocka_unit_test(test_users_hostile),
	    cmocka_unit_test(test_volumes), cmocka_unit_test(test_memory_cpus),
	    cmocka_unit_test(test_config),  cmocka_unit_test(test_bad_flags),
	};
	return cmocka_run_group_tests(tests, setup_root, teardown_root);
}
