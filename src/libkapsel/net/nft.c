/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libnftables, bound lazily (core/dl.h): it pulls libnftnl, libjansson, libgmp and libxtables
 * into the process, which `kapsel run --net none` and the runtime must not pay for.
 *
 * Locally generated connections to a published port (from 127.0.0.1 on the host itself) take
 * the output hook, not prerouting, so both chains DNAT; their source 127.0.0.1 may only leave
 * through the bridge with route_localnet set on it (ip-sysctl.rst), and is masqueraded to the
 * bridge's address so the container's reply finds its way back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nftables/libnftables.h>

#include "core/cleanup.h"
#include "core/dl.h"
#include "core/error.h"
#include "net/nft.h"

static struct {
	void *h;
	__typeof__(nft_ctx_new) *ctx_new;
	__typeof__(nft_ctx_free) *ctx_free;
	__typeof__(nft_ctx_buffer_output) *buffer_output;
	__typeof__(nft_ctx_buffer_error) *buffer_error;
	__typeof__(nft_ctx_get_error_buffer) *get_error_buffer;
	__typeof__(nft_run_cmd_from_buffer) *run;
} nft;

static const char table[] =
    "table ip kapsel {\n"
    " set masq { type ipv4_addr; flags interval; }\n"
    " set internal { type ipv4_addr; flags interval; }\n"
    " map ports { type inet_proto . inet_service : ipv4_addr . inet_service; }\n"
    " map hostports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }\n"
    " chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n"
    "  fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports\n"
    "  fib daddr type local dnat ip to meta l4proto . th dport map @ports\n"
    " }\n"
    /* dstnat is a prerouting-only name for -100 in nft 1.0.6. */
    " chain output { type nat hook output priority -100; policy accept;\n"
    "  fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports\n"
    "  fib daddr type local dnat ip to meta l4proto . th dport map @ports\n"
    " }\n"
    " chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
    "  ct status dnat ip saddr 127.0.0.0/8 masquerade\n"
    "  ip saddr @masq ip daddr != @masq masquerade\n"
    " }\n"
    " chain forward { type filter hook forward priority filter; policy accept;\n"
    "  ip saddr @internal ip daddr != @internal drop\n"
    "  ip daddr @internal ip saddr != @internal drop\n"
    " }\n"
    "}\n";

/*
 * The IPv6 twin, `ip6 kapsel`, for dual-stack networks: the same sets and the any-address
 * port map. ::1 is left alone: IPv6 has no route_localnet (ip-sysctl.rst), a packet from ::1
 * never leaves lo, so a DNAT of it would only hang the client; it gets a plain refusal.
 */
static const char table6[] =
    "table ip6 kapsel {\n"
    " set masq { type ipv6_addr; flags interval; }\n"
    " set internal { type ipv6_addr; flags interval; }\n"
    " map ports { type inet_proto . inet_service : ipv6_addr . inet_service; }\n"
    " chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n"
    "  fib daddr type local dnat ip6 to meta l4proto . th dport map @ports\n"
    " }\n"
    " chain output { type nat hook output priority -100; policy accept;\n"
    "  ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports\n"
    " }\n"
    " chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
    "  ip6 saddr @masq ip6 daddr != @masq masquerade\n"
    " }\n"
    " chain forward { type filter hook forward priority filter; policy accept;\n"
    "  ip6 saddr @internal ip6 daddr != @internal drop\n"
    "  ip6 daddr @internal ip6 saddr != @internal drop\n"
    " }\n"
    "}\n";

static int bind_nft(struct kapsel_error **err)
{
	if (nft.h)
		return 0;
	const struct kap_dl_sym syms[] = {
	    KAP_DL_SYM("nft_ctx_new", nft.ctx_new),
	    KAP_DL_SYM("nft_ctx_free", nft.ctx_free),
	    KAP_DL_SYM("nft_ctx_buffer_output", nft.buffer_output),
	    KAP_DL_SYM("nft_ctx_buffer_error", nft.buffer_error),
	    KAP_DL_SYM("nft_ctx_get_error_buffer", nft.get_error_buffer),
	    KAP_DL_SYM("nft_run_cmd_from_buffer", nft.run),
	};
	return kap_dl_bind("libnftables.so.1", "libnftables1", &nft.h, syms, KAP_ARRAY_SIZE(syms),
			   err);
}

/* nft's error text is several lines (the command, a caret line); the first says why. */
static int run_cmds(const char *cmds, bool quiet, struct kapsel_error **err)
{
	int r = bind_nft(err);
	if (r < 0)
		return r;
	struct nft_ctx *ctx = nft.ctx_new(NFT_CTX_DEFAULT);
	if (!ctx)
		return kap_error(err, ENOMEM, "nftables");
	nft.buffer_output(ctx);
	nft.buffer_error(ctx);
	int e = errno = 0;
	if (nft.run(ctx, cmds) != 0) {
		e = errno ? errno : EINVAL;
		if (!quiet) {
			const char *msg = nft.get_error_buffer(ctx);
			size_t n = msg ? strcspn(msg, "\n") : 0;
			kap_error_plain(err, e, "nftables: %.*s (in: %.*s)", (int)n, msg ? msg : "",
					(int)strcspn(cmds, "\n;"), cmds);
		}
	}
	nft.ctx_free(ctx);
	return -e;
}

bool kap_nft_present(void)
{
	return run_cmds("list table ip kapsel", true, NULL) == 0;
}

int kap_nft_ensure(struct kapsel_error **err)
{
	int r = bind_nft(err);
	if (r < 0)
		return r;
	if (kap_nft_present())
		return 0;
	return run_cmds(table, false, err);
}

bool kap_nft6_present(void)
{
	return run_cmds("list table ip6 kapsel", true, NULL) == 0;
}

int kap_nft6_ensure(struct kapsel_error **err)
{
	int r = bind_nft(err);
	if (r < 0)
		return r;
	if (kap_nft6_present())
		return 0;
	return run_cmds(table6, false, err);
}

int kap_nft_run(const char *cmds, struct kapsel_error **err)
{
	return run_cmds(cmds, false, err);
}
