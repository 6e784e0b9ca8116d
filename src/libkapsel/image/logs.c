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
 * The writer is the container's monitor, which owns the read ends of the container's stdout
 * and stderr pipes (image/run.c); the reader is `kapsel logs`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <kapsel/run.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "image/image.h"

/* "2026-12-02T14:43:18.123456789Z": RFC 3339 in UTC with nanoseconds, as podman writes it. */
#define TS_LEN 30

/*
 * The time, formatted by hand: gmtime_r would take glibc's tz lock and strftime the locale's
 * for every record. Days to civil date: Howard Hinnant's "chrono-Compatible Low-Level Date
 * Algorithms", civil_from_days.
 */
static void timestamp(char buf[TS_LEN + 1])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t secs = ts.tv_sec, days = secs / 86400, rem = secs % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);
	int64_t f[] = {y, m, d, rem / 3600, rem / 60 % 60, rem % 60, ts.tv_nsec};
	static const int width[] = {4, 2, 2, 2, 2, 2, 9};
	static const char after[] = "--T::.Z";
	char *p = buf;
	for (int i = 0; i < 7; i++) {
		int64_t v = f[i];
		for (int k = width[i] - 1; k >= 0; k--, v /= 10)
			p[k] = (char)('0' + v % 10);
		p += width[i];
		*p++ = after[i];
	}
	*p = '\0';
}

/* Appends the records for one read's worth of a stream's bytes: one writev each (O_APPEND
 * keeps a record whole), no allocation. */
static void log_chunk(int logfd, const char *stream, const char *p, size_t n)
{
	char head[TS_LEN + 16];
	timestamp(head);
	size_t hl = TS_LEN;
	head[hl++] = ' ';
	memcpy(head + hl, stream, 6);
	hl += 6;
	head[hl++] = ' ';
	head[hl + 1] = ' ';
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n;
		head[hl] = nl ? 'F' : 'P';
		struct iovec iov[] = {{head, hl + 2}, {(void *)p, len}, {"\n", 1}};
		while (writev(logfd, iov, 3) < 0 && errno == EINTR)
			;
		p += len + (nl ? 1 : 0);
		n -= len + (nl ? 1 : 0);
	}
}

void kap_log_record(int logfd, bool is_err, const char *p, size_t n)
{
	log_chunk(logfd, is_err ? "stderr" : "stdout", p, n);
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
