/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seccomp profile `kapsel run` gives containers whose image and options ask for none: the
 * same effect as moby's and podman's default (profiles/seccomp/default.json), as an OCI
 * linux.seccomp object that kap_seccomp_prepare() compiles like any user profile.
 */
#pragma once
#include <stdint.h>

struct kap_json;

/*
 * caps: the container's capabilities, bit n set for capability n (CAP_SYS_ADMIN = bit 21, as in
 * linux/capability.h). Syscalls that only make sense with a capability (mount with
 * CAP_SYS_ADMIN, reboot with CAP_SYS_BOOT, ...) are allowed only when it is granted, as moby's
 * "includes.caps" does. Returns a new object (free with kap_json_put), NULL on ENOMEM.
 */
struct kap_json *kap_seccomp_default_profile(uint64_t caps);
