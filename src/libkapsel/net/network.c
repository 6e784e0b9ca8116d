/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Networks and their address leases (IPAM), under <store>/networks/:
 *   .lock                  flock'ed (exclusive) around every read-modify-write below, so 50
 *                          concurrent runs never lease one address twice
 *   NAME.json              the network: bridge, subnet, gateway, internal
 *   NAME.leases.json       address -> {container, veth, ports}
 * Files are replaced atomically (tmp + rename), so a kill leaves the old or the new one.
 *
 * A lease is written before the veth and the rules exist and is removed after they are gone:
 * whatever step kapsel dies at, the lease names what may be left, and kap_net_detach (rm -f,
 * the container's exit) or the next allocation's sweep (when the container's directory is
 * gone) removes it. The host-side veth is named after the address ("kv" + 8 hex digits):
 * unique while the lease lives, and known without asking the kernel.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/network.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "net/dns.h"
#include "net/net.h"
#include "net/netlink.h"
#include "net/nft.h"

#define API __attribute__((visibility("default")))

#define DEFAULT_NETWORK "kapsel"
#define DEFAULT_BRIDGE	"kapsel0"
#define MAX_NETWORKS	256
#define MAX_LEASES	65536

struct network {
	char name[64];
	char bridge[16];
	uint32_t subnet; /* host order */
	int prefix;
	uint32_t gateway;
	bool internal;
	int64_t created;
	/* Dual stack: a container's IPv6 address is subnet6 plus its IPv4 address's offset in
	 * subnet (create checks that subnet6 has room), so the IPv4 lease is the IPv6 one too,
	 * unless run --ip6 chose another (kept in the lease: lease_pick). */
	bool v6;
	struct in6_addr subnet6, gateway6;
	int prefix6;
};

struct lease {
	uint32_t ip;
	/* On a dual-stack network: the IPv6 address, derived or --ip6. Written in every lease
	 * there, so the name responder reads it without knowing the network's subnets; a lease
	 * without one (an older kapsel's) has the derived address (lease_ip6). */
	bool has6;
	struct in6_addr ip6;
	char *container;
	char veth[16];
	char **ports;	/* "tcp:0.0.0.0:8080:80" */
	char **aliases; /* --network-alias, for the name responder */
};

struct leases {
	struct lease *v;
	size_t n;
};

static void leases_clear(struct leases *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].container);
		for (char **p = l->v[i].ports; p && *p; p++)
			free(*p);
		free(l->v[i].ports);
		for (char **p = l->v[i].aliases; p && *p; p++)
			free(*p);
		free(l->v[i].aliases);
	}
	free(l->v);
	*l = (struct leases){0};
}
#define cleanup_leases __attribute__((cleanup(leases_clear)))

enum kap_net_mode kap_net_mode_of(const char *net, bool rootless, bool publishes)
{
	if (!net)
		return rootless && publishes ? KAP_NET_PASTA : KAP_NET_NONE;
	if (!strcmp(net, "none"))
		return KAP_NET_NONE;
	if (!strcmp(net, "host"))
		return KAP_NET_HOST;
	if (!strcmp(net, "pasta"))
		return KAP_NET_PASTA;
	if (!strncmp(net, "container:", 10))
		return KAP_NET_CONTAINER;
	if (!strncmp(net, "ns:", 3))
		return KAP_NET_NS;
	return KAP_NET_NETWORK;
}

int kap_net_ns_check(const char *path, struct kapsel_error **err)
{
	if (path[0] != '/')
		return kap_error_plain(err, EINVAL, "--net ns:%s: the path must be absolute", path);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "--net ns:%s", path);
	/* ioctl_ns(2): any other file fails (ENOTTY), another kind of namespace answers. */
	int type = ioctl(fd, NS_GET_NSTYPE);
	if (type != CLONE_NEWNET)
		return kap_error_plain(err, EINVAL, "--net ns:%s: not a network namespace", path);
	return 0;
}

const char *kap_net_store(const char *store)
{
	return store && *store ? store : "/var/lib/kapsel";
}

static void ip_str(uint32_t ip, char buf[INET_ADDRSTRLEN])
{
	struct in_addr a = {htonl(ip)};
	inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
}

static uint32_t mask_of(int prefix)
{
	return prefix ? ~UINT32_C(0) << (32 - prefix) : 0;
}

static bool valid_network_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 63 ||
	    !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", name[0]))
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
	       n;
}

static int parse_ip(const char *what, const char *s, uint32_t *out, struct kapsel_error **err)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return kap_error_plain(err, EINVAL, "%s \"%s\": not an IPv4 address", what, s);
	*out = ntohl(a.s_addr);
	return 0;
}

static int parse_cidr(const char *s, uint32_t *net, int *prefix, struct kapsel_error **err)
{
	const char *slash = strchr(s, '/');
	char addr[INET_ADDRSTRLEN];
	char *end;
	long p = slash ? strtol(slash + 1, &end, 10) : -1;
	if (!slash || (size_t)(slash - s) >= sizeof(addr) || slash[1] == '\0' || *end || p < 0 ||
	    p > 32)
		return kap_error_plain(err, EINVAL,
				       "--subnet \"%s\": expected an IPv4 CIDR like "
				       "10.89.0.0/24",
				       s);
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	struct in_addr a;
	if (inet_pton(AF_INET, addr, &a) != 1)
		return kap_error_plain(err, EINVAL, "--subnet \"%s\": not an IPv4 CIDR", s);
	/* At least a gateway and one container between the network and broadcast addresses. */
	if (p < 8 || p > 29)
		return kap_error_plain(err, EINVAL,
				       "--subnet \"%s\": the prefix must be between /8 and /29", s);
	uint32_t ip = ntohl(a.s_addr);
	if (ip & ~mask_of((int)p)) {
		char fixed[INET_ADDRSTRLEN];
		ip_str(ip & mask_of((int)p), fixed);
		return kap_error_plain(err, EINVAL, "--subnet \"%s\": host bits are set (%s/%ld?)",
				       s, fixed, p);
	}
	*net = ip;
	*prefix = (int)p;
	return 0;
}

#define ULA_PREFIX "fd6b:6170:7365" /* kapsel's own /48 of fd00::/8 (RFC 4193) */

static void ip6_str(const struct in6_addr *a, char buf[INET6_ADDRSTRLEN])
{
	inet_ntop(AF_INET6, a, buf, INET6_ADDRSTRLEN);
}

static int parse_cidr6(const char *s, struct in6_addr *net, int *prefix, struct kapsel_error **err)
{
	const char *slash = strchr(s, '/');
	char addr[INET6_ADDRSTRLEN];
	char *end;
	long p = slash ? strtol(slash + 1, &end, 10) : -1;
	if (!slash || (size_t)(slash - s) >= sizeof(addr) || slash[1] == '\0' || *end || p < 0 ||
	    p > 128)
		return kap_error_plain(
		    err, EINVAL, "--subnet \"%s\": expected an IPv6 CIDR like fd00:1::/64", s);
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	if (inet_pton(AF_INET6, addr, net) != 1)
		return kap_error_plain(err, EINVAL, "--subnet \"%s\": not an IPv6 CIDR", s);
	/* Room for the IPv4 subnet's offsets (at most /8: 24 bits), and a real network. */
	if (p < 48 || p > 120)
		return kap_error_plain(err, EINVAL,
				       "--subnet \"%s\": the IPv6 prefix must be between /48 and "
				       "/120",
				       s);
	for (int b = (int)p; b < 128; b++)
		if (net->s6_addr[b / 8] & (0x80 >> (b % 8)))
			return kap_error_plain(err, EINVAL, "--subnet \"%s\": host bits are set",
					       s);
	*prefix = (int)p;
	return 0;
}

static bool overlap6(const struct in6_addr *a, int pa, const struct in6_addr *b, int pb)
{
	int p = pa < pb ? pa : pb;
	for (int i = 0; i < p; i++) {
		uint8_t m = (uint8_t)(0x80 >> (i % 8));
		if ((a->s6_addr[i / 8] & m) != (b->s6_addr[i / 8] & m))
			return false;
	}
	return true;
}

/* base + off, big-endian with carry. */
static struct in6_addr ip6_add(const struct in6_addr *base, uint32_t off)
{
	struct in6_addr r = *base;
	uint64_t carry = off;
	for (int i = 15; i >= 0 && carry; i--) {
		carry += r.s6_addr[i];
		r.s6_addr[i] = (uint8_t)carry;
		carry >>= 8;
	}
	return r;
}

/* The IPv6 address derived from IPv4 address ip on a dual-stack network. */
static struct in6_addr ip6_of(const struct network *nw, uint32_t ip)
{
	return ip6_add(&nw->subnet6, ip - nw->subnet);
}

/* A lease's IPv6 address on a dual-stack network. */
static struct in6_addr lease_ip6(const struct network *nw, const struct lease *e)
{
	return e->has6 ? e->ip6 : ip6_of(nw, e->ip);
}

static bool overlap(uint32_t a, int pa, uint32_t b, int pb)
{
	uint32_t m = mask_of(pa < pb ? pa : pb);
	return (a & m) == (b & m);
}

/* ---- the directory and its lock ---- */

struct netdir {
	int dfd, lockfd;
	char *store;
};

static void netdir_close(struct netdir *d)
{
	if (d->lockfd >= 0)
		close(d->lockfd); /* drops the flock */
	if (d->dfd >= 0)
		close(d->dfd);
	free(d->store);
	*d = (struct netdir){.dfd = -1, .lockfd = -1};
}
#define cleanup_netdir __attribute__((cleanup(netdir_close)))

static int netdir_open(const char *store, struct netdir *d, struct kapsel_error **err)
{
	*d = (struct netdir){.dfd = -1, .lockfd = -1};
	if (geteuid() != 0)
		return kap_error_plain(
		    err, EPERM, "networks need root (a rootless user cannot create bridges)");
	store = kap_net_store(store);
	if (!(d->store = strdup(store)))
		return kap_error(err, ENOMEM, "networks");
	if (mkdir(store, 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create store %s", store);
	cleanup_close int sfd = open(store, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return kap_error(err, errno, "open store %s", store);
	if (mkdirat(sfd, "networks", 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "create %s/networks", store);
	d->dfd = openat(sfd, "networks", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d->dfd < 0)
		return kap_error(err, errno, "open %s/networks", store);
	d->lockfd = openat(d->dfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (d->lockfd < 0)
		return kap_error(err, errno, "open %s/networks/.lock", store);
	while (flock(d->lockfd, LOCK_EX) < 0)
		if (errno != EINTR)
			return kap_error(err, errno, "lock %s/networks", store);
	return 0;
}

/* ---- network files ---- */

static int network_write(struct netdir *d, const struct network *n, struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = kap_json_new_object();
	if (!j)
		return kap_error(err, ENOMEM, "network %s", n->name);
	char sub[INET_ADDRSTRLEN + 4], gw[INET_ADDRSTRLEN];
	ip_str(n->subnet, sub);
	snprintf(sub + strlen(sub), 4, "/%d", n->prefix);
	ip_str(n->gateway, gw);
	kap_json_set(j, "name", kap_json_new_string(n->name));
	kap_json_set(j, "driver", kap_json_new_string("bridge"));
	kap_json_set(j, "bridge", kap_json_new_string(n->bridge));
	kap_json_set(j, "subnet", kap_json_new_string(sub));
	kap_json_set(j, "gateway", kap_json_new_string(gw));
	kap_json_set(j, "internal", kap_json_new_bool(n->internal));
	if (n->v6) {
		char s6[INET6_ADDRSTRLEN + 4], g6[INET6_ADDRSTRLEN];
		ip6_str(&n->subnet6, s6);
		snprintf(s6 + strlen(s6), 5, "/%d", n->prefix6);
		ip6_str(&n->gateway6, g6);
		kap_json_set(j, "subnet6", kap_json_new_string(s6));
		kap_json_set(j, "gateway6", kap_json_new_string(g6));
	}
	kap_json_set(j, "created", kap_json_new_int64(n->created));
	cleanup_free char *text = kap_json_dump(j, true);
	char file[96];
	snprintf(file, sizeof(file), "%s.json", n->name);
	if (!text)
		return kap_error(err, ENOMEM, "network %s", n->name);
	return kap_fs_write_atomic(d->dfd, file, text, strlen(text), 0600, false, err);
}

static int network_read(struct netdir *d, const char *name, struct network *n,
			struct kapsel_error **err)
{
	char file[96];
	snprintf(file, sizeof(file), "%s.json", name);
	cleanup_free char *buf = NULL;
	size_t len;
	int r = kap_fs_read_file(d->dfd, file, 1 << 16, &buf, &len, NULL);
	if (r == -ENOENT)
		return kap_error_plain(err, ENOENT, "no such network %s", name);
	if (r < 0)
		return kap_error(err, -r, "read network %s", name);
	cleanup_json struct kap_json *j = NULL;
	if ((r = kap_json_parse(buf, len, file, &j, err)) < 0)
		return r;
	cleanup_free char *nm = NULL, *br = NULL, *sub = NULL, *gw = NULL, *sub6 = NULL,
			  *gw6 = NULL;
	*n = (struct network){0};
	if ((r = kap_json_read_string(j, file, "name", &nm, err)) < 0 ||
	    (r = kap_json_read_string(j, file, "bridge", &br, err)) < 0 ||
	    (r = kap_json_read_string(j, file, "subnet", &sub, err)) < 0 ||
	    (r = kap_json_read_string(j, file, "gateway", &gw, err)) < 0 ||
	    (r = kap_json_read_string(j, file, "subnet6", &sub6, err)) < 0 ||
	    (r = kap_json_read_string(j, file, "gateway6", &gw6, err)) < 0 ||
	    (r = kap_json_read_bool(j, file, "internal", &n->internal, err)) < 0 ||
	    (r = kap_json_read_int64(j, file, "created", &n->created, err)) < 0)
		return r;
	if (!nm || !br || !sub || !gw || strlen(br) >= sizeof(n->bridge) ||
	    strlen(nm) >= sizeof(n->name))
		return kap_error_plain(err, EINVAL, "%s/networks/%s: incomplete", d->store, file);
	snprintf(n->name, sizeof(n->name), "%s", nm);
	snprintf(n->bridge, sizeof(n->bridge), "%s", br);
	if ((r = parse_cidr(sub, &n->subnet, &n->prefix, err)) < 0 ||
	    (r = parse_ip("gateway", gw, &n->gateway, err)) < 0)
		return kap_error_wrap(err, "%s/networks/%s", d->store, file);
	if (sub6) {
		n->v6 = true;
		if ((r = parse_cidr6(sub6, &n->subnet6, &n->prefix6, err)) < 0)
			return kap_error_wrap(err, "%s/networks/%s", d->store, file);
		if (!gw6 || inet_pton(AF_INET6, gw6, &n->gateway6) != 1)
			return kap_error_plain(err, EINVAL, "%s/networks/%s: gateway6: not IPv6",
					       d->store, file);
	}
	return 0;
}

/* Names of every network file, sorted by readdir order; n networks. */
static int network_names(struct netdir *d, char ***out, size_t *n, struct kapsel_error **err)
{
	int fd = openat(d->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cleanup_dir DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return kap_error(err, errno, "list %s/networks", d->store);
	}
	cleanup_strv char **v = calloc(MAX_NETWORKS + 1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "networks");
	size_t cnt = 0;
	struct dirent *de;
	while ((de = readdir(dir)) && cnt < MAX_NETWORKS) {
		size_t l = strlen(de->d_name);
		if (de->d_name[0] == '.' || l <= 5 || strcmp(de->d_name + l - 5, ".json") ||
		    (l > 12 && !strcmp(de->d_name + l - 12, ".leases.json")))
			continue;
		if (!(v[cnt] = strndup(de->d_name, l - 5)))
			return kap_error(err, ENOMEM, "networks");
		cnt++;
	}
	*out = steal_ptr(v);
	*n = cnt;
	return 0;
}

/* ---- leases ---- */

static int leases_read(struct netdir *d, const char *net, struct leases *l,
		       struct kapsel_error **err)
{
	*l = (struct leases){0};
	char file[128];
	snprintf(file, sizeof(file), "%s.leases.json", net);
	cleanup_free char *buf = NULL;
	size_t len;
	int r = kap_fs_read_file(d->dfd, file, 1 << 24, &buf, &len, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return kap_error(err, -r, "read %s/networks/%s", d->store, file);
	cleanup_json struct kap_json *j = NULL;
	if ((r = kap_json_parse(buf, len, file, &j, err)) < 0)
		return r;
	if (kap_json_type(j) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected an object", file);
	size_t cap = 0;
	struct kap_json_iter it = kap_json_iter(j);
	const char *key;
	struct kap_json *val;
	while (kap_json_iter_next(&it, &key, &val)) {
		if (l->n == MAX_LEASES)
			break;
		if (l->n == cap) {
			cap = cap ? cap * 2 : 16;
			struct lease *nv = realloc(l->v, cap * sizeof(*nv));
			if (!nv)
				return kap_error(err, ENOMEM, "leases");
			l->v = nv;
		}
		struct lease *e = &l->v[l->n];
		*e = (struct lease){0};
		cleanup_free char *veth = NULL, *ip6 = NULL;
		if (parse_ip(file, key, &e->ip, err) < 0 ||
		    kap_json_read_string(val, key, "container", &e->container, err) < 0 ||
		    kap_json_read_string(val, key, "veth", &veth, err) < 0 ||
		    kap_json_read_string(val, key, "ip6", &ip6, err) < 0 ||
		    kap_json_read_strv(val, key, "ports", &e->ports, err) < 0 ||
		    kap_json_read_strv(val, key, "aliases", &e->aliases, err) < 0) {
			l->n++;
			return -EINVAL;
		}
		l->n++;
		if (!e->container || !veth || strlen(veth) >= sizeof(e->veth))
			return kap_error_plain(err, EINVAL, "%s: %s: incomplete lease", file, key);
		if (ip6 && !(e->has6 = inet_pton(AF_INET6, ip6, &e->ip6) == 1))
			return kap_error_plain(err, EINVAL, "%s: %s: ip6 \"%s\": not IPv6", file,
					       key, ip6);
		snprintf(e->veth, sizeof(e->veth), "%s", veth);
	}
	return 0;
}

static int leases_write(struct netdir *d, const char *net, const struct leases *l,
			struct kapsel_error **err)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.leases.json", net);
	cleanup_json struct kap_json *j = kap_json_new_object();
	if (!j)
		return kap_error(err, ENOMEM, "leases");
	for (size_t i = 0; i < l->n; i++) {
		const struct lease *e = &l->v[i];
		if (!e->container)
			continue; /* released */
		char ip[INET_ADDRSTRLEN];
		ip_str(e->ip, ip);
		struct kap_json *o = kap_json_new_object();
		struct kap_json *ports = kap_json_new_array();
		if (!o || !ports) {
			kap_json_put(o);
			kap_json_put(ports);
			return kap_error(err, ENOMEM, "leases");
		}
		kap_json_set(o, "container", kap_json_new_string(e->container));
		kap_json_set(o, "veth", kap_json_new_string(e->veth));
		if (e->has6) {
			char ip6[INET6_ADDRSTRLEN];
			ip6_str(&e->ip6, ip6);
			kap_json_set(o, "ip6", kap_json_new_string(ip6));
		}
		for (char **p = e->ports; p && *p; p++)
			kap_json_append(ports, kap_json_new_string(*p));
		kap_json_set(o, "ports", ports);
		if (e->aliases && *e->aliases) {
			struct kap_json *al = kap_json_new_array();
			for (char **p = e->aliases; al && *p; p++)
				kap_json_append(al, kap_json_new_string(*p));
			kap_json_set(o, "aliases", al);
		}
		kap_json_set(j, ip, o);
	}
	cleanup_free char *text = kap_json_dump(j, true);
	if (!text)
		return kap_error(err, ENOMEM, "leases");
	return kap_fs_write_atomic(d->dfd, file, text, strlen(text), 0600, false, err);
}

/* ---- ports and MAC addresses ---- */

static int parse_port_num(const char *spec, const char *s, size_t len, uint16_t *out,
			  struct kapsel_error **err)
{
	char buf[8];
	char *end;
	if (len == 0 || len >= sizeof(buf))
		goto bad;
	memcpy(buf, s, len);
	buf[len] = '\0';
	long v = strtol(buf, &end, 10);
	if (*end || buf[0] == '-' || buf[0] == '+')
		goto bad;
	if (v < 1 || v > 65535)
		return kap_error_plain(err, EINVAL, "-p %s: port %s is out of range (1-65535)",
				       spec, buf);
	*out = (uint16_t)v;
	return 0;
bad:
	return kap_error_plain(err, EINVAL, "-p %s: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]",
			       spec);
}

int kap_net_parse_port(const char *spec, struct kap_net_port *out, struct kapsel_error **err)
{
	*out = (struct kap_net_port){.proto = "tcp"};
	const char *slash = strchr(spec, '/');
	size_t body = slash ? (size_t)(slash - spec) : strlen(spec);
	if (slash) {
		if (strcmp(slash + 1, "tcp") && strcmp(slash + 1, "udp"))
			return kap_error_plain(err, EINVAL, "-p %s: protocol must be tcp or udp",
					       spec);
		snprintf(out->proto, sizeof(out->proto), "%s", slash + 1);
	}
	/* The last two colon-separated fields are the ports; anything before is the address. */
	const char *c2 = memrchr(spec, ':', body);
	if (!c2)
		return kap_error_plain(
		    err, EINVAL, "-p %s: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]", spec);
	const char *c1 = memrchr(spec, ':', (size_t)(c2 - spec));
	const char *hp = c1 ? c1 + 1 : spec;
	int r;
	if ((r = parse_port_num(spec, hp, (size_t)(c2 - hp), &out->host_port, err)) < 0 ||
	    (r = parse_port_num(spec, c2 + 1, body - (size_t)(c2 + 1 - spec), &out->ctr_port,
				err)) < 0)
		return r;
	out->host_ip.s_addr = htonl(INADDR_ANY);
	if (c1 && c1 > spec) {
		char ip[INET_ADDRSTRLEN];
		if ((size_t)(c1 - spec) >= sizeof(ip) ||
		    (memcpy(ip, spec, (size_t)(c1 - spec)), ip[c1 - spec] = '\0',
		     inet_pton(AF_INET, ip, &out->host_ip) != 1))
			return kap_error_plain(err, EINVAL, "-p %s: host address is not IPv4",
					       spec);
	}
	return 0;
}

int kap_net_parse_mac(const char *s, uint8_t mac[6], struct kapsel_error **err)
{
	unsigned int b[6];
	char tail;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &tail) != 6 ||
	    strlen(s) != 17)
		return kap_error_plain(err, EINVAL,
				       "--mac-address \"%s\": expected xx:xx:xx:xx:xx:xx", s);
	if (b[0] & 1)
		return kap_error_plain(
		    err, EINVAL, "--mac-address %s: a multicast address (first octet odd)", s);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

int kap_net_parse_expose(const char *what, const char *spec, uint16_t *port, char proto[4],
			 struct kapsel_error **err)
{
	const char *slash = strchr(spec, '/');
	size_t len = slash ? (size_t)(slash - spec) : strlen(spec);
	char buf[8];
	char *end;
	long v = -1;
	if (len && len < sizeof(buf) && spec[0] >= '0' && spec[0] <= '9') {
		memcpy(buf, spec, len);
		buf[len] = '\0';
		v = strtol(buf, &end, 10);
		if (*end)
			v = -1;
	}
	if (v < 1 || v > 65535 || (slash && strcmp(slash + 1, "tcp") && strcmp(slash + 1, "udp")))
		return kap_error_plain(err, EINVAL, "%s %s: expected PORT[/tcp|/udp], PORT 1-65535",
				       what, spec);
	*port = (uint16_t)v;
	snprintf(proto, 4, "%s", slash ? slash + 1 : "tcp");
	return 0;
}

static void port_key(const char *norm, char *out, size_t len, bool with_value, uint32_t ctr_ip)
{
	char proto[4], hip[INET_ADDRSTRLEN], cip[INET_ADDRSTRLEN];
	unsigned hport = 0, cport = 0;
	sscanf(norm, "%3[a-z]:%15[0-9.]:%u:%u", proto, hip, &hport, &cport);
	ip_str(ctr_ip, cip);
	bool any = !strcmp(hip, "0.0.0.0");
	int n = any ? snprintf(out, len, "ports { %s . %u", proto, hport)
		    : snprintf(out, len, "hostports { %s . %s . %u", hip, proto, hport);
	if (with_value)
		n += snprintf(out + n, len - (size_t)n, " : %s . %u", cip, cport);
	snprintf(out + n, len - (size_t)n, " }");
}

/* Normalised "tcp:0.0.0.0:8080:80", the lease's record of a published port. */
static char *port_norm(const struct kap_net_port *p)
{
	char ip[INET_ADDRSTRLEN], *s;
	inet_ntop(AF_INET, &p->host_ip, ip, sizeof(ip));
	return asprintf(&s, "%s:%s:%u:%u", p->proto, ip, p->host_port, p->ctr_port) < 0 ? NULL : s;
}

static bool ports_clash(const char *a, const char *b)
{
	char pa[4], pb[4], ia[INET_ADDRSTRLEN], ib[INET_ADDRSTRLEN];
	unsigned ha = 0, hb = 0, x;
	if (sscanf(a, "%3[a-z]:%15[0-9.]:%u:%u", pa, ia, &ha, &x) != 4 ||
	    sscanf(b, "%3[a-z]:%15[0-9.]:%u:%u", pb, ib, &hb, &x) != 4)
		return false;
	return !strcmp(pa, pb) && ha == hb &&
	       (!strcmp(ia, ib) || !strcmp(ia, "0.0.0.0") || !strcmp(ib, "0.0.0.0"));
}

/* ---- teardown of one lease ---- */

/* The ip6 table's element of a port published on every address (a host address given with
 * -p is IPv4: no IPv6 twin); false for the others. */
static bool port_key6(const char *norm, char *out, size_t len, const struct in6_addr *ctr)
{
	char proto[4], hip[INET_ADDRSTRLEN], cip[INET6_ADDRSTRLEN];
	unsigned hport = 0, cport = 0;
	if (sscanf(norm, "%3[a-z]:%15[0-9.]:%u:%u", proto, hip, &hport, &cport) != 4 ||
	    strcmp(hip, "0.0.0.0"))
		return false;
	int n = snprintf(out, len, "ports { %s . %u", proto, hport);
	if (ctr) {
		ip6_str(ctr, cip);
		n += snprintf(out + n, len - (size_t)n, " : %s . %u", cip, cport);
	}
	snprintf(out + n, len - (size_t)n, " }");
	return true;
}

static void lease_teardown(struct kap_nl *nl, const struct lease *e, bool nft, bool nft6)
{
	for (char **p = nft6 ? e->ports : NULL; p && *p; p++) {
		char cmd[200], key[160];
		cleanup_error struct kapsel_error *ne = NULL;
		if (port_key6(*p, key, sizeof(key), NULL)) {
			snprintf(cmd, sizeof(cmd), "delete element ip6 kapsel %s", key);
			kap_nft_run(cmd, &ne); /* already gone: nothing to do */
		}
	}
	cleanup_error struct kapsel_error *le = NULL;
	if (nl && kap_nl_link_del(nl, e->veth, &le) < 0)
		kap_warn("%s", le->msg);
	for (char **p = nft ? e->ports : NULL; p && *p; p++) {
		char cmd[160], key[128];
		port_key(*p, key, sizeof(key), false, e->ip);
		snprintf(cmd, sizeof(cmd), "delete element ip kapsel %s", key);
		cleanup_error struct kapsel_error *ne = NULL;
		kap_nft_run(cmd, &ne); /* already gone: nothing to do */
	}
}

static bool container_exists(struct netdir *d, const char *name)
{
	char path[200];
	snprintf(path, sizeof(path), "containers/%s", name);
	cleanup_close int sfd = open(d->store, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return sfd >= 0 && faccessat(sfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/*
 * For every network: release the leases of `container` (NULL: of every container whose
 * directory is gone — killed before its rm could run), undoing what they name.
 */
static int sweep(struct netdir *d, const char *container, bool ns_gone, struct kapsel_error **err)
{
	cleanup_strv char **names = NULL;
	size_t n;
	int r = network_names(d, &names, &n, err);
	if (r < 0)
		return r;
	cleanup_nl struct kap_nl *nl = NULL;
	int nft = -1, nft6 = -1; /* whether our tables exist: asked once */
	for (size_t i = 0; i < n; i++) {
		cleanup_leases struct leases l = {0};
		if ((r = leases_read(d, names[i], &l, err)) < 0)
			return r;
		bool changed = false;
		for (size_t k = 0; k < l.n; k++) {
			struct lease *e = &l.v[k];
			if (container ? strcmp(e->container, container)
				      : container_exists(d, e->container))
				continue;
			/* Deleting a veth waits for the kernel's RCU grace periods (~10 ms); when
			 * the container's namespace is gone, the kernel removes the pair with it
			 * in the background (veth's dellink on namespace exit). */
			if (!ns_gone && !nl && kap_nl_open(-1, &nl, err) < 0)
				return -(*err)->code;
			if (nft < 0 && e->ports && *e->ports)
				nft = kap_nft_present();
			struct network nw;
			if (nft6 < 0 && e->ports && *e->ports &&
			    network_read(d, names[i], &nw, NULL) == 0 && nw.v6)
				nft6 = kap_nft6_present();
			lease_teardown(nl, e, nft > 0, nft6 > 0);
			free(e->container);
			e->container = NULL;
			changed = true;
		}
		if (changed && (r = leases_write(d, names[i], &l, err)) < 0)
			return r;
		size_t left = 0;
		for (size_t k = 0; k < l.n; k++)
			left += l.v[k].container != NULL;
		/* The responder lives as long as the network has containers. */
		if (changed && !left)
			kap_dns_stop(d->dfd, names[i]);
	}
	return 0;
}

/* ---- networks ---- */

/* Whether net/prefix clashes with another network or a route of this namespace. */
static int subnet_taken(struct netdir *d, struct kap_nl *nl, uint32_t net, int prefix,
			const char *skip, char **why, struct kapsel_error **err)
{
	cleanup_strv char **names = NULL;
	size_t n;
	int r = network_names(d, &names, &n, err);
	if (r < 0)
		return r;
	*why = NULL;
	for (size_t i = 0; i < n; i++) {
		struct network o;
		if (skip && !strcmp(names[i], skip))
			continue;
		if (network_read(d, names[i], &o, NULL) < 0)
			continue;
		if (overlap(net, prefix, o.subnet, o.prefix)) {
			if (asprintf(why, "network %s", o.name) < 0)
				return kap_error(err, ENOMEM, "networks");
			return 1;
		}
	}
	bool routed = false;
	struct in_addr a = {htonl(net)};
	if (nl && (r = kap_nl_route_overlaps(nl, a, prefix, &routed, err)) < 0)
		return r;
	if (routed) {
		if (!(*why = strdup("a route of this host")))
			return kap_error(err, ENOMEM, "networks");
		return 1;
	}
	return 0;
}

/* The same for an IPv6 subnet: another network's, or an IPv6 route of this namespace. */
static int subnet6_taken(struct netdir *d, struct kap_nl *nl, const struct in6_addr *net,
			 int prefix, char **why, struct kapsel_error **err)
{
	cleanup_strv char **names = NULL;
	size_t n;
	int r = network_names(d, &names, &n, err);
	if (r < 0)
		return r;
	*why = NULL;
	for (size_t i = 0; i < n; i++) {
		struct network o;
		if (network_read(d, names[i], &o, NULL) < 0 || !o.v6)
			continue;
		if (overlap6(net, prefix, &o.subnet6, o.prefix6)) {
			if (asprintf(why, "network %s", o.name) < 0)
				return kap_error(err, ENOMEM, "networks");
			return 1;
		}
	}
	bool routed = false;
	if ((r = kap_nl_route6_overlaps(nl, net, prefix, &routed, err)) < 0)
		return r;
	if (routed) {
		if (!(*why = strdup("a route of this host")))
			return kap_error(err, ENOMEM, "networks");
		return 1;
	}
	return 0;
}

/* Dual stack for n (its IPv4 subnet chosen): subnet6, or the first free /64 of ours. */
static int network_v6(struct netdir *d, struct kap_nl *nl, struct network *n, const char *subnet6,
		      struct kapsel_error **err)
{
	cleanup_free char *why = NULL;
	int r;
	n->v6 = true;
	if (subnet6) {
		if ((r = parse_cidr6(subnet6, &n->subnet6, &n->prefix6, err)) < 0)
			return r;
		if (128 - n->prefix6 < 32 - n->prefix)
			return kap_error_plain(err, EINVAL,
					       "--subnet %s: fewer addresses than the IPv4 subnet "
					       "(/%d)",
					       subnet6, n->prefix);
		if ((r = subnet6_taken(d, nl, &n->subnet6, n->prefix6, &why, err)) < 0)
			return r;
		if (r)
			return kap_error_plain(err, EEXIST, "--subnet %s overlaps %s", subnet6,
					       why);
	} else {
		bool found = false;
		for (unsigned k = 1; k < 65536 && !found; k++) {
			char cidr[64];
			snprintf(cidr, sizeof(cidr), ULA_PREFIX ":%x::/64", k);
			if ((r = parse_cidr6(cidr, &n->subnet6, &n->prefix6, err)) < 0)
				return r;
			free(steal_ptr(why));
			if ((r = subnet6_taken(d, nl, &n->subnet6, 64, &why, err)) < 0)
				return r;
			found = !r;
		}
		if (!found)
			return kap_error_plain(err, EADDRNOTAVAIL,
					       "network %s: no free " ULA_PREFIX ":N::/64 subnet",
					       n->name);
	}
	n->gateway6 = ip6_add(&n->subnet6, n->gateway - n->subnet);
	return 0;
}

static int default_network(struct netdir *d, struct network *out, struct kapsel_error **err)
{
	cleanup_error struct kapsel_error *e = NULL;
	int r = network_read(d, DEFAULT_NETWORK, out, &e);
	if (r != -ENOENT) {
		if (r < 0)
			*err = steal_ptr(e);
		return r;
	}
	cleanup_nl struct kap_nl *nl = NULL;
	if ((r = kap_nl_open(-1, &nl, err)) < 0)
		return r;
	/* podman's 10.88.0.0/16, or the next /16 no route or network uses. */
	for (uint32_t second = 88; second < 256; second++) {
		uint32_t net = (UINT32_C(10) << 24) | (second << 16);
		cleanup_free char *why = NULL;
		if ((r = subnet_taken(d, nl, net, 16, NULL, &why, err)) < 0)
			return r;
		if (r)
			continue;
		*out = (struct network){.name = DEFAULT_NETWORK,
					.bridge = DEFAULT_BRIDGE,
					.subnet = net,
					.prefix = 16,
					.gateway = net + 1,
					.created = time(NULL)};
		return network_write(d, out, err);
	}
	return kap_error_plain(err, EADDRNOTAVAIL,
			       "default network: every 10.N.0.0/16 clashes with a route");
}

static int network_load(struct netdir *d, const char *name, struct network *n,
			struct kapsel_error **err)
{
	if (!strcmp(name, DEFAULT_NETWORK))
		return default_network(d, n, err);
	if (!valid_network_name(name))
		return kap_error_plain(err, EINVAL,
				       "network name \"%s\": must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
				       "(at most 63 characters)",
				       name);
	return network_read(d, name, n, err);
}

API int kapsel_network_create(const char *store, const struct kapsel_network_create_options *o,
			      struct kapsel_error **err)
{
	if (!o->name || !valid_network_name(o->name) || !strcmp(o->name, "none") ||
	    !strcmp(o->name, "host"))
		return kap_error_plain(err, EINVAL,
				       "network name \"%s\": must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
				       "(at most 63 characters; not none or host)",
				       o->name ? o->name : "");
	struct network n = {.created = time(NULL), .internal = o->internal};
	snprintf(n.name, sizeof(n.name), "%s", o->name);
	int r;
	if (o->subnet && (r = parse_cidr(o->subnet, &n.subnet, &n.prefix, err)) < 0)
		return r;
	struct in6_addr sub6;
	int prefix6;
	if (o->subnet6 && (r = parse_cidr6(o->subnet6, &sub6, &prefix6, err)) < 0)
		return r;
	if (o->gateway) {
		if ((r = parse_ip("--gateway", o->gateway, &n.gateway, err)) < 0)
			return r;
		if (!o->subnet)
			return kap_error_plain(err, EINVAL, "--gateway %s needs --subnet",
					       o->gateway);
		uint32_t m = mask_of(n.prefix);
		if ((n.gateway & m) != n.subnet || n.gateway == n.subnet ||
		    n.gateway == (n.subnet | ~m))
			return kap_error_plain(err, EINVAL,
					       "--gateway %s: not a host address of subnet %s",
					       o->gateway, o->subnet);
	}
	cleanup_netdir struct netdir d;
	if ((r = netdir_open(store, &d, err)) < 0)
		return r;
	struct network tmp;
	if ((r = default_network(&d, &tmp, err)) < 0)
		return r;
	char file[96];
	snprintf(file, sizeof(file), "%s.json", n.name);
	if (faccessat(d.dfd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return kap_error_plain(err, EEXIST, "network %s already exists", n.name);
	cleanup_nl struct kap_nl *nl = NULL;
	if ((r = kap_nl_open(-1, &nl, err)) < 0)
		return r;
	cleanup_free char *why = NULL;
	if (o->subnet) {
		if ((r = subnet_taken(&d, nl, n.subnet, n.prefix, NULL, &why, err)) < 0)
			return r;
		if (r)
			return kap_error_plain(err, EEXIST, "--subnet %s overlaps %s", o->subnet,
					       why);
	} else {
		/* podman's choice for new networks: the next free 10.89.N.0/24. */
		bool found = false;
		for (uint32_t k = 0; k < 65536 && !found; k++) {
			uint32_t net =
			    (UINT32_C(10) << 24) | ((89 + (k >> 8)) << 16) | ((k & 255) << 8);
			if (89 + (k >> 8) > 255)
				break;
			free(steal_ptr(why));
			if ((r = subnet_taken(&d, nl, net, 24, NULL, &why, err)) < 0)
				return r;
			if (!r) {
				n.subnet = net;
				n.prefix = 24;
				found = true;
			}
		}
		if (!found)
			return kap_error_plain(err, EADDRNOTAVAIL,
					       "network %s: no free 10.N.M.0/24 subnet", n.name);
	}
	if (!o->gateway)
		n.gateway = n.subnet + 1;
	if ((o->ipv6 || o->subnet6) && (r = network_v6(&d, nl, &n, o->subnet6, err)) < 0)
		return r;
	/* Bridges kapsel1..: the lowest number no other network uses. */
	cleanup_strv char **names = NULL;
	size_t cnt;
	if ((r = network_names(&d, &names, &cnt, err)) < 0)
		return r;
	for (int b = 1; b < 1000 && !n.bridge[0]; b++) {
		char br[16];
		snprintf(br, sizeof(br), "kapsel%d", b);
		bool used = false;
		for (size_t i = 0; i < cnt && !used; i++) {
			struct network o2;
			used = network_read(&d, names[i], &o2, NULL) == 0 && !strcmp(o2.bridge, br);
		}
		if (!used)
			snprintf(n.bridge, sizeof(n.bridge), "%s", br);
	}
	return network_write(&d, &n, err);
}

static void info_clear(struct kapsel_network_info *i)
{
	free(i->name);
	free(i->bridge);
	free(i->subnet);
	free(i->gateway);
	free(i->subnet6);
	free(i->gateway6);
	for (char **p = i->containers; p && *p; p++)
		free(*p);
	free(i->containers);
}

API void kapsel_network_infos_free(struct kapsel_network_info *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		info_clear(&v[i]);
	free(v);
}

static int info_of(struct netdir *d, const struct network *n, struct kapsel_network_info *out,
		   struct kapsel_error **err)
{
	cleanup_leases struct leases l = {0};
	int r = leases_read(d, n->name, &l, err);
	if (r < 0)
		return r;
	char sub[INET_ADDRSTRLEN + 4], gw[INET_ADDRSTRLEN];
	ip_str(n->subnet, sub);
	snprintf(sub + strlen(sub), 4, "/%d", n->prefix);
	ip_str(n->gateway, gw);
	*out = (struct kapsel_network_info){
	    .name = strdup(n->name),
	    .bridge = strdup(n->bridge),
	    .subnet = strdup(sub),
	    .gateway = strdup(gw),
	    .internal = n->internal,
	    .containers = calloc(l.n + 1, sizeof(char *)),
	};
	if (n->v6) {
		char s6[INET6_ADDRSTRLEN + 5], g6[INET6_ADDRSTRLEN];
		ip6_str(&n->subnet6, s6);
		snprintf(s6 + strlen(s6), 5, "/%d", n->prefix6);
		ip6_str(&n->gateway6, g6);
		out->subnet6 = strdup(s6);
		out->gateway6 = strdup(g6);
	}
	if (!out->name || !out->bridge || !out->subnet || !out->gateway || !out->containers ||
	    (n->v6 && (!out->subnet6 || !out->gateway6))) {
		info_clear(out);
		return kap_error(err, ENOMEM, "network %s", n->name);
	}
	for (size_t i = 0; i < l.n; i++)
		out->containers[i] = steal_ptr(l.v[i].container);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct kapsel_network_info *)a)->name,
		      ((const struct kapsel_network_info *)b)->name);
}

API int kapsel_network_list(const char *store, struct kapsel_network_info **out, size_t *n,
			    struct kapsel_error **err)
{
	*out = NULL;
	*n = 0;
	cleanup_netdir struct netdir d;
	int r = netdir_open(store, &d, err);
	struct network def;
	if (r < 0 || (r = default_network(&d, &def, err)) < 0 ||
	    (r = sweep(&d, NULL, false, err)) < 0)
		return r;
	cleanup_strv char **names = NULL;
	size_t cnt;
	if ((r = network_names(&d, &names, &cnt, err)) < 0)
		return r;
	struct kapsel_network_info *v = calloc(cnt + 1, sizeof(*v));
	if (!v)
		return kap_error(err, ENOMEM, "networks");
	size_t k = 0;
	for (size_t i = 0; i < cnt; i++) {
		struct network nw;
		if ((r = network_read(&d, names[i], &nw, err)) < 0 ||
		    (r = info_of(&d, &nw, &v[k], err)) < 0) {
			kapsel_network_infos_free(v, k);
			return r;
		}
		k++;
	}
	qsort(v, k, sizeof(*v), by_name);
	*out = v;
	*n = k;
	return 0;
}

API int kapsel_network_inspect(const char *store, const char *name, char **json,
			       struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	struct network nw;
	struct kapsel_network_info info;
	int r = netdir_open(store, &d, err);
	if (r < 0 || (r = sweep(&d, NULL, false, err)) < 0 ||
	    (r = network_load(&d, name, &nw, err)) < 0 || (r = info_of(&d, &nw, &info, err)) < 0)
		return r;
	cleanup_json struct kap_json *j = kap_json_new_object();
	struct kap_json *subs = kap_json_new_array(), *sub = kap_json_new_object();
	struct kap_json *ctrs = kap_json_new_array();
	if (j && subs && sub && ctrs) {
		kap_json_set(j, "name", kap_json_new_string(info.name));
		kap_json_set(j, "driver", kap_json_new_string("bridge"));
		kap_json_set(j, "network_interface", kap_json_new_string(info.bridge));
		kap_json_set(sub, "subnet", kap_json_new_string(info.subnet));
		kap_json_set(sub, "gateway", kap_json_new_string(info.gateway));
		kap_json_append(subs, sub);
		if (info.subnet6) {
			struct kap_json *s6 = kap_json_new_object();
			kap_json_set(s6, "subnet", kap_json_new_string(info.subnet6));
			kap_json_set(s6, "gateway", kap_json_new_string(info.gateway6));
			kap_json_append(subs, s6);
		}
		kap_json_set(j, "subnets", subs);
		kap_json_set(j, "ipv6_enabled", kap_json_new_bool(info.subnet6 != NULL));
		kap_json_set(j, "internal", kap_json_new_bool(info.internal));
		kap_json_set(j, "created", kap_json_new_int64(nw.created));
		for (char **p = info.containers; *p; p++)
			kap_json_append(ctrs, kap_json_new_string(*p));
		kap_json_set(j, "containers", ctrs);
		subs = sub = ctrs = NULL;
	}
	kap_json_put(subs);
	kap_json_put(sub);
	kap_json_put(ctrs);
	info_clear(&info);
	*json = j ? kap_json_dump(j, true) : NULL;
	return *json ? 0 : kap_error(err, ENOMEM, "network %s", name);
}

API int kapsel_network_rm(const char *store, const char *name, struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	struct network nw;
	int r = netdir_open(store, &d, err);
	if (r < 0 || (r = sweep(&d, NULL, false, err)) < 0 ||
	    (r = network_load(&d, name, &nw, err)) < 0)
		return r;
	if (!strcmp(name, DEFAULT_NETWORK))
		return kap_error_plain(err, EPERM,
				       "network %s is the default and cannot be removed", name);
	cleanup_leases struct leases l = {0};
	if ((r = leases_read(&d, name, &l, err)) < 0)
		return r;
	if (l.n)
		return kap_error_plain(err, EBUSY,
				       "network %s is in use by container %s (rm -f removes it)",
				       name, l.v[0].container);
	cleanup_nl struct kap_nl *nl = NULL;
	if ((r = kap_nl_open(-1, &nl, err)) < 0 || (r = kap_nl_link_del(nl, nw.bridge, err)) < 0)
		return r;
	if (kap_nft_present()) {
		char sub[INET_ADDRSTRLEN], cmd[128];
		ip_str(nw.subnet, sub);
		snprintf(cmd, sizeof(cmd), "delete element ip kapsel %s { %s/%d }",
			 nw.internal ? "internal" : "masq", sub, nw.prefix);
		cleanup_error struct kapsel_error *ne = NULL;
		kap_nft_run(cmd, &ne); /* never attached: no element */
	}
	if (nw.v6 && kap_nft6_present()) {
		char sub6[INET6_ADDRSTRLEN], cmd[160];
		ip6_str(&nw.subnet6, sub6);
		snprintf(cmd, sizeof(cmd), "delete element ip6 kapsel %s { %s/%d }",
			 nw.internal ? "internal" : "masq", sub6, nw.prefix6);
		cleanup_error struct kapsel_error *ne = NULL;
		kap_nft_run(cmd, &ne); /* never attached: no element */
	}
	kap_dns_stop(d.dfd, name);
	char file[128];
	snprintf(file, sizeof(file), "%s.leases.json", name);
	if (unlinkat(d.dfd, file, 0) < 0 && errno != ENOENT)
		return kap_error(err, errno, "remove %s/networks/%s", d.store, file);
	snprintf(file, sizeof(file), "%s.json", name);
	if (unlinkat(d.dfd, file, 0) < 0)
		return kap_error(err, errno, "remove %s/networks/%s", d.store, file);
	return 0;
}

/* ---- the container side ---- */

/* An RFC 1123 §2.1 label: the responder answers single-label names only (net/dns.c). */
static bool dns_label_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

static int check_request(const struct kap_net_request *rq, const struct network *nw, uint32_t *ip,
			 struct in6_addr *ip6, struct kapsel_error **err)
{
	int r;
	*ip = 0;
	*ip6 = in6addr_any;
	if (rq->ip6) {
		if (!nw->v6)
			return kap_error_plain(err, EINVAL,
					       "--ip6 %s: network %s has no IPv6 subnet (network "
					       "create --ipv6)",
					       rq->ip6, nw->name);
		if (inet_pton(AF_INET6, rq->ip6, ip6) != 1)
			return kap_error_plain(err, EINVAL, "--ip6 \"%s\": not an IPv6 address",
					       rq->ip6);
		char sub6[INET6_ADDRSTRLEN];
		ip6_str(&nw->subnet6, sub6);
		/* RFC 4291 §2.6.1: the subnet's all-zero host part is the Subnet-Router
		 * anycast address, not a host's. */
		if (!overlap6(ip6, 128, &nw->subnet6, nw->prefix6) ||
		    !memcmp(ip6, &nw->subnet6, sizeof(*ip6)))
			return kap_error_plain(err, EINVAL, "--ip6 %s: outside network %s (%s/%d)",
					       rq->ip6, nw->name, sub6, nw->prefix6);
		if (!memcmp(ip6, &nw->gateway6, sizeof(*ip6)))
			return kap_error_plain(err, EADDRINUSE,
					       "--ip6 %s: the gateway of network %s", rq->ip6,
					       nw->name);
	}
	if (rq->ip) {
		if ((r = parse_ip("--ip", rq->ip, ip, err)) < 0)
			return r;
		uint32_t m = mask_of(nw->prefix);
		char sub[INET_ADDRSTRLEN];
		ip_str(nw->subnet, sub);
		if ((*ip & m) != nw->subnet || *ip == nw->subnet || *ip == (nw->subnet | ~m))
			return kap_error_plain(err, EINVAL, "--ip %s: outside network %s (%s/%d)",
					       rq->ip, nw->name, sub, nw->prefix);
		if (*ip == nw->gateway)
			return kap_error_plain(err, EADDRINUSE,
					       "--ip %s: the gateway of network %s", rq->ip,
					       nw->name);
	}
	uint8_t mac[6];
	if (rq->mac && (r = kap_net_parse_mac(rq->mac, mac, err)) < 0)
		return r;
	for (char *const *a = rq->aliases; a && *a; a++)
		if (!dns_label_ok(*a))
			return kap_error_plain(
			    err, EINVAL, "--alias \"%.80s\": not a host name (one label)", *a);
	for (char *const *p = rq->ports; p && *p; p++) {
		struct kap_net_port port;
		if ((r = kap_net_parse_port(*p, &port, err)) < 0)
			return r;
	}
	return 0;
}

int kap_net_check(const struct kap_net_request *rq, struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	struct network nw;
	uint32_t ip;
	struct in6_addr ip6;
	int r = netdir_open(rq->store, &d, err);
	if (r < 0 || (r = network_load(&d, rq->network, &nw, err)) < 0)
		return r;
	return check_request(rq, &nw, &ip, &ip6, err);
}

/* A host port that a host process holds: bind it (and let go). */
static int port_free_on_host(const struct kap_net_port *p, const char *spec,
			     struct kapsel_error **err)
{
	bool tcp = !strcmp(p->proto, "tcp");
	cleanup_close int s = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (s < 0)
		return kap_error(err, errno, "-p %s: socket", spec);
	int one = 1;
	/* TIME_WAIT of an earlier connection is no user of the port. */
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {
	    .sin_family = AF_INET, .sin_port = htons(p->host_port), .sin_addr = p->host_ip};
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == EADDRINUSE)
		return kap_error_plain(err, EADDRINUSE, "-p %s: host port %s/%u is already in use",
				       spec, p->proto, p->host_port);
	return 0;
}

static int sysctl_on(const char *path, struct kapsel_error **err)
{
	return kap_fs_write_at(AT_FDCWD, path, "1", 1, err);
}

/*
 * The host side of a network, made once per network namespace: the bridge, its address, NAT
 * or isolation, and the bridge set up last: an up bridge says all of it is done (we hold the
 * network lock, so nobody is halfway), and the next container skips the nftables round trips,
 * the dearest part (libnftables reads the ruleset for every command).
 */
static int network_up(struct kap_nl *nl, const struct network *nw, bool ports,
		      struct kapsel_error **err)
{
	struct in_addr gw = {htonl(nw->gateway)};
	int r;
	if (ports) {
		/* 127.0.0.1 may leave through the bridge once DNAT sent it there (ip-sysctl.rst).
		 */
		char path[96];
		snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/route_localnet",
			 nw->bridge);
		if (kap_nl_link_is_up(nl, nw->bridge))
			return sysctl_on(path, err);
		if ((r = kap_nl_bridge_create(nl, nw->bridge, err)) < 0 ||
		    (r = sysctl_on(path, err)) < 0)
			return r;
	} else if (kap_nl_link_is_up(nl, nw->bridge)) {
		return 0;
	}
	if ((r = kap_nl_bridge_create(nl, nw->bridge, err)) < 0 ||
	    (r = kap_nl_addr_add(nl, nw->bridge, gw, nw->prefix, err)) < 0 ||
	    (nw->v6 && (r = kap_nl_addr6_add(nl, nw->bridge, &nw->gateway6, nw->prefix6, err)) < 0))
		return r;
	if (nw->v6) {
		/* ip-sysctl.rst: IPv6 forwarding is all or nothing (conf/all/forwarding). */
		if (!nw->internal &&
		    (r = sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding", err)) < 0)
			return r;
		char sub6[INET6_ADDRSTRLEN], cmd[160];
		ip6_str(&nw->subnet6, sub6);
		snprintf(cmd, sizeof(cmd), "add element ip6 kapsel %s { %s/%d }",
			 nw->internal ? "internal" : "masq", sub6, nw->prefix6);
		if ((r = kap_nft6_ensure(err)) < 0 || (r = kap_nft_run(cmd, err)) < 0)
			return r;
	}
	/* Outbound traffic is routed, not bridged: forwarding on (netavark does the same). */
	if (!nw->internal && (r = sysctl_on("/proc/sys/net/ipv4/ip_forward", err)) < 0)
		return r;
	if ((r = kap_nft_ensure(err)) < 0)
		return r;
	char sub[INET_ADDRSTRLEN], cmd[128];
	ip_str(nw->subnet, sub);
	snprintf(cmd, sizeof(cmd), "add element ip kapsel %s { %s/%d }",
		 nw->internal ? "internal" : "masq", sub, nw->prefix);
	if ((r = kap_nft_run(cmd, err)) < 0)
		return r;
	return kap_nl_link_set_up(nl, nw->bridge, err);
}

/* Whether a lease other than the one asked about holds IPv6 address a; which one in *who. */
static bool ip6_taken(const struct network *nw, const struct leases *l, const struct in6_addr *a,
		      const char **who)
{
	for (size_t i = 0; nw->v6 && i < l->n; i++) {
		struct in6_addr x = lease_ip6(nw, &l->v[i]);
		if (!memcmp(&x, a, sizeof(x))) {
			*who = l->v[i].container;
			return true;
		}
	}
	return false;
}

/*
 * The IPv4 address (want, or the lowest free one) and, on a dual-stack network, the IPv6 one
 * (want6 from --ip6, else the one derived from the IPv4 address). An --ip6 address may be
 * another address's derived one: no address is handed out whose derived IPv6 address a lease
 * holds, so the IPv6 side stays free of duplicates as the IPv4 side is.
 */
static int lease_pick(const struct network *nw, uint32_t want, const struct in6_addr *want6,
		      const struct leases *l, const struct kap_net_request *rq, uint32_t *out,
		      struct in6_addr *out6, struct kapsel_error **err)
{
	uint32_t m = mask_of(nw->prefix);
	bool explicit6 = nw->v6 && !IN6_IS_ADDR_UNSPECIFIED(want6);
	const char *who;
	if (explicit6 && ip6_taken(nw, l, want6, &who))
		return kap_error_plain(err, EADDRINUSE, "--ip6 %s: already used by container %s",
				       rq->ip6, who);
	if (want) {
		for (size_t i = 0; i < l->n; i++)
			if (l->v[i].ip == want)
				return kap_error_plain(err, EADDRINUSE,
						       "--ip %s: already used by container %s",
						       rq->ip, l->v[i].container);
		struct in6_addr d6 = nw->v6 ? ip6_of(nw, want) : in6addr_any;
		if (nw->v6 && !explicit6 && ip6_taken(nw, l, &d6, &who)) {
			char a6[INET6_ADDRSTRLEN];
			ip6_str(&d6, a6);
			return kap_error_plain(err, EADDRINUSE,
					       "--ip %s: its IPv6 address %s is already used by "
					       "container %s (--ip6 another)",
					       rq->ip, a6, who);
		}
		*out = want;
		*out6 = explicit6 ? *want6 : d6;
		return 0;
	}
	for (uint32_t ip = nw->subnet + 1; ip < (nw->subnet | ~m); ip++) {
		if (ip == nw->gateway)
			continue;
		bool used = false;
		for (size_t i = 0; i < l->n && !used; i++)
			used = l->v[i].ip == ip;
		struct in6_addr d6 = nw->v6 ? ip6_of(nw, ip) : in6addr_any;
		/* Its derived IPv6 address is another container's --ip6. */
		if (!used && nw->v6 && ip6_taken(nw, l, &d6, &who))
			used = true;
		if (!used) {
			*out = ip;
			*out6 = explicit6 ? *want6 : d6;
			return 0;
		}
	}
	return kap_error_plain(err, EADDRNOTAVAIL, "network %s: no free address", nw->name);
}

/* Published ports against every lease of every network, and the host's own sockets. */
static int ports_check(struct netdir *d, char *const *norm, char *const *specs,
		       struct kapsel_error **err)
{
	cleanup_strv char **names = NULL;
	size_t n;
	int r = network_names(d, &names, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; norm && norm[i]; i++) {
		for (size_t j = 0; j < i; j++)
			if (ports_clash(norm[i], norm[j]))
				return kap_error_plain(err, EADDRINUSE,
						       "-p %s: host port given twice", specs[i]);
		for (size_t k = 0; k < n; k++) {
			cleanup_leases struct leases l = {0};
			if ((r = leases_read(d, names[k], &l, err)) < 0)
				return r;
			for (size_t x = 0; x < l.n; x++)
				for (char **p = l.v[x].ports; p && *p; p++)
					if (ports_clash(norm[i], *p))
						return kap_error_plain(
						    err, EADDRINUSE,
						    "-p %s: host port already published by "
						    "container %s",
						    specs[i], l.v[x].container);
		}
		struct kap_net_port port;
		if ((r = kap_net_parse_port(specs[i], &port, err)) < 0 ||
		    (r = port_free_on_host(&port, specs[i], err)) < 0)
			return r;
	}
	return 0;
}

/* Every host port a lease of any network holds ("tcp:0.0.0.0:8080:80"), appended to *v. */
static int published_ports(struct netdir *d, char ***v, size_t *n, struct kapsel_error **err)
{
	cleanup_strv char **names = NULL;
	size_t cnt;
	int r = network_names(d, &names, &cnt, err);
	if (r < 0)
		return r;
	for (size_t k = 0; k < cnt; k++) {
		cleanup_leases struct leases l = {0};
		if ((r = leases_read(d, names[k], &l, err)) < 0)
			return r;
		for (size_t x = 0; x < l.n; x++)
			for (char **p = l.v[x].ports; p && *p; p++) {
				char **nv = realloc(*v, (*n + 2) * sizeof(char *));
				if (!nv || !(nv[*n] = strdup(*p))) {
					if (nv)
						*v = nv;
					return kap_error(err, ENOMEM, "ports");
				}
				nv[++*n] = NULL;
				*v = nv;
			}
	}
	return 0;
}

/*
 * -P: each exposed port that no -p of the request publishes gets a host port of the
 * ephemeral range (ip-sysctl.rst: ip_local_port_range), as podman picks them: one no lease of
 * any network holds, none picked before in this request, and one no host socket is bound to.
 * We hold the network lock, so two runs never pick the same one. A random start spreads the
 * picks, so a port just freed is not handed out again at once.
 */
static int publish_all(struct netdir *d, char *const *const expose[2], char ***norm, size_t *np,
		       struct kapsel_error **err)
{
	unsigned lo = 32768, hi = 60999;
	cleanup_free char *range = NULL;
	if (kap_fs_read_file(AT_FDCWD, "/proc/sys/net/ipv4/ip_local_port_range", 64, &range, NULL,
			     NULL) == 0 &&
	    (sscanf(range, "%u %u", &lo, &hi) != 2 || lo < 1 || hi > 65535 || lo > hi)) {
		lo = 32768;
		hi = 60999;
	}
	cleanup_strv char **used = NULL;
	size_t nu = 0;
	int r = published_ports(d, &used, &nu, err);
	if (r < 0)
		return r;
	unsigned span = hi - lo + 1, start = 0;
	if (getrandom(&start, sizeof(start), 0) != (ssize_t)sizeof(start))
		start = (unsigned)getpid();
	for (int list = 0; list < 2; list++) {
		for (char *const *e = expose[list]; e && *e; e++) {
			uint16_t cport;
			char proto[4];
			/* The image's own list may name a protocol we cannot publish (sctp):
			 * skipped. */
			if (kap_net_parse_expose("--expose", *e, &cport, proto, NULL) < 0)
				continue;
			bool have = false;
			for (size_t i = 0; i < *np && !have; i++) {
				char p2[4], ip[INET_ADDRSTRLEN];
				unsigned hp, cp;
				have = sscanf((*norm)[i], "%3[a-z]:%15[0-9.]:%u:%u", p2, ip, &hp,
					      &cp) == 4 &&
				       cp == cport && !strcmp(p2, proto);
			}
			if (have)
				continue; /* a -p publishes it (or the image lists it twice) */
			char *pick = NULL;
			for (unsigned k = 0; k < span && !pick; k++) {
				unsigned port = lo + (start + k) % span;
				if (asprintf(&pick, "%s:0.0.0.0:%u:%u", proto, port, cport) < 0)
					return kap_error(err, ENOMEM, "ports");
				bool clash = false;
				for (size_t i = 0; i < nu && !clash; i++)
					clash = ports_clash(pick, used[i]);
				for (size_t i = 0; i < *np && !clash; i++)
					clash = ports_clash(pick, (*norm)[i]);
				struct kap_net_port hp = {.host_port = (uint16_t)port};
				snprintf(hp.proto, sizeof(hp.proto), "%s", proto);
				hp.host_ip.s_addr = htonl(INADDR_ANY);
				if (!clash && port_free_on_host(&hp, *e, NULL) < 0)
					clash = true;
				if (clash)
					free(steal_ptr(pick));
			}
			if (!pick)
				return kap_error_plain(err, EADDRNOTAVAIL,
						       "-P %s: no free host port in %u-%u", *e, lo,
						       hi);
			char **nv = realloc(*norm, (*np + 2) * sizeof(char *));
			if (!nv) {
				free(pick);
				return kap_error(err, ENOMEM, "ports");
			}
			nv[(*np)++] = pick;
			nv[*np] = NULL;
			*norm = nv;
		}
	}
	return 0;
}

/* "tcp:0.0.0.0:8080:80" back to the -p spec "0.0.0.0:8080:80/tcp". */
static char **port_specs(char *const *norm, struct kapsel_error **err)
{
	size_t n = 0;
	while (norm && norm[n])
		n++;
	cleanup_strv char **v = calloc(n + 1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "ports"), NULL;
	for (size_t i = 0; i < n; i++) {
		char proto[4], ip[INET_ADDRSTRLEN];
		unsigned hp = 0, cp = 0;
		sscanf(norm[i], "%3[a-z]:%15[0-9.]:%u:%u", proto, ip, &hp, &cp);
		if (asprintf(&v[i], "%s:%u:%u/%s", ip, hp, cp, proto) < 0) {
			v[i] = NULL;
			return kap_error(err, ENOMEM, "ports"), NULL;
		}
	}
	return steal_ptr(v);
}

void kap_net_result_clear(struct kap_net_result *res)
{
	for (char **p = res->ports; p && *p; p++)
		free(*p);
	free(res->ports);
	res->ports = NULL;
}

/* kap_net_attach under the lock, the container's end named ifname (eth0, eth1, ...). */
static int attach_locked(struct netdir *dp, const struct kap_net_request *rq, const char *ifname,
			 struct kap_net_result *res, struct kapsel_error **err)
{
	struct netdir d = *dp; /* borrowed: the caller closes it */
	struct network nw;
	uint32_t want, ip = 0; /* set by lease_pick; gcc -O2 cannot see it */
	struct in6_addr want6, ip6 = in6addr_any;
	int r;
	if ((r = network_load(&d, rq->network, &nw, err)) < 0 ||
	    (r = check_request(rq, &nw, &want, &want6, err)) < 0 ||
	    (r = sweep(&d, NULL, false, err)) < 0)
		return r;
	size_t np = 0;
	while (rq->ports && rq->ports[np])
		np++;
	cleanup_strv char **norm = calloc(np + 1, sizeof(char *));
	if (!norm)
		return kap_error(err, ENOMEM, "ports");
	for (size_t i = 0; i < np; i++) {
		struct kap_net_port port;
		if ((r = kap_net_parse_port(rq->ports[i], &port, err)) < 0)
			return r;
		if (!(norm[i] = port_norm(&port)))
			return kap_error(err, ENOMEM, "ports");
	}
	if ((r = ports_check(&d, norm, rq->ports, err)) < 0)
		return r;
	if (rq->publish_all && (r = publish_all(&d, rq->expose, &norm, &np, err)) < 0)
		return r;
	if (!(res->ports = port_specs(norm, err)))
		return -ENOMEM;
	cleanup_leases struct leases l = {0};
	if ((r = leases_read(&d, nw.name, &l, err)) < 0)
		return r;
	for (size_t i = 0; i < l.n; i++)
		if (!strcmp(l.v[i].container, rq->container))
			return kap_error_plain(err, EEXIST,
					       "container %s is already connected to network %s",
					       rq->container, nw.name);
	if ((r = lease_pick(&nw, want, &want6, &l, rq, &ip, &ip6, err)) < 0)
		return r;
	/* The record first: from here on a kill leaves something kap_net_detach undoes. */
	struct lease *nv = realloc(l.v, (l.n + 1) * sizeof(*nv));
	if (!nv)
		return kap_error(err, ENOMEM, "leases");
	l.v = nv;
	struct lease *e = &l.v[l.n++];
	size_t na = 0;
	while (rq->aliases && rq->aliases[na])
		na++;
	*e = (struct lease){.ip = ip,
			    .has6 = nw.v6,
			    .ip6 = ip6,
			    .container = strdup(rq->container),
			    .ports = steal_ptr(norm),
			    .aliases = calloc(na + 1, sizeof(char *))};
	for (size_t i = 0; e->aliases && i < na; i++)
		if (!(e->aliases[i] = strdup(rq->aliases[i])))
			return kap_error(err, ENOMEM, "leases");
	if (!e->aliases)
		return kap_error(err, ENOMEM, "leases");
	snprintf(e->veth, sizeof(e->veth), "kv%08x", ip);
	if (!e->container)
		return kap_error(err, ENOMEM, "leases");
	if ((r = leases_write(&d, nw.name, &l, err)) < 0)
		return r;
	kap_fault_point("net:leased");

	cleanup_nl struct kap_nl *host = NULL;
	cleanup_nl struct kap_nl *ctr = NULL;
	uint8_t mac[6];
	struct in_addr addr = {htonl(ip)}, gw = {htonl(nw.gateway)};
	if (rq->vm) {
		/* The VM's tap is the caller's (its VMM's, gone with it): the bridge up and the
		 * MAC it will have. Without --mac-address a random one, locally administered
		 * and unicast, as the kernel gives a veth. */
		if ((r = kap_nl_open(-1, &host, err)) < 0 ||
		    (r = network_up(host, &nw, np > 0, err)) < 0 ||
		    (rq->mac && (r = kap_net_parse_mac(rq->mac, mac, err)) < 0))
			return kap_error_wrap(err, "network %s", nw.name);
		if (!rq->mac && getrandom(mac, sizeof(mac), 0) != (ssize_t)sizeof(mac))
			return kap_error(err, errno, "getrandom");
		if (!rq->mac)
			mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
		snprintf(res->mac, sizeof(res->mac), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0],
			 mac[1], mac[2], mac[3], mac[4], mac[5]);
		snprintf(res->bridge, sizeof(res->bridge), "%s", nw.bridge);
	} else if ((r = kap_nl_open(-1, &host, err)) < 0 ||
		   (r = network_up(host, &nw, np > 0, err)) < 0 ||
		   /* A veth of that name outlives a lease only after a kill; it is ours. */
		   (r = kap_nl_link_del(host, e->veth, err)) < 0 ||
		   (rq->mac && (r = kap_net_parse_mac(rq->mac, mac, err)) < 0) ||
		   (r = kap_nl_veth_create(host, e->veth, ifname, rq->netns_fd,
					   rq->mac ? mac : NULL, err)) < 0 ||
		   (r = kap_nl_link_set_master(host, e->veth, nw.bridge, err)) < 0 ||
		   (r = kap_nl_link_set_up(host, e->veth, err)) < 0 ||
		   (kap_fault_point("net:veth"), r = kap_nl_open(rq->netns_fd, &ctr, err)) < 0 ||
		   (r = kap_nl_addr_add(ctr, ifname, addr, nw.prefix, err)) < 0 ||
		   (r = kap_nl_link_set_up(ctr, ifname, err)) < 0 ||
		   /* An internal network has no way out: no default route either (podman). A
		    * second network keeps the first one's default route. */
		   (!nw.internal && (r = kap_nl_route_add_default(ctr, gw, err)) < 0) ||
		   (nw.v6 && (r = kap_nl_addr6_add(ctr, ifname, &ip6, nw.prefix6, err)) < 0) ||
		   (nw.v6 && !nw.internal &&
		    (r = kap_nl_route6_add_default(ctr, &nw.gateway6, err)) < 0))
		return kap_error_wrap(err, "network %s", nw.name);
	for (char **p = nw.v6 ? e->ports : NULL; p && *p; p++) {
		char cmd[240], key[200];
		if (!port_key6(*p, key, sizeof(key), &ip6))
			continue;
		snprintf(cmd, sizeof(cmd), "create element ip6 kapsel %s", key);
		if ((r = kap_nft_run(cmd, err)) < 0)
			return r;
	}
	for (char **p = e->ports; p && *p; p++) {
		char cmd[200], key[160];
		port_key(*p, key, sizeof(key), true, ip);
		/* create, not add: an element someone else made is a clash, not ours to take. */
		snprintf(cmd, sizeof(cmd), "create element ip kapsel %s", key);
		if ((r = kap_nft_run(cmd, err)) < 0)
			return r;
	}
	kap_fault_point("net:ports");
	/* Names resolve on user-defined networks only, as in podman. */
	if (strcmp(nw.name, DEFAULT_NETWORK)) {
		if ((r = kap_dns_start(d.dfd, nw.name, gw, nw.v6 ? &nw.gateway6 : NULL, err)) < 0)
			return r;
		res->dns = true;
	}
	ip_str(ip, res->ip);
	ip_str(nw.gateway, res->gateway);
	res->internal = nw.internal;
	res->prefix = nw.prefix;
	res->prefix6 = nw.v6 ? nw.prefix6 : 0;
	if (nw.v6) {
		ip6_str(&ip6, res->ip6);
		ip6_str(&nw.gateway6, res->gateway6);
	}
	return 0;
}

int kap_net_attach(const struct kap_net_request *rq, struct kap_net_result *res,
		   struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	int r = netdir_open(rq->store, &d, err);
	return r < 0 ? r : attach_locked(&d, rq, "eth0", res, err);
}

API int kapsel_network_connect(const char *store, const char *network, const char *container,
			       const struct kapsel_network_connect_options *o,
			       struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	int r = netdir_open(store, &d, err);
	if (r < 0)
		return r;
	/* Only a namespace kapsel made (run --net NETWORK) can be joined: with none, the
	 * container's network is its own on purpose, and with host there is nothing to add. */
	char path[256];
	snprintf(path, sizeof(path), "containers/%s/" KAP_NET_VM_FILE, container);
	cleanup_close int sfd = open(d.store, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd >= 0 && faccessat(sfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return kap_error_plain(err, EINVAL,
				       "container %s runs in a VM: its one network card is on the "
				       "network it was run with (connect cannot add one)",
				       container);
	snprintf(path, sizeof(path), "containers/%s/netns", container);
	cleanup_close int nsfd =
	    sfd >= 0 ? openat(sfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -EBADF;
	if (nsfd < 0 && errno == ENOENT)
		return kap_error_plain(err, ENOENT,
				       "container %s: no such container on a network (connect "
				       "needs one run with --net NETWORK)",
				       container);
	if (nsfd < 0)
		return kap_error(err, errno, "container %s: open its network namespace", container);
	cleanup_nl struct kap_nl *ctr = NULL;
	if ((r = kap_nl_open(nsfd, &ctr, err)) < 0)
		return r;
	char ifname[16] = "";
	for (int i = 1; i < 64 && !ifname[0]; i++) {
		char n[16];
		snprintf(n, sizeof(n), "eth%d", i);
		if (kap_nl_ifindex(ctr, n) == -ENODEV)
			snprintf(ifname, sizeof(ifname), "%s", n);
	}
	if (!ifname[0])
		return kap_error_plain(err, ENOSPC, "container %s: no free ethN", container);
	struct kap_net_request rq = {.store = store,
				     .network = network,
				     .container = container,
				     .ip = o ? o->ip : NULL,
				     .ip6 = o ? o->ip6 : NULL,
				     .mac = o ? o->mac : NULL,
				     .aliases = o ? o->aliases : NULL,
				     .netns_fd = nsfd};
	cleanup_net_result struct kap_net_result res = {0};
	return attach_locked(&d, &rq, ifname, &res, err);
}

API int kapsel_network_disconnect(const char *store, const char *network, const char *container,
				  struct kapsel_error **err)
{
	cleanup_netdir struct netdir d;
	struct network nw;
	int r = netdir_open(store, &d, err);
	if (r < 0 || (r = network_load(&d, network, &nw, err)) < 0)
		return r;
	cleanup_leases struct leases l = {0};
	if ((r = leases_read(&d, nw.name, &l, err)) < 0)
		return r;
	size_t k = 0;
	while (k < l.n && strcmp(l.v[k].container, container))
		k++;
	if (k == l.n)
		return kap_error_plain(err, ENOENT, "container %s is not connected to network %s",
				       container, nw.name);
	cleanup_nl struct kap_nl *nl = NULL;
	if ((r = kap_nl_open(-1, &nl, err)) < 0)
		return r;
	/* The host end's deletion takes the container's end with it (veth pair). */
	bool ports = l.v[k].ports && *l.v[k].ports;
	lease_teardown(nl, &l.v[k], ports && kap_nft_present(),
		       ports && nw.v6 && kap_nft6_present());
	free(l.v[k].container);
	l.v[k].container = NULL;
	if ((r = leases_write(&d, nw.name, &l, err)) < 0)
		return r;
	size_t left = 0;
	for (size_t i = 0; i < l.n; i++)
		left += l.v[i].container != NULL;
	if (!left)
		kap_dns_stop(d.dfd, nw.name);
	return 0;
}

int kap_net_holders(const char *store, char ***out, struct kapsel_error **err)
{
	*out = NULL;
	cleanup_netdir struct netdir d;
	cleanup_strv char **names = NULL;
	size_t n, cnt = 0;
	int r = netdir_open(store, &d, err);
	if (r < 0 || (r = network_names(&d, &names, &n, err)) < 0)
		return r;
	cleanup_strv char **v = calloc(1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "leases");
	for (size_t i = 0; i < n; i++) {
		cleanup_leases struct leases l = {0};
		if ((r = leases_read(&d, names[i], &l, err)) < 0)
			return r;
		for (size_t k = 0; k < l.n; k++) {
			bool seen = !l.v[k].container;
			for (size_t j = 0; j < cnt && !seen; j++)
				seen = !strcmp(v[j], l.v[k].container);
			if (seen)
				continue;
			char **nv = realloc(v, (cnt + 2) * sizeof(char *));
			if (!nv)
				return kap_error(err, ENOMEM, "leases");
			v = nv;
			v[cnt + 1] = NULL;
			if (!(v[cnt] = strdup(l.v[k].container)))
				return kap_error(err, ENOMEM, "leases");
			cnt++;
		}
	}
	*out = steal_ptr(v);
	return 0;
}

int kap_net_detach(const char *store, const char *container, bool ns_gone,
		   struct kapsel_error **err)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/networks", kap_net_store(store));
	/* Never attached anywhere (no networks directory, or not root): nothing to undo. */
	if (geteuid() != 0 || access(path, F_OK) < 0)
		return 0;
	cleanup_netdir struct netdir d;
	int r = netdir_open(store, &d, err);
	if (r < 0)
		return r;
	return sweep(&d, container, ns_gone, err);
}

int kap_net_netns_create(const char *path, struct kapsel_error **err)
{
	int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kap_error(err, errno, "create %s", path);
	close(fd);
	cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return kap_error(err, errno, "open /proc/thread-self/ns/net");
	if (unshare(CLONE_NEWNET) < 0)
		return kap_error(err, errno, "create a network namespace");
	int r = 0;
	if (mount("/proc/thread-self/ns/net", path, NULL, MS_BIND, NULL) < 0)
		r = kap_error(err, errno, "bind the network namespace at %s", path);
	if (r == 0)
		r = kap_nl_loopback_up(err);
	/* podman's default_sysctls: ping (ICMP datagram sockets, icmp(7)) for the container's
	 * root without CAP_NET_RAW. The sysctl is per network namespace. */
	if (r == 0)
		r = kap_fs_write_at(AT_FDCWD, "/proc/sys/net/ipv4/ping_group_range", "0 0", 3, err);
	if (setns(self, CLONE_NEWNET) < 0)
		return kap_error(err, errno, "return to kapsel's network namespace");
	return r;
}

int kap_net_netns_create_apart(const char *path, struct kapsel_error **err)
{
	int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kap_error(err, errno, "create %s", path);
	close(fd);
	/* The child's namespace mounts are ours (fork shares the mount namespace). Its exit
	 * status carries the errno of the step that failed, and which step it was. */
	pid_t pid = fork();
	if (pid < 0)
		return kap_error(err, errno, "create a network namespace: fork");
	if (pid == 0) {
		int step = 1;
		if (unshare(CLONE_NEWNET) == 0 && (step = 2) &&
		    mount("/proc/thread-self/ns/net", path, NULL, MS_BIND, NULL) == 0 &&
		    (step = 3) && kap_nl_loopback_up(NULL) == 0)
			_exit(0);
		_exit(step * 40 + (errno > 0 && errno < 40 ? errno : 39));
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return kap_error(err, errno, "create a network namespace: wait");
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
	static const char *const what[] = {"create a network namespace",
					   "create a network namespace",
					   "bind the network namespace at", "set lo up in"};
	int step = code / 40 < 4 ? code / 40 : 0;
	return kap_error(err, code % 40 ? code % 40 : EIO, "%s%s%s", what[step],
			 step >= 2 ? " " : "", step >= 2 ? path : "");
}

void kap_net_netns_remove(const char *path)
{
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		kap_warn("unmount %s: %s", path, strerror(errno));
	if (unlink(path) < 0 && errno != ENOENT)
		kap_warn("remove %s: %s", path, strerror(errno));
}

/* ---- what inspect shows of a container ---- */

int kap_net_container_networks(const char *store, const char *container, struct kap_json **networks,
			       struct kap_json **ports, struct kapsel_error **err)
{
	*networks = *ports = NULL;
	cleanup_netdir struct netdir d;
	int r = netdir_open(store, &d, err);
	if (r < 0)
		return r;
	cleanup_strv char **names = NULL;
	size_t cnt;
	if ((r = network_names(&d, &names, &cnt, err)) < 0)
		return r;
	cleanup_json struct kap_json *nets = kap_json_new_object();
	cleanup_json struct kap_json *pmap = kap_json_new_object();
	if (!nets || !pmap)
		return kap_error(err, ENOMEM, "networks");
	for (size_t i = 0; i < cnt; i++) {
		struct network nw;
		cleanup_leases struct leases l = {0};
		/* A network being removed right now, or damaged: it holds nothing to show. */
		if (network_read(&d, names[i], &nw, NULL) < 0 ||
		    leases_read(&d, names[i], &l, NULL) < 0)
			continue;
		for (size_t k = 0; k < l.n; k++) {
			const struct lease *e = &l.v[k];
			if (!e->container || strcmp(e->container, container))
				continue;
			char ip[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN];
			ip_str(e->ip, ip);
			ip_str(nw.gateway, gw);
			struct kap_json *o = kap_json_new_object(), *al = kap_json_new_array();
			if (!o || !al) {
				kap_json_put(o);
				kap_json_put(al);
				return kap_error(err, ENOMEM, "networks");
			}
			kap_json_set(o, "NetworkID", kap_json_new_string(nw.name));
			kap_json_set(o, "IPAddress", kap_json_new_string(ip));
			kap_json_set(o, "IPPrefixLen", kap_json_new_int64(nw.prefix));
			if (nw.v6) {
				char a6[INET6_ADDRSTRLEN], g6[INET6_ADDRSTRLEN];
				struct in6_addr x = lease_ip6(&nw, e);
				ip6_str(&x, a6);
				ip6_str(&nw.gateway6, g6);
				kap_json_set(o, "GlobalIPv6Address", kap_json_new_string(a6));
				kap_json_set(o, "GlobalIPv6PrefixLen",
					     kap_json_new_int64(nw.prefix6));
				kap_json_set(o, "IPv6Gateway",
					     kap_json_new_string(nw.internal ? "" : g6));
			}
			kap_json_set(o, "Gateway", kap_json_new_string(nw.internal ? "" : gw));
			for (char **a = e->aliases; a && *a; a++)
				kap_json_append(al, kap_json_new_string(*a));
			kap_json_set(o, "Aliases", al);
			kap_json_set(nets, nw.name, o);
			/* "tcp:0.0.0.0:8080:80" -> podman's "80/tcp": [{HostIp, HostPort}]. */
			for (char **p = e->ports; p && *p; p++) {
				char proto[8], hip[INET_ADDRSTRLEN], hport[8], cport[8], key[16];
				if (sscanf(*p, "%7[a-z]:%15[0-9.]:%7[0-9]:%7[0-9]", proto, hip,
					   hport, cport) != 4)
					continue;
				snprintf(key, sizeof(key), "%s/%s", cport, proto);
				struct kap_json *list = kap_json_get(pmap, key);
				if (!list) {
					list = kap_json_new_array();
					if (!list)
						return kap_error(err, ENOMEM, "networks");
					kap_json_set(pmap, key, list);
				}
				struct kap_json *b = kap_json_new_object();
				if (!b)
					return kap_error(err, ENOMEM, "networks");
				kap_json_set(b, "HostIp", kap_json_new_string(hip));
				kap_json_set(b, "HostPort", kap_json_new_string(hport));
				kap_json_append(list, b);
			}
		}
	}
	*networks = steal_ptr(nets);
	*ports = steal_ptr(pmap);
	return 0;
}
