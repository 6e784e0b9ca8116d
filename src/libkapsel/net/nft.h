/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel's nftables table (`ip kapsel`), through libnftables. Nothing outside that table is
 * ever read or changed, so the host's own rules stay as they are. The rules are fixed and made
 * once; what varies per network and per container are set and map elements, which are added
 * and deleted by key and need no rule handles:
 *   set masq        subnets whose outbound traffic is masqueraded (non-internal networks)
 *   set internal    subnets that may not leave (--internal)
 *   map ports       proto . host port -> container address . port (any host address)
 *   map hostports   host address . proto . host port -> container address . port
 */
#pragma once
#include <stdbool.h>

#include <kapsel/error.h>

/* Create the table and its rules when missing. */
int kap_nft_ensure(struct kapsel_error **err);
/* The same for `ip6 kapsel` (dual-stack networks): sets masq and internal, map ports. */
int kap_nft6_ensure(struct kapsel_error **err);
bool kap_nft6_present(void);
/* Run a batch of nft commands ("add element ip kapsel ...; ..."). */
int kap_nft_run(const char *cmds, struct kapsel_error **err);
/* Whether the table exists (kap_nft_ensure ran in this network namespace). */
bool kap_nft_present(void);
