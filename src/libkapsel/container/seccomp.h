/* SPDX-License-Identifier: Apache-2.0 */
/*
 * linux.seccomp (runtime-spec config-linux.md#seccomp) through libseccomp. The filter is built in
 * the runtime before the container process is cloned (so a bad profile fails `create` cleanly)
 * and loaded by the container process as the last step before execve.
 */
#pragma once
#include <stdbool.h>

#include <kapsel/error.h>

struct kap_json;
struct kap_seccomp;

/* Build the filter from the linux.seccomp object. *out is NULL when seccomp is NULL. */
int kap_seccomp_prepare(const struct kap_json *seccomp, struct kap_seccomp **out,
			struct kapsel_error **err);
/* True when defaultAction or a rule uses SCMP_ACT_NOTIFY. */
bool kap_seccomp_has_notify(const struct kap_seccomp *sc);
/* listenerPath / listenerMetadata, or NULL. */
const char *kap_seccomp_listener_path(const struct kap_seccomp *sc);
const char *kap_seccomp_listener_metadata(const struct kap_seccomp *sc);
/*
 * Load into the calling process (in the container, just before execve). With notify actions,
 * *notify_fd receives the listener fd (else -1). Returns -errno without allocating when possible.
 */
int kap_seccomp_load(struct kap_seccomp *sc, int *notify_fd, struct kapsel_error **err);
/*
 * Hand the notify fd to the listener as runc does: connect to listenerPath (SOCK_STREAM),
 * send the container state JSON (with "fds":["seccompFd"], "metadata") and the fd (SCM_RIGHTS).
 */
int kap_seccomp_send_notify_fd(const struct kap_seccomp *sc, int notify_fd, const char *state_json,
			       struct kapsel_error **err);
void kap_seccomp_free(struct kap_seccomp *sc);
