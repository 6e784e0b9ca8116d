/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Looking into and tidying up image containers (those `kapsel run` makes), as podman's cp, top,
 * stats and system df do. `store` is the image store (NULL: the default). Every call returns
 * >= 0 on success and a negative errno with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

/*
 * cp: copy src to dst, exactly one of them "CONTAINER:PATH" (podman-cp(1)'s rules: a directory
 * is copied whole, its contents with "DIR/."; an existing directory destination receives the
 * source by its name). Paths in the container resolve inside its root, whatever symlinks it
 * holds; a stopped container's rootfs is mounted privately for the copy. archive keeps owners;
 * otherwise what is copied in belongs to the container's root and what is copied out to the
 * caller.
 */
int kapsel_image_cp(const char *store, const char *src, const char *dst, bool archive,
		    struct kapsel_error **err);
/* Whether arg names a container path ("NAME:PATH", NAME without '/'). */
bool kapsel_cp_is_container_path(const char *arg);

/* top: one row per process of a running container, one column per descriptor. */
struct kapsel_top {
	size_t n_cols, n_rows;
	char **header; /* n_cols */
	char **cells;  /* n_rows * n_cols, row-major */
};
/*
 * descriptors: podman-top(1)'s format descriptors (user, pid, ppid, pcpu, etime, tty, time,
 * args, comm, group, nice, pgid, rgroup, ruser, vsz, rss, state, stime, hpid, huser, hgroup,
 * capamb, capbnd, capeff, capinh, capprm, seccomp, label) or AIX ones (%C %G %P %U %a %c %g %n
 * %p %r %t %u %x %y %z); NULL or empty: podman's default columns. An unknown one is an error.
 */
int kapsel_image_top(const char *store, const char *name, char *const *descriptors,
		     struct kapsel_top *out, struct kapsel_error **err);
void kapsel_top_clear(struct kapsel_top *t);

/* stats: one sample of a running container's cgroup and network namespace. */
struct kapsel_stats {
	char *name;
	uint64_t cpu_ns;	 /* CPU time used so far */
	uint64_t system_ns;	 /* CLOCK_MONOTONIC when sampled */
	uint64_t up_ns;		 /* time since the container's init started */
	uint64_t mem_usage;	 /* bytes, without inactive page cache (as docker and podman) */
	uint64_t mem_limit;	 /* bytes: the cgroup's limit, at most the host's memory */
	uint64_t net_rx, net_tx; /* bytes on the container's interfaces other than lo */
	uint64_t blk_read, blk_write; /* bytes */
	uint64_t pids;
};
/* names NULL or empty: every running image container. A stopped one given by name is an error. */
int kapsel_image_stats(const char *store, char *const *names, struct kapsel_stats **out, size_t *n,
		       struct kapsel_error **err);
void kapsel_stats_free(struct kapsel_stats *s, size_t n);

/* system df: what the store holds, as podman system df counts it. */
struct kapsel_df_row {
	uint64_t total, active;
	int64_t size, reclaimable; /* bytes */
};
struct kapsel_df {
	struct kapsel_df_row images, containers, volumes;
};
int kapsel_system_df(const char *store, struct kapsel_df *out, struct kapsel_error **err);
