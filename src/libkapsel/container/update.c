/* SPDX-License-Identifier: Apache-2.0 */
/* `update` (new resource limits for a live container) and `events` (stats and OOM as JSON). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "container/cgroup/cgroup.h"
#include "container/container.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"

#define API __attribute__((visibility("default")))

static int load_cgroup(const char *root, const char *id, int lock, struct kap_cgroup **cg,
		       enum kap_status *status, struct kapsel_error **err)
{
	cleanup_close int dirfd = -EBADF;
	cleanup_state struct kap_state *st = NULL;
	int r = kap_container_load(root && *root ? root : kapsel_default_root(), id, lock, &dirfd,
				   &st, err);
	if (r < 0)
		return r;
	if (status)
		*status = kap_container_status(dirfd, st);
	if (!st->cgroup)
		return kap_error_plain(err, ENOENT, "container %s has no cgroup", id);
	return kap_cgroup_from_json(st->cgroup, cg, err);
}

API int kapsel_container_update(const char *root, const char *id,
				const struct kapsel_update_options *o, struct kapsel_error **err)
{
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	enum kap_status s;
	int r = load_cgroup(root, id, LOCK_EX, &cg, &s, err);
	if (r < 0)
		return r;
	if (s == KAP_STATUS_STOPPED)
		return kap_error_plain(err, EINVAL, "cannot update container %s: it is stopped",
				       id);
	struct kap_resources res = {0};
	if (o->resources_json) {
		cleanup_json struct kap_json *j = NULL;
		r = kap_json_parse(o->resources_json, strlen(o->resources_json), "--resources", &j,
				   err);
		if (r < 0)
			return r;
		if (kap_json_type(j) != KAP_JSON_OBJECT)
			return kap_error_plain(err, EINVAL, "--resources: expected a JSON object");
		if ((r = kap_spec_parse_resources(j, "resources", &res, err)) < 0)
			return r;
	}
	/* Flags override the file, as in runc. */
	if (o->has_memory)
		res.has_mem_limit = true, res.mem_limit = o->memory;
	if (o->has_memory_reservation)
		res.has_mem_reservation = true, res.mem_reservation = o->memory_reservation;
	if (o->has_memory_swap)
		res.has_mem_swap = true, res.mem_swap = o->memory_swap;
	if (o->has_cpu_quota)
		res.has_cpu_quota = true, res.cpu_quota = o->cpu_quota;
	if (o->has_cpu_period)
		res.has_cpu_period = true, res.cpu_period = o->cpu_period;
	if (o->has_cpu_shares)
		res.has_cpu_shares = true, res.cpu_shares = o->cpu_shares;
	if (o->has_pids_limit)
		res.has_pids_limit = true, res.pids_limit = o->pids_limit;
	if (o->has_blkio_weight)
		res.has_blkio_weight = true, res.blkio_weight = o->blkio_weight;
	if (o->cpuset_cpus) {
		free(res.cpu_cpus);
		res.cpu_cpus = strdup(o->cpuset_cpus);
	}
	if (o->cpuset_mems) {
		free(res.cpu_mems);
		res.cpu_mems = strdup(o->cpuset_mems);
	}
	r = kap_cgroup_update(cg, &res, err);
	kap_resources_clear(&res);
	return r;
}

static void emit(FILE *out, const char *type, const char *id, struct kap_json *data)
{
	cleanup_json struct kap_json *ev = kap_json_new_object();
	kap_json_set(ev, "type", kap_json_new_string(type));
	kap_json_set(ev, "id", kap_json_new_string(id));
	if (data)
		kap_json_set(ev, "data", data);
	cleanup_free char *text = kap_json_dump(ev, false);
	if (text) {
		fprintf(out, "%s\n", text);
		fflush(out);
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

API int kapsel_container_events(const char *root, const char *id, bool stats_once,
				unsigned interval_ms, FILE *out, struct kapsel_error **err)
{
	cleanup_cgroup struct kap_cgroup *cg = NULL;
	enum kap_status s;
	int r = load_cgroup(root, id, 0, &cg, &s, err);
	if (r < 0)
		return r;
	if (s == KAP_STATUS_STOPPED)
		return kap_error_plain(err, EINVAL, "container %s is not running", id);
	if (stats_once) {
		struct kap_json *data = NULL;
		if ((r = kap_cgroup_stats(cg, &data, err)) < 0)
			return r;
		emit(out, "stats", id, data);
		return 0;
	}
	if (interval_ms == 0)
		interval_ms = 5000;
	uint64_t ooms = 0;
	kap_cgroup_oom_count(cg, &ooms, NULL);
	uint64_t next = now_ms();
	for (;;) {
		/* OOM kills are polled every 100 ms: cheap, and no eventfd plumbing per layout. */
		uint64_t now_count = 0;
		if (kap_cgroup_oom_count(cg, &now_count, NULL) == 0 && now_count > ooms) {
			ooms = now_count;
			emit(out, "oom", id, NULL);
		}
		if (now_ms() >= next) {
			struct kap_json *data = NULL;
			if (kap_cgroup_stats(cg, &data, NULL) == 0)
				emit(out, "stats", id, data);
			next = now_ms() + interval_ms;
		}
		cleanup_cgroup struct kap_cgroup *tmp = NULL;
		r = load_cgroup(root, id, 0, &tmp, &s, NULL);
		if (r < 0 || s == KAP_STATUS_STOPPED)
			return 0;
		usleep(100 * 1000);
	}
}
