/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-fs (virtio 1.2 §5.11): a host directory served to the guest over the FUSE protocol
 * (linux/fuse.h, as the kernel's virtio-fs client speaks it). Queue 0 is hiprio (FORGET), queue
 * 1 the requests; each request is the driver's readable buffers (fuse_in_header + arguments),
 * each reply goes into its writable ones (fuse_out_header + result).
 *
 * The guest is hostile. What it controls is every byte of a request, and what it must never
 * get is a host path outside the shared directory, a host fd, or memory it did not give us:
 *
 *   - Every node is an O_PATH fd opened beneath its parent's, never a path. A name from the
 *     guest must be one component (no '/', not "." or "..", at most NAME_MAX bytes) and is
 *     opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and
 *     O_NOFOLLOW: a symlink in the share is a node of its own, whose text the guest kernel reads
 *     with READLINK and follows itself, inside the guest. The host follows none.
 *   - Every other call is fd-relative (*at with AT_EMPTY_PATH or AT_SYMLINK_NOFOLLOW). A node
 *     cannot be reopened for reading or writing from its O_PATH fd alone, so OPEN, OPENDIR and
 *     a chmod go through /proc/self/fd/N. That is a magic link, and it is safe here because it
 *     resolves to exactly the inode the fd holds, with no path walk to race; it is used only on
 *     regular files and directories (a symlink node is refused with ELOOP, a device or FIFO with
 *     EPERM, so guest-made device nodes never open host devices).
 *   - MKNOD makes only regular files, FIFOs and sockets: a block or character device the guest
 *     could create in a host directory would be a host device to any host process using it.
 *   - Node ids and file handles are table indices with a generation: one never issued, already
 *     forgotten or released, or from before a reset answers ESTALE or EBADF. The tables are
 *     fixed (KAP_FS_MAX_NODES, KAP_FS_MAX_HANDLES) and full tables answer ENFILE.
 *   - Lengths: the device copies at most KAP_FS_IN_MAX request bytes and offers at most
 *     KAP_FS_OUT_MAX reply bytes; the header's len must lie within what was copied, every
 *     argument struct and NUL-terminated name within len, READ and WRITE at most KAP_FS_MAX_IO.
 *     Nothing allocates per request.
 *
 * Permission checks are the guest kernel's (virtio-fs mounts with default_permissions); the
 * host side runs as kapsel does and gives new files the requester's uid and gid when it can.
 * xattrs are not served: GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR answer ENOSYS, which the
 * kernel remembers. DAX windows, locks and notifications are not offered.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fuse.h>
#include <linux/virtio_fs.h>
#include <linux/virtio_ids.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/log.h"
#include "core/syscalls.h"
#include "vmm/virtio/fs.h"
#include "vmm/virtio/transport.h"

/* How long the guest may cache entries and attributes: short, as the host may change them. */
#define VALID_SEC 1
#define NBUCKETS  8192u
/* A handler's result for FORGET: nothing goes back. -NO_REPLY must be no -errno. */
#define NO_REPLY 0x40000000
#define RESOLVE	 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

struct node {
	int fd; /* O_PATH; -1: free */
	uint32_t gen;
	uint64_t nlookup;
	dev_t dev;
	ino_t ino;
	mode_t type;  /* S_IFMT bits */
	int32_t next; /* hash chain, or the free list */
};

struct handle {
	int fd; /* -1: free */
	uint32_t gen;
	bool dir;
};

struct kap_fs {
	int proc_fd; /* /proc/self/fd, for reopening nodes */
	bool ro;
	bool initialised; /* FUSE_INIT done */
	struct node *nodes;
	int32_t *bucket;
	int32_t free_node;
	unsigned int live_nodes;
	struct handle *handles;
	uint32_t handle_gen;
	uint8_t dirbuf[KAP_FS_MAX_IO] __attribute__((aligned(8))); /* getdents64 records */
};

static uint32_t hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev;
	return (uint32_t)(h >> 32) & (NBUCKETS - 1);
}

static uint64_t node_id(const struct kap_fs *fs, const struct node *n)
{
	return ((uint64_t)n->gen << 32) | (uint64_t)(n - fs->nodes + 1);
}

/* The node behind a guest's node id, or NULL for one never issued or already forgotten. */
static struct node *get_node(struct kap_fs *fs, uint64_t id)
{
	uint64_t idx = (id & 0xffffffffu) - 1;
	if ((id & 0xffffffffu) == 0 || idx >= KAP_FS_MAX_NODES)
		return NULL;
	struct node *n = &fs->nodes[idx];
	return n->fd >= 0 && n->gen == (uint32_t)(id >> 32) ? n : NULL;
}

static void unhash(struct kap_fs *fs, struct node *n)
{
	int32_t self = (int32_t)(n - fs->nodes);
	for (int32_t *p = &fs->bucket[hash(n->dev, n->ino)]; *p >= 0; p = &fs->nodes[*p].next)
		if (*p == self) {
			*p = n->next;
			return;
		}
}

static void drop_node(struct kap_fs *fs, struct node *n)
{
	unhash(fs, n);
	close(n->fd);
	n->fd = -1;
	n->nlookup = 0;
	n->next = fs->free_node;
	fs->free_node = (int32_t)(n - fs->nodes);
	fs->live_nodes--;
}

/* Takes fd (an O_PATH fd with stat st): the node for that inode, one more lookup on it. */
static struct node *add_node(struct kap_fs *fs, int fd, const struct stat *st, int *err)
{
	uint32_t b = hash(st->st_dev, st->st_ino);
	for (int32_t i = fs->bucket[b]; i >= 0; i = fs->nodes[i].next) {
		struct node *n = &fs->nodes[i];
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			close(fd);
			if (n->nlookup != UINT64_MAX)
				n->nlookup++;
			return n;
		}
	}
	if (fs->free_node < 0) {
		close(fd);
		*err = -ENFILE;
		return NULL;
	}
	struct node *n = &fs->nodes[fs->free_node];
	fs->free_node = n->next;
	n->fd = fd;
	n->gen = n->gen + 1 ? n->gen + 1 : 1; /* 0 is the root's */
	n->nlookup = 1;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	n->type = st->st_mode & S_IFMT;
	n->next = fs->bucket[b];
	fs->bucket[b] = (int32_t)(n - fs->nodes);
	fs->live_nodes++;
	return n;
}

static struct handle *get_handle(struct kap_fs *fs, uint64_t fh, bool dir)
{
	uint64_t idx = fh & 0xffffffffu;
	if (idx >= KAP_FS_MAX_HANDLES)
		return NULL;
	struct handle *h = &fs->handles[idx];
	return h->fd >= 0 && h->gen == (uint32_t)(fh >> 32) && h->dir == dir ? h : NULL;
}

static int add_handle(struct kap_fs *fs, int fd, bool dir, uint64_t *fh)
{
	for (uint32_t i = 0; i < KAP_FS_MAX_HANDLES; i++) {
		struct handle *h = &fs->handles[i];
		if (h->fd >= 0)
			continue;
		fs->handle_gen = fs->handle_gen + 1 ? fs->handle_gen + 1 : 1;
		*h = (struct handle){.fd = fd, .gen = fs->handle_gen, .dir = dir};
		*fh = ((uint64_t)h->gen << 32) | i;
		return 0;
	}
	close(fd);
	return -ENFILE;
}

void kap_fs_reset(struct kap_fs *fs)
{
	for (uint32_t i = 1; i < KAP_FS_MAX_NODES; i++)
		if (fs->nodes[i].fd >= 0)
			drop_node(fs, &fs->nodes[i]);
	for (uint32_t i = 0; i < KAP_FS_MAX_HANDLES; i++)
		if (fs->handles[i].fd >= 0) {
			close(fs->handles[i].fd);
			fs->handles[i].fd = -1;
		}
	fs->initialised = false;
}

unsigned int kap_fs_nodes(const struct kap_fs *fs)
{
	return fs->live_nodes;
}

unsigned int kap_fs_handles(const struct kap_fs *fs)
{
	unsigned int n = 0;
	for (uint32_t i = 0; i < KAP_FS_MAX_HANDLES; i++)
		n += fs->handles[i].fd >= 0;
	return n;
}

/* Reopens a regular file or directory node through its /proc/self/fd magic link. */
static int reopen(struct kap_fs *fs, const struct node *n, int flags)
{
	if (n->type == S_IFLNK)
		return -ELOOP;
	if (n->type != S_IFREG && n->type != S_IFDIR)
		return -EPERM;
	char name[16];
	snprintf(name, sizeof(name), "%d", n->fd);
	int fd = openat(fs->proc_fd, name, flags | O_CLOEXEC | O_NOCTTY);
	return fd < 0 ? -errno : fd;
}

static void fill_attr(struct fuse_attr *a, const struct stat *st)
{
	*a = (struct fuse_attr){
	    .ino = st->st_ino,
	    .size = (uint64_t)st->st_size,
	    .blocks = (uint64_t)st->st_blocks,
	    .atime = (uint64_t)st->st_atim.tv_sec,
	    .mtime = (uint64_t)st->st_mtim.tv_sec,
	    .ctime = (uint64_t)st->st_ctim.tv_sec,
	    .atimensec = (uint32_t)st->st_atim.tv_nsec,
	    .mtimensec = (uint32_t)st->st_mtim.tv_nsec,
	    .ctimensec = (uint32_t)st->st_ctim.tv_nsec,
	    .mode = st->st_mode,
	    .nlink = (uint32_t)st->st_nlink,
	    .uid = st->st_uid,
	    .gid = st->st_gid,
	    .rdev = (uint32_t)st->st_rdev,
	    .blksize = (uint32_t)st->st_blksize,
	};
}

static int stat_node(const struct node *n, struct stat *st)
{
	return fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* A name from the guest: one component, NUL-terminated inside the request. */
static int take_name(const uint8_t **p, size_t *rem, const char **name)
{
	size_t len = strnlen((const char *)*p, *rem);
	if (len == *rem)
		return -EINVAL;
	if (len == 0 || len > NAME_MAX)
		return len ? -ENAMETOOLONG : -EINVAL;
	const char *s = (const char *)*p;
	if (memchr(s, '/', len) || !strcmp(s, ".") || !strcmp(s, ".."))
		return -EINVAL;
	*name = s;
	*p += len + 1;
	*rem -= len + 1;
	return 0;
}

/* Opens name beneath dirfd as a node; fills e for an entry reply. */
static int lookup_at(struct kap_fs *fs, int dirfd, const char *name, struct fuse_entry_out *e,
		     struct node **out)
{
	int fd = kap_openat2(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, RESOLVE);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	int r = 0;
	struct node *n = add_node(fs, fd, &st, &r);
	if (!n)
		return r;
	*e = (struct fuse_entry_out){
	    .nodeid = node_id(fs, n),
	    .generation = 0,
	    .entry_valid = VALID_SEC,
	    .attr_valid = VALID_SEC,
	};
	fill_attr(&e->attr, &st);
	if (out)
		*out = n;
	return 0;
}

/* Gives what the guest just created its requester's owner (best effort: kapsel may not be root). */
static void set_owner(const struct node *n, const struct fuse_in_header *h)
{
	if (fchownat(n->fd, "", h->uid, h->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		kap_debug("virtio-fs: chown new inode to %u:%u: %s", h->uid, h->gid,
			  strerror(errno));
}

/* After a creating call: the entry reply for name; what was made gets the requester as owner. */
static int created(struct kap_fs *fs, const struct node *parent, const char *name,
		   const struct fuse_in_header *h, bool made, uint8_t *res, size_t rcap)
{
	struct fuse_entry_out e;
	struct node *n;
	if (rcap < sizeof(e))
		return -EINVAL;
	int r = lookup_at(fs, parent->fd, name, &e, &n);
	if (r < 0)
		return r;
	if (made) {
		set_owner(n, h);
		/* The attributes before the chown would be stale: read them again. */
		struct stat st;
		if (stat_node(n, &st) == 0)
			fill_attr(&e.attr, &st);
	}
	memcpy(res, &e, sizeof(e));
	return sizeof(e);
}

/* Open flags a guest may pass on: access mode and the flags that change I/O, nothing else. */
static int open_flags(uint32_t f)
{
	return (int)(f & (O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC | O_NONBLOCK));
}

static bool writes(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Every opcode's handler: arguments after the header, the result area; -errno or its length. */
struct req {
	const struct fuse_in_header *h;
	struct node *n; /* the header's nodeid, NULL when not a node */
	const uint8_t *arg;
	size_t alen;
	uint8_t *res;
	size_t rcap;
};

#define ARG(r, type, var)                                                                          \
	type var;                                                                                  \
	if ((r)->alen < sizeof(var))                                                               \
		return -EINVAL;                                                                    \
	memcpy(&var, (r)->arg, sizeof(var))

static int reply(struct req *r, const void *p, size_t len)
{
	if (len > r->rcap)
		return -EINVAL;
	memcpy(r->res, p, len);
	return (int)len;
}

static int op_init(struct kap_fs *fs, struct req *r)
{
	/* FUSE_INIT's first four fields exist since 7.0; flags2 and the rest since 7.36. */
	struct fuse_init_in in = {0};
	if (r->alen < offsetof(struct fuse_init_in, flags2))
		return -EINVAL;
	memcpy(&in, r->arg, r->alen < sizeof(in) ? r->alen : sizeof(in));
	struct fuse_init_out out = {.major = FUSE_KERNEL_VERSION,
				    .minor = FUSE_KERNEL_MINOR_VERSION};
	if (in.major < 7)
		return -EPROTO;
	/* A newer major: answer with ours and the kernel asks again (fuse_lowlevel.c does too). */
	if (in.major > 7)
		return reply(r, &out, sizeof(out));
	kap_fs_reset(fs);
	uint64_t offered = in.flags;
	if (in.flags & FUSE_INIT_EXT)
		offered |= (uint64_t)in.flags2 << 32;
	uint64_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ATOMIC_O_TRUNC |
			FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS | FUSE_INIT_EXT;
	uint64_t flags = offered & want;
	out.minor = in.minor < FUSE_KERNEL_MINOR_VERSION ? in.minor : FUSE_KERNEL_MINOR_VERSION;
	out.max_readahead = in.max_readahead;
	out.flags = (uint32_t)flags;
	out.flags2 = (uint32_t)(flags >> 32);
	out.max_background = 16;
	out.congestion_threshold = 12;
	out.max_write = KAP_FS_MAX_IO;
	out.time_gran = 1;
	out.max_pages = KAP_FS_MAX_IO / 4096;
	fs->initialised = true;
	/* fuse.h: a 7.4 kernel reads 8 bytes, a 7.5-7.22 kernel 24 bytes of fuse_init_out. */
	size_t len = out.minor < 5    ? FUSE_COMPAT_INIT_OUT_SIZE
		     : out.minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE
				      : sizeof(out);
	return reply(r, &out, len);
}

static void forget(struct kap_fs *fs, uint64_t id, uint64_t nlookup)
{
	struct node *n = get_node(fs, id);
	/* The root is never forgotten; an unknown id (forgotten twice, never issued) is ignored. */
	if (!n || n == fs->nodes)
		return;
	n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
	if (n->nlookup == 0)
		drop_node(fs, n);
}

static int op_forget(struct kap_fs *fs, struct req *r)
{
	if (r->alen >= sizeof(struct fuse_forget_in)) {
		struct fuse_forget_in f;
		memcpy(&f, r->arg, sizeof(f));
		forget(fs, r->h->nodeid, f.nlookup);
	}
	return -NO_REPLY;
}

static int op_batch_forget(struct kap_fs *fs, struct req *r)
{
	if (r->alen < sizeof(struct fuse_batch_forget_in))
		return -NO_REPLY;
	struct fuse_batch_forget_in b;
	memcpy(&b, r->arg, sizeof(b));
	size_t room = (r->alen - sizeof(b)) / sizeof(struct fuse_forget_one);
	for (size_t i = 0; i < b.count && i < room; i++) {
		struct fuse_forget_one o;
		memcpy(&o, r->arg + sizeof(b) + i * sizeof(o), sizeof(o));
		forget(fs, o.nodeid, o.nlookup);
	}
	return -NO_REPLY;
}

static int op_lookup(struct kap_fs *fs, struct req *r)
{
	const uint8_t *p = r->arg;
	size_t rem = r->alen;
	const char *name;
	struct fuse_entry_out e;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	if (r->rcap < sizeof(e))
		return -EINVAL;
	if ((rc = lookup_at(fs, r->n->fd, name, &e, NULL)) < 0)
		return rc;
	return reply(r, &e, sizeof(e));
}

static int attr_reply(struct req *r, const struct node *n)
{
	struct stat st;
	int rc = stat_node(n, &st);
	if (rc < 0)
		return rc;
	struct fuse_attr_out o = {.attr_valid = VALID_SEC};
	fill_attr(&o.attr, &st);
	return reply(r, &o, sizeof(o));
}

static int op_setattr(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_setattr_in, s);
	struct node *n = r->n;
	if (fs->ro)
		return -EROFS;
	char name[16];
	snprintf(name, sizeof(name), "%d", n->fd);
	if (s.valid & FATTR_MODE) {
		if (n->type == S_IFLNK)
			return -EOPNOTSUPP;
		if (fchmodat(fs->proc_fd, name, s.mode & 07777, 0) < 0)
			return -errno;
	}
	if (s.valid & (FATTR_UID | FATTR_GID)) {
		uid_t uid = s.valid & FATTR_UID ? s.uid : (uid_t)-1;
		gid_t gid = s.valid & FATTR_GID ? s.gid : (gid_t)-1;
		if (fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (s.valid & FATTR_SIZE) {
		if (s.size > INT64_MAX)
			return -EFBIG;
		struct handle *h = s.valid & FATTR_FH ? get_handle(fs, s.fh, false) : NULL;
		cleanup_close int own = -EBADF;
		if (!h) {
			if (n->type != S_IFREG)
				return n->type == S_IFDIR ? -EISDIR : -EINVAL;
			if ((own = reopen(fs, n, O_WRONLY)) < 0)
				return own;
		}
		if (ftruncate(h ? h->fd : own, (off_t)s.size) < 0)
			return -errno;
	}
	if (s.valid & (FATTR_ATIME | FATTR_MTIME)) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
		if (s.valid & FATTR_ATIME)
			ts[0] = s.valid & FATTR_ATIME_NOW
				    ? (struct timespec){.tv_nsec = UTIME_NOW}
				    : (struct timespec){(time_t)s.atime, s.atimensec % 1000000000};
		if (s.valid & FATTR_MTIME)
			ts[1] = s.valid & FATTR_MTIME_NOW
				    ? (struct timespec){.tv_nsec = UTIME_NOW}
				    : (struct timespec){(time_t)s.mtime, s.mtimensec % 1000000000};
		if (utimensat(n->fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return attr_reply(r, n);
}

static int op_open(struct kap_fs *fs, struct req *r, bool dir)
{
	ARG(r, struct fuse_open_in, in);
	int flags = dir ? O_RDONLY | O_DIRECTORY : open_flags(in.flags);
	if (!dir && r->n->type == S_IFDIR)
		return -EISDIR;
	if (dir && r->n->type != S_IFDIR)
		return -ENOTDIR;
	if (fs->ro && writes(flags))
		return -EROFS;
	struct fuse_open_out o = {0};
	if (r->rcap < sizeof(o))
		return -EINVAL;
	int fd = reopen(fs, r->n, flags);
	if (fd < 0)
		return fd;
	int rc = add_handle(fs, fd, dir, &o.fh);
	if (rc < 0)
		return rc;
	return reply(r, &o, sizeof(o));
}

static int op_create(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_create_in, in);
	const uint8_t *p = r->arg + sizeof(in);
	size_t rem = r->alen - sizeof(in);
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	if (fs->ro)
		return -EROFS;
	if (r->n->type != S_IFDIR)
		return -ENOTDIR;
	struct {
		struct fuse_entry_out e;
		struct fuse_open_out o;
	} out = {0};
	if (r->rcap < sizeof(out))
		return -EINVAL;
	/*
	 * Beneath the parent, never through a symlink: an existing one fails with ELOOP. O_EXCL
	 * first, so that only a file this call made changes owner; without the guest's O_EXCL an
	 * existing file is then opened as it is.
	 */
	uint64_t flags = (uint64_t)(open_flags(in.flags) | O_NOFOLLOW | O_CLOEXEC);
	bool made = true;
	int fd = kap_openat2(r->n->fd, name, flags | O_CREAT | O_EXCL, in.mode & 07777, RESOLVE);
	if (fd < 0 && errno == EEXIST && !(in.flags & O_EXCL)) {
		made = false;
		fd = kap_openat2(r->n->fd, name, flags, 0, RESOLVE);
	}
	if (fd < 0)
		return -errno;
	if ((rc = created(fs, r->n, name, r->h, made, (uint8_t *)&out.e, sizeof(out.e))) < 0) {
		close(fd);
		return rc;
	}
	if ((rc = add_handle(fs, fd, false, &out.o.fh)) < 0) {
		forget(fs, out.e.nodeid, 1);
		return rc;
	}
	return reply(r, &out, sizeof(out));
}

static int op_read(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_read_in, in);
	struct handle *h = get_handle(fs, in.fh, false);
	if (!h)
		return -EBADF;
	if (in.size > KAP_FS_MAX_IO || in.size > r->rcap || in.offset > INT64_MAX)
		return -EINVAL;
	ssize_t n = pread(h->fd, r->res, in.size, (off_t)in.offset);
	return n < 0 ? -errno : (int)n;
}

static int op_write(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_write_in, in);
	if (fs->ro)
		return -EROFS;
	struct handle *h = get_handle(fs, in.fh, false);
	if (!h)
		return -EBADF;
	/* The data follows the argument; its size must not claim more than the request holds. */
	if (in.size > KAP_FS_MAX_IO || in.size > r->alen - sizeof(in) || in.offset > INT64_MAX)
		return -EINVAL;
	ssize_t n = pwrite(h->fd, r->arg + sizeof(in), in.size, (off_t)in.offset);
	if (n < 0)
		return -errno;
	struct fuse_write_out o = {.size = (uint32_t)n};
	return reply(r, &o, sizeof(o));
}

static int op_release(struct kap_fs *fs, struct req *r, bool dir)
{
	ARG(r, struct fuse_release_in, in);
	struct handle *h = get_handle(fs, in.fh, dir);
	if (!h)
		return -EBADF;
	close(h->fd);
	h->fd = -1;
	return 0;
}

static int op_flush(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_flush_in, in);
	return get_handle(fs, in.fh, false) ? 0 : -EBADF;
}

static int op_fsync(struct kap_fs *fs, struct req *r, bool dir)
{
	ARG(r, struct fuse_fsync_in, in);
	struct handle *h = get_handle(fs, in.fh, dir);
	if (!h)
		return -EBADF;
	int rc = (in.fsync_flags & 1) ? fdatasync(h->fd) : fsync(h->fd);
	return rc < 0 ? -errno : 0;
}

/* getdents64(2)'s record; glibc exports no type for it. */
struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static int op_readdir(struct kap_fs *fs, struct req *r, bool plus)
{
	ARG(r, struct fuse_read_in, in);
	struct handle *h = get_handle(fs, in.fh, true);
	if (!h)
		return -EBADF;
	size_t size = in.size < r->rcap ? in.size : r->rcap;
	if (size > sizeof(fs->dirbuf))
		size = sizeof(fs->dirbuf);
	if (in.offset > INT64_MAX || lseek(h->fd, (off_t)in.offset, SEEK_SET) < 0)
		return -EINVAL;
	long got = syscall(SYS_getdents64, h->fd, fs->dirbuf, size);
	if (got < 0)
		return -errno;
	size_t used = 0;
	for (long pos = 0; pos < got;) {
		const struct linux_dirent64 *d = (const void *)(fs->dirbuf + pos);
		pos += d->d_reclen;
		size_t namelen = strlen(d->d_name);
		size_t ent =
		    plus ? FUSE_DIRENTPLUS_SIZE(
			       &(struct fuse_direntplus){.dirent = {.namelen = (uint32_t)namelen}})
			 : FUSE_DIRENT_SIZE(&(struct fuse_dirent){.namelen = (uint32_t)namelen});
		if (ent > size - used)
			break;
		uint8_t *out = r->res + used;
		memset(out, 0, ent);
		struct fuse_dirent de = {.ino = d->d_ino,
					 .off = (uint64_t)d->d_off,
					 .namelen = (uint32_t)namelen,
					 .type = d->d_type};
		if (plus) {
			/* "." and "..", and an entry gone meanwhile, go without attributes (nodeid
			 * 0). */
			struct fuse_entry_out e = {0};
			if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..") &&
			    lookup_at(fs, h->fd, d->d_name, &e, NULL) < 0)
				memset(&e, 0, sizeof(e));
			memcpy(out, &e, sizeof(e));
			out += sizeof(e);
		}
		memcpy(out, &de, sizeof(de));
		memcpy(out + FUSE_NAME_OFFSET, d->d_name, namelen);
		used += ent;
	}
	return (int)used;
}

static int op_statfs(struct req *r)
{
	struct statfs s;
	if (fstatfs(r->n->fd, &s) < 0)
		return -errno;
	struct fuse_statfs_out o = {.st = {
					.blocks = s.f_blocks,
					.bfree = s.f_bfree,
					.bavail = s.f_bavail,
					.files = s.f_files,
					.ffree = s.f_ffree,
					.bsize = (uint32_t)s.f_bsize,
					.namelen = (uint32_t)s.f_namelen,
					.frsize = (uint32_t)s.f_frsize,
				    }};
	return reply(r, &o, sizeof(o));
}

static int op_mkdir(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_mkdir_in, in);
	const uint8_t *p = r->arg + sizeof(in);
	size_t rem = r->alen - sizeof(in);
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	if (fs->ro)
		return -EROFS;
	if (mkdirat(r->n->fd, name, in.mode & 07777) < 0)
		return -errno;
	return created(fs, r->n, name, r->h, true, r->res, r->rcap);
}

static int op_mknod(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_mknod_in, in);
	const uint8_t *p = r->arg + sizeof(in);
	size_t rem = r->alen - sizeof(in);
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	if (fs->ro)
		return -EROFS;
	mode_t type = in.mode & S_IFMT;
	/* No device nodes in a host directory (see the top of the file). */
	if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK)
		return -EPERM;
	if (mknodat(r->n->fd, name, type | (in.mode & 07777), 0) < 0)
		return -errno;
	return created(fs, r->n, name, r->h, true, r->res, r->rcap);
}

static int op_symlink(struct kap_fs *fs, struct req *r)
{
	const uint8_t *p = r->arg;
	size_t rem = r->alen;
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	/* The target is text the host stores and never follows. */
	size_t tlen = strnlen((const char *)p, rem);
	if (tlen == rem || tlen == 0)
		return -EINVAL;
	if (tlen >= PATH_MAX)
		return -ENAMETOOLONG;
	if (fs->ro)
		return -EROFS;
	if (symlinkat((const char *)p, r->n->fd, name) < 0)
		return -errno;
	return created(fs, r->n, name, r->h, true, r->res, r->rcap);
}

static int op_readlink(struct req *r)
{
	if (r->n->type != S_IFLNK)
		return -EINVAL;
	size_t cap = r->rcap < PATH_MAX ? r->rcap : PATH_MAX;
	ssize_t n = readlinkat(r->n->fd, "", (char *)r->res, cap);
	return n < 0 ? -errno : (int)n;
}

static int op_unlink(struct kap_fs *fs, struct req *r, bool dir)
{
	const uint8_t *p = r->arg;
	size_t rem = r->alen;
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	if (fs->ro)
		return -EROFS;
	return unlinkat(r->n->fd, name, dir ? AT_REMOVEDIR : 0) < 0 ? -errno : 0;
}

static int op_rename(struct kap_fs *fs, struct req *r, bool v2)
{
	uint64_t newdir;
	uint32_t flags = 0;
	size_t fixed = v2 ? sizeof(struct fuse_rename2_in) : sizeof(struct fuse_rename_in);
	if (r->alen < fixed)
		return -EINVAL;
	if (v2) {
		struct fuse_rename2_in in;
		memcpy(&in, r->arg, sizeof(in));
		newdir = in.newdir;
		flags = in.flags;
	} else {
		struct fuse_rename_in in;
		memcpy(&in, r->arg, sizeof(in));
		newdir = in.newdir;
	}
	const uint8_t *p = r->arg + fixed;
	size_t rem = r->alen - fixed;
	const char *oldname, *newname;
	int rc;
	if ((rc = take_name(&p, &rem, &oldname)) < 0 || (rc = take_name(&p, &rem, &newname)) < 0)
		return rc;
	struct node *nd = get_node(fs, newdir);
	if (!nd)
		return -ESTALE;
	if (flags & ~(uint32_t)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (fs->ro)
		return -EROFS;
	return renameat2(r->n->fd, oldname, nd->fd, newname, flags) < 0 ? -errno : 0;
}

static int op_link(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_link_in, in);
	const uint8_t *p = r->arg + sizeof(in);
	size_t rem = r->alen - sizeof(in);
	const char *name;
	int rc = take_name(&p, &rem, &name);
	if (rc < 0)
		return rc;
	struct node *old = get_node(fs, in.oldnodeid);
	if (!old)
		return -ESTALE;
	if (fs->ro)
		return -EROFS;
	if (old->type == S_IFDIR)
		return -EPERM;
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; without it, the fd's magic link. */
	if (linkat(old->fd, "", r->n->fd, name, AT_EMPTY_PATH) < 0) {
		if (errno != ENOENT && errno != EPERM)
			return -errno;
		char fdname[16];
		snprintf(fdname, sizeof(fdname), "%d", old->fd);
		if (linkat(fs->proc_fd, fdname, r->n->fd, name, AT_SYMLINK_FOLLOW) < 0)
			return -errno;
	}
	struct fuse_entry_out e;
	if (r->rcap < sizeof(e))
		return -EINVAL;
	if ((rc = lookup_at(fs, r->n->fd, name, &e, NULL)) < 0)
		return rc;
	return reply(r, &e, sizeof(e));
}

static int op_access(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_access_in, in);
	if (in.mask & ~(uint32_t)(R_OK | W_OK | X_OK))
		return -EINVAL;
	if ((in.mask & W_OK) && fs->ro)
		return -EROFS;
	if (r->n->type == S_IFLNK)
		return 0;
	char name[16];
	snprintf(name, sizeof(name), "%d", r->n->fd);
	return faccessat(fs->proc_fd, name, (int)in.mask, 0) < 0 ? -errno : 0;
}

static int op_lseek(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_lseek_in, in);
	struct handle *h = get_handle(fs, in.fh, false);
	if (!h)
		return -EBADF;
	if (in.whence != SEEK_SET && in.whence != SEEK_CUR && in.whence != SEEK_END &&
	    in.whence != SEEK_DATA && in.whence != SEEK_HOLE)
		return -EINVAL;
	off_t o = lseek(h->fd, (off_t)in.offset, (int)in.whence);
	if (o < 0)
		return -errno;
	struct fuse_lseek_out out = {.offset = (uint64_t)o};
	return reply(r, &out, sizeof(out));
}

static int op_fallocate(struct kap_fs *fs, struct req *r)
{
	ARG(r, struct fuse_fallocate_in, in);
	if (fs->ro)
		return -EROFS;
	struct handle *h = get_handle(fs, in.fh, false);
	if (!h)
		return -EBADF;
	if (in.mode &
	    ~(uint32_t)(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (in.offset > INT64_MAX || in.length > INT64_MAX || in.length == 0)
		return -EINVAL;
	return fallocate(h->fd, (int)in.mode, (off_t)in.offset, (off_t)in.length) < 0 ? -errno : 0;
}

/* Opcodes whose header nodeid names the node they work on. */
static bool needs_node(uint32_t op)
{
	switch (op) {
	case FUSE_LOOKUP:
	case FUSE_GETATTR:
	case FUSE_SETATTR:
	case FUSE_OPEN:
	case FUSE_OPENDIR:
	case FUSE_CREATE:
	case FUSE_STATFS:
	case FUSE_MKDIR:
	case FUSE_MKNOD:
	case FUSE_SYMLINK:
	case FUSE_READLINK:
	case FUSE_UNLINK:
	case FUSE_RMDIR:
	case FUSE_RENAME:
	case FUSE_RENAME2:
	case FUSE_LINK:
	case FUSE_ACCESS:
		return true;
	}
	return false;
}

/* Opcodes whose node must be a directory (the parent of a name). */
static bool needs_dir(uint32_t op)
{
	switch (op) {
	case FUSE_LOOKUP:
	case FUSE_MKDIR:
	case FUSE_MKNOD:
	case FUSE_SYMLINK:
	case FUSE_UNLINK:
	case FUSE_RMDIR:
	case FUSE_RENAME:
	case FUSE_RENAME2:
	case FUSE_LINK:
		return true;
	}
	return false;
}

static int dispatch(struct kap_fs *fs, struct req *r)
{
	uint32_t op = r->h->opcode;
	if (op == FUSE_INIT)
		return op_init(fs, r);
	if (op == FUSE_FORGET)
		return fs->initialised ? op_forget(fs, r) : -NO_REPLY;
	if (op == FUSE_BATCH_FORGET)
		return fs->initialised ? op_batch_forget(fs, r) : -NO_REPLY;
	if (!fs->initialised)
		return -EIO;
	if (needs_node(op)) {
		if (!(r->n = get_node(fs, r->h->nodeid)))
			return -ESTALE;
		if (needs_dir(op) && r->n->type != S_IFDIR)
			return -ENOTDIR;
	}
	switch (op) {
	case FUSE_DESTROY:
		kap_fs_reset(fs);
		return 0;
	case FUSE_LOOKUP:
		return op_lookup(fs, r);
	case FUSE_GETATTR:
		return attr_reply(r, r->n);
	case FUSE_SETATTR:
		return op_setattr(fs, r);
	case FUSE_OPEN:
		return op_open(fs, r, false);
	case FUSE_OPENDIR:
		return op_open(fs, r, true);
	case FUSE_CREATE:
		return op_create(fs, r);
	case FUSE_READ:
		return op_read(fs, r);
	case FUSE_WRITE:
		return op_write(fs, r);
	case FUSE_FLUSH:
		return op_flush(fs, r);
	case FUSE_RELEASE:
		return op_release(fs, r, false);
	case FUSE_RELEASEDIR:
		return op_release(fs, r, true);
	case FUSE_FSYNC:
		return op_fsync(fs, r, false);
	case FUSE_FSYNCDIR:
		return op_fsync(fs, r, true);
	case FUSE_READDIR:
		return op_readdir(fs, r, false);
	case FUSE_READDIRPLUS:
		return op_readdir(fs, r, true);
	case FUSE_STATFS:
		return op_statfs(r);
	case FUSE_MKDIR:
		return op_mkdir(fs, r);
	case FUSE_MKNOD:
		return op_mknod(fs, r);
	case FUSE_SYMLINK:
		return op_symlink(fs, r);
	case FUSE_READLINK:
		return op_readlink(r);
	case FUSE_UNLINK:
		return op_unlink(fs, r, false);
	case FUSE_RMDIR:
		return op_unlink(fs, r, true);
	case FUSE_RENAME:
		return op_rename(fs, r, false);
	case FUSE_RENAME2:
		return op_rename(fs, r, true);
	case FUSE_LINK:
		return op_link(fs, r);
	case FUSE_ACCESS:
		return op_access(fs, r);
	case FUSE_LSEEK:
		return op_lseek(fs, r);
	case FUSE_FALLOCATE:
		return op_fallocate(fs, r);
	}
	/* xattrs, locks, ioctl, poll, DAX mappings, notifications: not served. */
	return -ENOSYS;
}

size_t kap_fs_handle(struct kap_fs *fs, const void *in, size_t inlen, void *out, size_t outcap)
{
	struct fuse_in_header h;
	struct fuse_out_header o = {0};
	if (outcap > KAP_FS_OUT_MAX)
		outcap = KAP_FS_OUT_MAX;
	int rc;
	if (inlen < sizeof(h)) {
		/* No header: no unique to answer to, but the driver still gets its buffer back. */
		memset(&h, 0, sizeof(h));
		rc = -EINVAL;
	} else {
		memcpy(&h, in, sizeof(h));
		o.unique = h.unique;
		/* The header's length must lie inside what the driver's buffers held. */
		size_t len = h.len;
		size_t ext = (size_t)h.total_extlen * 8;
		/*
		 * FORGET comes on the hiprio queue without a writable buffer (it has no reply);
		 * any other request without room for a reply header is dropped unserved.
		 */
		bool no_reply = h.opcode == FUSE_FORGET || h.opcode == FUSE_BATCH_FORGET;
		if (len < sizeof(h) || len > inlen || ext > len - sizeof(h) ||
		    (outcap < sizeof(o) && !no_reply)) {
			rc = -EINVAL;
		} else {
			struct req r = {.h = &h,
					.arg = (const uint8_t *)in + sizeof(h),
					.alen = len - sizeof(h) - ext,
					.res = (uint8_t *)out + sizeof(o),
					.rcap = outcap < sizeof(o) ? 0 : outcap - sizeof(o)};
			rc = dispatch(fs, &r);
		}
	}
	if (rc == -NO_REPLY || outcap < sizeof(o))
		return 0;
	if (rc < 0) {
		o.error = rc;
		o.len = sizeof(o);
	} else {
		o.len = (uint32_t)(sizeof(o) + (size_t)rc);
	}
	memcpy(out, &o, sizeof(o));
	return o.len;
}

int kap_fs_open(struct kap_fs **out, const char *dir, bool ro, struct kapsel_error **err)
{
	struct kap_fs *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return kap_error(err, ENOMEM, "virtio-fs %s", dir);
	fs->ro = ro;
	fs->proc_fd = -1;
	fs->nodes = calloc(KAP_FS_MAX_NODES, sizeof(*fs->nodes));
	fs->bucket = malloc(NBUCKETS * sizeof(*fs->bucket));
	fs->handles = calloc(KAP_FS_MAX_HANDLES, sizeof(*fs->handles));
	if (!fs->nodes || !fs->bucket || !fs->handles) {
		kap_fs_close(fs);
		return kap_error(err, ENOMEM, "virtio-fs %s", dir);
	}
	for (uint32_t i = 0; i < NBUCKETS; i++)
		fs->bucket[i] = -1;
	for (uint32_t i = 0; i < KAP_FS_MAX_HANDLES; i++)
		fs->handles[i].fd = -1;
	fs->free_node = -1;
	for (uint32_t i = KAP_FS_MAX_NODES; i-- > 1;) {
		fs->nodes[i].fd = -1;
		fs->nodes[i].next = fs->free_node;
		fs->free_node = (int32_t)i;
	}
	int root = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		int e = errno;
		kap_fs_close(fs);
		return kap_error(err, e, "virtio-fs %s", dir);
	}
	fs->proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->proc_fd < 0) {
		int e = errno;
		close(root);
		kap_fs_close(fs);
		return kap_error(err, e, "virtio-fs %s: open /proc/self/fd", dir);
	}
	struct stat st;
	if (fstat(root, &st) < 0) {
		int e = errno;
		close(root);
		kap_fs_close(fs);
		return kap_error(err, e, "virtio-fs %s", dir);
	}
	/* The root is node id 1 (FUSE_ROOT_ID): slot 0, generation 0, never forgotten. */
	fs->nodes[0] = (struct node){.fd = root,
				     .nlookup = UINT64_MAX,
				     .dev = st.st_dev,
				     .ino = st.st_ino,
				     .type = S_IFDIR,
				     .next = -1};
	fs->bucket[hash(st.st_dev, st.st_ino)] = 0;
	fs->live_nodes = 1;
	/* Each node holds an fd: let the tables fill before the fd limit does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			kap_debug("virtio-fs: raise RLIMIT_NOFILE: %s", strerror(errno));
	}
	*out = fs;
	return 0;
}

void kap_fs_close(struct kap_fs *fs)
{
	if (!fs)
		return;
	if (fs->nodes && fs->handles && fs->bucket) {
		kap_fs_reset(fs);
		if (fs->nodes[0].fd >= 0)
			close(fs->nodes[0].fd);
	}
	if (fs->proc_fd >= 0)
		close(fs->proc_fd);
	free(fs->nodes);
	free(fs->bucket);
	free(fs->handles);
	free(fs);
}

/* The device: the tag in config space, one request queue, requests served one at a time. */
struct fsdev {
	struct kap_fs *fs;
	struct virtio_fs_config config;
	atomic_bool reset; /* the driver reset the device: forget everything before the next */
	uint8_t *in, *out;
	struct kap_vq_elem elem;
};

static void fs_config_read(struct kap_virtio_dev *d, uint32_t off, void *data, unsigned int len)
{
	struct fsdev *f = d->priv;
	memcpy(data, (const uint8_t *)&f->config + off, len);
}

static void fs_process(struct kap_virtio_dev *d, unsigned int q)
{
	struct fsdev *f = d->priv;
	for (;;) {
		pthread_mutex_lock(&d->lock);
		uint32_t gen = d->generation;
		int got = kap_virtio_pop(d, q, &f->elem);
		pthread_mutex_unlock(&d->lock);
		if (got <= 0)
			return;
		if (atomic_exchange(&f->reset, false))
			kap_fs_reset(f->fs);
		const struct kap_vq_elem *e = &f->elem;
		/* At most KAP_FS_IN_MAX bytes: a longer request fails its header's length check. */
		size_t inlen = (size_t)kap_vq_elem_read(
		    e, 0, f->in, e->read_len < KAP_FS_IN_MAX ? e->read_len : KAP_FS_IN_MAX);
		size_t outcap =
		    e->write_len < KAP_FS_OUT_MAX ? (size_t)e->write_len : KAP_FS_OUT_MAX;
		size_t n = kap_fs_handle(f->fs, f->in, inlen, f->out, outcap);
		kap_vq_elem_write(e, 0, f->out, n);
		pthread_mutex_lock(&d->lock);
		if (d->generation == gen) {
			kap_vq_push(&d->vq[q], e->head, (uint32_t)n);
			kap_virtio_notify(d, q);
		}
		pthread_mutex_unlock(&d->lock);
	}
}

static void fs_reset(struct kap_virtio_dev *d)
{
	struct fsdev *f = d->priv;
	/* d->lock is held on a vCPU thread; the device thread owns the tables and clears them. */
	atomic_store(&f->reset, true);
}

static void fs_free(struct kap_virtio_dev *d)
{
	struct fsdev *f = d->priv;
	if (!f)
		return;
	kap_fs_close(f->fs);
	free(f->in);
	free(f->out);
	free(f);
	d->priv = NULL;
}

static int fs_save(struct kap_virtio_dev *d, uint8_t *buf, size_t cap, const char **why)
{
	(void)d;
	(void)buf;
	(void)cap;
	*why = "virtio-fs cannot be saved: its node table holds open host files";
	return -1;
}

static const struct kap_virtio_ops fs_ops = {
    .name = "virtio-fs",
    .device_id = VIRTIO_ID_FS,
    .nqueues = 2, /* §5.11.2: hiprio, then num_request_queues (1) request queues */
    .config_len = sizeof(struct virtio_fs_config),
    .config_read = fs_config_read,
    .process = fs_process,
    .reset = fs_reset,
    .free = fs_free,
    .save = fs_save,
};

/*
 * The jail (jail.c) hands every share the fd directory of a procfs of its own pid namespace
 * (subset=pid: that namespace holds the VMM alone), so the reopens never go through the host's
 * /proc, whose ".." would lead to every host process. The host one opened here is closed.
 */
int kap_virtio_fs_use_proc(struct kap_virtio_dev *d, int proc_root, struct kapsel_error **err)
{
	struct fsdev *f = d->priv;
	int fd = openat(proc_root, "self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kap_error(err, errno, "%s: the jail's /proc/self/fd", d->id);
	close(f->fs->proc_fd);
	f->fs->proc_fd = fd;
	return 0;
}

int kap_virtio_fs_new(struct kap_virtio_dev *d, const struct kapsel_vm_fs *share,
		      const struct kap_guest_mem *mem, struct kapsel_error **err)
{
	char id[32];
	snprintf(id, sizeof(id), "fs-%s", share->tag);
	int r = kap_virtio_init(d, &fs_ops, id, mem, err);
	if (r < 0)
		return r;
	struct fsdev *f = calloc(1, sizeof(*f));
	if (!f)
		return kap_error(err, ENOMEM, "--fs tag=%s", share->tag);
	d->priv = f;
	f->in = malloc(KAP_FS_IN_MAX);
	f->out = malloc(KAP_FS_OUT_MAX);
	if (!f->in || !f->out)
		return kap_error(err, ENOMEM, "--fs tag=%s", share->tag);
	if ((r = kap_fs_open(&f->fs, share->path, share->ro, err)) < 0)
		return kap_error_wrap(err, "--fs tag=%s", share->tag);
	/* §5.11.4: the tag is UTF-8, NUL-padded, unterminated when all 36 bytes are used. */
	memcpy(f->config.tag, share->tag, strnlen(share->tag, sizeof(f->config.tag)));
	f->config.num_request_queues = 1;
	return 0;
}
