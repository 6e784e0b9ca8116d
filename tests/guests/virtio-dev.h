/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest-side tests of virtio-net, virtio-console and virtio-vsock (virtio 1.2 §5.1, §5.3,
 * §5.10) for the multiboot test kernel, over virtio-mmio (virtio.h's queue layout). Devices
 * with several queues are initialised here; completions are polled, with timeouts taken from
 * the monotonic-clock hypercall. Copies are volatile byte loops: a freestanding kernel has no
 * memcpy for the compiler to call.
 *   net    ARP for the host address, then ping it ("ip=A.B.C.D host=A.B.C.D"): the host
 *          kernel on the other side of the tap answers both
 *   vcon   hvc0: prints "hvc ready", echoes input lines as "hvc: LINE" until "quit"
 *   vsock  "cid=N": accepts a host connection on port 1234 and answers "pong: " + data; then
 *          connects to host port 5000, sends a line, reads one back and closes
 */
#pragma once
#include "guest.h"
#include "virtio.h"

static void bcopy_(void *dst, const void *src, uint32_t n)
{
	volatile uint8_t *d = dst;
	const volatile uint8_t *s = src;
	for (uint32_t i = 0; i < n; i++)
		d[i] = s[i];
}
static void bzero_(void *dst, uint32_t n)
{
	volatile uint8_t *d = dst;
	for (uint32_t i = 0; i < n; i++)
		d[i] = 0;
}

static int64_t now_ns(void)
{
	return hypercall(2, 1, 0);
}

/* §3.1.1 with queues 0..nq-1 set up (each VQ_N entries); 0 or why not. */
static const char *vdev_init(uint32_t b, struct vq **qs, unsigned int nq, uint32_t want_lo)
{
	*vreg(b, 0x70) = 0;
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER;
	*vreg(b, 0x14) = 1;
	if (!(*vreg(b, 0x10) & 1))
		return "device lacks VIRTIO_F_VERSION_1";
	*vreg(b, 0x14) = 0;
	uint32_t lo = *vreg(b, 0x10) & want_lo;
	*vreg(b, 0x24) = 0;
	*vreg(b, 0x20) = lo;
	*vreg(b, 0x24) = 1;
	*vreg(b, 0x20) = 1;
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK;
	if (!(*vreg(b, 0x70) & VIO_FEAT_OK))
		return "FEATURES_OK refused";
	for (unsigned int i = 0; i < nq; i++) {
		struct vq *q = qs[i];
		*vreg(b, 0x30) = i;
		if (*vreg(b, 0x34) < VQ_N)
			return "queue too small";
		bzero_(q, sizeof(*q));
		*vreg(b, 0x38) = VQ_N;
		*vreg(b, 0x80) = (uint32_t)(uintptr_t)q->desc;
		*vreg(b, 0x84) = 0;
		*vreg(b, 0x90) = (uint32_t)(uintptr_t)&q->avail;
		*vreg(b, 0x94) = 0;
		*vreg(b, 0xa0) = (uint32_t)(uintptr_t)&q->used;
		*vreg(b, 0xa4) = 0;
		*vreg(b, 0x44) = 1;
		if (*vreg(b, 0x44) != 1)
			return "queue not ready";
	}
	*vreg(b, 0x70) = VIO_ACK | VIO_DRIVER | VIO_FEAT_OK | VIO_DRV_OK;
	return 0;
}

/* Offers descriptor d (one buffer) on queue qi and notifies. */
static void vq_give(uint32_t b, struct vq *q, unsigned int qi, uint16_t d, const void *buf,
		    uint32_t len, int writable)
{
	volatile struct vq *v = q;
	v->desc[d].addr = (uintptr_t)buf;
	v->desc[d].len = len;
	v->desc[d].flags = writable ? VD_WRITE : 0;
	v->desc[d].next = 0;
	v->avail.ring[v->avail.idx % VQ_N] = d;
	__asm__ volatile("" ::: "memory");
	v->avail.idx = (uint16_t)(v->avail.idx + 1);
	__asm__ volatile("mfence" ::: "memory");
	*vreg(b, 0x50) = qi;
}

/* Waits up to ms for the next used entry of q: its descriptor, or -1 on timeout or reset. */
static int vq_take(uint32_t b, struct vq *q, uint32_t *len, uint32_t ms)
{
	volatile struct vq *v = q;
	int64_t end = now_ns() + (int64_t)ms * 1000000;
	for (uint32_t spin = 0; v->used.idx == q->last_used; spin++) {
		if ((spin & 255) == 0 && (now_ns() > end || (*vreg(b, 0x70) & VIO_NEED_RST)))
			return -1;
	}
	uint32_t id = v->used.ring[q->last_used % VQ_N].id;
	*len = v->used.ring[q->last_used % VQ_N].len;
	q->last_used++;
	*vreg(b, 0x64) = *vreg(b, 0x60); /* ack, though nothing takes the interrupt */
	return (int)id;
}

/* ---- virtio-net ---- */

#define NET_HDR 12 /* virtio_net_hdr_v1 */
#define NET_BUF 1600
#define NET_NRX 4
#define ETH_ARP 0x0806
#define ETH_IP	0x0800
static struct vq net_rxq, net_txq;
static uint8_t net_rx[NET_NRX][NET_BUF] __attribute__((aligned(16)));
static uint8_t net_tx[NET_BUF] __attribute__((aligned(16)));
static uint8_t my_mac[6], host_mac[6];
static uint8_t my_ip[4], host_ip[4];

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
/* RFC 1071 internet checksum. */
static uint16_t csum(const uint8_t *p, uint32_t n)
{
	uint32_t s = 0;
	for (uint32_t i = 0; i + 1 < n; i += 2)
		s += get16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}
static int parse_ip(const char *s, uint8_t ip[4])
{
	for (int i = 0; i < 4; i++) {
		uint32_t v = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4)
			v = v * 10 + (uint32_t)(*s++ - '0'), digits++;
		if (!digits || v > 255 || *s != (i == 3 ? 0 : '.'))
			return 0;
		ip[i] = (uint8_t)v;
		s++;
	}
	return 1;
}
static void put_ip(const uint8_t ip[4])
{
	for (int i = 0; i < 4; i++) {
		putu(ip[i]);
		if (i < 3)
			putc_('.');
	}
}
static void put_mac(const uint8_t m[6])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 6; i++) {
		putc_(hex[m[i] >> 4]);
		putc_(hex[m[i] & 15]);
		if (i < 5)
			putc_(':');
	}
}

static void net_send(uint32_t b, uint32_t len)
{
	uint32_t l;
	bzero_(net_tx, NET_HDR);
	vq_give(b, &net_txq, 1, 0, net_tx, NET_HDR + len, 0);
	CHECK(vq_take(b, &net_txq, &l, 5000) == 0, "transmit did not complete");
}

/* An ARP packet (RFC 826) from us; op 1 request, 2 reply. */
static void net_arp(uint32_t b, uint16_t op, const uint8_t tmac[6], const uint8_t tip[4])
{
	uint8_t *f = net_tx + NET_HDR;
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	bcopy_(f, op == 1 ? bcast : tmac, 6);
	bcopy_(f + 6, my_mac, 6);
	put16(f + 12, ETH_ARP);
	put16(f + 14, 1);
	put16(f + 16, ETH_IP);
	f[18] = 6;
	f[19] = 4;
	put16(f + 20, op);
	bcopy_(f + 22, my_mac, 6);
	bcopy_(f + 28, my_ip, 4);
	bzero_(f + 32, 6);
	if (op == 2)
		bcopy_(f + 32, tmac, 6);
	bcopy_(f + 38, tip, 4);
	net_send(b, 42);
}

static void net_ping(uint32_t b)
{
	static const char payload[] = "kapsel-ping-payload";
	uint8_t *f = net_tx + NET_HDR, *ip = f + 14, *icmp = ip + 20;
	uint32_t plen = sizeof(payload) - 1;
	bcopy_(f, host_mac, 6);
	bcopy_(f + 6, my_mac, 6);
	put16(f + 12, ETH_IP);
	bzero_(ip, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + 8 + plen));
	put16(ip + 4, 0x4b50);
	ip[8] = 64;
	ip[9] = 1; /* ICMP */
	bcopy_(ip + 12, my_ip, 4);
	bcopy_(ip + 16, host_ip, 4);
	put16(ip + 10, csum(ip, 20));
	icmp[0] = 8; /* echo request */
	icmp[1] = 0;
	put16(icmp + 2, 0);
	put16(icmp + 4, 0x6b70);
	put16(icmp + 6, 1);
	bcopy_(icmp + 8, payload, plen);
	put16(icmp + 2, csum(icmp, 8 + plen));
	net_send(b, 14 + 20 + 8 + plen);
}

/*
 * Waits for a frame and handles it: answers ARP requests for our address, returns 1 for an
 * ARP reply from the host (host_mac set), 2 for an echo reply from it, 0 for anything else.
 */
static int net_receive(uint32_t b)
{
	uint32_t len;
	int d = vq_take(b, &net_rxq, &len, 10000);
	CHECK(d >= 0 && d < NET_NRX, "no frame from the host within 10 s");
	CHECK(len >= NET_HDR && len <= NET_BUF, "received length out of range");
	const uint8_t *f = net_rx[d] + NET_HDR;
	uint32_t n = len - NET_HDR;
	int r = 0;
	if (n >= 42 && get16(f + 12) == ETH_ARP && !memcmp_(f + 38, my_ip, 4)) {
		if (get16(f + 20) == 1) {
			uint8_t smac[6], sip[4];
			bcopy_(smac, f + 22, 6);
			bcopy_(sip, f + 28, 4);
			net_arp(b, 2, smac, sip);
		} else if (get16(f + 20) == 2 && !memcmp_(f + 28, host_ip, 4)) {
			bcopy_(host_mac, f + 22, 6);
			r = 1;
		}
	} else if (n >= 14 + 20 + 8 && get16(f + 12) == ETH_IP && f[14 + 9] == 1 &&
		   !memcmp_(f + 14 + 12, host_ip, 4) && f[14 + 20] == 0 &&
		   get16(f + 14 + 24) == 0x6b70) {
		CHECK(csum(f + 14 + 20, get16(f + 16) - 20) == 0, "echo reply checksum wrong");
		CHECK(!memcmp_(f + 14 + 28, "kapsel-ping-payload", 19), "echo payload differs");
		r = 2;
	}
	vq_give(b, &net_rxq, 0, (uint16_t)d, net_rx[d], NET_BUF, 1);
	return r;
}

static void test_net(const char *cmd)
{
	char v[20];
	cmdline_get(cmd, "ip", v, sizeof(v));
	CHECK(parse_ip(v, my_ip), "ip=A.B.C.D missing");
	cmdline_get(cmd, "host", v, sizeof(v));
	CHECK(parse_ip(v, host_ip), "host=A.B.C.D missing");
	uint32_t b = vio_find(1, 0);
	CHECK(b, "no virtio-net device");
	struct vq *qs[2] = {&net_rxq, &net_txq};
	/* VIRTIO_NET_F_MAC (5), VIRTIO_NET_F_STATUS (16). */
	const char *bad = vdev_init(b, qs, 2, (1u << 5) | (1u << 16));
	CHECK(!bad, bad);
	for (int i = 0; i < 6; i++)
		my_mac[i] = *(volatile uint8_t *)(uintptr_t)(b + 0x100 + (uint32_t)i);
	CHECK(*(volatile uint16_t *)(uintptr_t)(b + 0x106) & 1, "link is not up");
	puts_("net: mac ");
	put_mac(my_mac);
	putc_('\n');
	for (uint16_t i = 0; i < NET_NRX; i++)
		vq_give(b, &net_rxq, 0, i, net_rx[i], NET_BUF, 1);
	net_arp(b, 1, 0, host_ip);
	int got = 0;
	for (int i = 0; i < 20 && got != 1; i++)
		got = net_receive(b);
	CHECK(got == 1, "no ARP reply");
	puts_("net: ");
	put_ip(host_ip);
	puts_(" is at ");
	put_mac(host_mac);
	putc_('\n');
	net_ping(b);
	for (int i = 0; i < 20 && got != 2; i++)
		got = net_receive(b);
	CHECK(got == 2, "no echo reply");
	puts_("net: echo reply from ");
	put_ip(host_ip);
	puts_("\nnet ok\n");
	pass();
}

/* ---- virtio-console ---- */

static struct vq con_rxq, con_txq;
static uint8_t con_in[64], con_out[160];

static void con_write(uint32_t b, const char *s)
{
	uint32_t n = 0, l;
	while (s[n] && n < sizeof(con_out))
		con_out[n] = (uint8_t)s[n], n++;
	vq_give(b, &con_txq, 1, 0, con_out, n, 0);
	CHECK(vq_take(b, &con_txq, &l, 5000) == 0, "console transmit did not complete");
}

static void test_vcon(void)
{
	uint32_t b = vio_find(3, 0);
	CHECK(b, "no virtio-console device");
	struct vq *qs[2] = {&con_rxq, &con_txq};
	/* VIRTIO_CONSOLE_F_EMERG_WRITE (2). */
	const char *bad = vdev_init(b, qs, 2, 1u << 2);
	CHECK(!bad, bad);
	CHECK(*vreg(b, 0x10) & (1u << 2), "no EMERG_WRITE");
	static const char emerg[] = "hvc emergency write\n";
	for (const char *p = emerg; *p; p++)
		*vreg(b, 0x108) = (uint8_t)*p;
	con_write(b, "hvc ready\n");
	char line[96];
	uint32_t n = 0;
	vq_give(b, &con_rxq, 0, 0, con_in, sizeof(con_in), 1);
	for (;;) {
		uint32_t len;
		CHECK(vq_take(b, &con_rxq, &len, 30000) == 0, "no console input within 30 s");
		CHECK(len <= sizeof(con_in), "console input longer than the buffer");
		for (uint32_t i = 0; i < len; i++) {
			char c = (char)con_in[i];
			if (c != '\n' && n + 1 < sizeof(line)) {
				line[n++] = c;
				continue;
			}
			line[n] = 0;
			n = 0;
			if (streq(line, "quit")) {
				con_write(b, "hvc bye\n");
				pass();
			}
			char out[110];
			uint32_t k = 0;
			for (const char *p = "hvc: "; *p; p++)
				out[k++] = *p;
			for (const char *p = line; *p && k < sizeof(out) - 2; p++)
				out[k++] = *p;
			out[k++] = '\n';
			out[k] = 0;
			con_write(b, out);
		}
		vq_give(b, &con_rxq, 0, 0, con_in, sizeof(con_in), 1);
	}
}

/* ---- virtio-vsock ---- */

struct vs_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
#define VS_REQUEST  1
#define VS_RESPONSE 2
#define VS_RST	    3
#define VS_SHUTDOWN 4
#define VS_RW	    5
#define VS_NRX	    4
#define VS_BUF	    (44 + 256)

static struct vq vs_rxq, vs_txq;
static uint8_t vs_rx[VS_NRX][VS_BUF] __attribute__((aligned(16)));
static uint8_t vs_tx[VS_BUF] __attribute__((aligned(16)));
static uint64_t vs_cid;
static uint32_t vs_fwd; /* bytes received on the current connection */

static void vs_send(uint32_t b, uint16_t op, uint32_t sport, uint32_t dport, const void *data,
		    uint32_t len, uint32_t flags)
{
	struct vs_hdr h = {vs_cid, 2, sport, dport, len, 1, op, flags, 4096, vs_fwd};
	uint32_t l;
	bcopy_(vs_tx, &h, sizeof(h));
	bcopy_(vs_tx + sizeof(h), data, len);
	vq_give(b, &vs_txq, 1, 0, vs_tx, (uint32_t)sizeof(h) + len, 0);
	/* 30 s: a live migration keeps the device out of its rings while it copies RAM. */
	CHECK(vq_take(b, &vs_txq, &l, 30000) == 0, "vsock transmit did not complete");
}

/* The next packet from the host into *h and data (NUL-terminated); its op. */
static uint16_t vs_recv(uint32_t b, struct vs_hdr *h, char *data, uint32_t max)
{
	uint32_t len;
	int d = vq_take(b, &vs_rxq, &len, 20000);
	CHECK(d >= 0 && d < VS_NRX, "no vsock packet within 20 s");
	CHECK(len >= sizeof(*h) && len <= VS_BUF, "vsock packet length out of range");
	bcopy_(h, vs_rx[d], sizeof(*h));
	CHECK(h->len == len - sizeof(*h), "vsock header len differs from the used length");
	CHECK(h->src_cid == 2 && h->dst_cid == vs_cid, "vsock packet not from host to us");
	uint32_t n = h->len < max - 1 ? h->len : max - 1;
	bcopy_(data, vs_rx[d] + sizeof(*h), n);
	data[n] = 0;
	if (h->op == VS_RW)
		vs_fwd += h->len;
	vq_give(b, &vs_rxq, 0, (uint16_t)d, vs_rx[d], VS_BUF, 1);
	return h->op;
}

static void test_vsock(const char *cmd)
{
	char v[24], data[260];
	cmdline_get(cmd, "cid", v, sizeof(v));
	uint32_t b = vio_find(19, 0);
	CHECK(b, "no virtio-vsock device");
	struct vq *qs[2] = {&vs_rxq, &vs_txq};
	const char *bad = vdev_init(b, qs, 2, 0);
	CHECK(!bad, bad);
	vs_cid = *vreg(b, 0x100) | (uint64_t)*vreg(b, 0x104) << 32;
	CHECK(vs_cid == atou(v), "guest_cid differs from cid=");
	puts_("vsock: cid ");
	putu(vs_cid);
	putc_('\n');
	for (uint16_t i = 0; i < VS_NRX; i++)
		vq_give(b, &vs_rxq, 0, i, vs_rx[i], VS_BUF, 1);

	/* Host to guest: a REQUEST for port 1234. */
	struct vs_hdr h;
	CHECK(vs_recv(b, &h, data, sizeof(data)) == VS_REQUEST, "expected a REQUEST");
	CHECK(h.dst_port == 1234, "REQUEST not for port 1234");
	uint32_t hport = h.src_port;
	vs_fwd = 0;
	vs_send(b, VS_RESPONSE, 1234, hport, 0, 0, 0);
	uint16_t op;
	while ((op = vs_recv(b, &h, data, sizeof(data))) != VS_RW)
		CHECK(op == 6 || op == 7, "expected data from the host");
	puts_("vsock: got ");
	puts_(data);
	char reply[280];
	uint32_t k = 0;
	for (const char *p = "pong: "; *p; p++)
		reply[k++] = *p;
	for (const char *p = data; *p && k < sizeof(reply) - 1; p++)
		reply[k++] = *p;
	vs_send(b, VS_RW, 1234, hport, reply, k, 0);
	while ((op = vs_recv(b, &h, data, sizeof(data))) != VS_SHUTDOWN)
		CHECK(op == 6 || op == 7 || op == VS_RW, "expected SHUTDOWN from the host");
	vs_send(b, VS_RST, 1234, hport, 0, 0, 0);
	puts_("vsock: host connection closed\n");

	/* Guest to host: port 3000 connects to host port 5000. */
	vs_fwd = 0;
	vs_send(b, VS_REQUEST, 3000, 5000, 0, 0, 0);
	CHECK(vs_recv(b, &h, data, sizeof(data)) == VS_RESPONSE, "expected a RESPONSE");
	CHECK(h.src_port == 5000 && h.dst_port == 3000, "RESPONSE ports differ");
	static const char hello[] = "hello from the guest\n";
	vs_send(b, VS_RW, 3000, 5000, hello, sizeof(hello) - 1, 0);
	while ((op = vs_recv(b, &h, data, sizeof(data))) != VS_RW)
		CHECK(op == 6 || op == 7, "expected data from host port 5000");
	puts_("vsock: host says ");
	puts_(data);
	vs_send(b, VS_SHUTDOWN, 3000, 5000, 0, 0, 3);
	while ((op = vs_recv(b, &h, data, sizeof(data))) != VS_RST)
		CHECK(op == 6 || op == 7 || op == VS_SHUTDOWN, "expected RST after SHUTDOWN");
	/* A REQUEST to a port nobody listens on is refused with RST. */
	vs_send(b, VS_REQUEST, 3001, 5999, 0, 0, 0);
	CHECK(vs_recv(b, &h, data, sizeof(data)) == VS_RST, "unlistened port not RST");
	puts_("vsock ok\n");
	pass();
}

/*
 * test=vsockreset: rx, tx and the event queue set up, one buffer on the event queue, then
 * "vsockreset: waiting N" now and then until an event arrives; it must be
 * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (id 0, virtio 1.2 §5.10.6.6), which a restored VM's device
 * sends because no connection survives a restore.
 */
static struct vq vs_evq;
static uint32_t vs_event;

static void __attribute__((noreturn)) test_vsockreset(void)
{
	uint32_t b = vio_find(19, 0);
	CHECK(b, "no virtio-vsock device");
	struct vq *qs[3] = {&vs_rxq, &vs_txq, &vs_evq};
	const char *bad = vdev_init(b, qs, 3, 0);
	CHECK(!bad, bad);
	for (uint16_t i = 0; i < VS_NRX; i++)
		vq_give(b, &vs_rxq, 0, i, vs_rx[i], VS_BUF, 1);
	vs_event = 0xffffffffu;
	vq_give(b, &vs_evq, 2, 0, &vs_event, sizeof(vs_event), 1);
	volatile struct vq *v = &vs_evq;
	for (uint64_t n = 0;; n++) {
		if (v->used.idx != vs_evq.last_used) {
			uint32_t len = v->used.ring[vs_evq.last_used % VQ_N].len;
			CHECK(len == sizeof(vs_event), "vsock event of the wrong length");
			CHECK(vs_event == 0, "vsock event is not TRANSPORT_RESET");
			puts_("vsock: transport reset\n");
			pass();
		}
		if ((n & 0x3fffff) == 0) {
			puts_("vsockreset: waiting ");
			putu(n >> 22);
			putc_('\n');
		}
	}
}

/*
 * test=vsockecho: serves host connections to port 1234 for ever, answering every data packet
 * with "echo: " + its bytes on the same connection. Prints "vsockecho: ready", then
 * "vsockecho: connected PORT", "vsockecho: got DATA", "vsockecho: closed PORT" and
 * "vsock: transport reset" when the device sends that event (after a restore). With dial=P it
 * also connects from guest port 3000 to host port P ("vsockecho: dialed P" on the RESPONSE)
 * and echoes on that connection the same way. A RST prints "vsockecho: reset GUEST HOST"
 * (the ports).
 */
static void __attribute__((noreturn)) test_vsockecho(const char *cmd)
{
	uint32_t b = vio_find(19, 0);
	CHECK(b, "no virtio-vsock device");
	struct vq *qs[3] = {&vs_rxq, &vs_txq, &vs_evq};
	const char *bad = vdev_init(b, qs, 3, 0);
	CHECK(!bad, bad);
	vs_cid = *vreg(b, 0x100) | (uint64_t)*vreg(b, 0x104) << 32;
	for (uint16_t i = 0; i < VS_NRX; i++)
		vq_give(b, &vs_rxq, 0, i, vs_rx[i], VS_BUF, 1);
	vs_event = 0xffffffffu;
	vq_give(b, &vs_evq, 2, 0, &vs_event, sizeof(vs_event), 1);
	puts_("vsockecho: ready\n");
	char data[260], reply[280];
	if (cmdline_get(cmd, "dial", data, sizeof(data))) {
		vs_fwd = 0;
		vs_send(b, VS_REQUEST, 3000, atou(data), 0, 0, 0);
	}
	volatile struct vq *ev = &vs_evq, *rx = &vs_rxq;
	for (;;) {
		if (ev->used.idx != vs_evq.last_used) {
			vs_evq.last_used++;
			puts_("vsock: transport reset\n");
			vs_event = 0xffffffffu;
			vq_give(b, &vs_evq, 2, 0, &vs_event, sizeof(vs_event), 1);
		}
		if (rx->used.idx == vs_rxq.last_used)
			continue;
		struct vs_hdr h;
		uint16_t op = vs_recv(b, &h, data, sizeof(data));
		if (op == VS_REQUEST && h.dst_port == 1234) {
			vs_fwd = 0;
			vs_send(b, VS_RESPONSE, 1234, h.src_port, 0, 0, 0);
			puts_("vsockecho: connected ");
			putu(h.src_port);
			putc_('\n');
		} else if (op == VS_REQUEST) {
			vs_send(b, VS_RST, h.dst_port, h.src_port, 0, 0, 0);
		} else if (op == VS_RESPONSE) {
			puts_("vsockecho: dialed ");
			putu(h.src_port);
			putc_('\n');
		} else if (op == VS_RST) {
			puts_("vsockecho: reset ");
			putu(h.dst_port);
			putc_(' ');
			putu(h.src_port);
			putc_('\n');
		} else if (op == VS_RW) {
			puts_("vsockecho: got ");
			puts_(data);
			uint32_t k = 0;
			for (const char *p = "echo: "; *p; p++)
				reply[k++] = *p;
			for (const char *p = data; *p && k < sizeof(reply) - 1; p++)
				reply[k++] = *p;
			vs_send(b, VS_RW, h.dst_port, h.src_port, reply, k, 0);
		} else if (op == VS_SHUTDOWN) {
			vs_send(b, VS_RST, h.dst_port, h.src_port, 0, 0, 0);
			puts_("vsockecho: closed ");
			putu(h.src_port);
			putc_('\n');
		} else if (op == 7) { /* CREDIT_REQUEST */
			vs_send(b, 6, h.dst_port, h.src_port, 0, 0, 0);
		}
	}
}
