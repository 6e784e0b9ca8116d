/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event thread: one epoll set over everything that is not a vCPU exit — host signals,
 * console input, and (virtio, issue 6) ioeventfds, irqfd resamplers, taps and disk completions.
 * Handlers run on this thread only, so a device's slow work never stalls a vCPU.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/error.h"
#include "vmm/vmm.h"

int kap_loop_init(struct kap_loop *l, struct kapsel_error **err)
{
	*l = (struct kap_loop){.epfd = -EBADF, .wake_fd = -EBADF};
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return kap_error(err, errno, "epoll_create1");
	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wake_fd < 0) {
		int r = kap_error(err, errno, "eventfd");
		kap_loop_destroy(l);
		return r;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0) {
		int r = kap_error(err, errno, "epoll_ctl");
		kap_loop_destroy(l);
		return r;
	}
	return 0;
}

void kap_loop_destroy(struct kap_loop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	l->epfd = l->wake_fd = -EBADF;
	l->n = 0;
}

int kap_loop_add(struct kap_loop *l, int fd, uint32_t events, kap_loop_fn fn, void *opaque,
		 struct kapsel_error **err)
{
	if (l->n == KAP_LOOP_MAX)
		return kap_error_plain(err, ENOSPC, "event loop: more than %d sources",
				       KAP_LOOP_MAX);
	struct kap_loop_handler *h = &l->handlers[l->n];
	*h = (struct kap_loop_handler){.fd = fd, .fn = fn, .opaque = opaque};
	struct epoll_event ev = {.events = events, .data.ptr = h};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return kap_error(err, errno, "epoll_ctl add fd %d", fd);
	l->n++;
	return 0;
}

void kap_loop_del(struct kap_loop *l, int fd)
{
	/* Handlers stay in place (epoll holds pointers to them); the fd just leaves the set. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	for (size_t i = 0; i < l->n; i++)
		if (l->handlers[i].fd == fd)
			l->handlers[i].fd = -1;
}

void kap_loop_wake(struct kap_loop *l)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the loop is awake anyway. */
	if (write(l->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;
}

void kap_loop_run(struct kap_loop *l, atomic_bool *stop)
{
	struct epoll_event evs[16];
	while (!atomic_load(stop)) {
		int n = epoll_wait(l->epfd, evs, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (int i = 0; i < n && !atomic_load(stop); i++) {
			struct kap_loop_handler *h = evs[i].data.ptr;
			if (!h) {
				uint64_t v;
				if (read(l->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					return;
				continue;
			}
			if (h->fd >= 0)
				h->fn(h->opaque, evs[i].events);
		}
	}
}
