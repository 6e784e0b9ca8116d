/* SPDX-License-Identifier: Apache-2.0 */
/* x86 vCPU state: registers at entry (regs.c) and CPUID (cpuid.c). */
#pragma once
#include <linux/kvm.h>
#include <stdint.h>

#include <kapsel/error.h>

#include "vmm/x86/boot.h"

/*
 * A vCPU as the processor comes out of a sleep state into the OS's waking vector (ACPI 6.4
 * §16.3.2, FACS firmware_waking_vector): real mode at CS:IP = (vector >> 4):(vector & 0xF),
 * paging, protection and long mode off, the other registers at their reset values. APs wait
 * for INIT/SIPI (bsp false).
 */
int kap_x86_vcpu_wake(int vcpu_fd, uint32_t vector, bool bsp, struct kapsel_error **err);
/*
 * The BSP's entry state for the boot protocol: fills regs and the segment, descriptor-table and
 * control-register fields of sregs (the rest of sregs is left as it was). Shared by the KVM
 * path (kap_x86_vcpu_init) and the soft CPU (vmm/soft/), so both start the guest identically.
 */
void kap_x86_boot_state(const struct kap_boot_entry *entry, struct kvm_regs *regs,
			struct kvm_sregs *sregs);
/* Segment registers, control registers, GPRs, FPU, boot MSRs, LAPIC LINT0/LINT1. */
int kap_x86_vcpu_init(int vcpu_fd, const struct kap_boot_entry *entry, bool bsp,
		      struct kapsel_error **err);

/*
 * The CPUID template for this VM: KVM's supported set with the hypervisor bit, KVM's paravirt
 * leaves, the --cpu-model (NULL: host) and the user's --cpu-features applied. Caller frees.
 */
/* Bits KVM offers only through capabilities (kap_x86_cpuid_build's caps). */
#define KAP_CPUID_CAP_TSC_DEADLINE (1u << 0) /* KVM_CAP_TSC_DEADLINE_TIMER */
#define KAP_CPUID_CAP_X2APIC	   (1u << 1) /* in-kernel irqchip */
#define KAP_CPUID_CAP_HYPERV	   (1u << 2) /* KVM_CAP_HYPERV */
#define KAP_CPUID_CAP_HV_VAPIC	   (1u << 3) /* KVM_CAP_HYPERV_VAPIC */
#define KAP_CPUID_CAP_HV_TIME	   (1u << 4) /* KVM_CAP_HYPERV_TIME */
#define KAP_CPUID_CAP_HV_VP_INDEX  (1u << 5) /* KVM_CAP_HYPERV_VP_INDEX */
#define KAP_CPUID_CAP_HV_SYNIC2	   (1u << 6) /* KVM_CAP_HYPERV_SYNIC2 */
int kap_x86_cpuid_build(const struct kvm_cpuid2 *supported, const char *model, const char *features,
			unsigned int ncpus, unsigned int caps, struct kvm_cpuid2 **out,
			struct kapsel_error **err);
/* Sets vCPU id's APIC ids in a copy of the template and installs it (KVM_SET_CPUID2). */
int kap_x86_cpuid_set(int vcpu_fd, const struct kvm_cpuid2 *tmpl, unsigned int id,
		      unsigned int ncpus, struct kapsel_error **err);
/* Checks a --cpu-model name (NULL: none) and parses --cpu-features without applying them. */
int kap_x86_cpuid_check_features(const char *model, const char *features,
				 struct kapsel_error **err);

/* Hyper-V enlightenments ("hv-*" in --cpu-features, QEMU's names). */
#define KAP_HV_RELAXED (1u << 0)
#define KAP_HV_VAPIC   (1u << 1)
#define KAP_HV_TIME    (1u << 2)
#define KAP_HV_VPINDEX (1u << 3)
#define KAP_HV_SYNIC   (1u << 4)
#define KAP_HV_STIMER  (1u << 5)
/* The KAP_HV_* set --cpu-features enables, its dependencies checked; -EINVAL names the flag. */
int kap_x86_hv_flags(const char *features, unsigned int *out, struct kapsel_error **err);
