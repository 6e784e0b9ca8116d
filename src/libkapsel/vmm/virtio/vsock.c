/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock (virtio 1.2 §5.10), stream sockets only, with Firecracker's host side: a unix
 * socket multiplexer (firecracker docs/vsock.md).
 *   host -> guest: a host process connects to PATH and writes "CONNECT <port>\n"; kapsel sends
 *     the guest a REQUEST from CID 2, local port >= 2^30, and on the guest's RESPONSE answers
 *     "OK <local port>\n" on the unix socket; from then on bytes are spliced both ways.
 *   guest -> host: a REQUEST to CID 2 port P connects to the unix socket "PATH_P".
 *
 * Queues: 0 rx (to the guest), 1 tx (from the guest), 2 events: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
 * after a restore whose connections cannot go on (another CID, a reset owed). vsock_save
 * writes each connection's state; a live migration hands the host sockets to the destination
 * (migrate.c) and vsock_load takes both back; a restore reconnects the guest-initiated ones to
 * their host listeners and resets the others (restore_conns). All
 * host sockets sit in a private epoll set; that set is one edge-triggered source of the event
 * loop, which only kicks queue 0. The device thread then services every connection: accepts,
 * "CONNECT" lines, flushes, and sends what the guest has buffers and credit for.
 *
 * Everything is bounded: at most MAX_CONNS connections, each with a CONN_BUF-byte buffer for
 * guest data the host socket has not taken yet. The guest may send no more than the buf_alloc
 * kapsel advertised minus what is unforwarded (§5.10.6.3, credit); a guest that overruns it
 * gets its connection reset, and a connection's packets never allocate.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "vmm/virtio/transport.h"

#define RXQ	   0
#define TXQ	   1
#define EVQ	   2
#define HDR	   sizeof(struct virtio_vsock_hdr)
#define MAX_CONNS  KAP_VSOCK_MAX_CONNS
#define CONN_BUF   (64u * 1024) /* buf_alloc advertised to the guest, per connection */
#define BOUNCE	   (64u * 1024) /* largest payload kapsel sends or accepts in one packet */
#define LINE_MAX_  32		/* "CONNECT 4294967295\n" */
#define HOST_PORT0 (1u << 30)	/* first local port of host-initiated connections */
#define MAX_RST	   16

enum conn_state {
	C_LINE,	       /* host connected; waiting for "CONNECT <port>\n" */
	C_REQUESTED,   /* REQUEST sent to the guest; waiting for RESPONSE */
	C_ESTABLISHED, /* spliced */
};

struct conn {
	int fd;
	enum conn_state state;
	uint32_t local_port, peer_port; /* host side, guest side */
	/* What the guest advertised: its buffer and how much of ours it has consumed. */
	uint32_t peer_buf_alloc, peer_fwd_cnt;
	uint32_t tx_cnt;	  /* bytes sent to the guest */
	uint32_t rx_cnt, fwd_cnt; /* bytes from the guest; of them, written to fd */
	uint32_t fwd_cnt_sent;	  /* fwd_cnt the guest last heard of */
	bool need_request, need_response, need_credit, need_shutdown;
	bool host_eof;			  /* fd gave EOF; SHUTDOWN sent or pending */
	bool guest_init;		  /* the guest connected (to PATH_<local_port>) */
	bool guest_no_send, guest_no_rcv; /* the guest's SHUTDOWN flags */
	uint8_t *out;			  /* ring of CONN_BUF: guest data fd has not taken */
	uint32_t out_head, out_len;
	char line[LINE_MAX_];
	uint32_t line_len;
};

struct rst {
	uint32_t local_port, peer_port;
};

struct vsock {
	uint64_t cid;
	char *path;
	int listen_fd, epfd;
	struct conn *conns[MAX_CONNS];
	/*
	 * Connections a driver reset dropped, closed by the device thread: the reset runs on a
	 * vCPU thread, whose seccomp filter (jail.c) allows no epoll_ctl or close.
	 */
	struct conn *dead[MAX_CONNS];
	unsigned int ndead;
	uint32_t next_port;
	unsigned int rr; /* round-robin start for data */
	struct rst rst[MAX_RST];
	unsigned int nrst;
	/* RSTs a restore owes beyond the MAX_RST queue; moved into it as it drains. */
	struct rst owed[MAX_CONNS];
	unsigned int nowed;
	bool reset_pending; /* TRANSPORT_RESET owed to the guest (restored, no event buffer yet) */
	/* A migration's destination: the source's host sockets, in its connections' order. */
	bool handover;
	int *handed;
	unsigned int nhanded;
	bool cid_changed; /* loaded without connections from a VM with another CID */
	struct kap_vq_elem elem;
	uint8_t bounce[BOUNCE];
};

static void vsock_config_read(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len)
{
	struct vsock *v = d->priv;
	/* §5.10.4: guest_cid, le64; x86 is little-endian. */
	memcpy(data, (const uint8_t *)&v->cid + off, len);
}

static void conn_free(struct vsock *v, unsigned int i)
{
	struct conn *c = v->conns[i];
	if (!c)
		return;
	if (c->fd >= 0) {
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	free(c->out);
	free(c);
	v->conns[i] = NULL;
}

/* Closes what a driver reset dropped (device thread or teardown). */
static void free_dead(struct vsock *v)
{
	while (v->ndead) {
		struct conn *c = v->dead[--v->ndead];
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		free(c->out);
		free(c);
	}
}

static int conn_new(struct vsock *v, int fd, enum conn_state state)
{
	for (unsigned int i = 0; i < MAX_CONNS; i++) {
		if (v->conns[i])
			continue;
		struct conn *c = calloc(1, sizeof(*c));
		uint8_t *out = malloc(CONN_BUF);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					 .data.fd = fd};
		if (!c || !out || epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			free(c);
			free(out);
			return -1;
		}
		c->fd = fd;
		c->state = state;
		c->out = out;
		v->conns[i] = c;
		return (int)i;
	}
	return -1;
}

static struct conn *conn_find(struct vsock *v, uint32_t local, uint32_t peer, unsigned int *idx)
{
	for (unsigned int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = v->conns[i];
		if (c && c->state != C_LINE && c->local_port == local && c->peer_port == peer) {
			*idx = i;
			return c;
		}
	}
	return NULL;
}

/* Queues a RST for a port pair with no connection; dropped when MAX_RST are waiting. */
static void queue_rst(struct vsock *v, uint32_t local, uint32_t peer)
{
	if (v->nrst < MAX_RST)
		v->rst[v->nrst++] = (struct rst){local, peer};
}

/* A RST the guest must get (a restore's dropped connection): queued, or owed until room. */
static void owe_rst(struct vsock *v, uint32_t local, uint32_t peer)
{
	if (v->nrst < MAX_RST)
		v->rst[v->nrst++] = (struct rst){local, peer};
	else if (v->nowed < MAX_CONNS)
		v->owed[v->nowed++] = (struct rst){local, peer};
}

static void take_owed(struct vsock *v)
{
	while (v->nowed && v->nrst < MAX_RST)
		v->rst[v->nrst++] = v->owed[--v->nowed];
}

/* Resets connection i: the guest hears a RST, the host socket is closed. */
static void conn_reset(struct vsock *v, unsigned int i)
{
	struct conn *c = v->conns[i];
	if (c->state != C_LINE)
		queue_rst(v, c->local_port, c->peer_port);
	conn_free(v, i);
}

/* The credit the guest has left for data from us (§5.10.6.3), never negative. */
static uint32_t peer_credit(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Writes buffered guest data to the host socket; half-closes it once the guest stopped. */
static void conn_flush(struct vsock *v, unsigned int i)
{
	struct conn *c = v->conns[i];
	while (c->out_len) {
		uint32_t run = CONN_BUF - c->out_head;
		if (run > c->out_len)
			run = c->out_len;
		ssize_t n = send(c->fd, c->out + c->out_head, run, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_reset(v, i);
			return;
		}
		c->out_head = (c->out_head + (uint32_t)n) % CONN_BUF;
		c->out_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	/* Tell the guest about freed space before it runs dry (a quarter of the buffer). */
	if (c->fwd_cnt - c->fwd_cnt_sent >= CONN_BUF / 4 ||
	    (c->fwd_cnt != c->fwd_cnt_sent &&
	     CONN_BUF - (c->rx_cnt - c->fwd_cnt_sent) < CONN_BUF / 4))
		c->need_credit = true;
	if (!c->out_len && c->guest_no_send)
		shutdown(c->fd, SHUT_WR);
}

/* Reads "CONNECT <port>\n" without consuming any byte after it (data may follow at once). */
static void conn_read_line(struct vsock *v, unsigned int i)
{
	struct conn *c = v->conns[i];
	char buf[LINE_MAX_];
	ssize_t n = recv(c->fd, buf, sizeof(buf) - c->line_len, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(v, i);
		return;
	}
	char *nl = memchr(buf, '\n', (size_t)n);
	size_t take = nl ? (size_t)(nl - buf) + 1 : (size_t)n;
	if (recv(c->fd, c->line + c->line_len, take, MSG_DONTWAIT) != (ssize_t)take) {
		conn_free(v, i);
		return;
	}
	c->line_len += (uint32_t)take;
	if (!nl) {
		if (c->line_len == sizeof(c->line))
			conn_free(v, i); /* no newline in 32 bytes: not the protocol */
		return;
	}
	c->line[c->line_len - 1] = '\0';
	char *end;
	unsigned long port = 0;
	if (!strncmp(c->line, "CONNECT ", 8) && c->line[8] >= '0' && c->line[8] <= '9') {
		errno = 0;
		port = strtoul(c->line + 8, &end, 10);
		if (errno || *end || port > UINT32_MAX)
			end = NULL;
	} else {
		end = NULL;
	}
	if (!end) {
		kap_debug("vsock: host connection sent \"%s\", not CONNECT <port>", c->line);
		conn_free(v, i);
		return;
	}
	c->peer_port = (uint32_t)port;
	/* A local port no other connection to this guest port uses. */
	unsigned int dummy;
	do {
		if (v->next_port < HOST_PORT0) /* wrapped */
			v->next_port = HOST_PORT0;
		c->local_port = v->next_port++;
	} while (conn_find(v, c->local_port, c->peer_port, &dummy));
	c->state = C_REQUESTED;
	c->need_request = true;
}

static void accept_all(struct vsock *v)
{
	for (;;) {
		int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (conn_new(v, fd, C_LINE) < 0) {
			kap_debug("vsock: more than %d connections; refusing one", MAX_CONNS);
			close(fd);
		}
	}
}

static struct virtio_vsock_hdr hdr_for(const struct vsock *v, const struct conn *c, uint16_t op)
{
	return (struct virtio_vsock_hdr){
	    .src_cid = VMADDR_CID_HOST,
	    .dst_cid = v->cid,
	    .src_port = c->local_port,
	    .dst_port = c->peer_port,
	    .type = VIRTIO_VSOCK_TYPE_STREAM,
	    .op = op,
	    .buf_alloc = CONN_BUF,
	    .fwd_cnt = c->fwd_cnt,
	};
}

/*
 * Picks the next packet for the guest without consuming anything: a queued RST, a connection's
 * control packet, or data (or SHUTDOWN at EOF) from a socket with credit. Returns the
 * connection index, MAX_CONNS for a queued RST, -1 when there is nothing to send.
 */
static int pick(struct vsock *v, uint16_t *op)
{
	if (v->nrst) {
		*op = VIRTIO_VSOCK_OP_RST;
		return MAX_CONNS;
	}
	for (unsigned int k = 0; k < MAX_CONNS; k++) {
		unsigned int i = (v->rr + k) % MAX_CONNS;
		struct conn *c = v->conns[i];
		if (!c || c->state == C_LINE)
			continue;
		if (c->need_request || c->need_response || c->need_credit || c->need_shutdown) {
			*op = c->need_request	 ? VIRTIO_VSOCK_OP_REQUEST
			      : c->need_response ? VIRTIO_VSOCK_OP_RESPONSE
			      : c->need_shutdown ? VIRTIO_VSOCK_OP_SHUTDOWN
						 : VIRTIO_VSOCK_OP_CREDIT_UPDATE;
			return (int)i;
		}
		if (c->state != C_ESTABLISHED || c->host_eof || c->guest_no_rcv || !peer_credit(c))
			continue;
		uint8_t b;
		ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n > 0) {
			*op = VIRTIO_VSOCK_OP_RW;
			return (int)i;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			/* EOF: the guest hears SHUTDOWN after every byte before it. */
			c->host_eof = true;
			c->need_shutdown = true;
			*op = VIRTIO_VSOCK_OP_SHUTDOWN;
			return (int)i;
		}
	}
	return -1;
}

/* Sends the guest what can be sent: one packet per receive buffer. */
static void rx_service(struct kap_virtio_dev *d, struct vsock *v)
{
	bool pushed = false;
	for (;;) {
		uint16_t op;
		int i = pick(v, &op);
		if (i < 0 || kap_virtio_pop(d, RXQ, &v->elem) <= 0)
			break;
		struct virtio_vsock_hdr h;
		uint32_t len = 0;
		if (i == MAX_CONNS) {
			struct rst r = v->rst[--v->nrst];
			struct conn tmp = {.local_port = r.local_port, .peer_port = r.peer_port};
			h = hdr_for(v, &tmp, op);
		} else {
			struct conn *c = v->conns[i];
			h = hdr_for(v, c, op);
			if (op == VIRTIO_VSOCK_OP_REQUEST) {
				c->need_request = false;
			} else if (op == VIRTIO_VSOCK_OP_RESPONSE) {
				c->need_response = false;
			} else if (op == VIRTIO_VSOCK_OP_SHUTDOWN) {
				c->need_shutdown = false;
				h.flags = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
			} else if (op == VIRTIO_VSOCK_OP_RW) {
				uint64_t room =
				    v->elem.write_len > HDR ? v->elem.write_len - HDR : 0;
				uint32_t cap = peer_credit(c);
				if (cap > room)
					cap = (uint32_t)room;
				if (cap > BOUNCE)
					cap = BOUNCE;
				ssize_t n = cap ? recv(c->fd, v->bounce, cap, MSG_DONTWAIT) : 0;
				if (n <= 0) {
					/* A buffer too small for data still carries a credit
					 * update. */
					h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
				} else {
					len = (uint32_t)n;
					c->tx_cnt += len;
					v->rr = (unsigned int)i + 1;
				}
			}
			c->need_credit = false;
			c->fwd_cnt_sent = c->fwd_cnt;
		}
		h.len = len;
		if (v->elem.write_len < HDR) {
			/* §5.10.6.1: rx buffers hold at least a header; this one cannot. */
			kap_virtio_needs_reset(d, RXQ,
					       "receive buffer smaller than a vsock header");
			break;
		}
		kap_vq_elem_write(&v->elem, 0, &h, HDR);
		if (len)
			kap_vq_elem_write(&v->elem, HDR, v->bounce, len);
		kap_vq_push(&d->vq[RXQ], v->elem.head, (uint32_t)HDR + len);
		pushed = true;
	}
	if (pushed)
		kap_virtio_notify(d, RXQ);
}

/* Host-side work and then everything the guest can take. d->lock held. */
static void service(struct kap_virtio_dev *d, struct vsock *v)
{
	accept_all(v);
	for (unsigned int i = 0; i < MAX_CONNS; i++) {
		if (v->conns[i] && v->conns[i]->state == C_LINE)
			conn_read_line(v, i);
		if (v->conns[i] && v->conns[i]->state == C_ESTABLISHED)
			conn_flush(v, i);
	}
	rx_service(d, v);
}

/* A REQUEST from the guest to host port P: connect to PATH_P. */
static void guest_connect(struct vsock *v, const struct virtio_vsock_hdr *h)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%" PRIu32, v->path, h->dst_port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		kap_debug("vsock: guest port %" PRIu32 " -> %s: %s", h->src_port, sa.sun_path,
			  strerror(errno));
		if (fd >= 0)
			close(fd);
		queue_rst(v, h->dst_port, h->src_port);
		return;
	}
	int i = conn_new(v, fd, C_ESTABLISHED);
	if (i < 0) {
		close(fd);
		queue_rst(v, h->dst_port, h->src_port);
		return;
	}
	struct conn *c = v->conns[i];
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->need_response = true;
	c->guest_init = true;
}

/* One packet from the guest. */
static void tx_packet(struct kap_virtio_dev *d, struct vsock *v, const struct kap_vq_elem *e)
{
	struct virtio_vsock_hdr h;
	if (kap_vq_elem_read(e, 0, &h, HDR) != HDR) {
		kap_virtio_needs_reset(d, TXQ, "vsock packet shorter than its header");
		return;
	}
	/* Packets that are not from this guest to the host are dropped (§5.10.6.2). */
	if (h.src_cid != v->cid || h.dst_cid != VMADDR_CID_HOST)
		return;
	if (h.type != VIRTIO_VSOCK_TYPE_STREAM || h.len > e->read_len - HDR) {
		if (h.op != VIRTIO_VSOCK_OP_RST)
			queue_rst(v, h.dst_port, h.src_port);
		return;
	}
	unsigned int i;
	struct conn *c = conn_find(v, h.dst_port, h.src_port, &i);
	if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
		if (c)
			conn_reset(v, i);
		else
			guest_connect(v, &h);
		return;
	}
	if (!c) {
		if (h.op != VIRTIO_VSOCK_OP_RST)
			queue_rst(v, h.dst_port, h.src_port);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	switch (h.op) {
	case VIRTIO_VSOCK_OP_RESPONSE: {
		if (c->state != C_REQUESTED) {
			conn_reset(v, i);
			return;
		}
		c->state = C_ESTABLISHED;
		char ok[32];
		int n = snprintf(ok, sizeof(ok), "OK %" PRIu32 "\n", c->local_port);
		if (send(c->fd, ok, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) != n)
			conn_reset(v, i);
		return;
	}
	case VIRTIO_VSOCK_OP_RW: {
		if (c->state != C_ESTABLISHED || c->guest_no_send ||
		    h.len > CONN_BUF - (c->rx_cnt - c->fwd_cnt)) {
			/* Data before the handshake, after SHUTDOWN, or beyond our credit. */
			conn_reset(v, i);
			return;
		}
		uint32_t tail = (c->out_head + c->out_len) % CONN_BUF;
		uint32_t first = CONN_BUF - tail < h.len ? CONN_BUF - tail : h.len;
		kap_vq_elem_read(e, HDR, c->out + tail, first);
		kap_vq_elem_read(e, HDR + first, c->out, h.len - first);
		c->out_len += h.len;
		c->rx_cnt += h.len;
		conn_flush(v, i);
		return;
	}
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		return;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		c->need_credit = true;
		return;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		c->guest_no_send |= h.flags & VIRTIO_VSOCK_SHUTDOWN_SEND;
		c->guest_no_rcv |= h.flags & VIRTIO_VSOCK_SHUTDOWN_RCV;
		if (c->guest_no_send && c->guest_no_rcv) {
			/* Fully closed by the guest: best-effort flush, then RST completes it. */
			conn_flush(v, i);
			if (v->conns[i])
				conn_reset(v, i);
		} else {
			conn_flush(v, i);
		}
		return;
	case VIRTIO_VSOCK_OP_RST:
		conn_free(v, i);
		return;
	default:
		conn_reset(v, i);
		return;
	}
}

/*
 * §5.10.6.6: after a restore the guest's connections have no host sockets behind them any
 * more; VIRTIO_VSOCK_EVENT_TRANSPORT_RESET tells the driver to drop them all and read
 * guest_cid again, as Firecracker does on snapshot load. d->lock held.
 */
static void send_transport_reset(struct kap_virtio_dev *d, struct vsock *v)
{
	if (!v->reset_pending || kap_virtio_pop(d, EVQ, &v->elem) <= 0)
		return;
	struct virtio_vsock_event ev = {.id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET};
	uint64_t n = kap_vq_elem_write(&v->elem, 0, &ev, sizeof(ev));
	kap_vq_push(&d->vq[EVQ], v->elem.head, (uint32_t)n);
	kap_virtio_notify(d, EVQ);
	v->reset_pending = false;
}

static void vsock_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct vsock *v = d->priv;
	pthread_mutex_lock(&d->lock);
	free_dead(v);
	take_owed(v);
	if (q == EVQ)
		send_transport_reset(d, v);
	if (q == TXQ) {
		bool pushed = false;
		while (kap_virtio_pop(d, TXQ, &v->elem) > 0) {
			tx_packet(d, v, &v->elem);
			kap_vq_push(&d->vq[TXQ], v->elem.head, 0);
			pushed = true;
		}
		if (pushed)
			kap_virtio_notify(d, TXQ);
	}
	/* New credit, replies and RSTs from tx; host-side events and new buffers for rx. */
	if (q == TXQ || q == RXQ)
		service(d, v);
	pthread_mutex_unlock(&d->lock);
}

/*
 * The driver reset the device: its connections are gone (§5.10.6.6). On a vCPU thread,
 * d->lock held: the sockets are closed by the device thread's next round (free_dead), which
 * their pending events or the driver's first kick bring about.
 */
static void vsock_reset(struct kap_virtio_dev *d)
{
	struct vsock *v = d->priv;
	for (unsigned int i = 0; i < MAX_CONNS; i++)
		if (v->conns[i]) {
			v->dead[v->ndead++] = v->conns[i];
			v->conns[i] = NULL;
		}
	v->nrst = 0;
	v->nowed = 0;
}

/*
 * Device state (docs/vm.md, Snapshot format): struct vsock_state, the queued RSTs, then every
 * connection in slot order as struct vsock_conn_state followed by its pending bytes: the
 * "CONNECT" line read so far (C_LINE) or the guest's data the host socket has not taken yet.
 * Bytes from the host the guest has not received are not here: kapsel reads a host socket
 * only when it can send, so they are still in the socket, which a migration hands over.
 */
struct vsock_state {
	uint64_t cid;
	uint32_t nconns, next_port;
	uint32_t nrst, flags; /* VS_RESET_PENDING */
};
struct vsock_conn_state {
	uint32_t local_port, peer_port, peer_buf_alloc, peer_fwd_cnt;
	uint32_t tx_cnt, rx_cnt, fwd_cnt, fwd_cnt_sent;
	uint32_t pending;
	uint8_t state, flags; /* CF_* */
	uint16_t reserved;
};
_Static_assert(sizeof(struct vsock_state) == 24, "vsock state layout");
_Static_assert(sizeof(struct vsock_conn_state) == 40, "vsock connection state layout");
_Static_assert(KAP_VIRTIO_DEV_STATE_MAX >=
		   sizeof(struct vsock_state) + MAX_RST * 8 +
		       MAX_CONNS * (sizeof(struct vsock_conn_state) + CONN_BUF),
	       "room for every connection's pending bytes");

#define VS_RESET_PENDING 1u
enum {
	CF_REQUEST = 1 << 0,
	CF_RESPONSE = 1 << 1,
	CF_CREDIT = 1 << 2,
	CF_SHUTDOWN = 1 << 3,
	CF_HOST_EOF = 1 << 4,
	CF_NO_SEND = 1 << 5,
	CF_NO_RCV = 1 << 6,
	CF_GUEST_INIT = 1 << 7,
	CF_ALL = (1 << 8) - 1,
};

static int vsock_save(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why)
{
	struct vsock *v = d->priv;
	struct vsock_state st = {.cid = v->cid,
				 .next_port = v->next_port,
				 .nrst = v->nrst,
				 .flags = v->reset_pending ? VS_RESET_PENDING : 0};
	size_t off = sizeof(st);
	for (unsigned int k = 0; k < v->nrst; k++) {
		uint32_t r[2] = {v->rst[k].local_port, v->rst[k].peer_port};
		memcpy(buf + off, r, sizeof(r));
		off += sizeof(r);
	}
	for (unsigned int i = 0; i < MAX_CONNS; i++) {
		const struct conn *c = v->conns[i];
		if (!c)
			continue;
		struct vsock_conn_state cs = {
		    .local_port = c->local_port,
		    .peer_port = c->peer_port,
		    .peer_buf_alloc = c->peer_buf_alloc,
		    .peer_fwd_cnt = c->peer_fwd_cnt,
		    .tx_cnt = c->tx_cnt,
		    .rx_cnt = c->rx_cnt,
		    .fwd_cnt = c->fwd_cnt,
		    .fwd_cnt_sent = c->fwd_cnt_sent,
		    .pending = c->state == C_LINE ? c->line_len : c->out_len,
		    .state = (uint8_t)c->state,
		    .flags = (uint8_t)((c->need_request ? CF_REQUEST : 0) |
				       (c->need_response ? CF_RESPONSE : 0) |
				       (c->need_credit ? CF_CREDIT : 0) |
				       (c->need_shutdown ? CF_SHUTDOWN : 0) |
				       (c->host_eof ? CF_HOST_EOF : 0) |
				       (c->guest_no_send ? CF_NO_SEND : 0) |
				       (c->guest_no_rcv ? CF_NO_RCV : 0) |
				       (c->guest_init ? CF_GUEST_INIT : 0)),
		};
		if (off + sizeof(cs) + cs.pending > cap) {
			*why = "device state too large";
			return -1;
		}
		memcpy(buf + off, &cs, sizeof(cs));
		off += sizeof(cs);
		if (c->state == C_LINE) {
			memcpy(buf + off, c->line, c->line_len);
		} else {
			uint32_t run = CONN_BUF - c->out_head;
			if (run > c->out_len)
				run = c->out_len;
			memcpy(buf + off, c->out + c->out_head, run);
			memcpy(buf + off + run, c->out, c->out_len - run);
		}
		off += cs.pending;
		st.nconns++;
	}
	memcpy(buf, &st, sizeof(st));
	return (int)off;
}

/* One connection's saved state, checked: "" when it is sound, else what is wrong. */
static const char *check_conn(const struct vsock_conn_state *cs)
{
	if (cs->state > C_ESTABLISHED || cs->reserved || (cs->flags & ~CF_ALL))
		return "a connection with an unknown state or flags";
	if (cs->state == C_LINE) {
		if (cs->pending >= LINE_MAX_ || cs->flags || cs->local_port || cs->peer_port ||
		    cs->tx_cnt || cs->rx_cnt || cs->fwd_cnt || cs->fwd_cnt_sent)
			return "a connection waiting for its CONNECT line with more than a line";
		return "";
	}
	/* What the guest sent and the host socket has not taken is exactly what is pending. */
	if (cs->pending > CONN_BUF || cs->rx_cnt - cs->fwd_cnt != cs->pending)
		return "a connection whose pending bytes differ from its counters";
	if (cs->fwd_cnt - cs->fwd_cnt_sent > cs->rx_cnt - cs->fwd_cnt_sent)
		return "a connection whose credit counters are out of order";
	if (cs->state == C_REQUESTED && (cs->pending || cs->tx_cnt || cs->rx_cnt))
		return "a connection that carried data before it was accepted";
	/* The guest's REQUEST made it established at once; kapsel never requests for it. */
	if ((cs->flags & CF_GUEST_INIT) && (cs->state != C_ESTABLISHED || (cs->flags & CF_REQUEST)))
		return "a guest-initiated connection that is not established";
	return "";
}

/* The sockets of a migration's source, in its connections' order (migrate.c). */
unsigned int kap_virtio_vsock_fds(struct kap_virtio_dev *d, int *fds, unsigned int cap)
{
	struct vsock *v = d->priv;
	unsigned int n = 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned int i = 0; i < MAX_CONNS && n < cap; i++)
		if (v->conns[i])
			fds[n++] = v->conns[i]->fd;
	pthread_mutex_unlock(&d->lock);
	return n;
}

void kap_virtio_vsock_handover(struct kap_virtio_dev *d, int *fds, unsigned int n)
{
	struct vsock *v = d->priv;
	pthread_mutex_lock(&d->lock);
	v->handover = true;
	v->handed = fds;
	v->nhanded = n;
	pthread_mutex_unlock(&d->lock);
}

/*
 * A connection from its saved state and the guest data pending on it, with host socket fd,
 * or -1 for a restore's connection that restore_conns has not reconnected yet. NULL when out
 * of memory (fd is then the caller's still).
 */
static struct conn *conn_from_state(struct vsock *v, const struct vsock_conn_state *cs,
				    const uint8_t *pending, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	uint8_t *out = malloc(CONN_BUF);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.fd = fd};
	if (!c || !out || (fd >= 0 && epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)) {
		free(c);
		free(out);
		return NULL;
	}
	*c = (struct conn){
	    .fd = fd,
	    .state = (enum conn_state)cs->state,
	    .local_port = cs->local_port,
	    .peer_port = cs->peer_port,
	    .peer_buf_alloc = cs->peer_buf_alloc,
	    .peer_fwd_cnt = cs->peer_fwd_cnt,
	    .tx_cnt = cs->tx_cnt,
	    .rx_cnt = cs->rx_cnt,
	    .fwd_cnt = cs->fwd_cnt,
	    .fwd_cnt_sent = cs->fwd_cnt_sent,
	    .need_request = cs->flags & CF_REQUEST,
	    .need_response = cs->flags & CF_RESPONSE,
	    .need_credit = cs->flags & CF_CREDIT,
	    .need_shutdown = cs->flags & CF_SHUTDOWN,
	    .host_eof = cs->flags & CF_HOST_EOF,
	    .guest_no_send = cs->flags & CF_NO_SEND,
	    .guest_no_rcv = cs->flags & CF_NO_RCV,
	    .guest_init = cs->flags & CF_GUEST_INIT,
	    .out = out,
	};
	if (c->state == C_LINE) {
		memcpy(c->line, pending, cs->pending);
		c->line_len = cs->pending;
	} else {
		memcpy(c->out, pending, cs->pending);
		c->out_len = cs->pending;
	}
	return c;
}

/*
 * Everything is checked before anything is applied. A migration's destination takes each
 * connection with the socket the source handed over; the fds it keeps are set to -1 in the
 * handed array, the rest stay the caller's. A restore (no handover) takes the connections
 * without sockets: restore_conns reconnects or resets them once every device is loaded. A
 * guest that cannot keep them (another CID, a transport reset owed) gets a transport reset.
 */
static int vsock_load(struct kap_virtio_dev *d, const uint8_t *buf, size_t len, const char **why)
{
	struct vsock *v = d->priv;
	struct vsock_state st;
	/* A state file written before vsock kept connections: nothing to check or keep. */
	if (len == 0 && !v->handover) {
		v->reset_pending = true;
		return 0;
	}
	if (len < sizeof(st)) {
		*why = "vsock state truncated";
		return -1;
	}
	memcpy(&st, buf, sizeof(st));
	if (st.nconns > MAX_CONNS || st.nrst > MAX_RST || (st.flags & ~VS_RESET_PENDING)) {
		*why = "vsock state with more connections or resets than a device holds";
		return -1;
	}
	size_t off = sizeof(st);
	if (len - off < (size_t)st.nrst * 8) {
		*why = "vsock state truncated";
		return -1;
	}
	struct rst rst[MAX_RST];
	for (unsigned int k = 0; k < st.nrst; k++, off += 8) {
		uint32_t r[2];
		memcpy(r, buf + off, sizeof(r));
		rst[k] = (struct rst){r[0], r[1]};
	}
	struct vsock_conn_state cs[MAX_CONNS];
	size_t data_off[MAX_CONNS];
	for (unsigned int k = 0; k < st.nconns; k++) {
		if (len - off < sizeof(cs[k])) {
			*why = "vsock state truncated";
			return -1;
		}
		memcpy(&cs[k], buf + off, sizeof(cs[k]));
		off += sizeof(cs[k]);
		const char *bad = check_conn(&cs[k]);
		if (*bad) {
			*why = bad;
			return -1;
		}
		if (len - off < cs[k].pending) {
			*why = "vsock state truncated";
			return -1;
		}
		data_off[k] = off;
		off += cs[k].pending;
		for (unsigned int j = 0; j < k; j++)
			if (cs[k].state != C_LINE && cs[j].state != C_LINE &&
			    cs[j].local_port == cs[k].local_port &&
			    cs[j].peer_port == cs[k].peer_port) {
				*why = "two vsock connections on the same ports";
				return -1;
			}
	}
	if (off != len) {
		*why = "vsock state longer than its connections";
		return -1;
	}
	if (v->handover && st.nconns != v->nhanded) {
		*why = st.nconns > v->nhanded
			   ? "the state has more vsock connections than the source handed sockets"
			   : "the source handed more sockets than the state has vsock connections";
		return -1;
	}
	if (v->handover && st.nconns && st.cid != v->cid) {
		*why = "the source's guest CID differs from this VM's (--vsock cid=), and its "
		       "connections would not reach the guest";
		return -1;
	}
	/* A restored guest with another CID, or owed a reset, drops its connections anyway. */
	if (!v->handover && (st.cid != v->cid || (st.flags & VS_RESET_PENDING))) {
		v->reset_pending = true;
		return 0;
	}
	struct conn *made[MAX_CONNS] = {0};
	unsigned int k = 0, n = 0;
	for (; k < st.nconns; k++) {
		/* A restore drops a host connection that never sent "CONNECT": the guest
		 * knows nothing of it. */
		if (!v->handover && cs[k].state == C_LINE)
			continue;
		if (!(made[n] = conn_from_state(v, &cs[k], buf + data_off[k],
						v->handover ? v->handed[k] : -1)))
			break;
		n++;
	}
	if (k < st.nconns) {
		for (unsigned int j = 0; j < n; j++) {
			if (made[j]->fd >= 0)
				epoll_ctl(v->epfd, EPOLL_CTL_DEL, made[j]->fd, NULL);
			free(made[j]->out);
			free(made[j]);
		}
		*why = "out of memory taking the vsock connections";
		return -1;
	}
	for (k = 0; k < n; k++)
		v->conns[k] = made[k];
	for (k = 0; v->handover && k < st.nconns; k++)
		v->handed[k] = -1;
	memcpy(v->rst, rst, sizeof(rst[0]) * st.nrst);
	v->nrst = st.nrst;
	v->next_port = st.next_port;
	v->reset_pending = st.flags & VS_RESET_PENDING;
	v->cid_changed = st.cid != v->cid;
	return 0;
}

/*
 * A restore's connections (docs/vm.md, virtio-vsock), on the restoring thread before any
 * vCPU runs (and before a jail closes). The VMM that held their host sockets is gone or went
 * on without this guest, so each connection gets a new host end where one can be found:
 *   - guest-initiated (to host port P): connect to this VM's PATH_P again, the listener the
 *     guest reached in the first place; the guest's stream goes on with its saved counters,
 *     and the guest's bytes the old socket had not taken are the new socket's first.
 *   - host-initiated ("CONNECT" on PATH): their client held the old VMM's socket, which no
 *     one can reach now: the guest gets a RST for each, and the others go on.
 * A listener that is gone resets its connection only. One warning line per reset.
 */
static void restore_conns(struct vsock *v)
{
	for (unsigned int i = 0; i < MAX_CONNS; i++) {
		struct conn *c = v->conns[i];
		if (!c || c->fd >= 0)
			continue;
		if (!c->guest_init) {
			kap_warn("vsock0: restore: the host connection to guest port %" PRIu32
				 " is reset (its client was connected to the snapshotted VMM)",
				 c->peer_port);
			owe_rst(v, c->local_port, c->peer_port);
			conn_free(v, i);
			continue;
		}
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%" PRIu32, v->path, c->local_port);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					 .data.fd = fd};
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			kap_warn("vsock0: restore: guest port %" PRIu32
				 "'s connection to host port %" PRIu32 " is reset: %s: %s",
				 c->peer_port, c->local_port, sa.sun_path, strerror(errno));
			if (fd >= 0)
				close(fd);
			owe_rst(v, c->local_port, c->peer_port);
			conn_free(v, i);
			continue;
		}
		c->fd = fd;
	}
}

/*
 * After a restore: the saved connections get their new host ends (restore_conns). A
 * migration's destination has taken them over instead. Either resets the transport only when
 * the state owed the guest a reset, or had another CID (a restore then keeps no connection).
 */
static void vsock_restored(struct kap_virtio_dev *d)
{
	struct vsock *v = d->priv;
	if (v->handover && v->cid_changed)
		v->reset_pending = true;
	if (!v->handover)
		restore_conns(v);
	v->handover = false;
	v->handed = NULL;
	v->nhanded = 0;
	send_transport_reset(d, v);
}

static void on_sockets(void *opaque, uint32_t events)
{
	(void)events;
	kap_virtio_kick(opaque, RXQ);
}

static int vsock_attach_loop(struct kap_virtio_dev *d, struct kap_loop *l,
			     struct kapsel_error **err)
{
	struct vsock *v = d->priv;
	return kap_loop_add(l, v->epfd, EPOLLIN | EPOLLET, on_sockets, d, err);
}

static void vsock_free(struct kap_virtio_dev *d)
{
	struct vsock *v = d->priv;
	if (!v)
		return;
	for (unsigned int i = 0; i < MAX_CONNS; i++)
		conn_free(v, i);
	free_dead(v);
	if (v->listen_fd >= 0) {
		close(v->listen_fd);
		unlink(v->path);
	}
	if (v->epfd >= 0)
		close(v->epfd);
	free(v->path);
	free(v);
	d->priv = NULL;
}

static const struct kap_virtio_ops vsock_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .nqueues = 3,
    .config_len = sizeof(uint64_t),
    .config_read = vsock_config_read,
    .process = vsock_process,
    .reset = vsock_reset,
    .free = vsock_free,
    .attach_loop = vsock_attach_loop,
    .restored = vsock_restored,
    .save = vsock_save,
    .load = vsock_load,
};

/* PATH must be free, or a stale socket nobody listens on (a killed kapsel's). */
static int check_path(const char *path, struct kapsel_error **err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : kap_error(err, errno, "--vsock socket %s", path);
	if (!S_ISSOCK(st.st_mode))
		return kap_error_plain(err, EEXIST, "--vsock socket %s: exists and is not a socket",
				       path);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	/* The caller checked that path fits. */
	memcpy(sa.sun_path, path, strlen(path) + 1);
	cleanup_close int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return kap_error_plain(err, EADDRINUSE, "--vsock socket %s: in use by another VM",
				       path);
	if (unlink(path) < 0)
		return kap_error(err, errno, "--vsock socket %s: remove the stale socket", path);
	return 0;
}

int kap_virtio_vsock_new(struct kap_virtio_dev *d, uint32_t cid, const char *path,
			 const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	int r = kap_virtio_init(d, &vsock_ops, "vsock0", mem, err);
	if (r < 0)
		return r;
	struct vsock *v = calloc(1, sizeof(*v));
	if (!v)
		return kap_error(err, ENOMEM, "vsock0");
	v->listen_fd = v->epfd = -EBADF;
	v->cid = cid;
	v->next_port = HOST_PORT0;
	d->priv = v;
	v->path = strdup(path);
	if (!v->path)
		return kap_error(err, ENOMEM, "vsock0");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return kap_error_plain(err, ENAMETOOLONG, "--vsock socket %s: path too long", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((r = check_path(path, err)) < 0)
		return r;
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (v->epfd < 0)
		return kap_error(err, errno, "vsock0: epoll_create1");
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kap_error(err, errno, "--vsock socket %s", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = kap_error(err, errno, "--vsock socket %s: bind", path);
		close(fd);
		return r;
	}
	v->listen_fd = fd;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	if (listen(fd, 16) < 0 || epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return kap_error(err, errno, "--vsock socket %s: listen", path);
	return 0;
}
