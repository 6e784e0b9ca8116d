/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control API's request parser (vmm/http.c): complete and partial requests, keep-alive
 * pipelining, and every malformed or oversized request it must refuse, each with its status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/http.h"

static int parse(const char *s, struct kap_http_request *req, int *status)
{
	const char *why = NULL;
	*status = 0;
	int r = kap_http_parse(s, strlen(s), req, status, &why);
	if (r < 0)
		assert_non_null(why);
	return r;
}

static void test_get(void **state)
{
	struct kap_http_request req;
	int st;
	const char *s = "GET /machine HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(parse(s, &req, &st), 1);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/machine");
	assert_int_equal(req.body_len, 0);
	assert_int_equal(req.length, strlen(s));
	assert_int_equal(req.close, 0);
	/* No headers at all, HTTP/1.0: closes after the answer. */
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &req, &st), 1);
	assert_int_equal(req.close, 1);
	assert_int_equal(req.minor, 0);
}

static void test_body_and_pipeline(void **state)
{
	struct kap_http_request req;
	int st;
	const char *s = "PATCH /vm HTTP/1.1\r\ncontent-type: application/json; charset=utf-8\r\n"
			"Content-Length: 18\r\nConnection: close\r\n\r\n{\"state\":\"Paused\"}"
			"GET / HTTP/1.1\r\n\r\n";
	assert_int_equal(parse(s, &req, &st), 1);
	assert_string_equal(req.method, "PATCH");
	assert_int_equal(req.body_len, 18);
	assert_memory_equal(req.body, "{\"state\":\"Paused\"}", 18);
	assert_true(req.json);
	assert_true(req.close);
	/* The next request starts right after this one's body. */
	assert_int_equal(parse(s + req.length, &req, &st), 1);
	assert_string_equal(req.path, "/");
}

static void test_partial(void **state)
{
	const char *s = "PATCH /vm HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
	struct kap_http_request req;
	int st;
	const char *why;
	/* Every strict prefix needs more bytes; none is refused. */
	for (size_t n = 0; n < strlen(s); n++)
		assert_int_equal(kap_http_parse(s, n, &req, &st, &why), 0);
	assert_int_equal(kap_http_parse(s, strlen(s), &req, &st, &why), 1);
}

static void test_refused(void **state)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	    {"GET / HTTP/1.1\nHost: x\n\n", 400},	   /* bare LF */
	    {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400}, /* bare CR */
	    {"GET  / HTTP/1.1\r\n\r\n", 400},		   /* empty target */
	    {"GET http://x/ HTTP/1.1\r\n\r\n", 400},	   /* absolute form */
	    {"GET / HTTP/2.0\r\n\r\n", 505},		   /* version */
	    {"GET / HTTP/1.2\r\n\r\n", 505},
	    {"GET / FTP/1.1\r\n\r\n", 400},
	    {"G(T / HTTP/1.1\r\n\r\n", 400}, /* method */
	    {"AVERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", 501},
	    {"GET / HTTP/1.1\r\n folded\r\n\r\n", 400}, /* obs-fold */
	    {"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400}, /* control char */
	    {"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
	    {"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
	    {"PUT / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400},
	    {"PUT / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 400},
	    {"PUT / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n", 413}, /* over the cap */
	    {"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
	    {"GET /\x7f HTTP/1.1\r\n\r\n", 400},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kap_http_request req;
		int st;
		if (parse(cases[i].req, &req, &st) != -1 || st != cases[i].status)
			fail_msg("case %zu (%s): status %d, expected %d", i, cases[i].req, st,
				 cases[i].status);
	}
}

static void test_bounds(void **state)
{
	struct kap_http_request req;
	int st;
	const char *why;
	/* A request line longer than the head's bound, with no CRLF: 414 once the bound is hit. */
	char *buf = malloc(KAP_HTTP_MAX_HEAD + 16);
	assert_non_null(buf);
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', KAP_HTTP_MAX_HEAD + 11);
	assert_int_equal(kap_http_parse(buf, KAP_HTTP_MAX_HEAD - 1, &req, &st, &why), 0);
	assert_int_equal(kap_http_parse(buf, KAP_HTTP_MAX_HEAD, &req, &st, &why), -1);
	assert_int_equal(st, 414);
	/* A target over KAP_HTTP_MAX_PATH: 414 as soon as the line is complete. */
	int n = snprintf(buf, KAP_HTTP_MAX_HEAD, "GET /%0*d HTTP/1.1\r\n", KAP_HTTP_MAX_PATH, 0);
	assert_int_equal(kap_http_parse(buf, (size_t)n, &req, &st, &why), -1);
	assert_int_equal(st, 414);
	/* Headers that never end: 431 at the bound. */
	n = snprintf(buf, KAP_HTTP_MAX_HEAD, "GET / HTTP/1.1\r\n");
	while (n < KAP_HTTP_MAX_HEAD - 8)
		n += snprintf(buf + n, (size_t)(KAP_HTTP_MAX_HEAD + 16 - n), "X: y\r\n");
	assert_int_equal(kap_http_parse(buf, (size_t)n, &req, &st, &why), 0);
	memset(buf + n, 'z', KAP_HTTP_MAX_HEAD + 16 - (size_t)n);
	assert_int_equal(kap_http_parse(buf, KAP_HTTP_MAX_HEAD, &req, &st, &why), -1);
	assert_int_equal(st, 431);
	free(buf);
	/* More than KAP_HTTP_MAX_HEADERS headers: 431. */
	char many[2048];
	n = snprintf(many, sizeof(many), "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= KAP_HTTP_MAX_HEADERS; i++)
		n += snprintf(many + n, sizeof(many) - (size_t)n, "X%d: y\r\n", i);
	snprintf(many + n, sizeof(many) - (size_t)n, "\r\n");
	assert_int_equal(parse(many, &req, &st), -1);
	assert_int_equal(st, 431);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get),	    cmocka_unit_test(test_body_and_pipeline),
	    cmocka_unit_test(test_partial), cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
