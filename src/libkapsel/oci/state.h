/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container's persistent record, <root>/<id>/state.json, written atomically. It is input
 * too (a later kapsel process reads it), so reading validates every field.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

struct kap_json;

struct kap_state {
	char *id;
	pid_t pid;
	uint64_t start_time; /* /proc/PID/stat starttime: guards against pid reuse */
	char *bundle;
	char *rootfs;
	char *created; /* RFC 3339 */
	char *owner;
	bool creating;			      /* written before setup finished (crash recovery) */
	bool own_pid_ns;		      /* init is pid 1 of its own pid namespace */
	bool hooks_poststart, hooks_poststop; /* the config copy has them: parse it then */
	struct kap_json *annotations;	      /* object */
	struct kap_json *cgroup;	      /* kap_cgroup_to_json() */
};

int kap_state_write(int state_dirfd, const struct kap_state *st, struct kapsel_error **err);
int kap_state_read(int state_dirfd, const char *id, struct kap_state **out,
		   struct kapsel_error **err);
void kap_state_free(struct kap_state *st);
static inline void kap_state_freep(struct kap_state **s)
{
	kap_state_free(*s);
}
#define cleanup_state __attribute__((cleanup(kap_state_freep)))

/* The OCI state document ("ociVersion","id","status","pid","bundle","annotations"). */
struct kap_json *kap_state_oci_json(const struct kap_state *st, const char *status);
/* Container ids: non-empty, <= 1024 bytes, [A-Za-z0-9_+.-], not "." or "..". */
int kap_state_validate_id(const char *id, struct kapsel_error **err);
