/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The high-level command set (`kapsel run IMAGE CMD`, ps, stop, rm, logs), as podman has it:
 * image -> overlay rootfs -> config.json -> the OCI runtime. A container's name is its runtime
 * id, so every runtime call (exec, kill, state, ...) works on it. Every call returns >= 0 on
 * success and a negative errno with *err set on failure.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <kapsel/error.h>

struct kapsel_run_options {
	const char *store; /* image store; NULL: the default */
	const char *root;  /* runtime state root; NULL: KAPSEL_DEFAULT_ROOT */
	const char *image;
	char *const *cmd; /* NULL-terminated; NULL or empty: the image's Cmd */
	const char *name; /* NULL: generated "kapsel-<12 hex>" */
	bool rm;	  /* remove the container (upper dir, bundle, state) after it exits */
	bool detach;	  /* return once started; output goes to the container's log */
	bool interactive; /* keep stdin attached (else /dev/null) */
	bool tty;	  /* process.terminal; the caller stays attached and relays */
	char *const *env; /* K=V (or K: the value from our environment) */
	const char *workdir;
	const char *user;	/* UID[:GID] or NAME[:GROUP] */
	const char *entrypoint; /* NULL: the image's; "" clears it; a JSON array is accepted */
	const char *memory;	/* "512m" */
	const char *cpus;	/* "1.5" */
	bool has_pids_limit;
	int64_t pids_limit; /* <= 0: unlimited */
	bool read_only;
	char *const *volumes; /* HOST:CTR[:ro|rw] */
	const char *hostname;
	/* NULL or "none": own network namespace with lo only; "host"; or a network's name
	 * (kapsel network ls): a veth on its bridge, an address leased from it. */
	const char *net;
	const char *ip;	    /* --ip: this address on the network */
	const char *ip6;    /* --ip6: this IPv6 address on a dual-stack network */
	const char *mac;    /* --mac-address */
	char *const *ports; /* -p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp] */
	/* -P: every port the image's ExposedPorts and --expose name, each to a free host port
	 * of the ephemeral range. */
	bool publish_all;
	char *const *expose;	/* --expose PORT[/tcp|/udp] */
	char *const *dns;	/* --dns: nameservers for /etc/resolv.conf */
	char *const *add_hosts; /* --add-host NAME:IP, lines of /etc/hosts */
	char *const *aliases;	/* --network-alias: more names on a user-defined network */
	char *const *cap_add;
	char *const *cap_drop;
	bool privileged;
	char *const *security_opts; /* seccomp=unconfined|FILE, no-new-privileges, ... */
	/* --restart no|on-failure[:N]|always|unless-stopped, kept by the container's monitor
	 * (NULL: no); not with rm. */
	const char *restart;
	/* podman's flags for the process's surroundings (image/runflags.c). -v NAME:/path (a
	 * name, not a path) and --mount type=volume use named volumes (kapsel/volume.h). */
	char *const *env_files; /* --env-file: K=V lines, applied before --env */
	char *const *ulimits;	/* --ulimit NAME=SOFT[:HARD] -> process.rlimits */
	char *const *devices;	/* --device HOST[:CTR][:rwm] */
	char *const *tmpfs;	/* --tmpfs PATH[:OPTS] */
	char *const *mounts;	/* --mount type=bind|tmpfs|volume,src=..,dst=..[,ro] */
	bool init;		/* --init: a reaper as PID 1 (kapsel-init), the command its child */
	const char *init_path;	/* --init-path: that reaper's host path (NULL: kapsel-init) */
	/* --vm: the same container in a micro-VM with its own kernel (docs/vm.md, run --vm) */
	bool vm;
	const char *vm_kernel; /* --vm-kernel FILE (else KAPSEL_VM_KERNEL, else the default) */
	const char *vm_cpus;   /* --vm-cpus N (else from --cpus, else 1) */
	const char *vm_memory; /* --vm-memory SIZE (else from --memory, else 512M) */
};

/*
 * Runs IMAGE. In the foreground returns the container's exit status (shell style); detached
 * returns 0 once it runs. *name_out (optional) receives the container's name; caller frees.
 *
 * Rootless (the caller is not root), the calling process moves itself into a new user
 * namespace mapping root to its uid and gid, and a new mount namespace, and stays there: it
 * must be single-threaded, and is meant to exit afterwards (as the kapsel command does).
 * Without a delegated cgroup, --memory, --cpus and a positive --pids-limit are refused and the
 * default pids limit is dropped.
 */
int kapsel_image_run(const struct kapsel_run_options *opts, char **name_out,
		     struct kapsel_error **err);

/*
 * For --vm: the flags that cannot apply and the guest kernel, checked before the image is
 * pulled or anything exists (kapsel_image_run checks again). -errno with one line in *err.
 */
int kapsel_image_run_vm_check(const struct kapsel_run_options *opts, struct kapsel_error **err);

/*
 * kill for a container that `run --vm` made: the signal reaches its process through the guest
 * agent. 1 when name is such a container (signalled), 0 when it is not one (the runtime's
 * kill applies), -errno with *err (ESRCH: not running).
 */
int kapsel_image_vm_kill(const char *store, const char *name, int sig, struct kapsel_error **err);

struct kapsel_exec_options;

/*
 * exec into a container that `run --vm -d` made: the guest agent starts the process
 * (docs/vm.md "exec"). 1 with *status (shell style) when o->id is such a container, 0 when it
 * is not one (the runtime's exec applies), -errno with *err.
 */
int kapsel_image_vm_exec(const char *store, const struct kapsel_exec_options *o, int *status,
			 struct kapsel_error **err);

/*
 * exec -u as podman resolves it: NAME[:GROUP] or UID[:GID] looked up in the running
 * container's /etc/passwd and /etc/group (a UID alone gets its passwd gid, else 0). Returns 1
 * with *ids "UID:GID" (caller frees), 0 when the container is not running (exec says so).
 */
int kapsel_image_exec_user(const char *root, const char *id, const char *user, char **ids,
			   struct kapsel_error **err);

/*
 * The state of image container name ("running", "exited", ...): 1 with *status set (caller
 * frees), 0 when the store or the container does not exist. Creates nothing.
 */
int kapsel_image_container_status(const char *store, const char *name, char **status,
				  struct kapsel_error **err);

/*
 * podman's container inspect object (Id, Name, Created, Path, Args, State, Image, ImageName,
 * Config, HostConfig, NetworkSettings) for image container name, as pretty JSON (caller
 * frees). -ENOENT "no such container NAME" when there is none. Creates nothing.
 */
int kapsel_image_container_inspect(const char *store, const char *name, char **json,
				   struct kapsel_error **err);

struct kapsel_ps_entry {
	char *name;
	char *image;
	char *command;
	int64_t created;  /* unix seconds */
	int64_t finished; /* unix seconds, 0 while running */
	char *status;	  /* "created", "running", "paused", "exited" */
	int exit_code;	  /* -1 when unknown */
};
/* Containers made by kapsel_image_run; all=false lists only running (and paused) ones. */
int kapsel_image_ps(const char *store, const char *root, bool all, struct kapsel_ps_entry **out,
		    size_t *n, struct kapsel_error **err);
void kapsel_ps_entries_free(struct kapsel_ps_entry *e, size_t n);

/*
 * `kapsel port`: container name's published ports, one line each as podman prints them
 * ("80/tcp -> 0.0.0.0:40123"); with filter (PORT[/tcp|/udp]) only that one's host side
 * ("0.0.0.0:40123"), -ENOENT when it is not published. *lines NULL-terminated; caller frees.
 */
int kapsel_image_port(const char *store, const char *name, const char *filter, char ***lines,
		      struct kapsel_error **err);

/* The image's stop signal (default SIGTERM), then SIGKILL after timeout_s seconds. */
int kapsel_image_stop(const char *store, const char *root, const char *name, int timeout_s,
		      struct kapsel_error **err);
/* Remove a stopped container (force: stop it first with SIGKILL). */
/* Give back the network of every container whose kapsel died without finishing it (killed
 * while making it, or its monitor killed and then its init gone). Root only; best effort. */
void kapsel_image_reap(const char *store);
int kapsel_image_rm(const char *store, const char *root, const char *name, bool force,
		    struct kapsel_error **err);
struct kapsel_logs_options {
	bool follow;	  /* until the container stops */
	bool timestamps;  /* each line prefixed with its RFC 3339 time */
	int64_t since_ns; /* only lines from this time on (ns since the epoch; 0: all) */
	int64_t until_ns; /* only lines up to this time (0: all) */
	long tail;	  /* only the last N lines (-1: all) */
	FILE *out, *err;  /* where the container's stdout and stderr lines go */
};
/* Print the container's log (its stdout and stderr, foreground or detached, kept apart). */
int kapsel_image_logs(const char *store, const char *root, const char *name,
		      const struct kapsel_logs_options *o, struct kapsel_error **err);

/*
 * Start an image container that has exited (podman start): its overlay, its network (the same
 * address), a new monitor; detached. A running one is left as it is. -ENOENT (with *err)
 * when the store has no container of that name.
 */
int kapsel_image_start(const char *store, const char *root, const char *name,
		       struct kapsel_error **err);
/* stop (timeout_s as there), then start. */
int kapsel_image_restart(const char *store, const char *root, const char *name, int timeout_s,
			 struct kapsel_error **err);
/*
 * Block until the container meets condition: "stopped" or "exited" (NULL: the same), then
 * *code is its exit code (-1 when unknown; an exit that its restart policy followed with a
 * restart counts); "running": *code is -1.
 */
int kapsel_image_wait(const char *store, const char *name, const char *condition, int *code,
		      struct kapsel_error **err);
/* Rename a container, running or not; new_name must be valid and unused. */
int kapsel_image_rename(const char *store, const char *name, const char *new_name,
			struct kapsel_error **err);
/*
 * Attach to a detached container: its output to our stdout and stderr; with a terminal (run
 * -dit) our stdin to it, ctrl-p ctrl-q detaches. Returns the container's exit status once it
 * ends, 0 after a detach.
 */
int kapsel_image_attach(const char *store, const char *name, bool no_stdin,
			struct kapsel_error **err);
