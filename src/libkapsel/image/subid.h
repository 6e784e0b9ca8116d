/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/*
 * Rootless with subordinate ids (subuid(5), subgid(5)): the user's /etc/subuid and /etc/subgid
 * ranges, mapped by the setuid helpers newuidmap(1) and newgidmap(1) as podman does.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/error.h"

/* uid_map holds at most 340 lines (user_namespaces(7)); a user has a handful of ranges. */
#define KAP_SUBID_MAX 32

struct kap_subid_range {
	uint32_t start, count;
};

struct kap_idmap {
	uid_t uid;
	gid_t gid;
	char user[64];
	struct kap_subid_range uids[KAP_SUBID_MAX], gids[KAP_SUBID_MAX];
	size_t n_uids, n_gids;
	/* Container ids 0..n-1 exist: 0 is the user, 1.. the ranges in file order. */
	uint32_t uid_count, gid_count;
	/* Names this mapping in the store (the shifted layers made for it). */
	char key[17];
};

/*
 * The calling user's ranges. 0 and m->n_uids == 0: none (or none usable), so the single-id
 * mapping applies; lines shadow's own parser would reject are skipped, as its tools do.
 * A user with ranges in one file but not the other is an error.
 */
int kap_subid_lookup(struct kap_idmap *m, struct kapsel_error **err);
/* The same, reading the given files (for tests and for clarity of what is read). */
int kap_subid_lookup_files(struct kap_idmap *m, const char *subuid, const char *subgid,
			   struct kapsel_error **err);
/*
 * Make this process root of a new user namespace (and, with mount_ns, a mount namespace slave
 * to ours) that maps 0 to the user and 1.. to its ranges, through newuidmap and newgidmap run
 * from a child that stays in our namespace. Single-threaded callers only (unshare(2)).
 */
int kap_subid_enter(const struct kap_idmap *m, bool mount_ns, struct kapsel_error **err);
/* "uids 0-65536 (1001, /etc/subuid 100000:65536)": the ranges, for error messages. */
void kap_subid_describe(const struct kap_idmap *m, bool gids, char *buf, size_t len);
