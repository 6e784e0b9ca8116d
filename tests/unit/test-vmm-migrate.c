/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live migration's pure pieces (vmm/migrate.c): the frame check, CRC-32C, against RFC 3720's
 * vectors on both the SSE4.2 and the table path, and the address rule (unix:PATH or
 * tcp:127.0.0.1:PORT only: the stream must not leave the machine).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "vmm/migrate.h"

static void test_crc32c_vectors(void **state)
{
	uint8_t buf[4096 + 3];
	/* RFC 3720 B.4: 32 bytes of zeros, of 0xff, ascending, descending. */
	memset(buf, 0, 32);
	assert_int_equal(kap_migrate_crc32c(0, buf, 32), 0x8a9136aa);
	assert_int_equal(kap_migrate_crc32c_sw(0, buf, 32), 0x8a9136aa);
	memset(buf, 0xff, 32);
	assert_int_equal(kap_migrate_crc32c(0, buf, 32), 0x62a8ab43);
	assert_int_equal(kap_migrate_crc32c_sw(0, buf, 32), 0x62a8ab43);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(kap_migrate_crc32c(0, buf, 32), 0x46dd794e);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(kap_migrate_crc32c_sw(0, buf, 32), 0x113fdb5c);
	assert_int_equal(kap_migrate_crc32c(0, "123456789", 9), 0xe3069283);
	/* Both paths agree on odd lengths and continuations. */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (size_t n = 0; n < sizeof(buf); n += 509) {
		uint32_t a = kap_migrate_crc32c(0, buf, n);
		assert_int_equal(a, kap_migrate_crc32c_sw(0, buf, n));
		uint32_t b =
		    kap_migrate_crc32c(kap_migrate_crc32c(0, buf, n / 3), buf + n / 3, n - n / 3);
		assert_int_equal(a, b);
	}
}

static void check_addr(const char *addr, bool ok, const char *want)
{
	struct kapsel_error *err = NULL;
	int r = kap_migrate_check_addr(addr, &err);
	if (ok) {
		assert_int_equal(r, 0);
		assert_null(err);
		return;
	}
	assert_int_equal(r, -EINVAL);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, addr));
	assert_non_null(strstr(err->msg, want));
	kapsel_error_free(err);
}

static void test_addresses(void **state)
{
	check_addr("unix:/tmp/m.sock", true, NULL);
	check_addr("tcp:127.0.0.1:4444", true, NULL);
	check_addr("tcp:127.0.0.1:65535", true, NULL);
	check_addr("tcp:10.0.0.1:4444", false, "only 127.0.0.1");
	check_addr("tcp:0.0.0.0:4444", false, "only 127.0.0.1");
	check_addr("tcp:localhost:4444", false, "only 127.0.0.1");
	check_addr("tcp:127.0.0.10:4444", false, "only 127.0.0.1");
	check_addr("tcp:127.0.0.1:0", false, "PORT in 1..65535");
	check_addr("tcp:127.0.0.1:65536", false, "PORT in 1..65535");
	check_addr("tcp:127.0.0.1:80x", false, "PORT in 1..65535");
	check_addr("tcp:127.0.0.1", false, "PORT in 1..65535");
	check_addr("unix:", false, "empty");
	check_addr("udp:127.0.0.1:1", false, "expected unix:PATH");
	check_addr("/tmp/m.sock", false, "expected unix:PATH");
	char longpath[200] = "unix:/";
	memset(longpath + 6, 'a', 150);
	longpath[156] = 0;
	check_addr(longpath, false, "longer than");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c_vectors),
	    cmocka_unit_test(test_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
