/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process credentials: rlimits, uid/gid/groups, the five capability sets and no_new_privs
 * (runtime-spec config.md#process, config.md#linux-process). Raw capset/prctl, as crun does.
 */
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container/container.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"

int kap_security_rlimits(const struct kap_process *p, struct kapsel_error **err)
{
	for (size_t i = 0; i < p->n_rlimits; i++) {
		struct rlimit rl = {.rlim_cur = p->rlimits[i].soft, .rlim_max = p->rlimits[i].hard};
		if (setrlimit(p->rlimits[i].resource, &rl) < 0)
			return kap_error(err, errno, "process.rlimits[%zu]: set to %llu/%llu", i,
					 (unsigned long long)rl.rlim_cur,
					 (unsigned long long)rl.rlim_max);
	}
	return 0;
}

static int capset_all(uint64_t eff, uint64_t perm, uint64_t inh, struct kapsel_error **err)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {
	    {.effective = (uint32_t)eff, .permitted = (uint32_t)perm, .inheritable = (uint32_t)inh},
	    {.effective = (uint32_t)(eff >> 32),
	     .permitted = (uint32_t)(perm >> 32),
	     .inheritable = (uint32_t)(inh >> 32)},
	};
	if (syscall(SYS_capset, &hdr, data) < 0)
		return kap_error(err, errno, "process.capabilities: capset");
	return 0;
}

int kap_security_user_caps(const struct kap_process *p, bool in_userns, struct kapsel_error **err)
{
	int last = kap_cap_last();
	const struct kap_caps *c = &p->caps;
	uint64_t bounding = p->has_caps ? c->bounding : 0;

	/* Keep permitted caps across the uid change below; the sets are then set exactly. */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return kap_error(err, errno, "prctl PR_SET_KEEPCAPS");
	for (int cap = 0; cap <= last; cap++) {
		if (bounding & (1ULL << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return kap_error(err, errno, "process.capabilities.bounding: drop %s",
					 kap_cap_name(cap));
	}
	/* setgroups(2) is denied in a user namespace whose setgroups file says "deny". */
	if (setgroups(p->user.n_additional_gids, p->user.additional_gids) < 0 &&
	    !(in_userns && errno == EPERM && p->user.n_additional_gids == 0))
		return kap_error(err, errno, "process.user.additionalGids: setgroups");
	if (setresgid(p->user.gid, p->user.gid, p->user.gid) < 0)
		return kap_error(err, errno, "process.user.gid: setresgid %u", p->user.gid);
	if (setresuid(p->user.uid, p->user.uid, p->user.uid) < 0)
		return kap_error(err, errno, "process.user.uid: setresuid %u", p->user.uid);
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		return kap_error(err, errno, "prctl PR_SET_KEEPCAPS");
	if (p->has_caps) {
		if (capset_all(c->effective, c->permitted, c->inheritable, err) < 0)
			return -1;
	} else if (capset_all(0, 0, 0, err) < 0) {
		return -1;
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return kap_error(err, errno, "prctl PR_CAP_AMBIENT_CLEAR_ALL");
	for (int cap = 0; p->has_caps && cap <= last; cap++) {
		if (!(c->ambient & (1ULL << cap)))
			continue;
		/* Ambient needs the cap in permitted and inheritable. `runc spec` lists ambient
		 * caps without inheritable ones; runc and crun skip what cannot be raised. */
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0) {
			if (errno != EPERM)
				return kap_error(err, errno,
						 "process.capabilities.ambient: raise %s",
						 kap_cap_name(cap));
			kap_debug("process.capabilities.ambient: %s not in the inheritable set, "
				  "skipped",
				  kap_cap_name(cap));
		}
	}
	if (p->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return kap_error(err, errno, "process.noNewPrivileges");
	return 0;
}

static bool host_has(const char *path)
{
	return access(path, F_OK) == 0;
}

/*
 * process.apparmorProfile / selinuxLabel: applied to the next execve through
 * /proc/self/attr/exec when the host runs that LSM, ignored with a debug line when it does not.
 */
int kap_security_lsm(const struct kap_process *p, struct kapsel_error **err)
{
	if (p->apparmor_profile && *p->apparmor_profile) {
		if (!host_has("/sys/kernel/security/apparmor")) {
			kap_debug("process.apparmorProfile %s ignored: AppArmor is not enabled",
				  p->apparmor_profile);
		} else {
			char buf[512];
			int n = snprintf(buf, sizeof(buf), "exec %s", p->apparmor_profile);
			const char *f = host_has("/proc/self/attr/apparmor/exec")
					    ? "/proc/self/attr/apparmor/exec"
					    : "/proc/self/attr/exec";
			if (kap_fs_write_at(AT_FDCWD, f, buf, (size_t)n, err) < 0)
				return kap_error_wrap(err, "process.apparmorProfile");
		}
	}
	if (p->selinux_label && *p->selinux_label) {
		if (!host_has("/sys/fs/selinux/enforce")) {
			kap_debug("process.selinuxLabel %s ignored: SELinux is not enabled",
				  p->selinux_label);
		} else if (kap_fs_write_at(AT_FDCWD, "/proc/self/attr/exec", p->selinux_label,
					   strlen(p->selinux_label), err) < 0) {
			return kap_error_wrap(err, "process.selinuxLabel");
		}
	}
	return 0;
}
