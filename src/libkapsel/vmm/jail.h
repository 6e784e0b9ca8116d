/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VMM's jail (`vm run --jail`, docs/vm.md, Jailer): after every host resource is open, the
 * VMM process leaves the host's mount, pid, net, ipc, uts, cgroup and user namespaces, its root
 * becomes an empty read-only tmpfs, it runs as an unprivileged uid without capabilities in a
 * cgroup of its own, and each thread runs under a seccomp filter of the syscalls its kind makes.
 */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

#include <kapsel/error.h>
#include <kapsel/vm.h>

struct kap_vm;
struct kap_jail;

/* The thread kinds, each with its own seccomp filter (jail.c has the tables). */
enum kap_jail_kind {
	KAP_JAIL_VCPU,
	KAP_JAIL_LOOP, /* the event loop: kapsel_vm_run's own thread, teardown included */
	KAP_JAIL_DEVICE,
	KAP_JAIL_API,
	KAP_JAIL_FS,	  /* a virtio-fs device thread: the shared directory's syscalls */
	KAP_JAIL_MIGRATE, /* a live migration's sending thread (started by the API thread) */
	KAP_JAIL_KINDS,
};

/*
 * Starts the jailed VMM process: a child in a new pid namespace and a cgroup of its own. In the
 * child returns 0 with *child set: the caller builds the VM there and ends with
 * kap_jail_child_exit. In the caller (*child NULL) returns what the child's VM returned (its
 * exit status, or -errno with *err), once the child is gone and its cgroup removed.
 */
int kap_jail_spawn(const struct kapsel_vm_config *c, struct kap_jail **child,
		   struct kapsel_error **err);
/*
 * In the child, once every host resource is open and before any thread starts: namespaces,
 * root, ids, capabilities and the seccomp filters' programs.
 */
int kap_jail_enter(struct kap_jail *j, struct kap_vm *vm, struct kapsel_error **err);
/*
 * Installs the calling thread's seccomp filter (index: the vCPU's id, else 0). A no-op without
 * a jail. A thread that cannot be filtered must not run: the process ends.
 */
void kap_jail_thread(enum kap_jail_kind kind, unsigned int index);
/* Hands the VM's result (r, err) to the caller of kap_jail_spawn and ends the child. */
__attribute__((noreturn)) void kap_jail_child_exit(struct kap_jail *j, int r,
						   const struct kapsel_error *err);
/* The VMM's pid as the host sees it (getpid() inside the jail's pid namespace is 1). */
pid_t kap_jail_host_pid(void);
