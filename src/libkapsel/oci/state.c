/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <kapsel/oci.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "oci/state.h"

int kap_state_validate_id(const char *id, struct kapsel_error **err)
{
	if (!id || !*id)
		return kap_error_plain(err, EINVAL, "container id: must not be empty");
	size_t n = strlen(id);
	if (n > 1024)
		return kap_error_plain(err, EINVAL, "container id: longer than 1024 bytes");
	if (!strcmp(id, ".") || !strcmp(id, ".."))
		return kap_error_plain(err, EINVAL, "container id \"%s\": not allowed", id);
	/* Same alphabet as runc: the id names a directory and a cgroup. */
	for (const char *p = id; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.' || c == '+'))
			return kap_error_plain(err, EINVAL,
					       "container id: invalid character 0x%02x at offset "
					       "%zu (allowed: A-Z a-z 0-9 _ + - .)",
					       c, (size_t)(p - id));
	}
	return 0;
}

int kap_state_write(int state_dirfd, const struct kap_state *st, struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = kap_json_new_object();
	if (!j)
		return kap_error(err, ENOMEM, "state");
	kap_json_set(j, "id", kap_json_new_string(st->id));
	kap_json_set(j, "pid", kap_json_new_int64(st->pid));
	kap_json_set(j, "startTime", kap_json_new_int64((int64_t)st->start_time));
	kap_json_set(j, "bundle", kap_json_new_string(st->bundle));
	kap_json_set(j, "rootfs", kap_json_new_string(st->rootfs));
	kap_json_set(j, "created", kap_json_new_string(st->created));
	kap_json_set(j, "owner", kap_json_new_string(st->owner ? st->owner : ""));
	kap_json_set(j, "creating", kap_json_new_bool(st->creating));
	kap_json_set(j, "ownPidNs", kap_json_new_bool(st->own_pid_ns));
	if (st->hooks_poststart)
		kap_json_set(j, "poststart", kap_json_new_bool(true));
	if (st->hooks_poststop)
		kap_json_set(j, "poststop", kap_json_new_bool(true));
	if (st->annotations)
		kap_json_set(j, "annotations", kap_json_get_ref(st->annotations));
	if (st->cgroup)
		kap_json_set(j, "cgroup", kap_json_get_ref(st->cgroup));
	cleanup_free char *text = kap_json_dump(j, false);
	if (!text)
		return kap_error(err, ENOMEM, "state");
	/* /run is tmpfs: rename is what makes it crash-safe; fsync would only cost time. */
	return kap_fs_write_atomic(state_dirfd, "state.json", text, strlen(text), 0600, false, err);
}

int kap_state_read(int state_dirfd, const char *id, struct kap_state **out,
		   struct kapsel_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(state_dirfd, "state.json", 1 << 20, &buf, &len, &e);
	if (r == -ENOENT)
		return kap_error_plain(err, ENOENT,
				       "container %s: state.json missing (creation "
				       "interrupted?)",
				       id);
	if (r < 0) {
		*err = steal_ptr(e);
		return r;
	}
	cleanup_json struct kap_json *j = NULL;
	r = kap_json_parse(buf, len, "state.json", &j, err);
	if (r < 0)
		return r;
	struct kap_state *st = calloc(1, sizeof(*st));
	if (!st)
		return kap_error(err, ENOMEM, "state");
	int64_t pid = 0, start = 0;
	if ((r = kap_json_read_string(j, "state", "id", &st->id, err)) < 0 ||
	    (r = kap_json_read_int64(j, "state", "pid", &pid, err)) < 0 ||
	    (r = kap_json_read_int64(j, "state", "startTime", &start, err)) < 0 ||
	    (r = kap_json_read_string(j, "state", "bundle", &st->bundle, err)) < 0 ||
	    (r = kap_json_read_string(j, "state", "rootfs", &st->rootfs, err)) < 0 ||
	    (r = kap_json_read_string(j, "state", "created", &st->created, err)) < 0 ||
	    (r = kap_json_read_string(j, "state", "owner", &st->owner, err)) < 0 ||
	    (r = kap_json_read_bool(j, "state", "creating", &st->creating, err)) < 0 ||
	    (r = kap_json_read_bool(j, "state", "ownPidNs", &st->own_pid_ns, err)) < 0 ||
	    (r = kap_json_read_bool(j, "state", "poststart", &st->hooks_poststart, err)) < 0 ||
	    (r = kap_json_read_bool(j, "state", "poststop", &st->hooks_poststop, err)) < 0 ||
	    (r = kap_json_read_member(j, "state", "annotations", KAP_JSON_OBJECT, &st->annotations,
				      err)) < 0 ||
	    (r = kap_json_read_member(j, "state", "cgroup", KAP_JSON_OBJECT, &st->cgroup, err)) <
		0) {
		st->annotations = st->cgroup = NULL;
		kap_state_free(st);
		return kap_error_wrap(err, "container %s", id);
	}
	if (pid < 0 || pid > 0x3fffffff || !st->id || strcmp(st->id, id)) {
		st->annotations = st->cgroup = NULL;
		kap_state_free(st);
		return kap_error_plain(err, EINVAL, "container %s: state.json is corrupt", id);
	}
	st->pid = (pid_t)pid;
	st->start_time = (uint64_t)start;
	if (st->annotations)
		kap_json_get_ref(st->annotations);
	if (st->cgroup)
		kap_json_get_ref(st->cgroup);
	*out = st;
	return 0;
}

void kap_state_free(struct kap_state *st)
{
	if (!st)
		return;
	free(st->id);
	free(st->bundle);
	free(st->rootfs);
	free(st->created);
	free(st->owner);
	kap_json_put(st->annotations);
	kap_json_put(st->cgroup);
	free(st);
}

struct kap_json *kap_state_oci_json(const struct kap_state *st, const char *status)
{
	struct kap_json *j = kap_json_new_object();
	if (!j)
		return NULL;
	kap_json_set(j, "ociVersion", kap_json_new_string(KAPSEL_OCI_VERSION));
	kap_json_set(j, "id", kap_json_new_string(st->id));
	kap_json_set(j, "pid", kap_json_new_int64(strcmp(status, "stopped") ? st->pid : 0));
	kap_json_set(j, "status", kap_json_new_string(status));
	kap_json_set(j, "bundle", kap_json_new_string(st->bundle));
	kap_json_set(j, "rootfs", kap_json_new_string(st->rootfs));
	kap_json_set(j, "created", kap_json_new_string(st->created));
	if (st->owner && *st->owner)
		kap_json_set(j, "owner", kap_json_new_string(st->owner));
	kap_json_set(j, "annotations",
		     st->annotations ? kap_json_get_ref(st->annotations) : kap_json_new_object());
	return j;
}
