/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rtnetlink requests (rtnetlink(7)) built and parsed with libmnl. One request at a time, each
 * acked: the kernel's NLMSG_ERROR carries the errno, which is reported with the link it
 * concerns ("create bridge kapsel0: Operation not permitted").
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "net/netlink.h"

struct kap_nl {
	struct mnl_socket *sock;
	unsigned int portid;
	unsigned int seq;
	/* MNL_SOCKET_BUFFER_SIZE is a sysconf() call; the kernel sends at most 32 KiB per read. */
	char buf[32768];
};

/* The socket is created inside the target namespace and stays bound to it (netlink(7)). */
int kap_nl_open(int netns_fd, struct kap_nl **out, struct kapsel_error **err)
{
	cleanup_free struct kap_nl *nl = calloc(1, sizeof(*nl));
	if (!nl)
		return kap_error(err, ENOMEM, "netlink");
	cleanup_close int self = -EBADF;
	if (netns_fd >= 0) {
		self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (self < 0)
			return kap_error(err, errno, "open /proc/thread-self/ns/net");
		if (setns(netns_fd, CLONE_NEWNET) < 0)
			return kap_error(err, errno, "enter the container's network namespace");
	}
	nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	int e = errno;
	if (self >= 0 && setns(self, CLONE_NEWNET) < 0) {
		/* Staying in the container's namespace would configure the wrong one later. */
		if (nl->sock)
			mnl_socket_close(nl->sock);
		return kap_error(err, errno, "return to kapsel's network namespace");
	}
	if (!nl->sock)
		return kap_error(err, e, "open a netlink socket");
	if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		e = errno;
		mnl_socket_close(nl->sock);
		return kap_error(err, e, "bind a netlink socket");
	}
	nl->portid = mnl_socket_get_portid(nl->sock);
	nl->seq = (unsigned int)time(NULL);
	*out = steal_ptr(nl);
	return 0;
}

void kap_nl_close(struct kap_nl *nl)
{
	mnl_socket_close(nl->sock);
	free(nl);
}

static struct nlmsghdr *msg_new(struct kap_nl *nl, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = ++nl->seq;
	return nlh;
}

/* Send and run the replies through cb until the ack (or the dump's end); -errno on failure. */
static int transact(struct kap_nl *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	unsigned int seq = nlh->nlmsg_seq;
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl->sock, nl->buf, sizeof(nl->buf));
		if (n < 0)
			return errno == EINTR ? -EINTR : -errno;
		int r = mnl_cb_run(nl->buf, (size_t)n, seq, nl->portid, cb, data);
		if (r < 0)
			return -errno;
		if (r == MNL_CB_STOP)
			return 0;
	}
}

static int request(struct kap_nl *nl, struct nlmsghdr *nlh)
{
	nlh->nlmsg_flags |= NLM_F_ACK;
	return transact(nl, nlh, NULL, NULL);
}

struct link_info {
	int index;
	unsigned int flags;
};

static int link_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
	struct link_info *li = data;
	li->index = ifi->ifi_index;
	li->flags = ifi->ifi_flags;
	return MNL_CB_STOP; /* a GETLINK by name answers with this one message, no ack */
}

static int link_get(struct kap_nl *nl, const char *ifname, struct link_info *li)
{
	struct nlmsghdr *nlh = msg_new(nl, RTM_GETLINK, 0);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	*li = (struct link_info){0};
	int r = transact(nl, nlh, link_cb, li);
	if (r < 0)
		return r;
	return li->index > 0 ? 0 : -ENODEV;
}

int kap_nl_ifindex(struct kap_nl *nl, const char *ifname)
{
	struct link_info li;
	int r = link_get(nl, ifname, &li);
	return r < 0 ? r : li.index;
}

bool kap_nl_link_is_up(struct kap_nl *nl, const char *ifname)
{
	struct link_info li;
	return link_get(nl, ifname, &li) == 0 && (li.flags & IFF_UP);
}

/* A RTM_NEWLINK (or DELLINK) naming the link: the kernel looks IFLA_IFNAME up (rtnetlink.c). */
static struct nlmsghdr *link_msg(struct kap_nl *nl, uint16_t type, uint16_t flags,
				 const char *ifname, struct ifinfomsg **ifi_out)
{
	struct nlmsghdr *nlh = msg_new(nl, type, flags);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	if (ifi_out)
		*ifi_out = ifi;
	return nlh;
}

int kap_nl_link_set_up(struct kap_nl *nl, const char *ifname, struct kapsel_error **err)
{
	struct ifinfomsg *ifi;
	struct nlmsghdr *nlh = link_msg(nl, RTM_NEWLINK, 0, ifname, &ifi);
	ifi->ifi_change = IFF_UP;
	ifi->ifi_flags = IFF_UP;
	int r = request(nl, nlh);
	return r < 0 ? kap_error(err, -r, "set link %s up", ifname) : 0;
}

int kap_nl_bridge_create(struct kap_nl *nl, const char *name, struct kapsel_error **err)
{
	struct nlmsghdr *nlh = link_msg(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, name, NULL);
	struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
	mnl_attr_nest_end(nlh, info);
	int r = request(nl, nlh);
	if (r == -EEXIST)
		return 0;
	return r < 0 ? kap_error(err, -r, "create bridge %s", name) : 0;
}

int kap_nl_veth_create(struct kap_nl *nl, const char *host, const char *peer, int peer_netns_fd,
		       const uint8_t *mac, struct kapsel_error **err)
{
	struct nlmsghdr *nlh = link_msg(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, host, NULL);
	struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	/* VETH_INFO_PEER holds a whole ifinfomsg and its attributes (drivers/net/veth.c). */
	struct nlattr *p = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi));
	pifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	if (peer_netns_fd >= 0)
		mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)peer_netns_fd);
	if (mac)
		mnl_attr_put(nlh, IFLA_ADDRESS, 6, mac);
	mnl_attr_nest_end(nlh, p);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);
	int r = request(nl, nlh);
	return r < 0 ? kap_error(err, -r, "create veth pair %s/%s", host, peer) : 0;
}

int kap_nl_link_set_netns(struct kap_nl *nl, const char *ifname, int netns_fd, const char *new_name,
			  struct kapsel_error **err)
{
	int index = kap_nl_ifindex(nl, ifname);
	if (index < 0)
		return kap_error(err, -index, "link %s", ifname);
	struct nlmsghdr *nlh = msg_new(nl, RTM_NEWLINK, 0);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = index;
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)netns_fd);
	if (new_name)
		mnl_attr_put_strz(nlh, IFLA_IFNAME, new_name);
	int r = request(nl, nlh);
	return r < 0 ? kap_error(err, -r, "move link %s to a network namespace", ifname) : 0;
}

int kap_nl_link_set_master(struct kap_nl *nl, const char *ifname, const char *master,
			   struct kapsel_error **err)
{
	int m = kap_nl_ifindex(nl, master);
	if (m < 0)
		return kap_error(err, -m, "bridge %s", master);
	struct nlmsghdr *nlh = link_msg(nl, RTM_NEWLINK, 0, ifname, NULL);
	mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)m);
	int r = request(nl, nlh);
	return r < 0 ? kap_error(err, -r, "attach %s to bridge %s", ifname, master) : 0;
}

int kap_nl_link_del(struct kap_nl *nl, const char *ifname, struct kapsel_error **err)
{
	struct nlmsghdr *nlh = link_msg(nl, RTM_DELLINK, 0, ifname, NULL);
	int r = request(nl, nlh);
	if (r == -ENODEV)
		return 0;
	return r < 0 ? kap_error(err, -r, "delete link %s", ifname) : 0;
}

int kap_nl_addr_add(struct kap_nl *nl, const char *ifname, struct in_addr addr, int prefix,
		    struct kapsel_error **err)
{
	int index = kap_nl_ifindex(nl, ifname);
	if (index < 0)
		return kap_error(err, -index, "link %s", ifname);
	struct nlmsghdr *nlh = msg_new(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = (unsigned char)prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned int)index;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(addr), &addr);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(addr), &addr);
	int r = request(nl, nlh);
	if (r == -EEXIST)
		return 0;
	return r < 0 ? kap_error(err, -r, "add address to %s", ifname) : 0;
}

int kap_nl_route_add_default(struct kap_nl *nl, struct in_addr gateway, struct kapsel_error **err)
{
	struct nlmsghdr *nlh = msg_new(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	rtm->rtm_dst_len = 0;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put(nlh, RTA_GATEWAY, sizeof(gateway), &gateway);
	int r = request(nl, nlh);
	if (r == -EEXIST)
		return 0; /* one from another network stays */
	return r < 0 ? kap_error(err, -r, "add default route") : 0;
}

/*
 * IPv6 addresses go on without duplicate address detection (IFA_F_NODAD): the bridge and the
 * container's end are ours alone, and a tentative address would refuse connections for the
 * ~1 s DAD takes (RFC 4862 §5.4; netavark does the same).
 */
int kap_nl_addr6_add(struct kap_nl *nl, const char *ifname, const struct in6_addr *addr, int prefix,
		     struct kapsel_error **err)
{
	int index = kap_nl_ifindex(nl, ifname);
	if (index < 0)
		return kap_error(err, -index, "link %s", ifname);
	struct nlmsghdr *nlh = msg_new(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET6;
	ifa->ifa_prefixlen = (unsigned char)prefix;
	ifa->ifa_flags = IFA_F_NODAD;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned int)index;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(*addr), addr);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(*addr), addr);
	mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
	int r = request(nl, nlh);
	if (r == -EEXIST)
		return 0;
	return r < 0 ? kap_error(err, -r, "add IPv6 address to %s", ifname) : 0;
}

int kap_nl_route6_add_default(struct kap_nl *nl, const struct in6_addr *gateway,
			      struct kapsel_error **err)
{
	struct nlmsghdr *nlh = msg_new(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET6;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put(nlh, RTA_GATEWAY, sizeof(*gateway), gateway);
	int r = request(nl, nlh);
	if (r == -EEXIST)
		return 0; /* one from another network stays */
	return r < 0 ? kap_error(err, -r, "add IPv6 default route") : 0;
}

static bool prefixes6_overlap(const uint8_t *a, int pa, const uint8_t *b, int pb)
{
	int p = pa < pb ? pa : pb;
	if (memcmp(a, b, (size_t)(p / 8)))
		return false;
	if (p % 8 == 0)
		return true;
	uint8_t m = (uint8_t)(0xff << (8 - p % 8));
	return (a[p / 8] & m) == (b[p / 8] & m);
}

struct overlap6 {
	struct in6_addr net;
	int prefix;
	bool found;
};

static int route6_cb(const struct nlmsghdr *nlh, void *data)
{
	struct overlap6 *o = data;
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	if (rtm->rtm_family != AF_INET6 || rtm->rtm_table != RT_TABLE_MAIN ||
	    rtm->rtm_type != RTN_UNICAST || rtm->rtm_dst_len == 0)
		return MNL_CB_OK;
	const struct nlattr *a;
	mnl_attr_for_each(a, nlh, sizeof(*rtm))
	{
		if (mnl_attr_get_type(a) == RTA_DST && mnl_attr_get_payload_len(a) == 16 &&
		    prefixes6_overlap(mnl_attr_get_payload(a), rtm->rtm_dst_len, o->net.s6_addr,
				      o->prefix))
			o->found = true;
	}
	return MNL_CB_OK;
}

int kap_nl_route6_overlaps(struct kap_nl *nl, const struct in6_addr *net, int prefix,
			   bool *overlaps, struct kapsel_error **err)
{
	struct nlmsghdr *nlh = msg_new(nl, RTM_GETROUTE, NLM_F_DUMP);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET6;
	struct overlap6 o = {.net = *net, .prefix = prefix};
	int r = transact(nl, nlh, route6_cb, &o);
	if (r < 0)
		return kap_error(err, -r, "list IPv6 routes");
	*overlaps = o.found;
	return 0;
}

static bool prefixes_overlap(uint32_t a, int pa, uint32_t b, int pb)
{
	int p = pa < pb ? pa : pb;
	uint32_t mask = p ? ~UINT32_C(0) << (32 - p) : 0;
	return (a & mask) == (b & mask);
}

struct overlap {
	uint32_t net;
	int prefix;
	bool found;
};

static int route_cb(const struct nlmsghdr *nlh, void *data)
{
	struct overlap *o = data;
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	/* The default route (dst_len 0) overlaps everything and decides nothing; local and
	 * broadcast routes live in the local table. */
	if (rtm->rtm_family != AF_INET || rtm->rtm_table != RT_TABLE_MAIN ||
	    rtm->rtm_type != RTN_UNICAST || rtm->rtm_dst_len == 0)
		return MNL_CB_OK;
	const struct nlattr *a;
	mnl_attr_for_each(a, nlh, sizeof(*rtm))
	{
		if (mnl_attr_get_type(a) == RTA_DST && mnl_attr_get_payload_len(a) == 4) {
			uint32_t dst;
			memcpy(&dst, mnl_attr_get_payload(a), 4);
			if (prefixes_overlap(ntohl(dst), rtm->rtm_dst_len, o->net, o->prefix))
				o->found = true;
		}
	}
	return MNL_CB_OK;
}

int kap_nl_route_overlaps(struct kap_nl *nl, struct in_addr net, int prefix, bool *overlaps,
			  struct kapsel_error **err)
{
	struct nlmsghdr *nlh = msg_new(nl, RTM_GETROUTE, NLM_F_DUMP);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	struct overlap o = {.net = ntohl(net.s_addr), .prefix = prefix};
	int r = transact(nl, nlh, route_cb, &o);
	if (r < 0)
		return kap_error(err, -r, "list routes");
	*overlaps = o.found;
	return 0;
}

int kap_nl_loopback_up(struct kapsel_error **err)
{
	cleanup_nl struct kap_nl *nl = NULL;
	int r = kap_nl_open(-1, &nl, err);
	if (r < 0)
		return r;
	return kap_nl_link_set_up(nl, "lo", err);
}
