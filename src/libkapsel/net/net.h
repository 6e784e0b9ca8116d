/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container side of networking, for the composer (image/run.c): a network namespace made
 * before the container (as podman hands netavark one), an address leased from the network's
 * IPAM, a veth pair between the namespace and the network's bridge, and published ports.
 */
#pragma once
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <kapsel/error.h>

struct kap_net_port {
	char proto[4];		/* "tcp" or "udp" */
	struct in_addr host_ip; /* INADDR_ANY: every host address */
	uint16_t host_port, ctr_port;
};
/* [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp] */
int kap_net_parse_port(const char *spec, struct kap_net_port *out, struct kapsel_error **err);
/* An exposed port, PORT[/tcp|/udp] (--expose, the image's ExposedPorts); what names it. */
int kap_net_parse_expose(const char *what, const char *spec, uint16_t *port, char proto[4],
			 struct kapsel_error **err);
/* xx:xx:xx:xx:xx:xx, unicast */
int kap_net_parse_mac(const char *s, uint8_t mac[6], struct kapsel_error **err);

/* What --net asks for. */
enum kap_net_mode {
	KAP_NET_NONE,	   /* NULL or "none": a namespace with lo only */
	KAP_NET_HOST,	   /* "host" */
	KAP_NET_NETWORK,   /* a network's name: a veth on its bridge (root) */
	KAP_NET_CONTAINER, /* "container:NAME": a running container's namespace */
	KAP_NET_NS,	   /* "ns:PATH": the namespace bound at PATH */
	KAP_NET_PASTA,	   /* "pasta": a user-mode stack (net/pasta.c) */
};
/* rootless -p/-P (publishes) without --net means pasta, as podman's rootless default. */
enum kap_net_mode kap_net_mode_of(const char *net, bool rootless, bool publishes);
/* ns:PATH: PATH must be absolute and a network namespace (nsfs, NS_GET_NSTYPE). */
int kap_net_ns_check(const char *path, struct kapsel_error **err);

/* The store's default when store is NULL (networks are root-only). */
const char *kap_net_store(const char *store);

struct kap_net_request {
	const char *store;
	const char *network;
	const char *container;
	const char *ip; /* NULL: the lowest free address */
	/* NULL: on a dual-stack network, the IPv6 address derived from the IPv4 one */
	const char *ip6;
	const char *mac; /* NULL: the kernel's random one */
	char *const *ports;
	char *const *aliases; /* more names for the responder */
	/* -P: the container ports (PORT[/tcp|/udp]) of both lists (the image's ExposedPorts,
	 * --expose) each published on a free host port of the ephemeral range, unless a -p of
	 * the request publishes it already. */
	bool publish_all;
	char *const *expose[2];
	int netns_fd;
	/* A VM (run --vm): no veth and no namespace (netns_fd unused); the caller puts the VM's
	 * tap on the result's bridge with the result's MAC, and its guest configures the
	 * address. */
	bool vm;
};
/* A VM container's record of its place on a network, in its directory (run/run-vm.h). */
#define KAP_NET_VM_FILE "vm.net"

/* Everything that needs no change: the network exists, the address is inside it, the ports
 * and MAC parse. Run before anything of the container is created. */
int kap_net_check(const struct kap_net_request *rq, struct kapsel_error **err);

struct kap_net_result {
	char ip[INET_ADDRSTRLEN];
	char gateway[INET_ADDRSTRLEN];
	char ip6[INET6_ADDRSTRLEN];	 /* "" on an IPv4-only network */
	char gateway6[INET6_ADDRSTRLEN]; /* likewise */
	bool internal;
	bool dns; /* a name responder answers on the gateway (user-defined networks) */
	/* rq->vm: the bridge, the prefix lengths and the MAC (--mac-address, else a random
	 * locally administered one) for the VM's tap. */
	char bridge[16];
	int prefix, prefix6;
	char mac[18];
	/* Every port published, as -p specs ("0.0.0.0:40123:80/tcp"): what a restart asks for
	 * again. Caller frees (kap_net_result_clear). */
	char **ports;
};
void kap_net_result_clear(struct kap_net_result *res);
#define cleanup_net_result __attribute__((cleanup(kap_net_result_clear)))
/*
 * Lease an address, record it (before anything else exists, so a kill at any later step
 * leaves a record kap_net_detach undoes), then make the bridge, the veth pair and the rules.
 */
int kap_net_attach(const struct kap_net_request *rq, struct kap_net_result *res,
		   struct kapsel_error **err);
/* Undo everything of the container on every network; what is already gone is fine.
 * ns_gone: its network namespace is released (no process, no mount), and the kernel removes
 * the veth pair with it. */
/* The containers holding a lease on any network (NULL-terminated, each once). */
int kap_net_holders(const char *store, char ***out, struct kapsel_error **err);
int kap_net_detach(const char *store, const char *container, bool ns_gone,
		   struct kapsel_error **err);

/* A new network namespace bound at path (a new empty file), lo up inside. */
int kap_net_netns_create(const char *path, struct kapsel_error **err);
/* The same from a child process, for a caller that could not return to its own network
 * namespace (rootless: ours belongs to a user namespace above the caller's). */
int kap_net_netns_create_apart(const char *path, struct kapsel_error **err);
/* Unmount and remove it; a missing one is fine. */
void kap_net_netns_remove(const char *path);

/*
 * What inspect shows of container's networks: *networks is an object, network name ->
 * {NetworkID, IPAddress, IPPrefixLen, Gateway, Aliases}; *ports is podman's "80/tcp" ->
 * [{HostIp, HostPort}]. Both empty when it holds no lease. Caller puts both.
 */
struct kap_json;
int kap_net_container_networks(const char *store, const char *container, struct kap_json **networks,
			       struct kap_json **ports, struct kapsel_error **err);
