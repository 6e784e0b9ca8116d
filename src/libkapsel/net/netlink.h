/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtnetlink through libmnl: the handful of link, address and route requests that container
 * networking needs (what netavark does with its netlink crate). Every request is acked
 * (NLM_F_ACK) and its error reported naming the link. A socket belongs to the network
 * namespace it was opened in (netlink(7)), so a request for a container's namespace opens its
 * socket there (kap_nl_open with the namespace's fd) and needs no thread of its own.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include <netinet/in.h>

#include <kapsel/error.h>

struct kap_nl;

/* netns_fd < 0: the caller's network namespace. */
int kap_nl_open(int netns_fd, struct kap_nl **out, struct kapsel_error **err);
void kap_nl_close(struct kap_nl *nl);
static inline void kap_nl_closep(struct kap_nl **nl)
{
	if (*nl)
		kap_nl_close(*nl);
}
#define cleanup_nl __attribute__((cleanup(kap_nl_closep)))

/* The interface's index, or -ENODEV (no error set). */
int kap_nl_ifindex(struct kap_nl *nl, const char *ifname);
/* Whether the link exists and is administratively up. */
bool kap_nl_link_is_up(struct kap_nl *nl, const char *ifname);
int kap_nl_link_set_up(struct kap_nl *nl, const char *ifname, struct kapsel_error **err);
/* A bridge; an existing one of that name is fine (returns 0). */
int kap_nl_bridge_create(struct kap_nl *nl, const char *name, struct kapsel_error **err);
/*
 * A veth pair: `host` here, `peer` created directly in the namespace peer_netns_fd (so the
 * peer never exists under its final name in ours, and two containers' "eth0" never clash),
 * with the MAC address mac (6 bytes) when non-NULL.
 */
int kap_nl_veth_create(struct kap_nl *nl, const char *host, const char *peer, int peer_netns_fd,
		       const uint8_t *mac, struct kapsel_error **err);
/* Move a link into the network namespace netns_fd, renamed to new_name when non-NULL. */
int kap_nl_link_set_netns(struct kap_nl *nl, const char *ifname, int netns_fd, const char *new_name,
			  struct kapsel_error **err);
int kap_nl_link_set_master(struct kap_nl *nl, const char *ifname, const char *master,
			   struct kapsel_error **err);
/* Delete a link; a missing one is fine (returns 0). */
int kap_nl_link_del(struct kap_nl *nl, const char *ifname, struct kapsel_error **err);
/* An IPv4 address; an existing identical one is fine. */
int kap_nl_addr_add(struct kap_nl *nl, const char *ifname, struct in_addr addr, int prefix,
		    struct kapsel_error **err);
int kap_nl_route_add_default(struct kap_nl *nl, struct in_addr gateway, struct kapsel_error **err);
/* Whether any IPv4 route of the main table overlaps net/prefix (an address to avoid). */
int kap_nl_route_overlaps(struct kap_nl *nl, struct in_addr net, int prefix, bool *overlaps,
			  struct kapsel_error **err);
/* IPv6 (without duplicate address detection), as the three above. */
int kap_nl_addr6_add(struct kap_nl *nl, const char *ifname, const struct in6_addr *addr, int prefix,
		     struct kapsel_error **err);
int kap_nl_route6_add_default(struct kap_nl *nl, const struct in6_addr *gateway,
			      struct kapsel_error **err);
int kap_nl_route6_overlaps(struct kap_nl *nl, const struct in6_addr *net, int prefix,
			   bool *overlaps, struct kapsel_error **err);
/* lo up in the caller's network namespace (a new one has it down: netdevice(7)). */
int kap_nl_loopback_up(struct kapsel_error **err);
