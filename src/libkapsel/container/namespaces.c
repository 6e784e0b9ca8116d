/* SPDX-License-Identifier: Apache-2.0 */
/*
 * linux.namespaces (runtime-spec config-linux.md#namespaces): validation of namespace paths in
 * the runtime, and the intermediate process that joins existing namespaces before creating the
 * new ones. Joining a pid or time namespace only affects children, hence the intermediate.
 */
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/proc.h"
#include "core/syscalls.h"

int kap_ns_validate(const struct kap_spec *spec, struct kapsel_error **err)
{
	for (int t = 0; t < KAP_NS_COUNT; t++) {
		const struct kap_namespace *ns = &spec->namespaces[t];
		if (!ns->enabled || !ns->path)
			continue;
		cleanup_close int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return kap_error(err, errno, "linux.namespaces %s: path %s",
					 kap_ns_name((enum kap_ns_type)t), ns->path);
		struct statfs sf;
		int type = ioctl(fd, NS_GET_NSTYPE);
		if (fstatfs(fd, &sf) < 0 || sf.f_type != NSFS_MAGIC || type < 0)
			return kap_error_plain(err, EINVAL,
					       "linux.namespaces %s: path %s is not a namespace",
					       kap_ns_name((enum kap_ns_type)t), ns->path);
		if (type != kap_ns_clone_flag((enum kap_ns_type)t))
			return kap_error_plain(
			    err, EINVAL,
			    "linux.namespaces %s: path %s is a different kind of "
			    "namespace",
			    kap_ns_name((enum kap_ns_type)t), ns->path);
	}
	return 0;
}

static int join(const struct kap_spec *spec, enum kap_ns_type t, struct kapsel_error **err)
{
	const struct kap_namespace *ns = &spec->namespaces[t];
	if (!ns->enabled || !ns->path)
		return 0;
	cleanup_close int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "linux.namespaces %s: open %s", kap_ns_name(t),
				 ns->path);
	if (setns(fd, kap_ns_clone_flag(t)) < 0)
		return kap_error(err, errno, "linux.namespaces %s: join %s", kap_ns_name(t),
				 ns->path);
	return 0;
}

static int write_time_offsets(const struct kap_spec *spec, struct kapsel_error **err)
{
	char buf[128];
	int n = 0;
	if (spec->time_monotonic.has)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "monotonic %lld %u\n",
			      (long long)spec->time_monotonic.secs, spec->time_monotonic.nanosecs);
	if (spec->time_boottime.has)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "boottime %lld %u\n",
			      (long long)spec->time_boottime.secs, spec->time_boottime.nanosecs);
	if (n == 0)
		return 0;
	/* One write per clock: the kernel parses a single line per write. */
	for (char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1)
		if (kap_fs_write_at(AT_FDCWD, "/proc/self/timens_offsets", line,
				    (size_t)(nl - line + 1), err) < 0)
			return kap_error_wrap(err, "linux.timeOffsets");
	return 0;
}

_Noreturn void kap_ns_stage1(struct kap_init_ctx *ctx)
{
	struct kapsel_error *err = NULL;
	const struct kap_spec *spec = ctx->spec;
	struct kap_sync_msg m;
	if (kap_sync_expect(ctx->sync_fd, KAP_SYNC_GO, &m, NULL, &err) < 0)
		_exit(127);
	/* The user namespace first: it owns whatever is created or joined after it. */
	if (join(spec, KAP_NS_USER, &err) < 0)
		goto fail;
	if (ctx->new_ns[KAP_NS_USER]) {
		if (unshare(CLONE_NEWUSER) < 0) {
			kap_error(&err, errno, "unshare user namespace");
			goto fail;
		}
		kap_sync_send(ctx->sync_fd, KAP_SYNC_USERMAP, 0, NULL, -1);
		if (kap_sync_expect(ctx->sync_fd, KAP_SYNC_GO, &m, NULL, &err) < 0)
			_exit(127);
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
			kap_error(&err, errno, "become root in the user namespace");
			goto fail;
		}
	}
	static const enum kap_ns_type order[] = {KAP_NS_IPC,  KAP_NS_UTS,    KAP_NS_NET, KAP_NS_PID,
						 KAP_NS_TIME, KAP_NS_CGROUP, KAP_NS_MNT};
	int flags = 0;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(order); i++) {
		if (join(spec, order[i], &err) < 0)
			goto fail;
		if (ctx->new_ns[order[i]] && order[i] != KAP_NS_CGROUP)
			flags |= kap_ns_clone_flag(order[i]);
	}
	if (flags && unshare(flags) < 0) {
		kap_error(&err, errno, "unshare namespaces");
		goto fail;
	}
	if (ctx->new_ns[KAP_NS_TIME] && write_time_offsets(spec, &err) < 0)
		goto fail;
	pid_t pid = kap_sync_fork_announced(ctx->sync_fd);
	if (pid < 0) {
		kap_error(&err, -pid, "fork container init");
		goto fail;
	}
	if (pid == 0) {
		/* The init: it keeps the sync socket and goes on like a directly cloned one. */
		kap_init_main(ctx);
	}
	_exit(0);
fail:
	kap_sync_send_error(ctx->sync_fd, err);
	_exit(127);
}
