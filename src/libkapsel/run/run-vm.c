/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel run --vm IMAGE`: the container image engine prepares the container exactly as for
 * `kapsel run` (overlay rootfs in <cdir>/merged, config.json from the image and the flags), and
 * instead of the container engine this file starts the VMM: the rootfs and every directory
 * volume become virtio-fs shares, the guest kernel boots kapsel-agent from an initramfs
 * (guest.c), and the agent, connected back over vsock, receives config.json's process as a
 * spec and returns stdout, stderr and the exit status (src/kapsel-agent/protocol.h,
 * docs/vm.md "run --vm").
 *
 * The VMM runs in a child process (kapsel_vm_run blocks until the guest ends), the relay here,
 * in the container's monitor: a VMM that dies ends the relay through the pipe it held, and the
 * monitor's cleanup (image/run.c) removes the overlay, the state and, with --rm, everything.
 * The vsock sockets live in a private temporary directory removed on every path out.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/container.h>
#include <kapsel/run.h>
#include <kapsel/vm.h>

#include "../../kapsel-agent/protocol.h"
#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "image/image.h"
#include "net/net.h"
#include "oci/spec.h"
#include "run/run-vm.h"

#define ROOT_TAG	       "rootfs"
#define DEFAULT_MEM	       (512ULL << 20)
#define MIN_MEM		       (128ULL << 20)
#define DEFAULT_BOOT_TIMEOUT_S 60
/* the guest kernel: 8250 console, reset through the i8042 ends the VMM, no reboot on panic */
#define CMDLINE "console=ttyS0 reboot=k panic=-1 quiet rdinit=/init"
/* A VM container's control socket and the link to its VMM's vsock socket. */
#define CTL_SOCK    "vm.ctl"
#define VSOCK_LINK  "vm.vsock"
#define KAP_STR_(x) #x
#define KAP_STR(x)  KAP_STR_(x)

int kap_run_vm_check(const struct kapsel_run_options *o, struct kapsel_error **err)
{
	const char *no = NULL;
	bool publishes = (o->ports && *o->ports) || o->publish_all;
	enum kap_net_mode mode = kap_net_mode_of(o->net, false, publishes);
	if (mode == KAP_NET_HOST)
		no = "--net host (the guest kernel has a network stack of its own)";
	else if (mode == KAP_NET_CONTAINER || mode == KAP_NET_NS)
		no = "--net container:NAME or ns:PATH (a VM joins no host network namespace)";
	else if (mode == KAP_NET_PASTA)
		no = "--net pasta (a VM is put on a network's bridge: --net NETWORK)";
	else if (publishes && mode != KAP_NET_NETWORK)
		no = "-p/-P without --net NETWORK (the VM's ports are published on a network)";
	else if (o->privileged)
		no =
		    "--privileged (the guest kernel is the boundary; host devices do not reach it)";
	else if (o->devices && *o->devices)
		no = "--device (host devices do not reach the guest)";
	else if (o->init)
		no = "--init (kapsel-agent is the guest's PID 1)";
	else if (o->restart && strcmp(o->restart, "no"))
		no = "--restart";
	if (no)
		return kap_error_plain(err, EINVAL, "run --vm: %s cannot apply", no);
	uint64_t size;
	if (o->vm_memory && kapsel_vm_parse_size(o->vm_memory, &size) < 0)
		return kap_error_plain(err, EINVAL, "--vm-memory %s: expected a size like 512M",
				       o->vm_memory);
	if (o->vm_cpus) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(o->vm_cpus, &end, 10);
		if (errno || *end || n < 1 || n > 64)
			return kap_error_plain(err, EINVAL, "--vm-cpus %s: expected 1 to 64",
					       o->vm_cpus);
	}
	struct kap_guest_kernel k;
	int r = kap_guest_kernel_find(o->vm_kernel, &k, err);
	kap_guest_kernel_clear(&k);
	return r;
}

__attribute__((visibility("default"))) int
kapsel_image_run_vm_check(const struct kapsel_run_options *o, struct kapsel_error **err)
{
	return kap_run_vm_check(o, err);
}

/* ---- the network ---- */

int kap_run_vm_net_write(int cdirfd, const struct kap_net_result *res, struct kapsel_error **err)
{
	cleanup_free char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return kap_error(err, ENOMEM, KAP_RUN_VM_NET);
	fprintf(f, "bridge=%s\nmac=%s\nip=%s/%d\n", res->bridge, res->mac, res->ip, res->prefix);
	/* An internal network has no way out: no default route (as for a container). */
	if (!res->internal)
		fprintf(f, "gateway=%s\n", res->gateway);
	if (res->ip6[0])
		fprintf(f, "ip6=%s/%d\n", res->ip6, res->prefix6);
	if (res->ip6[0] && !res->internal)
		fprintf(f, "gateway6=%s\n", res->gateway6);
	if (fclose(f) != 0 || !text)
		return kap_error(err, ENOMEM, KAP_RUN_VM_NET);
	return kap_fs_write_atomic(cdirfd, KAP_RUN_VM_NET, text, len, 0644, false, err);
}

/* ADDR or (prefix) ADDR/N of family af: whether s is one. */
static bool addr_ok(int af, const char *s, bool prefix)
{
	char a[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (!!slash != prefix || n >= sizeof(a))
		return false;
	memcpy(a, s, n);
	a[n] = '\0';
	if (inet_pton(af, a, bin) != 1)
		return false;
	if (!prefix)
		return true;
	char *end;
	errno = 0;
	unsigned long p = strtoul(slash + 1, &end, 10);
	return !errno && end != slash + 1 && !*end && p <= (af == AF_INET ? 32u : 128u);
}

/* One "key=value" line of vm.net into n: whether it is one. */
static bool vm_net_field(struct kap_vm_net *n, const char *key, const char *v)
{
	uint8_t mac[6];
	struct {
		const char *key;
		char *dst;
		size_t size;
		int af;
		bool prefix;
	} f[] = {{"ip", n->ip, sizeof(n->ip), AF_INET, true},
		 {"gateway", n->gateway, sizeof(n->gateway), AF_INET, false},
		 {"ip6", n->ip6, sizeof(n->ip6), AF_INET6, true},
		 {"gateway6", n->gateway6, sizeof(n->gateway6), AF_INET6, false}};
	if (!strcmp(key, "bridge")) {
		if (!*v || strlen(v) >= sizeof(n->bridge) || strpbrk(v, ",/ "))
			return false;
		snprintf(n->bridge, sizeof(n->bridge), "%s", v);
		return true;
	}
	if (!strcmp(key, "mac")) {
		if (strlen(v) >= sizeof(n->mac) || kap_net_parse_mac(v, mac, NULL) < 0)
			return false;
		snprintf(n->mac, sizeof(n->mac), "%s", v);
		return true;
	}
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (strcmp(key, f[i].key))
			continue;
		if (strlen(v) >= f[i].size || !addr_ok(f[i].af, v, f[i].prefix))
			return false;
		snprintf(f[i].dst, f[i].size, "%s", v);
		return true;
	}
	return false;
}

int kap_run_vm_net_parse(char *text, const char *what, struct kap_vm_net *n,
			 struct kapsel_error **err)
{
	*n = (struct kap_vm_net){0};
	for (char *save = NULL, *l = strtok_r(text, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		char *v = strchr(l, '=');
		if (v)
			*v++ = '\0';
		if (!v || !vm_net_field(n, l, v))
			return kap_error_plain(err, EINVAL, "%s: a bad line '%.64s'", what, l);
	}
	if (!n->bridge[0] || !n->mac[0] || !n->ip[0])
		return kap_error_plain(err, EINVAL,
				       "%s: no bridge, MAC or address (its network lease was not "
				       "finished)",
				       what);
	n->on = true;
	return 0;
}

/* <cdir>/vm.net; without one, n->on is false. */
static int vm_net_load(int cdirfd, const char *cdir, struct kap_vm_net *n,
		       struct kapsel_error **err)
{
	*n = (struct kap_vm_net){0};
	cleanup_free char *text = NULL, *what = NULL;
	cleanup_error struct kapsel_error *e = NULL;
	int r = kap_fs_read_file(cdirfd, KAP_RUN_VM_NET, 4096, &text, NULL, &e);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return kap_error_plain(err, -r, "%s", e->msg);
	if (asprintf(&what, "%s/%s", cdir, KAP_RUN_VM_NET) < 0)
		return kap_error(err, ENOMEM, KAP_RUN_VM_NET);
	return kap_run_vm_net_parse(text, what, n, err);
}

/* ---- the spec the agent receives ---- */

struct buf {
	char *p;
	size_t len;
	FILE *f;
};

static void spec_add(struct buf *b, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void spec_add(struct buf *b, const char *key, const char *fmt, ...)
{
	va_list ap;
	fprintf(b->f, "%s=", key);
	va_start(ap, fmt);
	vfprintf(b->f, fmt, ap);
	va_end(ap);
	fputc('\0', b->f);
}

static bool under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(path, dir, n) && (path[n] == '/' || !path[n]);
}

/* The path fd was opened at (its /proc/self/fd link), or NULL. */
static const char *fd_target(int fd, char buf[PATH_MAX])
{
	char link[32];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, PATH_MAX - 1);
	if (n <= 0 || n >= PATH_MAX - 1)
		return NULL;
	buf[n] = '\0';
	return buf;
}

/*
 * A file the runtime would bind from the container's directory (hosts, hostname, resolv.conf)
 * as a "file=DEST:CONTENT" entry: the agent binds a copy over DEST. DEST is resolved in the
 * rootfs here (a symlink's target, confined to the rootfs), and made empty when missing, before
 * the guest mounts the rootfs (read-only with --read-only).
 */
static int spec_file(struct buf *b, int rootfd, const struct kap_mount *m,
		     struct kapsel_error **err)
{
	cleanup_free char *text = NULL;
	size_t n = 0;
	int r = kap_fs_read_file(AT_FDCWD, m->source, 1 << 16, &text, &n, err);
	if (r < 0)
		return r;
	if (memchr(text, '\0', n))
		return kap_error_plain(err, EINVAL, "run --vm: %s: a NUL byte", m->source);
	cleanup_close int fd = kap_fs_mkdir_in_root(rootfd, m->destination, 0644, true, err);
	if (fd < 0)
		return kap_error_wrap(err, "run --vm: %s", m->destination);
	char path[PATH_MAX], root[PATH_MAX];
	const char *p = fd_target(fd, path), *rp = fd_target(rootfd, root);
	size_t rl = rp ? strlen(rp) : 0;
	if (!p || !rp || strncmp(p, rp, rl) || p[rl] != '/' || strchr(p + rl, ':'))
		return kap_error_plain(err, EINVAL, "run --vm: %s: not a file in the rootfs",
				       m->destination);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return kap_error_plain(err, EINVAL, "run --vm: %s in the rootfs is not a file",
				       m->destination);
	spec_add(b, "file", "%s:%s", p + rl, text);
	return 0;
}

/*
 * config.json's process and mounts into the agent's spec; the directory bind mounts (-v,
 * --mount type=bind|volume) into virtio-fs shares of cfg; the runtime's own file binds (hosts,
 * hostname, resolv.conf in the container's directory) into file entries; the network's
 * address, gateways and MAC (net) into net entries for the guest's interface.
 */
static int make_spec(const struct kap_spec *s, const struct kap_run_vm *a,
		     const struct kap_vm_net *net, struct kapsel_vm_config *cfg, char **out,
		     size_t *len, struct kapsel_error **err)
{
	const struct kap_process *p = s->process;
	if (!p || !p->args || !p->args[0])
		return kap_error_plain(err, EINVAL, "container %s: no process to run", a->name);
	struct buf b = {0};
	if (!(b.f = open_memstream(&b.p, &b.len)))
		return kap_error(err, ENOMEM, "spec");
	for (char **v = p->args; *v; v++)
		spec_add(&b, "arg", "%s", *v);
	for (char **v = p->env; v && *v; v++)
		spec_add(&b, "env", "%s", *v);
	spec_add(&b, "cwd", "%s", p->cwd ? p->cwd : "/");
	spec_add(&b, "uid", "%u", (unsigned)p->user.uid);
	spec_add(&b, "gid", "%u", (unsigned)p->user.gid);
	if (p->user.n_additional_gids) {
		fputs("groups=", b.f);
		for (size_t i = 0; i < p->user.n_additional_gids; i++)
			fprintf(b.f, "%s%u", i ? "," : "", (unsigned)p->user.additional_gids[i]);
		fputc('\0', b.f);
	}
	for (size_t i = 0; i < p->n_rlimits; i++)
		spec_add(&b, "rlimit", "%d:%" PRIu64 ":%" PRIu64, p->rlimits[i].resource,
			 p->rlimits[i].soft, p->rlimits[i].hard);
	if (s->hostname)
		spec_add(&b, "hostname", "%s", s->hostname);
	spec_add(&b, "root", ROOT_TAG);
	if (s->root_readonly)
		spec_add(&b, "root_ro", "1");
	/* Attach clients type into a terminal (as a plain container's do). */
	if (a->interactive || (a->attach && p->terminal))
		spec_add(&b, "stdin", "1");
	if (a->hold)
		spec_add(&b, "hold", "1");
	if (p->terminal) {
		struct winsize ws;
		spec_add(&b, "tty", "1");
		if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
			spec_add(&b, "winsize", "%u:%u", ws.ws_row, ws.ws_col);
	}
	if (net && net->on) {
		spec_add(&b, "net_mac", "%s", net->mac);
		spec_add(&b, "net_ip", "%s", net->ip);
		if (net->gateway[0])
			spec_add(&b, "net_gateway", "%s", net->gateway);
		if (net->ip6[0])
			spec_add(&b, "net_ip6", "%s", net->ip6);
		if (net->gateway6[0])
			spec_add(&b, "net_gateway6", "%s", net->gateway6);
	}
	int r = 0;
	cleanup_close int rootfd = -1;
	cleanup_free char *merged = NULL;
	if (a->rootfs)
		merged = strdup(a->rootfs);
	else if (asprintf(&merged, "%s/merged", a->cdir) < 0)
		merged = NULL;
	if (!merged)
		r = kap_error(err, ENOMEM, "spec");
	else if ((rootfd = open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		r = kap_error(err, errno, "open %s", merged);
	for (size_t i = 0; i < s->n_mounts && r >= 0; i++) {
		const struct kap_mount *m = &s->mounts[i];
		struct stat st;
		/* --read-only's and --tmpfs's tmpfs: its mount point made on the host, in the
		 * upper layer, before the guest mounts the rootfs read-only. /dev's are the
		 * agent's own. */
		if (m->type && !strcmp(m->type, "tmpfs") && m->destination &&
		    !under(m->destination, "/dev")) {
			int fd = kap_fs_mkdir_in_root(rootfd, m->destination, 0755, false, err);
			if (fd < 0) {
				r = fd;
				break;
			}
			close(fd);
			spec_add(&b, "tmpfs", "%s", m->destination);
			continue;
		}
		if (m->bind && m->source && m->destination && under(m->source, a->cdir) &&
		    stat(m->source, &st) == 0 && S_ISREG(st.st_mode)) {
			r = spec_file(&b, rootfd, m, err);
			continue;
		}
		/* The agent mounts /proc, /sys and /dev itself, over whatever is below. */
		if (!m->bind || !m->source || !m->destination || under(m->source, a->cdir) ||
		    under(m->destination, "/proc") || under(m->destination, "/sys") ||
		    under(m->destination, "/dev") || stat(m->source, &st) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		bool ro = (m->flags & MS_RDONLY) || m->bind_ro;
		cleanup_free char *opt = NULL;
		char tag[16];
		snprintf(tag, sizeof(tag), "vol%u", cfg->nfs);
		if (strchr(m->source, ',')) {
			r = kap_error_plain(err, EINVAL, "run --vm: volume %s: a comma in the path",
					    m->source);
			break;
		}
		if (asprintf(&opt, "tag=%s,path=%s%s", tag, m->source, ro ? ",ro" : "") < 0) {
			r = kap_error(err, ENOMEM, "spec");
			break;
		}
		if ((r = kapsel_vm_parse_fs(opt, cfg, err)) < 0)
			break;
		spec_add(&b, "mount", "%s:%s:%s", tag, ro ? "ro" : "rw", m->destination);
	}
	if (fclose(b.f) != 0 && r >= 0)
		r = kap_error(err, ENOMEM, "spec");
	if (r >= 0 && b.len > KAP_AGENT_MAX_SPEC)
		r = kap_error_plain(err, E2BIG, "run --vm: the process spec exceeds %u bytes",
				    KAP_AGENT_MAX_SPEC);
	if (r < 0) {
		free(b.p);
		return r;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- the VM's size ---- */

static int vm_size(const struct kap_spec *s, const struct kap_run_vm *a, uint64_t *mem,
		   unsigned *cpus, struct kapsel_error **err)
{
	*mem = DEFAULT_MEM;
	*cpus = 1;
	/* --memory and --cpus became the container's cgroup limits: the VM gets that much. */
	if (s->has_resources && s->resources.has_mem_limit && s->resources.mem_limit > 0)
		*mem = (uint64_t)s->resources.mem_limit;
	if (s->has_resources && s->resources.has_cpu_quota && s->resources.cpu_quota > 0 &&
	    s->resources.cpu_period > 0)
		*cpus = (unsigned)((s->resources.cpu_quota + (int64_t)s->resources.cpu_period - 1) /
				   (int64_t)s->resources.cpu_period);
	if (a->memory && kapsel_vm_parse_size(a->memory, mem) < 0)
		return kap_error_plain(err, EINVAL, "--vm-memory %s: expected a size", a->memory);
	if (a->cpus)
		*cpus = (unsigned)strtoul(a->cpus, NULL, 10);
	if (*mem < MIN_MEM)
		*mem = MIN_MEM; /* the guest kernel itself needs this much */
	*mem = (*mem + (2u << 20) - 1) & ~(uint64_t)((2u << 20) - 1);
	if (*cpus < 1)
		*cpus = 1;
	return 0;
}

/* ---- the relay ---- */

static bool write_all(int fd, const void *buf, size_t n)
{
	return kap_fs_write_all(fd, buf, n) == 0;
}

static bool read_all(int fd, void *buf, size_t n)
{
	return kap_fs_read_full(fd, buf, n);
}

static bool send_frame(int fd, unsigned type, const void *data, size_t len)
{
	uint8_t hdr[KAP_AGENT_HDR];
	return kap_agent_frame_encode(hdr, type, len) == 0 && write_all(fd, hdr, sizeof(hdr)) &&
	       (!len || write_all(fd, data, len));
}

/* The last lines of the console log, joined by " | " (the error stays one line). */
static char *console_tail(const char *path)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	char buf[1024];
	ssize_t n = 0;
	if (fd >= 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
		n = pread(fd, buf, sizeof(buf) - 1, from);
	}
	if (n <= 0)
		return strdup("(nothing)");
	buf[n] = '\0';
	/* At most the last 8 lines, control characters dropped. */
	char *lines[8] = {0};
	size_t nl = 0;
	for (char *save = NULL, *l = strtok_r(buf, "\r\n", &save); l;
	     l = strtok_r(NULL, "\r\n", &save)) {
		for (char *c = l; *c; c++)
			if ((unsigned char)*c < 0x20)
				*c = ' ';
		if (nl == 8)
			memmove(lines, lines + 1, sizeof(lines[0]) * 7), nl--;
		lines[nl++] = l;
	}
	char *out = NULL;
	size_t olen = 0;
	FILE *f = open_memstream(&out, &olen);
	if (!f)
		return NULL;
	for (size_t i = 0; i < nl; i++)
		fprintf(f, "%s%s", i ? " | " : "", lines[i]);
	fclose(f);
	return out;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct vmm {
	pid_t pid;
	int errfd; /* the child's error text; EOF when it has ended */
	char tmpdir[64];
	char console[PATH_MAX];
};

/* Stops the VMM (SIGKILL after grace_ms) and reaps it; removes the socket directory. */
static void vmm_end(struct vmm *v, int grace_ms)
{
	if (v->pid > 0) {
		struct pollfd p = {.fd = v->errfd, .events = POLLIN};
		int64_t end = now_ms() + grace_ms;
		char sink[512];
		while (grace_ms > 0 && now_ms() < end && poll(&p, 1, 50) >= 0)
			if (p.revents && read(v->errfd, sink, sizeof(sink)) <= 0)
				break;
		kill(v->pid, SIGKILL);
		while (waitpid(v->pid, NULL, 0) < 0 && errno == EINTR)
			;
		v->pid = -1;
	}
	if (v->errfd >= 0)
		close(v->errfd);
	v->errfd = -1;
	if (v->tmpdir[0]) {
		char sock[128];
		snprintf(sock, sizeof(sock), "%s/vsock_%d", v->tmpdir, KAP_AGENT_PORT);
		unlink(sock);
		snprintf(sock, sizeof(sock), "%s/vsock", v->tmpdir);
		unlink(sock);
		rmdir(v->tmpdir);
		v->tmpdir[0] = '\0';
	}
}

static int vmm_start(struct vmm *v, const struct kapsel_vm_config *cfg, int cwdfd,
		     struct kapsel_error **err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return kap_error(err, errno, "pipe");
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return kap_error(err, errno, "fork the VMM");
	}
	if (pid == 0) {
		close(pipefd[0]);
		/* The VMM ends with its monitor: a monitor killed outright (stop's last resort)
		 * leaves no VM running. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() == 1)
			_exit(125);
		/* sockets_in_cdir: cfg's vsock path is relative to the container's directory. */
		if (cwdfd >= 0 && fchdir(cwdfd) < 0)
			_exit(125);
		/* Nothing of the monitor's stays open here (the VMM never execs, so O_CLOEXEC does
		 * not apply): its report pipe to `run -d` above all, whose end run -d waits for,
		 * and the control socket and the log. The error pipe becomes fd 3. */
		if (dup2(pipefd[1], 3) < 0 || syscall(SYS_close_range, 4, ~0U, 0) < 0)
			_exit(125);
		pipefd[1] = 3;
		/* The monitor forwards signals to the guest's process; the VMM takes none of ours
		 * (SIGINT/SIGTERM would stop the guest at once). */
		cleanup_error struct kapsel_error *e = NULL;
		int r = kapsel_vm_run(cfg, &e);
		if (r < 0)
			dprintf(pipefd[1], "%s", e ? e->msg : strerror(-r));
		_exit(r < 0 ? 125 : r & 0xff);
	}
	close(pipefd[1]);
	v->pid = pid;
	v->errfd = pipefd[0];
	return 0;
}

/* Why the VMM ended before the process did: its own error, or its exit status. */
static int vmm_died(struct vmm *v, const char *when, struct kapsel_error **err)
{
	/* Its error text, up to its end (EOF); one that lingers 5 s is killed. */
	char msg[512] = "";
	size_t n = 0;
	int64_t end = now_ms() + 5000;
	struct pollfd p = {.fd = v->errfd, .events = POLLIN};
	while (now_ms() < end && poll(&p, 1, 100) >= 0) {
		if (!p.revents)
			continue;
		ssize_t k = read(v->errfd, msg + n, sizeof(msg) - 1 - n);
		if (k <= 0 || (n += (size_t)k) == sizeof(msg) - 1)
			break;
	}
	msg[n] = '\0';
	int st = 0;
	kill(v->pid, SIGKILL);
	while (waitpid(v->pid, &st, 0) < 0 && errno == EINTR)
		;
	v->pid = -1;
	cleanup_free char *tail = console_tail(v->console);
	return kap_error_plain(err, EIO,
			       "run --vm: the VM ended %s%s%s (status %d); its console "
			       "ended: %s",
			       when, *msg ? ": " : "", msg,
			       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
			       tail ? tail : "?");
}

static int boot_timeout_ms(void)
{
	const char *s = getenv("KAPSEL_VM_BOOT_TIMEOUT");
	long t = s ? strtol(s, NULL, 10) : 0;
	return (int)((t > 0 && t < 3600 ? t : DEFAULT_BOOT_TIMEOUT_S) * 1000);
}

/* Waits for the agent's connection: the fd, or -errno with the console's last lines. */
static int await_agent(struct vmm *v, int lfd, const char *kernel, struct kapsel_error **err)
{
	int timeout = boot_timeout_ms();
	int64_t end = now_ms() + timeout;
	for (;;) {
		int64_t left = end - now_ms();
		if (left <= 0) {
			cleanup_free char *tail = console_tail(v->console);
			return kap_error_plain(
			    err, ETIMEDOUT,
			    "run --vm: guest kernel %s did not start kapsel-agent "
			    "within %d s (KAPSEL_VM_BOOT_TIMEOUT); its console "
			    "ended: %s",
			    kernel, timeout / 1000, tail ? tail : "?");
		}
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
				      {.fd = v->errfd, .events = POLLIN}};
		if (poll(p, 2, (int)left) < 0 && errno != EINTR)
			return kap_error(err, errno, "poll");
		if (p[0].revents) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0)
				return c;
		}
		if (p[1].revents)
			return vmm_died(v, "before its agent connected", err);
	}
}

/* The process's output: ours, or the container's log (detached) and its attach clients. */
static void output(const struct kap_run_vm *a, bool is_err, const void *buf, size_t len)
{
	if (a->logfd >= 0)
		kap_log_record(a->logfd, is_err, buf, len);
	else
		write_all(is_err ? STDERR_FILENO : STDOUT_FILENO, buf, len);
	if (a->attach)
		a->attach->output(a->attach->ctx, is_err, buf, len);
}

struct kap_run_vm_io {
	int conn;
	bool tty;
};

void kap_run_vm_input(struct kap_run_vm_io *io, const void *buf, size_t len)
{
	const char *p = buf;
	while (io->tty && len) {
		size_t n = len < KAP_AGENT_MAX_DATA ? len : KAP_AGENT_MAX_DATA;
		send_frame(io->conn, KAP_AGENT_STDIN, p, n);
		p += n;
		len -= n;
	}
}

void kap_run_vm_resize(struct kap_run_vm_io *io, unsigned rows, unsigned cols)
{
	uint8_t sz[4] = {(uint8_t)rows, (uint8_t)(rows >> 8), (uint8_t)cols, (uint8_t)(cols >> 8)};
	if (io->tty)
		send_frame(io->conn, KAP_AGENT_RESIZE, sz, sizeof(sz));
}

#define ATTACH_FDS 16

bool kap_run_vm_tty(const struct kap_run_vm_io *io)
{
	return io->tty;
}

static int relay(struct vmm *v, int conn, int ctl, const struct kap_run_vm *a,
		 struct kapsel_error **err)
{
	int sfd = signalfd(-1, &a->signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return kap_error(err, errno, "signalfd");
	int in = a->interactive ? STDIN_FILENO : -1;
	static uint8_t buf[KAP_AGENT_MAX_DATA];
	/* -it: our terminal in raw mode, so the guest's line discipline is the only one. */
	struct termios saved;
	bool raw = false;
	if (a->tty && in >= 0 && isatty(in) && tcgetattr(in, &saved) == 0) {
		struct termios t = saved;
		cfmakeraw(&t);
		raw = tcsetattr(in, TCSANOW, &t) == 0;
	}
	int r = 0;
	bool done = false, lost = false;
	struct kap_run_vm_io io = {.conn = conn, .tty = a->tty};
	while (!done) {
		struct pollfd p[5 + ATTACH_FDS] = {{.fd = conn, .events = POLLIN},
						   {.fd = in, .events = POLLIN},
						   {.fd = sfd, .events = POLLIN},
						   {.fd = v->errfd, .events = POLLIN},
						   {.fd = ctl, .events = POLLIN}};
		size_t na = a->attach ? a->attach->fds(a->attach->ctx, p + 5, ATTACH_FDS) : 0;
		if (poll(p, (nfds_t)(5 + na), -1) < 0) {
			if (errno == EINTR)
				continue;
			r = kap_error(err, errno, "poll");
			break;
		}
		if (na)
			a->attach->ready(a->attach->ctx, p + 5, na, &io);
		if (p[2].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				struct winsize ws;
				if (si.ssi_signo == SIGWINCH) {
					uint8_t sz[4];
					if (!a->tty || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
						continue;
					sz[0] = (uint8_t)ws.ws_row;
					sz[1] = (uint8_t)(ws.ws_row >> 8);
					sz[2] = (uint8_t)ws.ws_col;
					sz[3] = (uint8_t)(ws.ws_col >> 8);
					send_frame(conn, KAP_AGENT_RESIZE, sz, sizeof(sz));
					continue;
				}
				uint8_t sig[4];
				kap_agent_put_u32(sig, si.ssi_signo);
				send_frame(conn, KAP_AGENT_SIGNAL, sig, sizeof(sig));
			}
		}
		if (p[4].revents) {
			/* kap_run_vm_signal: one u32 LE signal number a datagram. */
			uint8_t sig[4];
			while (recv(ctl, sig, sizeof(sig), MSG_DONTWAIT) == (ssize_t)sizeof(sig)) {
				uint32_t n = kap_agent_get_u32(sig);
				if (n >= 1 && n < (uint32_t)SIGRTMAX + 1)
					send_frame(conn, KAP_AGENT_SIGNAL, sig, sizeof(sig));
			}
		}
		if (p[1].revents) {
			ssize_t k = read(in, buf, sizeof(buf));
			if (k < 0 && errno == EINTR)
				continue;
			if (k > 0) {
				send_frame(conn, KAP_AGENT_STDIN, buf, (size_t)k);
			} else {
				send_frame(conn, KAP_AGENT_STDIN_EOF, NULL, 0);
				in = -1;
			}
		}
		if (p[0].revents) {
			uint8_t hdr[KAP_AGENT_HDR];
			unsigned type;
			uint32_t len;
			if (!read_all(conn, hdr, sizeof(hdr))) {
				done = lost = true;
				break;
			}
			if (kap_agent_frame_decode(hdr, &type, &len) < 0 ||
			    !read_all(conn, buf, len)) {
				r = kap_error_plain(
				    err, EPROTO, "run --vm: a malformed frame from kapsel-agent");
				break;
			}
			if (type == KAP_AGENT_STDOUT || type == KAP_AGENT_STDERR)
				output(a, type == KAP_AGENT_STDERR, buf, len);
			if (type == KAP_AGENT_EXIT) {
				r = (int)(kap_agent_get_u32(buf) & 0xff);
				done = true;
			} else if (type == KAP_AGENT_ERROR) {
				r = kap_error_plain(err, EIO, "run --vm: in the guest: %.*s",
						    (int)len, (char *)buf);
				done = true;
			}
		}
		if (!done && p[3].revents)
			done = lost = true;
	}
	close(sfd);
	if (raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (lost && v->pid <= 0) /* exec: the VM is its monitor's, not ours */
		return kap_error_plain(err, EIO,
				       "exec in container %s: kapsel-agent closed the connection "
				       "without the exit status (the VM ended?)",
				       a->name);
	if (lost)
		return vmm_died(v, "without the process's exit status", err);
	return r;
}

/* <cdir>/vm.ctl, named through /proc/self/fd: sun_path is short, a store's path need not be. */
static void ctl_path(int cdirfd, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/" CTL_SOCK, cdirfd);
}

static int control_open(const struct kap_run_vm *a, int *cdirfd, int *ctl,
			struct kapsel_error **err)
{
	*cdirfd = open(a->cdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*cdirfd < 0)
		return kap_error(err, errno, "open %s", a->cdir);
	struct sockaddr_un sa;
	ctl_path(*cdirfd, &sa);
	unlinkat(*cdirfd, CTL_SOCK, 0);
	unlinkat(*cdirfd, VSOCK_LINK, 0);
	*ctl = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (*ctl < 0 || bind(*ctl, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return kap_error(err, errno, "control socket %s/%s", a->cdir, CTL_SOCK);
	return 0;
}

int kap_run_vm_signal(int cdirfd, const char *name, int sig, struct kapsel_error **err)
{
	struct sockaddr_un sa;
	ctl_path(cdirfd, &sa);
	cleanup_close int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	uint8_t b[4];
	kap_agent_put_u32(b, (uint32_t)sig);
	if (fd < 0)
		return kap_error(err, errno, "socket");
	if (sendto(fd, b, sizeof(b), 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)sizeof(b))
		return 0;
	if (errno == ENOENT || errno == ECONNREFUSED)
		return kap_error_plain(err, ESRCH, "container %s: its VM is not running", name);
	return kap_error(err, errno, "container %s: signal its VM", name);
}

static void spec_freep(struct kap_spec **s)
{
	if (*s)
		kap_spec_free(*s);
}

int kap_run_vm(const struct kap_run_vm *given, struct kapsel_error **err)
{
	__attribute__((cleanup(spec_freep))) struct kap_spec *s = NULL;
	int r = kap_spec_load(given->cdir, &s, err);
	if (r < 0)
		return r;
	/* A terminal is config.json's to say (start has no -t flag to pass). */
	struct kap_run_vm copy = *given;
	const struct kap_run_vm *a = &copy;
	copy.tty = given->tty || (s->process && s->process->terminal);
	struct kap_guest_kernel k;
	if ((r = kap_guest_kernel_find(a->kernel, &k, err)) < 0) {
		kap_guest_kernel_clear(&k);
		return r;
	}
	struct kapsel_vm_config cfg = {0};
	cleanup_free char *initrd = NULL, *spec = NULL, *merged = NULL, *rootopt = NULL;
	size_t spec_len = 0;
	struct vmm v = {.pid = -1, .errfd = -1};
	cleanup_close int lfd = -1, conn = -1, cdirfd = -1, ctl = -1, cfd = -1;
	struct kap_vm_net net = {0};
	r = kap_initramfs_get(a->store, &k, &initrd, err);
	if (r < 0)
		goto out;
	if ((a->rootfs ? !(merged = strdup(a->rootfs))
		       : asprintf(&merged, "%s/merged", a->cdir) < 0) ||
	    asprintf(&rootopt, "tag=" ROOT_TAG ",path=%s%s", merged ? merged : "",
		     s->root_readonly ? ",ro" : "") < 0) {
		r = kap_error(err, ENOMEM, "run --vm");
		goto out;
	}
	/* On a network: a card on a tap that the VMM makes on its bridge, with the leased MAC.
	 * The tap is not persistent: whatever ends the VMM, the kernel removes it with the
	 * VMM's last fd (net/tap.c). */
	cfd = open(a->cdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0) {
		r = kap_error(err, errno, "open %s", a->cdir);
		goto out;
	}
	if ((r = vm_net_load(cfd, a->cdir, &net, err)) < 0)
		goto out;
	if (net.on) {
		char opt[64];
		snprintf(opt, sizeof(opt), "bridge=%s,mac=%s", net.bridge, net.mac);
		if ((r = kapsel_vm_parse_net(opt, &cfg, err)) < 0)
			goto out;
	}
	if ((r = kapsel_vm_parse_fs(rootopt, &cfg, err)) < 0 ||
	    (r = make_spec(s, a, &net, &cfg, &spec, &spec_len, err)) < 0 ||
	    (r = vm_size(s, a, &cfg.mem_size, &cfg.cpus, err)) < 0)
		goto out;
	snprintf(v.console, sizeof(v.console), "%s/console.log", a->cdir);
	/* kill, stop and exec reach a running VM container, foreground or detached, here. */
	if ((r = control_open(a, &cdirfd, &ctl, err)) < 0)
		goto out;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (a->sockets_in_cdir) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/" VSOCK_LINK "_%d",
			 cdirfd, KAP_AGENT_PORT);
		unlinkat(cdirfd, VSOCK_LINK "_" KAP_STR(KAP_AGENT_PORT), 0);
	} else {
		snprintf(v.tmpdir, sizeof(v.tmpdir), "/tmp/kapsel-vm-XXXXXX");
		if (!mkdtemp(v.tmpdir)) {
			v.tmpdir[0] = '\0';
			r = kap_error(err, errno, "create a directory in /tmp");
			goto out;
		}
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vsock_%d", v.tmpdir, KAP_AGENT_PORT);
	}
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0) {
		r = kap_error(err, errno, "listen on %s", sa.sun_path);
		goto out;
	}
	cfg.kernel = strdup(k.path);
	cfg.initrd = strdup(initrd);
	cfg.cmdline = strdup(CMDLINE);
	cfg.console = KAPSEL_VM_CONSOLE_FILE;
	cfg.console_path = strdup(v.console);
	cfg.vsock_cid = 3;
	if (a->sockets_in_cdir)
		cfg.vsock_path = strdup(VSOCK_LINK);
	else if (asprintf(&cfg.vsock_path, "%s/vsock", v.tmpdir) < 0)
		cfg.vsock_path = NULL;
	if (!cfg.kernel || !cfg.initrd || !cfg.cmdline || !cfg.console_path || !cfg.vsock_path) {
		r = kap_error(err, ENOMEM, "run --vm");
		goto out;
	}
	/* A fresh console log per run: the timeout message quotes this boot's lines only. */
	unlink(v.console);
	if ((r = vmm_start(&v, &cfg, a->sockets_in_cdir ? cdirfd : -1, err)) < 0)
		goto out;
	/* exec connects here (through the link: the socket's own path is in /tmp, short
	 * enough for sun_path wherever the store is). */
	if (!a->sockets_in_cdir && symlinkat(cfg.vsock_path, cdirfd, VSOCK_LINK) < 0) {
		r = kap_error(err, errno, "link %s/%s", a->cdir, VSOCK_LINK);
		goto out;
	}
	if ((conn = await_agent(&v, lfd, k.path, err)) < 0) {
		r = conn;
		goto out;
	}
	if (!send_frame(conn, KAP_AGENT_SPEC, spec, spec_len)) {
		r = kap_error(err, errno ? errno : EPIPE,
			      "run --vm: send the spec to kapsel-agent");
		goto out;
	}
	if (a->hold && (r = a->hold(a->ctx, conn, err)) < 0)
		goto out;
	if (a->started && (r = a->started(a->ctx, err)) < 0)
		goto out;
	r = relay(&v, conn, ctl, a, err);
	if (r >= 0) {
		/* The agent powers the VM off once we close: give it the time to. */
		close(conn);
		conn = -1;
		vmm_end(&v, 10000);
	}
out:
	vmm_end(&v, 0);
	if (cdirfd >= 0) {
		unlinkat(cdirfd, VSOCK_LINK, 0);
		unlinkat(cdirfd, CTL_SOCK, 0);
		if (a->sockets_in_cdir)
			unlinkat(cdirfd, VSOCK_LINK "_" KAP_STR(KAP_AGENT_PORT), 0);
	}
	kapsel_vm_config_clear(&cfg);
	kap_guest_kernel_clear(&k);
	return r;
}

/* ---- exec ---- */

/* The exec's spec: its argv and user, config.json's environment under -e's, its cwd. */
static int exec_spec(const char *cdir, const struct kap_spec *s,
		     const struct kapsel_exec_options *o, char **out, size_t *len,
		     struct kapsel_error **err)
{
	const struct kap_process *p = s->process;
	struct kap_exec_user u = {0};
	bool have_user = false;
	if (o->user) {
		cleanup_free char *merged = NULL;
		if (asprintf(&merged, "%s/merged", cdir) < 0)
			return kap_error(err, ENOMEM, "exec");
		cleanup_close int rootfd = open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rootfd < 0)
			return kap_error(err, errno, "open %s", merged);
		int r = kap_bundle_resolve_user(rootfd, o->user, &u, err);
		if (r < 0)
			return kap_error_wrap(err, "--user %s", o->user);
		have_user = true;
	}
	struct buf b = {0};
	if (!(b.f = open_memstream(&b.p, &b.len))) {
		kap_exec_user_clear(&u);
		return kap_error(err, ENOMEM, "exec");
	}
	for (char *const *v = o->args; *v; v++)
		spec_add(&b, "arg", "%s", *v);
	for (char **v = p && p->env ? p->env : NULL; v && *v; v++)
		spec_add(&b, "env", "%s", *v);
	for (char *const *v = o->env; v && *v; v++)
		spec_add(&b, "env", "%s", *v);
	spec_add(&b, "cwd", "%s", o->cwd ? o->cwd : p && p->cwd ? p->cwd : "/");
	spec_add(&b, "uid", "%u", have_user ? u.uid : p ? (unsigned)p->user.uid : 0u);
	spec_add(&b, "gid", "%u", have_user ? u.gid : p ? (unsigned)p->user.gid : 0u);
	if (have_user && u.n_groups) {
		fputs("groups=", b.f);
		for (size_t i = 0; i < u.n_groups; i++)
			fprintf(b.f, "%s%u", i ? "," : "", (unsigned)u.groups[i]);
		fputc('\0', b.f);
	}
	kap_exec_user_clear(&u);
	spec_add(&b, "root", ROOT_TAG);
	spec_add(&b, "stdin", "1");
	if (o->tty) {
		struct winsize ws;
		spec_add(&b, "tty", "1");
		if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
			spec_add(&b, "winsize", "%u:%u", ws.ws_row, ws.ws_col);
	}
	if (fclose(b.f) != 0) {
		free(b.p);
		return kap_error(err, ENOMEM, "exec");
	}
	if (b.len > KAP_AGENT_MAX_SPEC) {
		free(b.p);
		return kap_error_plain(err, E2BIG, "exec: the process spec exceeds %u bytes",
				       KAP_AGENT_MAX_SPEC);
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* The agent's exec port, through the VMM's vsock socket (vmm/virtio/vsock.c: CONNECT). */
static int exec_connect(const char *cdir, const char *name, struct kapsel_error **err)
{
	cleanup_close int cdirfd = open(cdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cdirfd < 0)
		return kap_error(err, errno, "open %s", cdir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/" VSOCK_LINK, cdirfd);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kap_error(err, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return kap_error_plain(err, e == ENOENT || e == ECONNREFUSED ? ESRCH : e,
				       "container %s: its VM is not running (%s/%s: %s)", name,
				       cdir, VSOCK_LINK, strerror(e));
	}
	char line[32];
	int n = snprintf(line, sizeof(line), "CONNECT %d\n", KAP_AGENT_EXEC_PORT);
	size_t got = 0;
	/* The answer, "OK <port>\n", byte by byte: the agent's frames follow it at once. */
	bool ok = write_all(fd, line, (size_t)n);
	while (ok && got < sizeof(line) - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0 || read(fd, line + got, 1) != 1) {
			ok = false;
			break;
		}
		if (line[got++] == '\n')
			break;
	}
	line[got] = '\0';
	if (!ok || strncmp(line, "OK ", 3)) {
		close(fd);
		return kap_error_plain(err, ECONNREFUSED,
				       "container %s: kapsel-agent does not answer on vsock port "
				       "%d",
				       name, KAP_AGENT_EXEC_PORT);
	}
	return fd;
}

static int exec_relay(int fd, const char *name, const char *cdir, const char *spec, size_t len,
		      bool tty, struct kapsel_error **err);

int kap_run_vm_exec(const char *cdir, const char *name, const struct kapsel_exec_options *o,
		    struct kapsel_error **err)
{
	if (o->process_file || o->detach || o->console_socket || o->pid_file || o->preserve_fds ||
	    (o->caps && *o->caps) || o->no_new_privs)
		return kap_error_plain(err, EINVAL,
				       "exec in VM container %s: only a command, -i, -t, -e, -u "
				       "and --cwd apply",
				       name);
	/* The VM first: a container whose VM is gone is said to be so, whatever else. */
	cleanup_close int conn = exec_connect(cdir, name, err);
	if (conn < 0)
		return conn;
	__attribute__((cleanup(spec_freep))) struct kap_spec *s = NULL;
	int r = kap_spec_load(cdir, &s, err);
	if (r < 0)
		return r;
	cleanup_free char *spec = NULL;
	size_t len = 0;
	if ((r = exec_spec(cdir, s, o, &spec, &len, err)) < 0)
		return r;
	return exec_relay(steal_fd(conn), name, cdir, spec, len, o->tty, err);
}

int kap_run_vm_exec_spec(const char *cdir, const char *name, const char *spec, size_t len, bool tty,
			 struct kapsel_error **err)
{
	int conn = exec_connect(cdir, name, err);
	if (conn < 0)
		return conn;
	return exec_relay(conn, name, cdir, spec, len, tty, err);
}

/* Sends an exec's spec on conn (ours to close) and relays until its EXIT. */
static int exec_relay(int fd, const char *name, const char *cdir, const char *spec, size_t len,
		      bool tty, struct kapsel_error **err)
{
	cleanup_close int conn = fd;
	int r;
	if (!send_frame(conn, KAP_AGENT_SPEC, spec, len))
		return kap_error(err, errno ? errno : EPIPE, "exec: send the spec to kapsel-agent");
	/* Our signals go to the process, as kapsel exec's do through the runtime. */
	static const int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	struct kap_run_vm a = {
	    .name = name, .cdir = cdir, .interactive = true, .tty = tty, .logfd = -1};
	sigset_t old;
	sigemptyset(&a.signals);
	for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
		sigaddset(&a.signals, fwd[i]);
	sigprocmask(SIG_BLOCK, &a.signals, &old);
	struct vmm v = {.pid = -1, .errfd = -1};
	signal(SIGPIPE, SIG_IGN);
	r = relay(&v, conn, -1, &a, err);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return r;
}
