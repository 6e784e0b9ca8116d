/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/: the parsers of input that need no root or namespace: -p specs (address, ports,
 * protocol, ranges), --mac-address, and the name responder's answers to queries (hostile:
 * they come from containers).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "net/dns.h"
#include "net/net.h"

static void port_ok(const char *spec, const char *proto, const char *ip, unsigned hp, unsigned cp)
{
	struct kap_net_port p;
	cleanup_error struct kapsel_error *err = NULL;
	assert_int_equal(kap_net_parse_port(spec, &p, &err), 0);
	char got[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &p.host_ip, got, sizeof(got));
	assert_string_equal(p.proto, proto);
	assert_string_equal(got, ip);
	assert_int_equal(p.host_port, hp);
	assert_int_equal(p.ctr_port, cp);
}

static void port_bad(const char *spec, const char *msg)
{
	struct kap_net_port p;
	cleanup_error struct kapsel_error *err = NULL;
	assert_int_equal(kap_net_parse_port(spec, &p, &err), -EINVAL);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, msg));
}

static void test_ports(void **state)
{
	(void)state;
	port_ok("8080:80", "tcp", "0.0.0.0", 8080, 80);
	port_ok("8080:80/udp", "udp", "0.0.0.0", 8080, 80);
	port_ok("127.0.0.1:1:65535/tcp", "tcp", "127.0.0.1", 1, 65535);
	port_ok(":53:53/udp", "udp", "0.0.0.0", 53, 53);
	port_bad("80", "expected [HOSTIP:]HOSTPORT:CTRPORT");
	port_bad("0:80", "port 0 is out of range");
	port_bad("8080:65536", "port 65536 is out of range");
	port_bad("8080:-1", "expected");
	port_bad("8080:80/sctp", "protocol must be tcp or udp");
	port_bad("::1:80:80", "host address is not IPv4");
	port_bad("a:80", "expected");
	port_bad("8080:", "expected");
}

static void test_mac(void **state)
{
	(void)state;
	uint8_t mac[6];
	cleanup_error struct kapsel_error *err = NULL;
	assert_int_equal(kap_net_parse_mac("02:42:ac:11:00:02", mac, &err), 0);
	assert_int_equal(mac[0], 0x02);
	assert_int_equal(mac[5], 0x02);
	const char *bad[] = {"02:42:ac:11:00", "02:42:ac:11:00:02:03", "zz:42:ac:11:00:02",
			     "01:00:5e:00:00:01", "2:42:ac:11:0:2"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kapsel_error *e = NULL;
		assert_int_equal(kap_net_parse_mac(bad[i], mac, &e), -EINVAL);
		kapsel_error_free(e);
	}
}

/* A query for `name` (one label) of type qtype, as a resolver sends it. */
static size_t query(uint8_t *p, const char *name, unsigned qtype)
{
	static const uint8_t hdr[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(p, hdr, sizeof(hdr));
	size_t n = sizeof(hdr), l = strlen(name);
	p[n++] = (uint8_t)l;
	memcpy(p + n, name, l);
	n += l;
	p[n++] = 0;
	p[n++] = 0;
	p[n++] = (uint8_t)qtype;
	p[n++] = 0;
	p[n++] = 1;
	return n;
}

static void test_dns(void **state)
{
	(void)state;
	char dir[] = "/tmp/kapsel-test-dns-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	const char *leases = "{\"10.89.0.7\": {\"container\": \"web\", \"veth\": \"kv0a590007\", "
			     "\"ports\": []}}";
	assert_int_equal(
	    kap_fs_write_atomic(dfd, "n.leases.json", leases, strlen(leases), 0600, false, NULL),
	    0);
	uint8_t p[512 + 16];
	/* A known name: NOERROR, authoritative, one A record with the address. */
	size_t n = query(p, "WEB", 1);
	size_t r = kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p));
	assert_int_equal(r, n + 16);
	assert_int_equal(p[0], 0x12);
	assert_int_equal(p[2], 0x85); /* QR, AA, RD kept */
	assert_int_equal(p[3], 0);
	assert_int_equal(p[7], 1);
	assert_memory_equal(p + n + 12, "\x0a\x59\x00\x07", 4);
	/* AAAA of a known name: NOERROR without records. */
	n = query(p, "web", 28);
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p)), n);
	assert_int_equal(p[3], 0);
	assert_int_equal(p[7], 0);
	/* Unknown: REFUSED (the resolver moves on to the next nameserver). */
	n = query(p, "nosuch", 1);
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p)), n);
	assert_int_equal(p[3], 5);
	/* A compression pointer in the question, a label past the end, a response: FORMERR or
	 * dropped, never a read beyond n. */
	n = query(p, "web", 1);
	p[12] = 0xc0;
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p)), 12);
	assert_int_equal(p[3], 1);
	n = query(p, "web", 1);
	p[12] = 40;
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p)), 12);
	n = query(p, "web", 1);
	p[2] |= 0x80;
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, n, sizeof(p)), 0);
	assert_int_equal(kap_dns_answer(dfd, "n.leases.json", p, 5, sizeof(p)), 0);
	unlinkat(dfd, "n.leases.json", 0);
	close(dfd);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ports),
	    cmocka_unit_test(test_mac),
	    cmocka_unit_test(test_dns),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
