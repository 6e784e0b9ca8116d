/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --format templates (core/template.c): any text either fails to parse with a one-line message
 * or parses and then renders or fails with one, within the engine's bounds. The input is the
 * template; after a NUL byte, the JSON document to render (a fixed one when that is absent or
 * not JSON), so the fuzzer explores both the template and the values it walks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed[] =
    "{\"Name\":\"n\",\"State\":{\"Pid\":1,\"Running\":true,\"ExitCode\":0},\"Config\":{\"Env\":"
    "[\"A=1\",\"B=2\"],\"Labels\":{\"k\":\"v\",\"a.b\":\"c\"},\"Empty\":[],\"Null\":null,"
    "\"F\":2.5,\"Nested\":[[1,2],{\"x\":[true,false]}]}}";

static void check_error(int r, struct kapsel_error *err)
{
	if (r >= 0 || !err || !err->msg || !err->code || strchr(err->msg, '\n'))
		__builtin_trap();
	kapsel_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	const char *nul = memchr(p, '\0', size);
	size_t tlen = nul ? (size_t)(nul - p) : size;

	struct kap_json *doc = NULL;
	if (nul && kap_json_parse(nul + 1, size - tlen - 1, "doc", &doc, NULL) < 0)
		doc = NULL;
	if (!doc && kap_json_parse(fixed, strlen(fixed), "doc", &doc, NULL) < 0)
		__builtin_trap();

	struct kapsel_template *t = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_template_parse(p, tlen, &t, &err);
	if (r < 0) {
		check_error(r, err);
	} else {
		if (err || !t)
			__builtin_trap();
		char *out = NULL;
		size_t len = 0;
		r = kap_template_exec(t, doc, &out, &len, &err);
		if (r < 0)
			check_error(r, err);
		else if (!out || err || out[len] != '\0')
			__builtin_trap();
		free(out);
		kap_template_free(t);
	}
	kap_json_put(doc);
	return 0;
}
