/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pasta(1) as kapsel runs it:
 *   pasta --config-net --quiet --netns PATH --pid FILE --runas 0:0 -t ... -u ... -T none -U none
 * --netns with a path joins only that network namespace (--netns-only is implied): pasta
 * stays in our user namespace, where it may enter a namespace we own. --runas 0:0: started
 * as "root" it would switch to nobody, which a user namespace mapping only the user lacks;
 * our 0 is the user. -T/-U none: nothing of the container reaches the host's own loopback
 * services (pasta's default, auto, would forward every port bound there). Without ports,
 * -t none -u none as well: nothing is published unless asked for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/syscalls.h"
#include "net/net.h"
#include "net/pasta.h"

#define PID_FILE "pasta.pid"
#define MAX_ARGS 64

extern char **environ;

/* pasta's last line that says something: its fatal error comes after its warnings (a
 * missing IPv6 route, failing to reach syslog). */
static void last_line(char *buf, char *out, size_t len)
{
	snprintf(out, len, "pasta failed");
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		if (*l && !strstr(l, "syslog"))
			snprintf(out, len, "%s", l);
}

int kap_pasta_start(const char *netns_path, char *const *ports, const char *dir, int dirfd,
		    struct kapsel_error **err)
{
	cleanup_free char *pidfile = NULL;
	if (asprintf(&pidfile, "%s/%s", dir, PID_FILE) < 0) {
		pidfile = NULL;
		return kap_error(err, ENOMEM, "pasta");
	}
	/* One -t/-u per port: "[HOSTIP/]HOSTPORT:CTRPORT" (pasta(1), --tcp-ports). */
	char specs[MAX_ARGS][48];
	const char *argv[2 * MAX_ARGS + 16];
	size_t n = 0, ns = 0;
	static const char *const fixed[] = {"pasta", "--config-net", "--quiet", "--runas", "0:0",
					    "-T",    "none",	     "-U",	"none"};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		argv[n++] = fixed[i];
	argv[n++] = "--netns";
	argv[n++] = netns_path;
	argv[n++] = "--pid";
	argv[n++] = pidfile;
	bool tcp = false, udp = false;
	for (char *const *p = ports; p && *p; p++) {
		struct kap_net_port port;
		int r = kap_net_parse_port(*p, &port, err);
		if (r < 0)
			return r;
		if (ns == MAX_ARGS)
			return kap_error_plain(err, E2BIG, "-p: at most %d ports with pasta",
					       MAX_ARGS);
		char ip[INET_ADDRSTRLEN] = "";
		if (port.host_ip.s_addr != htonl(INADDR_ANY)) {
			inet_ntop(AF_INET, &port.host_ip, ip, sizeof(ip));
			strcat(ip, "/");
		}
		snprintf(specs[ns], sizeof(specs[ns]), "%s%u:%u", ip, port.host_port,
			 port.ctr_port);
		bool is_tcp = !strcmp(port.proto, "tcp");
		tcp |= is_tcp;
		udp |= !is_tcp;
		argv[n++] = is_tcp ? "-t" : "-u";
		argv[n++] = specs[ns++];
	}
	if (!tcp) {
		argv[n++] = "-t";
		argv[n++] = "none";
	}
	if (!udp) {
		argv[n++] = "-u";
		argv[n++] = "none";
	}
	argv[n] = NULL;

	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return kap_error(err, errno, "pasta: pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	pid_t pid;
	int e = posix_spawnp(&pid, "pasta", &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (e) {
		close(pfd[0]);
		if (e == ENOENT)
			return kap_error_plain(err, ENOENT,
					       "--net pasta: pasta not found (Debian's passt)");
		return kap_error(err, e, "--net pasta: run pasta");
	}
	/* Until it daemonizes: the daemon closes its copies of the pipe (it logs nowhere
	 * with --quiet), so EOF comes once initialisation is over, either way. */
	char buf[4096];
	size_t got = 0;
	ssize_t k;
	while (got < sizeof(buf) - 1 && ((k = read(pfd[0], buf + got, sizeof(buf) - 1 - got)) > 0 ||
					 (k < 0 && errno == EINTR)))
		if (k > 0)
			got += (size_t)k;
	buf[got] = '\0';
	close(pfd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return kap_error(err, errno, "--net pasta: wait for pasta");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char line[256];
		last_line(buf, line, sizeof(line));
		kap_pasta_stop(dirfd);
		return kap_error_plain(err, EIO, "--net pasta: %s", line);
	}
	return 0;
}

void kap_pasta_stop(int dirfd)
{
	cleanup_free char *buf = NULL;
	if (kap_fs_read_file(dirfd, PID_FILE, 32, &buf, NULL, NULL) < 0)
		return;
	long pid = strtol(buf, NULL, 10);
	/* The pidfd pins the process: checked and signalled, it is the same one. */
	cleanup_close int pfd = pid > 1 ? kap_pidfd_open((pid_t)pid, 0) : -1;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	cleanup_free char *c = NULL;
	/* A pid reused since is somebody else's: only a pasta (or passt) gets the signal. */
	if (pfd >= 0 && kap_fs_read_file(AT_FDCWD, path, 32, &c, NULL, NULL) == 0 &&
	    (!strncmp(c, "pasta", 5) || !strncmp(c, "passt", 5)) &&
	    kap_pidfd_send_signal(pfd, SIGTERM, NULL, 0) == 0) {
		/*
		 * Wait (up to 2 s) until it has exited, so its ports are free when this returns:
		 * a restart of the container starts a new pasta on the same ports at once. The
		 * daemon is not our child; its pidfd still polls readable when it exits.
		 */
		struct pollfd p = {.fd = pfd, .events = POLLIN};
		while (poll(&p, 1, 2000) < 0 && errno == EINTR)
			;
	}
	unlinkat(dirfd, PID_FILE, 0);
}
