/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The features document (runtime-spec features.md, features-linux.md): what this runtime
 * understands, so that a high-level runtime can decide before it writes config.json. Lists say
 * what kapsel implements, not what the host kernel happens to offer, except for the seccomp
 * architectures and flags, which depend on the libseccomp kapsel is linked with.
 */
#include <ctype.h>
#include <errno.h>
#include <linux/capability.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/container.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "oci/spec.h"

#define API __attribute__((visibility("default")))

static const char *const hooks[] = {
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
};

static const char *const mount_options[] = {
    "ro",	"rw",	      "nosuid",	     "suid",	      "nodev",	     "dev",
    "noexec",	"exec",	      "sync",	     "async",	      "dirsync",     "remount",
    "mand",	"nomand",     "atime",	     "noatime",	      "diratime",    "nodiratime",
    "relatime", "norelatime", "strictatime", "nostrictatime", "nosymfollow", "symfollow",
    "bind",	"rbind",      "private",     "rprivate",      "slave",	     "rslave",
    "shared",	"rshared",    "unbindable",  "runbindable",   "tmpcopyup",
};

static const char *const namespaces[] = {
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
};

static const char *const seccomp_actions[] = {
    "SCMP_ACT_ALLOW",	     "SCMP_ACT_ERRNO",	     "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",	     "SCMP_ACT_TRACE",	     "SCMP_ACT_TRAP",
};

static const char *const seccomp_operators[] = {
    "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT",	"SCMP_CMP_LE",
    "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ",
};

/* Spec names; each is offered only when libseccomp resolves its lower-case suffix. */
static const char *const seccomp_archs[] = {
    "SCMP_ARCH_AARCH64",   "SCMP_ARCH_ARM",    "SCMP_ARCH_MIPS",     "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",	   "SCMP_ARCH_PPC64",  "SCMP_ARCH_PPC64LE",  "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",	   "SCMP_ARCH_S390X",  "SCMP_ARCH_X32",	     "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
};

/*
 * Filter flags (what container/seccomp.c sets) with the libseccomp API level that can set them
 * (seccomp_api_get(3)); 0: this libseccomp has no attribute for it (WAIT_KILLABLE_RECV needs
 * libseccomp 2.6).
 */
static const struct {
	const char *name;
	unsigned api_level;
} seccomp_flags[] = {
    {"SECCOMP_FILTER_FLAG_TSYNC", 2}, /* needs the seccomp(2) syscall */
    {"SECCOMP_FILTER_FLAG_LOG", 3},
    {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4},
#if SCMP_VER_MAJOR > 2 || (SCMP_VER_MAJOR == 2 && SCMP_VER_MINOR >= 6)
    {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 7},
#else
    {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 0},
#endif
};

/*
 * Building never fails half-way silently: add() records an allocation failure, and drops values
 * whose parent could not be allocated, so the caller checks once at the end.
 */
static struct kap_json *add(bool *oom, struct kap_json *parent, const char *key,
			    struct kap_json *val)
{
	if (!val) {
		*oom = true;
		return NULL;
	}
	if (!parent) {
		kap_json_put(val);
		return NULL;
	}
	if (key)
		kap_json_set(parent, key, val);
	else
		kap_json_append(parent, val);
	return val;
}

static void add_strv(bool *oom, struct kap_json *parent, const char *key, const char *const *names,
		     size_t n)
{
	struct kap_json *arr = add(oom, parent, key, kap_json_new_array());
	for (size_t i = 0; i < n; i++)
		add(oom, arr, NULL, kap_json_new_string(names[i]));
}

/* {"enabled": v} */
static void add_enabled(bool *oom, struct kap_json *parent, const char *key, bool v)
{
	struct kap_json *o = add(oom, parent, key, kap_json_new_object());
	add(oom, o, "enabled", kap_json_new_bool(v));
}

static bool arch_known(const char *spec_name)
{
	char lower[32];
	const char *suffix = spec_name + sizeof("SCMP_ARCH_") - 1;
	size_t i;
	for (i = 0; suffix[i] && i < sizeof(lower) - 1; i++)
		lower[i] = (char)tolower((unsigned char)suffix[i]);
	lower[i] = '\0';
	return seccomp_arch_resolve_name(lower) != 0;
}

static void add_seccomp(bool *oom, struct kap_json *lnx)
{
	struct kap_json *sc = add(oom, lnx, "seccomp", kap_json_new_object());
	add(oom, sc, "enabled", kap_json_new_bool(true));
	add_strv(oom, sc, "actions", seccomp_actions, KAP_ARRAY_SIZE(seccomp_actions));
	add_strv(oom, sc, "operators", seccomp_operators, KAP_ARRAY_SIZE(seccomp_operators));

	struct kap_json *archs = add(oom, sc, "archs", kap_json_new_array());
	for (size_t i = 0; i < KAP_ARRAY_SIZE(seccomp_archs); i++)
		if (arch_known(seccomp_archs[i]))
			add(oom, archs, NULL, kap_json_new_string(seccomp_archs[i]));

	unsigned api = seccomp_api_get();
	struct kap_json *known = add(oom, sc, "knownFlags", kap_json_new_array());
	struct kap_json *supported = add(oom, sc, "supportedFlags", kap_json_new_array());
	for (size_t i = 0; i < KAP_ARRAY_SIZE(seccomp_flags); i++) {
		add(oom, known, NULL, kap_json_new_string(seccomp_flags[i].name));
		if (seccomp_flags[i].api_level && api >= seccomp_flags[i].api_level)
			add(oom, supported, NULL, kap_json_new_string(seccomp_flags[i].name));
	}
}

static void add_linux(bool *oom, struct kap_json *doc)
{
	struct kap_json *lnx = add(oom, doc, "linux", kap_json_new_object());
	add_strv(oom, lnx, "namespaces", namespaces, KAP_ARRAY_SIZE(namespaces));

	struct kap_json *caps = add(oom, lnx, "capabilities", kap_json_new_array());
	for (int c = 0; c <= CAP_LAST_CAP; c++) {
		const char *name = kap_cap_name(c);
		if (name)
			add(oom, caps, NULL, kap_json_new_string(name));
	}

	/* cgroupfs only: kapsel offers no systemd cgroup driver (see main.c --systemd-cgroup). */
	struct kap_json *cg = add(oom, lnx, "cgroup", kap_json_new_object());
	add(oom, cg, "v1", kap_json_new_bool(true));
	add(oom, cg, "v2", kap_json_new_bool(true));
	add(oom, cg, "systemd", kap_json_new_bool(false));
	add(oom, cg, "systemdUser", kap_json_new_bool(false));
	add(oom, cg, "rdma", kap_json_new_bool(false));

	add_seccomp(oom, lnx);
	add_enabled(oom, lnx, "apparmor", false);
	add_enabled(oom, lnx, "selinux", false);
	add_enabled(oom, lnx, "intelRdt", false);
	struct kap_json *ext = add(oom, lnx, "mountExtensions", kap_json_new_object());
	add_enabled(oom, ext, "idmap", false);
}

API int kapsel_features(char **json, struct kapsel_error **err)
{
	bool oom = false;
	cleanup_json struct kap_json *doc = kap_json_new_object();
	if (!doc)
		return kap_error(err, ENOMEM, "features");
	add(&oom, doc, "ociVersionMin", kap_json_new_string("1.0.0"));
	add(&oom, doc, "ociVersionMax", kap_json_new_string(KAPSEL_OCI_VERSION));
	add_strv(&oom, doc, "hooks", hooks, KAP_ARRAY_SIZE(hooks));
	add_strv(&oom, doc, "mountOptions", mount_options, KAP_ARRAY_SIZE(mount_options));
	add_linux(&oom, doc);
	struct kap_json *ann = add(&oom, doc, "annotations", kap_json_new_object());
	add(&oom, ann, "io.github.kapsel.version", kap_json_new_string(KAPSEL_VERSION));
	if (oom)
		return kap_error(err, ENOMEM, "features");

	char *s = kap_json_dump(doc, true);
	if (!s)
		return kap_error(err, ENOMEM, "features");
	*json = s;
	return 0;
}
