/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kapsel run --vm`: the composition of the image engine's prepared container (overlay rootfs,
 * config.json) with the VMM (docs/vm.md, "run --vm"). image/run.c calls kap_run_vm_check before
 * anything exists and kap_run_vm in place of starting the container.
 */
#pragma once
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>

#include "net/net.h"

struct kapsel_run_options;

/* Where kapsel looks for a guest kernel unless told: DIR/VERSION/boot/vmlinuz-VERSION. */
#define KAP_VM_KERNEL_DIR "/usr/local/lib/kapsel/vm-kernel"

struct kap_guest_kernel {
	char *path;	   /* the bzImage */
	char *version;	   /* from its setup header: "6.1.0-57-amd64" */
	char *modules_dir; /* <root>/lib/modules/VERSION, NULL when there is none */
};

void kap_guest_kernel_clear(struct kap_guest_kernel *k);

/*
 * The guest kernel: given (--vm-kernel), else $KAPSEL_VM_KERNEL, else the newest
 * $KAPSEL_VM_KERNEL_DIR (default KAP_VM_KERNEL_DIR)/VERSION/boot/vmlinuz-VERSION. -ENOENT with
 * one line naming where it looked when there is none.
 */
int kap_guest_kernel_find(const char *given, struct kap_guest_kernel *k, struct kapsel_error **err);

/*
 * The kernel version string of a bzImage (boot.rst: "kernel_version", a pointer at 0x20e to a
 * NUL-terminated string 0x200 bytes further), its first word, into out. -EINVAL when buf is no
 * bzImage (no "HdrS" at 0x202, protocol < 2.00) or the string is outside buf.
 */
int kap_bzimage_version(const uint8_t *buf, size_t len, char *out, size_t outlen);

/* An in-memory newc cpio archive (the initramfs format: kernel initramfs-buffer-format.rst). */
struct kap_cpio {
	char *buf;
	size_t len, cap;
	uint32_t ino;
};

#define KAP_CPIO_MAX (256u << 20)

/*
 * Appends one entry: mode holds the type bits (S_IFREG, S_IFDIR, S_IFCHR), rdev the device
 * number of a node. -ENOMEM past KAP_CPIO_MAX, -EINVAL for an empty name.
 */
int kap_cpio_add(struct kap_cpio *c, const char *name, uint32_t mode, unsigned rdev_major,
		 unsigned rdev_minor, const void *data, size_t len);
/* Appends the TRAILER!!! entry. */
int kap_cpio_finish(struct kap_cpio *c);
void kap_cpio_clear(struct kap_cpio *c);

/*
 * The initramfs for kernel k: the agent as /init and the modules it loads, made once and kept
 * under <store>/vm-initramfs/, named by kernel version and the hash of its content (written
 * atomically). *path: malloc'd.
 */
int kap_initramfs_get(const char *store, const struct kap_guest_kernel *k, char **path,
		      struct kapsel_error **err);

/*
 * run --vm --net NETWORK: <cdir>/KAP_RUN_VM_NET holds the VM's place on the network, as
 * kap_net_attach (a request with .vm) leased it: "bridge=", "mac=", "ip=ADDR/PREFIX",
 * "gateway=" (absent on an internal network), "ip6=", "gateway6=" lines. kap_run_vm puts a
 * virtio-net card on a tap of that bridge with that MAC, and the agent configures the guest's
 * interface. Empty while the lease is being made; its presence says that one is held.
 */
#define KAP_RUN_VM_NET KAP_NET_VM_FILE
struct kap_net_result;
int kap_run_vm_net_write(int cdirfd, const struct kap_net_result *res, struct kapsel_error **err);

struct kap_vm_net {
	bool on; /* the container is on a network */
	char bridge[16], mac[18];
	char ip[INET_ADDRSTRLEN + 4], gateway[INET_ADDRSTRLEN];
	char ip6[INET6_ADDRSTRLEN + 5], gateway6[INET6_ADDRSTRLEN];
};
/* vm.net's text (changed in place) into n, every line checked; what names it in errors. */
int kap_run_vm_net_parse(char *text, const char *what, struct kap_vm_net *n,
			 struct kapsel_error **err);

/* run's flags that --vm cannot honour, and the guest kernel: before anything exists. */
int kap_run_vm_check(const struct kapsel_run_options *o, struct kapsel_error **err);

struct pollfd;
/* What attach's hooks get to give the process input (kap_run_vm_input). */
struct kap_run_vm_io;

/*
 * A detached VM container's `kapsel attach` clients (image/run.c keeps the socket and the
 * protocol): every chunk of output goes to output() too, and the relay polls the fds that fds()
 * fills (at most max, which is 16) and hands their events to ready(), which may send the process
 * input.
 */
struct kap_run_vm_attach {
	void *ctx;
	void (*output)(void *ctx, bool is_err, const void *buf, size_t len);
	size_t (*fds)(void *ctx, struct pollfd *p, size_t max);
	void (*ready)(void *ctx, const struct pollfd *p, size_t n, struct kap_run_vm_io *io);
};
/* From ready(): keystrokes for the process's terminal (a tty container only), or its size. */
void kap_run_vm_input(struct kap_run_vm_io *io, const void *buf, size_t len);
void kap_run_vm_resize(struct kap_run_vm_io *io, unsigned rows, unsigned cols);
/* Whether the process has a terminal (attach's hello says so). */
bool kap_run_vm_tty(const struct kap_run_vm_io *io);

struct kap_run_vm {
	const char *name;   /* the container's name */
	const char *store;  /* the store's path */
	const char *cdir;   /* the container's directory: config.json, merged/ */
	const char *kernel; /* --vm-kernel or NULL */
	const char *cpus;   /* --vm-cpus or NULL */
	const char *memory; /* --vm-memory or NULL */
	bool interactive;   /* -i */
	bool tty;	    /* -t: config.json's process.terminal says it too */
	sigset_t signals;   /* blocked; forwarded to the process */
	/* A detached VM container (run -d, start): the process's stdout and stderr go into
	 * the container's log; -1: our stdout and stderr. Either way signals arrive on
	 * <cdir>/vm.ctl (kap_run_vm_signal) and `exec` reaches the agent through
	 * <cdir>/vm.vsock (kap_run_vm_exec). */
	int logfd;
	/* Called once the agent has the spec (the container runs), before the relay; a
	 * negative return ends the VM with that error. NULL: none. */
	int (*started)(void *ctx, struct kapsel_error **err);
	void *ctx;
	/* The OCI runtime's VM containers (oci-vm.c): */
	const char *rootfs; /* the shared root; NULL: <cdir>/merged */
	/* The VMM's vsock sockets in cdir itself (it runs with cdir as its working directory,
	 * so any cdir path fits sun_path): no temporary directory a SIGKILL could leave. */
	bool sockets_in_cdir;
	/* Set: the spec says hold=1, and hold runs once the spec is sent, with the agent's
	 * connection: it returns once the agent may start the process (its START sent); a
	 * negative return ends the VM with that error. */
	int (*hold)(void *ctx, int conn, struct kapsel_error **err);
	/* Detached: its attach clients; NULL: none. A terminal's input is open for them. */
	const struct kap_run_vm_attach *attach;
};

/* Boots the VM, runs the process, relays its stdio; its shell-style status, or -errno. */
int kap_run_vm(const struct kap_run_vm *a, struct kapsel_error **err);

/*
 * Sends sig to the process of the detached VM container whose directory is cdirfd, through its
 * monitor's control socket and the agent (a SIGNAL frame). -ESRCH when no monitor listens.
 */
int kap_run_vm_signal(int cdirfd, const char *name, int sig, struct kapsel_error **err);

struct kapsel_exec_options;

/*
 * `kapsel exec` into the running VM container name (directory cdir): a second process that
 * the guest agent starts in the container's root (docs/vm.md "exec"), with config.json's
 * environment under o's. Its shell-style status, or -errno.
 */
int kap_run_vm_exec(const char *cdir, const char *name, const struct kapsel_exec_options *o,
		    struct kapsel_error **err);

/*
 * A second process in the running VM of cdir from a spec made by the caller (protocol.h's
 * keys; root=rootfs): connects, sends it and relays our stdio (a terminal with tty: raw mode,
 * SIGWINCH) and SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, as kap_run_vm_exec does. Its
 * shell-style status.
 */
int kap_run_vm_exec_spec(const char *cdir, const char *name, const char *spec, size_t len, bool tty,
			 struct kapsel_error **err);

/* The share tag of the rootfs in a spec. */
#define KAP_RUN_VM_ROOT_TAG "rootfs"
