/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kapsel-agent: PID 1 of a `kapsel run --vm` guest, /init of the initramfs kapsel makes
 * (run/initramfs.c). It loads the modules kapsel put beside it, connects to the host over
 * vsock, receives the process spec (protocol.h, docs/vm.md), mounts the container's rootfs and
 * volumes (virtio-fs shares), starts the process chrooted there, relays its stdio, signals and
 * exit status, and powers the VM off when it ends.
 *
 * The host is trusted (it made the VM), but the agent still bounds what it reads: every frame
 * by protocol.h's limits, the spec's entries by count. Any failure before the process runs is
 * reported as an ERROR frame when the connection exists, on the console otherwise, and the
 * guest powers off: PID 1 must never exit (the kernel would panic).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/module.h>
#include <linux/vm_sockets.h>

#include "net.h"
#include "protocol.h"

#define MODULES_DIR "/lib/kapsel-modules"
#define NEWROOT	    "/newroot"
#define MAX_MOUNTS  64
#define MAX_RLIMITS 16
#define MAX_GROUPS  64
#define MAX_FILES   16
/* Where the copies of the host's files (file= entries) are kept, in the initramfs. */
#define FILES_DIR "/kapsel-files"

struct spec {
	char *args[KAP_AGENT_MAX_ITEMS + 1];
	size_t nargs;
	char *env[KAP_AGENT_MAX_ITEMS + 1];
	size_t nenv;
	const char *cwd, *hostname, *root;
	bool root_ro, stdin_open, tty, hold;
	unsigned short rows, cols;
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_GROUPS];
	size_t ngroups;
	struct {
		const char *tag, *dest;
		bool ro;
	} mounts[MAX_MOUNTS];
	size_t nmounts;
	const char *tmpfs[MAX_MOUNTS];
	size_t ntmpfs;
	struct {
		int res;
		struct rlimit lim;
	} rlimits[MAX_RLIMITS];
	size_t nrlimits;
	struct {
		const char *dest, *text;
	} files[MAX_FILES];
	size_t nfiles;
	struct agent_net net;
};

static int conn = -1;
/* In an exec handler (a child of PID 1 serving one `kapsel exec`): a failure ends the handler,
 * not the VM. */
static bool in_exec;
static struct spec spec;
static char spec_buf[KAP_AGENT_MAX_SPEC + 1];

static __attribute__((noreturn)) void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Without ACPI power-off the kernel halts; reboot=k on kapsel's cmdline resets instead,
	 * which ends the VMM as well. */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

static bool write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

static bool read_all(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

static bool send_frame(unsigned type, const void *data, size_t len)
{
	uint8_t hdr[KAP_AGENT_HDR];
	if (conn < 0 || kap_agent_frame_encode(hdr, type, len) < 0)
		return false;
	return write_all(conn, hdr, sizeof(hdr)) && (!len || write_all(conn, data, len));
}

/* A setup failure: to the host when it listens, to the console always; then power off. */
static __attribute__((noreturn, format(printf, 1, 2))) void fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	dprintf(STDERR_FILENO, "kapsel-agent: %s\n", msg);
	send_frame(KAP_AGENT_ERROR, msg, (size_t)n);
	if (in_exec)
		_exit(1);
	power_off();
}

static void mount_or_fail(const char *src, const char *dst, const char *type, unsigned long flags,
			  const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) < 0)
		fail("mount %s (%s) on %s: %s", src, type, dst, strerror(errno));
}

/*
 * The modules kapsel copied into the initramfs, named NN-NAME.ko so that the directory's sorted
 * order is their dependency order. EEXIST: built in, or loaded already.
 */
static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static void load_modules(void)
{
	struct dirent **list = NULL;
	int n = scandir(MODULES_DIR, &list, NULL, by_name);
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX];
		if (list[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), MODULES_DIR "/%s", list[i]->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				fail("open %s: %s", path, strerror(errno));
			if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
				fail("load module %s: %s", path, strerror(errno));
			close(fd);
		}
		free(list[i]);
	}
	free(list);
}

/* The host listens once the VMM runs; the vsock device may still be probing: retry ~10 s. */
static void connect_host(void)
{
	struct sockaddr_vm sa = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = KAP_AGENT_PORT};
	for (int i = 0; i < 200; i++) {
		int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			conn = fd;
			return;
		}
		if (fd >= 0)
			close(fd);
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	fail("connect to the host (vsock CID 2 port %d): %s", KAP_AGENT_PORT, strerror(errno));
}

static unsigned long long number(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || (*end && *end != ':' && *end != ','))
		fail("spec: %s: bad number '%s'", what, s);
	return v;
}

static void parse_spec(size_t len)
{
	size_t pos = 0, count = 0, keylen;
	const char *key, *value;
	int r;
	spec.uid = 0;
	spec.gid = 0;
	while ((r = kap_agent_spec_next(spec_buf, len, &pos, &count, &key, &keylen, &value)) > 0) {
		char *v = (char *)value;
		if (kap_agent_key_is(key, keylen, "arg")) {
			spec.args[spec.nargs++] = v;
		} else if (kap_agent_key_is(key, keylen, "env")) {
			spec.env[spec.nenv++] = v;
		} else if (kap_agent_key_is(key, keylen, "cwd")) {
			spec.cwd = v;
		} else if (kap_agent_key_is(key, keylen, "hostname")) {
			spec.hostname = v;
		} else if (kap_agent_key_is(key, keylen, "root")) {
			spec.root = v;
		} else if (kap_agent_key_is(key, keylen, "root_ro")) {
			spec.root_ro = !strcmp(v, "1");
		} else if (kap_agent_key_is(key, keylen, "tty")) {
			spec.tty = !strcmp(v, "1");
		} else if (kap_agent_key_is(key, keylen, "winsize")) {
			char *c = strchr(v, ':');
			if (!c)
				fail("spec: bad winsize '%s'", v);
			spec.rows = (unsigned short)number(v, "winsize");
			spec.cols = (unsigned short)number(c + 1, "winsize");
		} else if (kap_agent_key_is(key, keylen, "hold")) {
			spec.hold = !strcmp(v, "1");
		} else if (kap_agent_key_is(key, keylen, "stdin")) {
			spec.stdin_open = !strcmp(v, "1");
		} else if (kap_agent_key_is(key, keylen, "uid")) {
			spec.uid = (uid_t)number(v, "uid");
		} else if (kap_agent_key_is(key, keylen, "gid")) {
			spec.gid = (gid_t)number(v, "gid");
		} else if (kap_agent_key_is(key, keylen, "groups")) {
			for (char *p = v; *p;) {
				if (spec.ngroups == MAX_GROUPS)
					fail("spec: more than %d groups", MAX_GROUPS);
				spec.groups[spec.ngroups++] = (gid_t)number(p, "groups");
				p += strcspn(p, ",");
				p += *p == ',';
			}
		} else if (kap_agent_key_is(key, keylen, "mount")) {
			/* TAG:ro|rw:DEST */
			char *c1 = strchr(v, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			if (!c2 || spec.nmounts == MAX_MOUNTS)
				fail("spec: bad or too many mounts at '%s'", v);
			*c1 = *c2 = '\0';
			spec.mounts[spec.nmounts].tag = v;
			spec.mounts[spec.nmounts].ro = !strcmp(c1 + 1, "ro");
			spec.mounts[spec.nmounts++].dest = c2 + 1;
		} else if (kap_agent_key_is(key, keylen, "tmpfs")) {
			if (spec.ntmpfs == MAX_MOUNTS)
				fail("spec: more than %d tmpfs", MAX_MOUNTS);
			spec.tmpfs[spec.ntmpfs++] = v;
		} else if (kap_agent_key_is(key, keylen, "file")) {
			/* DEST:CONTENT, DEST absolute and without ':' */
			char *c = strchr(v, ':');
			if (!c || v[0] != '/' || spec.nfiles == MAX_FILES)
				fail("spec: bad or too many files at '%.64s'", v);
			*c = '\0';
			spec.files[spec.nfiles].dest = v;
			spec.files[spec.nfiles++].text = c + 1;
		} else if (kap_agent_key_is(key, keylen, "net_mac")) {
			spec.net.mac = v;
		} else if (kap_agent_key_is(key, keylen, "net_ip")) {
			spec.net.ip = v;
		} else if (kap_agent_key_is(key, keylen, "net_gateway")) {
			spec.net.gateway = v;
		} else if (kap_agent_key_is(key, keylen, "net_ip6")) {
			spec.net.ip6 = v;
		} else if (kap_agent_key_is(key, keylen, "net_gateway6")) {
			spec.net.gateway6 = v;
		} else if (kap_agent_key_is(key, keylen, "rlimit")) {
			char *c1 = strchr(v, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			if (!c2 || spec.nrlimits == MAX_RLIMITS)
				fail("spec: bad or too many rlimits at '%s'", v);
			spec.rlimits[spec.nrlimits].res = (int)number(v, "rlimit");
			spec.rlimits[spec.nrlimits].lim.rlim_cur = number(c1 + 1, "rlimit");
			spec.rlimits[spec.nrlimits++].lim.rlim_max = number(c2 + 1, "rlimit");
		} else {
			fail("spec: unknown key '%.*s'", (int)keylen, key);
		}
	}
	if (r < 0)
		fail("spec: malformed entry at offset %zu", pos);
	if (!spec.nargs)
		fail("spec: no arg");
	if (!spec.root)
		fail("spec: no root");
	if (!!spec.net.mac != !!spec.net.ip)
		fail("spec: net_mac and net_ip go together");
}

static void receive_spec(void)
{
	uint8_t hdr[KAP_AGENT_HDR];
	unsigned type;
	uint32_t len;
	if (!read_all(conn, hdr, sizeof(hdr)))
		fail("read the spec: %s", strerror(errno ? errno : EPIPE));
	if (kap_agent_frame_decode(hdr, &type, &len) < 0 || type != KAP_AGENT_SPEC)
		fail("the host's first frame is not a spec");
	if (!read_all(conn, spec_buf, len))
		fail("read the spec: %s", strerror(errno ? errno : EPIPE));
	spec_buf[len] = '\0';
	parse_spec(len);
}

/* mkdir -p of a path beneath NEWROOT; the host's paths are absolute and trusted. */
static void mkdir_p(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	mkdir(path, 0755);
}

static void mount_rootfs(void)
{
	mount_or_fail(spec.root, NEWROOT, "virtiofs", spec.root_ro ? MS_RDONLY : 0, NULL);
	for (size_t i = 0; i < spec.nmounts; i++) {
		char dst[PATH_MAX];
		if (snprintf(dst, sizeof(dst), NEWROOT "%s", spec.mounts[i].dest) >=
			(int)sizeof(dst) ||
		    strstr(spec.mounts[i].dest, ".."))
			fail("mount %s: bad destination '%s'", spec.mounts[i].tag,
			     spec.mounts[i].dest);
		mkdir_p(dst);
		if (mount(spec.mounts[i].tag, dst, "virtiofs", spec.mounts[i].ro ? MS_RDONLY : 0,
			  NULL) < 0)
			fail("mount %s on %s: %s", spec.mounts[i].tag, spec.mounts[i].dest,
			     strerror(errno));
	}
	for (size_t i = 0; i < spec.ntmpfs; i++) {
		char dst[PATH_MAX];
		if (snprintf(dst, sizeof(dst), NEWROOT "%s", spec.tmpfs[i]) >= (int)sizeof(dst) ||
		    strstr(spec.tmpfs[i], ".."))
			fail("tmpfs: bad destination '%s'", spec.tmpfs[i]);
		if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
			fail("mount tmpfs on %s: %s", spec.tmpfs[i], strerror(errno));
	}
	/* What a container gets from the runtime (runtime-spec config-linux.md, default fs). */
	unsigned long nse = MS_NOSUID | MS_NOEXEC | MS_NODEV;
	mount_or_fail("proc", NEWROOT "/proc", "proc", nse, NULL);
	mount_or_fail("sysfs", NEWROOT "/sys", "sysfs", nse | (spec.root_ro ? MS_RDONLY : 0), NULL);
	mount_or_fail("devtmpfs", NEWROOT "/dev", "devtmpfs", MS_NOSUID, NULL);
	mount_or_fail("devpts", NEWROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		      "newinstance,ptmxmode=0666,mode=0620");
	mount_or_fail("shm", NEWROOT "/dev/shm", "tmpfs", nse, "mode=1777");
	/* The host's hosts, hostname and resolv.conf: a copy each, bound over the file the host
	 * made (resolved there, so DEST holds no symlink). */
	if (spec.nfiles)
		mount_or_fail("tmpfs", FILES_DIR, "tmpfs", nse, "mode=0755");
	for (size_t i = 0; i < spec.nfiles; i++) {
		char src[64], dst[PATH_MAX];
		snprintf(src, sizeof(src), FILES_DIR "/%zu", i);
		if (snprintf(dst, sizeof(dst), NEWROOT "%s", spec.files[i].dest) >=
			(int)sizeof(dst) ||
		    strstr(spec.files[i].dest, ".."))
			fail("file: bad destination '%s'", spec.files[i].dest);
		/* The host made DEST; a tmpfs mounted above (--read-only's /run) hides it. */
		if (access(dst, F_OK) < 0) {
			char *slash = strrchr(dst, '/');
			*slash = '\0';
			mkdir_p(dst);
			*slash = '/';
			close(open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
		}
		int fd = open(src, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0 || !write_all(fd, spec.files[i].text, strlen(spec.files[i].text)))
			fail("write %s: %s", src, strerror(errno));
		close(fd);
		if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
			fail("bind %s on %s: %s", spec.files[i].dest, spec.files[i].dest,
			     strerror(errno));
	}
}

/* The process: in the rootfs, as its user, with its limits and environment. */
static __attribute__((noreturn)) void child(int in, int out, int errfd, int pts)
{
	/* A terminal: a session of its own with the pseudo-terminal as controlling tty. */
	if (pts >= 0 && (setsid() < 0 || ioctl(pts, TIOCSCTTY, 0) < 0))
		_exit(125);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
		_exit(125);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (chdir(NEWROOT) < 0 || chroot(".") < 0) {
		dprintf(2, "kapsel-agent: chroot %s: %s\n", NEWROOT, strerror(errno));
		_exit(125);
	}
	for (size_t i = 0; i < spec.nrlimits; i++)
		if (setrlimit(spec.rlimits[i].res, &spec.rlimits[i].lim) < 0) {
			dprintf(2, "kapsel-agent: rlimit %d: %s\n", spec.rlimits[i].res,
				strerror(errno));
			_exit(125);
		}
	if (setgroups(spec.ngroups, spec.groups) < 0 || setgid(spec.gid) < 0 ||
	    setuid(spec.uid) < 0) {
		dprintf(2, "kapsel-agent: user %u:%u: %s\n", spec.uid, spec.gid, strerror(errno));
		_exit(125);
	}
	const char *cwd = spec.cwd && *spec.cwd ? spec.cwd : "/";
	if (chdir(cwd) < 0) {
		dprintf(2, "kapsel-agent: working directory %s: %s\n", cwd, strerror(errno));
		_exit(126);
	}
	spec.env[spec.nenv] = NULL;
	spec.args[spec.nargs] = NULL;
	clearenv();
	for (size_t i = 0; i < spec.nenv; i++)
		putenv(spec.env[i]);
	execvp(spec.args[0], spec.args);
	int e = errno;
	dprintf(2, "kapsel-agent: exec %s: %s\n", spec.args[0], strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

/* Moves what fd has to the host as frames of type; false at EOF or error. */
static bool pump(int fd, unsigned type)
{
	static char buf[KAP_AGENT_MAX_DATA];
	ssize_t k = read(fd, buf, sizeof(buf));
	if (k < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (k <= 0)
		return false;
	send_frame(type, buf, (size_t)k);
	return true;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The exec port: vsock from the host (any CID) on KAP_AGENT_EXEC_PORT; -1 without one. */
static int exec_listen(void)
{
	struct sockaddr_vm sa = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = KAP_AGENT_EXEC_PORT};
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd >= 0 && (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0)) {
		dprintf(STDERR_FILENO, "kapsel-agent: exec port %d: %s\n", KAP_AGENT_EXEC_PORT,
			strerror(errno));
		close(fd);
		fd = -1;
	}
	return fd;
}

static void run(bool exec);

/*
 * One `kapsel exec`: a child of PID 1 with only the new connection, its own spec (the
 * rootfs is mounted already) and its own relay; it ends when its process does. PID 1 reaps
 * it as any orphan.
 */
static void exec_accept(int lfd)
{
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	pid_t pid = fork();
	if (pid != 0) {
		close(c);
		return;
	}
	in_exec = true;
	for (int fd = 3; fd < 1024; fd++)
		if (fd != c)
			close(fd);
	conn = c;
	memset(&spec, 0, sizeof(spec));
	receive_spec();
	run(true);
	_exit(0);
}

static void run(bool exec)
{
	int inp[2], outp[2], errp[2];
	if (pipe2(inp, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
		fail("pipe: %s", strerror(errno));
	if (!exec && spec.hostname && sethostname(spec.hostname, strlen(spec.hostname)) < 0)
		fail("hostname %s: %s", spec.hostname, strerror(errno));
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		fail("signalfd: %s", strerror(errno));
	/*
	 * With tty=1 the process's stdio is a pseudo-terminal of the container's own devpts
	 * instance, opened through that instance's own ptmx node (mode 0666 by ptmxmode;
	 * Documentation/filesystems/devpts.rst). Its master is both "pipes" below.
	 */
	int master = -1, pts = -1;
	if (spec.tty) {
		master = open(NEWROOT "/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		int n, unlock = 0;
		char path[64];
		if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 ||
		    ioctl(master, TIOCGPTN, &n) < 0)
			fail("open a pseudo-terminal: %s", strerror(errno));
		snprintf(path, sizeof(path), NEWROOT "/dev/pts/%d", n);
		if ((pts = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
			fail("open %s: %s", path, strerror(errno));
		struct winsize ws = {.ws_row = spec.rows, .ws_col = spec.cols};
		if (spec.rows && spec.cols)
			ioctl(master, TIOCSWINSZ, &ws);
	}
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		if (pts >= 0)
			child(pts, pts, pts, pts);
		child(inp[0], outp[1], errp[1], -1);
	}
	close(inp[0]);
	close(outp[1]);
	close(errp[1]);
	int in = inp[1];
	if (!spec.stdin_open || spec.tty) {
		close(in);
		in = -1;
	}
	bool out_open = true, err_open = !spec.tty, exited = false;
	if (spec.tty) {
		close(pts);
		close(outp[0]);
		outp[0] = master;
		if (spec.stdin_open)
			in = master;
	}
	int status = 0;
	int64_t deadline = 0;
	int lfd = exec ? -1 : exec_listen();
	for (;;) {
		/* After the process ends, its output is drained; a daemon it left behind holding
		 * the pipes gets one second. */
		if (exited && (!(out_open || err_open) || now_ms() > deadline))
			break;
		struct pollfd fds[5] = {
		    {.fd = conn, .events = POLLIN},
		    {.fd = out_open ? outp[0] : -1, .events = POLLIN},
		    {.fd = err_open ? errp[0] : -1, .events = POLLIN},
		    {.fd = sfd, .events = POLLIN},
		    {.fd = exited ? -1 : lfd, .events = POLLIN},
		};
		if (poll(fds, 5, exited ? 100 : -1) < 0 && errno != EINTR)
			fail("poll: %s", strerror(errno));
		if (fds[4].revents)
			exec_accept(lfd);
		if (fds[1].revents && !pump(outp[0], KAP_AGENT_STDOUT))
			out_open = false;
		if (fds[2].revents && !pump(errp[0], KAP_AGENT_STDERR))
			err_open = false;
		if (fds[3].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
			int st;
			pid_t w;
			/* PID 1 reaps every orphan; only the process's own status counts. */
			while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
				if (w != pid)
					continue;
				status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				exited = true;
				deadline = now_ms() + 1000;
			}
		}
		if (fds[0].revents) {
			uint8_t hdr[KAP_AGENT_HDR];
			unsigned type;
			uint32_t len;
			static char buf[KAP_AGENT_MAX_DATA];
			if (!read_all(conn, hdr, sizeof(hdr)) ||
			    kap_agent_frame_decode(hdr, &type, &len) < 0 ||
			    type == KAP_AGENT_SPEC || !read_all(conn, buf, len)) {
				/* The host went away: nobody is left to report to. */
				kill(pid, SIGKILL);
				if (exec)
					_exit(1);
				power_off();
			}
			if (type == KAP_AGENT_STDIN && in >= 0 && !write_all(in, buf, len)) {
				if (in != master)
					close(in);
				in = -1;
			} else if (type == KAP_AGENT_STDIN_EOF && in >= 0) {
				/* A terminal's end of input is its EOF character, the master stays.
				 */
				if (in == master)
					write_all(in, "\x04", 1);
				else
					close(in);
				in = -1;
			} else if (type == KAP_AGENT_RESIZE && master >= 0) {
				uint8_t *b = (uint8_t *)buf;
				struct winsize ws = {.ws_row = (unsigned short)(b[0] | b[1] << 8),
						     .ws_col = (unsigned short)(b[2] | b[3] << 8)};
				ioctl(master, TIOCSWINSZ, &ws);
			} else if (type == KAP_AGENT_SIGNAL && !exited) {
				kill(pid, (int)kap_agent_get_u32((uint8_t *)buf));
			}
		}
	}
	uint8_t code[4];
	kap_agent_put_u32(code, (uint32_t)status);
	send_frame(KAP_AGENT_EXIT, code, sizeof(code));
	/* Wait for the host to close (it has read everything), at most 2 s; then power off. */
	shutdown(conn, SHUT_WR);
	struct pollfd p = {.fd = conn, .events = POLLIN};
	int64_t end = now_ms() + 2000;
	char sink[256];
	while (now_ms() < end && poll(&p, 1, 100) >= 0)
		if (p.revents && read(conn, sink, sizeof(sink)) <= 0)
			break;
}

/*
 * hold=1: the OCI runtime's create returns once the container is set up (the rootfs mounted),
 * and its start runs the process (runtime-spec runtime.md#lifecycle, steps 3 and 7). Anything
 * but START ends the VM: the host has gone, or the container was deleted before it started.
 */
static void hold(void)
{
	uint8_t hdr[KAP_AGENT_HDR];
	unsigned type;
	uint32_t len;
	if (!send_frame(KAP_AGENT_READY, NULL, 0))
		fail("send READY: %s", strerror(errno ? errno : EPIPE));
	if (!read_all(conn, hdr, sizeof(hdr)) || kap_agent_frame_decode(hdr, &type, &len) < 0 ||
	    type != KAP_AGENT_START)
		power_off();
}

int main(void)
{
	/* The kernel's initramfs has /dev/console only; everything else is ours to mount. */
	mount_or_fail("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL);
	mount_or_fail("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
	mount_or_fail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
	load_modules();
	connect_host();
	receive_spec();
	mount_rootfs();
	char why[256];
	if (agent_net_setup(&spec.net, why, sizeof(why)) < 0)
		fail("%s", why);
	if (spec.hold)
		hold();
	run(false);
	power_off();
}
