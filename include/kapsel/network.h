/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Networks as objects (`kapsel network ...`), as podman has them: a bridge, an IPv4 subnet and
 * its gateway, kept as JSON under <store>/networks/. The default network "kapsel" (bridge
 * kapsel0) exists without setup. Root only: a rootless user cannot make bridges. Every call
 * returns >= 0 on success and a negative errno with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <kapsel/error.h>

struct kapsel_network_create_options {
	const char *name;
	const char *subnet;  /* CIDR; NULL: the next free 10.89.N.0/24 */
	const char *gateway; /* NULL: the subnet's first address */
	bool internal;	     /* no outbound NAT, no route out */
	/* Dual stack: an IPv6 subnet too (subnet6, a CIDR of at least as many addresses as the
	 * IPv4 one; NULL: a free fdXX:XXXX:XXXX:N::/64 of kapsel's ULA prefix). subnet6 given
	 * implies ipv6. */
	bool ipv6;
	const char *subnet6;
};
int kapsel_network_create(const char *store, const struct kapsel_network_create_options *o,
			  struct kapsel_error **err);

struct kapsel_network_info {
	char *name, *bridge, *subnet, *gateway;
	char *subnet6, *gateway6; /* NULL: IPv4 only */
	bool internal;
	char **containers; /* NULL-terminated: the containers holding an address on it */
};
/* Every network, sorted by name (the default one included). */
int kapsel_network_list(const char *store, struct kapsel_network_info **out, size_t *n,
			struct kapsel_error **err);
void kapsel_network_infos_free(struct kapsel_network_info *v, size_t n);
/* One network as a JSON object (podman's fields: name, driver, network_interface, subnets,
 * internal, containers). Caller frees. */
int kapsel_network_inspect(const char *store, const char *name, char **json,
			   struct kapsel_error **err);
/* What `network connect` may ask for on the new interface (podman's flags); all optional. */
struct kapsel_network_connect_options {
	const char *ip;	      /* NULL: the lowest free address */
	const char *ip6;      /* NULL: on a dual-stack network, derived from the IPv4 one */
	const char *mac;      /* NULL: the kernel's random one */
	char *const *aliases; /* NULL-terminated; more names for the network's responder */
};
/* Give a running container (one run with --net NETWORK) an interface on another network
 * (eth1, eth2, ...), or take it away. o may be NULL. */
int kapsel_network_connect(const char *store, const char *network, const char *container,
			   const struct kapsel_network_connect_options *o,
			   struct kapsel_error **err);
int kapsel_network_disconnect(const char *store, const char *network, const char *container,
			      struct kapsel_error **err);
/* Remove a network that no container uses (its bridge and NAT rules too). */
int kapsel_network_rm(const char *store, const char *name, struct kapsel_error **err);
