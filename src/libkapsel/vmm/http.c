/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control API's HTTP/1.1 request parser. Everything it reads comes from a client of the
 * API socket, which is hostile input like a guest's rings: the socket is 0600, but a
 * confused or compromised tool of the same user may send anything. Three rules answer that
 * (RFC 9112 is the grammar; where it allows leniency, this parser is strict instead):
 *
 *  1. Bounded: the head (request line and headers) fits KAP_HTTP_MAX_HEAD bytes, at most
 *     KAP_HTTP_MAX_HEADERS headers, a body at most KAP_HTTP_MAX_BODY bytes announced by one
 *     Content-Length. A request that exceeds a bound is refused when the bound is crossed,
 *     not when the request ends.
 *  2. One framing: Content-Length only. Transfer-Encoding (chunked) is refused with 501, and a
 *     second Content-Length with 400: the two are how request smuggling starts (RFC 9112
 *     §6.3: a message with both, or with differing lengths, is an error).
 *  3. One line ending: CRLF. A bare LF or CR, a NUL, any control character in a value, and
 *     obs-fold (a header line starting with whitespace, RFC 9112 §5.2) are 400.
 */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "vmm/http.h"

static bool is_tchar(unsigned char c)
{
	/* RFC 9110 §5.6.2: token = 1*tchar. */
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int fail(int *status, const char **why, int code, const char *reason)
{
	*status = code;
	*why = reason;
	return -1;
}

/* The end of the line starting at p (the CR of its CRLF), or NULL when not in [p, end). */
static const char *line_end(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

/* Rule 3 over [p, end): no NUL, no CR without LF after it, no LF without CR before it. */
static bool framing_ok(const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == 0)
			return false;
		if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
			return false;
		if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n')
			return false;
	}
	return true;
}

static int parse_request_line(const char *p, const char *eol, struct kap_http_request *req,
			      int *status, const char **why)
{
	const char *sp = memchr(p, ' ', (size_t)(eol - p));
	if (!sp || sp == p)
		return fail(status, why, 400, "malformed request line");
	size_t n = (size_t)(sp - p);
	if (n >= sizeof(req->method))
		return fail(status, why, 501, "method not implemented");
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)p[i]))
			return fail(status, why, 400, "malformed method");
	memcpy(req->method, p, n);
	req->method[n] = 0;
	const char *t = sp + 1;
	const char *sp2 = memchr(t, ' ', (size_t)(eol - t));
	if (!sp2 || sp2 == t)
		return fail(status, why, 400, "malformed request line");
	n = (size_t)(sp2 - t);
	/* origin-form only (RFC 9112 §3.2.1): the API has no proxies and no absolute URIs. */
	if (t[0] != '/')
		return fail(status, why, 400, "request target must start with /");
	if (n > KAP_HTTP_MAX_PATH)
		return fail(status, why, 414, "request target too long");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
			return fail(status, why, 400, "malformed request target");
	memcpy(req->path, t, n);
	req->path[n] = 0;
	const char *v = sp2 + 1;
	size_t vl = (size_t)(eol - v);
	if (vl != 8 || memcmp(v, "HTTP/1.", 7) != 0) {
		if (vl >= 5 && !memcmp(v, "HTTP/", 5))
			return fail(status, why, 505, "HTTP version not supported");
		return fail(status, why, 400, "malformed HTTP version");
	}
	if (v[7] != '0' && v[7] != '1')
		return fail(status, why, 505, "HTTP version not supported");
	req->minor = v[7] - '0';
	req->close = req->minor == 0;
	return 0;
}

static bool value_is(const char *v, size_t n, const char *want)
{
	return strlen(want) == n && !strncasecmp(v, want, n);
}

static int parse_header(const char *p, const char *eol, struct kap_http_request *req,
			bool *have_length, size_t *length, int *status, const char **why)
{
	if (*p == ' ' || *p == '\t')
		return fail(status, why, 400, "obsolete header line folding");
	const char *colon = memchr(p, ':', (size_t)(eol - p));
	if (!colon || colon == p)
		return fail(status, why, 400, "malformed header");
	for (const char *c = p; c < colon; c++)
		if (!is_tchar((unsigned char)*c))
			return fail(status, why, 400, "malformed header name");
	size_t nl = (size_t)(colon - p);
	const char *v = colon + 1, *ve = eol;
	while (v < ve && (*v == ' ' || *v == '\t'))
		v++;
	while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
		ve--;
	for (const char *c = v; c < ve; c++)
		if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
			return fail(status, why, 400, "control character in header value");
	size_t vl = (size_t)(ve - v);
	if (nl == 14 && !strncasecmp(p, "Content-Length", nl)) {
		if (*have_length)
			return fail(status, why, 400, "more than one Content-Length");
		if (vl == 0 || vl > 10)
			return fail(status, why, 400, "malformed Content-Length");
		size_t n = 0;
		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				return fail(status, why, 400, "malformed Content-Length");
			n = n * 10 + (size_t)(v[i] - '0');
		}
		if (n > KAP_HTTP_MAX_BODY)
			return fail(status, why, 413, "request body too large");
		*have_length = true;
		*length = n;
	} else if (nl == 17 && !strncasecmp(p, "Transfer-Encoding", nl)) {
		return fail(status, why, 501,
			    "Transfer-Encoding is not supported: send Content-Length");
	} else if (nl == 10 && !strncasecmp(p, "Connection", nl)) {
		if (value_is(v, vl, "close"))
			req->close = 1;
		else if (value_is(v, vl, "keep-alive"))
			req->close = 0;
	} else if (nl == 12 && !strncasecmp(p, "Content-Type", nl)) {
		req->has_type = 1;
		/* RFC 9110 §8.3: type/subtype, optionally ";" parameters (charset). */
		req->json = vl >= 16 && !strncasecmp(v, "application/json", 16) &&
			    (vl == 16 || v[16] == ';' || v[16] == ' ');
	}
	return 0;
}

int kap_http_parse(const char *buf, size_t len, struct kap_http_request *req, int *status,
		   const char **why)
{
	*req = (struct kap_http_request){0};
	size_t scan = len < KAP_HTTP_MAX_HEAD ? len : KAP_HTTP_MAX_HEAD;
	/* The head ends at the first empty line; look only within the head's bound. */
	const char *end = NULL;
	for (size_t i = 0; i + 3 < scan; i++)
		if (!memcmp(buf + i, "\r\n\r\n", 4)) {
			end = buf + i + 2; /* the empty line's CRLF starts here */
			break;
		}
	size_t head = end ? (size_t)(end - buf) + 2 : scan;
	if (!framing_ok(buf, head))
		return fail(status, why, 400, "bare CR, LF or NUL in the request head");
	const char *eol = line_end(buf, buf + head);
	if (!eol) {
		if (len >= KAP_HTTP_MAX_HEAD)
			return fail(status, why, 414, "request line too long");
		return 0;
	}
	/* The request line is checked as soon as it is complete: garbage is refused early. */
	if (parse_request_line(buf, eol, req, status, why) < 0)
		return -1;
	if (!end) {
		if (len >= KAP_HTTP_MAX_HEAD)
			return fail(status, why, 431, "request headers too large");
		return 0;
	}
	bool have_length = false;
	size_t length = 0;
	unsigned int nheaders = 0;
	for (const char *p = eol + 2; p < end; p = eol + 2) {
		eol = line_end(p, end + 2);
		if (++nheaders > KAP_HTTP_MAX_HEADERS)
			return fail(status, why, 431, "too many headers");
		if (parse_header(p, eol, req, &have_length, &length, status, why) < 0)
			return -1;
	}
	if (len - head < length)
		return 0;
	req->body = buf + head;
	req->body_len = length;
	req->length = head + length;
	return 1;
}

const char *kap_http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}
