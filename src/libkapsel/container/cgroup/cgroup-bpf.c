/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cgroup v2 devices controller is a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the
 * cgroup (Documentation/admin-guide/cgroup-v2.rst "Device controller"; its context is struct
 * bpf_cgroup_dev_ctx in include/uapi/linux/bpf.h). kapsel generates it from the
 * OCI rules with runc's and crun's semantics -- rules in order, the last match decides, nothing
 * matching denies -- and loads it with the raw bpf(2) syscall (no libbpf: a few hundred bytes
 * of bytecode do not justify a library on the start path).
 */
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "container/cgroup/cgroup-internal.h"
#include "core/cleanup.h"
#include "core/error.h"

#define MAX_RULES	 4096
#define MAX_ATTACHED	 64
#define VERIFIER_LOG_LEN (64 * 1024)

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	return (struct bpf_insn){
	    .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

/* Registers after the prologue: r2 type, r3 access, r4 major, r5 minor. */
enum { R0, R1, R2, R3, R4, R5 };

static int rule_access(const struct kap_device_rule *r)
{
	int acc = 0;
	for (const char *a = r->access; *a; a++) {
		if (*a == 'r')
			acc |= BPF_DEVCG_ACC_READ;
		else if (*a == 'w')
			acc |= BPF_DEVCG_ACC_WRITE;
		else if (*a == 'm')
			acc |= BPF_DEVCG_ACC_MKNOD;
		else
			return -1;
	}
	/* An empty access list means everything, as with the v1 files. */
	return acc ? acc : BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
}

int kap_cg_bpf_build(const struct kap_device_rule *rules, size_t n, struct bpf_insn **insns,
		     size_t *n_insns, struct kapsel_error **err)
{
	if (n > MAX_RULES)
		return kap_error_plain(err, E2BIG, "linux.resources.devices: more than %d rules",
				       MAX_RULES);
	/* Prologue 6, per rule at most 7 (type, 3 access, major, minor) + 2, epilogue 2. */
	cleanup_free struct bpf_insn *p = calloc(6 + n * 9 + 2, sizeof(*p));
	if (!p)
		return kap_error(err, ENOMEM, "device filter");
	size_t k = 0;
	/* struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major, minor; } */
	p[k++] = insn(BPF_LDX | BPF_MEM | BPF_W, R2, R1, 0, 0);
	p[k++] = insn(BPF_ALU | BPF_AND | BPF_K, R2, 0, 0, 0xFFFF);
	p[k++] = insn(BPF_LDX | BPF_MEM | BPF_W, R3, R1, 0, 0);
	p[k++] = insn(BPF_ALU | BPF_RSH | BPF_K, R3, 0, 0, 16);
	p[k++] = insn(BPF_LDX | BPF_MEM | BPF_W, R4, R1, 4, 0);
	p[k++] = insn(BPF_LDX | BPF_MEM | BPF_W, R5, R1, 8, 0);
	bool unconditional = false;
	/*
	 * Last match wins: test the rules from the last to the first and return the first hit.
	 * A rule matching everything ends the program: what precedes it can never decide, and
	 * the verifier rejects unreachable instructions.
	 */
	for (size_t i = n; i-- > 0 && !unconditional;) {
		const struct kap_device_rule *r = &rules[i];
		int acc = rule_access(r);
		if ((r->type != 'a' && r->type != 'b' && r->type != 'c') || acc < 0 ||
		    r->major < -1 || r->major > UINT32_MAX || r->minor < -1 ||
		    r->minor > UINT32_MAX)
			return kap_error_plain(err, EINVAL,
					       "linux.resources.devices[%zu]: invalid rule", i);
		struct bpf_insn cond[6];
		size_t nc = 0;
		if (r->type != 'a') {
			int t = r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
			cond[nc++] = insn(BPF_JMP32 | BPF_JNE | BPF_K, R2, 0, 0, t);
		}
		if (acc != (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD)) {
			/*
			 * An allow rule must grant every requested access ((access & rule) ==
			 * access, as runc and crun test). A deny rule applies when it takes away
			 * any requested access ((access & rule) != 0): as on cgroup v1, where
			 * "deny c 1:3 w" after "allow c 1:3 rwm" makes an O_RDWR open fail.
			 */
			cond[nc++] = insn(BPF_ALU | BPF_MOV | BPF_X, R1, R3, 0, 0);
			cond[nc++] = insn(BPF_ALU | BPF_AND | BPF_K, R1, 0, 0, acc);
			if (r->allow)
				cond[nc++] = insn(BPF_JMP32 | BPF_JNE | BPF_X, R1, R3, 0, 0);
			else
				cond[nc++] = insn(BPF_JMP32 | BPF_JEQ | BPF_K, R1, 0, 0, 0);
		}
		if (r->type != 'a' && r->major >= 0)
			cond[nc++] = insn(BPF_JMP32 | BPF_JNE | BPF_K, R4, 0, 0, (int32_t)r->major);
		if (r->type != 'a' && r->minor >= 0)
			cond[nc++] = insn(BPF_JMP32 | BPF_JNE | BPF_K, R5, 0, 0, (int32_t)r->minor);
		/* A failed test jumps past this rule's "return allow". */
		for (size_t c = 0; c < nc; c++) {
			if (BPF_CLASS(cond[c].code) == BPF_JMP32)
				cond[c].off = (int16_t)(nc + 2 - (c + 1));
			p[k++] = cond[c];
		}
		p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, r->allow ? 1 : 0);
		p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
		unconditional = nc == 0;
	}
	if (!unconditional) {
		p[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0);
		p[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	}
	*insns = steal_ptr(p);
	*n_insns = k;
	return 0;
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static int load(const struct bpf_insn *insns, size_t n, const char *dir, struct kapsel_error **err)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = (uint32_t)n;
	a.license = (uintptr_t) "Apache-2.0";
	int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
	if (fd >= 0)
		return fd;
	int e = errno;
	if (e != EINVAL && e != EACCES)
		return kap_error(err, e, "load device filter for %s", dir);
	/* Load again with the verifier's log, for an error that says what it disliked. */
	cleanup_free char *log = calloc(1, VERIFIER_LOG_LEN);
	if (log) {
		a.log_level = 1;
		a.log_buf = (uintptr_t)log;
		a.log_size = VERIFIER_LOG_LEN;
		fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
		if (fd >= 0)
			return fd;
		size_t len = strlen(log);
		while (len && log[len - 1] == '\n')
			log[--len] = '\0';
		const char *last = strrchr(log, '\n');
		return kap_error(err, e, "load device filter for %s (verifier: %s)", dir,
				 last ? last + 1 : log);
	}
	return kap_error(err, e, "load device filter for %s", dir);
}

int kap_cg_bpf_apply(const struct kap_cg_fd *d, const struct kap_device_rule *rules, size_t n,
		     struct kapsel_error **err)
{
	cleanup_free struct bpf_insn *insns = NULL;
	size_t n_insns;
	int r = kap_cg_bpf_build(rules, n, &insns, &n_insns, err);
	if (r < 0)
		return r;

	/* Programs attached before (an earlier create or update): replaced after the attach so
	 * that the cgroup is never without a filter. */
	uint32_t ids[MAX_ATTACHED];
	union bpf_attr q;
	memset(&q, 0, sizeof(q));
	q.query.target_fd = (uint32_t)d->fd;
	q.query.attach_type = BPF_CGROUP_DEVICE;
	q.query.prog_ids = (uintptr_t)ids;
	q.query.prog_cnt = MAX_ATTACHED;
	if (sys_bpf(BPF_PROG_QUERY, &q) < 0)
		return kap_error(err, errno, "query device filters of %s", d->dir);

	cleanup_close int prog = load(insns, n_insns, d->dir, err);
	if (prog < 0)
		return prog;
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.target_fd = (uint32_t)d->fd;
	a.attach_bpf_fd = (uint32_t)prog;
	a.attach_type = BPF_CGROUP_DEVICE;
	a.attach_flags = BPF_F_ALLOW_MULTI;
	if (sys_bpf(BPF_PROG_ATTACH, &a) < 0)
		return kap_error(err, errno, "attach device filter to %s", d->dir);

	for (uint32_t i = 0; i < q.query.prog_cnt && i < MAX_ATTACHED; i++) {
		union bpf_attr g;
		memset(&g, 0, sizeof(g));
		g.prog_id = ids[i];
		cleanup_close int old = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &g);
		if (old < 0) {
			if (errno == ENOENT)
				continue; /* detached meanwhile */
			return kap_error(err, errno, "device filter %u of %s", ids[i], d->dir);
		}
		memset(&g, 0, sizeof(g));
		g.target_fd = (uint32_t)d->fd;
		g.attach_bpf_fd = (uint32_t)old;
		g.attach_type = BPF_CGROUP_DEVICE;
		if (sys_bpf(BPF_PROG_DETACH, &g) < 0 && errno != ENOENT)
			return kap_error(err, errno, "detach old device filter from %s", d->dir);
	}
	return 0;
}
