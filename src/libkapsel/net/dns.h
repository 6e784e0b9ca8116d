/* SPDX-License-Identifier: Apache-2.0 */
/* The per-network name responder (net/dns.c). Callers hold the network lock. */
#pragma once
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* Start the responder of network `net` on gateway:53 (and [gateway6]:53 unless NULL) unless
 * one runs; dfd: the networks directory (its pid goes to NET.dns.pid there). */
int kap_dns_start(int dfd, const char *net, struct in_addr gateway, const struct in6_addr *gateway6,
		  struct kapsel_error **err);
/* Stop it (when its last container left, or the network goes). */
void kap_dns_stop(int dfd, const char *net);
/* A query's largest size (RFC 1035 §4.2.1: UDP) and the room one answer record takes (an
 * AAAA: a 12-byte header and 16 bytes of address). */
#define KAP_DNS_MAX_QUERY  512
#define KAP_DNS_MAX_ANSWER 28
/*
 * Answer one query (p, n bytes, from a container: hostile) in place, from the lease file
 * dfd/leases_file; cap is the buffer's size (n + KAP_DNS_MAX_ANSWER always has room for the
 * answer; with less, the answer is left out). Returns the reply's length, or 0 to drop the
 * packet. Exposed for the unit tests and the fuzzer.
 */
size_t kap_dns_answer(int dfd, const char *leases_file, uint8_t *p, size_t n, size_t cap);
