/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/: the parsers of user input that need no root or namespace: -p specs (address, ports,
 * protocol, ranges) and --mac-address.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/cleanup.h"
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ports),
	    cmocka_unit_test(test_mac),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
