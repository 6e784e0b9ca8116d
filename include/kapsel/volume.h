/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named volumes (`kapsel volume ...`), as podman's local driver has them: a directory
 * <store>/volumes/NAME/_data that outlives containers, described by volume.json beside it.
 * `kapsel run -v NAME:/path` and `--mount type=volume,src=NAME,...` create one on first use
 * and copy the image's content at /path into it. Every call returns >= 0 on success and a
 * negative errno with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

/* name NULL: a generated one (64 hex digits, as podman's). *name_out (optional): caller frees. */
int kapsel_volume_create(const char *store, const char *name, char **name_out,
			 struct kapsel_error **err);

struct kapsel_volume_info {
	char *name;
	char *driver;	   /* "local" */
	char *mountpoint;  /* the host directory */
	int64_t created;   /* unix seconds */
	char **containers; /* NULL-terminated: the containers that use it */
};
/* Every volume, sorted by name. */
int kapsel_volume_list(const char *store, struct kapsel_volume_info **out, size_t *n,
		       struct kapsel_error **err);
void kapsel_volume_infos_free(struct kapsel_volume_info *v, size_t n);
/* One volume as a JSON object with podman's keys (Name, Driver, Mountpoint, CreatedAt, Labels,
 * Scope, Options, ...). Caller frees. */
int kapsel_volume_inspect(const char *store, const char *name, char **json,
			  struct kapsel_error **err);
/* Remove a volume and its data; refused (EBUSY, naming the container) while one uses it. */
int kapsel_volume_rm(const char *store, const char *name, struct kapsel_error **err);
