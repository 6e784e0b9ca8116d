/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel info` (include/kapsel/info.h): what podman info shows, found the way kapsel itself
 * finds it: the cgroup layout as the container engine detects it, KVM as the VMM opens it,
 * the store's images and containers as `images` and `ps -a` list them. It only reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/image.h>
#include <kapsel/info.h>
#include <kapsel/run.h>

#include "container/cgroup/cgroup.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "image/image.h"

#define API __attribute__((visibility("default")))

/* A value of /etc/os-release (os-release(5)), unquoted; "" when absent. */
static char *os_release(const char *buf, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, kl) || p[kl] != '=')
			continue;
		const char *v = p + kl + 1;
		size_t n = strcspn(v, "\n");
		if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
			v++;
			n -= 2;
		}
		return strndup(v, n);
	}
	return strdup("");
}

static const char *cgroup_version(void)
{
	enum kap_cgroup_mode mode;
	if (kap_cgroup_detect("/sys/fs/cgroup", &mode, NULL) < 0)
		return "unknown";
	return mode == KAP_CGROUP_UNIFIED ? "v2" : mode == KAP_CGROUP_HYBRID ? "hybrid" : "v1";
}

/* KVM as the VMM needs it: /dev/kvm opens and speaks API version 12 (KVM_API_VERSION). */
static bool kvm_available(void)
{
	cleanup_close int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	return fd >= 0 && ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
}

static bool apparmor_enabled(void)
{
	cleanup_free char *buf = NULL;
	size_t len;
	return kap_fs_read_file(AT_FDCWD, "/sys/module/apparmor/parameters/enabled", 16, &buf, &len,
				NULL) >= 0 &&
	       len > 0 && buf[0] == 'Y';
}

static struct kap_json *host_json(void)
{
	struct kap_json *h = kap_json_new_object();
	struct kap_json *dist = kap_json_new_object(), *sec = kap_json_new_object();
	struct kap_json *kvm = kap_json_new_object();
	if (!h || !dist || !sec || !kvm) {
		kap_json_put(h), kap_json_put(dist), kap_json_put(sec), kap_json_put(kvm);
		return NULL;
	}
	struct utsname u;
	if (uname(&u) < 0)
		memset(&u, 0, sizeof(u));
	struct sysinfo si = {0};
	sysinfo(&si);
	kap_json_set(h, "arch", kap_json_new_string(KAP_HOST_ARCH));
	kap_json_set(h, "os", kap_json_new_string("linux"));
	kap_json_set(h, "kernel", kap_json_new_string(u.release));
	kap_json_set(h, "hostname", kap_json_new_string(u.nodename));
	kap_json_set(h, "cpus", kap_json_new_int64(sysconf(_SC_NPROCESSORS_ONLN)));
	kap_json_set(h, "memTotal", kap_json_new_int64((int64_t)si.totalram * si.mem_unit));
	kap_json_set(h, "memFree", kap_json_new_int64((int64_t)si.freeram * si.mem_unit));
	kap_json_set(h, "cgroupVersion", kap_json_new_string(cgroup_version()));
	/* kapsel drives cgroupfs only (--systemd-cgroup is refused). */
	kap_json_set(h, "cgroupManager", kap_json_new_string("cgroupfs"));
	cleanup_free char *rel = NULL;
	size_t len;
	if (kap_fs_read_file(AT_FDCWD, "/etc/os-release", 1 << 16, &rel, &len, NULL) < 0)
		rel = NULL;
	cleanup_free char *id = os_release(rel, "ID"), *ver = os_release(rel, "VERSION_ID");
	kap_json_set(dist, "distribution", kap_json_new_string(id ? id : ""));
	kap_json_set(dist, "version", kap_json_new_string(ver ? ver : ""));
	kap_json_set(h, "distribution", dist);
	kap_json_set(sec, "rootless", kap_json_new_bool(geteuid() != 0));
	/* PR_GET_SECCOMP fails with EINVAL only on a kernel built without seccomp. */
	kap_json_set(sec, "seccompEnabled", kap_json_new_bool(prctl(PR_GET_SECCOMP) >= 0));
	kap_json_set(sec, "apparmorEnabled", kap_json_new_bool(apparmor_enabled()));
	kap_json_set(h, "security", sec);
	kap_json_set(kvm, "available", kap_json_new_bool(kvm_available()));
	kap_json_set(h, "kvm", kvm);
	return h;
}

API int kapsel_system_info(const char *store, const char *root, char **json,
			   struct kapsel_error **err)
{
	*json = NULL;
	cleanup_free char *path = store ? strdup(store) : kap_store_default_path();
	if (!path)
		return kap_error(err, ENOMEM, "info");
	if (!root)
		root = kapsel_default_root();
	struct kapsel_image_info *imgs = NULL;
	size_t n_img = 0, n_ctr = 0;
	int r = kapsel_image_list(path, &imgs, &n_img, err);
	if (r < 0)
		return r;
	/* One image with several names is one image (podman counts images, not names). */
	size_t uniq = 0;
	for (size_t i = 0; i < n_img; i++) {
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = !strcmp(imgs[k].full_id, imgs[i].full_id);
		uniq += !seen;
	}
	kapsel_image_info_free(imgs, n_img);
	struct kapsel_ps_entry *ctrs = NULL;
	if ((r = kapsel_image_ps(path, root, true, &ctrs, &n_ctr, err)) < 0)
		return r;
	int64_t running = 0, paused = 0;
	for (size_t i = 0; i < n_ctr; i++) {
		running += !strcmp(ctrs[i].status, "running");
		paused += !strcmp(ctrs[i].status, "paused");
	}
	kapsel_ps_entries_free(ctrs, n_ctr);
	cleanup_json struct kap_json *o = kap_json_new_object();
	struct kap_json *st = kap_json_new_object(), *is = kap_json_new_object();
	struct kap_json *cs = kap_json_new_object(), *ver = kap_json_new_object();
	struct kap_json *host = host_json();
	if (!o || !st || !is || !cs || !ver || !host) {
		kap_json_put(st), kap_json_put(is), kap_json_put(cs), kap_json_put(ver);
		kap_json_put(host);
		return kap_error(err, ENOMEM, "info");
	}
	kap_json_set(o, "host", host);
	kap_json_set(st, "graphRoot", kap_json_new_string(path));
	kap_json_set(st, "graphDriverName", kap_json_new_string("overlay"));
	kap_json_set(st, "runRoot", kap_json_new_string(root));
	kap_json_set(is, "number", kap_json_new_int64((int64_t)uniq));
	kap_json_set(st, "imageStore", is);
	kap_json_set(cs, "number", kap_json_new_int64((int64_t)n_ctr));
	kap_json_set(cs, "running", kap_json_new_int64(running));
	kap_json_set(cs, "paused", kap_json_new_int64(paused));
	kap_json_set(cs, "stopped", kap_json_new_int64((int64_t)n_ctr - running - paused));
	kap_json_set(st, "containerStore", cs);
	kap_json_set(o, "store", st);
	kap_json_set(ver, "version", kap_json_new_string(KAPSEL_VERSION));
	kap_json_set(ver, "ociVersion", kap_json_new_string(KAPSEL_OCI_VERSION));
	kap_json_set(o, "version", ver);
	*json = kap_json_dump(o, true);
	return *json ? 0 : kap_error(err, ENOMEM, "info");
}
