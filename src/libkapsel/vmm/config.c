/* SPDX-License-Identifier: Apache-2.0 */
/* The VM's settings: size and console syntax, and vm.json (through core/json.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/json.h"
#include "vmm/vmm.h"

#define API __attribute__((visibility("default")))

API void kapsel_vm_config_clear(struct kapsel_vm_config *c)
{
	free(c->kernel);
	free(c->initrd);
	free(c->cmdline);
	free(c->cpu_features);
	free(c->console_path);
	for (unsigned int i = 0; i < c->ndisks; i++) {
		free(c->disks[i].id);
		free(c->disks[i].path);
		free(c->disks[i].serial);
	}
	memset(c, 0, sizeof(*c));
}

static bool valid_id(const char *s)
{
	if (!*s || strlen(s) > 24)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

API int kapsel_vm_parse_disk(const char *s, struct kapsel_vm_config *c, struct kapsel_error **err)
{
	if (c->ndisks == KAPSEL_VM_MAX_DISKS)
		return kap_error_plain(err, E2BIG, "--disk %s: at most %d disks", s,
				       KAPSEL_VM_MAX_DISKS);
	cleanup_free char *copy = strdup(s);
	if (!copy)
		return kap_error(err, ENOMEM, "--disk");
	struct kapsel_vm_disk d = {0};
	char *save = NULL, *path = strtok_r(copy, ",", &save);
	if (!path || copy[0] == ',')
		return kap_error_plain(err, EINVAL,
				       "--disk %s: expected PATH[,ro][,serial=S]"
				       "[,cache=none|writeback][,id=ID]",
				       s);
	const char *serial = NULL, *id = NULL;
	for (char *o = strtok_r(NULL, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "ro")) {
			d.ro = true;
		} else if (!strncmp(o, "serial=", 7)) {
			serial = o + 7;
			/* VIRTIO_BLK_ID_BYTES: the id the driver reads is 20 bytes, unterminated.
			 */
			if (strlen(serial) > 20)
				return kap_error_plain(err, EINVAL,
						       "--disk %s: serial longer than 20 bytes", s);
		} else if (!strcmp(o, "cache=none")) {
			d.cache = KAPSEL_VM_CACHE_NONE;
		} else if (!strcmp(o, "cache=writeback")) {
			d.cache = KAPSEL_VM_CACHE_WRITEBACK;
		} else if (!strncmp(o, "id=", 3)) {
			id = o + 3;
			if (!valid_id(id))
				return kap_error_plain(
				    err, EINVAL,
				    "--disk %s: id must be 1-24 letters, digits, - or _", s);
		} else {
			return kap_error_plain(err, EINVAL,
					       "--disk %s: unknown option \"%s\" (expected ro, "
					       "serial=S, cache=none|writeback, id=ID)",
					       s, o);
		}
	}
	char defid[16];
	if (!id) {
		snprintf(defid, sizeof(defid), "disk%u", c->ndisks);
		id = defid;
	}
	for (unsigned int i = 0; i < c->ndisks; i++)
		if (!strcmp(c->disks[i].id, id))
			return kap_error_plain(err, EEXIST, "--disk %s: id %s already used", s, id);
	d.id = strdup(id);
	d.path = strdup(path);
	d.serial = serial ? strdup(serial) : NULL;
	if (!d.id || !d.path || (serial && !d.serial)) {
		free(d.id);
		free(d.path);
		free(d.serial);
		return kap_error(err, ENOMEM, "--disk");
	}
	c->disks[c->ndisks++] = d;
	return 0;
}

API int kapsel_vm_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	unsigned int shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	}
	if (*end == 'i' && shift) /* "256MiB" */
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

API int kapsel_vm_parse_console(const char *s, struct kapsel_vm_config *c)
{
	if (!strcmp(s, "stdio")) {
		c->console = KAPSEL_VM_CONSOLE_STDIO;
	} else if (!strcmp(s, "none")) {
		c->console = KAPSEL_VM_CONSOLE_NONE;
	} else if (!strncmp(s, "file:", 5) && s[5]) {
		char *p = strdup(s + 5);
		if (!p)
			return -ENOMEM;
		free(c->console_path);
		c->console_path = p;
		c->console = KAPSEL_VM_CONSOLE_FILE;
		return 0;
	} else {
		return -EINVAL;
	}
	free(c->console_path);
	c->console_path = NULL;
	return 0;
}

static int read_str(const struct kap_json *j, const char *key, char **field,
		    struct kapsel_error **err)
{
	char *v = NULL;
	int r = kap_json_read_string(j, "", key, &v, err);
	if (r < 0)
		return r;
	if (v) {
		free(*field);
		*field = v;
	}
	return 0;
}

API int kapsel_vm_config_load(const char *path, struct kapsel_vm_config *c,
			      struct kapsel_error **err)
{
	cleanup_json struct kap_json *j = NULL;
	/* Declared before the first goto: cleanup variables must not be jumped over. */
	cleanup_free char *console = NULL;
	int r = kap_json_parse_file(path, &j, err);
	if (r < 0)
		return r;
	if (kap_json_type(j) != KAP_JSON_OBJECT)
		return kap_error_plain(err, EINVAL, "%s: expected a JSON object", path);
	static const char *const known[] = {"kernel", "initrd",	      "cmdline", "mem",
					    "cpus",   "cpu_features", "console", "debug_exit"};
	struct kap_json_iter it = kap_json_iter(j);
	const char *key;
	struct kap_json *val;
	while (kap_json_iter_next(&it, &key, &val)) {
		bool ok = false;
		for (size_t i = 0; i < KAP_ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (!ok)
			return kap_error_plain(err, EINVAL, "%s: %s: unknown setting", path, key);
	}
	if ((r = read_str(j, "kernel", &c->kernel, err)) < 0 ||
	    (r = read_str(j, "initrd", &c->initrd, err)) < 0 ||
	    (r = read_str(j, "cmdline", &c->cmdline, err)) < 0 ||
	    (r = read_str(j, "cpu_features", &c->cpu_features, err)) < 0)
		goto fail;
	struct kap_json *mem = kap_json_get(j, "mem");
	if (mem) {
		if (kap_json_type(mem) == KAP_JSON_INT && kap_json_int64(mem) > 0) {
			c->mem_size = (uint64_t)kap_json_int64(mem);
		} else if (kap_json_type(mem) != KAP_JSON_STRING ||
			   kapsel_vm_parse_size(kap_json_string(mem), &c->mem_size) < 0) {
			r = kap_error_plain(err, EINVAL,
					    "mem: expected a size (\"256M\", \"1G\") or bytes");
			goto fail;
		}
	}
	uint64_t cpus = 0;
	bool found_cpus = kap_json_get(j, "cpus") != NULL;
	if ((r = kap_json_read_uint64(j, "", "cpus", &cpus, err)) < 0)
		goto fail;
	if (found_cpus) {
		if (cpus == 0 || cpus > 1024) {
			r = kap_error_plain(err, EINVAL, "cpus: expected 1 to 1024");
			goto fail;
		}
		c->cpus = (unsigned int)cpus;
	}
	if ((r = kap_json_read_string(j, "", "console", &console, err)) < 0)
		goto fail;
	if (console && kapsel_vm_parse_console(console, c) < 0) {
		r = kap_error_plain(err, EINVAL, "console: expected stdio, none or file:PATH");
		goto fail;
	}
	bool debug_exit = !c->no_debug_exit;
	if ((r = kap_json_read_bool(j, "", "debug_exit", &debug_exit, err)) < 0)
		goto fail;
	c->no_debug_exit = !debug_exit;
	return 0;
fail:
	return kap_error_wrap(err, "%s", path);
}
