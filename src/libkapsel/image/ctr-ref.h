/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A read-only look at an image container from outside run.c (cp, top, stats, system df): its
 * directory, what container.json records, and its init's pid while it runs.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <kapsel/error.h>

struct kap_ctr_ref {
	char *name;
	char *store; /* the store directory */
	char *cdir;  /* <store>/containers/<name> */
	int cdirfd;  /* O_RDONLY | O_DIRECTORY */
	char *root;  /* the runtime state root it was run with */
	char *state; /* container.json's: "running", "exited", ... */
	char *manifest;
	int64_t created;
	pid_t pid;    /* the init's host pid while the runtime has it running or paused; else 0 */
	char **ports; /* published ports as -p specs ("0.0.0.0:40123:80/tcp"), or NULL */
};

/* -ENOENT "no such container NAME" when the store has no such container. */
int kap_ctr_ref_open(const char *store, const char *name, struct kap_ctr_ref *c,
		     struct kapsel_error **err);
void kap_ctr_ref_clear(struct kap_ctr_ref *c);
/* The names of every image container in the store (NULL-terminated; caller frees). */
int kap_ctr_ref_names(const char *store, char ***names, struct kapsel_error **err);
/*
 * --net container:NAME: a path to running container name's network namespace for the
 * runtime to join (the one kapsel bound for it on a network, else its init's), and its
 * directory (*cdir: its hosts and resolv.conf). Both caller frees.
 */
int kap_ctr_ref_netns(const char *store, const char *name, char **path, char **cdir,
		      struct kapsel_error **err);
