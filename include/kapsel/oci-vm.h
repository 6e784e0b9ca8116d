/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime's VM handler: a bundle whose config.json has the annotation
 * run.oci.handler=vm (crun's run.oci.handler=krun, as a Kata-style runtime) runs in a micro-VM
 * under the same runc commands (docs/vm.md, "The OCI runtime's VM handler"). create boots the
 * VM and leaves the process waiting; start, state, kill, pause, ps and delete need nothing
 * else; exec goes through the guest agent.
 */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

#include <kapsel/container.h>
#include <kapsel/error.h>

#define KAPSEL_OCI_HANDLER_ANNOTATION "run.oci.handler"
#define KAPSEL_OCI_HANDLER_VM	      "vm"

/*
 * Which handler the bundle's config.json asks for: 1 for run.oci.handler=vm, 0 when the
 * annotation is absent; -EINVAL with one line for another value, -errno when config.json
 * cannot be read (the caller's create reports that itself: 0 then, err unset).
 */
int kapsel_oci_vm_bundle(const char *bundle, struct kapsel_error **err);

/*
 * create for a VM bundle: the container's process is a monitor (its pid is the state's, and
 * the pid file's) that boots the VM, shares root.path over virtio-fs and holds the process
 * until start. store: where the initramfs is kept (NULL: the default image store).
 */
int kapsel_oci_vm_create(const struct kapsel_create_options *o, const char *store,
			 struct kapsel_error **err);
/* runc run for a VM bundle: create + start, then (without detach) wait and delete. */
int kapsel_oci_vm_run(const struct kapsel_create_options *o, const char *store,
		      struct kapsel_error **err);

/*
 * exec when o->id is a VM container of the runtime: 1 with *status set (the process's, or 0
 * with detach), 0 when it is no VM container, -errno with err set.
 */
int kapsel_oci_vm_exec(const struct kapsel_exec_options *o, int *status, struct kapsel_error **err);
