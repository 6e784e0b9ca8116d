/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 32-bit entry of the multiboot and PVH test kernels, the multiboot header, the PVH note,
 * interrupt stubs for the timer test and the real-mode AP trampoline for the SMP test.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-aligned modules, memory information */

#ifdef MULTIBOOT
	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
#endif

#ifdef PVH
	/* XEN_ELFNOTE_PHYS32_ENTRY: name "Xen", type 18, the 32-bit entry address. */
	.section .note.Xen, "a"
	.align 4
	.long 4
	.long 4
	.long 18
	.asciz "Xen"
	.align 4
	.long _start
#endif

	.text
	.code32
	.globl _start
_start:
	mov $stack_top, %esp
	push %ebx
	push %eax
	call guest_main
1:	cli
	hlt
	jmp 1b

#ifdef MULTIBOOT
	/*
	 * Timer test. The handlers never IRET: KVM's instruction emulator (which runs every
	 * guest instruction on the test machine) implements IRET only in real mode. Instead
	 * wait_ticks parks in "sti; hlt" and each handler counts, acknowledges, drops its
	 * interrupt frame and jumps back to the check. wait_ticks(counter, target) returns
	 * with interrupts off once *counter >= target.
	 */
	.globl isr_pit, isr_lapic, isr_spurious, wait_ticks
wait_ticks:
	push %ebx
	push %esi
	mov 12(%esp), %ebx
	mov 16(%esp), %esi
	mov %esp, wait_esp
wait_check:
	mov wait_esp, %esp
	cmp %esi, (%ebx)
	jae 2f
	sti
	hlt
	jmp wait_check
2:	cli
	pop %esi
	pop %ebx
	ret
isr_pit:
	lock incl pit_ticks
	mov $0x20, %al
	out %al, $0x20
	jmp wait_check
isr_lapic:
	lock incl lapic_ticks
	movl $0, 0xfee000b0
	jmp wait_check
isr_spurious:
	jmp wait_check

	/* Divide by zero with an empty IDT: #DE -> #DF -> triple fault. */
	.globl triple_fault
triple_fault:
	lidt null_idt
	xor %ecx, %ecx
	div %ecx
	jmp triple_fault

	/*
	 * The ud test: the #UD handler counts, drops its frame (EIP, CS, EFLAGS; no error code)
	 * and resumes at ud_resume, without IRET (see the timer test above).
	 */
	.globl isr_ud, ud_count, ud_resume
isr_ud:
	incl ud_count
	add $12, %esp
	jmp *ud_resume

	/*
	 * The fpu test's handlers for #NM (7), #MF (16), #XM (19) and #GP (13, with an error
	 * code): each records its vector in trap_vec, drops its frame and resumes at ud_resume.
	 */
	.globl isr_nm, isr_mf, isr_xm, isr_gp, trap_vec
isr_nm:
	movl $7, trap_vec
	add $12, %esp
	jmp *ud_resume
isr_mf:
	movl $16, trap_vec
	add $12, %esp
	jmp *ud_resume
isr_xm:
	movl $19, trap_vec
	add $12, %esp
	jmp *ud_resume
isr_gp:
	movl $13, trap_vec
	add $16, %esp
	jmp *ud_resume

	/*
	 * The paging test's #PF handler: records the error code and CR2, drops the frame (error
	 * code, EIP, CS, EFLAGS) and resumes at pf_resume.
	 */
	.globl isr_pf, pf_count, pf_code, pf_cr2, pf_resume
isr_pf:
	incl pf_count
	popl pf_code
	push %eax
	mov %cr2, %eax
	mov %eax, pf_cr2
	pop %eax
	add $12, %esp
	jmp *pf_resume

	/* The paging test's #DE handler: counts, drops the frame and resumes at pf_resume. */
	.globl isr_de, de_count
isr_de:
	incl de_count
	add $12, %esp
	jmp *pf_resume

	/*
	 * The smc test: the first instruction rewrites the immediate of the second, which is
	 * already in the CPU's pipeline (or the soft CPU's translated block); the new one must
	 * run (SDM vol. 3 §11.6). Returns 2.
	 */
	.globl smc_inline
smc_inline:
	movb $2, 1f+1
1:	mov $1, %eax
	ret

	/*
	 * The chaos test: every exception vector and the end of each run of random code come
	 * here. Flat data segments and a fresh stack, then chaos_prepare (multiboot.c) returns
	 * the next random code to jump to. What the random code broke (the GDT, the IDT, CR0)
	 * may make this fault again, up to a triple fault: that ends the VM, which is fine.
	 */
	.globl chaos_enter
chaos_enter:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $chaos_stack_top, %esp
	call chaos_prepare
	jmp *%eax

	.data
	.align 8
pf_count:
	.long 0
pf_code:
	.long 0
pf_cr2:
	.long 0
pf_resume:
	.long 0
de_count:
	.long 0
ud_count:
	.long 0
ud_resume:
	.long 0
trap_vec:
	.long 0
null_idt:
	.word 0
	.long 0
wait_esp:
	.long 0

	/*
	 * The AP trampoline, copied to 0x10000 and started by SIPI vector 0x10 in real mode
	 * (CS = 0x1000, IP = 0). Each AP sets the bit of its initial APIC id (CPUID.1:EBX[31:24])
	 * in ap_mask, counts itself in ap_count, and halts.
	 */
	.section .rodata
	.code16
	.globl ap_tramp_start, ap_tramp_end, ap_tramp_mask, ap_tramp_count
ap_tramp_start:
	cli
	mov %cs, %ax
	mov %ax, %ds
	mov $1, %eax
	cpuid
	shr $24, %ebx
	lock btsl %ebx, (ap_tramp_mask - ap_tramp_start)
	lock incl (ap_tramp_count - ap_tramp_start)
1:	cli
	hlt
	jmp 1b
	.align 4
ap_tramp_mask:
	.long 0, 0
ap_tramp_count:
	.long 0
ap_tramp_end:
	.code32

	/*
	 * The 32-bit AP entry of the SMP tests (smp.h): copied to 0x12000 and started by SIPI
	 * vector 0x12. Loads the GDT smp.h put in ap32_gdtr (the BSP's), enters protected mode
	 * and jumps to ap32_entry in the kernel.
	 */
	.globl ap32_tramp_start, ap32_tramp_end, ap32_gdtr
	.code16
ap32_tramp_start:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl (ap32_gdtr - ap32_tramp_start)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x10, $ap32_entry
	.align 4
ap32_gdtr:
	.word 0
	.long 0
ap32_tramp_end:
	.code32

	/*
	 * Flat data segments, a 4 KiB stack of its own at 8 MiB + (APIC id + 1) * 4 KiB, then
	 * ap_main(APIC id) (smp.h).
	 */
	.text
ap32_entry:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $1, %eax
	cpuid
	shr $24, %ebx
	lea 1(%ebx), %eax
	shl $12, %eax
	add $0x800000, %eax
	mov %eax, %esp
	push %ebx
	call ap_main
1:	cli
	hlt
	jmp 1b

	/*
	 * The ipi test's handlers, without IRET (see the timer test): isr_ipi counts (in total
	 * and for the APIC id it runs on), acknowledges, drops its frame and waits again in
	 * ipi_wait ("sti; hlt"), or, once ipi_park is set, halts with IF clear in ipi_after;
	 * isr_nmi counts and goes to ipi_after too.
	 */
	.globl ipi_wait, isr_ipi, isr_nmi, ipi_hits, ipi_by, ipi_park, nmi_hits, ipi_parked
ipi_wait:
	sti
	hlt
	jmp ipi_wait
isr_ipi:
	push %eax
	mov 0xfee00020, %eax
	shr $24, %eax
	and $63, %eax
	lock incl ipi_by(,%eax,4)
	lock incl ipi_hits
	movl $0, 0xfee000b0
	pop %eax
	add $12, %esp
	cmpl $0, ipi_park
	je ipi_wait
	jmp ipi_after
isr_nmi:
	lock incl nmi_hits
	add $12, %esp
ipi_after:
	lock incl ipi_parked
2:	cli
	hlt
	jmp 2b

	/*
	 * The xsmc test: code on a page of its own that the BSP rewrites (the immediate) while
	 * an AP has it translated. Returns 1, then 2.
	 */
	.globl xsmc_fn
	.align 4096
xsmc_fn:
	mov $1, %eax
	ret
	.align 4096

	/*
	 * The linksmc, xlink and linkirq tests: loops of blocks that the soft CPU's code
	 * generator links to each other, on two pages of their own. xlink_fn returns 16 times
	 * the immediate at xlink_imm (1 until rewritten), looping 1 -> 2 -> 1: block 2 starts at
	 * the first page's last byte and its immediate is on the second page, so a store to the
	 * immediate drops block 2 but not the blocks on the first page whose exits lead to it.
	 * xlink_self: 16 trips, each adding its immediate and then storing ECX over it (the
	 * running block rewrites itself): 135 the first time, 136 after. xlink_wait(round, r)
	 * spins until *round >= r, then continues as xlink_fn. xlink_spin(n, t) spins on two
	 * linked blocks until *n >= t (an interrupt handler counts).
	 */
	.globl xlink_fn, xlink_imm, xlink_self, xlink_wait, xlink_spin, isr_linktick
	.align 4096
xlink_fn:
	mov $16, %ecx
	xor %eax, %eax
1:	jmp 2f
xlink_self:
	mov $16, %ecx
	xor %eax, %eax
3:	jmp 4f
4:	.byte 0x05 /* add $imm32, %eax */
xlink_simm:
	.long 0
	mov %ecx, xlink_simm
	dec %ecx
	jnz 3b
	ret
xlink_wait:
	mov 4(%esp), %edx
	mov 8(%esp), %ecx
5:	cmp %ecx, (%edx)
	jb 5b
	jmp xlink_fn
xlink_spin:
	mov 4(%esp), %edx
	mov 8(%esp), %ecx
7:	cmp %ecx, (%edx)
	jb 8f
	ret
8:	jmp 7b
	.org xlink_fn + 4095
2:	.byte 0x05 /* add $imm32, %eax: the immediate on the next page */
xlink_imm:
	.long 1
	dec %ecx
	jnz 1b
	ret
	.align 4096
isr_linktick:
	push %eax
	lock incl pit_ticks
	mov $0x20, %al
	out %al, $0x20
	pop %eax
	iret

	.data
	.align 4
ipi_hits:
	.long 0
ipi_park:
	.long 0
nmi_hits:
	.long 0
ipi_parked:
	.long 0
ipi_by:
	.fill 64, 4, 0
#endif

	.bss
	.align 16
	.space 16384
stack_top:
#ifdef MULTIBOOT
	.space 4096
chaos_stack_top:
#endif

	.section .note.GNU-stack, "", @progbits
