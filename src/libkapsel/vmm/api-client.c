/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client side of the VM control API (docs/vm.md): finding a VM's socket under the
 * runtime directory, one request per connection, and the list of running VMs. `kapsel vm
 * ls|inspect|pause|resume|stop` use it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include <kapsel/vm.h>

#include "vmm/api.h"
#include "vmm/migrate.h"

#define API __attribute__((visibility("default")))

/* Responses are small JSON documents; anything larger is not kapsel's API. */
#define RESPONSE_MAX (1 << 20)

API bool kapsel_vm_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool alnum =
		    (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		if (!alnum && (i == 0 || !strchr("_.-", c)))
			return false;
	}
	return true;
}

static int connect_to(const char *path, struct kapsel_error **err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return kap_error_plain(err, ENAMETOOLONG, "api socket %s: name too long", path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kap_error(err, errno, "api socket %s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = kap_error(err, errno, "api socket %s", path);
		close(fd);
		return r;
	}
	return fd;
}

bool kap_api_socket_alive(const char *path)
{
	cleanup_error struct kapsel_error *e = NULL;
	int fd = connect_to(path, &e);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The api_socket member of dirfd/name/state.json (malloc'd), or NULL. */
static char *state_socket(int dirfd, const char *name)
{
	cleanup_free char *p = NULL, *buf = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	cleanup_json struct kap_json *j = NULL;
	size_t len;
	if (asprintf(&p, "%s/state.json", name) < 0) {
		p = NULL;
		return NULL;
	}
	if (kap_fs_read_file(dirfd, p, 65536, &buf, &len, &e) < 0 ||
	    kap_json_parse(buf, len, "state.json", &j, &e) < 0)
		return NULL;
	char *s = NULL;
	if (kap_json_read_string(j, "", "api_socket", &s, &e) < 0)
		return NULL;
	return s;
}

bool kap_vm_dir_alive(int dirfd, const char *name)
{
	cleanup_free char *s = state_socket(dirfd, name);
	return s && kap_api_socket_alive(s);
}

API int kapsel_vm_api_path(const char *runtime_dir, const char *name, char **path,
			   struct kapsel_error **err)
{
	if (!kapsel_vm_name_valid(name))
		return kap_error_plain(
		    err, EINVAL, "vm %s: invalid name (expected [A-Za-z0-9][A-Za-z0-9_.-]*)", name);
	cleanup_free char *dir = NULL;
	if (asprintf(&dir, "%s/vm", runtime_dir) < 0)
		return kap_error(err, ENOMEM, "vm %s", name);
	cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char *s = dfd >= 0 ? state_socket(dfd, name) : NULL;
	if (s && kap_api_socket_alive(s)) {
		*path = s;
		return 0;
	}
	/*
	 * A VMM killed by SIGKILL left its directory: nobody serves it, so it goes. One
	 * without state.json may be a VM starting now (its socket is bound before the state
	 * is written), and stays.
	 */
	if (s)
		kap_fs_rm_rf(dfd, name);
	free(s);
	return kap_error_plain(err, ENOENT, "vm %s: no such VM", name);
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* send_all's first bytes with descriptor pass attached (SCM_RIGHTS). */
static int send_passing(int fd, const char *p, size_t n, int pass)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl = {0};
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &pass, sizeof(int));
	ssize_t w;
	do
		w = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w <= 0)
		return w < 0 ? -errno : -EPIPE;
	return send_all(fd, p + w, n - (size_t)w);
}

/* kapsel_vm_api_call, with descriptor pass (>= 0) sent along with the request. */
static int api_call(const char *path, const char *method, const char *target, const char *json,
		    int pass, char **body, struct kapsel_error **err)
{
	cleanup_close int fd = connect_to(path, err);
	if (fd < 0)
		return fd;
	/* A VMM that stopped answering must not hang the CLI. */
	struct timeval tv = {.tv_sec = 30};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t jl = json ? strlen(json) : 0;
	cleanup_free char *req = NULL;
	int n = asprintf(&req,
			 "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s"
			 "Content-Length: %zu\r\n\r\n%s",
			 method, target, json ? "Content-Type: application/json\r\n" : "", jl,
			 json ? json : "");
	if (n < 0) {
		req = NULL;
		return kap_error(err, ENOMEM, "api request");
	}
	int r = pass >= 0 ? send_passing(fd, req, (size_t)n, pass) : send_all(fd, req, (size_t)n);
	if (r < 0)
		return kap_error(err, -r, "api socket %s: send", path);
	cleanup_free char *buf = malloc(RESPONSE_MAX + 1);
	if (!buf)
		return kap_error(err, ENOMEM, "api response");
	size_t len = 0;
	for (;;) {
		ssize_t got = read(fd, buf + len, RESPONSE_MAX - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return kap_error(err, errno, "api socket %s: read", path);
		if (got == 0)
			break;
		len += (size_t)got;
		if (len == RESPONSE_MAX)
			return kap_error_plain(err, EMSGSIZE, "api socket %s: response too large",
					       path);
	}
	buf[len] = 0;
	int status;
	if (sscanf(buf, "HTTP/1.%*1[01] %3d", &status) != 1 || status < 100 || status > 599)
		return kap_error_plain(err, EPROTO, "api socket %s: not an HTTP response", path);
	char *b = strstr(buf, "\r\n\r\n");
	if (!b)
		return kap_error_plain(err, EPROTO, "api socket %s: truncated response", path);
	*body = strdup(b + 4);
	if (!*body)
		return kap_error(err, ENOMEM, "api response");
	return status;
}

API int kapsel_vm_api_call(const char *path, const char *method, const char *target,
			   const char *json, char **body, struct kapsel_error **err)
{
	return api_call(path, method, target, json, -1, body, err);
}

/*
 * A jailed VMM reaches no address (docs/vm.md, Jailer): the client dials the destination and
 * hands the connection over with the request. An unjailed one dials itself, so that a request
 * it refuses (a migration already running, a virtio-fs share) leaves the destination waiting.
 */
API int kapsel_vm_api_migrate(const char *path, const char *json, const char *dest, char **body,
			      struct kapsel_error **err)
{
	cleanup_free char *m = NULL;
	int r = api_call(path, "GET", "/", NULL, -1, &m, err);
	if (r < 0)
		return r;
	cleanup_json struct kap_json *j = NULL;
	struct kapsel_error *perr = NULL;
	bool jailed = false;
	if (r == 200 && kap_json_parse(m, strlen(m), "GET /", &j, &perr) == 0 &&
	    kap_json_get(j, "jail"))
		jailed = kap_json_bool(kap_json_get(j, "jail"));
	kapsel_error_free(perr);
	cleanup_close int fd = -EBADF;
	if (jailed && (fd = kap_migrate_dial(dest, err)) < 0)
		return fd;
	return api_call(path, "PUT", "/migrate", json, fd, body, err);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

API int kapsel_vm_list(const char *runtime_dir, char ***names, size_t *n, struct kapsel_error **err)
{
	*names = NULL;
	*n = 0;
	cleanup_free char *dir = NULL;
	if (asprintf(&dir, "%s/vm", runtime_dir) < 0)
		return kap_error(err, ENOMEM, "vm list");
	cleanup_dir DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : kap_error(err, errno, "open %s", dir);
	char **v = NULL;
	size_t cnt = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !kapsel_vm_name_valid(de->d_name))
			continue;
		cleanup_free char *sock = state_socket(dirfd(d), de->d_name);
		if (!sock)
			continue; /* starting, or not a VM's directory */
		if (!kap_api_socket_alive(sock)) {
			kap_fs_rm_rf(dirfd(d), de->d_name); /* its VMM was killed */
			continue;
		}
		char **nv = realloc(v, (cnt + 2) * sizeof(*v));
		char *s = nv ? strdup(de->d_name) : NULL;
		if (nv)
			v = nv;
		if (!s) {
			for (size_t i = 0; i < cnt; i++)
				free(v[i]);
			free(v);
			return kap_error(err, ENOMEM, "vm list");
		}
		v[cnt++] = s;
		v[cnt] = NULL;
	}
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_str);
	*names = v;
	*n = cnt;
	return 0;
}

API void kapsel_vm_info_clear(struct kapsel_vm_info *i)
{
	free(i->id);
	free(i->state);
	free(i->kernel);
	free(i->started);
	free(i->api_socket);
	*i = (struct kapsel_vm_info){0};
}

API int kapsel_vm_inspect(const char *runtime_dir, const char *name, struct kapsel_vm_info *info,
			  char **json, struct kapsel_error **err)
{
	cleanup_free char *path = NULL, *body = NULL;
	int r = kapsel_vm_api_path(runtime_dir, name, &path, err);
	if (r < 0)
		return r;
	r = kapsel_vm_api_call(path, "GET", "/", NULL, &body, err);
	if (r < 0)
		return r;
	if (r != 200)
		return kap_error_plain(err, EPROTO, "vm %s: GET /: HTTP %d: %s", name, r, body);
	if (info) {
		cleanup_json struct kap_json *j = NULL;
		struct kapsel_vm_info i = {0};
		if ((r = kap_json_parse(body, strlen(body), "GET /", &j, err)) < 0)
			return r;
		if ((r = kap_json_read_string(j, "", "id", &i.id, err)) < 0 ||
		    (r = kap_json_read_string(j, "", "state", &i.state, err)) < 0 ||
		    (r = kap_json_read_string(j, "", "kernel", &i.kernel, err)) < 0 ||
		    (r = kap_json_read_string(j, "", "started", &i.started, err)) < 0 ||
		    (r = kap_json_read_string(j, "", "api_socket", &i.api_socket, err)) < 0 ||
		    (r = kap_json_read_int64(j, "", "pid", &i.pid, err)) < 0 ||
		    (r = kap_json_read_int64(j, "", "vcpus", &i.vcpus, err)) < 0 ||
		    (r = kap_json_read_uint64(j, "", "mem_mib", &i.mem_mib, err)) < 0) {
			kapsel_vm_info_clear(&i);
			return r;
		}
		*info = i;
	}
	if (json)
		*json = steal_ptr(body);
	return 0;
}
