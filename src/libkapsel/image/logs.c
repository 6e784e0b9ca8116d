/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container logs in podman's k8s-file format, the CRI's log format (kubernetes
 * cri-api/pkg/apis/runtime/v1 "LogTag"; podman's libpod/logs/log.go):
 *
 *   2026-12-02T14:43:18.123456789Z stdout F hello
 *
 * one record per line the container wrote ("F"ull), or per piece of a line still open when a
 * read ended ("P"artial: a reader joins it to what follows on that stream). stdout and stderr
 * stay apart, each record has its time, and the file is append-only (O_APPEND: a record is one
 * write, so a reader never sees half of one except at the end while it grows).
 *
 * The writer is the log pump, a process of the container's monitor that owns the read ends
 * of the container's stdout and stderr pipes; the reader is `kapsel logs`.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "image/image.h"

/* "2026-12-02T14:43:18.123456789Z": RFC 3339 in UTC with nanoseconds, as podman writes it. */
#define TS_LEN 30

static void timestamp(char buf[TS_LEN + 1])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, 20 + 1, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + 19, TS_LEN + 1 - 19, ".%09ldZ", ts.tv_nsec);
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Appends the records for one read's worth of a stream's bytes. */
static void log_chunk(int logfd, const char *stream, const char *p, size_t n)
{
	char ts[TS_LEN + 1];
	timestamp(ts);
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n;
		char head[64];
		int h = snprintf(head, sizeof(head), "%s %s %c ", ts, stream, nl ? 'F' : 'P');
		/* One write per record (O_APPEND), from a bounded buffer. */
		size_t total = (size_t)h + len + 1;
		char stackbuf[8192];
		char *rec = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
		if (rec) {
			memcpy(rec, head, (size_t)h);
			memcpy(rec + h, p, len);
			rec[total - 1] = '\n';
			write_all(logfd, rec, total);
			if (rec != stackbuf)
				free(rec);
		}
		p += len + (nl ? 1 : 0);
		n -= len + (nl ? 1 : 0);
	}
}

void kap_log_pump(int out, int err, int logfd, int pass_out, int pass_err)
{
	struct pollfd fds[2] = {{.fd = out, .events = POLLIN}, {.fd = err, .events = POLLIN}};
	int pass[2] = {pass_out, pass_err};
	static const char *const names[2] = {"stdout", "stderr"};
	char buf[65536];
	while (fds[0].fd >= 0 || fds[1].fd >= 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			ssize_t n = read(fds[i].fd, buf, sizeof(buf));
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				close(fds[i].fd);
				fds[i].fd = -1;
				continue;
			}
			/* A reader that went away (a closed terminal) stops the copy, not the log.
			 */
			if (pass[i] >= 0 && !write_all(pass[i], buf, (size_t)n))
				pass[i] = -1;
			log_chunk(logfd, names[i], buf, (size_t)n);
		}
	}
}

/* ---- reading ---- */

/* Parses a record's time to nanoseconds since the epoch; false when it is not one. */
static bool parse_ts(const char *s, size_t n, int64_t *ns)
{
	struct tm tm = {0};
	if (n < 20)
		return false;
	char tmp[TS_LEN + 1];
	if (n > TS_LEN)
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	const char *end = strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return false;
	int64_t frac = 0;
	int digits = 0;
	if (*end == '.')
		for (end++; *end >= '0' && *end <= '9'; end++, digits++)
			if (digits < 9)
				frac = frac * 10 + (*end - '0');
	for (; digits < 9; digits++)
		frac *= 10;
	if (strcmp(end, "Z"))
		return false;
	*ns = (int64_t)timegm(&tm) * 1000000000 + frac;
	return true;
}

struct record {
	const char *ts;
	size_t ts_len;
	int64_t ns;
	bool err;  /* stderr */
	bool full; /* F: ends a line */
	const char *text;
	size_t len;
};

/* A line of the file as a record; a line in no known format is a full stdout line. */
static void parse_record(const char *line, size_t n, struct record *r)
{
	*r = (struct record){.text = line, .len = n, .full = true, .ns = -1};
	const char *sp1 = memchr(line, ' ', n);
	if (!sp1)
		return;
	size_t tl = (size_t)(sp1 - line);
	int64_t ns;
	if (!parse_ts(line, tl, &ns))
		return;
	const char *rest = sp1 + 1;
	size_t left = n - tl - 1;
	bool is_err;
	if (left >= 7 && !memcmp(rest, "stdout ", 7))
		is_err = false;
	else if (left >= 7 && !memcmp(rest, "stderr ", 7))
		is_err = true;
	else
		return;
	rest += 7;
	left -= 7;
	if (left < 2 || (rest[0] != 'F' && rest[0] != 'P') || rest[1] != ' ')
		return;
	*r = (struct record){.ts = line,
			     .ts_len = tl,
			     .ns = ns,
			     .err = is_err,
			     .full = rest[0] == 'F',
			     .text = rest + 2,
			     .len = left - 2};
}

struct log_reader {
	const struct kapsel_logs_options *o;
	bool at_start[2]; /* the next text of each stream begins a line (for --timestamps) */
};

static bool wanted(const struct kapsel_logs_options *o, const struct record *r)
{
	if (r->ns < 0)
		return true; /* no time: no filter can place it */
	if (o->since_ns && r->ns < o->since_ns)
		return false;
	if (o->until_ns && r->ns > o->until_ns)
		return false;
	return true;
}

static void emit(struct log_reader *lr, const struct record *r)
{
	FILE *f = r->err ? lr->o->err : lr->o->out;
	bool *start = &lr->at_start[r->err];
	if (lr->o->timestamps && *start && r->ts)
		fprintf(f, "%.*s ", (int)r->ts_len, r->ts);
	fwrite(r->text, 1, r->len, f);
	if (r->full)
		fputc('\n', f);
	*start = r->full;
	fflush(f);
}

/* The offset in buf[0, n) of the first of the last `tail` lines (wanted records only). */
static size_t tail_start(const struct kapsel_logs_options *o, const char *buf, size_t n)
{
	if (o->tail < 0)
		return 0;
	long lines = 0;
	size_t end = n;
	/* Walk back over complete lines; a line begins after the previous '\n'. */
	while (end > 0) {
		size_t s = end - 1; /* buf[end - 1] == '\n' */
		while (s > 0 && buf[s - 1] != '\n')
			s--;
		struct record r;
		parse_record(buf + s, end - 1 - s, &r);
		/* A full record ends a line; a partial one belongs to the line after it. */
		if (wanted(o, &r) && r.full && lines++ == o->tail)
			return end;
		end = s;
	}
	return 0;
}

int kap_log_read(int fd, const struct kapsel_logs_options *o, bool (*done)(void *), void *ctx,
		 struct kapsel_error **err)
{
	struct log_reader lr = {.o = o, .at_start = {true, true}};
	cleanup_free char *buf = NULL;
	size_t len = 0, cap = 0;
	bool first = true;
	for (;;) {
		bool finished = !o->follow || !done || done(ctx);
		/* After "finished" one more read drains what the container wrote last. */
		for (;;) {
			if (cap - len < 65536) {
				size_t ncap = cap ? cap * 2 : 131072;
				char *nb = realloc(buf, ncap);
				if (!nb)
					return kap_error(err, ENOMEM, "log");
				buf = nb;
				cap = ncap;
			}
			ssize_t k = read(fd, buf + len, cap - len);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return kap_error(err, errno, "read log");
			if (k == 0)
				break;
			len += (size_t)k;
		}
		/* Only complete lines: the writer may be in the middle of one. */
		size_t complete = len;
		while (complete > 0 && buf[complete - 1] != '\n')
			complete--;
		size_t pos = first ? tail_start(o, buf, complete) : 0;
		first = false;
		while (pos < complete) {
			const char *nl = memchr(buf + pos, '\n', complete - pos);
			struct record r;
			parse_record(buf + pos, (size_t)(nl - (buf + pos)), &r);
			if (wanted(o, &r))
				emit(&lr, &r);
			pos = (size_t)(nl - buf) + 1;
		}
		memmove(buf, buf + complete, len - complete);
		len -= complete;
		if (finished)
			return 0;
		struct timespec ts = {.tv_nsec = 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
}
