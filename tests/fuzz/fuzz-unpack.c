/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tar entry writer against a scratch directory. Input byte 0 picks the compression (bits
 * 0-1) and rootless mode (bit 2); the rest is the layer stream. After every input the scratch
 * directory must hold exactly the layer dir and an untouched sibling with a sentinel file:
 * whatever the stream says, nothing lands outside the layer.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[64];
static int base_fd = -1;
static struct stat sentinel_st;

static void setup(void)
{
	snprintf(base, sizeof(base), "%s/kap-fuzz-unpack-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(base))
		abort();
	base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (base_fd < 0 || mkdirat(base_fd, "outside", 0755) < 0)
		abort();
	int fd = openat(base_fd, "outside/sentinel", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "sentinel", 8) != 8)
		abort();
	close(fd);
	if (fstatat(base_fd, "outside/sentinel", &sentinel_st, AT_SYMLINK_NOFOLLOW) < 0)
		abort();
}

static size_t entries(int dirfd_, const char *name)
{
	int fd = openat(dirfd_, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		__builtin_trap();
	DIR *d = fdopendir(fd);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (base_fd < 0)
		setup();
	if (size < 1)
		return 0;
	enum kap_compression c = (enum kap_compression)((data[0] & 3) % 3);
	struct kap_unpack_opts o = {.rootless = data[0] & 4, .max_entry_size = 1 << 20};
	int in = memfd_create("layer", MFD_CLOEXEC);
	if (in < 0 || write(in, data + 1, size - 1) != (ssize_t)(size - 1) ||
	    lseek(in, 0, SEEK_SET) != 0)
		abort();
	if (mkdirat(base_fd, "layer", 0755) < 0)
		abort();
	int layer = openat(base_fd, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct kapsel_error *err = NULL;
	char diff_id[KAP_DIGEST_LEN + 1];
	int r = kap_unpack_layer(in, c, layer, &o, diff_id, &err);
	if (r < 0 && (!err || !err->msg))
		__builtin_trap();
	if (r == 0 && kap_digest_validate(diff_id, "diff_id", NULL) < 0)
		__builtin_trap();
	kapsel_error_free(err);
	close(layer);
	close(in);

	/* Nothing outside: the base holds layer + outside, outside only the sentinel. */
	struct stat st;
	if (entries(base_fd, ".") != 2 || entries(base_fd, "outside") != 1)
		__builtin_trap();
	if (fstatat(base_fd, "outside/sentinel", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    st.st_ino != sentinel_st.st_ino || st.st_nlink != 1 || st.st_size != 8 ||
	    st.st_mode != sentinel_st.st_mode || st.st_uid != sentinel_st.st_uid ||
	    st.st_mtim.tv_sec != sentinel_st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != sentinel_st.st_mtim.tv_nsec)
		__builtin_trap();
	if (fstatat(base_fd, "outside", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    (st.st_mode & 07777) != 0755)
		__builtin_trap();
	kap_fs_rm_rf(base_fd, "layer");
	return 0;
}
