/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's network, as the host's network leased it (run --vm --net NETWORK; docs/vm.md):
 * lo up always; with a MAC, the interface that has it (the VM's one virtio-net card) up with its
 * IPv4 address and, unless the network is internal, a default route through the gateway, and
 * the same for IPv6 on a dual-stack network. Plain rtnetlink (rtnetlink(7)), one acknowledged
 * request at a time, libc only: the agent is a static program without libkapsel.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

struct req {
	struct nlmsghdr h;
	union {
		struct ifinfomsg ifi;
		struct ifaddrmsg ifa;
		struct rtmsg rt;
	};
	char attrs[128];
};

static void put_attr(struct req *q, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends q and returns the kernel's answer: 0 or -errno. */
static int call(int s, struct req *q)
{
	static unsigned seq;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	q->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	q->h.nlmsg_seq = ++seq;
	if (sendto(s, q, q->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	union {
		struct nlmsghdr h;
		char buf[4096];
	} ans;
	for (;;) {
		ssize_t n = recv(s, &ans, sizeof(ans), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = &ans.h; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
				return -EPROTO;
			return ((const struct nlmsgerr *)NLMSG_DATA(h))->error;
		}
	}
}

static int link_up(int s, int index)
{
	struct req q = {
	    .h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)), .nlmsg_type = RTM_NEWLINK},
	    .ifi = {.ifi_family = AF_UNSPEC,
		    .ifi_index = index,
		    .ifi_flags = IFF_UP,
		    .ifi_change = IFF_UP}};
	return call(s, &q);
}

/* "ADDR/PREFIX" of family af into bin (4 or 16 bytes) and *prefix. */
static int parse_cidr(int af, const char *s, unsigned char *bin, int *prefix)
{
	char a[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof(a))
		return -EINVAL;
	memcpy(a, s, (size_t)(slash - s));
	a[slash - s] = '\0';
	char *end;
	long p = strtol(slash + 1, &end, 10);
	if (inet_pton(af, a, bin) != 1 || *end || end == slash + 1 || p < 0 ||
	    p > (af == AF_INET ? 32 : 128))
		return -EINVAL;
	*prefix = (int)p;
	return 0;
}

static int addr_add(int s, int index, int af, const char *cidr)
{
	unsigned char bin[16];
	int prefix;
	if (parse_cidr(af, cidr, bin, &prefix) < 0)
		return -EINVAL;
	size_t len = af == AF_INET ? 4 : 16;
	struct req q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)),
			      .nlmsg_type = RTM_NEWADDR,
			      .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL},
			/* IPv6: no duplicate address detection, the network's IPAM gave it; it
			 * would hold the address "tentative" (unusable) for a second or more. */
			.ifa = {.ifa_family = (unsigned char)af,
				.ifa_prefixlen = (unsigned char)prefix,
				.ifa_flags = af == AF_INET6 ? IFA_F_NODAD : 0,
				.ifa_scope = RT_SCOPE_UNIVERSE,
				.ifa_index = (unsigned)index}};
	put_attr(&q, IFA_LOCAL, bin, len);
	put_attr(&q, IFA_ADDRESS, bin, len);
	int r = call(s, &q);
	return r == -EEXIST ? 0 : r;
}

static int route_default(int s, int index, int af, const char *gw)
{
	unsigned char bin[16];
	if (inet_pton(af, gw, bin) != 1)
		return -EINVAL;
	struct req q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)),
			      .nlmsg_type = RTM_NEWROUTE,
			      .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL},
			.rt = {.rtm_family = (unsigned char)af,
			       .rtm_table = RT_TABLE_MAIN,
			       .rtm_protocol = RTPROT_BOOT,
			       .rtm_scope = RT_SCOPE_UNIVERSE,
			       .rtm_type = RTN_UNICAST}};
	uint32_t oif = (uint32_t)index;
	put_attr(&q, RTA_GATEWAY, bin, af == AF_INET ? 4 : 16);
	put_attr(&q, RTA_OIF, &oif, sizeof(oif));
	int r = call(s, &q);
	return r == -EEXIST ? 0 : r;
}

/* The interface whose address (sysfs) is mac, name into name; its index, or -errno. */
static int find_by_mac(const char *mac, char name[IF_NAMESIZE])
{
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return -errno;
	int index = -ENODEV;
	struct dirent *e;
	while (index < 0 && (e = readdir(d))) {
		char path[300], addr[32] = "";
		if (e->d_name[0] == '.' || strlen(e->d_name) >= IF_NAMESIZE)
			continue;
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, addr, sizeof(addr) - 1);
		close(fd);
		if (n < 17 || strncasecmp(addr, mac, 17))
			continue;
		unsigned i = if_nametoindex(e->d_name);
		if (i) {
			snprintf(name, IF_NAMESIZE, "%s", e->d_name);
			index = (int)i;
		}
	}
	closedir(d);
	return index;
}

int agent_net_setup(const struct agent_net *n, char *why, size_t whylen)
{
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		snprintf(why, whylen, "netlink: %s", strerror(errno));
		return -1;
	}
	int r = link_up(s, (int)if_nametoindex("lo"));
	if (r < 0) {
		snprintf(why, whylen, "bring lo up: %s", strerror(-r));
		close(s);
		return -1;
	}
	if (!n->mac) {
		close(s);
		return 0;
	}
	/* The card's driver probed it while its module loaded; give a slow probe 5 s. */
	char name[IF_NAMESIZE] = "";
	int index = -ENODEV;
	for (int i = 0; i < 100 && (index = find_by_mac(n->mac, name)) == -ENODEV; i++) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	const char *step = "find it";
	r = index;
	if (r >= 0) {
		step = "bring it up";
		r = link_up(s, index);
	}
	if (r >= 0) {
		step = "address";
		r = addr_add(s, index, AF_INET, n->ip);
	}
	if (r >= 0 && n->gateway) {
		step = "default route";
		r = route_default(s, index, AF_INET, n->gateway);
	}
	if (r >= 0 && n->ip6) {
		step = "IPv6 address";
		r = addr_add(s, index, AF_INET6, n->ip6);
	}
	if (r >= 0 && n->gateway6) {
		step = "IPv6 default route";
		r = route_default(s, index, AF_INET6, n->gateway6);
	}
	close(s);
	if (r < 0) {
		snprintf(why, whylen, "network interface %s (%s): %s: %s", name[0] ? name : "?",
			 n->mac, step, strerror(-r));
		return -1;
	}
	return 0;
}
