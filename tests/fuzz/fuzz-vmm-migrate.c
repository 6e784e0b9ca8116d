/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An incoming live-migration stream (vmm/migrate.c, kap_migrate_incoming): whatever a peer
 * sends, the destination refuses it or loads it without writing outside guest RAM, reading
 * outside a frame or allocating beyond its caps, and always with one error naming why.
 *
 * The input's first byte picks the mode. Odd: the rest goes over the socket as it is (the
 * framing and the handshake are fuzzed). Even: a valid handshake for this VM comes first,
 * then the rest is read as records (u8 type, u16 length, payload) that become frames with the
 * right sequence numbers and CRC-32C, so the fuzzer reaches the checks behind the checksum:
 * page ranges, the state file parser, the END frame's counts.
 *
 * The VM is a shell: RAM and a config, no KVM (vm->fd is -1), so a stream that gets as far as
 * loading the machine state ends at KVM_SET_IRQCHIP with EBADF.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/error.h"
#include "vmm/migrate.h"
#include "vmm/vmm.h"

#define RAM (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct out *o, const void *d, size_t n)
{
	if (!n)
		return;
	if (o->len + n > o->cap) {
		size_t cap = (o->len + n) * 2;
		uint8_t *p = realloc(o->p, cap);
		if (!p)
			abort();
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, d, n);
	o->len += n;
}

static void frame(struct out *o, uint32_t type, const void *d, size_t n, uint32_t *seq)
{
	uint32_t h[4] = {type, (uint32_t)n, kap_migrate_crc32c(0, d, n), (*seq)++};
	put(o, h, sizeof(h));
	put(o, d, n);
}

static void hello(struct out *o, uint32_t *seq)
{
	char cfg[256];
	int n = snprintf(cfg, sizeof(cfg),
			 "mem_size=%u\ncpus=1\ncpu_features=\npit=1\ndebug_exit=1\nkernel=\n"
			 "cpu_model=host\nacpi=reduced\ntransport=pci\n",
			 RAM);
	struct {
		char magic[8];
		uint32_t version, config_len;
		char kver[32];
		uint64_t mem;
		uint32_t ncpus, reserved;
		char cfg[256];
	} h = {
	    .magic = "KAPSELMG", .version = 1, .config_len = (uint32_t)n, .mem = RAM, .ncpus = 1};
	snprintf(h.kver, sizeof(h.kver), "%s", KAPSEL_VERSION);
	memcpy(h.cfg, cfg, (size_t)n);
	frame(o, 1, &h, offsetof(__typeof__(h), cfg) + (size_t)n, seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (64u << 10))
		return 0;
	struct out o = {0};
	if (data[0] & 1) {
		put(&o, data + 1, size - 1);
	} else {
		uint32_t seq = 0;
		hello(&o, &seq);
		for (size_t i = 1; i + 3 <= size;) {
			uint32_t type = data[i];
			size_t n = (size_t)data[i + 1] | (size_t)data[i + 2] << 8;
			i += 3;
			if (n > size - i)
				n = size - i;
			frame(&o, type, data + i, n, &seq);
			i += n;
		}
	}
	static struct kapsel_vm_config cfg;
	struct kap_vm *vm = calloc(1, sizeof(*vm));
	uint8_t *ram = calloc(1, RAM);
	char path[64];
	snprintf(path, sizeof(path), "unix:/tmp/kapsel-fuzz-migrate.%d", (int)getpid());
	struct kapsel_error *err = NULL;
	if (!vm || !ram)
		abort();
	vm->cfg = &cfg;
	vm->fd = -1;
	vm->ncpus = 1;
	vm->mem.host = ram;
	vm->mem.size = vm->mem.low_size = RAM;
	vm->incoming_fd = vm->incoming_conn = -1;
	if (kap_migrate_listen(vm, path, &err) < 0) {
		fprintf(stderr, "%s\n", err->msg);
		abort();
	}
	/* The peer: the whole stream is written before the destination reads (64 KiB + frames). */
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int big = 4 << 20;
	setsockopt(c, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path + 5);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort();
	for (size_t off = 0; off < o.len;) {
		ssize_t w = send(c, o.p + off, o.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w <= 0)
			break; /* the buffer is full: the rest is lost, a truncated stream */
		off += (size_t)w;
	}
	shutdown(c, SHUT_WR);
	int r = kap_migrate_incoming(vm, -1, &err);
	/* Never loads: there is no KVM behind this VM. */
	if (r >= 0 || !err || !err->msg[0] || strchr(err->msg, '\n'))
		__builtin_trap();
	kapsel_error_free(err);
	kap_migrate_unlisten(vm);
	close(c);
	free(o.p);
	free(ram);
	free(vm);
	return 0;
}
