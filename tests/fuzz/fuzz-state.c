/* SPDX-License-Identifier: Apache-2.0 */
/*
 * state.json is input too: a later kapsel process reads what an earlier one (or someone with
 * access to the state root) wrote. Drive kap_state_read and the cgroup record inside it
 * (kap_cgroup_from_json) with arbitrary bytes; every failure must carry a message.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "container/cgroup/cgroup.h"
#include "oci/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int dirfd_once(void)
{
	static int fd = -1;
	if (fd < 0) {
		char tmpl[] = "/dev/shm/kapsel-fuzz-state.XXXXXX";
		if (!mkdtemp(tmpl))
			abort();
		fd = open(tmpl, O_RDONLY | O_DIRECTORY);
	}
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int dfd = dirfd_once();
	int f = openat(dfd, "state.json", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (f < 0 || write(f, data, size) != (ssize_t)size)
		abort();
	close(f);
	struct kap_state *st = NULL;
	struct kapsel_error *err = NULL;
	if (kap_state_read(dfd, "fuzz", &st, &err) < 0) {
		if (!err || !err->msg)
			__builtin_trap();
		kapsel_error_free(err);
		return 0;
	}
	if (st->cgroup) {
		struct kap_cgroup *cg = NULL;
		if (kap_cgroup_from_json(st->cgroup, &cg, &err) < 0) {
			if (!err || !err->msg)
				__builtin_trap();
			kapsel_error_free(err);
		}
		kap_cgroup_free(cg);
	}
	kap_state_free(st);
	return 0;
}
