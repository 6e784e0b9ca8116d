/* SPDX-License-Identifier: Apache-2.0 */
/*
 * container/seccomp.c and container/seccomp-default.c: profile decoding with path-aware errors,
 * and filters loaded into forked children (which set no_new_privs themselves, as the container
 * init does when process.noNewPrivileges asks, so this runs without root too).
 */
#include <errno.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "container/seccomp-default.h"
#include "container/seccomp.h"
#include "core/cleanup.h"
#include "core/json.h"

#define CAP(c) (UINT64_C(1) << (c))
/* Docker's and podman's default capability set. */
#define DEFAULT_CAPS                                                                               \
	(CAP(CAP_CHOWN) | CAP(CAP_DAC_OVERRIDE) | CAP(CAP_FSETID) | CAP(CAP_FOWNER) |              \
	 CAP(CAP_MKNOD) | CAP(CAP_NET_RAW) | CAP(CAP_SETGID) | CAP(CAP_SETUID) |                   \
	 CAP(CAP_SETFCAP) | CAP(CAP_SETPCAP) | CAP(CAP_NET_BIND_SERVICE) | CAP(CAP_SYS_CHROOT) |   \
	 CAP(CAP_KILL) | CAP(CAP_AUDIT_WRITE))

static int prepare_str(const char *json, struct kap_seccomp **sc, struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = NULL;
	int r = kap_json_parse(json, strlen(json), "test profile", &j, err);
	if (r < 0)
		return r;
	return kap_seccomp_prepare(j, sc, err);
}

static struct kap_seccomp *prepare_ok(const char *json)
{
	struct kap_seccomp *sc = NULL;
	cleanup_error struct kapsel_error *err = NULL;
	int r = prepare_str(json, &sc, &err);
	if (r < 0)
		fail_msg("prepare failed: %s", err ? err->msg : "(no error)");
	assert_non_null(sc);
	return sc;
}

/* Run fn in a forked child; returns its exit status, or 128 + the signal that killed it. */
static int run_child(int (*fn)(struct kap_seccomp *), struct kap_seccomp *sc)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(20); /* a test bug must not hang the suite */
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			_exit(100);
		int nfd = -1;
		struct kapsel_error *err = NULL;
		if (kap_seccomp_load(sc, &nfd, &err) < 0) {
			fprintf(stderr, "child: %s\n", err->msg);
			_exit(101);
		}
		/* _exit: no atexit handlers (LeakSanitizer would ptrace under the filter). */
		_exit(fn(sc));
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A moby-style profile exercising every field the parser knows. */
static const char moby_like[] =
    "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":1,"
    "\"architectures\":[\"SCMP_ARCH_X86_64\",\"SCMP_ARCH_X86\",\"SCMP_ARCH_X32\"],"
    "\"flags\":[\"SECCOMP_FILTER_FLAG_SPEC_ALLOW\"],"
    "\"syscalls\":["
    "{\"names\":[\"accept\",\"read\",\"write\",\"chown32\",\"socketcall\",\"_llseek\","
    "\"exit_group\",\"futex_waitv\"],\"action\":\"SCMP_ACT_ALLOW\"},"
    "{\"names\":[\"socket\"],\"action\":\"SCMP_ACT_ALLOW\","
    "\"args\":[{\"index\":0,\"value\":40,\"op\":\"SCMP_CMP_NE\"}]},"
    "{\"names\":[\"personality\"],\"action\":\"SCMP_ACT_ALLOW\","
    "\"args\":[{\"index\":0,\"value\":4294967295,\"valueTwo\":0,\"op\":\"SCMP_CMP_EQ\"}]},"
    "{\"names\":[\"clone\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,"
    "\"value\":2114060288,\"valueTwo\":0,\"op\":\"SCMP_CMP_MASKED_EQ\"}],"
    "\"comment\":\"unknown members are ignored\"},"
    "{\"names\":[\"clone3\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":38},"
    "{\"names\":[\"ptrace\"],\"action\":\"SCMP_ACT_KILL_PROCESS\"},"
    "{\"names\":[\"kill\"],\"action\":\"SCMP_ACT_LOG\"},"
    "{\"names\":[\"tkill\"],\"action\":\"SCMP_ACT_TRACE\",\"errnoRet\":5},"
    "{\"names\":[\"tgkill\"],\"action\":\"SCMP_ACT_TRAP\"},"
    "{\"names\":[\"uselib\"],\"action\":\"SCMP_ACT_KILL\"},"
    "{\"names\":[\"lseek\"],\"action\":\"SCMP_ACT_KILL_THREAD\"},"
    "{\"names\":[\"getpid\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":["
    "{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_LT\"},{\"index\":1,\"value\":2,\"op\":"
    "\"SCMP_CMP_LE\"},{\"index\":2,\"value\":3,\"op\":\"SCMP_CMP_GE\"},{\"index\":3,"
    "\"value\":4,\"op\":\"SCMP_CMP_GT\"},{\"index\":4,\"value\":18446744073709551615,"
    "\"op\":\"SCMP_CMP_EQ\"},{\"index\":5,\"value\":6,\"op\":\"SCMP_CMP_NE\"}]},"
    /* Same action as the default: dropped (libseccomp would refuse it). */
    "{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1}"
    "]}";

static void test_prepare_moby_like(void **state)
{
	struct kap_seccomp *sc = prepare_ok(moby_like);
	assert_false(kap_seccomp_has_notify(sc));
	assert_null(kap_seccomp_listener_path(sc));
	assert_null(kap_seccomp_listener_metadata(sc));
	kap_seccomp_free(sc);
}

static void test_prepare_null(void **state)
{
	struct kap_seccomp *sc = (struct kap_seccomp *)&sc;
	assert_int_equal(kap_seccomp_prepare(NULL, &sc, NULL), 0);
	assert_null(sc);
	kap_seccomp_free(NULL);
	assert_false(kap_seccomp_has_notify(NULL));
}

static void test_prepare_default_profile(void **state)
{
	const uint64_t cap_sets[] = {0, DEFAULT_CAPS, DEFAULT_CAPS | CAP(CAP_SYS_ADMIN), ~0ULL};
	for (size_t i = 0; i < sizeof(cap_sets) / sizeof(cap_sets[0]); i++) {
		cleanup_json struct kap_json *p = kap_seccomp_default_profile(cap_sets[i]);
		assert_non_null(p);
		struct kap_seccomp *sc = NULL;
		cleanup_error struct kapsel_error *err = NULL;
		if (kap_seccomp_prepare(p, &sc, &err) < 0)
			fail_msg("default profile (caps %#llx): %s",
				 (unsigned long long)cap_sets[i], err->msg);
		kap_seccomp_free(sc);
	}
}

static bool profile_allows(const struct kap_json *p, const char *name)
{
	struct kap_json *sys = kap_json_get(p, "syscalls");
	for (size_t i = 0; i < kap_json_array_len(sys); i++) {
		struct kap_json *rule = kap_json_array_at(sys, i);
		if (strcmp(kap_json_string(kap_json_get(rule, "action")), "SCMP_ACT_ALLOW") != 0)
			continue;
		struct kap_json *names = kap_json_get(rule, "names");
		for (size_t k = 0; k < kap_json_array_len(names); k++)
			if (strcmp(kap_json_string(kap_json_array_at(names, k)), name) == 0)
				return true;
	}
	return false;
}

static void test_default_profile_caps(void **state)
{
	cleanup_json struct kap_json *p = kap_seccomp_default_profile(DEFAULT_CAPS);
	cleanup_json struct kap_json *admin =
	    kap_seccomp_default_profile(DEFAULT_CAPS | CAP(CAP_SYS_ADMIN) | CAP(CAP_SYS_BOOT));
	assert_non_null(p);
	assert_non_null(admin);
	const char *never[] = {"kexec_load",  "kexec_file_load", "keyctl", "add_key",
			       "request_key", "pivot_root",	 "swapon", "swapoff"};
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
		assert_false(profile_allows(p, never[i]));
		assert_false(profile_allows(admin, never[i]));
	}
	const char *gated[] = {"mount",	      "umount2", "setns",	    "unshare",
			       "init_module", "bpf",	 "perf_event_open", "reboot"};
	for (size_t i = 0; i < sizeof(gated) / sizeof(gated[0]); i++)
		assert_false(profile_allows(p, gated[i]));
	assert_true(profile_allows(admin, "mount"));
	assert_true(profile_allows(admin, "setns"));
	assert_true(profile_allows(admin, "reboot"));
	assert_false(profile_allows(admin, "init_module"));
	assert_true(profile_allows(p, "ptrace"));
	assert_true(profile_allows(p, "chroot")); /* CAP_SYS_CHROOT is in the default set */
	assert_true(profile_allows(p, "read"));
}

struct bad_case {
	const char *json;
	int code;
	const char *msg;
};

static void test_errors_name_the_path(void **state)
{
	static const struct bad_case cases[] = {
	    {"[]", EINVAL, "linux.seccomp: expected object"},
	    {"{}", EINVAL, "linux.seccomp.defaultAction: required"},
	    {"{\"defaultAction\":1}", EINVAL, "linux.seccomp.defaultAction: expected string"},
	    {"{\"defaultAction\":\"SCMP_ACT_FOO\"}", EINVAL,
	     "linux.seccomp.defaultAction: unknown action \"SCMP_ACT_FOO\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"defaultErrnoRet\":1}", EINVAL,
	     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW does not take an errno"},
	    {"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":-1}", ERANGE,
	     "linux.seccomp.defaultErrnoRet: expected a non-negative integer"},
	    {"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":65536}", ERANGE,
	     "linux.seccomp.defaultErrnoRet: 65536 is out of range (0-65535)"},
	    {"{\"defaultAction\":\"SCMP_ACT_NOTIFY\",\"listenerPath\":\"/x\"}", EINVAL,
	     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":\"SCMP_ARCH_X86\"}", EINVAL,
	     "linux.seccomp.architectures: expected array"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86\",2]}",
	     EINVAL, "linux.seccomp.architectures[1]: expected string"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\","
	     "\"architectures\":[\"SCMP_ARCH_X86\",\"SCMP_ARCH_VAX\"]}",
	     EINVAL, "linux.seccomp.architectures[1]: unknown architecture \"SCMP_ARCH_VAX\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"x86_64\"]}", EINVAL,
	     "linux.seccomp.architectures[0]: unknown architecture \"x86_64\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_\"]}", EINVAL,
	     "linux.seccomp.architectures[0]: unknown architecture \"SCMP_ARCH_\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"flags\":[\"SECCOMP_FILTER_FLAG_FOO\"]}",
	     EINVAL, "linux.seccomp.flags[0]: unknown flag \"SECCOMP_FILTER_FLAG_FOO\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":{}}", EINVAL,
	     "linux.seccomp.syscalls: expected array"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[\"read\"]}", EINVAL,
	     "linux.seccomp.syscalls[0]: expected object"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"action\":\"SCMP_ACT_LOG\"}]}",
	     EINVAL, "linux.seccomp.syscalls[0].names: required"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[],"
	     "\"action\":\"SCMP_ACT_LOG\"}]}",
	     EINVAL, "linux.seccomp.syscalls[0].names: must contain at least one entry"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\",7],"
	     "\"action\":\"SCMP_ACT_LOG\"}]}",
	     EINVAL, "linux.seccomp.syscalls[0].names[1]: expected string"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\",\"\"],"
	     "\"action\":\"SCMP_ACT_LOG\"}]}",
	     EINVAL, "linux.seccomp.syscalls[0].names[1]: empty syscall name"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"]}]}", EINVAL,
	     "linux.seccomp.syscalls[0].action: required"},
	    {"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ALLOW\"},{\"names\":[\"a\"],\"action\":\"SCMP_ACT_ALLOW\"},"
	     "{\"names\":[\"b\"],\"action\":\"SCMP_ACT_ALLOW\"},{\"names\":[\"write\"],"
	     "\"action\":\"SCMP_ACT_FOO\"}]}",
	     EINVAL, "linux.seccomp.syscalls[3].action: unknown action \"SCMP_ACT_FOO\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ALLOW\",\"errnoRet\":3}]}",
	     EINVAL, "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_ALLOW does not take an errno"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":\"5\"}]}",
	     EINVAL, "linux.seccomp.syscalls[0].errnoRet: expected integer"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":{}}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args: expected array"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[3]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0]: expected object"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":6,\"value\":1,"
	     "\"op\":\"SCMP_CMP_EQ\"}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0].index: 6 is out of range (0-5)"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0].index: required"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"op\":\"SCMP_CMP_EQ\"}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0].value: required"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":\"1\","
	     "\"op\":\"SCMP_CMP_EQ\"}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0].value: expected integer"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":1,"
	     "\"valueTwo\":-2,\"op\":\"SCMP_CMP_EQ\"}]}]}",
	     ERANGE, "linux.seccomp.syscalls[0].args[0].valueTwo: expected a non-negative integer"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":1}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[0].op: required"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,\"value\":1,\"op\":"
	     "\"SCMP_CMP_EQ\"},{\"index\":1,\"value\":1,\"op\":\"SCMP_CMP_FOO\"}]}]}",
	     EINVAL, "linux.seccomp.syscalls[0].args[1].op: unknown operator \"SCMP_CMP_FOO\""},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"read\"],"
	     "\"action\":\"SCMP_ACT_NOTIFY\"}]}",
	     EINVAL, "linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":\"/run/l.sock\","
	     "\"syscalls\":[{\"names\":[\"read\",\"sendmsg\"],\"action\":\"SCMP_ACT_NOTIFY\"}]}",
	     EINVAL,
	     "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for sendmsg: "
	     "the runtime needs it to pass the listener fd on"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerMetadata\":\"m\"}", EINVAL,
	     "linux.seccomp.listenerMetadata: set without listenerPath"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":7}", EINVAL,
	     "linux.seccomp.listenerPath: expected string"},
	    {"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":\"\"}", EINVAL,
	     "linux.seccomp.listenerPath: must be a socket path of 1 to 107 bytes"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kap_seccomp *sc = NULL;
		cleanup_error struct kapsel_error *err = NULL;
		int r = prepare_str(cases[i].json, &sc, &err);
		if (r >= 0 || !err || r != -cases[i].code || strcmp(err->msg, cases[i].msg) != 0)
			fail_msg("case %zu: r=%d msg=\"%s\", want r=%d msg=\"%s\"", i, r,
				 err ? err->msg : "(none)", -cases[i].code, cases[i].msg);
		assert_null(sc);
	}
}

static void test_unknown_syscalls_skipped(void **state)
{
	struct kap_seccomp *sc =
	    prepare_ok("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":"
		       "[\"no_such_syscall\",\"getcwd\",\"future_syscall_2042\"],"
		       "\"action\":\"SCMP_ACT_ERRNO\"},{\"names\":[\"only_unknown\"],"
		       "\"action\":\"SCMP_ACT_NOTIFY\"}],\"listenerPath\":\"/run/x.sock\"}");
	/* The only NOTIFY rule named nothing libseccomp knows: no listener fd to expect. */
	assert_false(kap_seccomp_has_notify(sc));
	kap_seccomp_free(sc);
}

static int child_errno(struct kap_seccomp *sc)
{
	char buf[256];
	struct utsname u;
	errno = 0;
	if (syscall(SYS_getcwd, buf, sizeof(buf)) != -1 || errno != 42)
		return 1;
	errno = 0;
	if (uname(&u) != -1 || errno != 42)
		return 2;
	if (syscall(SYS_getpid) != getpid() || getpid() <= 0)
		return 3;
	return 0;
}

static void test_load_errno(void **state)
{
	struct kap_seccomp *sc =
	    prepare_ok("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"getcwd\","
		       "\"uname\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":42}]}");
	assert_int_equal(run_child(child_errno, sc), 0);
	kap_seccomp_free(sc);
}

static int child_args(struct kap_seccomp *sc)
{
	/* MASKED_EQ: (mask & 0700) == 0700. */
	errno = 0;
	if (syscall(SYS_umask, 0777) != -1 || errno != 43)
		return 1;
	if (syscall(SYS_umask, 0700) != -1 || errno != 43)
		return 2;
	if (syscall(SYS_umask, 0600) < 0)
		return 3;
	/* Two conditions on argument 0: either matches (one rule each, as runc adds them). */
	errno = 0;
	if (syscall(SYS_getpgid, 11111) != -1 || errno != 44)
		return 4;
	errno = 0;
	if (syscall(SYS_getpgid, 22222) != -1 || errno != 44)
		return 5;
	if (syscall(SYS_getpgid, 0) < 0)
		return 6;
	/* Conditions on distinct arguments: both must match. */
	errno = 0;
	if (syscall(SYS_getpriority, PRIO_PROCESS, 33333) != -1 || errno != 45)
		return 7;
	errno = 0;
	if (syscall(SYS_getpriority, PRIO_PGRP, 33333) == -1 && errno == 45)
		return 8;
	if (syscall(SYS_getpriority, PRIO_PROCESS, 0) < 0)
		return 9;
	return 0;
}

static void test_load_args(void **state)
{
	struct kap_seccomp *sc = prepare_ok(
	    "{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":["
	    "{\"names\":[\"umask\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":43,\"args\":"
	    "[{\"index\":0,\"value\":448,\"valueTwo\":448,\"op\":\"SCMP_CMP_MASKED_EQ\"}]},"
	    "{\"names\":[\"getpgid\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":44,\"args\":"
	    "[{\"index\":0,\"value\":11111,\"op\":\"SCMP_CMP_EQ\"},"
	    "{\"index\":0,\"value\":22222,\"op\":\"SCMP_CMP_EQ\"}]},"
	    "{\"names\":[\"getpriority\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":45,\"args\":"
	    "[{\"index\":0,\"value\":0,\"op\":\"SCMP_CMP_EQ\"},"
	    "{\"index\":1,\"value\":33333,\"op\":\"SCMP_CMP_EQ\"}]}]}");
	assert_int_equal(run_child(child_args, sc), 0);
	kap_seccomp_free(sc);
}

/*
 * The default profile in force. Probes are harmless whether or not they are refused: invalid
 * keyctl and bpf commands, and namespaces created (if at all) only in a child about to exit.
 */
static int child_default(struct kap_seccomp *sc)
{
	errno = 0;
	if (syscall(SYS_keyctl, 9999, 0, 0, 0, 0) != -1 || errno != EPERM)
		return 1;
	errno = 0;
	if (syscall(SYS_bpf, -1, NULL, 0) != -1 || errno != EPERM)
		return 2;
	errno = 0;
	if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
		return 3;
	errno = 0;
	if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
		return 4;
	errno = 0;
	long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0); /* the filter let it through: leave at once */
	if (r != -1 || errno != EPERM)
		return 5;
	errno = 0;
	if (personality(PER_BSD) != -1 || errno != EPERM)
		return 6;
	if (personality(0xffffffff) < 0)
		return 7;
	pid_t pid = fork(); /* clone without namespace flags */
	if (pid < 0)
		return 8;
	if (pid == 0)
		_exit(0);
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return 9;
	return 0;
}

static void test_load_default_profile(void **state)
{
	cleanup_json struct kap_json *p = kap_seccomp_default_profile(DEFAULT_CAPS);
	assert_non_null(p);
	struct kap_seccomp *sc = NULL;
	cleanup_error struct kapsel_error *err = NULL;
	assert_int_equal(kap_seccomp_prepare(p, &sc, &err), 0);
	assert_int_equal(run_child(child_default, sc), 0);
	kap_seccomp_free(sc);
}

/* The listener's side of the protocol: one connection, JSON payload, fd in SCM_RIGHTS. */
static int receive_state(int lsock, char *buf, size_t size, int *fd)
{
	struct pollfd pfd = {.fd = lsock, .events = POLLIN};
	if (poll(&pfd, 1, 10000) != 1)
		return -ETIMEDOUT;
	cleanup_close int conn = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0)
		return -errno;
	size_t off = 0;
	*fd = -1;
	for (;;) {
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = {.iov_base = buf + off, .iov_len = size - 1 - off};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = u.b,
				    .msg_controllen = sizeof(u.b)};
		if (iov.iov_len == 0)
			return -EMSGSIZE;
		ssize_t n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			if (off != 0 || *fd >= 0)
				return -EPROTO; /* the fd belongs in the first message */
			memcpy(fd, CMSG_DATA(c), sizeof(int));
		}
		off += (size_t)n;
	}
	buf[off] = '\0';
	return 0;
}

static void test_notify(void **state)
{
	char dir[] = "/tmp/kapsel-test-seccomp-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/listener.sock", dir);
	cleanup_close int lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lsock >= 0);
	assert_int_equal(bind(lsock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lsock, 1), 0);

	char json[512];
	snprintf(json, sizeof(json),
		 "{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":\"%s\","
		 "\"listenerMetadata\":\"foo\",\"syscalls\":[{\"names\":[\"getppid\"],"
		 "\"action\":\"SCMP_ACT_NOTIFY\"}]}",
		 sa.sun_path);
	struct kap_seccomp *sc = prepare_ok(json);
	assert_true(kap_seccomp_has_notify(sc));
	assert_string_equal(kap_seccomp_listener_path(sc), sa.sun_path);
	assert_string_equal(kap_seccomp_listener_metadata(sc), "foo");

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(20);
		int nfd = -1;
		struct kapsel_error *err = NULL;
		char notify_state_json[256];
		snprintf(notify_state_json, sizeof(notify_state_json),
			 "{\"ociVersion\":\"1.2.0\",\"id\":\"t1\",\"status\":\"creating\","
			 "\"pid\":%d,\"bundle\":\"/b\"}",
			 (int)getpid());
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			_exit(100);
		if (kap_seccomp_load(sc, &nfd, &err) < 0 || nfd < 0)
			_exit(101);
		if (kap_seccomp_send_notify_fd(sc, nfd, notify_state_json, &err) < 0) {
			fprintf(stderr, "child: %s\n", err->msg);
			_exit(102);
		}
		close(nfd);
		/* Answered by the listener below, not by the kernel. */
		_exit(syscall(SYS_getppid) == 4242 ? 0 : 103);
	}

	char buf[4096];
	int nfd = -1;
	const char *failed = NULL;
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	cleanup_json struct kap_json *doc = NULL;
	if (receive_state(lsock, buf, sizeof(buf), &nfd) < 0 || nfd < 0) {
		failed = "no state/fd received";
		goto out;
	}
	if (kap_json_parse(buf, strlen(buf), "process state", &doc, NULL) < 0) {
		failed = "process state is not JSON";
		goto out;
	}
	struct kap_json *fds = kap_json_get(doc, "fds");
	struct kap_json *st = kap_json_get(doc, "state");
	if (kap_json_array_len(fds) != 1 ||
	    strcmp(kap_json_string(kap_json_array_at(fds, 0)), "seccompFd") != 0 ||
	    strcmp(kap_json_string(kap_json_get(doc, "metadata")), "foo") != 0 ||
	    kap_json_int64(kap_json_get(doc, "pid")) != pid ||
	    kap_json_type(kap_json_get(doc, "ociVersion")) != KAP_JSON_STRING ||
	    strcmp(kap_json_string(kap_json_get(st, "id")), "t1") != 0 ||
	    kap_json_int64(kap_json_get(st, "pid")) != pid) {
		failed = "process state has the wrong content";
		goto out;
	}
	if (seccomp_notify_alloc(&req, &resp) < 0) {
		failed = "seccomp_notify_alloc";
		goto out;
	}
	struct pollfd pfd = {.fd = nfd, .events = POLLIN};
	if (poll(&pfd, 1, 10000) != 1 || seccomp_notify_receive(nfd, req) < 0) {
		failed = "no notification";
		goto out;
	}
	if (req->pid != (uint32_t)pid || req->data.nr != SYS_getppid) {
		failed = "notification for the wrong process or syscall";
		goto out;
	}
	resp->id = req->id;
	resp->val = 4242;
	resp->error = 0;
	resp->flags = 0;
	if (seccomp_notify_respond(nfd, resp) < 0)
		failed = "seccomp_notify_respond";
out:
	if (failed)
		kill(pid, SIGKILL);
	int status = 0;
	waitpid(pid, &status, 0);
	seccomp_notify_free(req, resp);
	if (nfd >= 0)
		close(nfd);
	kap_seccomp_free(sc);
	unlink(sa.sun_path);
	rmdir(dir);
	if (failed)
		fail_msg("%s", failed);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_send_notify_fd_errors(void **state)
{
	struct kap_seccomp *sc =
	    prepare_ok("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":"
		       "\"/nonexistent/kapsel.sock\",\"syscalls\":[{\"names\":[\"getppid\"],"
		       "\"action\":\"SCMP_ACT_NOTIFY\"}]}");
	cleanup_error struct kapsel_error *err = NULL;
	assert_int_equal(kap_seccomp_send_notify_fd(sc, 0, "{\"id\":\"x\",\"pid\":1}", &err),
			 -ENOENT);
	assert_string_equal(err->msg, "seccomp listener /nonexistent/kapsel.sock: connect: No "
				      "such file or directory");
	kapsel_error_free(steal_ptr(err));
	assert_int_equal(kap_seccomp_send_notify_fd(sc, 0, "{\"id\":\"x\"}", &err), -EINVAL);
	assert_string_equal(err->msg, "state.pid: required to send the seccomp fd");
	kapsel_error_free(steal_ptr(err));
	assert_int_equal(kap_seccomp_send_notify_fd(sc, 0, "[", &err), -EINVAL);
	kap_seccomp_free(sc);

	sc = prepare_ok("{\"defaultAction\":\"SCMP_ACT_ALLOW\"}");
	kapsel_error_free(steal_ptr(err));
	assert_int_equal(kap_seccomp_send_notify_fd(sc, 0, "{\"pid\":1}", &err), -EINVAL);
	assert_string_equal(err->msg, "linux.seccomp.listenerPath: not set");
	kap_seccomp_free(sc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prepare_moby_like),
	    cmocka_unit_test(test_prepare_null),
	    cmocka_unit_test(test_prepare_default_profile),
	    cmocka_unit_test(test_default_profile_caps),
	    cmocka_unit_test(test_errors_name_the_path),
	    cmocka_unit_test(test_unknown_syscalls_skipped),
	    cmocka_unit_test(test_load_errno),
	    cmocka_unit_test(test_load_args),
	    cmocka_unit_test(test_load_default_profile),
	    cmocka_unit_test(test_notify),
	    cmocka_unit_test(test_send_notify_fd_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
