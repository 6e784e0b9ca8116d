/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers the API server (api.c) and its client side (api-client.c) share. */
#pragma once
#include <stdbool.h>

/* Whether something accepts connections on the unix socket at path. */
bool kap_api_socket_alive(const char *path);
/* Whether VM name's directory under dirfd (<runtime>/vm) belongs to a running VMM. */
bool kap_vm_dir_alive(int dirfd, const char *name);
