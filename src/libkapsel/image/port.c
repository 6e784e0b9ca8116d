/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel port NAME [PORT[/PROTO]]`: a container's published ports as podman prints them
 * ("80/tcp -> 0.0.0.0:40123"), from what run recorded in container.json: the -p specs with
 * the host ports -P picked, so root (a network's lease) and rootless (pasta) read alike.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "image/ctr-ref.h"
#include "net/net.h"

#define API __attribute__((visibility("default")))

API int kapsel_image_port(const char *store, const char *name, const char *filter, char ***lines,
			  struct kapsel_error **err)
{
	*lines = NULL;
	uint16_t want = 0;
	char want_proto[4] = "";
	int r;
	if (filter && (r = kap_net_parse_expose("port", filter, &want, want_proto, err)) < 0)
		return r;
	struct kap_ctr_ref c;
	if ((r = kap_ctr_ref_open(store, name, &c, err)) < 0)
		return r;
	size_t n = 0;
	while (c.ports && c.ports[n])
		n++;
	cleanup_strv char **v = calloc(n + 1, sizeof(char *));
	if (!v) {
		kap_ctr_ref_clear(&c);
		return kap_error(err, ENOMEM, "container %s", name);
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct kap_net_port p;
		char ip[INET_ADDRSTRLEN];
		/* Recorded by run itself: one that does not parse is not ours to show. */
		if (kap_net_parse_port(c.ports[i], &p, NULL) < 0)
			continue;
		if (want && (p.ctr_port != want || strcmp(p.proto, want_proto)))
			continue;
		inet_ntop(AF_INET, &p.host_ip, ip, sizeof(ip));
		/* podman: with a port asked for, the host side alone. */
		r = want ? asprintf(&v[k], "%s:%u", ip, p.host_port)
			 : asprintf(&v[k], "%u/%s -> %s:%u", p.ctr_port, p.proto, ip, p.host_port);
		if (r < 0) {
			v[k] = NULL;
			kap_ctr_ref_clear(&c);
			return kap_error(err, ENOMEM, "container %s", name);
		}
		k++;
	}
	kap_ctr_ref_clear(&c);
	if (want && !k)
		return kap_error_plain(err, ENOENT, "container %s: no published port %s", name,
				       filter);
	*lines = steal_ptr(v);
	return 0;
}
