/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tap devices for virtio-net (tap.c): attach to an existing tap, or create one, enslave it to a
 * bridge and bring it up through rtnetlink, and delete it again. No helper programs run.
 */
#pragma once
#include <net/if.h>

#include <kapsel/error.h>

/*
 * Attaches to the existing tap NAME (IFF_TAP | IFF_NO_PI) and returns a non-blocking fd in *fd.
 * A missing interface is -ENODEV ("tap NAME: no such network interface"), one that is not a
 * tap -EINVAL; TUNSETIFF would otherwise create a tap that nobody asked for.
 */
int kap_tap_open(const char *name, int *fd, struct kapsel_error **err);

/*
 * Creates a tap ("kaptapN", name and index returned), attaches it to bridge BR and brings it
 * up. The tap is not persistent: the kernel removes it when the last fd closes, so even a
 * killed kapsel leaves nothing behind; kap_tap_delete removes it explicitly first.
 */
int kap_tap_create_on_bridge(const char *bridge, char name[IFNAMSIZ], int *ifindex, int *fd,
			     struct kapsel_error **err);

/* RTM_DELLINK for ifindex; an interface that is already gone is not an error. */
int kap_tap_delete(int ifindex, struct kapsel_error **err);
