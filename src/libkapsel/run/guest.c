/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest side of `kapsel run --vm`: which kernel boots, and the initramfs that carries the
 * agent and the kernel modules it loads (docs/vm.md, "run --vm"; docs/DESIGN.md says why the
 * kernel is Debian's generic linux-image-amd64).
 *
 * The modules come from the kernel's own tree (a `dpkg-deb -x` of the package, which has no
 * modules.dep: depmod never ran), so their dependencies are read from each module's .modinfo
 * "depends=" string, as scripts/nested/mkinitramfs.py does. What the kernel has built in
 * (modules.builtin) is skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "run/run-vm.h"

/* What the agent needs: virtio-pci (kapsel's default transport), virtio-fs, virtio-vsock, and
 * virtio-net for a VM on a network (run --vm --net NETWORK). */
static const char *const wanted[] = {"virtio_pci", "virtiofs", "vmw_vsock_virtio_transport",
				     "virtio_net"};

#define MAX_MODULES 64
#define MAX_KO	    (64u << 20)

void kap_guest_kernel_clear(struct kap_guest_kernel *k)
{
	free(k->path);
	free(k->version);
	free(k->modules_dir);
	memset(k, 0, sizeof(*k));
}

int kap_bzimage_version(const uint8_t *buf, size_t len, char *out, size_t outlen)
{
	if (len < 0x210 || memcmp(buf + 0x202, "HdrS", 4) || outlen == 0)
		return -EINVAL;
	unsigned proto = (unsigned)buf[0x206] | (unsigned)buf[0x207] << 8;
	size_t off = (size_t)buf[0x20e] | (size_t)buf[0x20f] << 8;
	if (proto < 0x200 || off == 0)
		return -EINVAL;
	off += 0x200;
	size_t i = 0;
	while (off + i < len && buf[off + i] && buf[off + i] != ' ' && i + 1 < outlen) {
		out[i] = (char)buf[off + i];
		i++;
	}
	if (off + i >= len || i == 0 || (buf[off + i] && buf[off + i] != ' '))
		return -EINVAL;
	out[i] = '\0';
	return 0;
}

static int by_version(const struct dirent **a, const struct dirent **b)
{
	return strverscmp((*a)->d_name, (*b)->d_name);
}

/* The newest DIR/VERSION/boot/vmlinuz-VERSION. */
static char *newest_in(const char *dir)
{
	struct dirent **list = NULL;
	int n = scandir(dir, &list, NULL, by_version);
	char *found = NULL;
	for (int i = n - 1; i >= 0; i--) {
		char *p = NULL;
		if (!found && list[i]->d_name[0] != '.' &&
		    asprintf(&p, "%s/%s/boot/vmlinuz-%s", dir, list[i]->d_name, list[i]->d_name) >
			0) {
			if (access(p, R_OK) == 0)
				found = p;
			else
				free(p);
		}
		free(list[i]);
	}
	free(list);
	return found;
}

int kap_guest_kernel_find(const char *given, struct kap_guest_kernel *k, struct kapsel_error **err)
{
	memset(k, 0, sizeof(*k));
	const char *env = getenv("KAPSEL_VM_KERNEL");
	const char *dir = getenv("KAPSEL_VM_KERNEL_DIR");
	if (!dir || !*dir)
		dir = KAP_VM_KERNEL_DIR;
	const char *what = "--vm-kernel";
	if (!given && env && *env) {
		given = env;
		what = "KAPSEL_VM_KERNEL";
	}
	if (given) {
		struct stat st;
		if (stat(given, &st) < 0)
			return kap_error(err, errno, "%s %s", what, given);
		if (!S_ISREG(st.st_mode))
			return kap_error_plain(err, EINVAL, "%s %s: not a regular file", what,
					       given);
		k->path = strdup(given);
	} else if (!(k->path = newest_in(dir))) {
		return kap_error_plain(err, ENOENT,
				       "run --vm: no guest kernel: none given with --vm-kernel or "
				       "KAPSEL_VM_KERNEL, none in %s/VERSION/boot/vmlinuz-VERSION "
				       "(scripts/setup.sh installs one)",
				       dir);
	}
	if (!k->path)
		return kap_error(err, ENOMEM, "guest kernel");

	/* The setup header and the version string sit within the first 64 KiB. */
	cleanup_close int fd = open(k->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "guest kernel %s", k->path);
	uint8_t head[65536];
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n < 0)
		return kap_error(err, errno, "read guest kernel %s", k->path);
	char version[128];
	if (kap_bzimage_version(head, (size_t)n, version, sizeof(version)) < 0)
		return kap_error_plain(
		    err, EINVAL, "guest kernel %s: not a bzImage with a version string", k->path);
	if (!(k->version = strdup(version)))
		return kap_error(err, ENOMEM, "guest kernel");

	/* Its modules: ROOT/lib/modules/VERSION beside ROOT/boot/, else the host's tree. */
	cleanup_free char *copy = strdup(k->path), *cand = NULL;
	if (!copy)
		return kap_error(err, ENOMEM, "guest kernel");
	char *slash = strrchr(copy, '/');
	if (slash)
		*slash = '\0';
	if (asprintf(&cand, "%s/../lib/modules/%s", slash ? copy : ".", version) < 0)
		return kap_error(err, ENOMEM, "guest kernel");
	struct stat st;
	if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
		k->modules_dir = steal_ptr(cand);
	} else {
		free(cand);
		cand = NULL;
		if (asprintf(&cand, "/lib/modules/%s", version) < 0)
			return kap_error(err, ENOMEM, "guest kernel");
		if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode))
			k->modules_dir = steal_ptr(cand);
	}
	return 0;
}

/* ---- newc cpio ---- */

static int cpio_reserve(struct kap_cpio *c, size_t more)
{
	if (more > KAP_CPIO_MAX || c->len > KAP_CPIO_MAX - more)
		return -ENOMEM;
	if (c->len + more <= c->cap)
		return 0;
	size_t cap = c->cap ? c->cap : 65536;
	while (cap < c->len + more)
		cap *= 2;
	char *b = realloc(c->buf, cap);
	if (!b)
		return -ENOMEM;
	c->buf = b;
	c->cap = cap;
	return 0;
}

int kap_cpio_add(struct kap_cpio *c, const char *name, uint32_t mode, unsigned rdev_major,
		 unsigned rdev_minor, const void *data, size_t len)
{
	size_t namesize = strlen(name) + 1;
	if (namesize == 1 || len > UINT32_MAX)
		return -EINVAL;
	/* header (110) + name + NUL padded to 4, then the data padded to 4 */
	size_t head = (110 + namesize + 3) & ~(size_t)3;
	size_t body = (len + 3) & ~(size_t)3;
	if (head > KAP_CPIO_MAX || body > KAP_CPIO_MAX)
		return -ENOMEM;
	int r = cpio_reserve(c, head + body);
	if (r < 0)
		return r;
	char *p = c->buf + c->len;
	memset(p, 0, head + body);
	/* magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	 * rdevminor, namesize, check: 8 hex digits each (initramfs-buffer-format.rst) */
	snprintf(p, 111, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ++c->ino,
		 mode, 0u, 0u, (mode & S_IFMT) == S_IFDIR ? 2u : 1u, 0u, (unsigned)len, 0u, 0u,
		 rdev_major, rdev_minor, (unsigned)namesize, 0u);
	memcpy(p + 110, name, namesize);
	if (len)
		memcpy(p + head, data, len);
	c->len += head + body;
	return 0;
}

int kap_cpio_finish(struct kap_cpio *c)
{
	return kap_cpio_add(c, "TRAILER!!!", 0, 0, 0, NULL, 0);
}

void kap_cpio_clear(struct kap_cpio *c)
{
	free(c->buf);
	memset(c, 0, sizeof(*c));
}

/* ---- modules ---- */

struct modset {
	const char *root; /* modules_dir */
	char *names[MAX_MODULES];
	char *data[MAX_MODULES];
	size_t sizes[MAX_MODULES];
	size_t n;
	char *builtin; /* modules.builtin, NUL-terminated, or NULL */
};

static void modset_clear(struct modset *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->names[i]);
		free(m->data[i]);
	}
	free(m->builtin);
}

/* nftw has no context argument: the search runs under a lock-free single caller (run --vm). */
static const char *find_name;
static char *find_path;

static void normalize(char *s)
{
	for (; *s; s++)
		if (*s == '-')
			*s = '_';
}

static int find_cb(const char *path, const struct stat *st, int type, struct FTW *f)
{
	const char *base = path + f->base;
	size_t n = strlen(base);
	if (type != FTW_F || n < 4 || strcmp(base + n - 3, ".ko"))
		return 0;
	char name[256];
	snprintf(name, sizeof(name), "%.*s", (int)(n - 3), base);
	normalize(name);
	if (strcmp(name, find_name))
		return 0;
	find_path = strdup(path);
	return 1;
}

static bool is_builtin(const struct modset *m, const char *name)
{
	if (!m->builtin)
		return false;
	for (const char *line = m->builtin; *line;) {
		const char *end = strchrnul(line, '\n');
		const char *base = memrchr(line, '/', (size_t)(end - line));
		base = base ? base + 1 : line;
		char mod[256];
		size_t len = (size_t)(end - base);
		if (len > 3 && len < sizeof(mod) && !memcmp(end - 3, ".ko", 3)) {
			memcpy(mod, base, len - 3);
			mod[len - 3] = '\0';
			normalize(mod);
			if (!strcmp(mod, name))
				return true;
		}
		line = *end ? end + 1 : end;
	}
	return false;
}

/* .modinfo is a run of NUL-separated key=value strings; "depends=" lists the modules' names. */
static const char *modinfo_depends(const char *data, size_t len)
{
	static const char key[] = "\0depends=";
	const char *p = memmem(data, len, key, sizeof(key) - 1);
	if (!p)
		return "";
	p += sizeof(key) - 1;
	return memchr(p, '\0', len - (size_t)(p - data)) ? p : "";
}

static int add_module(struct modset *m, const char *name, unsigned depth, struct kapsel_error **err)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->names[i], name))
			return 0;
	if (depth > 16)
		return kap_error_plain(err, ELOOP, "module %s: dependencies nested too deep", name);
	if (is_builtin(m, name))
		return 0;
	find_name = name;
	find_path = NULL;
	cleanup_free char *kdir = NULL;
	if (asprintf(&kdir, "%s/kernel", m->root) < 0)
		return kap_error(err, ENOMEM, "module %s", name);
	nftw(kdir, find_cb, 16, FTW_PHYS);
	cleanup_free char *path = steal_ptr(find_path);
	if (!path)
		return kap_error_plain(err, ENOENT,
				       "guest kernel: module %s neither built in nor in %s (only "
				       "uncompressed .ko files are read)",
				       name, kdir);
	cleanup_free char *data = NULL;
	size_t len = 0;
	int r = kap_fs_read_file(AT_FDCWD, path, MAX_KO, &data, &len, err);
	if (r < 0)
		return r;
	/* Dependencies first: the agent loads the modules in this order. */
	cleanup_free char *deps = strdup(modinfo_depends(data, len));
	if (!deps)
		return kap_error(err, ENOMEM, "module %s", name);
	char *save = NULL;
	for (char *d = strtok_r(deps, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
		normalize(d);
		if ((r = add_module(m, d, depth + 1, err)) < 0)
			return r;
	}
	if (m->n == MAX_MODULES)
		return kap_error_plain(err, E2BIG, "guest kernel: more than %d modules needed",
				       MAX_MODULES);
	if (!(m->names[m->n] = strdup(name)))
		return kap_error(err, ENOMEM, "module %s", name);
	m->data[m->n] = steal_ptr(data);
	m->sizes[m->n++] = len;
	return 0;
}

static int agent_path(char **path, struct kapsel_error **err)
{
#ifdef KAPSEL_AGENT_BUILD_PATH
	if (access(KAPSEL_AGENT_BUILD_PATH, X_OK) == 0)
		return (*path = strdup(KAPSEL_AGENT_BUILD_PATH)) ? 0
								 : kap_error(err, ENOMEM, "agent");
#endif
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;
	if (len > 0) {
		exe[len] = '\0';
		if ((slash = strrchr(exe, '/'))) {
			*slash = '\0';
			if (asprintf(path, "%s/../libexec/kapsel/kapsel-agent", exe) < 0)
				return kap_error(err, ENOMEM, "agent");
			if (access(*path, X_OK) == 0)
				return 0;
			free(*path);
			*path = NULL;
		}
	}
	return kap_error_plain(err, ENOENT,
			       "run --vm: kapsel-agent not found (not built, or not installed in "
			       "../libexec/kapsel/ beside kapsel)");
}

/* FNV-1a 64: names the cached file by its content; not a security boundary (the store is
 * root's). */
static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3ULL;
	return h;
}

int kap_initramfs_get(const char *store, const struct kap_guest_kernel *k, char **path,
		      struct kapsel_error **err)
{
	cleanup_free char *apath = NULL, *agent = NULL;
	size_t alen = 0;
	int r = agent_path(&apath, err);
	if (r < 0 || (r = kap_fs_read_file(AT_FDCWD, apath, MAX_KO, &agent, &alen, err)) < 0)
		return r;

	struct modset m = {.root = k->modules_dir};
	if (k->modules_dir) {
		cleanup_free char *bpath = NULL;
		if (asprintf(&bpath, "%s/modules.builtin", k->modules_dir) < 0)
			return kap_error(err, ENOMEM, "initramfs");
		kap_fs_read_file(AT_FDCWD, bpath, 1u << 20, &m.builtin, NULL, NULL);
		for (size_t i = 0; i < KAP_ARRAY_SIZE(wanted); i++)
			if ((r = add_module(&m, wanted[i], 0, err)) < 0) {
				modset_clear(&m);
				return r;
			}
	}

	struct kap_cpio c = {0};
	static const char *const dirs[] = {"dev",     "proc", "sys",
					   "newroot", "lib",  "lib/kapsel-modules"};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(dirs) && r >= 0; i++)
		r = kap_cpio_add(&c, dirs[i], S_IFDIR | 0755, 0, 0, NULL, 0);
	/* The kernel opens /dev/console for init's stdio before init mounts devtmpfs. */
	if (r >= 0)
		r = kap_cpio_add(&c, "dev/console", S_IFCHR | 0600, 5, 1, NULL, 0);
	if (r >= 0)
		r = kap_cpio_add(&c, "init", S_IFREG | 0755, 0, 0, agent, alen);
	for (size_t i = 0; i < m.n && r >= 0; i++) {
		char name[300];
		snprintf(name, sizeof(name), "lib/kapsel-modules/%02zu-%s.ko", i, m.names[i]);
		r = kap_cpio_add(&c, name, S_IFREG | 0644, 0, 0, m.data[i], m.sizes[i]);
	}
	modset_clear(&m);
	if (r >= 0)
		r = kap_cpio_finish(&c);
	if (r < 0) {
		kap_cpio_clear(&c);
		return kap_error(err, -r, "initramfs for kernel %s", k->version);
	}

	char file[256];
	snprintf(file, sizeof(file), "initramfs-%s-%016llx.cpio", k->version,
		 (unsigned long long)fnv1a(c.buf, c.len));
	cleanup_free char *dir = NULL;
	if (asprintf(&dir, "%s/vm-initramfs", store) < 0 ||
	    asprintf(path, "%s/%s", dir ? dir : "", file) < 0) {
		kap_cpio_clear(&c);
		return kap_error(err, ENOMEM, "initramfs");
	}
	if (access(*path, R_OK) == 0) {
		kap_cpio_clear(&c);
		return 0;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = kap_error(err, errno, "create %s", dir);
	} else {
		cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? kap_error(err, errno, "open %s", dir)
			    : kap_fs_write_atomic(dfd, file, c.buf, c.len, 0644, true, err);
	}
	kap_cpio_clear(&c);
	if (r < 0) {
		free(*path);
		*path = NULL;
	}
	return r < 0 ? r : 0;
}
