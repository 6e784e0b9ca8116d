/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Name tables for the values config.json spells as strings: capabilities
 * (runtime-spec config.md#posix-process, "capabilities") and rlimits ("rlimits"). The numbers
 * come from the uAPI headers; the names are the ones the spec and runc use.
 */
#include <fcntl.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "oci/spec.h"

static const char *const cap_names[] = {
    [CAP_CHOWN] = "CAP_CHOWN",
    [CAP_DAC_OVERRIDE] = "CAP_DAC_OVERRIDE",
    [CAP_DAC_READ_SEARCH] = "CAP_DAC_READ_SEARCH",
    [CAP_FOWNER] = "CAP_FOWNER",
    [CAP_FSETID] = "CAP_FSETID",
    [CAP_KILL] = "CAP_KILL",
    [CAP_SETGID] = "CAP_SETGID",
    [CAP_SETUID] = "CAP_SETUID",
    [CAP_SETPCAP] = "CAP_SETPCAP",
    [CAP_LINUX_IMMUTABLE] = "CAP_LINUX_IMMUTABLE",
    [CAP_NET_BIND_SERVICE] = "CAP_NET_BIND_SERVICE",
    [CAP_NET_BROADCAST] = "CAP_NET_BROADCAST",
    [CAP_NET_ADMIN] = "CAP_NET_ADMIN",
    [CAP_NET_RAW] = "CAP_NET_RAW",
    [CAP_IPC_LOCK] = "CAP_IPC_LOCK",
    [CAP_IPC_OWNER] = "CAP_IPC_OWNER",
    [CAP_SYS_MODULE] = "CAP_SYS_MODULE",
    [CAP_SYS_RAWIO] = "CAP_SYS_RAWIO",
    [CAP_SYS_CHROOT] = "CAP_SYS_CHROOT",
    [CAP_SYS_PTRACE] = "CAP_SYS_PTRACE",
    [CAP_SYS_PACCT] = "CAP_SYS_PACCT",
    [CAP_SYS_ADMIN] = "CAP_SYS_ADMIN",
    [CAP_SYS_BOOT] = "CAP_SYS_BOOT",
    [CAP_SYS_NICE] = "CAP_SYS_NICE",
    [CAP_SYS_RESOURCE] = "CAP_SYS_RESOURCE",
    [CAP_SYS_TIME] = "CAP_SYS_TIME",
    [CAP_SYS_TTY_CONFIG] = "CAP_SYS_TTY_CONFIG",
    [CAP_MKNOD] = "CAP_MKNOD",
    [CAP_LEASE] = "CAP_LEASE",
    [CAP_AUDIT_WRITE] = "CAP_AUDIT_WRITE",
    [CAP_AUDIT_CONTROL] = "CAP_AUDIT_CONTROL",
    [CAP_SETFCAP] = "CAP_SETFCAP",
    [CAP_MAC_OVERRIDE] = "CAP_MAC_OVERRIDE",
    [CAP_MAC_ADMIN] = "CAP_MAC_ADMIN",
    [CAP_SYSLOG] = "CAP_SYSLOG",
    [CAP_WAKE_ALARM] = "CAP_WAKE_ALARM",
    [CAP_BLOCK_SUSPEND] = "CAP_BLOCK_SUSPEND",
    [CAP_AUDIT_READ] = "CAP_AUDIT_READ",
    [CAP_PERFMON] = "CAP_PERFMON",
    [CAP_BPF] = "CAP_BPF",
    [CAP_CHECKPOINT_RESTORE] = "CAP_CHECKPOINT_RESTORE",
};

/* Every number up to CAP_LAST_CAP has a name; a gap would make kap_cap_name() lie. */
_Static_assert(KAP_ARRAY_SIZE(cap_names) == CAP_LAST_CAP + 1, "capability table has a gap");

int kap_cap_from_name(const char *name)
{
	if (!name)
		return -1;
	/* Case-insensitive like runc's capability lookup; the CAP_ prefix is required. */
	for (size_t i = 0; i < KAP_ARRAY_SIZE(cap_names); i++)
		if (!strcasecmp(name, cap_names[i]))
			return (int)i;
	return -1;
}

const char *kap_cap_name(int cap)
{
	if (cap < 0 || (size_t)cap >= KAP_ARRAY_SIZE(cap_names))
		return NULL;
	return cap_names[cap];
}

int kap_cap_last(void)
{
	/*
	 * The running kernel may know fewer (or more) capabilities than our headers; capset and
	 * PR_CAPBSET_DROP fail with EINVAL above its last one. Racing first callers both read the
	 * same file, so a relaxed atomic cache is enough.
	 */
	static int cached = -1;
	int last = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (last >= 0)
		return last;
	last = CAP_LAST_CAP;
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", 64, &buf, NULL, NULL) ==
	    0) {
		char *end = NULL;
		long v = strtol(buf, &end, 10);
		if (end != buf && (*end == '\n' || *end == '\0') && v >= 0 && v < 64)
			last = (int)v;
	}
	__atomic_store_n(&cached, last, __ATOMIC_RELAXED);
	return last;
}

static const struct {
	const char *name;
	int resource;
} rlimits[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

int kap_rlimit_from_name(const char *name)
{
	if (!name)
		return -1;
	/* runtime-spec config.md#posix-process: "type" is the RLIMIT_* name, exactly. */
	for (size_t i = 0; i < KAP_ARRAY_SIZE(rlimits); i++)
		if (!strcmp(name, rlimits[i].name))
			return rlimits[i].resource;
	return -1;
}
