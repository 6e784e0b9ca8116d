/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kapsel/container.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/ctr-ref.h"
#include "image/image.h"

void kap_ctr_ref_clear(struct kap_ctr_ref *c)
{
	free(c->name);
	free(c->store);
	free(c->cdir);
	if (c->cdirfd >= 0)
		close(c->cdirfd);
	free(c->root);
	free(c->state);
	free(c->manifest);
	for (char **p = c->ports; p && *p; p++)
		free(*p);
	free(c->ports);
	*c = (struct kap_ctr_ref){.cdirfd = -EBADF};
}

/* podman's name rule, as run.c checks it: nothing else can name a directory of ours. */
static bool valid_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 128 || name[0] == '.' || name[0] == '_' || name[0] == '-')
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
	       n;
}

static char *store_path(const char *store)
{
	return store && *store ? strdup(store) : kap_store_default_path();
}

/* The runtime's pid for a container it has running or paused (0 otherwise). */
static pid_t runtime_pid(const char *root, const char *name)
{
	struct kapsel_container_info *list = NULL;
	size_t n = 0;
	cleanup_error struct kapsel_error *e = NULL;
	if (kapsel_container_list(root, &list, &n, &e) < 0)
		return 0;
	pid_t pid = 0;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i].id, name) && list[i].pid > 0 &&
		    (!strcmp(list[i].status, "running") || !strcmp(list[i].status, "paused")))
			pid = list[i].pid;
	kapsel_container_info_free(list, n);
	return pid;
}

int kap_ctr_ref_open(const char *store, const char *name, struct kap_ctr_ref *c,
		     struct kapsel_error **err)
{
	*c = (struct kap_ctr_ref){.cdirfd = -EBADF};
	if (!valid_name(name))
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	if (!(c->name = strdup(name)) || !(c->store = store_path(store)) ||
	    asprintf(&c->cdir, "%s/containers/%s", c->store, name) < 0) {
		c->cdir = NULL;
		kap_ctr_ref_clear(c);
		return kap_error(err, ENOMEM, "container %s", name);
	}
	c->cdirfd = open(c->cdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->cdirfd < 0) {
		int e = errno;
		kap_ctr_ref_clear(c);
		if (e == ENOENT)
			return kap_error_plain(err, ENOENT, "no such container %s", name);
		return kap_error(err, e, "open container %s", name);
	}
	cleanup_free char *buf = NULL;
	size_t len;
	cleanup_json struct kap_json *j = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(c->cdirfd, "container.json", 1 << 20, &buf, &len, &e);
	if (r == -ENOENT) {
		/* Being created or removed right now: not a container yet, or any more. */
		kap_ctr_ref_clear(c);
		return kap_error_plain(err, ENOENT, "no such container %s", name);
	}
	if (r < 0 || (r = kap_json_parse(buf, len, "container.json", &j, &e)) < 0 ||
	    (r = kap_json_read_string(j, "container.json", "root", &c->root, &e)) < 0 ||
	    (r = kap_json_read_string(j, "container.json", "state", &c->state, &e)) < 0 ||
	    (r = kap_json_read_string(j, "container.json", "manifest", &c->manifest, &e)) < 0 ||
	    (r = kap_json_read_int64(j, "container.json", "created", &c->created, &e)) < 0 ||
	    (r = kap_json_read_strv(j, "container.json", "ports", &c->ports, &e)) < 0) {
		kap_ctr_ref_clear(c);
		*err = steal_ptr(e);
		return kap_error_wrap(err, "container %s", name);
	}
	if (!c->state && !(c->state = strdup("created"))) {
		kap_ctr_ref_clear(c);
		return kap_error(err, ENOMEM, "container %s", name);
	}
	if (!strcmp(c->state, "running"))
		c->pid = runtime_pid(c->root && *c->root ? c->root : KAPSEL_DEFAULT_ROOT, name);
	return 0;
}

int kap_ctr_ref_names(const char *store, char ***names, struct kapsel_error **err)
{
	*names = NULL;
	cleanup_free char *sp = store_path(store);
	cleanup_free char *dir = NULL;
	if (!sp || asprintf(&dir, "%s/containers", sp) < 0)
		return kap_error(err, ENOMEM, "store");
	cleanup_strv char **v = calloc(1, sizeof(char *));
	if (!v)
		return kap_error(err, ENOMEM, "containers");
	cleanup_dir DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT) {
			*names = steal_ptr(v);
			return 0;
		}
		return kap_error(err, errno, "open %s", dir);
	}
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!valid_name(de->d_name) ||
		    faccessat(dirfd(d), de->d_name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		char **nv = realloc(v, (n + 2) * sizeof(char *));
		if (!nv)
			return kap_error(err, ENOMEM, "containers");
		v = nv;
		if (!(v[n] = strdup(de->d_name)))
			return kap_error(err, ENOMEM, "containers");
		v[++n] = NULL;
	}
	*names = steal_ptr(v);
	return 0;
}

int kap_ctr_ref_netns(const char *store, const char *name, char **path, char **cdir,
		      struct kapsel_error **err)
{
	*path = *cdir = NULL;
	struct kap_ctr_ref c;
	int r = kap_ctr_ref_open(store, name, &c, err);
	if (r < 0)
		return kap_error_wrap(err, "--net container:%s", name);
	if (c.pid <= 0) {
		r = kap_error_plain(err, ESRCH, "--net container:%s: container %s is not running",
				    name, name);
	} else {
		int n = faccessat(c.cdirfd, "netns", F_OK, AT_SYMLINK_NOFOLLOW) == 0
			    ? asprintf(path, "%s/netns", c.cdir)
			    : asprintf(path, "/proc/%d/ns/net", (int)c.pid);
		if (n < 0)
			*path = NULL;
		if (n < 0 || !(*cdir = strdup(c.cdir))) {
			free(*path);
			*path = NULL;
			r = kap_error(err, ENOMEM, "container %s", name);
		}
	}
	kap_ctr_ref_clear(&c);
	return r;
}
