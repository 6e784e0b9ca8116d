/* SPDX-License-Identifier: Apache-2.0 */
/*
 * run --vm's pure parts: the agent protocol's frame codec and spec walker
 * (src/kapsel-agent/protocol.h, shared by host and agent), the newc cpio writer of the
 * initramfs (kernel initramfs-buffer-format.rst), the bzImage version string (boot.rst) and
 * the VM's network record (vm.net).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "../../src/kapsel-agent/protocol.h"
#include "run/run-vm.h"

static void test_frame_roundtrip(void **state)
{
	uint8_t h[KAP_AGENT_HDR];
	unsigned type;
	uint32_t len;
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_STDOUT, 300), 0);
	assert_memory_equal(h, "\x2c\x01\x00\x00\x05\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(type, KAP_AGENT_STDOUT);
	assert_int_equal(len, 300);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_EXIT, 4), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(type, KAP_AGENT_EXIT);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_SPEC, KAP_AGENT_MAX_SPEC), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(len, KAP_AGENT_MAX_SPEC);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_RESIZE, 4), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(type, KAP_AGENT_RESIZE);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_STDIN_EOF, 0), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(len, 0);
	/* hold=1's pair: empty both */
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_READY, 0), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(type, KAP_AGENT_READY);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_START, 0), 0);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	assert_int_equal(type, KAP_AGENT_START);
}

static void test_frame_rejects(void **state)
{
	uint8_t h[KAP_AGENT_HDR];
	unsigned type = 99;
	uint32_t len = 99;
	/* encoding: unknown types and oversized payloads */
	assert_int_equal(kap_agent_frame_encode(h, 0, 0), -EINVAL);
	assert_int_equal(kap_agent_frame_encode(h, 12, 0), -EINVAL);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_START, 1), -EMSGSIZE);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_RESIZE, 5), -EMSGSIZE);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_STDOUT, KAP_AGENT_MAX_DATA + 1),
			 -EMSGSIZE);
	assert_int_equal(kap_agent_frame_encode(h, KAP_AGENT_STDIN_EOF, 1), -EMSGSIZE);
	/* decoding: a huge length, an unknown type, reserved bytes, EXIT of the wrong size */
	memcpy(h, "\xff\xff\xff\xff\x05\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EMSGSIZE);
	memcpy(h, "\x00\x00\x10\x00\x01\x00\x00\x00", 8); /* SPEC of 1 MiB: the limit */
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), 0);
	memcpy(h, "\x01\x00\x10\x00\x01\x00\x00\x00", 8); /* one byte more */
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EMSGSIZE);
	memcpy(h, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
	memcpy(h, "\x00\x00\x00\x00\x0c\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
	memcpy(h, "\x02\x00\x00\x00\x09\x00\x00\x00", 8); /* RESIZE of 2 bytes */
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
	memcpy(h, "\x00\x00\x00\x00\x05\x00\x01\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
	memcpy(h, "\x02\x00\x00\x00\x07\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
	memcpy(h, "\x05\x00\x00\x00\x07\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EMSGSIZE);
	memcpy(h, "\x03\x00\x00\x00\x04\x00\x00\x00", 8);
	assert_int_equal(kap_agent_frame_decode(h, &type, &len), -EPROTO);
}

static void test_spec_walk(void **state)
{
	static const char spec[] = "arg=echo\0arg=a=b\0env=X=1\0cwd=/\0";
	size_t pos = 0, count = 0, kl;
	const char *k, *v;
	assert_int_equal(kap_agent_spec_next(spec, sizeof(spec) - 1, &pos, &count, &k, &kl, &v), 1);
	assert_true(kap_agent_key_is(k, kl, "arg"));
	assert_string_equal(v, "echo");
	assert_int_equal(kap_agent_spec_next(spec, sizeof(spec) - 1, &pos, &count, &k, &kl, &v), 1);
	assert_string_equal(v, "a=b");
	assert_int_equal(kap_agent_spec_next(spec, sizeof(spec) - 1, &pos, &count, &k, &kl, &v), 1);
	assert_true(kap_agent_key_is(k, kl, "env"));
	assert_string_equal(v, "X=1");
	assert_int_equal(kap_agent_spec_next(spec, sizeof(spec) - 1, &pos, &count, &k, &kl, &v), 1);
	assert_false(kap_agent_key_is(k, kl, "cw"));
	assert_int_equal(kap_agent_spec_next(spec, sizeof(spec) - 1, &pos, &count, &k, &kl, &v), 0);

	/* an entry without its NUL inside the payload, one without '=', one with an empty key */
	static const char open_end[] = "arg=echo";
	pos = count = 0;
	assert_int_equal(kap_agent_spec_next(open_end, 8, &pos, &count, &k, &kl, &v), -EPROTO);
	static const char no_eq[] = "argecho\0";
	pos = count = 0;
	assert_int_equal(kap_agent_spec_next(no_eq, 8, &pos, &count, &k, &kl, &v), -EPROTO);
	static const char empty_key[] = "=x\0";
	pos = count = 0;
	assert_int_equal(kap_agent_spec_next(empty_key, 3, &pos, &count, &k, &kl, &v), -EPROTO);

	/* the entry count is bounded */
	size_t n = (KAP_AGENT_MAX_ITEMS + 1) * 4;
	char *many = malloc(n);
	assert_non_null(many);
	for (size_t i = 0; i < n; i += 4)
		memcpy(many + i, "a=b", 4);
	pos = count = 0;
	int r;
	size_t seen = 0;
	while ((r = kap_agent_spec_next(many, n, &pos, &count, &k, &kl, &v)) == 1)
		seen++;
	assert_int_equal(r, -EPROTO);
	assert_int_equal(seen, KAP_AGENT_MAX_ITEMS);
	free(many);
}

static unsigned long hexfield(const char *hdr, int i)
{
	char f[9];
	memcpy(f, hdr + 6 + 8 * i, 8);
	f[8] = '\0';
	return strtoul(f, NULL, 16);
}

static void test_cpio(void **state)
{
	struct kap_cpio c = {0};
	assert_int_equal(kap_cpio_add(&c, "dev", S_IFDIR | 0755, 0, 0, NULL, 0), 0);
	assert_int_equal(kap_cpio_add(&c, "dev/console", S_IFCHR | 0600, 5, 1, NULL, 0), 0);
	assert_int_equal(kap_cpio_add(&c, "init", S_IFREG | 0755, 0, 0, "hello", 5), 0);
	assert_int_equal(kap_cpio_add(&c, "", S_IFREG, 0, 0, NULL, 0), -EINVAL);
	assert_int_equal(kap_cpio_finish(&c), 0);
	assert_int_equal(c.len % 4, 0);

	/* Walk it back as the kernel does: 110-byte header, name + NUL padded to 4, data too. */
	const char *want[] = {"dev", "dev/console", "init", "TRAILER!!!"};
	size_t off = 0;
	for (size_t i = 0; i < 4; i++) {
		const char *h = c.buf + off;
		assert_memory_equal(h, "070701", 6);
		unsigned long mode = hexfield(h, 1), size = hexfield(h, 6);
		unsigned long namesize = hexfield(h, 11);
		assert_int_equal(namesize, strlen(want[i]) + 1);
		assert_string_equal(h + 110, want[i]);
		if (i == 1) {
			assert_int_equal(mode, S_IFCHR | 0600);
			assert_int_equal(hexfield(h, 9), 5); /* rdevmajor */
			assert_int_equal(hexfield(h, 10), 1);
		}
		off += (110 + namesize + 3) & ~3ul;
		if (i == 2) {
			assert_int_equal(size, 5);
			assert_memory_equal(c.buf + off, "hello", 5);
		}
		off += (size + 3) & ~3ul;
	}
	assert_int_equal(off, c.len);
	kap_cpio_clear(&c);
}

static void test_bzimage_version(void **state)
{
	static uint8_t img[0x1000];
	char v[64];
	memset(img, 0, sizeof(img));
	assert_int_equal(kap_bzimage_version(img, sizeof(img), v, sizeof(v)), -EINVAL);
	memcpy(img + 0x202, "HdrS", 4);
	img[0x206] = 0x0f; /* protocol 2.15 */
	img[0x207] = 0x02;
	img[0x20e] = 0x00; /* kernel_version at 0x200 + 0x300 */
	img[0x20f] = 0x03;
	strcpy((char *)img + 0x500, "6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP");
	assert_int_equal(kap_bzimage_version(img, sizeof(img), v, sizeof(v)), 0);
	assert_string_equal(v, "6.1.0-57-amd64");
	/* the string must end inside the buffer, and fit the output */
	assert_int_equal(kap_bzimage_version(img, 0x505, v, sizeof(v)), -EINVAL);
	assert_int_equal(kap_bzimage_version(img, sizeof(img), v, 5), -EINVAL);
	/* a pointer beyond the image */
	img[0x20f] = 0xff;
	assert_int_equal(kap_bzimage_version(img, sizeof(img), v, sizeof(v)), -EINVAL);
}

/* vm.net (run --vm --net): a whole one, and each kind of bad line refused by name. */
static void test_vm_net_parse(void **state)
{
	(void)state;
	struct kap_vm_net n;
	struct kapsel_error *e = NULL;
	char good[] = "bridge=kapsel1\nmac=02:42:0a:4f:00:32\nip=10.79.0.50/24\n"
		      "gateway=10.79.0.1\nip6=fd00::32/64\ngateway6=fd00::1\n";
	assert_int_equal(kap_run_vm_net_parse(good, "vm.net", &n, &e), 0);
	assert_true(n.on);
	assert_string_equal(n.bridge, "kapsel1");
	assert_string_equal(n.mac, "02:42:0a:4f:00:32");
	assert_string_equal(n.ip, "10.79.0.50/24");
	assert_string_equal(n.gateway, "10.79.0.1");
	assert_string_equal(n.ip6, "fd00::32/64");
	assert_string_equal(n.gateway6, "fd00::1");
	/* an internal network: no gateway */
	char internal[] = "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\n";
	assert_int_equal(kap_run_vm_net_parse(internal, "vm.net", &n, &e), 0);
	assert_string_equal(n.gateway, "");
	static const char *const bad[] = {
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\nnope=1\n", /* unknown key */
	    "bridge=b\nmac=01:00:00:00:00:01\nip=10.0.0.2/8\n",		/* multicast */
	    "bridge=b\nmac=02:00:00:00:00\nip=10.0.0.2/8\n",		/* short MAC */
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2\n",		/* no prefix */
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/33\n",	/* prefix > 32 */
	    "bridge=b,x\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\n",	/* a comma */
	    "bridge=averyveryverylongname\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\n",
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\ngateway=10.0.0.1/8\n",
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\nip6=fd00::1\n",
	    "bridge=b\nmac=02:00:00:00:00:01\nip=10.0.0.2/8\nno equals sign\n",
	    "bridge=b\nmac=02:00:00:00:00:01\n", /* no address */
	    "",					 /* empty: the lease was never finished */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *t = strdup(bad[i]);
		assert_non_null(t);
		assert_int_equal(kap_run_vm_net_parse(t, "vm.net", &n, &e), -EINVAL);
		assert_non_null(e);
		assert_non_null(strstr(e->msg, "vm.net"));
		assert_false(n.on);
		kapsel_error_free(e);
		e = NULL;
		free(t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frame_roundtrip), cmocka_unit_test(test_frame_rejects),
	    cmocka_unit_test(test_spec_walk),	    cmocka_unit_test(test_cpio),
	    cmocka_unit_test(test_bzimage_version), cmocka_unit_test(test_vm_net_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
