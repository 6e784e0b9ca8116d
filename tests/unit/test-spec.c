/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.json decoding: every field of a full document, real podman and containerd configs, and
 * the error text of malformed ones (each must name the JSON path of the bad field, since that is
 * what a user reads in `podman run` output).
 *
 * JSON is written with single quotes to keep it readable; dq() turns them into double quotes.
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cleanup.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/syscalls.h"
#include "oci/spec.h"

#define CORPUS KAP_TEST_SRCDIR "/../fuzz/corpus/spec"
#define BIT(c) (UINT64_C(1) << (c))

static char *dq(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static struct kap_spec *parse_ok(const char *sq)
{
	cleanup_free char *doc = dq(sq);
	struct kap_spec *s = NULL;
	struct kapsel_error *err = NULL;
	if (kap_spec_parse(doc, strlen(doc), &s, &err) < 0)
		fail_msg("unexpected error: %s", err->msg);
	assert_non_null(s);
	return s;
}

/* Parse raw bytes (not quote-converted); true when it fails with exactly `want`. */
static bool error_is(const char *doc, size_t len, const char *want)
{
	struct kap_spec *s = NULL;
	struct kapsel_error *err = NULL;
	int r = kap_spec_parse(doc, len, &s, &err);
	if (r >= 0) {
		kap_spec_free(s);
		print_error("parsed, but expected error \"%s\"\n", want);
		return false;
	}
	bool ok = s == NULL && err && r == -err->code && !strcmp(err->msg, want);
	if (!ok)
		print_error("wrong error (r=%d)\n  got:  %s\n  want: %s\n", r,
			    err ? err->msg : "(none)", want);
	kapsel_error_free(err);
	return ok;
}

static void check_error_raw(const char *doc, size_t len, const char *want)
{
	assert_true(error_is(doc, len, want));
}

/* A valid document plus `body` (more top-level members, or members overriding the defaults). */
#define DOC(body)   "{'ociVersion':'1.0.2','root':{'path':'rootfs'}," body "}"
#define PROC(body)  DOC("'process':{'args':['sh'],'cwd':'/'," body "}")
#define LINUX(body) DOC("'linux':{" body "}")
#define RES(body)   LINUX("'resources':{" body "}")

/* ---------------------------------------------------------------------------------------- */

static const char full_config[] =
    "{'ociVersion':'1.2.0',"
    " 'process':{"
    "  'terminal':true, 'consoleSize':{'height':25,'width':80},"
    "  'user':{'uid':1000,'gid':1001,'umask':18,'additionalGids':[5,6],'username':'joe'},"
    "  'args':['/bin/sh','-c','echo hi'],"
    "  'env':['PATH=/bin','TERM=xterm','NOEQUALS'],"
    "  'cwd':'/home/joe',"
    "  'capabilities':{'bounding':['CAP_CHOWN','CAP_SYS_ADMIN','CAP_CHECKPOINT_RESTORE'],"
    "   'effective':['CAP_KILL'],'inheritable':[],'permitted':['CAP_KILL','CAP_BPF'],"
    "   'ambient':['cap_perfmon']},"
    "  'rlimits':[{'type':'RLIMIT_NOFILE','soft':1024,'hard':4096},"
    "   {'type':'RLIMIT_CORE','soft':0,'hard':18446744073709551615}],"
    "  'noNewPrivileges':true, 'apparmorProfile':'docker-default',"
    "  'selinuxLabel':'system_u:system_r:container_t:s0', 'oomScoreAdj':-500,"
    "  'ioPriority':{'class':'IOPRIO_CLASS_IDLE'}},"
    " 'root':{'path':'rootfs','readonly':true},"
    " 'hostname':'box', 'domainname':'example.org',"
    " 'mounts':["
    "  {'destination':'/proc','type':'proc','source':'proc'},"
    "  {'destination':'/data','type':'bind','source':'/srv/data',"
    "   'options':['rbind','ro','nosuid','rslave']},"
    "  {'destination':'/dev/pts','type':'devpts','source':'devpts','options':['nosuid',"
    "   'noexec','newinstance','ptmxmode=0666','mode=0620','gid=5']},"
    "  {'destination':'relative/dir','type':'tmpfs','source':'tmpfs'}],"
    " 'hooks':{"
    "  'prestart':[{'path':'/usr/bin/hook','args':['hook','prestart'],'env':['A=1'],"
    "   'timeout':5}],"
    "  'createRuntime':[{'path':'/bin/cr'}], 'createContainer':[{'path':'/bin/cc'}],"
    "  'startContainer':[{'path':'/bin/sc'}],"
    "  'poststart':[{'path':'/bin/ps1'},{'path':'/bin/ps2'}], 'poststop':[{'path':'/bin/pst'}]},"
    " 'annotations':{'org.example.key':'value','empty':''},"
    " 'linux':{"
    "  'namespaces':[{'type':'pid'},{'type':'network','path':'/var/run/netns/x'},"
    "   {'type':'mount'},{'type':'ipc'},{'type':'uts','path':''},{'type':'user'},"
    "   {'type':'cgroup'},{'type':'time'}],"
    "  'uidMappings':[{'containerID':0,'hostID':100000,'size':65536}],"
    "  'gidMappings':[{'containerID':0,'hostID':200000,'size':65536},"
    "   {'containerID':65536,'hostID':1000,'size':1}],"
    "  'devices':[{'path':'/dev/fuse','type':'c','major':10,'minor':229,'fileMode':438,"
    "   'uid':0,'gid':5},{'path':'/dev/fifo','type':'p'}],"
    "  'cgroupsPath':'/kapsel/test',"
    "  'resources':{"
    "   'memory':{'limit':536870912,'reservation':268435456,'swap':-1,'kernel':0,"
    "    'swappiness':60,'disableOOMKiller':true,'kernelTCP':0},"
    "   'cpu':{'shares':512,'quota':50000,'period':100000,'realtimeRuntime':950000,"
    "    'realtimePeriod':1000000,'cpus':'0-1','mems':'0','idle':1},"
    "   'pids':{'limit':100},"
    "   'blockIO':{'weight':500,'leafWeight':300,"
    "    "
    "'weightDevice':[{'major':8,'minor':0,'weight':600},{'major':8,'minor':16,'leafWeight':10}],"
    "    'throttleReadBpsDevice':[{'major':8,'minor':0,'rate':1048576}],"
    "    'throttleWriteBpsDevice':[{'major':8,'minor':16,'rate':2097152}],"
    "    'throttleReadIOPSDevice':[{'major':8,'minor':0,'rate':100}],"
    "    'throttleWriteIOPSDevice':[{'major':8,'minor':0,'rate':200},"
    "     {'major':8,'minor':16,'rate':300}]},"
    "   'hugepageLimits':[{'pageSize':'2MB','limit':209715200}],"
    "   'devices':[{'allow':false,'access':'rwm'},"
    "    {'allow':true,'type':'c','major':1,'minor':3,'access':'mwr'},"
    "    {'allow':true,'type':'b','major':8,'access':'r'},"
    "    {'allow':true,'type':'c','major':136,'minor':-1}],"
    "   'unified':{'memory.high':'max','io.weight':'default 100'},"
    "   'network':{'classID':1}},"
    "  'sysctl':{'net.ipv4.ip_forward':'1','kernel.msgmax':'65536'},"
    "  'maskedPaths':['/proc/kcore','/sys/firmware'],"
    "  'readonlyPaths':['/proc/sys'],"
    "  'rootfsPropagation':'rslave',"
    "  'mountLabel':'system_u:object_r:container_file_t:s0',"
    "  'timeOffsets':{'monotonic':{'secs':100,'nanosecs':5},'boottime':{'secs':-7}},"
    "  'personality':{'domain':'LINUX32'},"
    "  'seccomp':{'defaultAction':'SCMP_ACT_ALLOW','syscalls':[]},"
    "  'intelRdt':{'closID':'x'}},"
    " 'unknownTopLevel':{'ignored':[1,2,{'deep':null}]}}";

static void test_full_process(const struct kap_process *p)
{
	assert_true(p->terminal);
	assert_int_equal(p->console_height, 25);
	assert_int_equal(p->console_width, 80);
	assert_int_equal(p->user.uid, 1000);
	assert_int_equal(p->user.gid, 1001);
	assert_true(p->user.has_umask);
	assert_int_equal(p->user.umask, 022);
	assert_int_equal(p->user.n_additional_gids, 2);
	assert_int_equal(p->user.additional_gids[0], 5);
	assert_int_equal(p->user.additional_gids[1], 6);
	assert_string_equal(p->user.username, "joe");
	assert_string_equal(p->args[0], "/bin/sh");
	assert_string_equal(p->args[2], "echo hi");
	assert_null(p->args[3]);
	assert_null(p->command_line);
	assert_string_equal(p->env[2], "NOEQUALS");
	assert_null(p->env[3]);
	assert_string_equal(p->cwd, "/home/joe");
	assert_true(p->has_caps);
	assert_true(p->caps.bounding ==
		    (BIT(CAP_CHOWN) | BIT(CAP_SYS_ADMIN) | BIT(CAP_CHECKPOINT_RESTORE)));
	assert_true(p->caps.effective == BIT(CAP_KILL));
	assert_true(p->caps.inheritable == 0);
	assert_true(p->caps.permitted == (BIT(CAP_KILL) | BIT(CAP_BPF)));
	assert_true(p->caps.ambient == BIT(CAP_PERFMON));
	assert_int_equal(p->n_rlimits, 2);
	assert_int_equal(p->rlimits[0].resource, RLIMIT_NOFILE);
	assert_int_equal(p->rlimits[0].soft, 1024);
	assert_int_equal(p->rlimits[0].hard, 4096);
	assert_int_equal(p->rlimits[1].resource, RLIMIT_CORE);
	assert_true(p->rlimits[1].hard == UINT64_MAX);
	assert_true(p->no_new_privileges);
	assert_string_equal(p->apparmor_profile, "docker-default");
	assert_string_equal(p->selinux_label, "system_u:system_r:container_t:s0");
	assert_true(p->has_oom_score_adj);
	assert_int_equal(p->oom_score_adj, -500);
}

static void test_full_mounts(const struct kap_spec *s)
{
	assert_int_equal(s->n_mounts, 4);
	const struct kap_mount *m = &s->mounts[0];
	assert_string_equal(m->destination, "/proc");
	assert_string_equal(m->type, "proc");
	assert_string_equal(m->source, "proc");
	assert_null(m->options);
	assert_true(m->flags == 0 && m->clear_flags == 0 && m->propagation == 0);
	assert_null(m->data);
	assert_false(m->bind);

	m = &s->mounts[1];
	assert_string_equal(m->destination, "/data");
	assert_true(m->bind);
	assert_true(m->recursive);
	assert_true(m->bind_ro);
	assert_true(m->flags == (MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID));
	assert_true(m->propagation == (MS_SLAVE | MS_REC));
	assert_null(m->data);
	assert_string_equal(m->options[3], "rslave");

	m = &s->mounts[2];
	assert_true(m->flags == (MS_NOSUID | MS_NOEXEC));
	assert_string_equal(m->data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
	assert_false(m->bind);

	/* runtime-spec < 1.1 allowed relative destinations: relative to "/". */
	assert_string_equal(s->mounts[3].destination, "/relative/dir");
}

static void test_full_hooks(const struct kap_spec *s)
{
	const struct kap_hooks *h = &s->hooks;
	assert_int_equal(h->n[KAP_HOOK_PRESTART], 1);
	assert_string_equal(h->list[KAP_HOOK_PRESTART][0].path, "/usr/bin/hook");
	assert_string_equal(h->list[KAP_HOOK_PRESTART][0].args[1], "prestart");
	assert_string_equal(h->list[KAP_HOOK_PRESTART][0].env[0], "A=1");
	assert_true(h->list[KAP_HOOK_PRESTART][0].has_timeout);
	assert_int_equal(h->list[KAP_HOOK_PRESTART][0].timeout, 5);
	assert_string_equal(h->list[KAP_HOOK_CREATE_RUNTIME][0].path, "/bin/cr");
	assert_false(h->list[KAP_HOOK_CREATE_RUNTIME][0].has_timeout);
	assert_null(h->list[KAP_HOOK_CREATE_RUNTIME][0].args);
	assert_string_equal(h->list[KAP_HOOK_CREATE_CONTAINER][0].path, "/bin/cc");
	assert_string_equal(h->list[KAP_HOOK_START_CONTAINER][0].path, "/bin/sc");
	assert_int_equal(h->n[KAP_HOOK_POSTSTART], 2);
	assert_string_equal(h->list[KAP_HOOK_POSTSTART][1].path, "/bin/ps2");
	assert_string_equal(h->list[KAP_HOOK_POSTSTOP][0].path, "/bin/pst");
}

static void test_full_resources(const struct kap_resources *r)
{
	assert_true(r->has_mem_limit && r->mem_limit == 536870912);
	assert_true(r->has_mem_reservation && r->mem_reservation == 268435456);
	assert_true(r->has_mem_swap && r->mem_swap == -1);
	assert_true(r->has_mem_kernel && r->mem_kernel == 0);
	assert_true(r->has_mem_swappiness && r->mem_swappiness == 60);
	assert_true(r->has_disable_oom_killer && r->disable_oom_killer);
	assert_true(r->has_cpu_shares && r->cpu_shares == 512);
	assert_true(r->has_cpu_quota && r->cpu_quota == 50000);
	assert_true(r->has_cpu_period && r->cpu_period == 100000);
	assert_true(r->has_cpu_rt_runtime && r->cpu_rt_runtime == 950000);
	assert_true(r->has_cpu_rt_period && r->cpu_rt_period == 1000000);
	assert_string_equal(r->cpu_cpus, "0-1");
	assert_string_equal(r->cpu_mems, "0");
	assert_true(r->has_cpu_idle && r->cpu_idle == 1);
	assert_true(r->has_pids_limit && r->pids_limit == 100);
	assert_true(r->has_blkio_weight && r->blkio_weight == 500);
	assert_true(r->has_blkio_leaf_weight && r->blkio_leaf_weight == 300);
	assert_int_equal(r->n_blkio_weight_device, 2);
	assert_true(r->blkio_weight_device[0].major == 8 && r->blkio_weight_device[0].minor == 0);
	assert_true(r->blkio_weight_device[0].has_weight &&
		    r->blkio_weight_device[0].weight == 600);
	assert_false(r->blkio_weight_device[0].has_leaf_weight);
	assert_false(r->blkio_weight_device[1].has_weight);
	assert_true(r->blkio_weight_device[1].has_leaf_weight &&
		    r->blkio_weight_device[1].leaf_weight == 10);
	assert_int_equal(r->n_throttle_read_bps, 1);
	assert_true(r->throttle_read_bps[0].rate == 1048576);
	assert_int_equal(r->n_throttle_write_bps, 1);
	assert_true(r->throttle_write_bps[0].minor == 16 &&
		    r->throttle_write_bps[0].rate == 2097152);
	assert_int_equal(r->n_throttle_read_iops, 1);
	assert_true(r->throttle_read_iops[0].rate == 100);
	assert_int_equal(r->n_throttle_write_iops, 2);
	assert_true(r->throttle_write_iops[1].rate == 300);
	assert_int_equal(r->n_hugepage_limits, 1);
	assert_string_equal(r->hugepage_limits[0].page_size, "2MB");
	assert_true(r->hugepage_limits[0].limit == 209715200);
	assert_int_equal(r->n_devices, 4);
	assert_false(r->devices[0].allow);
	assert_int_equal(r->devices[0].type, 'a');
	assert_true(r->devices[0].major == -1 && r->devices[0].minor == -1);
	assert_string_equal(r->devices[0].access, "rwm");
	assert_true(r->devices[1].allow);
	assert_int_equal(r->devices[1].type, 'c');
	assert_true(r->devices[1].major == 1 && r->devices[1].minor == 3);
	assert_string_equal(r->devices[1].access, "rwm"); /* "mwr", canonical order */
	assert_int_equal(r->devices[2].type, 'b');
	assert_true(r->devices[2].major == 8 && r->devices[2].minor == -1);
	assert_string_equal(r->devices[2].access, "r");
	assert_string_equal(r->devices[3].access, "rwm"); /* absent: all */
	assert_true(r->devices[3].major == 136 && r->devices[3].minor == -1);
	assert_int_equal(r->n_unified, 2);
	assert_string_equal(r->unified_keys[0], "memory.high");
	assert_string_equal(r->unified_values[0], "max");
	assert_string_equal(r->unified_keys[1], "io.weight");
	assert_string_equal(r->unified_values[1], "default 100");
}

static void test_full(void **state)
{
	cleanup_spec struct kap_spec *s = parse_ok(full_config);

	assert_string_equal(s->oci_version, "1.2.0");
	assert_non_null(s->process);
	test_full_process(s->process);
	assert_string_equal(s->root_path, "rootfs");
	assert_true(s->root_readonly);
	assert_string_equal(s->hostname, "box");
	assert_string_equal(s->domainname, "example.org");
	test_full_mounts(s);
	test_full_hooks(s);
	assert_int_equal(s->n_annotations, 2);
	assert_string_equal(s->annotation_keys[0], "org.example.key");
	assert_string_equal(s->annotation_values[0], "value");
	assert_string_equal(s->annotation_keys[1], "empty");
	assert_string_equal(s->annotation_values[1], "");

	for (int t = 0; t < KAP_NS_COUNT; t++)
		assert_true(s->namespaces[t].enabled);
	assert_string_equal(s->namespaces[KAP_NS_NET].path, "/var/run/netns/x");
	assert_null(s->namespaces[KAP_NS_PID].path);
	assert_null(s->namespaces[KAP_NS_UTS].path); /* "" means create */
	assert_int_equal(s->n_uid_mappings, 1);
	assert_true(s->uid_mappings[0].container_id == 0 && s->uid_mappings[0].host_id == 100000 &&
		    s->uid_mappings[0].size == 65536);
	assert_int_equal(s->n_gid_mappings, 2);
	assert_true(s->gid_mappings[1].container_id == 65536 &&
		    s->gid_mappings[1].host_id == 1000 && s->gid_mappings[1].size == 1);
	assert_int_equal(s->n_devices, 2);
	assert_string_equal(s->devices[0].path, "/dev/fuse");
	assert_int_equal(s->devices[0].type, 'c');
	assert_true(s->devices[0].major == 10 && s->devices[0].minor == 229);
	assert_true(s->devices[0].has_mode && s->devices[0].mode == 0666);
	assert_true(s->devices[0].has_uid && s->devices[0].uid == 0);
	assert_true(s->devices[0].has_gid && s->devices[0].gid == 5);
	assert_int_equal(s->devices[1].type, 'p');
	assert_false(s->devices[1].has_mode || s->devices[1].has_uid || s->devices[1].has_gid);
	assert_string_equal(s->cgroups_path, "/kapsel/test");
	assert_true(s->has_resources);
	test_full_resources(&s->resources);
	assert_int_equal(s->n_sysctls, 2);
	assert_string_equal(s->sysctls[0].key, "net.ipv4.ip_forward");
	assert_string_equal(s->sysctls[0].value, "1");
	assert_string_equal(s->sysctls[1].key, "kernel.msgmax");
	assert_string_equal(s->masked_paths[1], "/sys/firmware");
	assert_null(s->masked_paths[2]);
	assert_string_equal(s->readonly_paths[0], "/proc/sys");
	assert_true(s->rootfs_propagation == (MS_SLAVE | MS_REC));
	assert_string_equal(s->mount_label, "system_u:object_r:container_file_t:s0");
	assert_true(s->time_monotonic.has && s->time_monotonic.secs == 100 &&
		    s->time_monotonic.nanosecs == 5);
	assert_true(s->time_boottime.has && s->time_boottime.secs == -7 &&
		    s->time_boottime.nanosecs == 0);
	assert_true(s->has_personality);
	assert_true(s->personality == PER_LINUX32);
	assert_non_null(s->seccomp);
	assert_string_equal(kap_json_string(kap_json_get(s->seccomp, "defaultAction")),
			    "SCMP_ACT_ALLOW");
	assert_non_null(s->json);
	assert_ptr_equal(kap_json_get(kap_json_get(s->json, "linux"), "seccomp"), s->seccomp);
}

static void test_minimal(void **state)
{
	cleanup_spec struct kap_spec *s = parse_ok("{'ociVersion':'1.0.0','root':{'path':'/r'}}");
	assert_null(s->process);
	assert_string_equal(s->root_path, "/r");
	assert_false(s->root_readonly);
	assert_null(s->hostname);
	assert_int_equal(s->n_mounts, 0);
	assert_null(s->mounts);
	for (int k = 0; k < KAP_HOOK_KIND_COUNT; k++)
		assert_int_equal(s->hooks.n[k], 0);
	for (int t = 0; t < KAP_NS_COUNT; t++)
		assert_false(s->namespaces[t].enabled);
	assert_false(s->has_resources);
	assert_int_equal(s->rootfs_propagation, 0);
	assert_false(s->has_personality);
	assert_false(s->time_monotonic.has);
	assert_null(s->seccomp);
	assert_null(s->masked_paths);
	/* Trailing whitespace is not trailing garbage. */
	kap_spec_free(parse_ok("{'ociVersion':'1.0.0','root':{'path':'/r'}}\n\t \r\n"));
}

/* JSON null is "absent" for optional members, as in Go's encoding/json (runc). */
static void test_nulls(void **state)
{
	cleanup_spec struct kap_spec *s =
	    parse_ok(DOC("'process':null,'hostname':null,'mounts':null,'hooks':null,'linux':{"
			 "'namespaces':null,'resources':null,'seccomp':null,'sysctl':null}"));
	assert_null(s->process);
	assert_null(s->hostname);
	assert_false(s->has_resources);
	assert_null(s->seccomp);
	/* Versions: any 1.x, including pre-releases. */
	kap_spec_free(parse_ok("{'ociVersion':'1.0.2-dev','root':{'path':'r'}}"));
	kap_spec_free(parse_ok("{'ociVersion':'1','root':{'path':'r'}}"));
	kap_spec_free(parse_ok("{'ociVersion':'1.3.0+build','root':{'path':'r'}}"));
}

static void test_mount_options(void **state)
{
	cleanup_spec struct kap_spec *s = parse_ok(
	    DOC("'mounts':["
		"{'destination':'/a','type':'tmpfs','options':['ro','rw','nosuid','suid','nodev',"
		" 'dev','noexec','exec','sync','async','dirsync','remount','mand','nomand',"
		" 'noatime','atime','nodiratime','diratime','relatime','norelatime',"
		" 'strictatime','nostrictatime','nosymfollow','symfollow','defaults','size=1m',"
		" 'tmpcopyup','x-initrd.mount','','mode=1777']},"
		"{'destination':'/b','type':'none','source':'/s','options':['bind','rro','private',"
		" 'idmap','rnosuid']},"
		"{'destination':'/c','type':'bind','source':'/s'},"
		"{'destination':'/d','source':'/s','options':['rbind','rw','unbindable',"
		" 'runbindable','noatime']},"
		"{'destination':'/e','type':'tmpfs','options':['shared','nosymfollow','rshared']},"
		"{'destination':'/f','type':'tmpfs','options':['slave','rprivate','lazytime']}]"));
	assert_int_equal(s->n_mounts, 6);
	const struct kap_mount *m = &s->mounts[0];
	/* Every flag set and then cleared: all cleared, except dirsync/remount with no pair. */
	assert_true(m->flags == (MS_DIRSYNC | MS_REMOUNT));
	assert_true(m->clear_flags ==
		    (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS | MS_MANDLOCK |
		     MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME | MS_NOSYMFOLLOW));
	assert_string_equal(m->data, "size=1m,mode=1777");
	assert_false(m->bind || m->recursive || m->bind_ro);
	assert_int_equal(m->propagation, 0);

	m = &s->mounts[1];
	assert_true(m->bind && !m->recursive && m->bind_ro);
	assert_true(m->flags == (MS_BIND | MS_RDONLY | MS_NOSUID));
	assert_true(m->propagation == MS_PRIVATE);
	assert_null(m->data);

	m = &s->mounts[2];
	assert_true(m->bind && !m->recursive && !m->bind_ro);
	assert_true(m->flags == MS_BIND);

	m = &s->mounts[3];
	assert_true(m->bind && m->recursive && !m->bind_ro);
	assert_true(m->flags == (MS_BIND | MS_REC | MS_NOATIME));
	assert_true(m->clear_flags == MS_RDONLY);
	assert_true(m->propagation == (MS_UNBINDABLE | MS_REC));
	assert_null(m->type);

	m = &s->mounts[4];
	assert_true(m->propagation == (MS_SHARED | MS_REC));
	assert_true(m->flags == MS_NOSYMFOLLOW);

	m = &s->mounts[5];
	assert_true(m->propagation == (MS_PRIVATE | MS_REC));
	assert_true(m->flags == MS_LAZYTIME);
}

static void test_rootfs_propagation(void **state)
{
	static const struct {
		const char *name;
		unsigned long flags;
	} cases[] = {
	    {"private", MS_PRIVATE},
	    {"rprivate", MS_PRIVATE | MS_REC},
	    {"slave", MS_SLAVE},
	    {"rslave", MS_SLAVE | MS_REC},
	    {"shared", MS_SHARED},
	    {"rshared", MS_SHARED | MS_REC},
	    {"unbindable", MS_UNBINDABLE},
	    {"runbindable", MS_UNBINDABLE | MS_REC},
	    {"", 0},
	};
	for (size_t i = 0; i < KAP_ARRAY_SIZE(cases); i++) {
		char doc[256];
		snprintf(doc, sizeof(doc), LINUX("'rootfsPropagation':'%s'"), cases[i].name);
		cleanup_spec struct kap_spec *s = parse_ok(doc);
		assert_true(s->rootfs_propagation == cases[i].flags);
	}
}

static struct kap_spec *load_corpus(const char *name)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct kap_spec *s = NULL;
	struct kapsel_error *err = NULL;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", CORPUS, name);
	if (kap_fs_read_file(AT_FDCWD, path, 1 << 20, &buf, &len, &err) < 0 ||
	    kap_spec_parse(buf, len, &s, &err) < 0)
		fail_msg("%s: %s", name, err->msg);
	return s;
}

static void test_podman(void **state)
{
	cleanup_spec struct kap_spec *s = load_corpus("podman.json");
	const struct kap_process *p = s->process;
	assert_string_equal(s->oci_version, "1.0.2-dev");
	assert_string_equal(p->args[0], "echo");
	assert_int_equal(p->user.n_additional_gids, 11);
	assert_int_equal(p->user.umask, 022);
	assert_true(p->caps.bounding & BIT(CAP_SYS_CHROOT));
	assert_false(p->caps.bounding & BIT(CAP_SYS_ADMIN));
	assert_true(p->caps.inheritable == 0 && p->caps.ambient == 0);
	assert_int_equal(p->rlimits[1].resource, RLIMIT_NPROC);
	assert_true(p->has_oom_score_adj && p->oom_score_adj == 0);
	assert_int_equal(s->n_mounts, 11);
	assert_string_equal(s->mounts[1].data, "mode=755,size=65536k");
	assert_true(s->mounts[1].flags == (MS_NOSUID | MS_STRICTATIME));
	assert_true(s->mounts[7].bind && !s->mounts[7].recursive);
	assert_true(s->mounts[7].propagation == (MS_PRIVATE | MS_REC));
	assert_true(s->mounts[10].flags ==
		    (MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY));
	assert_int_equal(s->n_annotations, 5);
	assert_string_equal(s->namespaces[KAP_NS_NET].path, "/run/netns/netns-1b2c3d4e");
	assert_false(s->namespaces[KAP_NS_USER].enabled);
	assert_true(s->has_resources && s->resources.has_pids_limit &&
		    s->resources.pids_limit == 2048);
	assert_false(s->resources.has_mem_limit);
	assert_int_equal(s->n_sysctls, 1);
	assert_non_null(s->seccomp);
	assert_string_equal(s->readonly_paths[5], "/proc/sysrq-trigger");
}

static void test_containerd(void **state)
{
	cleanup_spec struct kap_spec *s = load_corpus("containerd.json");
	assert_int_equal(s->process->user.uid, 65535);
	assert_false(s->process->user.has_umask);
	assert_true(s->process->no_new_privileges);
	assert_int_equal(s->process->oom_score_adj, -998);
	assert_true(s->process->caps.effective & BIT(CAP_AUDIT_WRITE));
	assert_true(s->root_readonly);
	assert_string_equal(s->root_path, "rootfs");
	const struct kap_mount *shm = &s->mounts[5];
	assert_true(shm->bind && shm->recursive && shm->bind_ro);
	assert_true(shm->flags ==
		    (MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
	assert_int_equal(s->resources.n_devices, 1);
	assert_false(s->resources.devices[0].allow);
	assert_true(s->resources.has_cpu_shares && s->resources.cpu_shares == 2);
	assert_string_equal(s->cgroups_path, "/kubepods/besteffort/pod1234/9a8b7c6d5e4f");
	assert_false(s->namespaces[KAP_NS_CGROUP].enabled);
}

static void test_load(void **state)
{
	char dir[] = "/tmp/kapsel-test-spec-XXXXXX";
	char path[PATH_MAX], cwd[PATH_MAX];
	struct kap_spec *s = NULL;
	struct kapsel_error *err = NULL;
	assert_non_null(mkdtemp(dir));

	/* Missing file: the error names the path tried. */
	char want[PATH_MAX + 64];
	snprintf(want, sizeof(want), "open %s/config.json: No such file or directory", dir);
	assert_int_equal(kap_spec_load(dir, &s, &err), -ENOENT);
	assert_string_equal(err->msg, want);
	kapsel_error_free(err);
	err = NULL;

	cleanup_free char *doc = dq(DOC("'hostname':'loaded'"));
	snprintf(path, sizeof(path), "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(doc, f);
	fclose(f);
	assert_int_equal(kap_spec_load(dir, &s, &err), 0);
	assert_string_equal(s->hostname, "loaded");
	kap_spec_free(s);
	s = NULL;

	/* NULL bundle: the current directory. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	int r = kap_spec_load(NULL, &s, &err);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(r, 0);
	assert_string_equal(s->hostname, "loaded");
	kap_spec_free(s);
	s = NULL;

	/* JSON errors name the file. */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"ociVersion\": ", f);
	fclose(f);
	assert_true(kap_spec_load(dir, &s, &err) < 0);
	snprintf(want, sizeof(want), "%s/config.json: invalid JSON at offset", dir);
	assert_true(strncmp(err->msg, want, strlen(want)) == 0);
	kapsel_error_free(err);

	unlink(path);
	rmdir(dir);
}

static void test_parse_process(void **state)
{
	/* exec --process FILE: the object alone, with the caller's path prefix. */
	cleanup_free char *doc = dq("{'args':['ls'],'cwd':'/tmp','env':['A=b'],'terminal':false,"
				    "'user':{'uid':5}}");
	cleanup_json struct kap_json *j = NULL;
	struct kap_process *p = NULL;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_json_parse(doc, strlen(doc), "process.json", &j, &err), 0);
	assert_int_equal(kap_spec_parse_process(j, "process", &p, &err), 0);
	assert_string_equal(p->args[0], "ls");
	assert_string_equal(p->cwd, "/tmp");
	assert_int_equal(p->user.uid, 5);
	assert_false(p->has_caps);
	assert_false(p->has_oom_score_adj);
	kap_process_free(p);
	p = NULL;

	cleanup_free char *bad = dq("{'args':['ls']}");
	cleanup_json struct kap_json *jb = NULL;
	assert_int_equal(kap_json_parse(bad, strlen(bad), "process.json", &jb, &err), 0);
	assert_int_equal(kap_spec_parse_process(jb, "process", &p, &err), -EINVAL);
	assert_string_equal(err->msg, "process.cwd: missing");
	assert_null(p);
	kapsel_error_free(err);
	err = NULL;

	/* commandLine stands in for args. */
	cleanup_free char *cl = dq("{'commandLine':'ls -l','cwd':'/'}");
	cleanup_json struct kap_json *jc = NULL;
	assert_int_equal(kap_json_parse(cl, strlen(cl), "process.json", &jc, &err), 0);
	assert_int_equal(kap_spec_parse_process(jc, "process", &p, &err), 0);
	assert_string_equal(p->command_line, "ls -l");
	assert_null(p->args);
	kap_process_free(p);
	p = NULL;

	assert_int_equal(kap_spec_parse_process(kap_json_get(jc, "cwd"), "process", &p, &err),
			 -EINVAL);
	assert_string_equal(err->msg, "process: expected object");
	kapsel_error_free(err);
}

static void test_parse_resources(void **state)
{
	/* update --resources FILE */
	cleanup_free char *doc = dq("{'memory':{'limit':1048576},'pids':{'limit':-1}}");
	cleanup_json struct kap_json *j = NULL;
	struct kap_resources r = {0};
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_json_parse(doc, strlen(doc), "resources", &j, &err), 0);
	assert_int_equal(kap_spec_parse_resources(j, "linux.resources", &r, &err), 0);
	assert_true(r.has_mem_limit && r.mem_limit == 1048576);
	assert_true(r.has_pids_limit && r.pids_limit == -1);
	assert_false(r.has_cpu_shares);
	kap_resources_clear(&r);
	assert_false(r.has_mem_limit);

	/* On error the output is untouched. */
	cleanup_free char *bad = dq("{'memory':{'limit':1},'unified':{'a':'b','c':[]}}");
	cleanup_json struct kap_json *jb = NULL;
	r.has_pids_limit = true;
	assert_int_equal(kap_json_parse(bad, strlen(bad), "resources", &jb, &err), 0);
	assert_int_equal(kap_spec_parse_resources(jb, "linux.resources", &r, &err), -EINVAL);
	assert_string_equal(err->msg, "linux.resources.unified.c: expected string");
	assert_true(r.has_pids_limit && !r.has_mem_limit);
	kapsel_error_free(err);
}

/* ---------------------------------------------------------------------------------------- */
/* Malformed documents: the exact message, naming the field. */

struct bad_case {
	const char *doc;
	const char *want;
};

static const struct bad_case bad_cases[] = {
    /* ociVersion */
    {"{'ociVersion':'2.0.0','root':{'path':'r'}}",
     "ociVersion: unsupported version 2.0.0 (kapsel supports 1.x)"},
    {"{'ociVersion':'10.1','root':{'path':'r'}}",
     "ociVersion: unsupported version 10.1 (kapsel supports 1.x)"},
    {"{'ociVersion':'','root':{'path':'r'}}",
     "ociVersion: unsupported version \"\" (kapsel supports 1.x)"},
    {"{'ociVersion':'v1.0','root':{'path':'r'}}",
     "ociVersion: unsupported version v1.0 (kapsel supports 1.x)"},
    {"{'root':{'path':'r'}}", "ociVersion: missing"},
    {"{'ociVersion':1.0,'root':{'path':'r'}}", "ociVersion: expected string"},
    /* root */
    {"{'ociVersion':'1.0.0'}", "root.path: missing"},
    {"{'ociVersion':'1.0.0','root':{}}", "root.path: missing"},
    {"{'ociVersion':'1.0.0','root':'rootfs'}", "root: expected object"},
    {"{'ociVersion':'1.0.0','root':{'path':''}}", "root.path: must not be empty"},
    {"{'ociVersion':'1.0.0','root':{'path':7}}", "root.path: expected string"},
    {DOC("'root':{'path':'r','readonly':'yes'}"), "root.readonly: expected boolean"},
    {DOC("'hostname':1"), "hostname: expected string"},
    /* process */
    {DOC("'process':[]"), "process: expected object"},
    {DOC("'process':{'cwd':'/'}"), "process.args: missing"},
    {DOC("'process':{'args':[],'cwd':'/'}"), "process.args: must not be empty"},
    {DOC("'process':{'args':'sh','cwd':'/'}"), "process.args: expected array"},
    {DOC("'process':{'args':['sh',1],'cwd':'/'}"), "process.args[1]: expected string"},
    {DOC("'process':{'args':['sh']}"), "process.cwd: missing"},
    {DOC("'process':{'args':['sh'],'cwd':'tmp'}"), "process.cwd: \"tmp\" is not an absolute path"},
    {PROC("'terminal':'yes'"), "process.terminal: expected boolean"},
    {PROC("'env':['A=1',{}]"), "process.env[1]: expected string"},
    {PROC("'consoleSize':{'height':-1}"),
     "process.consoleSize.height: expected a non-negative integer"},
    {PROC("'user':{'uid':-1}"), "process.user.uid: expected a non-negative integer"},
    {PROC("'user':{'gid':4294967296}"),
     "process.user.gid: 4294967296 out of range (0..4294967295)"},
    {PROC("'user':{'uid':'root'}"), "process.user.uid: expected integer"},
    {PROC("'user':{'umask':4096}"), "process.user.umask: 010000 out of range (0..07777)"},
    {PROC("'user':{'additionalGids':[1,'wheel']}"),
     "process.user.additionalGids[1]: expected a gid (0..4294967294)"},
    {PROC("'user':{'additionalGids':[4294967295]}"),
     "process.user.additionalGids[0]: expected a gid (0..4294967294)"},
    {PROC("'user':{'uid':4294967295}"), "process.user.uid: 4294967295 is not a valid uid"},
    {PROC("'user':{'gid':4294967295}"), "process.user.gid: 4294967295 is not a valid gid"},
    {PROC("'capabilities':{'bounding':['CAP_CHOWN','CAP_KILL','CAP_NET_RAW','CAP_FOO']}"),
     "process.capabilities.bounding[3]: unknown capability CAP_FOO"},
    {PROC("'capabilities':{'ambient':['SYS_ADMIN']}"),
     "process.capabilities.ambient[0]: unknown capability SYS_ADMIN"},
    {PROC("'capabilities':{'permitted':[21]}"),
     "process.capabilities.permitted[0]: expected string"},
    {PROC("'capabilities':{'effective':'CAP_KILL'}"),
     "process.capabilities.effective: expected array"},
    {PROC("'capabilities':['CAP_KILL']"), "process.capabilities: expected object"},
    {PROC("'rlimits':[{'type':'RLIMIT_FOO','soft':1,'hard':1}]"),
     "process.rlimits[0].type: unknown rlimit RLIMIT_FOO"},
    {PROC("'rlimits':[{'type':'RLIMIT_NOFILE','soft':1,'hard':1},"
	  "{'type':'RLIMIT_NOFILE','soft':2,'hard':2}]"),
     "process.rlimits[1].type: duplicate rlimit RLIMIT_NOFILE"},
    {PROC("'rlimits':[{'type':'RLIMIT_NOFILE','hard':1}]"), "process.rlimits[0].soft: missing"},
    {PROC("'rlimits':[{'soft':1,'hard':1}]"), "process.rlimits[0].type: missing"},
    {PROC("'rlimits':[{'type':'RLIMIT_NOFILE','soft':-1,'hard':1}]"),
     "process.rlimits[0].soft: expected a non-negative integer"},
    {PROC("'rlimits':['RLIMIT_NOFILE']"), "process.rlimits[0]: expected object"},
    {PROC("'oomScoreAdj':1001"), "process.oomScoreAdj: 1001 out of range (-1000..1000)"},
    {PROC("'oomScoreAdj':-1001"), "process.oomScoreAdj: -1001 out of range (-1000..1000)"},
    {PROC("'oomScoreAdj':1.5"), "process.oomScoreAdj: expected integer"},
    {PROC("'noNewPrivileges':1"), "process.noNewPrivileges: expected boolean"},
    /* mounts */
    {DOC("'mounts':{}"), "mounts: expected array"},
    {DOC("'mounts':['/proc']"), "mounts[0]: expected object"},
    {DOC("'mounts':[{'destination':'/a'},{'type':'tmpfs'}]"), "mounts[1].destination: missing"},
    {DOC("'mounts':[{'destination':''}]"), "mounts[0].destination: must not be empty"},
    {DOC("'mounts':[{'destination':'/a','options':'ro'}]"), "mounts[0].options: expected array"},
    {DOC("'mounts':[{'destination':'/a','options':['ro',1]}]"),
     "mounts[0].options[1]: expected string"},
    {DOC("'mounts':[{'destination':'/a','source':false}]"), "mounts[0].source: expected string"},
    /* hooks */
    {DOC("'hooks':[]"), "hooks: expected object"},
    {DOC("'hooks':{'prestart':{}}"), "hooks.prestart: expected array"},
    {DOC("'hooks':{'poststop':[{'args':['x']}]}"), "hooks.poststop[0].path: missing"},
    {DOC("'hooks':{'createRuntime':[{'path':'hook'}]}"),
     "hooks.createRuntime[0].path: \"hook\" is not an absolute path"},
    {DOC("'hooks':{'poststart':[{'path':'/h'},{'path':'/h','timeout':0}]}"),
     "hooks.poststart[1].timeout: must be greater than zero"},
    {DOC("'hooks':{'startContainer':[{'path':'/h','timeout':4294967296}]}"),
     "hooks.startContainer[0].timeout: 4294967296 out of range"},
    {DOC("'hooks':{'createContainer':[{'path':'/h','env':[1]}]}"),
     "hooks.createContainer[0].env[0]: expected string"},
    /* annotations */
    {DOC("'annotations':{'a':'b','io.example/count':3}"),
     "annotations.io.example/count: expected string"},
    {DOC("'annotations':['a']"), "annotations: expected object"},
    /* linux */
    {DOC("'linux':[]"), "linux: expected object"},
    {LINUX("'namespaces':[{'type':'pid'},{'type':'mount'},{'type':'foo'}]"),
     "linux.namespaces[2].type: unknown namespace type \"foo\""},
    {LINUX("'namespaces':[{'type':'pid'},{'type':'pid'}]"),
     "linux.namespaces[1].type: duplicate namespace \"pid\""},
    {LINUX("'namespaces':[{'path':'/proc/1/ns/net'}]"), "linux.namespaces[0].type: missing"},
    {LINUX("'namespaces':[{'type':'network','path':'proc/1/ns/net'}]"),
     "linux.namespaces[0].path: \"proc/1/ns/net\" is not an absolute path"},
    {LINUX("'namespaces':['pid']"), "linux.namespaces[0]: expected object"},
    {LINUX("'uidMappings':[{'containerID':0,'hostID':1000}]"),
     "linux.uidMappings[0].size: missing"},
    {LINUX("'gidMappings':[{'containerID':0,'hostID':-5,'size':1}]"),
     "linux.gidMappings[0].hostID: expected a non-negative integer"},
    {LINUX("'devices':[{'path':'/dev/x','type':'x','major':1,'minor':1}]"),
     "linux.devices[0].type: unknown device type \"x\" (expected c, b, u or p)"},
    {LINUX("'devices':[{'path':'/dev/x','type':'c','minor':1}]"),
     "linux.devices[0].major: missing"},
    {LINUX("'devices':[{'path':'dev/x','type':'c','major':1,'minor':1}]"),
     "linux.devices[0].path: \"dev/x\" is not an absolute path"},
    {LINUX("'devices':[{'path':'/dev/x','type':'c','major':1,'minor':1,'fileMode':4096}]"),
     "linux.devices[0].fileMode: 010000 out of range (0..07777)"},
    {LINUX("'devices':[{'path':'/dev/x','type':'c','major':-1,'minor':1}]"),
     "linux.devices[0].major: -1 out of range"},
    {LINUX("'cgroupsPath':['a']"), "linux.cgroupsPath: expected string"},
    {LINUX("'sysctl':{'kernel.shmmax':1}"), "linux.sysctl.kernel.shmmax: expected string"},
    {LINUX("'maskedPaths':[null]"), "linux.maskedPaths[0]: expected string"},
    {LINUX("'rootfsPropagation':'sideways'"),
     "linux.rootfsPropagation: unknown propagation \"sideways\""},
    {LINUX("'timeOffsets':{'monotonic':{'secs':1,'nanosecs':1000000000}}"),
     "linux.timeOffsets.monotonic.nanosecs: 1000000000 out of range (0..999999999)"},
    {LINUX("'timeOffsets':{'boottime':{'secs':'1'}}"),
     "linux.timeOffsets.boottime.secs: expected integer"},
    {LINUX("'personality':{'domain':'LINUX64'}"),
     "linux.personality.domain: unknown domain \"LINUX64\" (expected LINUX or LINUX32)"},
    {LINUX("'personality':{}"), "linux.personality.domain: missing"},
    {LINUX("'seccomp':[]"), "linux.seccomp: expected object"},
    /* linux.resources */
    {LINUX("'resources':[]"), "linux.resources: expected object"},
    {RES("'memory':{'limit':'1G'}"), "linux.resources.memory.limit: expected integer"},
    {RES("'memory':{'limit':1.5}"), "linux.resources.memory.limit: expected integer"},
    {RES("'memory':{'limit':9223372036854775808}"),
     "linux.resources.memory.limit: value out of range"},
    {RES("'memory':{'swappiness':-1}"),
     "linux.resources.memory.swappiness: expected a non-negative integer"},
    {RES("'memory':{'disableOOMKiller':0}"),
     "linux.resources.memory.disableOOMKiller: expected boolean"},
    {RES("'cpu':{'cpus':0}"), "linux.resources.cpu.cpus: expected string"},
    {RES("'cpu':{'shares':-2}"), "linux.resources.cpu.shares: expected a non-negative integer"},
    {RES("'pids':{'limit':'max'}"), "linux.resources.pids.limit: expected integer"},
    {RES("'blockIO':{'weight':70000}"),
     "linux.resources.blockIO.weight: 70000 out of range (0..65535)"},
    {RES("'blockIO':{'weightDevice':[{'major':8,'weight':10}]}"),
     "linux.resources.blockIO.weightDevice[0].minor: missing"},
    {RES("'blockIO':{'throttleWriteIOPSDevice':[{'major':8,'minor':0}]}"),
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].rate: missing"},
    {RES("'hugepageLimits':[{'limit':1}]"), "linux.resources.hugepageLimits[0].pageSize: missing"},
    {RES("'devices':[{'allow':true,'access':'rwx'}]"),
     "linux.resources.devices[0].access: invalid access \"rwx\" (expected a subset of \"rwm\")"},
    {RES("'devices':[{'allow':false,'access':'rwm'},{'access':'r'}]"),
     "linux.resources.devices[1].allow: missing"},
    {RES("'devices':[{'allow':true,'type':'p'}]"),
     "linux.resources.devices[0].type: unknown device type \"p\" (expected a, c or b)"},
    {RES("'devices':[{'allow':true,'major':-2}]"),
     "linux.resources.devices[0].major: -2 out of range"},
    {RES("'unified':{'memory.max':1024}"), "linux.resources.unified.memory.max: expected string"},
    /* the document itself */
    {"[]", "config.json: expected object, got array"},
    {"\"config\"", "config.json: expected object, got string"},
    {"{'ociVersion': }", "config.json: invalid JSON at offset 15: unexpected character"},
    /* trailing garbage: the offset points at it */
    {"{'ociVersion':'1.0.0','root':{'path':'r'}} x",
     "config.json: invalid JSON at offset 43: unexpected character"},
    {"{'ociVersion':'1.0.0','root':{'path':'r'}}{}",
     "config.json: invalid JSON at offset 42: unexpected character"},
    {"", "config.json: invalid JSON at offset 0: unexpected end of data"},
    {"{'ociVersion':'1.0.0',", "config.json: invalid JSON at offset 22: unexpected end of data"},
    {"{'ociVersion':'1.0.0','root':{'path':'r'},}",
     "config.json: invalid JSON at offset 42: unexpected character"},
};

static void test_bad(void **state)
{
	size_t failed = 0;
	for (size_t i = 0; i < KAP_ARRAY_SIZE(bad_cases); i++) {
		cleanup_free char *doc = dq(bad_cases[i].doc);
		failed += !error_is(doc, strlen(doc), bad_cases[i].want);
	}
	assert_int_equal(failed, 0);
}

/* Nesting beyond 64 levels is refused by the parser, before any recursion of ours. */
static void test_deep_nesting(void **state)
{
	char doc[512];
	for (int depth = 60; depth <= 70; depth += 10) {
		/* {"x": [[[ ... ]]], "ociVersion": ...}: depth arrays inside the top object. */
		int n = snprintf(doc, sizeof(doc), "{\"x\":");
		for (int i = 0; i < depth; i++)
			doc[n++] = '[';
		for (int i = 0; i < depth; i++)
			doc[n++] = ']';
		n += snprintf(doc + n, sizeof(doc) - (size_t)n,
			      ",\"ociVersion\":\"1.0.0\",\"root\":{\"path\":\"r\"}}");
		if (depth == 60) {
			struct kap_spec *s = NULL;
			struct kapsel_error *err = NULL;
			assert_int_equal(kap_spec_parse(doc, (size_t)n, &s, &err), 0);
			kap_spec_free(s);
		} else {
			/* The 64th nested '[' (offset 5 + 63) is the one refused. */
			check_error_raw(doc, (size_t)n,
					"config.json: invalid JSON at offset 68: nesting too deep");
		}
	}
}

/* Bytes that are not JSON text at all: NUL inside, invalid UTF-8 in strings. */
static void test_binary(void **state)
{
	static const char nul[] = "{\"ociVersion\":\"1.0.0\"\0,\"root\":{\"path\":\"r\"}}";
	struct kap_spec *s = NULL;
	struct kapsel_error *err = NULL;
	assert_true(kap_spec_parse(nul, sizeof(nul) - 1, &s, &err) < 0);
	assert_null(s);
	assert_non_null(strstr(err->msg, "config.json: invalid JSON"));
	kapsel_error_free(err);
}

/* ---------------------------------------------------------------------------------------- */
/* Name tables */

static void test_caps(void **state)
{
	int n = 0;
	for (int c = 0; c <= CAP_LAST_CAP; c++) {
		const char *name = kap_cap_name(c);
		assert_non_null(name);
		assert_int_equal(kap_cap_from_name(name), c);
		n++;
	}
	assert_int_equal(n, 41);
	assert_int_equal(kap_cap_from_name("CAP_SYS_ADMIN"), CAP_SYS_ADMIN);
	assert_int_equal(kap_cap_from_name("cap_net_raw"), CAP_NET_RAW);
	assert_int_equal(kap_cap_from_name("CAP_PERFMON"), 38);
	assert_int_equal(kap_cap_from_name("CAP_BPF"), 39);
	assert_int_equal(kap_cap_from_name("CAP_CHECKPOINT_RESTORE"), 40);
	assert_int_equal(kap_cap_from_name("SYS_ADMIN"), -1);
	assert_int_equal(kap_cap_from_name("CAP_"), -1);
	assert_int_equal(kap_cap_from_name(""), -1);
	assert_int_equal(kap_cap_from_name(NULL), -1);
	assert_null(kap_cap_name(-1));
	assert_null(kap_cap_name(CAP_LAST_CAP + 1));
	int last = kap_cap_last();
	assert_true(last >= 30 && last < 64);
	assert_int_equal(kap_cap_last(), last);
}

static void test_rlimits(void **state)
{
	static const struct {
		const char *name;
		int res;
	} all[] = {
	    {"RLIMIT_AS", RLIMIT_AS},
	    {"RLIMIT_CORE", RLIMIT_CORE},
	    {"RLIMIT_CPU", RLIMIT_CPU},
	    {"RLIMIT_DATA", RLIMIT_DATA},
	    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
	    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
	    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
	    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
	    {"RLIMIT_NICE", RLIMIT_NICE},
	    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
	    {"RLIMIT_NPROC", RLIMIT_NPROC},
	    {"RLIMIT_RSS", RLIMIT_RSS},
	    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
	    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
	    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
	    {"RLIMIT_STACK", RLIMIT_STACK},
	};
	assert_int_equal(KAP_ARRAY_SIZE(all), RLIMIT_NLIMITS);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(all); i++)
		assert_int_equal(kap_rlimit_from_name(all[i].name), all[i].res);
	assert_int_equal(kap_rlimit_from_name("RLIMIT_FOO"), -1);
	assert_int_equal(kap_rlimit_from_name("NOFILE"), -1);
	assert_int_equal(kap_rlimit_from_name(NULL), -1);
}

static void test_namespaces(void **state)
{
	static const struct {
		enum kap_ns_type t;
		const char *name, *proc;
		int flag;
	} all[] = {
	    {KAP_NS_PID, "pid", "pid", CLONE_NEWPID},
	    {KAP_NS_NET, "network", "net", CLONE_NEWNET},
	    {KAP_NS_MNT, "mount", "mnt", CLONE_NEWNS},
	    {KAP_NS_IPC, "ipc", "ipc", CLONE_NEWIPC},
	    {KAP_NS_UTS, "uts", "uts", CLONE_NEWUTS},
	    {KAP_NS_USER, "user", "user", CLONE_NEWUSER},
	    {KAP_NS_CGROUP, "cgroup", "cgroup", CLONE_NEWCGROUP},
	    {KAP_NS_TIME, "time", "time", CLONE_NEWTIME},
	};
	assert_int_equal(KAP_ARRAY_SIZE(all), KAP_NS_COUNT);
	for (size_t i = 0; i < KAP_ARRAY_SIZE(all); i++) {
		assert_string_equal(kap_ns_name(all[i].t), all[i].name);
		assert_string_equal(kap_ns_proc_name(all[i].t), all[i].proc);
		assert_int_equal(kap_ns_clone_flag(all[i].t), all[i].flag);
	}
	assert_null(kap_ns_name(KAP_NS_COUNT));
	assert_null(kap_ns_proc_name((enum kap_ns_type) - 1));
	assert_int_equal(kap_ns_clone_flag(KAP_NS_COUNT), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_minimal),
	    cmocka_unit_test(test_nulls),
	    cmocka_unit_test(test_mount_options),
	    cmocka_unit_test(test_rootfs_propagation),
	    cmocka_unit_test(test_podman),
	    cmocka_unit_test(test_containerd),
	    cmocka_unit_test(test_load),
	    cmocka_unit_test(test_parse_process),
	    cmocka_unit_test(test_parse_resources),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_deep_nesting),
	    cmocka_unit_test(test_binary),
	    cmocka_unit_test(test_caps),
	    cmocka_unit_test(test_rlimits),
	    cmocka_unit_test(test_namespaces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
