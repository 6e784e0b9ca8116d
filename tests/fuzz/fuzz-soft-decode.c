/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's instruction decoder over arbitrary bytes (guest code is guest-controlled).
 * The input is decoded in 16-, 32- and 64-bit mode straight from libFuzzer's buffer, which
 * ASan bounds exactly: a read past the given length is a crash. An accepted instruction must
 * be 1 to 15 bytes and fit the buffer; decoding only its own bytes must give the same answer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/soft/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned int modes[] = {2, 4, 8};
	for (size_t m = 0; m < 3; m++) {
		struct kap_soft_insn d, again;
		enum kap_soft_dec r = kap_soft_decode(data, size, modes[m], &d);
		if (r != KAP_SOFT_DEC_OK)
			continue;
		if (d.len == 0 || d.len > KAP_SOFT_MAX_INSN || d.len > size)
			abort();
		if (kap_soft_decode(data, d.len, modes[m], &again) != KAP_SOFT_DEC_OK ||
		    memcmp(&d, &again, sizeof(d)) != 0)
			abort();
	}
	return 0;
}
