/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS queries sent by containers to their network's name responder (net/dns.c): every input
 * gets a reply no longer than the buffer allows, or is dropped, and nothing is read or
 * written outside the packet. The lease file knows two names, "web" (an IPv4 and an IPv6
 * address, as on a dual-stack network) and "db" (IPv4 only), so A, AAAA and NODATA answers
 * are all reached; the corpus and dns.dict hold queries for them.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/kapsel-fuzz-dns-XXXXXX";
static int dfd = -1;

static void cleanup(void)
{
	unlinkat(dfd, "x.leases.json", 0);
	close(dfd);
	rmdir(dir);
}

/* The lease file, once; dfd stays -1 (every name unknown) if it cannot be made. */
static void setup(void)
{
	static const char leases[] =
	    "{\"10.89.0.2\": {\"container\": \"web\", \"veth\": \"kv0a590002\", \"ports\": [], "
	    "\"ip6\": \"fd6b:6170:7365:1::2\", \"aliases\": [\"www\"]},\n"
	    " \"10.89.0.3\": {\"container\": \"db\", \"veth\": \"kv0a590003\", \"ports\": []}}\n";
	if (!mkdtemp(dir))
		return;
	int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int f = d >= 0 ? openat(d, "x.leases.json", O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
	if (f < 0 || write(f, leases, sizeof(leases) - 1) != (ssize_t)(sizeof(leases) - 1)) {
		if (f >= 0)
			close(f);
		if (d >= 0)
			close(d);
		return;
	}
	close(f);
	dfd = d;
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	if (!once++)
		setup();
	if (size > KAP_DNS_MAX_QUERY)
		return 0;
	/* Exactly the packet plus the answer's room, so ASan sees any overrun. */
	uint8_t *p = malloc(size + KAP_DNS_MAX_ANSWER);
	if (!p)
		return 0;
	memcpy(p, data, size);
	size_t r = kap_dns_answer(dfd, "x.leases.json", p, size, size + KAP_DNS_MAX_ANSWER);
	if (r > size + KAP_DNS_MAX_ANSWER)
		__builtin_trap();
	free(p);
	return 0;
}
