/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel info`: the host and the store as podman info reports them (its JSON names): host
 * (arch, os, kernel, hostname, cpus, memTotal, cgroupVersion, cgroupManager, distribution,
 * security, kvm), store (graphRoot, runRoot, imageStore, containerStore) and version.
 */
#pragma once
#include <kapsel/error.h>

/* store, root: NULL for the defaults. *json is pretty JSON; caller frees. */
int kapsel_system_info(const char *store, const char *root, char **json, struct kapsel_error **err);
