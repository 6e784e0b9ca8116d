/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel inspect CONTAINER`: podman's container inspect object (podman-container-inspect(1),
 * libpod/define.InspectContainerData) for a container `kapsel run` made, put together from
 * what kapsel keeps of it: container.json (image, times, exit code; image/run.c), the
 * generated config.json (process, limits, mounts, namespaces), the runtime's state (pid), the
 * image's config (Entrypoint, Labels) and the network leases. Only fields kapsel has data for
 * are shown, and every one of those always (zero values included), so that a --format field
 * path works whatever the container's state.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/image.h"
#include "net/net.h"

#define API __attribute__((visibility("default")))

/* Go's zero time.Time, which podman prints for a time that has not happened. */
#define ZERO_TIME "0001-01-01T00:00:00Z"

static void store_closep(struct kap_store **s)
{
	if (*s)
		kap_store_close(*s);
}

static struct kap_json *time_json(int64_t t)
{
	char buf[64];
	struct tm tm;
	time_t tt = (time_t)t;
	if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return kap_json_new_string(ZERO_TIME);
	return kap_json_new_string(buf);
}

static struct kap_json *strv_json(char *const *v, size_t from)
{
	struct kap_json *a = kap_json_new_array();
	size_t n = 0;
	while (v && v[n])
		n++;
	for (size_t i = from; a && i < n; i++)
		kap_json_append(a, kap_json_new_string(v[i]));
	return a;
}

static const char *str_or(const struct kap_json *o, const char *key, const char *dflt)
{
	const struct kap_json *v = kap_json_get(o, key);
	return kap_json_type(v) == KAP_JSON_STRING ? kap_json_string(v) : dflt;
}

static int64_t int_or(const struct kap_json *o, const char *key, int64_t dflt)
{
	const struct kap_json *v = kap_json_get(o, key);
	return kap_json_type(v) == KAP_JSON_INT ? kap_json_int64(v) : dflt;
}

/* A JSON member by path ("linux", "resources", "memory", NULL); NULL when absent. */
static const struct kap_json *dig(const struct kap_json *o, ...)
{
	va_list ap;
	va_start(ap, o);
	for (const char *k; o && (k = va_arg(ap, const char *));)
		o = kap_json_type(o) == KAP_JSON_OBJECT ? kap_json_get(o, k) : NULL;
	va_end(ap);
	return o;
}

/* The array of strings at j, as a NULL-terminated vector (caller frees), or NULL. */
static char **strv_of(const struct kap_json *j)
{
	if (kap_json_type(j) != KAP_JSON_ARRAY)
		return NULL;
	size_t n = kap_json_array_len(j);
	char **v = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; v && i < n; i++) {
		const char *s = kap_json_string(kap_json_array_at(j, i));
		if (!(v[i] = strdup(s ? s : ""))) {
			kap_strvp(&v);
			return NULL;
		}
	}
	return v;
}

static bool strv_prefix(char *const *v, char *const *prefix, size_t *n)
{
	size_t i = 0;
	for (; prefix && prefix[i]; i++)
		if (!v || !v[i] || strcmp(v[i], prefix[i]))
			return false;
	*n = i;
	return true;
}

/* The runtime's pid and start time of a running (or paused) container; 0 when it has none. */
static int64_t runtime_pid(const char *root, const char *name, char **started)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_free char *json = NULL;
	cleanup_json struct kap_json *j = NULL;
	if (kapsel_container_state(root, name, &json, &e) < 0 ||
	    kap_json_parse(json, strlen(json), "state", &j, &e) < 0)
		return 0;
	const char *c = str_or(j, "created", NULL);
	if (c)
		*started = strdup(c);
	return int_or(j, "pid", 0);
}

/* HostConfig and the network part of NetworkSettings, from config.json and the leases. */
static int host_config(const char *store, const char *cdir, const char *name,
		       const struct kap_json *cfg, struct kap_json *out, struct kap_json *netset,
		       struct kapsel_error **err)
{
	struct kap_json *hc = kap_json_new_object(), *binds = kap_json_new_array();
	if (!hc || !binds) {
		kap_json_put(hc);
		kap_json_put(binds);
		return kap_error(err, ENOMEM, "inspect %s", name);
	}
	kap_json_set(out, "HostConfig", hc);
	const struct kap_json *res = dig(cfg, "linux", "resources", NULL);
	kap_json_set(hc, "Memory",
		     kap_json_new_int64(int_or(dig(res, "memory", NULL), "limit", 0)));
	/* docker's NanoCpus: CPUs in units of 10^-9, from the CFS quota per period. */
	int64_t quota = int_or(dig(res, "cpu", NULL), "quota", 0);
	int64_t period = int_or(dig(res, "cpu", NULL), "period", 0);
	kap_json_set(hc, "NanoCpus",
		     kap_json_new_int64(quota > 0 && period > 0 ? quota * 1000000000 / period : 0));
	kap_json_set(hc, "PidsLimit",
		     kap_json_new_int64(int_or(dig(res, "pids", NULL), "limit", 0)));

	/* --volume mounts: the bind mounts whose source is not a file of the container's own
	 * (hosts, hostname, resolv.conf are kapsel's). */
	const struct kap_json *mounts = dig(cfg, "mounts", NULL);
	size_t cl = strlen(cdir);
	for (size_t i = 0; i < kap_json_array_len(mounts); i++) {
		const struct kap_json *m = kap_json_array_at(mounts, i);
		const char *src = str_or(m, "source", ""), *dst = str_or(m, "destination", "");
		if (strcmp(str_or(m, "type", ""), "bind") ||
		    (!strncmp(src, cdir, cl) && src[cl] == '/'))
			continue;
		bool ro = false;
		const struct kap_json *opts = kap_json_get(m, "options");
		for (size_t k = 0; k < kap_json_array_len(opts); k++) {
			const char *o = kap_json_string(kap_json_array_at(opts, k));
			ro |= o && !strcmp(o, "ro");
		}
		cleanup_free char *b = NULL;
		if (asprintf(&b, "%s:%s%s", src, dst, ro ? ":ro" : "") < 0)
			return kap_error(err, ENOMEM, "inspect %s", name);
		kap_json_append(binds, kap_json_new_string(b));
	}
	kap_json_set(hc, "Binds", binds);

	/* The network namespace: none in the config is the host's; one without a path is the
	 * container's own with lo only (--net none); one at a path is kapsel's, on networks. */
	const char *mode = "host";
	const struct kap_json *nss = dig(cfg, "linux", "namespaces", NULL);
	bool own_ns = false;
	for (size_t i = 0; i < kap_json_array_len(nss); i++) {
		const struct kap_json *ns = kap_json_array_at(nss, i);
		if (strcmp(str_or(ns, "type", ""), "network"))
			continue;
		own_ns = kap_json_get(ns, "path") != NULL;
		mode = own_ns ? "bridge" : "none";
	}
	/* A VM container on a network has no namespace of kapsel's, but its lease. */
	cleanup_free char *vmnet = NULL;
	if (!own_ns && asprintf(&vmnet, "%s/" KAP_NET_VM_FILE, cdir) > 0 &&
	    access(vmnet, F_OK) == 0) {
		own_ns = true;
		mode = "bridge";
	}
	cleanup_json struct kap_json *nets = NULL, *ports = NULL;
	if (own_ns) {
		cleanup_error struct kapsel_error *e = NULL;
		/* Leases are root's (networks need root); without them the mode still says it. */
		if (kap_net_container_networks(store, name, &nets, &ports, &e) < 0)
			nets = ports = NULL;
	}
	const char *ip = "", *gw = "";
	const char *k;
	struct kap_json *v;
	struct kap_json_iter it = kap_json_iter(nets);
	if (nets && kap_json_iter_next(&it, &k, &v)) {
		mode = k; /* podman names the first network */
		ip = str_or(v, "IPAddress", "");
		gw = str_or(v, "Gateway", "");
	}
	kap_json_set(hc, "NetworkMode", kap_json_new_string(mode));
	kap_json_set(netset, "IPAddress", kap_json_new_string(ip));
	kap_json_set(netset, "Gateway", kap_json_new_string(gw));
	kap_json_set(netset, "Networks", nets ? kap_json_get_ref(nets) : kap_json_new_object());
	kap_json_set(netset, "Ports", ports ? kap_json_get_ref(ports) : kap_json_new_object());
	return 0;
}

API int kapsel_image_container_inspect(const char *store, const char *name, char **json,
				       struct kapsel_error **err)
{
	*json = NULL;
	/* Read only, as status is: inspecting a missing container creates no store. */
	cleanup_free char *path = store ? strdup(store) : kap_store_default_path();
	if (!path)
		return kap_error(err, ENOMEM, "store");
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	cleanup_free char *cdir = NULL;
	if (asprintf(&cdir, "%s/containers/%s", path, name) < 0)
		return kap_error(err, ENOMEM, "store");
	cleanup_close int cfd = open(cdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (cfd < 0 && (errno == ENOENT || errno == ENOTDIR))
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	if (cfd < 0)
		return kap_error(err, errno, "open %s", cdir);

	cleanup_free char *mbuf = NULL, *cbuf = NULL;
	size_t mlen, clen;
	cleanup_json struct kap_json *meta = NULL, *cfg = NULL;
	int r = kap_fs_read_file(cfd, "container.json", 1 << 20, &mbuf, &mlen, NULL);
	if (r == -ENOENT) /* being created or removed right now */
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	if (r < 0)
		return kap_error(err, -r, "read %s/container.json", cdir);
	if ((r = kap_json_parse(mbuf, mlen, "container.json", &meta, err)) < 0)
		return r;
	if (kap_fs_read_file(cfd, "config.json", 1 << 24, &cbuf, &clen, NULL) < 0 ||
	    kap_json_parse(cbuf, clen, "config.json", &cfg, NULL) < 0)
		cfg = kap_json_new_object(); /* made before config.json is written */
	if (!cfg)
		return kap_error(err, ENOMEM, "inspect %s", name);

	cleanup_free char *status = NULL;
	if ((r = kapsel_image_container_status(path, name, &status, err)) < 0)
		return r;
	if (!status && !(status = strdup(str_or(meta, "state", "created"))))
		return kap_error(err, ENOMEM, "inspect %s", name);
	bool running = !strcmp(status, "running"), paused = !strcmp(status, "paused");
	cleanup_free char *started = NULL;
	int64_t pid = running || paused
			  ? runtime_pid(str_or(meta, "root", KAPSEL_DEFAULT_ROOT), name, &started)
			  : 0;

	/* The image's own config: what the container's Entrypoint and Labels come from. */
	struct kap_manifest m = {0};
	struct kap_image_config ic = {0};
	bool have_image = false;
	__attribute__((cleanup(store_closep))) struct kap_store *s = NULL;
	const char *manifest = str_or(meta, "manifest", NULL);
	if (manifest && kap_store_open(path, &s, NULL) >= 0 &&
	    kap_store_load_image(s, manifest, &m, &ic, NULL) >= 0)
		have_image = true;

	const struct kap_json *proc = dig(cfg, "process", NULL);
	cleanup_strv char **args = strv_of(kap_json_get(proc, "args"));
	cleanup_strv char **env = strv_of(kap_json_get(proc, "env"));
	cleanup_json struct kap_json *o = kap_json_new_object();
	struct kap_json *st = kap_json_new_object(), *c = kap_json_new_object();
	struct kap_json *ns = kap_json_new_object(), *labels = kap_json_new_object();
	if (!o || !st || !c || !ns || !labels) {
		kap_json_put(st), kap_json_put(c), kap_json_put(ns), kap_json_put(labels);
		r = kap_error(err, ENOMEM, "inspect %s", name);
		goto out;
	}
	int64_t created = int_or(meta, "created", 0), finished = int_or(meta, "finished", 0);
	int64_t exit_code = int_or(meta, "exitCode", -1);

	kap_json_set(o, "Id", kap_json_new_string(name));
	kap_json_set(o, "Created", time_json(created));
	kap_json_set(o, "Path", kap_json_new_string(args && args[0] ? args[0] : ""));
	kap_json_set(o, "Args", strv_json(args, args && args[0] ? 1 : 0));

	kap_json_set(st, "Status", kap_json_new_string(status));
	kap_json_set(st, "Running", kap_json_new_bool(running));
	kap_json_set(st, "Paused", kap_json_new_bool(paused));
	kap_json_set(st, "Pid", kap_json_new_int64(pid));
	/* Unknown (-1: still running, or killed with its owner) reads as podman's 0. */
	kap_json_set(st, "ExitCode", kap_json_new_int64(exit_code < 0 ? 0 : exit_code));
	if (started)
		kap_json_set(st, "StartedAt", kap_json_new_string(started));
	else
		kap_json_set(st, "StartedAt", time_json(strcmp(status, "created") ? created : 0));
	kap_json_set(st, "FinishedAt", time_json(finished));
	kap_json_set(o, "State", st);

	kap_json_set(o, "Image", kap_json_new_string(have_image ? m.config.digest + 7 : ""));
	kap_json_set(o, "ImageDigest", kap_json_new_string(manifest ? manifest : ""));
	kap_json_set(o, "ImageName", kap_json_new_string(str_or(meta, "imageName", "")));
	kap_json_set(o, "Name", kap_json_new_string(name));

	kap_json_set(c, "Hostname", kap_json_new_string(str_or(cfg, "hostname", "")));
	kap_json_set(c, "Env", strv_json(env, 0));
	/*
	 * kapsel keeps the process's argv, not how run split it: when it starts with the
	 * image's Entrypoint that is the Entrypoint and the rest the Cmd, as podman shows them.
	 */
	size_t ep = 0;
	bool image_ep = have_image && ic.entrypoint && strv_prefix(args, ic.entrypoint, &ep);
	kap_json_set(c, "Entrypoint",
		     image_ep ? strv_json(ic.entrypoint, 0) : kap_json_new_array());
	kap_json_set(c, "Cmd", strv_json(args, image_ep ? ep : 0));
	kap_json_set(c, "Image", kap_json_new_string(str_or(meta, "imageName", "")));
	kap_json_set(c, "WorkingDir", kap_json_new_string(str_or(proc, "cwd", "/")));
	const struct kap_json *user = kap_json_get(proc, "user");
	int64_t uid = int_or(user, "uid", 0), gid = int_or(user, "gid", 0);
	char ug[48] = "";
	if (uid || gid)
		snprintf(ug, sizeof(ug), "%" PRId64 ":%" PRId64, uid, gid);
	kap_json_set(c, "User", kap_json_new_string(ug));
	bool tty = false;
	kap_json_read_bool(proc, "process", "terminal", &tty, NULL);
	kap_json_set(c, "Tty", kap_json_new_bool(tty));
	kap_json_set(c, "StopSignal", kap_json_new_string(str_or(meta, "stopSignal", "SIGTERM")));
	for (size_t i = 0; have_image && i < ic.n_labels; i++)
		kap_json_set(labels, ic.labels_keys[i], kap_json_new_string(ic.labels_values[i]));
	kap_json_set(c, "Labels", labels);
	kap_json_set(o, "Config", c);

	if ((r = host_config(path, cdir, name, cfg, o, ns, err)) < 0) {
		kap_json_put(ns);
		goto out;
	}
	kap_json_set(o, "NetworkSettings", ns);
	kap_json_set(o, "Driver", kap_json_new_string("overlay"));
	if (!(*json = kap_json_dump(o, true)))
		r = kap_error(err, ENOMEM, "inspect %s", name);
out:
	if (have_image) {
		kap_manifest_clear(&m);
		kap_image_config_clear(&ic);
	}
	return r < 0 ? r : 0;
}
