/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Hyper-V leaves of the guest CPUID template (kap_x86_cpuid_build with --cpu-features
 * hv-*), from a synthetic KVM_GET_SUPPORTED_CPUID with KVM's signature leaves, under chosen
 * capabilities: the leaves per flag (TLFS 6.0, 2.4), KVM's moved to 0x40000100, each missing
 * capability and each missing dependency refused by name. Runs without KVM, so the leaves are
 * checked even on hosts whose KVM has no Hyper-V support.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "vmm/x86/x86.h"

#define ALL_HV                                                                                     \
	(KAP_CPUID_CAP_HYPERV | KAP_CPUID_CAP_HV_VAPIC | KAP_CPUID_CAP_HV_TIME |                   \
	 KAP_CPUID_CAP_HV_VP_INDEX | KAP_CPUID_CAP_HV_SYNIC2)

static struct kvm_cpuid2 *supported(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 8 * sizeof(c->entries[0]));
	assert_non_null(c);
	struct kvm_cpuid_entry2 e[] = {
	    {.function = 0, .eax = 1},
	    {.function = 1, .ecx = 1},
	    {.function = 0x40000000, .eax = 0x40000001},
	    {.function = 0x40000001, .eax = 0x1ff},
	};
	memcpy(&e[2].ebx, "KVMKVMKVM\0\0\0", 12);
	c->nent = sizeof(e) / sizeof(e[0]);
	memcpy(c->entries, e, sizeof(e));
	return c;
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t fn)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn)
			return &c->entries[i];
	return NULL;
}

static struct kvm_cpuid2 *build(const char *feats, unsigned int caps)
{
	struct kvm_cpuid2 *sup = supported(), *out = NULL;
	struct kapsel_error *err = NULL;
	if (kap_x86_cpuid_build(sup, NULL, feats, 2, caps, &out, &err) < 0)
		fail_msg("%s", err->msg);
	free(sup);
	return out;
}

static void expect_err(const char *feats, unsigned int caps, const char *want)
{
	struct kvm_cpuid2 *sup = supported(), *out = NULL;
	struct kapsel_error *err = NULL;
	assert_true(kap_x86_cpuid_build(sup, NULL, feats, 1, caps, &out, &err) < 0);
	assert_null(out);
	assert_string_equal(err->msg, want);
	kapsel_error_free(err);
	free(sup);
}

static void test_no_hv_keeps_kvm_leaves(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c = build("-pcid", ALL_HV);
	assert_int_equal(find(c, 0x40000000)->eax, 0x40000001);
	assert_memory_equal(&find(c, 0x40000000)->ebx, "KVMK", 4);
	assert_null(find(c, 0x40000100));
	free(c);
}

static void test_all_flags(void **state)
{
	(void)state;
	struct kvm_cpuid2 *c =
	    build("+hv-relaxed,+hv-vapic,+hv-time,+hv-vpindex,+hv-synic,+hv-stimer", ALL_HV);
	struct kvm_cpuid_entry2 *e = find(c, 0x40000000);
	assert_int_equal(e->eax, 0x4000000a);
	char vendor[12];
	memcpy(vendor, &e->ebx, 4);
	memcpy(vendor + 4, &e->ecx, 4);
	memcpy(vendor + 8, &e->edx, 4);
	assert_memory_equal(vendor, "Microsoft Hv", 12);
	assert_int_equal(find(c, 0x40000001)->eax, 0x31237648);
	/* Privileges: refcount 1, synic 2, stimer 3, apic 4, hypercall 5, vp index 6, tsc 9. */
	assert_int_equal(find(c, 0x40000003)->eax, 0x27e);
	/* Recommendations: APIC MSRs 3, relaxed timing 5; never notify on spinlocks. */
	assert_int_equal(find(c, 0x40000004)->eax, 0x28);
	assert_int_equal(find(c, 0x40000004)->ebx, 0xffffffff);
	assert_int_equal(find(c, 0x40000005)->eax, 2);
	for (uint32_t l = 0x40000006; l <= 0x4000000a; l++)
		assert_non_null(find(c, l));
	assert_null(find(c, 0x4000000b));
	/* KVM's leaves, moved and still pointing at each other; features untouched. */
	assert_int_equal(find(c, 0x40000100)->eax, 0x40000101);
	assert_memory_equal(&find(c, 0x40000100)->ebx, "KVMKVMKVM\0\0\0", 12);
	assert_int_equal(find(c, 0x40000101)->eax, 0x1ff);
	free(c);
}

static void test_each_flag_alone(void **state)
{
	(void)state;
	static const struct {
		const char *feats;
		uint32_t priv, rec;
	} cases[] = {
	    {"+hv-relaxed", 0x20, 0x20},
	    {"+hv-vapic", 0x30, 0x08},
	    {"+hv-time", 0x222, 0},
	    {"+hv-vpindex", 0x60, 0},
	    {"+hv-vpindex,+hv-synic", 0x64, 0},
	    {"+hv-relaxed,-hv-relaxed,+hv-vapic", 0x30, 0x08},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kvm_cpuid2 *c = build(cases[i].feats, ALL_HV);
		assert_int_equal(find(c, 0x40000003)->eax, cases[i].priv);
		assert_int_equal(find(c, 0x40000004)->eax, cases[i].rec);
		free(c);
	}
}

static void test_capabilities_refused(void **state)
{
	(void)state;
	expect_err("+hv-relaxed", 0,
		   "--cpu-features: +hv-relaxed needs KVM_CAP_HYPERV, which this host's KVM lacks");
	expect_err("+hv-vapic", ALL_HV & ~KAP_CPUID_CAP_HV_VAPIC,
		   "--cpu-features: +hv-vapic needs KVM_CAP_HYPERV_VAPIC, which this host's KVM "
		   "lacks");
	expect_err("+hv-time", ALL_HV & ~KAP_CPUID_CAP_HV_TIME,
		   "--cpu-features: +hv-time needs KVM_CAP_HYPERV_TIME, which this host's KVM "
		   "lacks");
	expect_err("+hv-vpindex", ALL_HV & ~KAP_CPUID_CAP_HV_VP_INDEX,
		   "--cpu-features: +hv-vpindex needs KVM_CAP_HYPERV_VP_INDEX, which this host's "
		   "KVM lacks");
	expect_err("+hv-vpindex,+hv-synic", ALL_HV & ~KAP_CPUID_CAP_HV_SYNIC2,
		   "--cpu-features: +hv-synic needs KVM_CAP_HYPERV_SYNIC2, which this host's KVM "
		   "lacks");
}

static void test_dependencies_and_names(void **state)
{
	(void)state;
	expect_err("+hv-synic", ALL_HV, "--cpu-features: +hv-synic needs +hv-vpindex");
	expect_err("+hv-vpindex,+hv-synic,+hv-stimer", ALL_HV,
		   "--cpu-features: +hv-stimer needs +hv-time");
	expect_err("+hv-time,+hv-stimer", ALL_HV, "--cpu-features: +hv-stimer needs +hv-synic");
	expect_err("+hv-crash", ALL_HV,
		   "--cpu-features: unknown Hyper-V enlightenment \"hv-crash\" (known: hv-relaxed, "
		   "hv-vapic, hv-time, hv-vpindex, hv-synic, hv-stimer)");
	unsigned int hv = 0;
	struct kapsel_error *err = NULL;
	assert_int_equal(kap_x86_hv_flags("-avx,+hv-time,hv-vpindex", &hv, &err), 0);
	assert_int_equal(hv, KAP_HV_TIME | KAP_HV_VPINDEX);
	assert_int_equal(kap_x86_hv_flags(NULL, &hv, &err), 0);
	assert_int_equal(hv, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_hv_keeps_kvm_leaves),
	    cmocka_unit_test(test_all_flags),
	    cmocka_unit_test(test_each_flag_alone),
	    cmocka_unit_test(test_capabilities_refused),
	    cmocka_unit_test(test_dependencies_and_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
