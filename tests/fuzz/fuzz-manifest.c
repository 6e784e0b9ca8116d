/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests, indexes and image configs from registries and tarballs: the same bytes go through
 * all three decoders, platform selection and the layer media-type table.
 */
#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int r, struct kapsel_error *err)
{
	if (r < 0 && (!err || !err->msg || !err->code))
		__builtin_trap();
	if (r == 0 && err)
		__builtin_trap();
	kapsel_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct kapsel_error *err = NULL;
	struct kap_manifest m;
	int r = kap_manifest_parse(buf, size, &m, &err);
	check(r, err);
	if (r == 0) {
		for (size_t i = 0; i < m.n_layers; i++) {
			enum kap_compression c;
			err = NULL;
			check(kap_layer_compression(m.layers[i].media_type, &c, &err), err);
		}
		kap_manifest_clear(&m);
	}
	struct kap_index idx;
	err = NULL;
	r = kap_index_parse(buf, size, &idx, &err);
	check(r, err);
	if (r == 0) {
		static const char *const platforms[] = {NULL, "linux/arm64", "linux/arm/v7", "x/"};
		for (size_t i = 0; i < sizeof(platforms) / sizeof(platforms[0]); i++) {
			const struct kap_descriptor *d = NULL;
			err = NULL;
			r = kap_index_select(&idx, platforms[i], &d, &err);
			check(r, err);
			if (r == 0 &&
			    (!d || d < idx.manifests || d >= idx.manifests + idx.n_manifests))
				__builtin_trap();
		}
		kap_index_clear(&idx);
	}
	struct kap_image_config c;
	err = NULL;
	r = kap_image_config_parse(buf, size, &c, &err);
	check(r, err);
	if (r == 0)
		kap_image_config_clear(&c);
	return 0;
}
