/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CVE-2019-5736: a process in the container can reach the runtime's own binary through
 * /proc/<pid>/exe of a runtime process that entered the container (the init before execve, an
 * exec'd process, or a `#!/proc/self/exe` trick), and reopen it for writing once the runtime
 * exits — overwriting the host's kapsel. Commands that put processes into a container therefore
 * re-execute themselves through a read-only view of the binary, as crun does: a read-only bind
 * mount of /proc/self/exe, detached at once and kept alive only by the fd we execveat(). Writes
 * through /proc/<pid>/exe then fail with EROFS. Without the privilege to mount (rootless), a
 * sealed memfd copy (F_SEAL_WRITE) does the same at the price of copying the binary.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <linux/memfd.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <kapsel/log.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/sealed.h"

#define API __attribute__((visibility("default")))

#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

static bool running_protected(void)
{
	cleanup_close int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	struct statvfs sv;
	if (fstatvfs(fd, &sv) == 0 && (sv.f_flag & ST_RDONLY))
		return true;
	int seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & SEALS) == SEALS;
}

#define EXE_PREFIX ".kapsel-exe."

/*
 * A runtime killed between creating its mount point and unlinking it leaves the file, and with
 * it perhaps the bind mount, in the state root. The name carries the creator's pid so that a
 * later runtime can tell a leftover from a mount point in use.
 */
void kap_sealed_sweep(const char *dir)
{
	cleanup_dir DIR *d = kap_fs_opendir_at(AT_FDCWD, dir, 0);
	if (!d)
		return;
	int dfd = dirfd(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, EXE_PREFIX, strlen(EXE_PREFIX)))
			continue;
		/* ".kapsel-exe.<pid>.<hex>"; older names without a pid are left alone. */
		const char *p = de->d_name + strlen(EXE_PREFIX);
		char *end;
		errno = 0;
		long pid = strtol(p, &end, 10);
		if (errno || end == p || *end != '.' || pid <= 0 || pid > INT32_MAX)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* alive (or a reused pid: the next sweep gets it) */
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		/* Detach first: a mount point cannot be unlinked (EBUSY). */
		while (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			;
		if (unlinkat(dfd, de->d_name, 0) == 0)
			kap_debug("removed %s left by a killed runtime", path);
	}
}

/* The read-only bind: returns an O_PATH fd of the binary on a detached read-only mount. */
static int readonly_exe(const char *dir)
{
	char path[4096];
	kap_sealed_sweep(dir);
	for (int tries = 0; tries < 8; tries++) {
		unsigned long rnd = 0;
		if (getentropy(&rnd, sizeof(rnd)) < 0)
			rnd = (unsigned long)getpid() * 2654435761u + (unsigned long)tries;
		snprintf(path, sizeof(path), "%s/" EXE_PREFIX "%d.%lx", dir, (int)getpid(), rnd);
		int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (f < 0 && errno == EEXIST)
			continue;
		if (f < 0)
			return -errno;
		close(f);
		int fd = -1;
		if (mount("/proc/self/exe", path, NULL, MS_BIND, NULL) == 0) {
			kap_fault_point("seal:mounted");
			if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) == 0)
				fd = open(path, O_PATH | O_CLOEXEC);
			umount2(path, MNT_DETACH);
		}
		int saved = errno;
		unlink(path);
		return fd >= 0 ? fd : -saved;
	}
	return -EEXIST;
}

API int kapsel_runtime_seal(char **argv, const char *scratch_dir, struct kapsel_error **err)
{
	extern char **environ;
	if (running_protected())
		return 0;
	if (scratch_dir) {
		int fd = readonly_exe(scratch_dir);
		if (fd >= 0) {
			execveat(fd, "", argv, environ, AT_EMPTY_PATH);
			int e = errno;
			close(fd);
			return kap_error(err, e, "re-execute kapsel through a read-only mount");
		}
	}
	cleanup_close int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (exe < 0)
		return kap_error(err, errno, "open /proc/self/exe");
	struct stat st;
	if (fstat(exe, &st) < 0)
		return kap_error(err, errno, "stat /proc/self/exe");
	cleanup_close int mfd = memfd_create("kapsel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return kap_error(err, errno, "memfd_create for a sealed copy of kapsel");
	off_t off = 0;
	while (off < st.st_size) {
		ssize_t n = sendfile(mfd, exe, &off, (size_t)(st.st_size - off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return kap_error(err, n < 0 ? errno : EIO, "copy kapsel into a memfd");
	}
	if (fcntl(mfd, F_ADD_SEALS, SEALS) < 0)
		return kap_error(err, errno, "seal the memfd copy of kapsel");
	fexecve(mfd, argv, environ);
	return kap_error(err, errno, "re-execute kapsel from its sealed copy");
}
