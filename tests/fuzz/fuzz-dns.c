/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS queries sent by containers to their network's name responder (net/dns.c): every input
 * gets a reply no longer than the buffer allows, or is dropped, and nothing is read or
 * written outside the packet. No lease file (dfd -1): every name is unknown.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 512)
		return 0;
	/* Exactly the packet plus the answer's room, so ASan sees any overrun. */
	uint8_t *p = malloc(size + 16);
	if (!p)
		return 0;
	memcpy(p, data, size);
	size_t r = kap_dns_answer(-1, "x.leases.json", p, size, size + 16);
	if (r > size + 16)
		__builtin_trap();
	free(p);
	return 0;
}
