/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A strict HTTP/1.1 request parser for the VM's control API (api.c). Pure: no I/O, no
 * allocation; the request points into the caller's buffer.
 */
#pragma once
#include <stddef.h>

#define KAP_HTTP_MAX_HEAD    8192  /* request line plus headers */
#define KAP_HTTP_MAX_BODY    16384 /* Content-Length above this: 413 */
#define KAP_HTTP_MAX_HEADERS 32
#define KAP_HTTP_MAX_PATH    255

struct kap_http_request {
	char method[16];
	char path[KAP_HTTP_MAX_PATH + 1];
	const char *body; /* inside the parsed buffer; body_len bytes, not NUL-terminated */
	size_t body_len;
	int minor;     /* HTTP/1.<minor>: 0 or 1 */
	int close;     /* Connection: close, or HTTP/1.0 without keep-alive */
	int json;      /* Content-Type names application/json */
	int has_type;  /* a Content-Type header was sent */
	size_t length; /* bytes of buf the whole request took (head + body) */
};

/*
 * Parses one request at the start of buf[0, len). Returns 1 with *req filled when a whole
 * request is there, 0 when more bytes are needed, and -1 when the request is malformed: then
 * *status is the HTTP status to answer (400, 413, 414, 431, 501, 505) and *why a static
 * one-line reason. A request that cannot become valid is refused as early as possible, so a
 * client never makes the server buffer more than KAP_HTTP_MAX_HEAD + KAP_HTTP_MAX_BODY.
 */
int kap_http_parse(const char *buf, size_t len, struct kap_http_request *req, int *status,
		   const char **why);

/* The reason phrase of status ("Bad Request"); "Unknown" for one the API never sends. */
const char *kap_http_reason(int status);
