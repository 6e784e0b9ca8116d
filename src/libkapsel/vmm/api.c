/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM's control API: HTTP/1.1 with JSON bodies on a unix socket, after Firecracker's
 * (docs/vm.md, Control API). One small thread serves it with its own epoll set, so a slow or
 * hostile client never holds up the event loop or a vCPU; requests that change the machine
 * (pause, resume) take the VM's pause lock like any other thread would.
 *
 * Clients are hostile input (a tool of the same user, confused or compromised): requests are
 * parsed by http.c within fixed bounds, at most API_MAX_CONNS connections are open at once,
 * a connection idle for API_IDLE_MS is closed, responses are sent without blocking (a client
 * that does not read loses its connection), and every refusal is a 4xx with Firecracker's
 * {"fault_message": "..."} body.
 *
 * The VM's directory <runtime>/vm/<name> (0700) holds state.json and api.sock; it is removed
 * when the VM ends, on every path through kapsel_vm_run. A VMM killed with SIGKILL cannot
 * remove it: the next `vm run --name` of that name, and `vm ls`, find the socket dead and
 * remove the directory then.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "vmm/api.h"
#include "vmm/devices/devices.h"
#include "vmm/http.h"
#include "vmm/jail.h"
#include "vmm/virtio/balloon.h"
#include "vmm/vmm.h"

#define API_MAX_CONNS 16
#define API_IDLE_MS   10000
#define API_BUF	      (KAP_HTTP_MAX_HEAD + KAP_HTTP_MAX_BODY)

enum { EV_LISTEN = 0, EV_WAKE = 1, EV_CONN = 2 };

struct api_conn {
	int fd; /* -1: free */
	size_t len;
	int64_t last_ms;
	char *buf;  /* API_BUF bytes */
	int passed; /* a descriptor the client sent (SCM_RIGHTS) for its next request; -1 */
};

struct kap_api {
	struct kap_vm *vm;
	int listen_fd, wake_fd, epfd, dir_fd;
	pthread_t thread;
	bool started;
	char *sock_path;
	char *dir_path; /* <runtime>/vm/<name>, or NULL without --name */
	char *vm_dir;	/* <runtime>/vm */
	struct api_conn conns[API_MAX_CONNS];
	int passed_fd; /* the request being routed: its client's descriptor, -1 (route()) */
};

/* ---- responses ---- */

static void conn_close(struct kap_api *a, struct api_conn *c)
{
	if (c->fd < 0)
		return;
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (c->passed >= 0)
		close(c->passed);
	c->passed = -1;
	c->len = 0;
	free(c->buf);
	c->buf = NULL;
}

/* false: the connection is gone. */
static bool respond(struct kap_api *a, struct api_conn *c, int status, const char *body,
		    bool close_after, const char *extra)
{
	char head[256];
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nServer: kapsel\r\n%s%s%sContent-Length: %zu\r\n%s\r\n",
			 status, kap_http_reason(status),
			 blen ? "Content-Type: application/json\r\n" : "", extra ? extra : "",
			 extra ? "\r\n" : "", blen, close_after ? "Connection: close\r\n" : "");
	struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, blen}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
	ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	/* Responses are small: a short write means a client that does not read. */
	if (w != (ssize_t)((size_t)n + blen) || close_after) {
		conn_close(a, c);
		return false;
	}
	return true;
}

static char *fault_body(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fault_body(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return NULL;
	kap_json_set(o, "fault_message", kap_json_new_string(msg));
	return kap_json_dump(o, false);
}

/* ---- the resources ---- */

static void format_time(int64_t s, char *out, size_t len)
{
	time_t t = (time_t)s;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static char *machine_json(struct kap_api *a)
{
	struct kap_vm *vm = a->vm;
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return NULL;
	char started[32];
	format_time(vm->started_wall_s, started, sizeof(started));
	kap_json_set(o, "id", kap_json_new_string(vm->cfg->name ? vm->cfg->name : ""));
	kap_json_set(o, "state",
		     kap_json_new_string(kap_vm_is_suspended(vm) ? "Suspended"
					 : kap_vm_is_paused(vm)	 ? "Paused"
								 : "Running"));
	kap_json_set(o, "vcpus", kap_json_new_int64(vm->ncpus));
	kap_json_set(o, "mem_mib", kap_json_new_uint64(vm->mem.size >> 20));
	kap_json_set(o, "kernel", kap_json_new_string(vm->cfg->kernel ? vm->cfg->kernel : ""));
	kap_json_set(o, "started", kap_json_new_string(started));
	kap_json_set(o, "pid", kap_json_new_int64(kap_jail_host_pid()));
	kap_json_set(o, "api_socket", kap_json_new_string(a->sock_path));
	kap_json_set(o, "jail", kap_json_new_bool(vm->jail != NULL));
	return kap_json_dump(o, false);
}

static char *metrics_json(struct kap_api *a)
{
	struct kap_vm *vm = a->vm;
	cleanup_json struct kap_json *o = kap_json_new_object();
	struct kap_json *vcpus = kap_json_new_array(), *total = kap_json_new_object();
	if (!o || !vcpus || !total) {
		kap_json_put(vcpus);
		kap_json_put(total);
		return NULL;
	}
	uint64_t sum[KAP_EXIT_KINDS] = {0};
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kap_vcpu *v = &vm->vcpus[i];
		struct kap_json *vo = kap_json_new_object(), *ex = kap_json_new_object();
		for (int k = 0; k < KAP_EXIT_KINDS; k++) {
			uint64_t n = atomic_load_explicit(&v->exits[k], memory_order_relaxed);
			sum[k] += n;
			kap_json_set(ex, kap_vcpu_exit_name(k), kap_json_new_uint64(n));
		}
		kap_json_set(vo, "id", kap_json_new_int64(i));
		kap_json_set(vo, "run_time_ns", kap_json_new_uint64(kap_vcpu_cpu_ns(v)));
		kap_json_set(vo, "exits", ex);
		kap_json_append(vcpus, vo);
	}
	for (int k = 0; k < KAP_EXIT_KINDS; k++)
		kap_json_set(total, kap_vcpu_exit_name(k), kap_json_new_uint64(sum[k]));
	pthread_mutex_lock(&vm->pause_lock);
	int64_t now = kap_vmm_now_ms();
	int64_t paused = vm->paused_total_ms + (vm->paused ? now - vm->paused_at_ms : 0);
	pthread_mutex_unlock(&vm->pause_lock);
	kap_json_set(o, "uptime_ms", kap_json_new_int64(now - vm->started_ms));
	kap_json_set(o, "paused_ms", kap_json_new_int64(paused));
	kap_json_set(o, "exits", total);
	kap_json_set(o, "vcpus", vcpus);
	return kap_json_dump(o, false);
}

/*
 * The body of a PATCH/PUT: a JSON object whose only member is key, a string. Returns it
 * (owned by *j), or NULL with *out set to the fault.
 */
static const char *one_string_member(const struct kap_http_request *req, const char *what,
				     const char *key, struct kap_json **j, char **out)
{
	cleanup_error struct kapsel_error *e = NULL;
	if (req->body_len == 0) {
		*out = fault_body("%s needs a JSON body: {\"%s\": ...}", what, key);
		return NULL;
	}
	if (kap_json_parse(req->body, req->body_len, "request body", j, &e) < 0) {
		*out = fault_body("%s", e->msg);
		return NULL;
	}
	if (kap_json_type(*j) != KAP_JSON_OBJECT) {
		*out = fault_body("request body: expected an object");
		return NULL;
	}
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(*j); kap_json_iter_next(&it, &k, &v);)
		if (strcmp(k, key)) {
			*out = fault_body("request body: unknown field \"%.64s\"", k);
			return NULL;
		}
	struct kap_json *s = kap_json_get(*j, key);
	if (!s || kap_json_type(s) != KAP_JSON_STRING) {
		*out = fault_body("request body: %s: expected a string", key);
		return NULL;
	}
	return kap_json_string(s);
}

/*
 * PUT /actions {"action_type": "Stop"}: ends the VM as SIGTERM does (the VMM tears down and
 * exits 143), without asking the guest.
 * {"action_type": "PowerButton"}: presses the ACPI power button (QEMU's system_powerdown):
 * the guest decides; an OS that powers off ends the VM (exit status 0).
 * {"action_type": "Wakeup"}: wakes a guest that suspended to RAM (ACPI S3, pause.c), as QEMU's
 * system_wakeup does.
 */
static int put_actions(struct kap_api *a, const struct kap_http_request *req, char **out)
{
	cleanup_json struct kap_json *j = NULL;
	const char *act = one_string_member(req, "PUT /actions", "action_type", &j, out);
	if (!act)
		return 400;
	if (!strcmp(act, "Wakeup")) {
		cleanup_error struct kapsel_error *e = NULL;
		if (kap_vm_wake(a->vm, &e) < 0) {
			*out = fault_body("%s", e->msg);
			return 400;
		}
		return 204;
	}
	if (!strcmp(act, "PowerButton")) {
		kap_info("vm: ACPI power button pressed through the API");
		kap_acpi_power_button(a->vm);
		return 204;
	}
	if (strcmp(act, "Stop")) {
		*out = fault_body("request body: action_type: unknown action \"%.64s\" (Stop, "
				  "PowerButton, Wakeup)",
				  act);
		return 400;
	}
	kap_info("vm: stopped through the API");
	kap_vm_request_exit(a->vm, KAP_VM_SIGNAL, 128 + SIGTERM, NULL);
	return 204;
}

/* PATCH /vm {"state": "Paused" | "Resumed"} (Firecracker's VM state). */
static int patch_vm(struct kap_api *a, const struct kap_http_request *req, char **out)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_json struct kap_json *j = NULL;
	const char *want = one_string_member(req, "PATCH /vm", "state", &j, out);
	if (!want)
		return 400;
	/* The migration pauses and resumes the VM itself (migrate.c). */
	if (atomic_load(&a->vm->migrating)) {
		*out = fault_body("the VM is being migrated (cancel with DELETE /migrate)");
		return 409;
	}
	int r;
	if (!strcmp(want, "Paused"))
		r = kap_vm_pause(a->vm, &e);
	else if (!strcmp(want, "Resumed"))
		r = kap_vm_resume(a->vm, &e);
	else {
		*out = fault_body("request body: state: expected \"Paused\" or \"Resumed\", got "
				  "\"%.64s\"",
				  want);
		return 400;
	}
	if (r < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	kap_info("vm: %s through the API", want[0] == 'P' ? "paused" : "resumed");
	return 204;
}

/*
 * PUT /snapshot/create {"mem_file_path": ..., "snapshot_path": ...[, "snapshot_type": "Full" or
 * "Diff"]} (Firecracker's names) of a paused VM: snapshot.c, docs/vm.md "Snapshot format".
 */
static int put_snapshot(struct kap_api *a, const struct kap_http_request *req, char **out)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_json struct kap_json *j = NULL;
	if (req->body_len == 0) {
		*out =
		    fault_body("PUT /snapshot/create needs a JSON body: {\"mem_file_path\": ..., "
			       "\"snapshot_path\": ...}");
		return 400;
	}
	if (kap_json_parse(req->body, req->body_len, "request body", &j, &e) < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	if (kap_json_type(j) != KAP_JSON_OBJECT) {
		*out = fault_body("request body: expected an object");
		return 400;
	}
	const char *k, *mem = NULL, *state = NULL;
	bool diff = false;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(j); kap_json_iter_next(&it, &k, &v);) {
		bool known = !strcmp(k, "mem_file_path") || !strcmp(k, "snapshot_path") ||
			     !strcmp(k, "snapshot_type");
		if (!known) {
			*out = fault_body("request body: unknown field \"%.64s\"", k);
			return 400;
		}
		if (kap_json_type(v) != KAP_JSON_STRING || !kap_json_string(v)[0]) {
			*out = fault_body("request body: %s: expected a non-empty string", k);
			return 400;
		}
		if (!strcmp(k, "snapshot_type")) {
			const char *t = kap_json_string(v);
			if (strcmp(t, "Full") && strcmp(t, "Diff")) {
				*out =
				    fault_body("request body: snapshot_type: expected \"Full\" or "
					       "\"Diff\", got \"%.64s\"",
					       t);
				return 400;
			}
			diff = !strcmp(t, "Diff");
		}
		if (!strcmp(k, "mem_file_path"))
			mem = kap_json_string(v);
		else if (!strcmp(k, "snapshot_path"))
			state = kap_json_string(v);
	}
	if (!mem || !state) {
		*out = fault_body("request body: %s is required",
				  !mem ? "mem_file_path" : "snapshot_path");
		return 400;
	}
	if (kap_vm_snapshot(a->vm, mem, state, diff, &e) < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	return 204;
}

/* ---- the balloon (virtio/balloon.c; Firecracker's /balloon resources) ---- */

/*
 * A PATCH body: a JSON object whose only member is key, a non-negative integer up to max.
 * Returns 0 with *out set, or -1 with *fault set.
 */
static int one_uint_member(const struct kap_http_request *req, const char *what, const char *key,
			   uint64_t max, uint64_t *val, char **fault)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_json struct kap_json *j = NULL;
	if (req->body_len == 0) {
		*fault = fault_body("%s needs a JSON body: {\"%s\": N}", what, key);
		return -1;
	}
	if (kap_json_parse(req->body, req->body_len, "request body", &j, &e) < 0) {
		*fault = fault_body("%s", e->msg);
		return -1;
	}
	if (kap_json_type(j) != KAP_JSON_OBJECT) {
		*fault = fault_body("request body: expected an object");
		return -1;
	}
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(j); kap_json_iter_next(&it, &k, &v);)
		if (strcmp(k, key)) {
			*fault = fault_body("request body: unknown field \"%.64s\"", k);
			return -1;
		}
	struct kap_json *n = kap_json_get(j, key);
	if (!n || kap_json_type(n) != KAP_JSON_INT || kap_json_int64(n) < 0 ||
	    (uint64_t)kap_json_int64(n) > max) {
		*fault = fault_body("request body: %s: expected an integer from 0 to %" PRIu64, key,
				    max);
		return -1;
	}
	*val = (uint64_t)kap_json_int64(n);
	return 0;
}

static char *balloon_json(const struct kap_balloon_info *b)
{
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return NULL;
	kap_json_set(o, "amount_mib", kap_json_new_uint64(b->target_pages >> 8));
	kap_json_set(o, "deflate_on_oom", kap_json_new_bool(b->deflate_on_oom));
	kap_json_set(o, "stats_polling_interval_s", kap_json_new_uint64(b->stats_interval_s));
	kap_json_set(o, "free_page_reporting", kap_json_new_bool(b->free_page_reporting));
	return kap_json_dump(o, false);
}

/* Firecracker's BalloonStats: pages and MiB, then the statistics the guest last sent. */
static char *balloon_stats_json(const struct kap_balloon_info *b)
{
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return NULL;
	kap_json_set(o, "target_pages", kap_json_new_uint64(b->target_pages));
	kap_json_set(o, "actual_pages", kap_json_new_uint64(b->actual_pages));
	kap_json_set(o, "target_mib", kap_json_new_uint64(b->target_pages >> 8));
	kap_json_set(o, "actual_mib", kap_json_new_uint64(b->actual_pages >> 8));
	for (unsigned int t = 0; t < VIRTIO_BALLOON_S_NR; t++)
		if (b->stats_valid & (1u << t))
			kap_json_set(o, kap_balloon_stat_name(t), kap_json_new_uint64(b->stats[t]));
	/* kapsel's own: 4 KiB pages given back to the host, and PFNs refused. */
	kap_json_set(o, "inflated_pages_total", kap_json_new_uint64(b->inflated_total));
	kap_json_set(o, "reported_pages_total", kap_json_new_uint64(b->reported_total));
	kap_json_set(o, "ignored_pfns_total", kap_json_new_uint64(b->ignored_pfns));
	return kap_json_dump(o, false);
}

/* GET|PATCH /balloon and /balloon/statistics. */
static int route_balloon(struct kap_api *a, const struct kap_http_request *req, char **out,
			 const char **allow)
{
	bool stats = !strcmp(req->path, "/balloon/statistics");
	bool get = !strcmp(req->method, "GET"), patch = !strcmp(req->method, "PATCH");
	if (!get && !patch) {
		*allow = "Allow: GET, PATCH";
		*out =
		    fault_body("%s %s: method not allowed (GET or PATCH)", req->method, req->path);
		return 405;
	}
	struct kap_virtio_dev *d = kap_balloon_find(a->vm);
	if (!d) {
		*out = fault_body("%s %s: the VM has no balloon device (vm run --balloon)",
				  req->method, req->path);
		return 400;
	}
	struct kap_balloon_info info;
	kap_balloon_get(d, &info);
	if (get) {
		if (req->body_len) {
			*out = fault_body("GET %s takes no body", req->path);
			return 400;
		}
		if (stats && !info.stats_interval_s) {
			*out = fault_body("GET /balloon/statistics: statistics are not enabled "
					  "(--balloon stats_interval_s=N)");
			return 400;
		}
		*out = stats ? balloon_stats_json(&info) : balloon_json(&info);
		return *out ? 200 : 500;
	}
	cleanup_error struct kapsel_error *e = NULL;
	uint64_t v;
	int r;
	if (stats) {
		if (one_uint_member(req, "PATCH /balloon/statistics", "stats_polling_interval_s",
				    86400, &v, out) < 0)
			return 400;
		r = kap_balloon_set_stats_interval(d, (unsigned int)v, &e);
	} else {
		if (one_uint_member(req, "PATCH /balloon", "amount_mib", UINT32_MAX >> 8, &v, out) <
		    0)
			return 400;
		r = kap_balloon_set_target(d, v << 8, &e);
		if (r >= 0)
			kap_info("vm: balloon target %" PRIu64 " MiB through the API", v);
	}
	if (r < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	return 204;
}

/*
 * /migrate (docs/vm.md, Live migration): PUT {"destination": "unix:PATH" | "tcp:127.0.0.1:PORT"
 * [, "max_downtime_ms": N][, "max_iterations": N]} starts one (migrate.c, on its own thread),
 * GET reports it, DELETE cancels it.
 */
static int put_migrate(struct kap_api *a, const struct kap_http_request *req, char **out)
{
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_json struct kap_json *j = NULL;
	if (req->body_len == 0) {
		*out = fault_body("PUT /migrate needs a JSON body: {\"destination\": ...}");
		return 400;
	}
	if (kap_json_parse(req->body, req->body_len, "request body", &j, &e) < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	if (kap_json_type(j) != KAP_JSON_OBJECT) {
		*out = fault_body("request body: expected an object");
		return 400;
	}
	struct kap_migrate_params p = {.fd = -1};
	const char *k;
	struct kap_json *v;
	for (struct kap_json_iter it = kap_json_iter(j); kap_json_iter_next(&it, &k, &v);) {
		if (!strcmp(k, "destination")) {
			if (kap_json_type(v) != KAP_JSON_STRING || !kap_json_string(v)[0]) {
				*out = fault_body("request body: destination: expected a non-empty "
						  "string");
				return 400;
			}
			p.dest = kap_json_string(v);
		} else if (!strcmp(k, "max_downtime_ms") || !strcmp(k, "max_iterations")) {
			bool dt = k[4] == 'd';
			if (kap_json_type(v) != KAP_JSON_INT || kap_json_int64(v) < 1 ||
			    kap_json_int64(v) > (dt ? 3600000 : 1000)) {
				*out = fault_body("request body: %s: expected an integer in 1..%d",
						  k, dt ? 3600000 : 1000);
				return 400;
			}
			if (dt)
				p.max_downtime_ms = (uint64_t)kap_json_int64(v);
			else
				p.max_iterations = (unsigned int)kap_json_int64(v);
		} else {
			*out = fault_body("request body: unknown field \"%.64s\"", k);
			return 400;
		}
	}
	if (!p.dest) {
		*out = fault_body("request body: destination is required");
		return 400;
	}
	/* The connection the client dialled, when it sent one (SCM_RIGHTS): the migration's. */
	p.fd = a->passed_fd;
	a->passed_fd = -1;
	if (kap_migrate_start(a->vm, &p, &e) < 0) {
		*out = fault_body("%s", e->msg);
		return 400;
	}
	return 202;
}

static int route_migrate(struct kap_api *a, const struct kap_http_request *req, char **out,
			 const char **allow)
{
	cleanup_error struct kapsel_error *e = NULL;
	if (!strcmp(req->method, "PUT"))
		return put_migrate(a, req, out);
	if (!strcmp(req->method, "GET") || !strcmp(req->method, "DELETE")) {
		if (req->body_len) {
			*out = fault_body("%s /migrate takes no body", req->method);
			return 400;
		}
		if (req->method[0] == 'G') {
			*out = kap_migrate_status_json(a->vm);
			return *out ? 200 : 500;
		}
		if (kap_migrate_cancel(a->vm, &e) < 0) {
			*out = fault_body("%s", e->msg);
			return 400;
		}
		kap_info("vm: migration cancelled through the API");
		return 204;
	}
	*allow = "Allow: GET, PUT, DELETE";
	*out = fault_body("%s /migrate: method not allowed (GET, PUT, DELETE)", req->method);
	return 405;
}

/* Routes one request: the status, and *out the JSON body (NULL: none). */
static int route(struct kap_api *a, const struct kap_http_request *req, char **out,
		 const char **allow)
{
	*out = NULL;
	const char *p = req->path;
	bool get = !strcmp(req->method, "GET"), patch = !strcmp(req->method, "PATCH");
	if (req->body_len && req->has_type && !req->json) {
		*out = fault_body("request body: Content-Type must be application/json");
		return 415;
	}
	if (!strcmp(p, "/") || !strcmp(p, "/machine") || !strcmp(p, "/metrics")) {
		if (!get) {
			*allow = "Allow: GET";
			*out = fault_body("%s %s: method not allowed (GET only)", req->method, p);
			return 405;
		}
		if (req->body_len) {
			*out = fault_body("GET %s takes no body", p);
			return 400;
		}
		*out = !strcmp(p, "/metrics") ? metrics_json(a) : machine_json(a);
		return *out ? 200 : 500;
	}
	if (!strcmp(p, "/vm")) {
		if (!patch) {
			*allow = "Allow: PATCH";
			*out = fault_body("%s /vm: method not allowed (PATCH only)", req->method);
			return 405;
		}
		return patch_vm(a, req, out);
	}
	if (!strcmp(p, "/actions")) {
		if (strcmp(req->method, "PUT")) {
			*allow = "Allow: PUT";
			*out =
			    fault_body("%s /actions: method not allowed (PUT only)", req->method);
			return 405;
		}
		return put_actions(a, req, out);
	}
	if (!strcmp(p, "/snapshot/create")) {
		if (strcmp(req->method, "PUT")) {
			*allow = "Allow: PUT";
			*out = fault_body("%s /snapshot/create: method not allowed (PUT only)",
					  req->method);
			return 405;
		}
		return put_snapshot(a, req, out);
	}
	if (!strcmp(p, "/balloon") || !strcmp(p, "/balloon/statistics"))
		return route_balloon(a, req, out, allow);
	if (!strcmp(p, "/migrate"))
		return route_migrate(a, req, out, allow);
	*out = fault_body("%s %.128s: no such resource", req->method, p);
	return 404;
}

/* ---- connections ---- */

/*
 * read(2) that also takes a descriptor the client attached (SCM_RIGHTS): PUT /migrate's
 * connection to the destination, which a jailed VMM cannot dial (docs/vm.md, Live migration).
 * One per request: more, or a second before the request used the first, are closed.
 */
static ssize_t recv_passing(struct api_conn *c, void *buf, size_t len)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
			if (c->passed < 0)
				c->passed = fd;
			else
				close(fd);
		}
	}
	return n;
}

static void conn_input(struct kap_api *a, struct api_conn *c)
{
	for (;;) {
		ssize_t n = recv_passing(c, c->buf + c->len, API_BUF - c->len);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			conn_close(a, c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		c->len += (size_t)n;
		c->last_ms = kap_vmm_now_ms();
		if (c->len == API_BUF)
			break;
	}
	while (c->fd >= 0 && c->len) {
		struct kap_http_request req;
		int status;
		const char *why;
		int r = kap_http_parse(c->buf, c->len, &req, &status, &why);
		if (r == 0)
			return; /* the bounds make a full buffer a complete or a refused request */
		if (r < 0) {
			cleanup_free char *b = fault_body("%s", why);
			respond(a, c, status, b, true, NULL);
			return;
		}
		cleanup_free char *body = NULL;
		const char *allow = NULL;
		a->passed_fd = c->passed;
		c->passed = -1;
		status = route(a, &req, &body, &allow);
		if (a->passed_fd >= 0)
			close(a->passed_fd);
		a->passed_fd = -1;
		if (status == 500 && !body)
			body = NULL;
		if (!respond(a, c, status, body, req.close != 0, allow))
			return;
		memmove(c->buf, c->buf + req.length, c->len - req.length);
		c->len -= req.length;
	}
}

static void conn_accept(struct kap_api *a)
{
	for (;;) {
		int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		struct api_conn *c = NULL;
		for (int i = 0; i < API_MAX_CONNS && !c; i++)
			if (a->conns[i].fd < 0)
				c = &a->conns[i];
		char *buf = c ? malloc(API_BUF) : NULL;
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
					 .data.u32 = EV_CONN + (uint32_t)(c - a->conns)};
		if (!buf || epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			/* Over the limit: closed at once; the client sees EOF. */
			free(buf);
			close(fd);
			continue;
		}
		*c = (struct api_conn){
		    .fd = fd, .buf = buf, .last_ms = kap_vmm_now_ms(), .passed = -1};
	}
}

static void *api_thread(void *arg)
{
	struct kap_api *a = arg;
	pthread_setname_np(pthread_self(), "vm-api");
	kap_jail_thread(KAP_JAIL_API, 0);
	for (;;) {
		struct epoll_event evs[16];
		int n = epoll_wait(a->epfd, evs, 16, 1000);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			uint32_t id = evs[i].data.u32;
			if (id == EV_WAKE)
				return NULL;
			if (id == EV_LISTEN)
				conn_accept(a);
			else if (id - EV_CONN < API_MAX_CONNS && a->conns[id - EV_CONN].fd >= 0)
				conn_input(a, &a->conns[id - EV_CONN]);
		}
		int64_t now = kap_vmm_now_ms();
		for (int i = 0; i < API_MAX_CONNS; i++)
			if (a->conns[i].fd >= 0 && now - a->conns[i].last_ms > API_IDLE_MS)
				conn_close(a, &a->conns[i]);
	}
	return NULL;
}

/* ---- setup and teardown ---- */

/* Binds path as a 0600 socket; a dead socket left there is replaced, a live one refused. */
static int bind_socket(struct kap_api *a, const char *path, struct kapsel_error **err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return kap_error_plain(err, ENAMETOOLONG, "api socket %s: longer than %zu bytes",
				       path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (a->listen_fd < 0)
		return kap_error(err, errno, "api socket %s", path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return kap_error_plain(err, EEXIST,
					       "api socket %s: exists and is not a socket", path);
		if (kap_api_socket_alive(path))
			return kap_error_plain(err, EADDRINUSE,
					       "api socket %s: another VM is serving it", path);
		unlink(path);
	}
	/* The socket is created 0600: no other user may connect even for a moment. */
	mode_t old = umask(0177);
	int r = bind(a->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		return kap_error(err, errno, "api socket %s", path);
	a->sock_path = strdup(path);
	if (!a->sock_path) {
		unlink(path);
		return kap_error(err, ENOMEM, "api socket %s", path);
	}
	if (chmod(path, 0600) < 0 || listen(a->listen_fd, 16) < 0)
		return kap_error(err, errno, "api socket %s", path);
	return 0;
}

/* <runtime>/vm/<name>, 0700: a stale one (its VMM killed) is replaced, a live one refused. */
static int make_dir(struct kap_api *a, const char *runtime, const char *name,
		    struct kapsel_error **err)
{
	if (!kapsel_vm_name_valid(name))
		return kap_error_plain(err, EINVAL,
				       "--name %s: expected [A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name);
	if (mkdir(runtime, 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "mkdir %s", runtime);
	if (asprintf(&a->vm_dir, "%s/vm", runtime) < 0) {
		a->vm_dir = NULL;
		return kap_error(err, ENOMEM, "vm directory");
	}
	if (mkdir(a->vm_dir, 0700) < 0 && errno != EEXIST)
		return kap_error(err, errno, "mkdir %s", a->vm_dir);
	cleanup_close int vfd = open(a->vm_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (vfd < 0)
		return kap_error(err, errno, "open %s", a->vm_dir);
	if (mkdirat(vfd, name, 0700) < 0) {
		if (errno != EEXIST)
			return kap_error(err, errno, "mkdir %s/%s", a->vm_dir, name);
		if (kap_vm_dir_alive(vfd, name))
			return kap_error_plain(err, EEXIST, "vm %s: already running", name);
		kap_fs_rm_rf(vfd, name);
		if (mkdirat(vfd, name, 0700) < 0)
			return kap_error(err, errno, "mkdir %s/%s", a->vm_dir, name);
	}
	if (asprintf(&a->dir_path, "%s/%s", a->vm_dir, name) < 0) {
		a->dir_path = NULL;
		unlinkat(vfd, name, AT_REMOVEDIR);
		return kap_error(err, ENOMEM, "vm directory");
	}
	a->dir_fd = openat(vfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (a->dir_fd < 0)
		return kap_error(err, errno, "open %s", a->dir_path);
	return 0;
}

static int write_state(struct kap_api *a, struct kapsel_error **err)
{
	struct kap_vm *vm = a->vm;
	cleanup_json struct kap_json *o = kap_json_new_object();
	if (!o)
		return kap_error(err, ENOMEM, "state.json");
	char started[32];
	format_time(vm->started_wall_s, started, sizeof(started));
	kap_json_set(o, "id", kap_json_new_string(vm->cfg->name));
	kap_json_set(o, "pid", kap_json_new_int64(kap_jail_host_pid()));
	kap_json_set(o, "api_socket", kap_json_new_string(a->sock_path));
	kap_json_set(o, "kernel", kap_json_new_string(vm->cfg->kernel ? vm->cfg->kernel : ""));
	kap_json_set(o, "started", kap_json_new_string(started));
	cleanup_free char *s = kap_json_dump(o, true);
	if (!s)
		return kap_error(err, ENOMEM, "state.json");
	return kap_fs_write_atomic(a->dir_fd, "state.json", s, strlen(s), 0600, false, err);
}

int kap_api_start(struct kap_vm *vm, struct kapsel_error **err)
{
	const struct kapsel_vm_config *c = vm->cfg;
	if (!c->name && !c->api_sock)
		return 0;
	struct kap_api *a = calloc(1, sizeof(*a));
	if (!a)
		return kap_error(err, ENOMEM, "api");
	*a = (struct kap_api){
	    .vm = vm, .listen_fd = -1, .wake_fd = -1, .epfd = -1, .dir_fd = -1, .passed_fd = -1};
	for (int i = 0; i < API_MAX_CONNS; i++)
		a->conns[i].fd = a->conns[i].passed = -1;
	vm->api = a;
	int r;
	if (c->name) {
		if (!c->runtime_dir)
			return kap_error_plain(err, EINVAL, "--name %s: no runtime directory",
					       c->name);
		if ((r = make_dir(a, c->runtime_dir, c->name, err)) < 0)
			return r;
	}
	cleanup_free char *def = NULL;
	if (!c->api_sock && asprintf(&def, "%s/api.sock", a->dir_path) < 0)
		return kap_error(err, ENOMEM, "api socket");
	if ((r = bind_socket(a, c->api_sock ? c->api_sock : def, err)) < 0)
		return r;
	if (a->dir_path && (r = write_state(a, err)) < 0)
		return r;
	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->epfd < 0 || a->wake_fd < 0)
		return kap_error(err, errno, "api event fds");
	struct epoll_event el = {.events = EPOLLIN, .data.u32 = EV_LISTEN};
	struct epoll_event ew = {.events = EPOLLIN, .data.u32 = EV_WAKE};
	if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->listen_fd, &el) < 0 ||
	    epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->wake_fd, &ew) < 0)
		return kap_error(err, errno, "epoll_ctl api socket");
	/* A jailed VMM starts its threads only once the jail is closed (jail.c). */
	return vm->jail ? 0 : kap_api_run(vm, err);
}

int kap_api_run(struct kap_vm *vm, struct kapsel_error **err)
{
	struct kap_api *a = vm->api;
	if (!a || a->started)
		return 0;
	int r = pthread_create(&a->thread, NULL, api_thread, a);
	if (r != 0)
		return kap_error(err, r, "start the API thread");
	a->started = true;
	kap_debug("vm: API on %s", a->sock_path);
	return 0;
}

void kap_api_stop(struct kap_vm *vm)
{
	struct kap_api *a = vm->api;
	if (!a)
		return;
	if (a->started) {
		uint64_t one = 1;
		if (write(a->wake_fd, &one, sizeof(one)) < 0)
			kap_debug("api: wake: %s", strerror(errno));
		pthread_join(a->thread, NULL);
	}
	for (int i = 0; i < API_MAX_CONNS; i++)
		conn_close(a, &a->conns[i]);
	if (a->listen_fd >= 0)
		close(a->listen_fd);
	if (a->sock_path)
		unlink(a->sock_path);
	if (a->dir_fd >= 0) {
		unlinkat(a->dir_fd, "state.json", 0);
		close(a->dir_fd);
	}
	if (a->dir_path && rmdir(a->dir_path) < 0)
		kap_debug("api: rmdir %s: %s", a->dir_path, strerror(errno));
	if (a->epfd >= 0)
		close(a->epfd);
	if (a->wake_fd >= 0)
		close(a->wake_fd);
	free(a->sock_path);
	free(a->dir_path);
	free(a->vm_dir);
	free(a);
	vm->api = NULL;
}
