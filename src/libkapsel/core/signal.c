/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signal names as kill(1), runc and containerd spell them: "TERM", "SIGTERM", "sigterm", "15",
 * "RTMIN+3", "SIGRTMAX-1". Realtime signals count from glibc's SIGRTMIN (34), like kill -l.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <kapsel/signal.h>

#include "core/cleanup.h"

#define API __attribute__((visibility("default")))

static const struct {
	const char *name;
	int sig;
} signals[] = {
    {"HUP", SIGHUP},	   {"INT", SIGINT},	{"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP},	   {"ABRT", SIGABRT},	{"IOT", SIGIOT},   {"BUS", SIGBUS},
    {"FPE", SIGFPE},	   {"KILL", SIGKILL},	{"USR1", SIGUSR1}, {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2},	   {"PIPE", SIGPIPE},	{"ALRM", SIGALRM}, {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD},	{"CLD", SIGCHLD},  {"CONT", SIGCONT},
    {"STOP", SIGSTOP},	   {"TSTP", SIGTSTP},	{"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},
    {"URG", SIGURG},	   {"XCPU", SIGXCPU},	{"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
    {"PROF", SIGPROF},	   {"WINCH", SIGWINCH}, {"IO", SIGIO},	   {"POLL", SIGPOLL},
    {"PWR", SIGPWR},	   {"SYS", SIGSYS},
};

/* A decimal number without sign, spaces or leading junk; -1 when s is not one. */
static int parse_number(const char *s)
{
	if (*s < '0' || *s > '9' || strlen(s) > 3)
		return -1;
	char *end;
	long v = strtol(s, &end, 10);
	return *end ? -1 : (int)v;
}

/* "RTMIN", "RTMIN+n", "RTMAX", "RTMAX-n" (prefix already stripped of "SIG"). */
static int parse_realtime(const char *s)
{
	bool min = !strncasecmp(s, "RTMIN", 5);
	if (!min && strncasecmp(s, "RTMAX", 5))
		return -1;
	s += 5;
	if (!*s)
		return min ? SIGRTMIN : SIGRTMAX;
	if (*s != (min ? '+' : '-'))
		return -1;
	int n = parse_number(s + 1);
	if (n < 0)
		return -1;
	int sig = min ? SIGRTMIN + n : SIGRTMAX - n;
	return sig >= SIGRTMIN && sig <= SIGRTMAX ? sig : -1;
}

API int kapsel_signal_parse(const char *s)
{
	if (!s || !*s)
		return -EINVAL;
	int n = parse_number(s);
	if (n >= 0)
		return n >= 1 && n <= SIGRTMAX ? n : -EINVAL;
	if (!strncasecmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(signals); i++)
		if (!strcasecmp(s, signals[i].name))
			return signals[i].sig;
	int sig = parse_realtime(s);
	return sig > 0 ? sig : -EINVAL;
}
