/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The boot-image parsers (bzImage setup header, ELF program headers and notes, multiboot
 * header and a.out kludge) over hostile kernel files. Beyond "no crash", every accepted image
 * must describe segments that lie inside the file and do not wrap.
 */
#include <stdint.h>
#include <stdlib.h>

#include "vmm/x86/boot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kap_boot_image img;
	struct kapsel_error *err = NULL;
	if (kap_boot_parse(data, size, &img, &err) < 0) {
		kapsel_error_free(err);
		return 0;
	}
	if (img.nsegs == 0 || img.nsegs > KAP_BOOT_MAX_SEGS)
		abort();
	for (unsigned int i = 0; i < img.nsegs; i++) {
		const struct kap_boot_seg *s = &img.segs[i];
		if (s->offset > size || s->filesz > size - s->offset || s->filesz > s->memsz ||
		    s->paddr + s->memsz < s->paddr || s->paddr + s->memsz > img.end)
			abort();
	}
	if (img.kind == KAP_BOOT_BZIMAGE && img.bz_hdr_end > size)
		abort();
	return 0;
}
