/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rootless networking: passt's pasta (Debian `passt`) gives a network namespace a tap
 * interface backed by ordinary sockets of the user, and forwards published ports from the
 * host into it, as rootless podman does; no privilege beyond the user's own is used.
 */
#pragma once
#include <kapsel/error.h>

/*
 * Start pasta for the namespace bound at netns_path (owned by our user namespace), with
 * ports (-p specs, [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]) forwarded into it. It daemonizes
 * once the namespace is configured; its pid goes to dir/pasta.pid (dirfd: dir, open). It ends by
 * itself when the namespace's file is removed (pasta(1): --no-netns-quit, which we do not pass), or
 * by kap_pasta_stop.
 */
int kap_pasta_start(const char *netns_path, char *const *ports, const char *dir, int dirfd,
		    struct kapsel_error **err);
/* Stop the pasta whose pid dirfd/pasta.pid names, if it is still one. */
void kap_pasta_stop(int dirfd);
