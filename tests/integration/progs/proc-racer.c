/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs inside a container and races every process that enters it: while a process still has
 * the runtime's name (it has not executed its program yet), try to open its /proc/<pid>/fd,
 * cwd and root. Prints "SEEN <pid>" for each such process and "LEAK <pid> <what> <target>" for
 * each access that succeeded while the process still was the runtime's. Touches nothing.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int comm_is_runtime(int pid)
{
	char p[64], c[32] = "";
	snprintf(p, sizeof(p), "/proc/%d/comm", pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	int ok = fgets(c, sizeof(c), f) && !strncmp(c, "kapsel", 6);
	fclose(f);
	return ok;
}

int main(void)
{
	int self = getpid(), last = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		DIR *d = opendir("/proc");
		if (!d)
			return 1;
		struct dirent *e;
		while ((e = readdir(d))) {
			int pid = atoi(e->d_name);
			if (pid <= 1 || pid == self || !comm_is_runtime(pid))
				continue;
			if (pid != last)
				printf("SEEN %d\n", pid);
			last = pid;
			char p[64], t[4096];
			const char *what = NULL;
			ssize_t n = -1;
			snprintf(p, sizeof(p), "/proc/%d/cwd", pid);
			if ((n = readlink(p, t, sizeof(t) - 1)) >= 0)
				what = "cwd";
			snprintf(p, sizeof(p), "/proc/%d/root", pid);
			if (!what && (n = readlink(p, t, sizeof(t) - 1)) >= 0)
				what = "root";
			snprintf(p, sizeof(p), "/proc/%d/fd", pid);
			DIR *fd = what ? NULL : opendir(p);
			if (fd) {
				/* Listing needs only the uid; reading a link needs ptrace access.
				 */
				n = 0;
				struct dirent *x;
				while ((x = readdir(fd)) && n < 3000) {
					char q[128];
					snprintf(q, sizeof(q), "%s/%s", p, x->d_name);
					ssize_t m = readlink(q, t + n, sizeof(t) - 1 - (size_t)n);
					if (m > 0) {
						what = "fd";
						n += m;
						t[n++] = ' ';
					}
				}
				closedir(fd);
			}
			if (what && comm_is_runtime(pid)) {
				t[n > 0 ? n : 0] = '\0';
				printf("LEAK %d %s %s\n", pid, what, t);
			}
		}
		closedir(d);
	}
}
