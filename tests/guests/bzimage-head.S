/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The setup header of the bzImage test kernel (Documentation/arch/x86/boot.rst), protocol
 * 2.15, 64-bit entry (XLF_KERNEL_64) at 1 MiB + 0x200.
 */
	.section .setup, "a"
	.code16
	.org 0x1f1
	.byte 1				/* setup_sects */
	.word 0				/* root_flags */
	.long _syssize			/* syssize: from bzimage.ld */
	.word 0, 0, 0			/* ram_size, vid_mode, root_dev */
	.word 0xaa55			/* boot_flag */
	.byte 0xeb, 0x6a		/* jump: the header ends at 0x202 + 0x6a */
	.ascii "HdrS"			/* 0x202 */
	.word 0x020f			/* version 2.15 */
	.org 0x211
	.byte 0x01			/* loadflags: LOADED_HIGH */
	.org 0x214
	.long 0x100000			/* code32_start */
	.org 0x22c
	.long 0x7fffffff		/* initrd_addr_max */
	.long 0x200000			/* kernel_alignment */
	.org 0x236
	.word 0x0001			/* xloadflags: XLF_KERNEL_64 */
	.long 2047			/* cmdline_size */
	.org 0x258
	.quad 0x100000			/* pref_address */
	.long _init_size		/* init_size: from bzimage.ld */
	.org 0x26c

	.section .head, "ax"
	.code64
	.org 0x200
	.globl startup_64
startup_64:
	lea stack_top(%rip), %rsp
	mov %rsi, %rdi
	call guest_main
1:	cli
	hlt
	jmp 1b

	.bss
	.align 16
	.space 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
