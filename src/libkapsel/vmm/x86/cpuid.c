/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPUID for the guest: KVM_GET_SUPPORTED_CPUID (what this KVM and CPU can virtualise), then
 * the hypervisor bit and KVM's paravirt signature (leaf 0x40000000, so Linux finds kvmclock),
 * the bits KVM reports only through capabilities (TSC-deadline: KVM_CAP_TSC_DEADLINE_TIMER;
 * x2APIC: emulated by the in-kernel LAPIC, api.rst KVM_GET_SUPPORTED_CPUID; QEMU sets both),
 * the topology (every vCPU a core of one socket; APIC id = vCPU id), and the user's
 * --cpu-features masks. Masking matters where KVM cannot run an instruction the CPU reports:
 * on hosts whose KVM emulates guest code, xsave and friends end in an internal error.
 * Bit positions: Intel SDM vol. 2A, CPUID; KVM leaves: Documentation/virt/kvm/x86/cpuid.rst.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "vmm/x86/x86.h"

enum reg { EAX, EBX, ECX, EDX };

struct feature {
	const char *name;
	uint32_t leaf, index;
	enum reg reg;
	uint8_t bit;
	const char *implies; /* features that cannot stay without this one, comma separated */
};

static const struct feature features[] = {
    {"fpu", 1, 0, EDX, 0, NULL},
    {"de", 1, 0, EDX, 2, NULL},
    {"pse", 1, 0, EDX, 3, NULL},
    {"tsc", 1, 0, EDX, 4, NULL},
    {"msr", 1, 0, EDX, 5, NULL},
    {"pae", 1, 0, EDX, 6, NULL},
    {"mce", 1, 0, EDX, 7, NULL},
    {"cx8", 1, 0, EDX, 8, NULL},
    {"apic", 1, 0, EDX, 9, NULL},
    {"sep", 1, 0, EDX, 11, NULL},
    {"mtrr", 1, 0, EDX, 12, NULL},
    {"pge", 1, 0, EDX, 13, NULL},
    {"mca", 1, 0, EDX, 14, NULL},
    {"cmov", 1, 0, EDX, 15, NULL},
    {"pat", 1, 0, EDX, 16, NULL},
    {"pse36", 1, 0, EDX, 17, NULL},
    {"clflush", 1, 0, EDX, 19, NULL},
    {"mmx", 1, 0, EDX, 23, NULL},
    {"fxsr", 1, 0, EDX, 24, NULL},
    {"sse", 1, 0, EDX, 25, "sse2"},
    {"sse2", 1, 0, EDX, 26, "sse3"},
    {"sse3", 1, 0, ECX, 0, "ssse3"},
    {"pclmulqdq", 1, 0, ECX, 1, NULL},
    {"ssse3", 1, 0, ECX, 9, "sse4_1"},
    {"fma", 1, 0, ECX, 12, NULL},
    {"cx16", 1, 0, ECX, 13, NULL},
    /*
     * PCID and INVPCID are separate bits (SDM vol. 2A, CPUID; INVPCID): INVPCID works with
     * CR4.PCIDE clear (types 2 and 3, and PCID 0), so either may be offered alone.
     */
    {"pcid", 1, 0, ECX, 17, NULL},
    {"sse4_1", 1, 0, ECX, 19, "sse4_2"},
    {"sse4_2", 1, 0, ECX, 20, "avx"},
    {"x2apic", 1, 0, ECX, 21, NULL},
    {"movbe", 1, 0, ECX, 22, NULL},
    {"popcnt", 1, 0, ECX, 23, NULL},
    {"tsc-deadline", 1, 0, ECX, 24, NULL},
    {"aes", 1, 0, ECX, 25, NULL},
    {"xsave", 1, 0, ECX, 26, "osxsave,avx,xsaveopt,xsavec,xsaves,xgetbv1"},
    {"osxsave", 1, 0, ECX, 27, NULL},
    {"avx", 1, 0, ECX, 28, "avx2,fma,f16c,avx512f"},
    {"f16c", 1, 0, ECX, 29, NULL},
    {"rdrand", 1, 0, ECX, 30, NULL},
    {"hypervisor", 1, 0, ECX, 31, NULL},
    {"fsgsbase", 7, 0, EBX, 0, NULL},
    {"bmi1", 7, 0, EBX, 3, NULL},
    {"hle", 7, 0, EBX, 4, NULL},
    {"avx2", 7, 0, EBX, 5, NULL},
    {"smep", 7, 0, EBX, 7, NULL},
    {"bmi2", 7, 0, EBX, 8, NULL},
    {"erms", 7, 0, EBX, 9, NULL},
    {"invpcid", 7, 0, EBX, 10, NULL},
    {"rtm", 7, 0, EBX, 11, NULL},
    {"avx512f", 7, 0, EBX, 16, "avx512dq,avx512cd,avx512bw,avx512vl"},
    {"avx512dq", 7, 0, EBX, 17, NULL},
    {"rdseed", 7, 0, EBX, 18, NULL},
    {"adx", 7, 0, EBX, 19, NULL},
    {"smap", 7, 0, EBX, 20, NULL},
    {"clflushopt", 7, 0, EBX, 23, NULL},
    {"clwb", 7, 0, EBX, 24, NULL},
    {"avx512cd", 7, 0, EBX, 28, NULL},
    {"sha", 7, 0, EBX, 29, NULL},
    {"avx512bw", 7, 0, EBX, 30, NULL},
    {"avx512vl", 7, 0, EBX, 31, NULL},
    {"umip", 7, 0, ECX, 2, NULL},
    {"pku", 7, 0, ECX, 3, NULL},
    {"la57", 7, 0, ECX, 16, NULL},
    {"rdpid", 7, 0, ECX, 22, NULL},
    {"xsaveopt", 0xd, 1, EAX, 0, NULL},
    {"xsavec", 0xd, 1, EAX, 1, NULL},
    {"xgetbv1", 0xd, 1, EAX, 2, NULL},
    {"xsaves", 0xd, 1, EAX, 3, NULL},
    {"lahf_lm", 0x80000001, 0, ECX, 0, NULL},
    {"cr8legacy", 0x80000001, 0, ECX, 4, NULL},
    {"abm", 0x80000001, 0, ECX, 5, NULL},
    {"sse4a", 0x80000001, 0, ECX, 6, NULL},
    {"misalignsse", 0x80000001, 0, ECX, 7, NULL},
    {"prefetchw", 0x80000001, 0, ECX, 8, NULL},
    {"syscall", 0x80000001, 0, EDX, 11, NULL},
    {"nx", 0x80000001, 0, EDX, 20, NULL},
    {"mmxext", 0x80000001, 0, EDX, 22, NULL},
    {"fxsr-opt", 0x80000001, 0, EDX, 25, NULL},
    {"pdpe1gb", 0x80000001, 0, EDX, 26, NULL},
    {"rdtscp", 0x80000001, 0, EDX, 27, NULL},
    {"lm", 0x80000001, 0, EDX, 29, NULL},
    {"kvmclock", 0x40000001, 0, EAX, 0, NULL},
    {"kvmclock2", 0x40000001, 0, EAX, 3, NULL},
    {"async-pf", 0x40000001, 0, EAX, 4, NULL},
    {"steal-time", 0x40000001, 0, EAX, 5, NULL},
    {"pv-eoi", 0x40000001, 0, EAX, 6, NULL},
    {"pv-unhalt", 0x40000001, 0, EAX, 7, NULL},
};

static const struct feature *find_feature(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (strlen(features[i].name) == len && !strncmp(features[i].name, name, len))
			return &features[i];
	return NULL;
}

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
			return e;
	}
	return NULL;
}

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, enum reg r)
{
	switch (r) {
	case EAX:
		return &e->eax;
	case EBX:
		return &e->ebx;
	case ECX:
		return &e->ecx;
	default:
		return &e->edx;
	}
}

static bool has_feature(struct kvm_cpuid2 *c, const struct feature *f)
{
	struct kvm_cpuid_entry2 *e = find_entry(c, f->leaf, f->index);
	return e && (*reg_of(e, f->reg) & (1u << f->bit));
}

static void set_feature(struct kvm_cpuid2 *c, const struct feature *f)
{
	struct kvm_cpuid_entry2 *e = find_entry(c, f->leaf, f->index);
	if (e)
		*reg_of(e, f->reg) |= 1u << f->bit;
}

static void clear_feature(struct kvm_cpuid2 *c, const struct feature *f, int depth)
{
	struct kvm_cpuid_entry2 *e = find_entry(c, f->leaf, f->index);
	if (e)
		*reg_of(e, f->reg) &= ~(1u << f->bit);
	if (!f->implies || depth > 8)
		return;
	for (const char *p = f->implies; *p;) {
		size_t n = strcspn(p, ",");
		const struct feature *g = find_feature(p, n);
		if (g)
			clear_feature(c, g, depth + 1);
		p += n + (p[n] == ',');
	}
}

/* Whether g's "implies" names f: f cannot be offered without g. */
static bool requires(const struct feature *f, const struct feature *g)
{
	if (!g->implies)
		return false;
	for (const char *p = g->implies; *p;) {
		size_t n = strcspn(p, ",");
		if (strlen(f->name) == n && !strncmp(f->name, p, n))
			return true;
		p += n + (p[n] == ',');
	}
	return false;
}

/* Without xsave the state-component leaf must not advertise anything. */
static void clear_leaf_d(struct kvm_cpuid2 *c)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0xd)
			c->entries[i].eax = c->entries[i].ebx = c->entries[i].ecx =
			    c->entries[i].edx = 0;
}

/*
 * Named CPU models: fixed feature sets a guest can be pinned to, so that it sees the same
 * CPU on every host that has at least these features (a migration baseline, issue 12). A
 * model lists only table features; every bit of the feature registers (leaf 1 ECX/EDX, 7.0
 * EBX/ECX/EDX, 7.1 EAX, 0xd.1 EAX, 0x80000001 ECX/EDX) outside its list is cleared, whatever
 * this host has. The machine's own bits stay: hypervisor, x2apic and tsc-deadline (the
 * in-kernel LAPIC's, not the CPU's), and KVM's paravirt leaf. Vendor, family/model/stepping
 * and the cache leaves stay the host's. The x86-64-vN levels are the psABI's (x86-64 psABI
 * 1.0, 3.1.1 "Micro-architecture levels"); Skylake-Client and EPYC follow QEMU's
 * target/i386/cpu.c models (Skylake-Client-v4: no TSX, no MPX; EPYC-v1) as far as this
 * table names their bits.
 */
#define V1                                                                                         \
	"fpu,de,pse,tsc,msr,pae,mce,cx8,apic,sep,mtrr,pge,mca,cmov,pat,pse36,clflush,mmx,fxsr,"    \
	"sse,sse2,syscall,nx,lm"
#define V2 V1 ",cx16,lahf_lm,popcnt,sse3,sse4_1,sse4_2,ssse3"
#define V3 V2 ",avx,avx2,bmi1,bmi2,f16c,fma,abm,movbe,xsave"
#define V4 V3 ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl"

static const struct cpu_model {
	const char *name, *features; /* NULL features: the host's set */
} models[] = {
    {"host", NULL},
    {"max", NULL},
    {"x86-64-v1", V1},
    {"x86-64-v2", V2},
    {"x86-64-v3", V3},
    {"x86-64-v4", V4},
    {"Skylake-Client", V3 ",pclmulqdq,pcid,aes,rdrand,rdtscp,prefetchw,fsgsbase,smep,erms,"
			  "invpcid,rdseed,adx,smap,clflushopt,xsaveopt,xsavec,xgetbv1,xsaves"},
    {"EPYC", V3 ",pclmulqdq,aes,rdrand,mmxext,fxsr-opt,pdpe1gb,rdtscp,cr8legacy,sse4a,"
		"misalignsse,prefetchw,fsgsbase,smep,rdseed,adx,smap,clflushopt,sha,xsaveopt,"
		"xsavec,xgetbv1"},
};

static const struct cpu_model *find_model(const char *name, struct kapsel_error **err)
{
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		if (!strcmp(models[i].name, name))
			return &models[i];
	char known[256] = "";
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		if (i)
			strncat(known, ", ", sizeof(known) - strlen(known) - 1);
		strncat(known, models[i].name, sizeof(known) - strlen(known) - 1);
	}
	kap_error_plain(err, EINVAL, "--cpu-model %s: unknown model (known: %s)", name, known);
	return NULL;
}

static bool model_has(const struct cpu_model *m, const struct feature *f)
{
	for (const char *p = m->features; *p;) {
		size_t n = strcspn(p, ",");
		if (strlen(f->name) == n && !strncmp(f->name, p, n))
			return true;
		p += n + (p[n] == ',');
	}
	return false;
}

static void mask_reg(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t index, enum reg r, uint32_t keep)
{
	struct kvm_cpuid_entry2 *e = find_entry(c, leaf, index);
	if (e)
		*reg_of(e, r) &= keep;
}

static int apply_model(struct kvm_cpuid2 *c, const struct cpu_model *m, struct kapsel_error **err)
{
	if (!m->features)
		return 0;
	static const struct {
		uint32_t leaf, index;
		enum reg reg;
		uint32_t platform; /* the machine's bits, kept */
	} regs[] = {
	    {1, 0, ECX, (1u << 31) | (1u << 24) | (1u << 21)},
	    {1, 0, EDX, 0},
	    {7, 0, EBX, 0},
	    {7, 0, ECX, 0},
	    {7, 0, EDX, 0},
	    {7, 1, EAX, 0},
	    {0xd, 1, EAX, 0},
	    {0x80000001, 0, ECX, 0},
	    {0x80000001, 0, EDX, 0},
	};
	uint32_t keep[sizeof(regs) / sizeof(regs[0])];
	for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
		keep[i] = regs[i].platform;
	bool xsave = false, avx = false, avx512 = false;
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		const struct feature *f = &features[i];
		if (!model_has(m, f))
			continue;
		if (!has_feature(c, f))
			return kap_error_plain(
			    err, ENOTSUP, "--cpu-model %s: %s is not supported by this host's KVM",
			    m->name, f->name);
		for (size_t j = 0; j < sizeof(regs) / sizeof(regs[0]); j++)
			if (regs[j].leaf == f->leaf && regs[j].index == f->index &&
			    regs[j].reg == f->reg)
				keep[j] |= 1u << f->bit;
		xsave |= !strcmp(f->name, "xsave");
		avx |= !strcmp(f->name, "avx");
		avx512 |= !strcmp(f->name, "avx512f");
	}
	/* OSXSAVE mirrors the guest's CR4.OSXSAVE (KVM updates it): it comes with xsave. */
	if (xsave)
		keep[0] |= 1u << 27;
	for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
		mask_reg(c, regs[i].leaf, regs[i].index, regs[i].reg, keep[i]);
	if (!xsave) {
		clear_leaf_d(c);
		return 0;
	}
	/*
	 * The XSAVE state components (SDM vol. 1, 13.2): x87 and SSE always, AVX (2) with avx,
	 * the AVX-512 ones (5-7) with avx512f; no others (MPX, PKRU, AMX, supervisor states).
	 * KVM allows the guest only the XCR0 bits leaf 0xd.0 reports.
	 */
	uint32_t comps = 3u | (avx ? 1u << 2 : 0) | (avx512 ? 7u << 5 : 0);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != 0xd)
			continue;
		if (e->index == 0) {
			e->eax &= comps;
			e->edx = 0;
		} else if (e->index == 1) {
			e->ecx = e->edx = 0;
		} else if (e->index >= 32 || !(comps & (1u << e->index))) {
			e->eax = e->ebx = e->ecx = e->edx = 0;
		}
	}
	return 0;
}

/*
 * Hyper-V enlightenments, by QEMU's names (docs/system/i386/hyperv.rst). KVM implements the
 * synthetic MSRs (guest OS ID, hypercall page, VP index, reference counter and TSC page,
 * SynIC, synthetic timers) once the guest's CPUID carries the Hyper-V signature (kvm_hv_
 * set_cpuid); kapsel writes the leaves and enables SynIC per vCPU. Each flag needs the
 * capability named here; KVM has no capability of its own for the synthetic timers, which
 * come with SynIC and read the reference counter (KVM_CAP_HYPERV_TIME, as QEMU checks).
 */
static const struct hv_flag {
	const char *name;
	unsigned int bit, cap, needs;
	const char *capname;
} hv_flags[] = {
    {"hv-relaxed", KAP_HV_RELAXED, KAP_CPUID_CAP_HYPERV, 0, "KVM_CAP_HYPERV"},
    {"hv-vapic", KAP_HV_VAPIC, KAP_CPUID_CAP_HV_VAPIC, 0, "KVM_CAP_HYPERV_VAPIC"},
    {"hv-time", KAP_HV_TIME, KAP_CPUID_CAP_HV_TIME, 0, "KVM_CAP_HYPERV_TIME"},
    {"hv-vpindex", KAP_HV_VPINDEX, KAP_CPUID_CAP_HV_VP_INDEX, 0, "KVM_CAP_HYPERV_VP_INDEX"},
    /* SynIC messages and events name their target by VP index (TLFS 6.0, 11.8). */
    {"hv-synic", KAP_HV_SYNIC, KAP_CPUID_CAP_HV_SYNIC2, KAP_HV_VPINDEX, "KVM_CAP_HYPERV_SYNIC2"},
    /* Timers deliver through SynIC and count reference time (TLFS 6.0, 12.1). */
    {"hv-stimer", KAP_HV_STIMER, KAP_CPUID_CAP_HV_TIME, KAP_HV_SYNIC | KAP_HV_TIME,
     "KVM_CAP_HYPERV_TIME"},
};
#define N_HV (sizeof(hv_flags) / sizeof(hv_flags[0]))

static bool is_hv(const char *name, size_t len)
{
	return len >= 3 && !strncmp(name, "hv-", 3);
}

int kap_x86_hv_flags(const char *s, unsigned int *out, struct kapsel_error **err)
{
	unsigned int on = 0;
	*out = 0;
	for (const char *p = s ? s : ""; *p;) {
		size_t n = strcspn(p, ",");
		const char *name = (p[0] == '-' || p[0] == '+') ? p + 1 : p;
		size_t nlen = n - (size_t)(name - p);
		if (n && is_hv(name, nlen)) {
			size_t i = 0;
			while (i < N_HV && !(strlen(hv_flags[i].name) == nlen &&
					     !strncmp(hv_flags[i].name, name, nlen)))
				i++;
			if (i == N_HV)
				return kap_error_plain(err, EINVAL,
						       "--cpu-features: unknown Hyper-V "
						       "enlightenment \"%.*s\" (known: hv-relaxed, "
						       "hv-vapic, hv-time, hv-vpindex, hv-synic, "
						       "hv-stimer)",
						       (int)nlen, name);
			if (p[0] == '-')
				on &= ~hv_flags[i].bit;
			else
				on |= hv_flags[i].bit;
		}
		p += n + (p[n] == ',');
	}
	for (size_t i = 0; i < N_HV; i++)
		for (size_t j = 0; (on & hv_flags[i].bit) && j < N_HV; j++)
			if ((hv_flags[i].needs & hv_flags[j].bit) && !(on & hv_flags[j].bit))
				return kap_error_plain(err, EINVAL, "--cpu-features: +%s needs +%s",
						       hv_flags[i].name, hv_flags[j].name);
	*out = on;
	return 0;
}

/* Appends a leaf; the caller made room. */
static void add_leaf(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t a, uint32_t b, uint32_t cx,
		     uint32_t d)
{
	c->entries[c->nent++] =
	    (struct kvm_cpuid_entry2){.function = leaf, .eax = a, .ebx = b, .ecx = cx, .edx = d};
}

#define HV_BASE	   0x40000000u
#define HV_LAST	   0x4000000au
#define HV_NLEAVES (HV_LAST - HV_BASE + 1)

/*
 * The Hyper-V leaves (TLFS 6.0, 2.4 "Hypervisor CPUID Leaves") at 0x40000000, KVM's moved to
 * 0x40000100 as QEMU does with Hyper-V on: Linux and KVM look for KVM's signature every 0x100
 * leaves (hypervisor_cpuid_base; kvm_get_hypervisor_cpuid), Windows only at 0x40000000.
 */
static int add_hv_leaves(struct kvm_cpuid2 *c, unsigned int hv, unsigned int caps,
			 unsigned int ncpus, struct kapsel_error **err)
{
	for (size_t i = 0; i < N_HV; i++) {
		if (!(hv & hv_flags[i].bit))
			continue;
		if (!(caps & KAP_CPUID_CAP_HYPERV))
			return kap_error_plain(err, ENOTSUP,
					       "--cpu-features: +%s needs KVM_CAP_HYPERV, which "
					       "this host's KVM lacks",
					       hv_flags[i].name);
		if (!(caps & hv_flags[i].cap))
			return kap_error_plain(err, ENOTSUP,
					       "--cpu-features: +%s needs %s, which this host's "
					       "KVM lacks",
					       hv_flags[i].name, hv_flags[i].capname);
	}
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function < HV_BASE || e->function > 0x400000ffu)
			continue;
		if (e->function == HV_BASE)
			e->eax += 0x100;
		e->function += 0x100;
	}
	uint32_t vendor[3];
	memcpy(vendor, "Microsoft Hv", 12);
	add_leaf(c, HV_BASE, HV_LAST, vendor[0], vendor[1], vendor[2]);
	add_leaf(c, HV_BASE + 1, 0x31237648u /* "Hv#1" */, 0, 0, 0);
	/* Version: build 0x3839 of 10.0, as QEMU reports. */
	add_leaf(c, HV_BASE + 2, 0x3839, 0x000a0000, 0, 0);
	/*
	 * Partition privileges, EAX (TLFS 2.4.4): 1 AccessPartitionReferenceCounter, 2
	 * AccessSynicRegs, 3 AccessSyntheticTimerRegs, 4 AccessIntrCtrlRegs (the APIC MSRs), 5
	 * AccessHypercallMsrs (guest OS ID and hypercall page: always), 6 AccessVpIndex, 9
	 * AccessPartitionReferenceTsc.
	 */
	uint32_t priv = 1u << 5;
	if (hv & KAP_HV_TIME)
		priv |= (1u << 1) | (1u << 9);
	if (hv & KAP_HV_SYNIC)
		priv |= 1u << 2;
	if (hv & KAP_HV_STIMER)
		priv |= 1u << 3;
	if (hv & KAP_HV_VAPIC)
		priv |= 1u << 4;
	if (hv & KAP_HV_VPINDEX)
		priv |= 1u << 6;
	add_leaf(c, HV_BASE + 3, priv, 0, 0, 0);
	/*
	 * Recommendations, EAX (TLFS 2.4.5): 3 use the APIC MSRs, 5 relaxed timing (no watchdog
	 * timeouts); EBX the spinlock retry count, all ones: never notify.
	 */
	uint32_t rec = 0;
	if (hv & KAP_HV_VAPIC)
		rec |= 1u << 3;
	if (hv & KAP_HV_RELAXED)
		rec |= 1u << 5;
	add_leaf(c, HV_BASE + 4, rec, 0xffffffffu, 0, 0);
	/* Limits (TLFS 2.4.6): virtual processors. */
	add_leaf(c, HV_BASE + 5, ncpus, 0, 0, 0);
	for (uint32_t l = HV_BASE + 6; l <= HV_LAST; l++)
		add_leaf(c, l, 0, 0, 0, 0);
	return 0;
}

/*
 * Walks "-a,+b,c" over c: "-" clears a feature and those that need it, "+" (or no sign)
 * offers it when avail (the CPUID before the model) has it. Only validates when c is NULL.
 */
static int walk_features(const char *s, struct kvm_cpuid2 *c, struct kvm_cpuid2 *avail,
			 struct kapsel_error **err)
{
	if (!s)
		return 0;
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ",");
		if (n == 0) {
			p++;
			continue;
		}
		bool off = p[0] == '-';
		const char *name = (p[0] == '-' || p[0] == '+') ? p + 1 : p;
		size_t nlen = n - (size_t)(name - p);
		if (is_hv(name, nlen)) { /* kap_x86_hv_flags' */
			p += n + (p[n] == ',');
			continue;
		}
		const struct feature *f = find_feature(name, nlen);
		if (!f)
			return kap_error_plain(err, EINVAL,
					       "--cpu-features: unknown feature \"%.*s\"",
					       (int)nlen, name);
		if (c && off) {
			clear_feature(c, f, 0);
			if (f->leaf == 1 && f->reg == ECX && f->bit == 26)
				clear_leaf_d(c);
		} else if (c) {
			if (!has_feature(avail, f))
				return kap_error_plain(err, ENOTSUP,
						       "--cpu-features: %s is not supported by "
						       "this host's KVM",
						       f->name);
			set_feature(c, f);
		}
		p += n + (p[n] == ',');
	}
	if (!c)
		return 0;
	/*
	 * Refuse what no CPU has: a requested feature without one it builds on (avx2 without
	 * avx, avx512vl without avx512f, xsavec without xsave), as the table's dependencies say.
	 */
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ",");
		if (n == 0 || p[0] == '-') {
			p += n + (p[n] == ',');
			continue;
		}
		const char *name = p[0] == '+' ? p + 1 : p;
		const struct feature *f = is_hv(name, n - (size_t)(name - p))
					      ? NULL
					      : find_feature(name, n - (size_t)(name - p));
		for (size_t i = 0; f && i < sizeof(features) / sizeof(features[0]); i++)
			if (requires(f, &features[i]) && !has_feature(c, &features[i]))
				return kap_error_plain(err, EINVAL,
						       "--cpu-features: +%s needs %s, which the "
						       "CPU model or the list leaves out",
						       f->name, features[i].name);
		p += n + (p[n] == ',');
	}
	return 0;
}

int kap_x86_cpuid_check_features(const char *model, const char *s, struct kapsel_error **err)
{
	if (model && !find_model(model, err))
		return -EINVAL;
	unsigned int hv;
	int r = kap_x86_hv_flags(s, &hv, err);
	return r < 0 ? r : walk_features(s, NULL, NULL, err);
}

int kap_x86_cpuid_build(const struct kvm_cpuid2 *supported, const char *model, const char *feats,
			unsigned int ncpus, unsigned int caps, struct kvm_cpuid2 **out,
			struct kapsel_error **err)
{
	const struct cpu_model *m = model ? find_model(model, err) : &models[0];
	if (!m)
		return -EINVAL;
	unsigned int hv;
	int r = kap_x86_hv_flags(feats, &hv, err);
	if (r < 0)
		return r;
	/* Room for the KVM signature leaves should KVM not list them, and Hyper-V's. */
	size_t n = supported->nent + 2 + HV_NLEAVES,
	       sz = sizeof(struct kvm_cpuid2) + n * sizeof(struct kvm_cpuid_entry2);
	cleanup_free struct kvm_cpuid2 *c = calloc(1, sz);
	cleanup_free struct kvm_cpuid2 *avail = NULL;
	if (!c)
		return kap_error(err, ENOMEM, "cpuid");
	memcpy(c, supported, sizeof(*c) + supported->nent * sizeof(c->entries[0]));

	struct kvm_cpuid_entry2 *e = find_entry(c, 1, 0);
	if (e) {
		e->ecx |= 1u << 31; /* hypervisor present */
		/*
		 * KVM_GET_SUPPORTED_CPUID leaves these out because they depend on how the VM is
		 * built (api.rst, KVM_GET_SUPPORTED_CPUID): TSC-deadline needs the in-kernel LAPIC
		 * timer, x2APIC the in-kernel irqchip. Offered before the user's masks, so
		 * "-tsc-deadline" removes it and "+tsc-deadline" finds it.
		 */
		if (caps & KAP_CPUID_CAP_TSC_DEADLINE)
			e->ecx |= 1u << 24;
		if (caps & KAP_CPUID_CAP_X2APIC)
			e->ecx |= 1u << 21;
	}
	if (!find_entry(c, 0x40000000, 0)) {
		struct kvm_cpuid_entry2 *s = &c->entries[c->nent++];
		*s = (struct kvm_cpuid_entry2){.function = 0x40000000, .eax = 0x40000001};
		memcpy(&s->ebx, "KVMKVMKVM\0\0\0", 12);
		c->entries[c->nent++] = (struct kvm_cpuid_entry2){.function = 0x40000001};
	}
	/* The model first, then --cpu-features on top: "+x" may add back what the host has. */
	if (!(avail = malloc(sz)))
		return kap_error(err, ENOMEM, "cpuid");
	memcpy(avail, c, sz);
	r = apply_model(c, m, err);
	if (r < 0)
		return r;
	r = walk_features(feats, c, avail, err);
	if (r < 0)
		return r;
	if (hv && (r = add_hv_leaves(c, hv, caps, ncpus, err)) < 0)
		return r;
	*out = steal_ptr(c);
	return 0;
}

static unsigned int bits_for(unsigned int n)
{
	unsigned int b = 0;
	while ((1u << b) < n)
		b++;
	return b;
}

int kap_x86_cpuid_set(int fd, const struct kvm_cpuid2 *tmpl, unsigned int id, unsigned int ncpus,
		      struct kapsel_error **err)
{
	size_t sz = sizeof(*tmpl) + tmpl->nent * sizeof(tmpl->entries[0]);
	cleanup_free struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return kap_error(err, ENOMEM, "cpuid");
	memcpy(c, tmpl, sz);
	unsigned int shift = bits_for(ncpus);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* Initial APIC id, logical processors per package, HTT when > 1. */
			e->ebx = (e->ebx & 0x0000ffffu) | (id << 24) | ((ncpus & 0xff) << 16);
			if (ncpus > 1)
				e->edx |= 1u << 28;
			else
				e->edx &= ~(1u << 28);
			break;
		case 4:
			/* Cores per package - 1 in EAX[31:26]; caches shared by no other core. */
			if (e->eax & 0x1f)
				e->eax = (e->eax & 0x3fffu) | ((ncpus - 1) << 26);
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC topology: level 0 SMT (1 thread), level 1 core (ncpus). */
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0;
			} else if (e->index == 1) {
				e->eax = shift;
				e->ebx = ncpus;
				e->ecx = (2u << 8) | 1;
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			e->edx = id;
			break;
		case 0x80000008:
			/* AMD: cores per package - 1. */
			e->ecx = (e->ecx & ~0xffu) | (ncpus - 1);
			break;
		}
	}
	if (ioctl(fd, KVM_SET_CPUID2, c) < 0)
		return kap_error(err, errno, "KVM_SET_CPUID2 (vCPU %u)", id);
	return 0;
}
