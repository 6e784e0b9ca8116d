/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Requests to the VM control API (vmm/http.c): every input is parsed, pipelined requests
 * included, without reading outside it, and a parsed request always lies inside the input
 * within the parser's bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size bytes, so ASan sees any read past the end. */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	size_t off = 0;
	while (off < size) {
		struct kap_http_request req;
		int status;
		const char *why;
		int r = kap_http_parse(buf + off, size - off, &req, &status, &why);
		if (r < 0 && (status < 400 || status > 599 || !why))
			__builtin_trap();
		if (r <= 0)
			break;
		if (req.length == 0 || req.length > size - off ||
		    req.body_len > KAP_HTTP_MAX_BODY ||
		    (req.body_len &&
		     (req.body < buf + off || req.body + req.body_len > buf + off + req.length)) ||
		    req.path[0] != '/' || strlen(req.path) > KAP_HTTP_MAX_PATH)
			__builtin_trap();
		off += req.length;
	}
	free(buf);
	return 0;
}
