/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Name resolution on a user-defined network (what aardvark-dns is to podman): a small
 * responder on the network's gateway address (and on its IPv6 gateway on a dual-stack network),
 * UDP port 53, one process per network, answering A and AAAA queries for the names (and
 * --network-alias names) of the containers that hold an address on it. It reads the
 * network's lease file (net/network.c) at every query, so a container is resolvable as soon
 * as its lease exists and not a moment after it is gone, without any signalling.
 *
 * Names it does not know get REFUSED, never NXDOMAIN: a resolver then asks the next
 * nameserver of the container's resolv.conf (the host's upstream ones, listed after the
 * gateway), which is how outside names still resolve without a forwarding hop here. A name
 * it knows but without a record of the type asked (AAAA of a container on an IPv4-only
 * network, MX, ...) gets NOERROR with no answer, RFC 2308 §2.2's NODATA, as aardvark-dns
 * answers: the name exists, so the resolver must neither go upstream nor call it NXDOMAIN.
 *
 * Queries come from containers: hostile input. RFC 1035 §4.1: a query is parsed only as far
 * as its one question, every label length is bounded by the packet, compression pointers
 * (meaningless in a question) are refused, and nothing is allocated per packet.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "net/dns.h"

#define DNS_COMM "kapsel-dns"

/* Whether pid is a running responder (its comm, set with PR_SET_NAME, says so). */
static bool responder_alive(pid_t pid)
{
	char path[64], comm[32] = "";
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
	return n > 0 && !strncmp(comm, DNS_COMM, strlen(DNS_COMM));
}

static pid_t read_pid(int dfd, const char *net)
{
	char file[96];
	snprintf(file, sizeof(file), "%s.dns.pid", net);
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(dfd, file, 32, &buf, NULL, NULL) < 0)
		return 0;
	long v = strtol(buf, NULL, 10);
	return v > 0 && responder_alive((pid_t)v) ? (pid_t)v : 0;
}

/* The addresses of container `name` on the network, from its lease file (net/network.c
 * writes "ip6" on a dual-stack network); false when no lease holds the name. */
static bool lookup(int dfd, const char *leases_file, const char *name, uint32_t *addr,
		   struct in6_addr *addr6, bool *has6)
{
	cleanup_free char *buf = NULL;
	size_t len;
	if (kap_fs_read_file(dfd, leases_file, 1 << 24, &buf, &len, NULL) < 0)
		return false;
	cleanup_json struct kap_json *j = NULL;
	if (kap_json_parse(buf, len, leases_file, &j, NULL) < 0 ||
	    kap_json_type(j) != KAP_JSON_OBJECT)
		return false;
	struct kap_json_iter it = kap_json_iter(j);
	const char *ip;
	struct kap_json *v;
	while (kap_json_iter_next(&it, &ip, &v)) {
		const char *c = kap_json_string(kap_json_get(v, "container"));
		bool match = c && !strcasecmp(c, name);
		struct kap_json *al = kap_json_get(v, "aliases");
		for (size_t i = 0; !match && al && kap_json_type(al) == KAP_JSON_ARRAY &&
				   i < kap_json_array_len(al);
		     i++) {
			const char *a = kap_json_string(kap_json_array_at(al, i));
			match = a && !strcasecmp(a, name);
		}
		struct in_addr a;
		if (match && inet_pton(AF_INET, ip, &a) == 1) {
			const char *ip6 = kap_json_string(kap_json_get(v, "ip6"));
			*addr = a.s_addr;
			*has6 = ip6 && inet_pton(AF_INET6, ip6, addr6) == 1;
			return true;
		}
	}
	return false;
}

enum { RCODE_OK = 0, RCODE_FORMERR = 1, RCODE_REFUSED = 5 };
enum { TYPE_A = 1, TYPE_AAAA = 28 };

size_t kap_dns_answer(int dfd, const char *leases_file, uint8_t *p, size_t n, size_t cap)
{
	if (n < 12 || (p[2] & 0x80))
		return 0; /* too short, or a response */
	unsigned qd = (unsigned)p[4] << 8 | p[5];
	size_t off = 12;
	char name[256];
	size_t nl = 0;
	int rcode = RCODE_FORMERR;
	uint32_t addr = 0;
	struct in6_addr addr6;
	bool has6 = false;
	const uint8_t *rdata = NULL; /* the one answer's address, 4 or 16 bytes */
	uint16_t rtype = 0, rlen = 0;
	if (qd == 1 && (p[2] & 0x78) == 0) { /* one question, opcode QUERY */
		while (off < n && p[off] != 0) {
			size_t l = p[off];
			if (l > 63 || off + 1 + l >= n || nl + l + 1 >= sizeof(name))
				goto reply_header; /* a pointer (0xc0), or past the packet */
			if (nl)
				name[nl++] = '.';
			memcpy(name + nl, p + off + 1, l);
			nl += l;
			off += 1 + l;
		}
		name[nl] = '\0';
		if (off + 5 > n)
			goto reply_header;
		off++; /* the root label */
		unsigned qtype = (unsigned)p[off] << 8 | p[off + 1];
		unsigned qclass = (unsigned)p[off + 2] << 8 | p[off + 3];
		off += 4;
		for (size_t i = 0; i < nl; i++)
			if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
				goto reply_header;
		bool known = qclass == 1 && !strchr(name, '.') &&
			     lookup(dfd, leases_file, name, &addr, &addr6, &has6);
		rcode = known ? RCODE_OK : RCODE_REFUSED;
		/* A known name: A and AAAA get its addresses; a type it has no record of gets
		 * NODATA (the opening comment). */
		if (known && qtype == TYPE_A) {
			rdata = (const uint8_t *)&addr;
			rtype = TYPE_A;
			rlen = 4;
		} else if (known && qtype == TYPE_AAAA && has6) {
			rdata = addr6.s6_addr;
			rtype = TYPE_AAAA;
			rlen = 16;
		}
	}
reply_header:
	if (rcode == RCODE_FORMERR)
		off = 12;
	p[2] = (uint8_t)(0x80 | (p[2] & 0x79) | (rcode == RCODE_OK ? 0x04 : 0)); /* QR, AA */
	p[3] = (uint8_t)rcode;
	p[4] = 0;
	p[5] = rcode == RCODE_FORMERR ? 0 : 1;
	memset(p + 6, 0, 6); /* no answer, authority, additional records (yet) */
	if (!rdata || off + 12 + rlen > cap)
		return off;
	p[7] = 1;
	/* RFC 1035 §4.1.3: the name as a pointer to the question's (offset 12), TYPE, CLASS IN,
	 * TTL 5 s, RDLENGTH, RDATA (RFC 3596 §2.2: AAAA is the 16 bytes in network order). */
	const uint8_t rr[] = {0xc0, 0x0c, 0, (uint8_t)rtype, 0, 1, 0, 0, 0, 5, 0, (uint8_t)rlen};
	memcpy(p + off, rr, sizeof(rr));
	memcpy(p + off + sizeof(rr), rdata, rlen);
	return off + sizeof(rr) + rlen;
}

/* socks[1] is -1 on an IPv4-only network. */
static __attribute__((noreturn)) void serve(const int socks[2], int dfd, const char *net)
{
	char leases_file[96];
	snprintf(leases_file, sizeof(leases_file), "%s.leases.json", net);
	uint8_t buf[KAP_DNS_MAX_QUERY + KAP_DNS_MAX_ANSWER];
	struct pollfd pfd[2] = {{.fd = socks[0], .events = POLLIN},
				{.fd = socks[1], .events = POLLIN}};
	for (;;) {
		if (poll(pfd, socks[1] >= 0 ? 2 : 1, -1) < 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || !(pfd[i].revents & POLLIN))
				continue;
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			ssize_t n = recvfrom(pfd[i].fd, buf, KAP_DNS_MAX_QUERY, MSG_DONTWAIT,
					     (struct sockaddr *)&from, &fl);
			if (n < 0)
				continue;
			size_t r = kap_dns_answer(dfd, leases_file, buf, (size_t)n, sizeof(buf));
			if (r)
				sendto(pfd[i].fd, buf, r, 0, (struct sockaddr *)&from, fl);
		}
	}
}

int kap_dns_start(int dfd, const char *net, struct in_addr gateway, const struct in6_addr *gateway6,
		  struct kapsel_error **err)
{
	if (read_pid(dfd, net))
		return 0;
	cleanup_close int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return kap_error(err, errno, "network %s: dns socket", net);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = gateway};
	if (bind(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &gateway, ip, sizeof(ip));
		return kap_error(err, errno, "network %s: dns on %s:53", net, ip);
	}
	/* The IPv6 gateway is on the bridge without DAD (network.c), so it binds at once. */
	cleanup_close int sock6 = -EBADF;
	if (gateway6) {
		sock6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (sock6 < 0)
			return kap_error(err, errno, "network %s: dns socket", net);
		int one = 1;
		setsockopt(sock6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 sa6 = {
		    .sin6_family = AF_INET6, .sin6_port = htons(53), .sin6_addr = *gateway6};
		if (bind(sock6, (struct sockaddr *)&sa6, sizeof(sa6)) < 0) {
			char ip[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, gateway6, ip, sizeof(ip));
			return kap_error(err, errno, "network %s: dns on [%s]:53", net, ip);
		}
	}
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return kap_error(err, errno, "pipe");
	fflush(NULL);
	pid_t first = fork();
	if (first < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return kap_error(err, errno, "fork");
	}
	if (first == 0) {
		/* Double fork: the responder belongs to no kapsel process and outlives it. */
		setsid();
		pid_t pid = fork();
		if (pid != 0) {
			if (pid > 0)
				dprintf(pipefd[1], "%d", (int)pid);
			_exit(pid > 0 ? 0 : 1);
		}
		/* The monitor of a foreground run starts us with its signals blocked (it takes
		 * them with a signalfd later): a daemon keeps none of that. */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGHUP, SIG_IGN);
		prctl(PR_SET_NAME, DNS_COMM, 0, 0, 0);
		/* Nothing of the caller's stays open: the network lock above all (flock belongs to
		 * the open file, so an inherited copy would hold it for the responder's life). */
		int keep_dfd = fcntl(dfd, F_DUPFD_CLOEXEC, 100);
		int keep[2] = {fcntl(sock, F_DUPFD_CLOEXEC, 101),
			       sock6 >= 0 ? fcntl(sock6, F_DUPFD_CLOEXEC, 102) : -1};
		DIR *d = opendir("/proc/self/fd");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			int fd = atoi(de->d_name);
			if (de->d_name[0] != '.' && fd != keep_dfd && fd != keep[0] &&
			    fd != keep[1] && fd != dirfd(d))
				close(fd);
		}
		if (d)
			closedir(d);
		int nullfd = open("/dev/null", O_RDWR);
		if (nullfd >= 0) {
			dup2(nullfd, 0);
			dup2(nullfd, 1);
			dup2(nullfd, 2);
			if (nullfd > 2)
				close(nullfd);
		}
		if (chdir("/") < 0)
			_exit(1);
		serve(keep, keep_dfd, net);
	}
	close(pipefd[1]);
	int st;
	while (waitpid(first, &st, 0) < 0 && errno == EINTR)
		;
	char pid_text[16] = "";
	ssize_t n = read(pipefd[0], pid_text, sizeof(pid_text) - 1);
	close(pipefd[0]);
	if (n <= 0)
		return kap_error_plain(err, EIO, "network %s: the dns responder did not start",
				       net);
	char file[96];
	snprintf(file, sizeof(file), "%s.dns.pid", net);
	return kap_fs_write_atomic(dfd, file, pid_text, (size_t)n, 0600, false, err);
}

void kap_dns_stop(int dfd, const char *net)
{
	pid_t pid = read_pid(dfd, net);
	if (pid)
		kill(pid, SIGKILL);
	char file[96];
	snprintf(file, sizeof(file), "%s.dns.pid", net);
	unlinkat(dfd, file, 0);
}
