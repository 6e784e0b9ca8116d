/* SPDX-License-Identifier: Apache-2.0 */
/*
 * linux.seccomp (runtime-spec config-linux.md#seccomp) compiled with libseccomp.
 *
 * The whole profile is turned into a libseccomp filter in the runtime, before the container
 * process exists, so every mistake in it fails `create` with the JSON path of the bad field; the
 * container process only loads the finished filter. Rules follow runc's reading of the spec
 * (libcontainer/seccomp/seccomp_linux.go), because profiles are written and tested against it.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "container/seccomp.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"

#define SECCOMP_PATH "linux.seccomp"

/* struct seccomp_data has six argument slots: Linux passes at most six syscall arguments. */
#define SECCOMP_MAX_ARGS 6

/*
 * runc turns on libseccomp's binary-tree syscall lookup above this many syscalls: a linear
 * if-chain over ~350 allowed syscalls costs every syscall the container makes. libseccomp <=
 * 2.5.4 misbehaves with the tree and no rules, hence a threshold rather than always.
 */
#define SECCOMP_OPTIMIZE_MIN_SYSCALLS 32

struct kap_seccomp {
	scmp_filter_ctx ctx;
	bool has_notify;
	char *listener_path;
	char *listener_metadata;
};

static const struct {
	const char *name;
	uint32_t action; /* the errno / trace data is filled in later */
} seccomp_actions[] = {
    /* SCMP_ACT_KILL is libseccomp's (and runc's) old name for KILL_THREAD. */
    {"SCMP_ACT_KILL", SCMP_ACT_KILL},
    {"SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS},
    {"SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD},
    {"SCMP_ACT_TRAP", SCMP_ACT_TRAP},
    {"SCMP_ACT_ERRNO", SCMP_ACT_ERRNO(0)},
    {"SCMP_ACT_TRACE", SCMP_ACT_TRACE(0)},
    {"SCMP_ACT_ALLOW", SCMP_ACT_ALLOW},
    {"SCMP_ACT_LOG", SCMP_ACT_LOG},
    {"SCMP_ACT_NOTIFY", SCMP_ACT_NOTIFY},
};

static const struct {
	const char *name;
	enum scmp_compare op;
} seccomp_ops[] = {
    {"SCMP_CMP_NE", SCMP_CMP_NE},
    {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE},
    {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE},
    {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

/*
 * The container init hands the notify fd to the runtime with sendmsg() (core/proc.c
 * kap_sync_send) right after loading the filter; a NOTIFY rule on it would wait for a listener
 * that can only get the fd through that very call. runc refuses `write` for the same reason.
 */
static const char *const notify_forbidden[] = {"sendmsg"};

static bool action_is(uint32_t action, uint32_t base)
{
	return (action & SECCOMP_RET_ACTION_FULL) == (base & SECCOMP_RET_ACTION_FULL);
}

/* A required member that is absent: the typed readers leave that case to the caller. */
static int missing(struct kapsel_error **err, const char *path, const char *key)
{
	return kap_error_plain(err, EINVAL, "%s.%s: required", path, key);
}

/*
 * `<key>` (an action name) and `<errno_key>` of obj into a libseccomp action. errnoRet is only
 * meaningful for ERRNO and TRACE; the spec makes it an error anywhere else and EPERM the default.
 */
static int parse_action(const struct kap_json *obj, const char *path, const char *key,
			const char *errno_key, uint32_t *out, struct kapsel_error **err)
{
	cleanup_free char *name = NULL;
	int r = kap_json_read_string(obj, path, key, &name, err);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(err, path, key);

	uint32_t action = 0;
	size_t i;
	for (i = 0; i < KAP_ARRAY_SIZE(seccomp_actions); i++) {
		if (strcmp(name, seccomp_actions[i].name) == 0) {
			action = seccomp_actions[i].action;
			break;
		}
	}
	if (i == KAP_ARRAY_SIZE(seccomp_actions))
		return kap_error_plain(err, EINVAL, "%s.%s: unknown action \"%s\"", path, key,
				       name);

	bool takes_errno =
	    action_is(action, SCMP_ACT_ERRNO(0)) || action_is(action, SCMP_ACT_TRACE(0));
	uint64_t errno_ret = EPERM;
	r = kap_json_read_uint64(obj, path, errno_key, &errno_ret, err);
	if (r < 0)
		return r;
	if (r > 0 && !takes_errno)
		return kap_error_plain(err, EINVAL, "%s.%s: %s does not take an errno", path,
				       errno_key, name);
	/* SECCOMP_RET_DATA is 16 bits wide; libseccomp would silently truncate. */
	if (errno_ret > UINT16_MAX)
		return kap_error_plain(err, ERANGE, "%s.%s: %" PRIu64 " is out of range (0-65535)",
				       path, errno_key, errno_ret);
	if (takes_errno)
		action |= (uint32_t)errno_ret;
	*out = action;
	return 0;
}

static int add_architectures(struct kap_seccomp *sc, const struct kap_json *seccomp,
			     struct kapsel_error **err)
{
	cleanup_strv char **arches = NULL;
	int r = kap_json_read_strv(seccomp, SECCOMP_PATH, "architectures", &arches, err);
	if (r <= 0)
		return r;
	for (size_t i = 0; arches[i]; i++) {
		static const char prefix[] = "SCMP_ARCH_";
		char lower[32];
		uint32_t arch = 0;
		/* libseccomp names architectures like the OCI constants, minus the prefix and
		 * in lower case (SCMP_ARCH_X86_64 -> "x86_64"). */
		const char *s = arches[i];
		size_t n = strlen(s);
		if (strncmp(s, prefix, sizeof(prefix) - 1) == 0 && n - (sizeof(prefix) - 1) > 0 &&
		    n - (sizeof(prefix) - 1) < sizeof(lower)) {
			size_t j = 0;
			for (const char *p = s + sizeof(prefix) - 1; *p; p++)
				lower[j++] = (char)tolower((unsigned char)*p);
			lower[j] = '\0';
			arch = seccomp_arch_resolve_name(lower);
		}
		if (arch == 0)
			return kap_error_plain(err, EINVAL,
					       SECCOMP_PATH ".architectures[%zu]: unknown "
							    "architecture \"%s\"",
					       i, s);
		r = seccomp_arch_add(sc->ctx, arch);
		/* The native architecture is always in a new filter. */
		if (r < 0 && r != -EEXIST)
			return kap_error(err, -r, SECCOMP_PATH ".architectures[%zu]: add %s", i, s);
	}
	return 0;
}

static int set_flags(struct kap_seccomp *sc, const struct kap_json *seccomp,
		     struct kapsel_error **err)
{
	static const struct {
		const char *name;
		enum scmp_filter_attr attr;
	} flags[] = {
		{"SECCOMP_FILTER_FLAG_TSYNC", SCMP_FLTATR_CTL_TSYNC},
		{"SECCOMP_FILTER_FLAG_LOG", SCMP_FLTATR_CTL_LOG},
		{"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SCMP_FLTATR_CTL_SSB},
#if SCMP_VER_MAJOR > 2 || (SCMP_VER_MAJOR == 2 && SCMP_VER_MINOR >= 6)
		{"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SCMP_FLTATR_CTL_WAITKILL},
#endif
	};
	cleanup_strv char **names = NULL;
	int r = kap_json_read_strv(seccomp, SECCOMP_PATH, "flags", &names, err);
	if (r <= 0)
		return r;
	for (size_t i = 0; names[i]; i++) {
		size_t k;
		for (k = 0; k < KAP_ARRAY_SIZE(flags); k++)
			if (strcmp(names[i], flags[k].name) == 0)
				break;
		if (k == KAP_ARRAY_SIZE(flags)) {
			/* A flag the spec knows but this libseccomp cannot set is not a typo. */
			if (strcmp(names[i], "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") == 0)
				return kap_error_plain(err, EOPNOTSUPP,
						       SECCOMP_PATH ".flags[%zu]: %s needs "
								    "libseccomp >= 2.6",
						       i, names[i]);
			return kap_error_plain(err, EINVAL,
					       SECCOMP_PATH ".flags[%zu]: unknown flag \"%s\"", i,
					       names[i]);
		}
		/* libseccomp refuses attributes the kernel's seccomp API level lacks. */
		r = seccomp_attr_set(sc->ctx, flags[k].attr, 1);
		if (r < 0)
			return kap_error(err, -r, SECCOMP_PATH ".flags[%zu]: %s", i, names[i]);
	}
	return 0;
}

static int parse_arg(const struct kap_json *arg, const char *path, struct scmp_arg_cmp *out,
		     struct kapsel_error **err)
{
	if (kap_json_type(arg) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object", path);

	uint64_t index = 0, value = 0, value_two = 0;
	int r = kap_json_read_uint64(arg, path, "index", &index, err);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(err, path, "index");
	if (index >= SECCOMP_MAX_ARGS)
		return kap_error_plain(err, EINVAL, "%s.index: %" PRIu64 " is out of range (0-%d)",
				       path, index, SECCOMP_MAX_ARGS - 1);
	r = kap_json_read_uint64(arg, path, "value", &value, err);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(err, path, "value");
	r = kap_json_read_uint64(arg, path, "valueTwo", &value_two, err);
	if (r < 0)
		return r;

	cleanup_free char *op = NULL;
	r = kap_json_read_string(arg, path, "op", &op, err);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(err, path, "op");
	size_t i;
	for (i = 0; i < KAP_ARRAY_SIZE(seccomp_ops); i++)
		if (strcmp(op, seccomp_ops[i].name) == 0)
			break;
	if (i == KAP_ARRAY_SIZE(seccomp_ops))
		return kap_error_plain(err, EINVAL, "%s.op: unknown operator \"%s\"", path, op);

	/* For MASKED_EQ libseccomp reads datum_a as the mask and datum_b as the value to compare
	 * the masked argument with; the other operators ignore datum_b (as runc passes them). */
	*out = (struct scmp_arg_cmp){
	    .arg = (unsigned int)index,
	    .op = seccomp_ops[i].op,
	    .datum_a = value,
	    .datum_b = value_two,
	};
	return 0;
}

static int add_syscall_entry(struct kap_seccomp *sc, const struct kap_json *entry, size_t idx,
			     uint32_t default_action, size_t *n_names, struct kapsel_error **err)
{
	char path[64];
	snprintf(path, sizeof(path), SECCOMP_PATH ".syscalls[%zu]", idx);
	if (kap_json_type(entry) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected object", path);

	cleanup_strv char **names = NULL;
	int r = kap_json_read_strv(entry, path, "names", &names, err);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(err, path, "names");
	if (!names[0])
		return kap_error_plain(err, EINVAL, "%s.names: must contain at least one entry",
				       path);

	uint32_t action;
	r = parse_action(entry, path, "action", "errnoRet", &action, err);
	if (r < 0)
		return r;

	struct kap_json *args = NULL;
	r = kap_json_read_member(entry, path, "args", KAP_JSON_ARRAY, &args, err);
	if (r < 0)
		return r;
	size_t n_args = kap_json_array_len(args);
	cleanup_free struct scmp_arg_cmp *cmps = calloc(n_args ? n_args : 1, sizeof(*cmps));
	if (!cmps)
		return kap_error(err, ENOMEM, "%s.args", path);
	unsigned int per_index[SECCOMP_MAX_ARGS] = {0};
	bool split = false;
	for (size_t i = 0; i < n_args; i++) {
		char apath[96];
		snprintf(apath, sizeof(apath), "%s.args[%zu]", path, i);
		r = parse_arg(kap_json_array_at(args, i), apath, &cmps[i], err);
		if (r < 0)
			return r;
		/* runc: conditions on distinct arguments form one rule (AND); if any argument
		 * has several, each condition becomes its own rule (OR), since libseccomp
		 * cannot AND two conditions on one argument. */
		if (++per_index[cmps[i].arg] > 1)
			split = true;
	}

	for (size_t i = 0; names[i]; i++) {
		if (!names[i][0])
			return kap_error_plain(err, EINVAL, "%s.names[%zu]: empty syscall name",
					       path, i);
		if (action_is(action, SCMP_ACT_NOTIFY)) {
			for (size_t k = 0; k < KAP_ARRAY_SIZE(notify_forbidden); k++)
				if (strcmp(names[i], notify_forbidden[k]) == 0)
					return kap_error_plain(
					    err, EINVAL,
					    "%s.names[%zu]: SCMP_ACT_NOTIFY cannot be used "
					    "for %s: the runtime needs it to pass the "
					    "listener fd on",
					    path, i, names[i]);
		}
	}
	/* libseccomp rejects a rule whose action is the default one; it would be a no-op. */
	if (action == default_action)
		return 0;

	for (size_t i = 0; names[i]; i++) {
		/* Resolved for the native architecture; names of other architectures'
		 * syscalls (socketcall, chown32) come back as libseccomp pseudo-numbers that
		 * it maps per architecture when the rule is added. */
		int nr = seccomp_syscall_resolve_name(names[i]);
		if (nr == __NR_SCMP_ERROR) {
			/* config-linux.md#seccomp leaves names unknown to the kernel or
			 * libseccomp to the runtime; runc and crun skip them, so profiles list
			 * syscalls newer than the host. */
			kap_debug("%s: unknown syscall \"%s\" ignored", path, names[i]);
			continue;
		}
		(*n_names)++;
		if (n_args == 0 || !split) {
			r = seccomp_rule_add_array(sc->ctx, action, nr, (unsigned int)n_args, cmps);
		} else {
			r = 0;
			for (size_t k = 0; k < n_args && r >= 0; k++)
				r = seccomp_rule_add_array(sc->ctx, action, nr, 1, &cmps[k]);
		}
		if (r < 0)
			return kap_error(err, -r, "%s: add rule for syscall %s", path, names[i]);
		if (action_is(action, SCMP_ACT_NOTIFY))
			sc->has_notify = true;
	}
	return 0;
}

static bool profile_uses_notify(const struct kap_json *syscalls)
{
	for (size_t i = 0; i < kap_json_array_len(syscalls); i++) {
		struct kap_json *a = kap_json_get(kap_json_array_at(syscalls, i), "action");
		if (kap_json_type(a) == KAP_JSON_STRING &&
		    strcmp(kap_json_string(a), "SCMP_ACT_NOTIFY") == 0)
			return true;
	}
	return false;
}

static int read_listener(struct kap_seccomp *sc, const struct kap_json *seccomp,
			 const struct kap_json *syscalls, struct kapsel_error **err)
{
	int r =
	    kap_json_read_string(seccomp, SECCOMP_PATH, "listenerPath", &sc->listener_path, err);
	if (r < 0)
		return r;
	r = kap_json_read_string(seccomp, SECCOMP_PATH, "listenerMetadata", &sc->listener_metadata,
				 err);
	if (r < 0)
		return r;
	if (sc->listener_metadata && !sc->listener_path)
		return kap_error_plain(err, EINVAL,
				       SECCOMP_PATH ".listenerMetadata: set without listenerPath");
	if (sc->listener_path) {
		struct sockaddr_un sa;
		if (!sc->listener_path[0] || strlen(sc->listener_path) >= sizeof(sa.sun_path))
			return kap_error_plain(err, EINVAL,
					       SECCOMP_PATH ".listenerPath: must be a socket path "
							    "of 1 to %zu bytes",
					       sizeof(sa.sun_path) - 1);
	} else if (profile_uses_notify(syscalls)) {
		/* Without a listener every notified syscall would block forever. */
		return kap_error_plain(err, EINVAL,
				       SECCOMP_PATH ".listenerPath: required when SCMP_ACT_NOTIFY "
						    "is used");
	}
	return 0;
}

int kap_seccomp_prepare(const struct kap_json *seccomp, struct kap_seccomp **out,
			struct kapsel_error **err)
{
	*out = NULL;
	if (!seccomp)
		return 0;
	if (kap_json_type(seccomp) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, SECCOMP_PATH ": expected object");

	uint32_t default_action;
	int r = parse_action(seccomp, SECCOMP_PATH, "defaultAction", "defaultErrnoRet",
			     &default_action, err);
	if (r < 0)
		return r;
	/* As in runc: with NOTIFY as the default, the init's own syscalls after loading the
	 * filter (the sendmsg that hands the fd on, above all) would wait for a listener that
	 * has not got the fd yet. */
	if (action_is(default_action, SCMP_ACT_NOTIFY))
		return kap_error_plain(err, EINVAL,
				       SECCOMP_PATH ".defaultAction: SCMP_ACT_NOTIFY cannot be the "
						    "default action");

	struct kap_json *syscalls = NULL;
	r = kap_json_read_member(seccomp, SECCOMP_PATH, "syscalls", KAP_JSON_ARRAY, &syscalls, err);
	if (r < 0)
		return r;

	struct kap_seccomp *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return kap_error(err, ENOMEM, SECCOMP_PATH);
	sc->ctx = seccomp_init(default_action);
	if (!sc->ctx) {
		kap_seccomp_free(sc);
		return kap_error_plain(err, EINVAL, SECCOMP_PATH ": libseccomp refused the filter");
	}

	/*
	 * No no_new_privs from libseccomp: process.noNewPrivileges decides it
	 * (config.md#process), and the runtime applies it itself. Without it, loading needs
	 * CAP_SYS_ADMIN, which the container init still holds when it loads the filter.
	 * SYSRAWRC makes seccomp_load report the kernel's errno instead of ECANCELED.
	 */
	if ((r = seccomp_attr_set(sc->ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0 ||
	    (r = seccomp_attr_set(sc->ctx, SCMP_FLTATR_API_SYSRAWRC, 1)) < 0) {
		kap_seccomp_free(sc);
		return kap_error(err, -r, SECCOMP_PATH ": set filter attributes");
	}

	size_t n_names = 0;
	if ((r = add_architectures(sc, seccomp, err)) < 0 ||
	    (r = set_flags(sc, seccomp, err)) < 0 ||
	    (r = read_listener(sc, seccomp, syscalls, err)) < 0)
		goto fail;
	for (size_t i = 0; i < kap_json_array_len(syscalls); i++) {
		r = add_syscall_entry(sc, kap_json_array_at(syscalls, i), i, default_action,
				      &n_names, err);
		if (r < 0)
			goto fail;
	}
	if (n_names > SECCOMP_OPTIMIZE_MIN_SYSCALLS) {
		r = seccomp_attr_set(sc->ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
		if (r < 0)
			kap_debug("seccomp: binary tree optimization unavailable: %s",
				  strerror(-r));
	}
	kap_debug("seccomp: filter with %zu syscall rules prepared", n_names);
	*out = sc;
	return 0;

fail:
	kap_seccomp_free(sc);
	return r;
}

bool kap_seccomp_has_notify(const struct kap_seccomp *sc)
{
	return sc && sc->has_notify;
}

const char *kap_seccomp_listener_path(const struct kap_seccomp *sc)
{
	return sc ? sc->listener_path : NULL;
}

const char *kap_seccomp_listener_metadata(const struct kap_seccomp *sc)
{
	return sc ? sc->listener_metadata : NULL;
}

int kap_seccomp_load(struct kap_seccomp *sc, int *notify_fd, struct kapsel_error **err)
{
	*notify_fd = -1;
	int r = seccomp_load(sc->ctx);
	if (r < 0)
		return kap_error(err, -r, "load seccomp filter");
	if (sc->has_notify) {
		/* libseccomp keeps the listener fd the kernel returned from
		 * SECCOMP_FILTER_FLAG_NEW_LISTENER; it is ours to close. */
		int fd = seccomp_notify_fd(sc->ctx);
		if (fd < 0)
			return kap_error_plain(
			    err, EBADF, "seccomp notify fd: the kernel returned no listener");
		*notify_fd = fd;
	}
	return 0;
}

/* The OCI container process state (config-linux.md#containerprocessstate) around `state`. */
static int process_state_json(const struct kap_seccomp *sc, const char *state_json, char **out,
			      struct kapsel_error **err)
{
	cleanup_json struct kap_json *state = NULL;
	int r = kap_json_parse(state_json, strlen(state_json), "container state", &state, err);
	if (r < 0)
		return r;
	if (kap_json_type(state) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "container state: expected object");
	int64_t pid = 0;
	r = kap_json_read_int64(state, "state", "pid", &pid, err);
	if (r < 0)
		return r;
	if (r == 0 || pid <= 0)
		return kap_error_plain(err, EINVAL, "state.pid: required to send the seccomp fd");

	cleanup_json struct kap_json *doc = kap_json_new_object();
	struct kap_json *fds = kap_json_new_array();
	if (!doc || !fds) {
		kap_json_put(fds);
		return kap_error(err, ENOMEM, "container process state");
	}
	kap_json_set(doc, "ociVersion", kap_json_new_string(KAPSEL_OCI_VERSION));
	/* The fds[] names index the SCM_RIGHTS array; we send exactly one. */
	kap_json_append(fds, kap_json_new_string("seccompFd"));
	kap_json_set(doc, "fds", fds);
	kap_json_set(doc, "pid", kap_json_new_int64(pid));
	if (sc->listener_metadata)
		kap_json_set(doc, "metadata", kap_json_new_string(sc->listener_metadata));
	kap_json_set(doc, "state", kap_json_get_ref(state));
	*out = kap_json_dump(doc, false);
	if (!*out)
		return kap_error(err, ENOMEM, "container process state");
	return 0;
}

int kap_seccomp_send_notify_fd(const struct kap_seccomp *sc, int notify_fd, const char *state_json,
			       struct kapsel_error **err)
{
	if (!sc || !sc->listener_path)
		return kap_error_plain(err, EINVAL, SECCOMP_PATH ".listenerPath: not set");

	cleanup_free char *payload = NULL;
	int r = process_state_json(sc, state_json, &payload, err);
	if (r < 0)
		return r;

	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	/* Length checked in kap_seccomp_prepare. */
	memcpy(sa.sun_path, sc->listener_path, strlen(sc->listener_path) + 1);
	cleanup_close int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return kap_error(err, errno, "seccomp listener %s: socket", sc->listener_path);
	while (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EINTR)
			return kap_error(err, errno, "seccomp listener %s: connect",
					 sc->listener_path);
	}

	/* config-linux.md#containerprocessstate: the JSON as payload, the fd as SCM_RIGHTS, the
	 * fd in the first sendmsg only when the payload takes several. */
	size_t len = strlen(payload), off = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec iov = {.iov_base = payload, .iov_len = len};
	struct msghdr mh = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = u.buf,
	    .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &notify_fd, sizeof(int));
	while (off < len) {
		iov.iov_base = payload + off;
		iov.iov_len = len - off;
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kap_error(err, errno, "seccomp listener %s: send",
					 sc->listener_path);
		}
		off += (size_t)n;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	/* One state per connection; closing it tells the listener the state is complete. */
	return 0;
}

void kap_seccomp_free(struct kap_seccomp *sc)
{
	if (!sc)
		return;
	if (sc->ctx)
		seccomp_release(sc->ctx);
	free(sc->listener_path);
	free(sc->listener_metadata);
	free(sc);
}
