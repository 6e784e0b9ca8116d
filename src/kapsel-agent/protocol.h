/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire protocol between `kapsel run --vm` (the host) and kapsel-agent (PID 1 of the guest)
 * over virtio-vsock: the agent connects to the host (CID 2) on KAP_AGENT_PORT, and both sides
 * then exchange frames (docs/vm.md, "run --vm: the agent protocol"):
 *
 *   u32 length (little-endian) | u8 type | u8 reserved[3] = 0 | length bytes of payload
 *
 * Header-only and libc-only: the agent (a static program built without libkapsel) and the host
 * compile the same decoder. The host is trusted by the agent but every length is still bounded
 * (KAP_AGENT_MAX_*), so a confused peer costs an error, never an unbounded allocation.
 */
#pragma once
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KAP_AGENT_PORT 1024
/* exec: the agent listens here while the process runs; the host connects through the VMM's
 * vsock socket ("CONNECT 1025"), sends a SPEC (root is ignored: the rootfs is mounted) and
 * gets the second process's stdio and EXIT as for the first. */
#define KAP_AGENT_EXEC_PORT 1025
#define KAP_AGENT_HDR	    8
/* stdio chunks: one read's worth; the spec: arguments, environment and mounts together */
#define KAP_AGENT_MAX_DATA (64u << 10)
#define KAP_AGENT_MAX_SPEC (1u << 20)
/* entries of a spec (args + env + mounts + ...), each NUL-terminated */
#define KAP_AGENT_MAX_ITEMS 8192

enum kap_agent_frame {
	/* host -> agent */
	KAP_AGENT_SPEC = 1,	 /* NUL-terminated "key=value" strings (below) */
	KAP_AGENT_STDIN = 2,	 /* bytes for the process's stdin */
	KAP_AGENT_STDIN_EOF = 3, /* empty: close the process's stdin */
	KAP_AGENT_SIGNAL = 4,	 /* u32 LE signal number for the process */
	/* agent -> host */
	KAP_AGENT_STDOUT = 5,
	KAP_AGENT_STDERR = 6,
	KAP_AGENT_EXIT = 7,  /* u32 LE: the shell-style status (code, or 128 + signal) */
	KAP_AGENT_ERROR = 8, /* text: the guest could not start the process (host exits 125) */
	/* host -> agent, with tty=1 */
	KAP_AGENT_RESIZE = 9, /* u16 LE rows, u16 LE columns of the terminal */
	/* with hold=1 (an OCI runtime's create, then start): the agent mounts the rootfs and
	 * sends READY, and starts the process only when the host sends START */
	KAP_AGENT_READY = 10, /* agent -> host, empty */
	KAP_AGENT_START = 11, /* host -> agent, empty */
};

/*
 * Keys of a SPEC payload, in any order, each entry "key=value\0":
 *   arg=S (repeated, argv in order; at least one)   env=K=V (repeated)   cwd=PATH
 *   uid=N  gid=N  groups=N,N,...   hostname=S   root=TAG   root_ro=1   stdin=1
 *   mount=TAG:ro|rw:DEST (repeated: a virtio-fs share mounted at DEST in the rootfs)
 *   tmpfs=DEST (repeated: a tmpfs at DEST, which exists in the rootfs)
 *   tty=1 (stdio on a pseudo-terminal: STDOUT carries both outputs)   winsize=ROWS:COLS
 *   rlimit=RESOURCE:SOFT:HARD (repeated; numbers, 18446744073709551615 = unlimited)
 *   hold=1 (the first process only: READY once the rootfs is mounted, then wait for START)
 *   file=DEST:CONTENT (repeated: CONTENT bound over the file DEST of the rootfs; /etc/hosts,
 *     /etc/hostname, /etc/resolv.conf)
 *   net_mac=MAC  net_ip=ADDR/PREFIX  net_gateway=ADDR  net_ip6=ADDR/PREFIX  net_gateway6=ADDR
 *     (the card with MAC gets the addresses and default routes; lo is always up)
 * Unknown keys are an error, so a newer host meeting an older agent fails loudly.
 */

static inline void kap_agent_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t kap_agent_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The largest payload a frame of this type may carry; 0 for an unknown type. */
static inline uint32_t kap_agent_frame_max(unsigned type)
{
	switch (type) {
	case KAP_AGENT_SPEC:
		return KAP_AGENT_MAX_SPEC;
	case KAP_AGENT_STDIN:
	case KAP_AGENT_STDOUT:
	case KAP_AGENT_STDERR:
	case KAP_AGENT_ERROR:
		return KAP_AGENT_MAX_DATA;
	case KAP_AGENT_SIGNAL:
	case KAP_AGENT_EXIT:
	case KAP_AGENT_RESIZE:
		return 4;
	case KAP_AGENT_STDIN_EOF:
	case KAP_AGENT_READY:
	case KAP_AGENT_START:
		return 0;
	default:
		return 0;
	}
}

static inline int kap_agent_frame_known(unsigned type)
{
	return type >= KAP_AGENT_SPEC && type <= KAP_AGENT_START;
}

/* Writes a frame header; -EMSGSIZE when len exceeds what the type may carry. */
static inline int kap_agent_frame_encode(uint8_t hdr[KAP_AGENT_HDR], unsigned type, size_t len)
{
	if (!kap_agent_frame_known(type))
		return -EINVAL;
	if (len > kap_agent_frame_max(type))
		return -EMSGSIZE;
	kap_agent_put_u32(hdr, (uint32_t)len);
	hdr[4] = (uint8_t)type;
	hdr[5] = hdr[6] = hdr[7] = 0;
	return 0;
}

/*
 * Reads a frame header: -EPROTO for an unknown type or nonzero reserved bytes, -EMSGSIZE when
 * the length exceeds what the type may carry (EXIT, SIGNAL, RESIZE carry exactly 4 bytes).
 */
static inline int kap_agent_frame_decode(const uint8_t hdr[KAP_AGENT_HDR], unsigned *type,
					 uint32_t *len)
{
	unsigned t = hdr[4];
	uint32_t n = kap_agent_get_u32(hdr);
	if (!kap_agent_frame_known(t) || hdr[5] || hdr[6] || hdr[7])
		return -EPROTO;
	if (n > kap_agent_frame_max(t))
		return -EMSGSIZE;
	if ((t == KAP_AGENT_EXIT || t == KAP_AGENT_SIGNAL || t == KAP_AGENT_RESIZE) && n != 4)
		return -EPROTO;
	*type = t;
	*len = n;
	return 0;
}

/*
 * Walks a SPEC payload: *pos is the offset of the next entry (start at 0). Returns 1 with
 * *key (not NUL-terminated, *keylen bytes) and *value (NUL-terminated) set, 0 at the end,
 * -EPROTO for an entry without '=' or without its NUL inside the payload, or past
 * KAP_AGENT_MAX_ITEMS entries (*count counts them).
 */
static inline int kap_agent_spec_next(const char *buf, size_t len, size_t *pos, size_t *count,
				      const char **key, size_t *keylen, const char **value)
{
	if (*pos >= len)
		return 0;
	const char *s = buf + *pos;
	const char *nul = memchr(s, '\0', len - *pos);
	if (!nul || ++*count > KAP_AGENT_MAX_ITEMS)
		return -EPROTO;
	const char *eq = memchr(s, '=', (size_t)(nul - s));
	if (!eq || eq == s)
		return -EPROTO;
	*key = s;
	*keylen = (size_t)(eq - s);
	*value = eq + 1;
	*pos = (size_t)(nul - buf) + 1;
	return 1;
}

static inline int kap_agent_key_is(const char *key, size_t keylen, const char *want)
{
	return strlen(want) == keylen && !memcmp(key, want, keylen);
}
