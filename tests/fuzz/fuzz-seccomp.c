/* SPDX-License-Identifier: Apache-2.0 */
/*
 * linux.seccomp from a hostile config.json: any JSON document is treated as the seccomp object
 * and compiled into a libseccomp filter (never loaded: kap_seccomp_prepare touches no kernel
 * state beyond feature probes).
 */
#include <stddef.h>
#include <stdint.h>

#include "container/seccomp.h"
#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kap_json *j = NULL;
	struct kapsel_error *err = NULL;
	if (kap_json_parse((const char *)data, size, "fuzz", &j, &err) < 0) {
		kapsel_error_free(err);
		return 0;
	}
	struct kap_seccomp *sc = NULL;
	if (kap_seccomp_prepare(j, &sc, &err) == 0)
		kap_seccomp_free(sc);
	kapsel_error_free(err);
	kap_json_put(j);
	return 0;
}
