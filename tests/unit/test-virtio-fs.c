/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-fs FUSE server (vmm/virtio/fs.c) driven with raw request bytes on a scratch
 * directory: the ordinary file operations, and what a hostile guest sends: "..", "/" and
 * absolute names, symlinks pointing out of the share, lengths larger than the request, truncated
 * headers, unknown opcodes, node ids and handles never issued, forgetting twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/virtio/fs.h"

struct fx {
	char top[64];  /* scratch dir; the share is top/share, top/outside is beside it */
	char root[96]; /* top/share */
	struct kap_fs *fs;
	uint64_t unique;
	uint8_t in[KAP_FS_IN_MAX + 64];
	uint8_t out[KAP_FS_OUT_MAX];
	size_t outlen;
};

/* Sends opcode op on nodeid with the concatenated arguments; returns the reply's error. */
static int32_t sendv(struct fx *f, uint32_t op, uint64_t nodeid, const void *a, size_t alen,
		     const void *b, size_t blen)
{
	struct fuse_in_header h = {.len = (uint32_t)(sizeof(h) + alen + blen),
				   .opcode = op,
				   .unique = ++f->unique,
				   .nodeid = nodeid,
				   .uid = getuid(),
				   .gid = getgid()};
	memcpy(f->in, &h, sizeof(h));
	if (alen)
		memcpy(f->in + sizeof(h), a, alen);
	if (blen)
		memcpy(f->in + sizeof(h) + alen, b, blen);
	f->outlen = kap_fs_handle(f->fs, f->in, h.len, f->out, sizeof(f->out));
	if (f->outlen == 0)
		return 1; /* no reply */
	struct fuse_out_header o;
	assert_true(f->outlen >= sizeof(o));
	memcpy(&o, f->out, sizeof(o));
	assert_int_equal(o.len, f->outlen);
	assert_int_equal(o.unique, f->unique);
	return o.error;
}

static int32_t send1(struct fx *f, uint32_t op, uint64_t nodeid, const void *a, size_t alen)
{
	return sendv(f, op, nodeid, a, alen, NULL, 0);
}

static const void *result(struct fx *f)
{
	return f->out + sizeof(struct fuse_out_header);
}

static void init(struct fx *f)
{
	struct fuse_init_in in = {.major = 7,
				  .minor = 38,
				  .max_readahead = 65536,
				  .flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS};
	assert_int_equal(send1(f, FUSE_INIT, 0, &in, sizeof(in)), 0);
	struct fuse_init_out o;
	memcpy(&o, result(f), sizeof(o));
	assert_int_equal(o.major, 7);
	assert_int_equal(o.max_write, KAP_FS_MAX_IO);
	assert_true(o.flags & FUSE_MAX_PAGES);
}

static int32_t name_op(struct fx *f, uint32_t op, uint64_t parent, const char *name)
{
	return send1(f, op, parent, name, strlen(name) + 1);
}

static int32_t lookup(struct fx *f, uint64_t parent, const char *name, struct fuse_entry_out *e)
{
	int32_t r = name_op(f, FUSE_LOOKUP, parent, name);
	if (r == 0 && e)
		memcpy(e, result(f), sizeof(*e));
	return r;
}

static int32_t create(struct fx *f, uint64_t parent, const char *name, uint64_t *node, uint64_t *fh)
{
	struct fuse_create_in in = {.flags = O_RDWR, .mode = S_IFREG | 0644};
	int32_t r = sendv(f, FUSE_CREATE, parent, &in, sizeof(in), name, strlen(name) + 1);
	if (r == 0) {
		struct fuse_entry_out e;
		struct fuse_open_out o;
		memcpy(&e, result(f), sizeof(e));
		memcpy(&o, (const uint8_t *)result(f) + sizeof(e), sizeof(o));
		*node = e.nodeid;
		*fh = o.fh;
	}
	return r;
}

static int32_t open_node(struct fx *f, uint32_t op, uint64_t node, uint32_t flags, uint64_t *fh)
{
	struct fuse_open_in in = {.flags = flags};
	int32_t r = send1(f, op, node, &in, sizeof(in));
	if (r == 0) {
		struct fuse_open_out o;
		memcpy(&o, result(f), sizeof(o));
		*fh = o.fh;
	}
	return r;
}

static int32_t write_fh(struct fx *f, uint64_t fh, uint64_t off, const char *data)
{
	struct fuse_write_in in = {.fh = fh, .offset = off, .size = (uint32_t)strlen(data)};
	return sendv(f, FUSE_WRITE, 0, &in, sizeof(in), data, strlen(data));
}

static int32_t read_fh(struct fx *f, uint64_t fh, uint64_t off, uint32_t size)
{
	struct fuse_read_in in = {.fh = fh, .offset = off, .size = size};
	return send1(f, FUSE_READ, 0, &in, sizeof(in));
}

static void host_path(struct fx *f, char *buf, size_t len, const char *rel)
{
	snprintf(buf, len, "%s/%s", f->root, rel);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->top, "/tmp/kapsel-test-fs.XXXXXX");
	assert_non_null(mkdtemp(f->top));
	snprintf(f->root, sizeof(f->root), "%s/share", f->top);
	assert_int_equal(mkdir(f->root, 0755), 0);
	char p[160];
	snprintf(p, sizeof(p), "%s/outside", f->top);
	int fd = open(p, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "secret", 6), 6);
	close(fd);
	assert_int_equal(kap_fs_open(&f->fs, f->root, false, NULL), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kap_fs_close(f->fs);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->top);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* Lists a directory node through OPENDIR + READDIR; returns the names joined by spaces. */
static void list_dir(struct fx *f, uint64_t node, bool plus, char *names, size_t len)
{
	uint64_t fh;
	assert_int_equal(open_node(f, FUSE_OPENDIR, node, O_RDONLY, &fh), 0);
	names[0] = 0;
	uint64_t off = 0;
	for (;;) {
		struct fuse_read_in in = {.fh = fh, .offset = off, .size = 4096};
		assert_int_equal(
		    send1(f, plus ? FUSE_READDIRPLUS : FUSE_READDIR, 0, &in, sizeof(in)), 0);
		size_t n = f->outlen - sizeof(struct fuse_out_header);
		if (n == 0)
			break;
		const uint8_t *p = result(f);
		for (size_t pos = 0; pos < n;) {
			struct fuse_dirent d;
			struct fuse_entry_out e = {0};
			if (plus) {
				memcpy(&e, p + pos, sizeof(e));
				pos += sizeof(e);
			}
			memcpy(&d, p + pos, sizeof(d));
			char name[256] = {0};
			memcpy(name, p + pos + FUSE_NAME_OFFSET, d.namelen);
			pos += FUSE_DIRENT_SIZE(&d);
			off = d.off;
			if (!strcmp(name, ".") || !strcmp(name, "..")) {
				assert_int_equal(e.nodeid, 0);
				continue;
			}
			if (plus)
				assert_int_not_equal(e.nodeid, 0);
			strncat(names, name, len - strlen(names) - 2);
			strcat(names, " ");
		}
	}
	struct fuse_release_in rel = {.fh = fh};
	assert_int_equal(send1(f, FUSE_RELEASEDIR, 0, &rel, sizeof(rel)), 0);
}

static void test_files(void **state)
{
	struct fx *f = *state;
	init(f);
	uint64_t node, fh;
	assert_int_equal(create(f, FUSE_ROOT_ID, "a", &node, &fh), 0);
	assert_int_equal(write_fh(f, fh, 0, "hello world"), 0);
	assert_int_equal(read_fh(f, fh, 6, 100), 0);
	assert_int_equal(f->outlen - sizeof(struct fuse_out_header), 5);
	assert_memory_equal(result(f), "world", 5);
	struct fuse_flush_in fl = {.fh = fh};
	assert_int_equal(send1(f, FUSE_FLUSH, node, &fl, sizeof(fl)), 0);
	struct fuse_fsync_in fs = {.fh = fh};
	assert_int_equal(send1(f, FUSE_FSYNC, node, &fs, sizeof(fs)), 0);
	struct fuse_release_in rel = {.fh = fh};
	assert_int_equal(send1(f, FUSE_RELEASE, node, &rel, sizeof(rel)), 0);
	assert_int_equal(kap_fs_handles(f->fs), 0);

	/* The same inode comes back as the same node. */
	struct fuse_entry_out e;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "a", &e), 0);
	assert_int_equal(e.nodeid, node);
	assert_int_equal(e.attr.size, 11);
	assert_true(S_ISREG(e.attr.mode));
	struct fuse_getattr_in ga = {0};
	assert_int_equal(send1(f, FUSE_GETATTR, node, &ga, sizeof(ga)), 0);

	/* SETATTR: size and mode. */
	struct fuse_setattr_in sa = {.valid = FATTR_SIZE | FATTR_MODE, .size = 5, .mode = 0600};
	assert_int_equal(send1(f, FUSE_SETATTR, node, &sa, sizeof(sa)), 0);
	struct fuse_attr_out ao;
	memcpy(&ao, result(f), sizeof(ao));
	assert_int_equal(ao.attr.size, 5);
	assert_int_equal(ao.attr.mode & 07777, 0600);

	/* A directory, a rename into it, a listing. */
	struct fuse_mkdir_in mk = {.mode = 0755};
	assert_int_equal(sendv(f, FUSE_MKDIR, FUSE_ROOT_ID, &mk, sizeof(mk), "d", 2), 0);
	struct fuse_entry_out de;
	memcpy(&de, result(f), sizeof(de));
	assert_true(S_ISDIR(de.attr.mode));
	char names[512];
	list_dir(f, FUSE_ROOT_ID, false, names, sizeof(names));
	assert_non_null(strstr(names, "a "));
	assert_non_null(strstr(names, "d "));
	list_dir(f, FUSE_ROOT_ID, true, names, sizeof(names));
	assert_non_null(strstr(names, "a "));

	struct fuse_rename_in rn = {.newdir = de.nodeid};
	assert_int_equal(sendv(f, FUSE_RENAME, FUSE_ROOT_ID, &rn, sizeof(rn), "a\0b", 4), 0);
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "a", NULL), -ENOENT);
	assert_int_equal(lookup(f, de.nodeid, "b", &e), 0);
	char p[160];
	host_path(f, p, sizeof(p), "d/b");
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 5);

	/* RENAME2 with NOREPLACE onto an existing name. */
	assert_int_equal(create(f, de.nodeid, "c", &node, &fh), 0);
	struct fuse_rename2_in r2 = {.newdir = de.nodeid, .flags = RENAME_NOREPLACE};
	assert_int_equal(sendv(f, FUSE_RENAME2, de.nodeid, &r2, sizeof(r2), "b\0c", 4), -EEXIST);

	/* LINK, SYMLINK, READLINK. */
	struct fuse_link_in ln = {.oldnodeid = e.nodeid};
	assert_int_equal(sendv(f, FUSE_LINK, FUSE_ROOT_ID, &ln, sizeof(ln), "hard", 5), 0);
	assert_int_equal(sendv(f, FUSE_SYMLINK, FUSE_ROOT_ID, "sym", 4, "d/b", 4), 0);
	struct fuse_entry_out se;
	memcpy(&se, result(f), sizeof(se));
	assert_true(S_ISLNK(se.attr.mode));
	assert_int_equal(send1(f, FUSE_READLINK, se.nodeid, NULL, 0), 0);
	assert_int_equal(f->outlen - sizeof(struct fuse_out_header), 3);
	assert_memory_equal(result(f), "d/b", 3);

	/* STATFS, ACCESS, LSEEK, FALLOCATE. */
	assert_int_equal(send1(f, FUSE_STATFS, FUSE_ROOT_ID, NULL, 0), 0);
	struct fuse_access_in ac = {.mask = R_OK};
	assert_int_equal(send1(f, FUSE_ACCESS, e.nodeid, &ac, sizeof(ac)), 0);
	struct fuse_fallocate_in fa = {.fh = fh, .offset = 0, .length = 8192};
	assert_int_equal(send1(f, FUSE_FALLOCATE, node, &fa, sizeof(fa)), 0);
	struct fuse_lseek_in ls = {.fh = fh, .offset = 0, .whence = SEEK_END};
	assert_int_equal(send1(f, FUSE_LSEEK, node, &ls, sizeof(ls)), 0);
	struct fuse_lseek_out lo;
	memcpy(&lo, result(f), sizeof(lo));
	assert_int_equal(lo.offset, 8192);

	/* UNLINK and RMDIR. */
	assert_int_equal(name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, "d"), -ENOTEMPTY);
	assert_int_equal(name_op(f, FUSE_UNLINK, de.nodeid, "b"), 0);
	assert_int_equal(name_op(f, FUSE_UNLINK, de.nodeid, "c"), 0);
	assert_int_equal(name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, "d"), 0);
	host_path(f, p, sizeof(p), "d");
	assert_int_equal(stat(p, &st), -1);

	/* No xattrs, and opcodes kapsel does not know. */
	assert_int_equal(send1(f, FUSE_GETXATTR, FUSE_ROOT_ID, "\0\0\0\0\0\0\0\0user.x", 15),
			 -ENOSYS);
	assert_int_equal(send1(f, FUSE_LISTXATTR, FUSE_ROOT_ID, "\0\0\0\0\0\0\0\0", 8), -ENOSYS);
	assert_int_equal(send1(f, 9999, FUSE_ROOT_ID, NULL, 0), -ENOSYS);
	assert_int_equal(send1(f, FUSE_GETLK, FUSE_ROOT_ID, NULL, 0), -ENOSYS);

	/* DESTROY forgets everything; requests after it need a new INIT. */
	assert_int_equal(send1(f, FUSE_DESTROY, 0, NULL, 0), 0);
	assert_int_equal(kap_fs_nodes(f->fs), 1);
	assert_int_equal(kap_fs_handles(f->fs), 0);
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "hard", NULL), -EIO);
}

static void test_hostile_names(void **state)
{
	struct fx *f = *state;
	init(f);
	static const char *const bad[] = {"..", ".", "a/b", "/etc/passwd", "../outside", "", "/"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(lookup(f, FUSE_ROOT_ID, bad[i], NULL), -EINVAL);
		uint64_t n, fh;
		assert_int_equal(create(f, FUSE_ROOT_ID, bad[i], &n, &fh), -EINVAL);
		struct fuse_mkdir_in mk = {.mode = 0755};
		assert_int_equal(
		    sendv(f, FUSE_MKDIR, FUSE_ROOT_ID, &mk, sizeof(mk), bad[i], strlen(bad[i]) + 1),
		    -EINVAL);
		assert_int_equal(name_op(f, FUSE_UNLINK, FUSE_ROOT_ID, bad[i]), -EINVAL);
		struct fuse_rename_in rn = {.newdir = FUSE_ROOT_ID};
		char two[64];
		size_t l = strlen(bad[i]);
		memcpy(two, "x", 2);
		memcpy(two + 2, bad[i], l + 1);
		assert_int_equal(sendv(f, FUSE_RENAME, FUSE_ROOT_ID, &rn, sizeof(rn), two, l + 3),
				 -EINVAL);
	}
	/* A name without its NUL, and one longer than NAME_MAX. */
	assert_int_equal(send1(f, FUSE_LOOKUP, FUSE_ROOT_ID, "outside", 7), -EINVAL);
	char longname[300];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, longname, NULL), -ENAMETOOLONG);
	/* Nothing was made beside the share, and the file outside it is untouched. */
	char p[160];
	snprintf(p, sizeof(p), "%s/x", f->top);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "%s/outside", f->top);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 6);
	assert_int_equal(kap_fs_nodes(f->fs), 1);
}

static void test_symlink_outside(void **state)
{
	struct fx *f = *state;
	init(f);
	char p[160], target[160];
	snprintf(target, sizeof(target), "%s/outside", f->top);
	host_path(f, p, sizeof(p), "esc");
	assert_int_equal(symlink(target, p), 0);
	host_path(f, p, sizeof(p), "etc");
	assert_int_equal(symlink("/etc", p), 0);
	host_path(f, p, sizeof(p), "up");
	assert_int_equal(symlink("..", p), 0);

	/* LOOKUP gives the symlink itself; READLINK its text; OPEN does not follow it. */
	struct fuse_entry_out e;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "esc", &e), 0);
	assert_true(S_ISLNK(e.attr.mode));
	assert_int_equal(send1(f, FUSE_READLINK, e.nodeid, NULL, 0), 0);
	assert_int_equal(f->outlen - sizeof(struct fuse_out_header), strlen(target));
	assert_memory_equal(result(f), target, strlen(target));
	uint64_t fh;
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDONLY, &fh), -ELOOP);
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDWR | O_TRUNC, &fh), -ELOOP);
	struct fuse_setattr_in sa = {.valid = FATTR_SIZE, .size = 0};
	assert_int_equal(send1(f, FUSE_SETATTR, e.nodeid, &sa, sizeof(sa)), -EINVAL);

	/* A symlink to a directory is no directory: nothing is looked up or listed through it. */
	struct fuse_entry_out etc;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "etc", &etc), 0);
	assert_int_equal(lookup(f, etc.nodeid, "passwd", NULL), -ENOTDIR);
	assert_int_equal(open_node(f, FUSE_OPENDIR, etc.nodeid, O_RDONLY, &fh), -ENOTDIR);
	uint64_t n;
	assert_int_equal(create(f, etc.nodeid, "owned", &n, &fh), -ENOTDIR);
	struct fuse_entry_out up;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "up", &up), 0);
	assert_int_equal(lookup(f, up.nodeid, "outside", NULL), -ENOTDIR);

	/* CREATE over the symlink's name does not write through it. */
	assert_int_equal(create(f, FUSE_ROOT_ID, "esc", &n, &fh), -ELOOP);
	struct stat st;
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_size, 6);
}

static void test_lengths(void **state)
{
	struct fx *f = *state;
	init(f);
	/* A truncated header: an error reply to unique 0, never a crash. */
	uint8_t small[8] = {0};
	size_t n = kap_fs_handle(f->fs, small, sizeof(small), f->out, sizeof(f->out));
	assert_int_equal(n, sizeof(struct fuse_out_header));
	struct fuse_out_header o;
	memcpy(&o, f->out, sizeof(o));
	assert_int_equal(o.error, -EINVAL);
	assert_int_equal(o.unique, 0);
	/* No room for a reply header: nothing is written. */
	assert_int_equal(kap_fs_handle(f->fs, small, sizeof(small), f->out, 15), 0);

	/* The header claims more bytes than the request holds. */
	struct fuse_in_header h = {.len = 4096, .opcode = FUSE_LOOKUP, .unique = 7, .nodeid = 1};
	memcpy(f->in, &h, sizeof(h));
	memcpy(f->in + sizeof(h), "a", 2);
	n = kap_fs_handle(f->fs, f->in, sizeof(h) + 2, f->out, sizeof(f->out));
	memcpy(&o, f->out, sizeof(o));
	assert_int_equal(o.error, -EINVAL);
	assert_int_equal(o.unique, 7);
	/* ... or less than itself, or extensions beyond its end. */
	h.len = 3;
	memcpy(f->in, &h, sizeof(h));
	kap_fs_handle(f->fs, f->in, sizeof(h) + 2, f->out, sizeof(f->out));
	memcpy(&o, f->out, sizeof(o));
	assert_int_equal(o.error, -EINVAL);
	h.len = sizeof(h) + 2;
	h.total_extlen = 1;
	memcpy(f->in, &h, sizeof(h));
	kap_fs_handle(f->fs, f->in, sizeof(h) + 2, f->out, sizeof(f->out));
	memcpy(&o, f->out, sizeof(o));
	assert_int_equal(o.error, -EINVAL);

	/* Argument structs cut short. */
	assert_int_equal(send1(f, FUSE_READ, 0, "abc", 3), -EINVAL);
	assert_int_equal(send1(f, FUSE_INIT, 0, "abc", 3), -EINVAL);
	assert_int_equal(send1(f, FUSE_SETATTR, FUSE_ROOT_ID, "abc", 3), -EINVAL);

	/* READ and WRITE sizes beyond the caps or beyond the data sent. */
	uint64_t node, fh;
	assert_int_equal(create(f, FUSE_ROOT_ID, "f", &node, &fh), 0);
	assert_int_equal(read_fh(f, fh, 0, UINT32_MAX), -EINVAL);
	assert_int_equal(read_fh(f, fh, 0, KAP_FS_MAX_IO + 1), -EINVAL);
	assert_int_equal(read_fh(f, fh, UINT64_MAX, 10), -EINVAL);
	struct fuse_write_in w = {.fh = fh, .offset = 0, .size = 1000};
	assert_int_equal(sendv(f, FUSE_WRITE, 0, &w, sizeof(w), "short", 5), -EINVAL);
	w.size = UINT32_MAX;
	assert_int_equal(sendv(f, FUSE_WRITE, 0, &w, sizeof(w), "short", 5), -EINVAL);
	/* A READ bigger than the driver's buffers: refused, nothing written past them. */
	struct fuse_read_in ri = {.fh = fh, .offset = 0, .size = 4096};
	h = (struct fuse_in_header){
	    .len = sizeof(h) + sizeof(ri), .opcode = FUSE_READ, .unique = 9};
	memcpy(f->in, &h, sizeof(h));
	memcpy(f->in + sizeof(h), &ri, sizeof(ri));
	memset(f->out, 0xAA, 64);
	n = kap_fs_handle(f->fs, f->in, h.len, f->out, 32);
	assert_int_equal(n, sizeof(o));
	for (size_t i = 32; i < 64; i++)
		assert_int_equal(f->out[i], 0xAA);
	/* READDIR with a huge size is bounded by the reply buffer. */
	uint64_t dh;
	assert_int_equal(open_node(f, FUSE_OPENDIR, FUSE_ROOT_ID, O_RDONLY, &dh), 0);
	struct fuse_read_in rd = {.fh = dh, .size = UINT32_MAX};
	assert_int_equal(send1(f, FUSE_READDIR, 0, &rd, sizeof(rd)), 0);
	assert_true(f->outlen <= sizeof(f->out));
	/* A BATCH_FORGET claiming more entries than it holds. */
	struct fuse_batch_forget_in bf = {.count = UINT32_MAX};
	struct fuse_forget_one one = {.nodeid = node, .nlookup = 1};
	assert_int_equal(sendv(f, FUSE_BATCH_FORGET, 0, &bf, sizeof(bf), &one, sizeof(one)), 1);
	assert_int_equal(kap_fs_nodes(f->fs), 1);
}

static void test_ids(void **state)
{
	struct fx *f = *state;
	/* Before INIT nothing is served. */
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "x", NULL), -EIO);
	init(f);
	struct fuse_getattr_in ga = {0};
	assert_int_equal(send1(f, FUSE_GETATTR, 0, &ga, sizeof(ga)), -ESTALE);
	assert_int_equal(send1(f, FUSE_GETATTR, 2, &ga, sizeof(ga)), -ESTALE);
	assert_int_equal(send1(f, FUSE_GETATTR, 12345, &ga, sizeof(ga)), -ESTALE);
	assert_int_equal(send1(f, FUSE_GETATTR, UINT64_MAX, &ga, sizeof(ga)), -ESTALE);
	assert_int_equal(send1(f, FUSE_GETATTR, (1ULL << 32) | 1, &ga, sizeof(ga)), -ESTALE);
	struct fuse_read_in ri = {.fh = 0, .size = 10};
	assert_int_equal(send1(f, FUSE_READ, 0, &ri, sizeof(ri)), -EBADF);
	ri.fh = UINT64_MAX;
	assert_int_equal(send1(f, FUSE_READ, 0, &ri, sizeof(ri)), -EBADF);
	struct fuse_release_in rel = {.fh = 77};
	assert_int_equal(send1(f, FUSE_RELEASE, 0, &rel, sizeof(rel)), -EBADF);

	/* A file handle is not a directory handle, nor the other way round. */
	uint64_t node, fh, dh;
	assert_int_equal(create(f, FUSE_ROOT_ID, "f", &node, &fh), 0);
	struct fuse_read_in rd = {.fh = fh, .size = 4096};
	assert_int_equal(send1(f, FUSE_READDIR, 0, &rd, sizeof(rd)), -EBADF);
	assert_int_equal(open_node(f, FUSE_OPENDIR, FUSE_ROOT_ID, O_RDONLY, &dh), 0);
	rd.fh = dh;
	assert_int_equal(send1(f, FUSE_READ, 0, &rd, sizeof(rd)), -EBADF);
	/* A released handle is gone. */
	rel.fh = fh;
	assert_int_equal(send1(f, FUSE_RELEASE, 0, &rel, sizeof(rel)), 0);
	assert_int_equal(send1(f, FUSE_RELEASE, 0, &rel, sizeof(rel)), -EBADF);
	assert_int_equal(write_fh(f, fh, 0, "x"), -EBADF);

	/* Two lookups, two forgets; the third forget and the node afterwards are stale. */
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "f", NULL), 0);
	assert_int_equal(kap_fs_nodes(f->fs), 2);
	struct fuse_forget_in fg = {.nlookup = 1};
	assert_int_equal(send1(f, FUSE_FORGET, node, &fg, sizeof(fg)), 1);
	assert_int_equal(kap_fs_nodes(f->fs), 2);
	assert_int_equal(send1(f, FUSE_FORGET, node, &fg, sizeof(fg)), 1);
	assert_int_equal(kap_fs_nodes(f->fs), 1);
	assert_int_equal(send1(f, FUSE_FORGET, node, &fg, sizeof(fg)), 1);
	assert_int_equal(send1(f, FUSE_GETATTR, node, &ga, sizeof(ga)), -ESTALE);
	/* The slot's next tenant has another id; the old one stays stale. */
	struct fuse_entry_out e;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "f", &e), 0);
	assert_int_not_equal(e.nodeid, node);
	assert_int_equal(send1(f, FUSE_GETATTR, node, &ga, sizeof(ga)), -ESTALE);
	/* The root is never forgotten. */
	fg.nlookup = UINT64_MAX;
	assert_int_equal(send1(f, FUSE_FORGET, FUSE_ROOT_ID, &fg, sizeof(fg)), 1);
	assert_int_equal(send1(f, FUSE_GETATTR, FUSE_ROOT_ID, &ga, sizeof(ga)), 0);
	/* A second INIT starts over: the old node id is stale. */
	init(f);
	assert_int_equal(send1(f, FUSE_GETATTR, e.nodeid, &ga, sizeof(ga)), -ESTALE);
	assert_int_equal(kap_fs_handles(f->fs), 0);
}

/*
 * The kernel sends FORGET on the hiprio queue with no writable buffer at all (virtio_fs.c,
 * virtio_fs_send_forget): it must still be served, while any other request without room for
 * a reply header is dropped before it has effects.
 */
static void test_forget_without_reply_buffer(void **state)
{
	struct fx *f = *state;
	init(f);
	uint64_t node, fh;
	assert_int_equal(create(f, FUSE_ROOT_ID, "f", &node, &fh), 0);
	assert_int_equal(kap_fs_nodes(f->fs), 2);
	struct {
		struct fuse_in_header h;
		struct fuse_forget_in a;
	} fg = {.h = {.len = sizeof(fg), .opcode = FUSE_FORGET, .unique = 99, .nodeid = node},
		.a = {.nlookup = 1}};
	assert_int_equal(kap_fs_handle(f->fs, &fg, sizeof(fg), f->out, 0), 0);
	assert_int_equal(kap_fs_nodes(f->fs), 1);
	/* A CREATE without reply room makes nothing. */
	struct {
		struct fuse_in_header h;
		struct fuse_create_in a;
		char name[4];
	} cr = {.h = {.len = sizeof(cr), .opcode = FUSE_CREATE, .unique = 100, .nodeid = 1},
		.a = {.flags = O_RDWR, .mode = S_IFREG | 0644},
		.name = "new"};
	assert_int_equal(kap_fs_handle(f->fs, &cr, sizeof(cr), f->out, 8), 0);
	char p[160];
	host_path(f, p, sizeof(p), "new");
	assert_int_equal(access(p, F_OK), -1);
	assert_int_equal(kap_fs_handles(f->fs), 1);
}

static void test_special_files(void **state)
{
	struct fx *f = *state;
	init(f);
	struct fuse_mknod_in mn = {.mode = S_IFCHR | 0666, .rdev = makedev(1, 3)};
	assert_int_equal(sendv(f, FUSE_MKNOD, FUSE_ROOT_ID, &mn, sizeof(mn), "null", 5), -EPERM);
	mn.mode = S_IFBLK | 0666;
	assert_int_equal(sendv(f, FUSE_MKNOD, FUSE_ROOT_ID, &mn, sizeof(mn), "sda", 4), -EPERM);
	mn.mode = S_IFIFO | 0644;
	assert_int_equal(sendv(f, FUSE_MKNOD, FUSE_ROOT_ID, &mn, sizeof(mn), "fifo", 5), 0);
	struct fuse_entry_out e;
	memcpy(&e, result(f), sizeof(e));
	assert_true(S_ISFIFO(e.attr.mode));
	/* A FIFO (or a host device node in the share) is never opened on the host. */
	uint64_t fh;
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDONLY | O_NONBLOCK, &fh), -EPERM);
	/* RENAME2 flags beyond NOREPLACE and EXCHANGE. */
	struct fuse_rename2_in r2 = {.newdir = FUSE_ROOT_ID, .flags = RENAME_WHITEOUT};
	assert_int_equal(sendv(f, FUSE_RENAME2, FUSE_ROOT_ID, &r2, sizeof(r2), "fifo\0b", 7),
			 -EINVAL);
}

static void test_read_only(void **state)
{
	struct fx *f = *state;
	char p[160];
	host_path(f, p, sizeof(p), "file");
	int fd = open(p, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	close(fd);
	kap_fs_close(f->fs);
	assert_int_equal(kap_fs_open(&f->fs, f->root, true, NULL), 0);
	init(f);
	struct fuse_entry_out e;
	assert_int_equal(lookup(f, FUSE_ROOT_ID, "file", &e), 0);
	uint64_t fh, n;
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDWR, &fh), -EROFS);
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDONLY | O_TRUNC, &fh), -EROFS);
	assert_int_equal(open_node(f, FUSE_OPEN, e.nodeid, O_RDONLY, &fh), 0);
	assert_int_equal(read_fh(f, fh, 0, 10), 0);
	assert_memory_equal(result(f), "data", 4);
	assert_int_equal(write_fh(f, fh, 0, "x"), -EROFS);
	assert_int_equal(create(f, FUSE_ROOT_ID, "new", &n, &fh), -EROFS);
	struct fuse_mkdir_in mk = {.mode = 0755};
	assert_int_equal(sendv(f, FUSE_MKDIR, FUSE_ROOT_ID, &mk, sizeof(mk), "d", 2), -EROFS);
	assert_int_equal(name_op(f, FUSE_UNLINK, FUSE_ROOT_ID, "file"), -EROFS);
	struct fuse_setattr_in sa = {.valid = FATTR_SIZE};
	assert_int_equal(send1(f, FUSE_SETATTR, e.nodeid, &sa, sizeof(sa)), -EROFS);
	assert_int_equal(sendv(f, FUSE_SYMLINK, FUSE_ROOT_ID, "s", 2, "t", 2), -EROFS);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 4);
}

/* CREATE of a name that exists (no O_EXCL) opens it; only what it made gets a new owner. */
static void test_create_existing_keeps_owner(void **state)
{
	struct fx *f = *state;
	if (geteuid() != 0)
		skip();
	init(f);
	char p[160];
	host_path(f, p, sizeof(p), "theirs");
	int fd = open(p, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	assert_int_equal(fchown(fd, 1234, 1234), 0);
	close(fd);
	uint64_t node, fh;
	assert_int_equal(create(f, FUSE_ROOT_ID, "theirs", &node, &fh), 0);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 1234);
	assert_int_equal(st.st_size, 4);
	/* O_EXCL keeps its meaning. */
	struct fuse_create_in in = {.flags = O_RDWR | O_EXCL, .mode = S_IFREG | 0644};
	assert_int_equal(sendv(f, FUSE_CREATE, FUSE_ROOT_ID, &in, sizeof(in), "theirs", 7),
			 -EEXIST);
	/* A new file is the requester's (the test's own uid here). */
	assert_int_equal(create(f, FUSE_ROOT_ID, "mine", &node, &fh), 0);
	host_path(f, p, sizeof(p), "mine");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_uid, getuid());
}

static void test_open_errors(void **state)
{
	struct fx *f = *state;
	struct kap_fs *fs = NULL;
	struct kapsel_error *err = NULL;
	char p[160];
	snprintf(p, sizeof(p), "%s/missing", f->top);
	assert_int_equal(kap_fs_open(&fs, p, false, &err), -ENOENT);
	assert_non_null(err);
	kapsel_error_free(err);
	err = NULL;
	snprintf(p, sizeof(p), "%s/outside", f->top);
	assert_int_equal(kap_fs_open(&fs, p, false, &err), -ENOTDIR);
	kapsel_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_symlink_outside, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lengths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forget_without_reply_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_special_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_existing_keeps_owner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
