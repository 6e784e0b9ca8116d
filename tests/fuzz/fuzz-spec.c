/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.json from a hostile bundle: the whole decoder (kap_spec_parse) on arbitrary bytes. A
 * document that decodes is also fed through the process/resources entry points that `exec
 * --process` and `update --resources` use, with their own path prefixes.
 */
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "oci/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kap_spec *spec = NULL;
	struct kapsel_error *err = NULL;
	if (kap_spec_parse((const char *)data, size, &spec, &err) < 0) {
		/* Every failure must say why. */
		if (!err || !err->msg || !err->code)
			__builtin_trap();
		kapsel_error_free(err);
		return 0;
	}
	if (err)
		__builtin_trap();

	struct kap_json *proc = kap_json_get(spec->json, "process");
	struct kap_process *p = NULL;
	if (proc && kap_spec_parse_process(proc, "", &p, &err) == 0)
		kap_process_free(p);
	kapsel_error_free(err);
	err = NULL;

	struct kap_json *res = kap_json_get(kap_json_get(spec->json, "linux"), "resources");
	struct kap_resources r = {0};
	if (res && kap_spec_parse_resources(res, NULL, &r, &err) == 0)
		kap_resources_clear(&r);
	kapsel_error_free(err);

	kap_spec_free(spec);
	return 0;
}
