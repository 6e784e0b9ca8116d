/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tap devices through /dev/net/tun (Documentation/networking/tuntap.rst) and links through
 * rtnetlink (rtnetlink(7)): one request per call, acknowledged (NLM_F_ACK), so an error comes
 * back as the kernel's errno for that request.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "net/tap.h"

static int tun_attach(const char *name, char out[IFNAMSIZ], int *fd, struct kapsel_error **err)
{
	cleanup_close int t = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (t < 0)
		return kap_error(err, errno, "open /dev/net/tun");
	struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(t, TUNSETIFF, &ifr) < 0)
		return -errno;
	if (out)
		memcpy(out, ifr.ifr_name, IFNAMSIZ);
	*fd = steal_fd(t);
	return 0;
}

int kap_tap_open(const char *name, int *fd, struct kapsel_error **err)
{
	if (if_nametoindex(name) == 0)
		return kap_error_plain(err, ENODEV, "tap %s: no such network interface", name);
	int r = tun_attach(name, NULL, fd, err);
	if (r == -EINVAL)
		return kap_error_plain(err, EINVAL, "tap %s: not a tap device", name);
	if (r < 0)
		return kap_error(err, -r, "tap %s", name);
	return 0;
}

struct nl_req {
	struct nlmsghdr h;
	struct ifinfomsg ifi;
	char attrs[64];
};

static void nl_put_u32(struct nl_req *q, unsigned short type, uint32_t v)
{
	struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));
	a->rta_type = type;
	a->rta_len = RTA_LENGTH(sizeof(v));
	memcpy(RTA_DATA(a), &v, sizeof(v));
	q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends one request and returns the kernel's answer: 0 or -errno. */
static int nl_call(struct nl_req *q)
{
	cleanup_close int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0)
		return -errno;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	q->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	q->h.nlmsg_seq = 1;
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
			if (h->nlmsg_seq != 1 || h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
				return -EPROTO;
			const struct nlmsgerr *e = NLMSG_DATA(h);
			return e->error;
		}
	}
}

static void nl_link(struct nl_req *q, unsigned short type, int ifindex)
{
	memset(q, 0, sizeof(*q));
	q->h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	q->h.nlmsg_type = type;
	q->ifi.ifi_family = AF_UNSPEC;
	q->ifi.ifi_index = ifindex;
}

int kap_tap_create_on_bridge(const char *bridge, char name[IFNAMSIZ], int *ifindex, int *fd,
			     struct kapsel_error **err)
{
	unsigned int br = if_nametoindex(bridge);
	if (br == 0)
		return kap_error_plain(err, ENODEV, "bridge %s: no such network interface", bridge);
	cleanup_close int t = -EBADF;
	int r = tun_attach("kaptap%d", name, &t, err);
	if (r < 0)
		return kap_error(err, -r, "bridge %s: create a tap", bridge);
	unsigned int idx = if_nametoindex(name);
	if (idx == 0)
		return kap_error(err, errno, "bridge %s: tap %s", bridge, name);
	struct nl_req q;
	/* The master first: a port that comes up outside the bridge could leak frames. */
	nl_link(&q, RTM_NEWLINK, (int)idx);
	nl_put_u32(&q, IFLA_MASTER, br);
	r = nl_call(&q);
	if (r == -EOPNOTSUPP || r == -EINVAL)
		return kap_error_plain(err, -r, "bridge %s: not a bridge", bridge);
	if (r < 0)
		return kap_error(err, -r, "bridge %s: attach tap %s", bridge, name);
	nl_link(&q, RTM_NEWLINK, (int)idx);
	q.ifi.ifi_flags = IFF_UP;
	q.ifi.ifi_change = IFF_UP;
	r = nl_call(&q);
	if (r < 0)
		return kap_error(err, -r, "bridge %s: bring tap %s up", bridge, name);
	*ifindex = (int)idx;
	*fd = steal_fd(t);
	return 0;
}

int kap_tap_delete(int ifindex, struct kapsel_error **err)
{
	struct nl_req q;
	nl_link(&q, RTM_DELLINK, ifindex);
	int r = nl_call(&q);
	if (r < 0 && r != -ENODEV)
		return kap_error(err, -r, "delete tap (index %d)", ifindex);
	return 0;
}
