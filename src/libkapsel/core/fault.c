/* SPDX-License-Identifier: Apache-2.0 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "core/fault.h"

static pid_t proxy;

void kap_fault_proxy(pid_t parent)
{
	proxy = parent;
}

/* The state letter of /proc/<pid>/stat ('T': stopped), or 0 when it cannot be read. */
static char proc_state(pid_t pid)
{
	char path[32], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

void kap_fault_point(const char *name)
{
	const char *want = getenv("KAPSEL_FAULT_STOP");
	if (!want || strcmp(want, name))
		return;
	if (!proxy || getppid() != proxy) {
		raise(SIGSTOP);
		return;
	}
	/* Killed with it, by the kernel as it exits: before anyone can wait for it, so the next
	 * kapsel never finds this step's locks still held (the loop below was 10 ms late). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != proxy)
		raise(SIGKILL);
	kill(proxy, SIGSTOP);
	const struct timespec tick = {0, 10 * 1000 * 1000};
	bool stopped = false;
	for (;;) {
		if (getppid() != proxy)
			raise(SIGKILL); /* it was killed: so are we, at this step */
		char st = proc_state(proxy);
		if (st == 'T')
			stopped = true;
		else if (stopped)
			return; /* continued: so are we */
		nanosleep(&tick, NULL);
	}
}
