/* SPDX-License-Identifier: Apache-2.0 */
/* The guest's network interfaces (net.c), from the spec's net_* entries (protocol.h). */
#pragma once
#include <stddef.h>

struct agent_net {
	const char *mac;	    /* NULL: lo only (run --vm without a network) */
	const char *ip, *gateway;   /* "ADDR/PREFIX"; gateway NULL on an internal network */
	const char *ip6, *gateway6; /* NULL on an IPv4-only network */
};

/* lo up, and the card with n->mac configured; -1 with why filled on failure. */
int agent_net_setup(const struct agent_net *n, char *why, size_t whylen);
