/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live migration to another kapsel on the same machine (docs/vm.md, Live migration): the
 * source (`kapsel vm migrate`, PUT /migrate) streams its RAM while the guest runs, then the
 * pages dirtied since, round after round over KVM's dirty log (the one Diff snapshots use),
 * until what is left is estimated to go across within --max-downtime at the measured
 * bandwidth, or the round cap is reached; then it pauses the guest, sends the last dirty pages
 * and the machine state (snapshot.c's state file bytes), and waits for the destination
 * (`kapsel vm run --incoming`) to acknowledge. Only then does the source end; any failure
 * before that (a destination that refuses, disappears or says the stream was bad, a cancel)
 * resumes the guest on the source as if nothing happened.
 *
 * The stream is hostile input to the destination: anyone who can connect to the address can
 * write it. Its rules:
 *  - every frame has a fixed header (type, payload length, CRC-32C of the payload,
 *    sequence number); the length is checked against the type's cap before a byte of payload
 *    is read, and the payload lands in a buffer of fixed size (PAGES) or one of at most
 * MIG_MAX_STATE bytes (STATE), never in a size the stream chose beyond those caps;
 *  - a payload is applied only after its CRC matched, and pages only inside RAM (offset page
 *    aligned, offset + pages within the RAM's size, no overflow);
 *  - the END frame carries the frame count, the byte count and a CRC-32C over every frame's
 *    CRC, so a stream that lost or repeated frames is refused before the guest runs;
 *  - the machine state goes through the same parser as a state file (kap_snap_parse).
 * The destination's guest never runs on a refused stream: it exits non-zero with one line.
 *
 * Only loopback: tcp addresses must be 127.0.0.1 (the stream is neither encrypted nor
 * authenticated, so it must not leave the machine).
 */
#include <arpa/inet.h>
#include <linux/virtio_ids.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "vmm/jail.h"
#include "vmm/migrate-fds.h"
#include "vmm/migrate.h"
#include "vmm/virtio/transport.h"
#include "vmm/vmm.h"

#define MIG_MAGIC	       "KAPSELMG"
#define MIG_VERSION	       1u
#define MIG_PAGE	       4096u
#define MIG_FRAME_PAGES	       256u /* 1 MiB of pages per PAGES frame */
#define MIG_MAX_HELLO	       4096u
#define MIG_MAX_REPLY	       512u
#define MIG_MAX_STATE	       (16u << 20)
#define MIG_IO_TIMEOUT_MS      30000
#define MIG_DEFAULT_DOWNTIME   300 /* ms, QEMU's default downtime-limit */
#define MIG_DEFAULT_ITERATIONS 30

enum { FR_HELLO = 1, FR_REPLY, FR_PAGES, FR_STATE, FR_END, FR_FDS };

/* Every frame's header, little-endian. */
struct mig_frame {
	uint32_t type, len, crc, seq;
};

struct mig_hello {
	char magic[8];
	uint32_t version, config_len;
	char kapsel_version[32];
	uint64_t mem_size;
	uint32_t ncpus, reserved;
	/* config_len bytes of config text follow */
};

struct mig_pages {
	uint64_t offset; /* into RAM as kapsel lays it out: low RAM, then RAM above 4 GiB */
	uint32_t npages, reserved;
};

struct mig_end {
	uint64_t frames, bytes; /* the frames and payload bytes before this one */
	uint32_t stream_crc;	/* CRC-32 over the CRCs of those frames */
	uint32_t reserved;
};

/*
 * The vsock connections' host sockets (migrate-fds.c): over unix: they ride on this frame's
 * payload as SCM_RIGHTS; over tcp: the destination takes fds[] out of process pid, whose
 * conn_fd is its end of the migration connection.
 */
struct mig_fds {
	uint32_t count;
	int32_t pid, conn_fd;
	uint32_t reserved;
	/* count int32_t descriptor numbers in the source follow */
};

struct mig_reply {
	uint32_t status; /* 0: accepted; 1: refused (the message says why) */
			 /* the message's text follows */
};

/*
 * CRC-32C (Castagnoli, iSCSI's: RFC 3720 B.4), reflected, initial and final value ~0: every
 * page goes through it on both sides while the guest is paused, so it must keep up with the
 * socket. SSE4.2's crc32 instruction computes it (8 bytes a step); without SSE4.2, a
 * slice-by-8 table does.
 */
static uint32_t crc_table[8][256];
static bool crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82F63B78u & -(c & 1u));
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] =
			    (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
}

uint32_t kap_migrate_crc32c_sw(uint32_t crc, const void *data, size_t n)
{
	const uint8_t *p = data;
	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8); /* little-endian: x86 */
		w ^= crc;
		crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
		      crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
		      crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
		      crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
	}
	while (n--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							    size_t n)
{
	uint64_t c = ~crc & 0xffffffffu;
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
	}
	uint32_t c32 = (uint32_t)c;
	while (n--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return ~c32;
}

uint32_t kap_migrate_crc32c(uint32_t crc, const void *data, size_t n)
{
	pthread_once(&crc_once, crc_init);
	return crc_hw ? crc32c_hw(crc, data, n) : kap_migrate_crc32c_sw(crc, data, n);
}

static const char *frame_name(uint32_t t)
{
	static const char *names[] = {"?", "HELLO", "REPLY", "PAGES", "STATE", "END", "FDS"};
	return t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* ---- addresses ---- */

struct mig_addr {
	bool unix_;
	struct sockaddr_un un;
	struct sockaddr_in in;
};

static int parse_addr(const char *s, struct mig_addr *a, struct kapsel_error **err)
{
	*a = (struct mig_addr){0};
	if (!strncmp(s, "unix:", 5)) {
		const char *path = s + 5;
		if (!path[0] || strlen(path) >= sizeof(a->un.sun_path))
			return kap_error_plain(
			    err, EINVAL,
			    "migration address %s: the unix socket path is empty "
			    "or longer than %zu bytes",
			    s, sizeof(a->un.sun_path) - 1);
		a->unix_ = true;
		a->un.sun_family = AF_UNIX;
		strcpy(a->un.sun_path, path);
		return 0;
	}
	if (!strncmp(s, "tcp:", 4)) {
		const char *host = s + 4, *colon = strrchr(host, ':');
		char *end;
		unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
		if (!colon || !colon[1] || *end || port == 0 || port > 65535)
			return kap_error_plain(err, EINVAL,
					       "migration address %s: expected tcp:127.0.0.1:PORT "
					       "with PORT in 1..65535",
					       s);
		/* The stream is not encrypted or authenticated: it must not leave the host. */
		if ((size_t)(colon - host) != 9 || strncmp(host, "127.0.0.1", 9))
			return kap_error_plain(
			    err, EINVAL,
			    "migration address %s: only 127.0.0.1 is allowed "
			    "(the stream is neither encrypted nor authenticated)",
			    s);
		a->in.sin_family = AF_INET;
		a->in.sin_port = htons((uint16_t)port);
		a->in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return 0;
	}
	return kap_error_plain(err, EINVAL,
			       "migration address %s: expected unix:PATH or tcp:127.0.0.1:PORT", s);
}

int kap_migrate_check_addr(const char *s, struct kapsel_error **err)
{
	struct mig_addr a;
	return parse_addr(s, &a, err);
}

static const struct sockaddr *addr_sa(const struct mig_addr *a, socklen_t *len)
{
	*len = a->unix_ ? sizeof(a->un) : sizeof(a->in);
	return a->unix_ ? (const struct sockaddr *)&a->un : (const struct sockaddr *)&a->in;
}

/*
 * The machine's shape as the handshake compares it: the state file's CONFIG text plus what
 * shapes the machine without being in a snapshot's (the CPU model's CPUID, the ACPI tables
 * and PM device, the virtio transport's host bridge). malloc'd; NULL on ENOMEM.
 */
static char *mig_config_text(const struct kap_vm *vm)
{
	cleanup_free char *base = kap_snap_config_text(vm);
	const struct kapsel_vm_config *c = vm->cfg;
	char *s = NULL;
	if (!base ||
	    asprintf(&s, "%scpu_model=%s\nacpi=%s\ntransport=%s\n", base,
		     c->cpu_model ? c->cpu_model : "host", c->acpi_full ? "full" : "reduced",
		     c->transport == KAPSEL_VM_TRANSPORT_MMIO ? "mmio" : "pci") < 0)
		return NULL;
	return s;
}

/* ---- framed I/O ---- */

struct mig_conn {
	int fd;
	int signal_fd; /* destination: SIGINT/SIGTERM end a wait; -1 on the source */
	uint32_t seq;  /* frames sent (source) or received (destination) so far */
	uint64_t bytes;
	uint32_t stream_crc;
	atomic_bool *cancel;	/* source: set by kap_migrate_cancel */
	struct kap_mig_fds *rx; /* destination: descriptors that came with the stream */
};

static int send_all(struct mig_conn *c, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		if (c->cancel && atomic_load(c->cancel))
			return -ECANCELED;
		ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Sends one frame of payload head (hlen bytes) followed by data (dlen bytes). */
static int send_frame(struct mig_conn *c, uint32_t type, const void *head, size_t hlen,
		      const void *data, size_t dlen)
{
	uint32_t crc = kap_migrate_crc32c(kap_migrate_crc32c(0, head, hlen), data, dlen);
	struct mig_frame f = {
	    .type = type, .len = (uint32_t)(hlen + dlen), .crc = crc, .seq = c->seq};
	int r;
	if ((r = send_all(c, &f, sizeof(f))) < 0 || (hlen && (r = send_all(c, head, hlen)) < 0) ||
	    (dlen && (r = send_all(c, data, dlen)) < 0))
		return r;
	c->seq++;
	c->bytes += hlen + dlen;
	c->stream_crc = kap_migrate_crc32c(c->stream_crc, &crc, 4);
	return 0;
}

static bool is_unix(int fd)
{
	int dom = 0;
	socklen_t l = sizeof(dom);
	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) == 0 && dom == AF_UNIX;
}

/* The vsock device of vm, or NULL. */
static struct kap_virtio_dev *vsock_dev(struct kap_vm *vm)
{
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		if (vm->virtio[i].dev.ops->device_id == VIRTIO_ID_VSOCK)
			return &vm->virtio[i].dev;
	return NULL;
}

/*
 * The FDS frame, when the vsock device has connections: their host sockets, in the order the
 * STATE frame lists them (the devices are quiesced, so it is the same set). Over unix: they
 * are attached to the payload's first bytes (SCM_RIGHTS); over tcp the destination takes them
 * with pidfd_getfd (migrate-fds.c).
 */
static int send_fds(struct kap_vm *vm, struct mig_conn *c)
{
	struct kap_virtio_dev *d = vsock_dev(vm);
	int fds[KAP_MIG_MAX_FDS];
	unsigned int n = d ? kap_virtio_vsock_fds(d, fds, KAP_MIG_MAX_FDS) : 0;
	if (!n)
		return 0;
	struct {
		struct mig_fds h;
		int32_t fd[KAP_MIG_MAX_FDS];
	} p = {.h = {.count = n, .pid = (int32_t)kap_jail_host_pid(), .conn_fd = c->fd}};
	for (unsigned int i = 0; i < n; i++)
		p.fd[i] = fds[i];
	size_t len = sizeof(p.h) + n * sizeof(int32_t);
	uint32_t crc = kap_migrate_crc32c(0, &p, len);
	struct mig_frame f = {.type = FR_FDS, .len = (uint32_t)len, .crc = crc, .seq = c->seq};
	int r = send_all(c, &f, sizeof(f));
	if (r < 0)
		return r;
	size_t done = 0;
	if (is_unix(c->fd)) {
		ssize_t w = kap_mig_send_fds(c->fd, &p, len, fds, n);
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		done = (size_t)w;
	}
	if ((r = send_all(c, (const uint8_t *)&p + done, len - done)) < 0)
		return r;
	c->seq++;
	c->bytes += len;
	c->stream_crc = kap_migrate_crc32c(c->stream_crc, &crc, 4);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Reads exactly n bytes, waiting at most MIG_IO_TIMEOUT_MS for each piece. 0, or -EPIPE at
 * the end of the stream, -ETIMEDOUT, -EINTR (a stop signal), -ECANCELED, -errno.
 */
static int recv_all(struct mig_conn *c, void *p, size_t n)
{
	uint8_t *b = p;
	int64_t deadline = now_ms() + MIG_IO_TIMEOUT_MS;
	while (n) {
		if (c->cancel && atomic_load(c->cancel))
			return -ECANCELED;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN},
				       {.fd = c->signal_fd, .events = POLLIN}};
		/* The source looks at its cancel flag at least every 200 ms. */
		int k = poll(pf, c->signal_fd >= 0 ? 2 : 1,
			     (int)(c->cancel && left > 200 ? 200 : left));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			continue;
		if (c->signal_fd >= 0 && (pf[1].revents & POLLIN))
			return -EINTR;
		ssize_t r =
		    c->rx ? kap_mig_recv(c->fd, b, n, c->rx) : recv(c->fd, b, n, MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		b += r;
		n -= (size_t)r;
		deadline = now_ms() + MIG_IO_TIMEOUT_MS;
	}
	return 0;
}

/* ---- the source ---- */

enum mig_state { MIG_NONE, MIG_ACTIVE, MIG_COMPLETED, MIG_FAILED, MIG_CANCELLED };

struct kap_migration {
	struct kap_vm *vm;
	pthread_t thread;
	bool joinable;
	atomic_bool cancel;
	int fd;	    /* the connection, for a cancel's shutdown; -1 when none */
	int handed; /* the connection the API client dialled and handed over; -1: dial here */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Under lock: what GET /migrate reports. */
	enum mig_state state;
	char dest[128];
	uint64_t max_downtime_ms;
	unsigned int max_iterations;
	unsigned int rounds;
	uint64_t sent_bytes, remaining_pages, downtime_ms, total_ms, bandwidth;
	char error[512];
	bool collected; /* a GET /migrate saw the end (the source then exits) */
	bool committed; /* END is being sent: too late to cancel */
	uint8_t *buf;	/* MIG_FRAME_PAGES pages: what a PAGES frame sends */
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t popcount_map(const uint64_t *map, uint64_t pages)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(map[i]);
	return n;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	for (size_t i = 0; i < MIG_PAGE / 8; i++)
		if (q[i])
			return false;
	return true;
}

/*
 * Sends the pages set in map (all of RAM when map is NULL, zero pages left out: the
 * destination's fresh RAM is zero), in runs of at most MIG_FRAME_PAGES. paused: the guest
 * cannot write them now.
 */
static int send_pages(struct kap_migration *m, struct mig_conn *c, const uint64_t *map, bool paused)
{
	const struct kap_guest_mem *mem = &m->vm->mem;
	uint64_t pages = mem->size / MIG_PAGE;
	for (uint64_t n = 0; n < pages;) {
		if (map && n % 64 == 0 && !map[n / 64]) {
			n += 64;
			continue;
		}
		bool want =
		    map ? (map[n / 64] >> (n % 64)) & 1 : !page_is_zero(mem->host + n * MIG_PAGE);
		if (!want) {
			n++;
			continue;
		}
		uint64_t run = n + 1;
		while (run < pages && run - n < MIG_FRAME_PAGES &&
		       (map ? (map[run / 64] >> (run % 64)) & 1
			    : !page_is_zero(mem->host + run * MIG_PAGE)))
			run++;
		struct mig_pages h = {.offset = n * MIG_PAGE, .npages = (uint32_t)(run - n)};
		/*
		 * A running guest may write the pages meanwhile (their next round sends them
		 * again), and a CRC over memory that changed under it would not match what went
		 * out: a copy is checksummed and sent. A paused guest's RAM is sent in place
		 * (no device writes it: the virtio devices are quiesced, mig_thread).
		 */
		const uint8_t *src = mem->host + n * MIG_PAGE;
		if (!paused) {
			memcpy(m->buf, src, (run - n) * MIG_PAGE);
			src = m->buf;
		}
		int r = send_frame(c, FR_PAGES, &h, sizeof(h), src, (run - n) * MIG_PAGE);
		if (r < 0)
			return r;
		n = run;
	}
	pthread_mutex_lock(&m->lock);
	m->sent_bytes = c->bytes;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/* Reads the destination's REPLY: 0 when accepted, else an error with its message. */
static int read_reply(struct kap_migration *m, struct mig_conn *c, const char *when, bool *refused,
		      struct kapsel_error **err)
{
	struct mig_frame f;
	char msg[MIG_MAX_REPLY + 1];
	int r = recv_all(c, &f, sizeof(f));
	if (r == 0 && (f.type != FR_REPLY || f.len < sizeof(struct mig_reply) ||
		       f.len > sizeof(struct mig_reply) + MIG_MAX_REPLY))
		return kap_error_plain(err, EPROTO,
				       "migration to %s: %s: the destination sent a bad reply "
				       "(frame type %u, %u bytes)",
				       m->dest, when, f.type, f.len);
	struct mig_reply rep;
	size_t mlen = r == 0 ? f.len - sizeof(rep) : 0;
	if (r == 0 && (r = recv_all(c, &rep, sizeof(rep))) == 0)
		r = recv_all(c, msg, mlen);
	if (r < 0)
		return kap_error_plain(
		    err, -r, "migration to %s: %s: no reply from the destination (%s)", m->dest,
		    when, r == -EPIPE ? "it closed the connection" : strerror(-r));
	msg[mlen] = 0;
	for (size_t i = 0; i < mlen; i++)
		if ((unsigned char)msg[i] < 0x20 || (unsigned char)msg[i] == 0x7f)
			msg[i] = '?';
	if (rep.status != 0) {
		*refused = true;
		return kap_error_plain(err, EPROTO,
				       "migration to %s: the destination refused it: %s", m->dest,
				       mlen ? msg : "no reason given");
	}
	return 0;
}

static int recv_reply(struct kap_migration *m, struct mig_conn *c, const char *when,
		      struct kapsel_error **err)
{
	bool refused = false;
	return read_reply(m, c, when, &refused, err);
}

static int send_error(struct kap_migration *m, int r, const char *when, struct kapsel_error **err)
{
	if (r == -ECANCELED || atomic_load(&m->cancel))
		return kap_error_plain(err, ECANCELED, "migration to %s: cancelled", m->dest);
	/*
	 * A destination that refuses a frame says why before it closes (the vsock sockets of a
	 * jailed destination over tcp, for one): the reason is still in the socket.
	 */
	if ((r == -EPIPE || r == -ECONNRESET) && m->fd >= 0) {
		struct mig_conn c = {.fd = m->fd, .signal_fd = -1, .cancel = &m->cancel};
		bool refused = false;
		int rr = read_reply(m, &c, when, &refused, err);
		if (refused)
			return rr;
		if (err && *err) {
			kapsel_error_free(*err);
			*err = NULL;
		}
	}
	return kap_error_plain(err, -r, "migration to %s: %s: %s", m->dest, when,
			       r == -EPIPE || r == -ECONNRESET
				   ? "the destination closed the connection"
			       : r == -EAGAIN ? "the destination stopped reading"
					      : strerror(-r));
}

/* The stream's socket options: a send blocked this long is a destination that stopped reading. */
static void conn_options(int fd, bool unix_)
{
	struct timeval tv = {.tv_sec = MIG_IO_TIMEOUT_MS / 1000};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (!unix_) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

static int dial(const char *dest, const atomic_bool *cancel, struct kapsel_error **err)
{
	struct mig_addr a;
	int r = parse_addr(dest, &a, err);
	if (r < 0)
		return r;
	int fd = socket(a.unix_ ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kap_error(err, errno, "migration to %s: socket", dest);
	socklen_t len;
	const struct sockaddr *sa = addr_sa(&a, &len);
	conn_options(fd, a.unix_);
	/*
	 * A destination binds its socket (the file appears) a moment before it listens:
	 * ECONNREFUSED is tried again for a second before it counts.
	 */
	for (int tries = 0;; tries++) {
		if (connect(fd, sa, len) == 0)
			return fd;
		if (errno == EINTR || (errno == ECONNREFUSED && tries < 20 &&
				       !(cancel && atomic_load(cancel)) && usleep(50000) == 0))
			continue;
		r = kap_error(err, errno, "migration to %s: connect", dest);
		close(fd);
		return r;
	}
}

int kap_migrate_dial(const char *dest, struct kapsel_error **err)
{
	return dial(dest, NULL, err);
}

/*
 * The connection to the destination: dialled here, or the one the API client dialled and
 * handed over with PUT /migrate (a jailed VMM can reach no address itself). A handed one must
 * be a connected stream socket of the address's kind: anything else would only fail later.
 */
static int connect_dest(struct kap_migration *m, struct kapsel_error **err)
{
	if (m->handed < 0)
		return dial(m->dest, &m->cancel, err);
	int fd = m->handed;
	m->handed = -1;
	struct mig_addr a;
	int r = parse_addr(m->dest, &a, err);
	int domain = 0, type = 0;
	socklen_t dl = sizeof(domain), tl = sizeof(type);
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	if (r == 0 && (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) < 0 ||
		       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
		       domain != (a.unix_ ? AF_UNIX : AF_INET) || type != SOCK_STREAM ||
		       getpeername(fd, (struct sockaddr *)&peer, &pl) < 0))
		r = kap_error_plain(err, EINVAL,
				    "migration to %s: the connection the client handed over is not "
				    "a connected %s stream socket",
				    m->dest, a.unix_ ? "unix" : "TCP");
	if (r < 0) {
		close(fd);
		return r;
	}
	conn_options(fd, a.unix_);
	return fd;
}

/* The migration itself; the guest runs on the source again whenever it fails. */
static int migrate(struct kap_migration *m, struct kapsel_error **err)
{
	struct kap_vm *vm = m->vm;
	int64_t t0 = now_us();
	int fd = connect_dest(m, err);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&m->lock);
	m->fd = fd;
	pthread_mutex_unlock(&m->lock);
	struct mig_conn c = {.fd = fd, .signal_fd = -1, .cancel = &m->cancel};
	cleanup_free char *cfg = mig_config_text(vm);
	if (!cfg)
		return kap_error(err, ENOMEM, "migration");
	struct mig_hello h = {.magic = MIG_MAGIC,
			      .version = MIG_VERSION,
			      .config_len = (uint32_t)strlen(cfg),
			      .mem_size = vm->mem.size,
			      .ncpus = vm->ncpus};
	snprintf(h.kapsel_version, sizeof(h.kapsel_version), "%s", KAPSEL_VERSION);
	int r = send_frame(&c, FR_HELLO, &h, sizeof(h), cfg, strlen(cfg));
	if (r < 0)
		return send_error(m, r, "handshake", err);
	if ((r = recv_reply(m, &c, "handshake", err)) < 0)
		return r;

	/*
	 * The dirty log starts empty here. A log a Full snapshot had started is cleared by it:
	 * the caller turns logging off afterwards, so the next Diff snapshot is refused until a
	 * Full one, as after a failed snapshot.
	 */
	cleanup_free uint64_t *map = NULL;
	if (vm->mem.dirty_log)
		r = kap_mem_dirty_log(&vm->mem, vm->fd, &map, err);
	else
		r = kap_mem_set_dirty_log(&vm->mem, vm->fd, true, err);
	if (r < 0)
		return r;
	free(map);
	map = NULL;

	/* Round 1: all of RAM while the guest runs. */
	int64_t ts = now_us();
	uint64_t before = c.bytes;
	if ((r = send_pages(m, &c, NULL, false)) < 0)
		return send_error(m, r, "round 1", err);
	unsigned int rounds = 1;
	uint64_t pages = vm->mem.size / MIG_PAGE;
	for (;;) {
		int64_t dt = now_us() - ts;
		/* bytes per second of the last round; a round too short to time counts as fast */
		uint64_t bw = (c.bytes - before) * 1000000ULL / (uint64_t)(dt > 0 ? dt : 1);
		if (bw < (1u << 20))
			bw = 1u << 20;
		free(map);
		map = NULL;
		if ((r = kap_mem_dirty_log(&vm->mem, vm->fd, &map, err)) < 0)
			return r;
		uint64_t dirty = popcount_map(map, pages);
		uint64_t est_ms = dirty * MIG_PAGE * 1000 / bw;
		pthread_mutex_lock(&m->lock);
		m->rounds = rounds;
		m->remaining_pages = dirty;
		m->bandwidth = bw;
		pthread_mutex_unlock(&m->lock);
		kap_debug("migration: round %u: %" PRIu64 " dirty pages, ~%" PRIu64
			  " ms at %" PRIu64 " MiB/s",
			  rounds, dirty, est_ms, bw >> 20);
		if (est_ms <= m->max_downtime_ms || rounds >= m->max_iterations)
			break;
		ts = now_us();
		before = c.bytes;
		if ((r = send_pages(m, &c, map, false)) < 0)
			return send_error(m, r, "pre-copy", err);
		rounds++;
	}

	/* Stop and copy: the pages left, those dirtied since the last read, the state. */
	cleanup_error struct kapsel_error *perr = NULL;
	int64_t tp = now_us();
	if ((r = kap_vm_pause(vm, &perr)) < 0 && r != -EBUSY)
		return kap_error_plain(err, -r, "migration to %s: pause: %s", m->dest, perr->msg);
	bool we_paused = r == 0;
	int64_t tpaused = now_us();
	uint64_t *last = NULL;
	if ((r = kap_mem_dirty_log(&vm->mem, vm->fd, &last, err)) < 0)
		goto resume;
	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		map[i] |= last[i];
	free(last);
	uint8_t *state = NULL;
	size_t state_len = 0;
	if ((r = send_pages(m, &c, map, true)) < 0) {
		r = send_error(m, r, "stop-and-copy", err);
		goto resume;
	}
	int64_t tsent = now_us();
	if ((r = kap_snap_state(vm, &state, &state_len, err)) < 0)
		goto resume;
	int64_t tstate = now_us();
	r = send_frame(&c, FR_STATE, NULL, 0, state, state_len);
	free(state);
	if (r < 0) {
		r = send_error(m, r, "machine state", err);
		goto resume;
	}
	if ((r = send_fds(vm, &c)) < 0) {
		r = send_error(m, r, "vsock sockets", err);
		goto resume;
	}
	/*
	 * Past this point the destination may have the whole VM and start it as soon as it
	 * acknowledges: a cancel would leave the guest running twice, so none is taken.
	 */
	pthread_mutex_lock(&m->lock);
	if (atomic_load(&m->cancel)) {
		pthread_mutex_unlock(&m->lock);
		r = send_error(m, -ECANCELED, "end", err);
		goto resume;
	}
	m->committed = true;
	c.cancel = NULL;
	pthread_mutex_unlock(&m->lock);
	struct mig_end e = {.frames = c.seq, .bytes = c.bytes, .stream_crc = c.stream_crc};
	if ((r = send_frame(&c, FR_END, &e, sizeof(e), NULL, 0)) < 0) {
		r = send_error(m, r, "end", err);
		goto resume;
	}
	if ((r = recv_reply(m, &c, "completion", err)) < 0)
		goto resume;
	int64_t t1 = now_us();
	kap_debug("migration: stop-and-copy: pause %" PRId64 " us, last pages %" PRId64
		  " us, state %" PRId64 " us (%zu bytes), to the reply %" PRId64 " us",
		  tpaused - tp, tsent - tpaused, tstate - tsent, state_len, t1 - tstate);
	pthread_mutex_lock(&m->lock);
	m->rounds = rounds + 1;
	m->sent_bytes = c.bytes;
	m->downtime_ms = (uint64_t)(t1 - tp) / 1000;
	m->total_ms = (uint64_t)(t1 - t0) / 1000;
	pthread_mutex_unlock(&m->lock);
	return 0;
resume:
	if (we_paused) {
		cleanup_error struct kapsel_error *rerr = NULL;
		if (kap_vm_resume(vm, &rerr) < 0)
			kap_warn("migration: resume after a failed migration: %s", rerr->msg);
	}
	return r;
}

static void *mig_thread(void *arg)
{
	struct kap_migration *m = arg;
	struct kap_vm *vm = m->vm;
	pthread_setname_np(pthread_self(), "vm-migrate");
	kap_jail_thread(KAP_JAIL_MIGRATE, 0);
	cleanup_error struct kapsel_error *e = NULL;
	/*
	 * Device threads write guest RAM from the host, which KVM's dirty log does not see: they
	 * stay out of their rings for the whole migration (the guest's requests wait and are
	 * served by the destination, or here again if the migration fails).
	 */
	kap_snap_quiesce(vm, true);
	int r = migrate(m, &e);
	if (r < 0)
		kap_snap_quiesce(vm, false);
	/* Logging costs a fault per first write to a page: off again (and see migrate()). */
	if (vm->mem.dirty_log) {
		cleanup_error struct kapsel_error *e2 = NULL;
		kap_mem_set_dirty_log(&vm->mem, vm->fd, false, &e2);
		vm->mem.dirty_log = false;
	}
	pthread_mutex_lock(&m->lock);
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	if (r == 0) {
		m->state = MIG_COMPLETED;
	} else {
		m->state = atomic_load(&m->cancel) ? MIG_CANCELLED : MIG_FAILED;
		snprintf(m->error, sizeof(m->error), "%s",
			 m->state == MIG_CANCELLED ? "cancelled"
			 : e			   ? e->msg
						   : strerror(-r));
	}
	pthread_cond_broadcast(&m->cond);
	if (r == 0) {
		kap_info("vm: migrated to %s: %u rounds, %" PRIu64 " ms downtime, %" PRIu64
			 " ms in all",
			 m->dest, m->rounds, m->downtime_ms, m->total_ms);
		/*
		 * The guest runs on the destination now. The source ends once `vm migrate`
		 * has read the result (GET /migrate), or after a few seconds without a reader.
		 */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 3;
		while (!m->collected && !atomic_load(&m->cancel) &&
		       pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0)
			;
	} else {
		kap_warn("vm: %s", m->error);
	}
	pthread_mutex_unlock(&m->lock);
	/*
	 * After a success the VM stays "migrating" (PATCH /vm refused) until it is gone: a
	 * resume now would run the guest here as well as at the destination.
	 */
	if (r == 0)
		kap_vm_request_exit(vm, KAP_VM_MIGRATED, 0, NULL);
	else
		atomic_store(&vm->migrating, false);
	return NULL;
}

static int start(struct kap_vm *vm, const struct kap_migrate_params *p, struct kapsel_error **err)
{
	struct mig_addr a;
	int r = parse_addr(p->dest, &a, err);
	if (r < 0)
		return r;
	/* The jail reaches no address (docs/vm.md, Jailer): its client dials for it. */
	if (vm->jail && p->fd < 0)
		return kap_error_plain(
		    err, EPERM,
		    "migrate: a jailed VMM (--jail) cannot dial %s: the API "
		    "client hands it the connection with the request (SCM_RIGHTS; "
		    "kapsel vm migrate does)",
		    p->dest);
	if (strlen(p->dest) >= sizeof(((struct kap_migration *)0)->dest))
		return kap_error_plain(err, ENAMETOOLONG, "migration address %s: too long",
				       p->dest);
	for (unsigned int i = 0; i < vm->nvirtio; i++)
		if (vm->virtio[i].dev.ops->device_id == VIRTIO_ID_FS)
			return kap_error_plain(
			    err, EOPNOTSUPP,
			    "migrate: %s: virtio-fs cannot be migrated (its node "
			    "table holds open host files)",
			    vm->virtio[i].dev.id);
	if (atomic_exchange(&vm->migrating, true))
		return kap_error_plain(err, EBUSY, "migrate: a migration is already in progress");
	struct kap_migration *m = vm->mig;
	if (m && m->joinable) {
		pthread_join(m->thread, NULL);
		m->joinable = false;
	}
	if (!m) {
		m = calloc(1, sizeof(*m));
		if (!m) {
			atomic_store(&vm->migrating, false);
			return kap_error(err, ENOMEM, "migrate");
		}
		pthread_mutex_init(&m->lock, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->cond, &ca);
		pthread_condattr_destroy(&ca);
		m->vm = vm;
		m->buf = malloc((size_t)MIG_FRAME_PAGES * MIG_PAGE);
		if (!m->buf) {
			free(m);
			atomic_store(&vm->migrating, false);
			return kap_error(err, ENOMEM, "migrate");
		}
		vm->mig = m;
	}
	pthread_mutex_lock(&m->lock);
	m->state = MIG_ACTIVE;
	snprintf(m->dest, sizeof(m->dest), "%s", p->dest);
	m->max_downtime_ms = p->max_downtime_ms ? p->max_downtime_ms : MIG_DEFAULT_DOWNTIME;
	m->max_iterations = p->max_iterations ? p->max_iterations : MIG_DEFAULT_ITERATIONS;
	m->rounds = 0;
	m->sent_bytes = m->remaining_pages = m->downtime_ms = m->total_ms = m->bandwidth = 0;
	m->error[0] = 0;
	m->collected = false;
	m->committed = false;
	m->fd = -1;
	atomic_store(&m->cancel, false);
	pthread_mutex_unlock(&m->lock);
	m->handed = p->fd;
	if ((r = pthread_create(&m->thread, NULL, mig_thread, m)) != 0) {
		m->handed = -1;
		m->state = MIG_FAILED;
		atomic_store(&vm->migrating, false);
		return kap_error(err, r, "migrate: start the migration thread");
	}
	m->joinable = true;
	kap_info("vm: migrating to %s", p->dest);
	return 0;
}

int kap_migrate_start(struct kap_vm *vm, const struct kap_migrate_params *p,
		      struct kapsel_error **err)
{
	int r = start(vm, p, err);
	if (r < 0 && p->fd >= 0)
		close(p->fd);
	return r;
}

int kap_migrate_cancel(struct kap_vm *vm, struct kapsel_error **err)
{
	struct kap_migration *m = vm->mig;
	if (!m || !atomic_load(&vm->migrating))
		return kap_error_plain(err, ENOENT, "migrate: no migration in progress");
	pthread_mutex_lock(&m->lock);
	bool active = m->state == MIG_ACTIVE;
	if (active && m->committed) {
		pthread_mutex_unlock(&m->lock);
		return kap_error_plain(err, EBUSY,
				       "migrate: too late to cancel: the destination has the whole "
				       "VM");
	}
	if (active) {
		atomic_store(&m->cancel, true);
		/* Wakes a send or recv blocked on the connection. */
		if (m->fd >= 0)
			shutdown(m->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&m->lock);
	if (!active)
		return kap_error_plain(err, ENOENT, "migrate: no migration in progress");
	return 0;
}

char *kap_migrate_status_json(struct kap_vm *vm)
{
	static const char *names[] = {"None", "Active", "Completed", "Failed", "Cancelled"};
	struct kap_migration *m = vm->mig;
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return NULL;
	if (!m) {
		kap_json_set(o, "state", kap_json_new_string("None"));
		return kap_json_dump(o, false);
	}
	pthread_mutex_lock(&m->lock);
	kap_json_set(o, "state", kap_json_new_string(names[m->state]));
	kap_json_set(o, "destination", kap_json_new_string(m->dest));
	kap_json_set(o, "rounds", kap_json_new_uint64(m->rounds));
	kap_json_set(o, "transferred_bytes", kap_json_new_uint64(m->sent_bytes));
	kap_json_set(o, "remaining_pages", kap_json_new_uint64(m->remaining_pages));
	kap_json_set(o, "bandwidth_bytes_per_s", kap_json_new_uint64(m->bandwidth));
	kap_json_set(o, "max_downtime_ms", kap_json_new_uint64(m->max_downtime_ms));
	kap_json_set(o, "max_iterations", kap_json_new_uint64(m->max_iterations));
	if (m->state == MIG_COMPLETED) {
		kap_json_set(o, "downtime_ms", kap_json_new_uint64(m->downtime_ms));
		kap_json_set(o, "total_ms", kap_json_new_uint64(m->total_ms));
	}
	if (m->error[0])
		kap_json_set(o, "error", kap_json_new_string(m->error));
	if (m->state != MIG_ACTIVE && m->state != MIG_NONE) {
		m->collected = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return kap_json_dump(o, false);
}

void kap_migrate_destroy(struct kap_vm *vm)
{
	struct kap_migration *m = vm->mig;
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	atomic_store(&m->cancel, true);
	if (m->fd >= 0)
		shutdown(m->fd, SHUT_RDWR);
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	if (m->joinable)
		pthread_join(m->thread, NULL);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m->buf);
	free(m);
	vm->mig = NULL;
}

/* ---- the destination ---- */

int kap_migrate_listen(struct kap_vm *vm, const char *addr, struct kapsel_error **err)
{
	struct mig_addr a;
	int r = parse_addr(addr, &a, err);
	if (r < 0)
		return r;
	int fd = socket(a.unix_ ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kap_error(err, errno, "--incoming %s: socket", addr);
	if (a.unix_) {
		struct stat st;
		if (lstat(a.un.sun_path, &st) == 0) {
			close(fd);
			return kap_error_plain(err, EEXIST, "--incoming %s: %s already exists",
					       addr, a.un.sun_path);
		}
	} else {
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	socklen_t len;
	const struct sockaddr *sa = addr_sa(&a, &len);
	/* Only this user may connect to a unix socket (the stream is not authenticated). */
	mode_t old = umask(0177);
	r = bind(fd, sa, len);
	umask(old);
	if (r < 0 || listen(fd, 1) < 0) {
		r = kap_error(err, errno, "--incoming %s", addr);
		close(fd);
		return r;
	}
	vm->incoming_fd = fd;
	if (a.unix_ && !(vm->incoming_path = strdup(a.un.sun_path))) {
		kap_migrate_unlisten(vm);
		unlink(a.un.sun_path);
		return kap_error(err, ENOMEM, "--incoming %s", addr);
	}
	kap_debug("vm: waiting for a migration on %s", addr);
	return 0;
}

/* The value of key in "key=value\n" text into out ("" when absent). */
static void config_value(const char *text, const char *key, char *out, size_t len)
{
	size_t kl = strlen(key);
	out[0] = 0;
	for (const char *l = text; *l;) {
		const char *nl = strchr(l, '\n');
		size_t ll = nl ? (size_t)(nl - l) : strlen(l);
		if (ll > kl && !strncmp(l, key, kl) && l[kl] == '=') {
			snprintf(out, len, "%.*s", (int)(ll - kl - 1), l + kl + 1);
			return;
		}
		l += ll + (nl ? 1 : 0);
	}
}

/*
 * The source's machine must be this one: every key of the config text but the kernel's path
 * (the kernel is in the RAM that comes across). Returns the reason, or NULL.
 */
static char *config_mismatch(const char *mine, const char *theirs)
{
	static const char *keys[] = {"mem_size",  "cpus", "cpu_features", "pit",  "debug_exit",
				     "cpu_model", "acpi", "transport",	  "accel"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char a[256], b[256];
		config_value(mine, keys[i], a, sizeof(a));
		config_value(theirs, keys[i], b, sizeof(b));
		/* A config text without accel is a KVM machine's (before the soft CPU had one). */
		if (!strcmp(keys[i], "accel")) {
			if (!a[0])
				strcpy(a, "kvm");
			if (!b[0])
				strcpy(b, "kvm");
		}
		if (strcmp(a, b)) {
			char *s = NULL;
			if (asprintf(&s,
				     "configuration differs: the source has %s=%s, this VM "
				     "%s=%s",
				     keys[i], b, keys[i], a) < 0)
				return strdup("configuration differs");
			return s;
		}
	}
	return NULL;
}

static int send_reply(struct mig_conn *c, uint32_t status, const char *msg)
{
	struct mig_reply rep = {.status = status};
	size_t n = msg ? strlen(msg) : 0;
	/* Replies go the other way: they are not part of the source's count. */
	struct mig_conn counted = *c;
	int r =
	    send_frame(c, FR_REPLY, &rep, sizeof(rep), msg, n < MIG_MAX_REPLY ? n : MIG_MAX_REPLY);
	*c = counted;
	return r;
}

/* Refuses the stream: tells the source why (best effort) and returns the one-line error. */
static int refuse(struct mig_conn *c, struct kapsel_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(struct mig_conn *c, struct kapsel_error **err, int errnum, const char *fmt, ...)
{
	char msg[MIG_MAX_REPLY];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	send_reply(c, 1, msg);
	/*
	 * TCP answers a close with unread bytes with a reset, which can drop the reply before the
	 * source reads it: half-close, then read what the source still sends (it stops at the
	 * reply), for a second at most.
	 */
	shutdown(c->fd, SHUT_WR);
	char sink[4096];
	for (int64_t end = now_ms() + 1000, left; (left = end - now_ms()) > 0;) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
	return kap_error_plain(err, errnum, "migration stream: %s", msg);
}

static int recv_error(struct mig_conn *c, int r, struct kapsel_error **err)
{
	if (r == -EINTR)
		return kap_error_plain(err, EINTR, "migration stream: stopped by a signal");
	if (r == -EPIPE)
		return kap_error_plain(err, EPIPE,
				       "migration stream: truncated at frame %u (the source closed "
				       "the connection)",
				       c->seq);
	if (r == -ETIMEDOUT)
		return kap_error_plain(err, ETIMEDOUT,
				       "migration stream: nothing received for %d s at frame %u",
				       MIG_IO_TIMEOUT_MS / 1000, c->seq);
	return kap_error_plain(err, -r, "migration stream: frame %u: %s", c->seq, strerror(-r));
}

/* One frame's header and payload into buf (cap bytes); the header is checked first. */
static int recv_frame(struct mig_conn *c, struct mig_frame *f, uint8_t **buf, uint8_t *fixed,
		      size_t fixed_cap, struct kapsel_error **err)
{
	int r = recv_all(c, f, sizeof(*f));
	if (r < 0)
		return recv_error(c, r, err);
	size_t cap;
	switch (f->type) {
	case FR_HELLO:
		cap = sizeof(struct mig_hello) + MIG_MAX_HELLO;
		break;
	case FR_PAGES:
		cap = sizeof(struct mig_pages) + MIG_FRAME_PAGES * MIG_PAGE;
		break;
	case FR_STATE:
		cap = MIG_MAX_STATE;
		break;
	case FR_END:
		cap = sizeof(struct mig_end);
		break;
	case FR_FDS:
		cap = sizeof(struct mig_fds) + KAP_MIG_MAX_FDS * sizeof(int32_t);
		break;
	default:
		return refuse(c, err, EPROTO,
			      "frame %u: unknown frame type %u (not a kapsel "
			      "migration stream?)",
			      c->seq, f->type);
	}
	if (f->seq != c->seq)
		return refuse(c, err, EPROTO, "frame %u (%s): sequence number %u", c->seq,
			      frame_name(f->type), f->seq);
	if (f->len > cap)
		return refuse(c, err, EMSGSIZE, "frame %u (%s): %u bytes, at most %zu allowed",
			      c->seq, frame_name(f->type), f->len, cap);
	*buf = fixed;
	if (f->len > fixed_cap && !(*buf = malloc(f->len)))
		return kap_error(err, ENOMEM, "migration stream: frame %u", c->seq);
	if ((r = recv_all(c, *buf, f->len)) < 0) {
		if (*buf != fixed)
			free(*buf);
		return recv_error(c, r, err);
	}
	if (kap_migrate_crc32c(0, *buf, f->len) != f->crc) {
		if (*buf != fixed)
			free(*buf);
		return refuse(c, err, EBADMSG, "frame %u (%s): checksum mismatch (corrupt stream)",
			      c->seq, frame_name(f->type));
	}
	c->seq++;
	c->bytes += f->len;
	c->stream_crc = kap_migrate_crc32c(c->stream_crc, &f->crc, 4);
	return 0;
}

static int check_hello(struct kap_vm *vm, struct mig_conn *c, const struct mig_frame *f,
		       const uint8_t *p, struct kapsel_error **err)
{
	struct mig_hello h;
	if (f->type != FR_HELLO || f->len < 8 || memcmp(p, MIG_MAGIC, 8))
		return refuse(c, err, EPROTO, "not a kapsel migration stream (bad magic)");
	if (f->len < sizeof(h))
		return refuse(c, err, EPROTO, "handshake truncated (%u bytes)", f->len);
	memcpy(&h, p, sizeof(h));
	if (h.version != MIG_VERSION)
		return refuse(c, err, EPROTO, "format version %u, this kapsel reads version %u",
			      h.version, MIG_VERSION);
	h.kapsel_version[sizeof(h.kapsel_version) - 1] = 0;
	for (char *q = h.kapsel_version; *q; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
			*q = '?';
	if (strcmp(h.kapsel_version, KAPSEL_VERSION))
		return refuse(c, err, EPROTO, "the source is kapsel %s, this is kapsel %s",
			      h.kapsel_version, KAPSEL_VERSION);
	if (h.config_len != f->len - sizeof(h))
		return refuse(c, err, EPROTO,
			      "handshake: config length %u does not match the "
			      "frame",
			      h.config_len);
	if (h.mem_size != vm->mem.size)
		return refuse(c, err, EINVAL,
			      "configuration differs: the source has %" PRIu64
			      " bytes of RAM, this VM %" PRIu64 " (--mem)",
			      h.mem_size, vm->mem.size);
	if (h.ncpus != vm->ncpus)
		return refuse(c, err, EINVAL,
			      "configuration differs: the source has %u vCPUs, this VM %u (--cpus)",
			      h.ncpus, vm->ncpus);
	cleanup_free char *theirs = strndup((const char *)p + sizeof(h), h.config_len);
	cleanup_free char *mine = mig_config_text(vm);
	if (!theirs || !mine)
		return kap_error(err, ENOMEM, "migration handshake");
	if (strlen(theirs) != h.config_len)
		return refuse(c, err, EPROTO, "handshake: NUL in the configuration");
	for (char *q = theirs; *q; q++)
		if (((unsigned char)*q < 0x20 && *q != '\n') || (unsigned char)*q == 0x7f)
			*q = '?';
	cleanup_free char *why = config_mismatch(mine, theirs);
	if (why)
		return refuse(c, err, EINVAL, "%s", why);
	return 0;
}

static int apply_pages(struct kap_vm *vm, struct mig_conn *c, const struct mig_frame *f,
		       const uint8_t *p, struct kapsel_error **err)
{
	struct mig_pages h;
	uint32_t seq = c->seq - 1;
	if (f->len < sizeof(h))
		return refuse(c, err, EPROTO, "frame %u (PAGES): %u bytes, shorter than its header",
			      seq, f->len);
	memcpy(&h, p, sizeof(h));
	uint64_t size = vm->mem.size;
	if (h.npages == 0 || h.npages > MIG_FRAME_PAGES ||
	    f->len != sizeof(h) + (uint64_t)h.npages * MIG_PAGE)
		return refuse(c, err, EPROTO, "frame %u (PAGES): %u pages in %u bytes", seq,
			      h.npages, f->len);
	if (h.offset % MIG_PAGE || h.offset >= size ||
	    (uint64_t)h.npages * MIG_PAGE > size - h.offset)
		return refuse(c, err, ERANGE,
			      "frame %u (PAGES): pages [0x%" PRIx64 ", +%u) outside RAM (%" PRIu64
			      " bytes)",
			      seq, h.offset, h.npages, size);
	memcpy(vm->mem.host + h.offset, p + sizeof(h), (size_t)h.npages * MIG_PAGE);
	return 0;
}

static void close_handed(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * An FDS frame: the vsock connections' host sockets, into handed (*n of them). Over unix they
 * came with the payload (SCM_RIGHTS) and must be exactly the count announced; over tcp they
 * are taken from the source process with pidfd_getfd (migrate-fds.c). Each must be a unix
 * stream socket, as a vsock connection's host side is.
 */
static int take_fds(struct mig_conn *c, const struct mig_frame *f, const uint8_t *p, int *handed,
		    unsigned int *n, struct kapsel_error **err)
{
	struct mig_fds h = {0};
	memcpy(&h, p, f->len < sizeof(h) ? f->len : sizeof(h));
	uint32_t seq = c->seq - 1;
	if (f->len < sizeof(h) || h.count == 0 || h.count > KAP_MIG_MAX_FDS || h.reserved ||
	    f->len != sizeof(h) + h.count * sizeof(int32_t))
		return refuse(c, err, EBADMSG, "frame %u (FDS): malformed (%u sockets in %u bytes)",
			      seq, h.count, f->len);
	if (is_unix(c->fd)) {
		if (c->rx->overflow || c->rx->n != h.count)
			return refuse(
			    c, err, EBADMSG,
			    "frame %u (FDS): %u sockets announced, %u came with the stream", seq,
			    h.count, c->rx->n);
		memcpy(handed, c->rx->fd, sizeof(int) * h.count);
		c->rx->n = 0;
	} else {
		int32_t src[KAP_MIG_MAX_FDS];
		memcpy(src, p + sizeof(h), h.count * sizeof(int32_t));
		const char *why = "";
		int r = kap_mig_take_fds(c->fd, h.pid, h.conn_fd, src, h.count, handed, &why);
		if (r < 0)
			return refuse(c, err, -r,
				      "frame %u (FDS): taking the source's vsock sockets over tcp: "
				      "%s: %s",
				      seq, why, strerror(-r));
	}
	*n = h.count;
	for (unsigned int i = 0; i < h.count; i++)
		if (!kap_mig_is_stream_unix(handed[i]))
			return refuse(c, err, EBADMSG,
				      "frame %u (FDS): descriptor %u is not a unix stream socket",
				      seq, i);
	return 0;
}

int kap_migrate_incoming(struct kap_vm *vm, int signal_fd, struct kapsel_error **err)
{
	struct pollfd pf[2] = {{.fd = vm->incoming_fd, .events = POLLIN},
			       {.fd = signal_fd, .events = POLLIN}};
	for (;;) {
		int k = poll(pf, 2, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return kap_error(err, errno, "--incoming: poll");
		if (pf[1].revents & POLLIN)
			return kap_error_plain(err, EINTR,
					       "--incoming: stopped by a signal while waiting for "
					       "the source");
		break;
	}
	cleanup_close int fd = accept4(vm->incoming_fd, NULL, NULL, SOCK_CLOEXEC);
	/* One source only: the socket (and its file) go as soon as it connected. */
	kap_migrate_unlisten(vm);
	if (fd < 0)
		return kap_error(err, errno, "--incoming: accept");
	struct kap_mig_fds rx = {0};
	struct mig_conn c = {.fd = fd, .signal_fd = signal_fd, .rx = &rx};
	/* The vsock connections' sockets the source handed over (FDS frame). */
	int handed[KAP_MIG_MAX_FDS];
	unsigned int nhanded = 0;
	bool got_fds = false;
	int64_t t0 = now_us();
	cleanup_free uint8_t *fixed = malloc(sizeof(struct mig_pages) + MIG_FRAME_PAGES * MIG_PAGE);
	if (!fixed)
		return kap_error(err, ENOMEM, "migration stream buffer");
	const size_t fixed_cap = sizeof(struct mig_pages) + MIG_FRAME_PAGES * MIG_PAGE;
	struct mig_frame f;
	uint8_t *p;
	int r = recv_frame(&c, &f, &p, fixed, fixed_cap, err);
	if (r < 0 || (r = check_hello(vm, &c, &f, p, err)) < 0) {
		kap_mig_fds_close(&rx);
		return r;
	}
	if ((r = send_reply(&c, 0, NULL)) < 0) {
		kap_mig_fds_close(&rx);
		return kap_error_plain(err, -r, "migration stream: handshake reply: %s",
				       strerror(-r));
	}
	struct kap_snap *snap = NULL;
	uint64_t npages = 0;
	for (;;) {
		uint32_t want_frames = c.seq;
		uint64_t want_bytes = c.bytes;
		uint32_t want_crc = c.stream_crc;
		if ((r = recv_frame(&c, &f, &p, fixed, fixed_cap, err)) < 0)
			goto fail;
		if (f.type == FR_PAGES) {
			if (snap) {
				r = refuse(&c, err, EPROTO,
					   "frame %u: PAGES after the machine state", c.seq - 1);
				goto fail;
			}
			if ((r = apply_pages(vm, &c, &f, p, err)) < 0)
				goto fail;
			npages += (f.len - sizeof(struct mig_pages)) / MIG_PAGE;
		} else if (f.type == FR_STATE) {
			if (snap) {
				if (p != fixed)
					free(p);
				r = refuse(&c, err, EPROTO, "frame %u: a second machine state",
					   c.seq - 1);
				goto fail;
			}
			/* kap_snap_parse owns p from here (a small state fits the fixed buffer). */
			uint8_t *own = p;
			if (p == fixed && !(own = malloc(f.len ? f.len : 1))) {
				r = kap_error(err, ENOMEM, "migration stream: state");
				goto fail;
			}
			if (own != p)
				memcpy(own, p, f.len);
			cleanup_error struct kapsel_error *e = NULL;
			if (kap_snap_parse(own, f.len, "machine state", &snap, &e) < 0) {
				r = refuse(&c, err, EINVAL, "frame %u: %s", c.seq - 1, e->msg);
				goto fail;
			}
			if (kap_snap_mem_size(snap) != vm->mem.size) {
				r = refuse(&c, err, EINVAL,
					   "frame %u: the machine state is of a VM with %" PRIu64
					   " bytes of RAM",
					   c.seq - 1, kap_snap_mem_size(snap));
				goto fail;
			}
		} else if (f.type == FR_FDS) {
			if (!snap || got_fds) {
				r = refuse(&c, err, EPROTO, "frame %u: sockets %s", c.seq - 1,
					   !snap ? "before the machine state" : "a second time");
				goto fail;
			}
			got_fds = true;
			/* pidfd_open finds pids in the caller's pid namespace: a jailed
			 * destination's holds itself alone. */
			if (vm->jail && !is_unix(c.fd)) {
				r = refuse(
				    &c, err, EOPNOTSUPP,
				    "frame %u (FDS): a jailed destination (--jail) cannot take "
				    "the source's vsock sockets over tcp: (its pid namespace "
				    "does not see the source): migrate over unix:",
				    c.seq - 1);
				goto fail;
			}
			if ((r = take_fds(&c, &f, p, handed, &nhanded, err)) < 0)
				goto fail;
		} else if (f.type == FR_END) {
			struct mig_end e;
			memcpy(&e, p, sizeof(e) <= f.len ? sizeof(e) : f.len);
			if (f.len != sizeof(e) || e.frames != want_frames ||
			    e.bytes != want_bytes || e.stream_crc != want_crc) {
				r = refuse(&c, err, EBADMSG,
					   "end: the stream does not add up (%u frames and %" PRIu64
					   " bytes received, the source says %" PRIu64
					   " and %" PRIu64 ")",
					   want_frames, want_bytes, e.frames, e.bytes);
				goto fail;
			}
			if (!snap) {
				r = refuse(&c, err, EPROTO, "end: no machine state was sent");
				goto fail;
			}
			if (rx.n || rx.overflow) {
				r = refuse(&c, err, EPROTO,
					   "end: descriptors came with the stream outside an FDS "
					   "frame");
				goto fail;
			}
			break;
		} else {
			r = refuse(&c, err, EPROTO, "frame %u: unexpected %s frame", c.seq - 1,
				   frame_name(f.type));
			goto fail;
		}
	}
	{
		cleanup_error struct kapsel_error *e = NULL;
		struct kap_virtio_dev *vs = vsock_dev(vm);
		if (!vs && nhanded) {
			r = refuse(&c, err, EPROTO,
				   "the source handed vsock sockets to a VM "
				   "without --vsock");
			goto fail;
		}
		/* The load takes the sockets of the connections it keeps. */
		if (vs)
			kap_virtio_vsock_handover(vs, handed, nhanded);
		if ((r = kap_snap_load(vm, snap, &e)) < 0) {
			r = refuse(&c, err, -r, "loading the machine state: %s", e->msg);
			goto fail;
		}
	}
	close_handed(handed, nhanded);
	kap_snap_free(snap);
	snap = NULL;
	/*
	 * No acknowledgement yet: the rest of the machine (event loop, console, API socket) may
	 * still fail to come up, and the source must not end unless this side will run the
	 * guest. kap_migrate_ack sends it just before the vCPUs start, kap_migrate_nak the
	 * reason when something failed first.
	 */
	vm->incoming_conn = fd;
	fd = -EBADF;
	kap_info("vm: incoming migration: %" PRIu64 " pages, %" PRIu64 " MiB in %" PRId64 " ms",
		 npages, c.bytes >> 20, (now_us() - t0) / 1000);
	return 0;
fail:
	close_handed(handed, nhanded);
	kap_mig_fds_close(&rx);
	kap_snap_free(snap);
	return r;
}

int kap_migrate_ack(struct kap_vm *vm, struct kapsel_error **err)
{
	struct mig_conn c = {.fd = vm->incoming_conn, .signal_fd = -1};
	int r = send_reply(&c, 0, NULL);
	close(vm->incoming_conn);
	vm->incoming_conn = -EBADF;
	/* The source did not hear it and runs the guest on: this side must not. */
	if (r < 0)
		return kap_error_plain(err, -r,
				       "migration stream: acknowledging: %s (the source keeps the "
				       "guest)",
				       strerror(-r));
	return 0;
}

void kap_migrate_nak(struct kap_vm *vm, const char *why)
{
	if (vm->incoming_conn < 0)
		return;
	struct mig_conn c = {.fd = vm->incoming_conn, .signal_fd = -1};
	send_reply(&c, 1, why);
	close(vm->incoming_conn);
	vm->incoming_conn = -EBADF;
}

void kap_migrate_unlisten(struct kap_vm *vm)
{
	kap_migrate_nak(vm, "the destination stopped");
	if (vm->incoming_fd >= 0)
		close(vm->incoming_fd);
	vm->incoming_fd = -EBADF;
	if (vm->incoming_path)
		unlink(vm->incoming_path);
	free(vm->incoming_path);
	vm->incoming_path = NULL;
}
