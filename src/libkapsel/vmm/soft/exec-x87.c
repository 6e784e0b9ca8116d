/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The soft CPU's x87 FPU (SDM vol. 1 ch. 8; vol. 2, the D8-DF escapes).
 *
 * Arithmetic is the host's own: kapsel runs on x86-64, whose x87 is the guest's, so every
 * computing x87 instruction runs for real on the host, bit for bit what hardware gives
 * (80-bit results, precision and rounding control, C0-C3, FXAM, FPREM's partial remainders,
 * the transcendentals, stack overflow and underflow). Each runs in a stub (below) that
 * swaps the guest's state in with FXRSTOR, executes the very escape byte and ModRM, with a
 * memory operand redirected to a host buffer, and swaps back with FXSAVE. The host runs it
 * with every exception masked; what the guest's control word leaves unmasked is then
 * answered as the SDM says: for invalid operation, denormal and divide-by-zero the
 * destination and stack stay as they were, then FSW.ES and B are set and the next waiting
 * x87 instruction raises #MF. The control instructions (FLDCW, FNSTCW, FNSTSW, FNCLEX,
 * FNINIT, FLDENV, FNSTENV, FRSTOR, FNSAVE) are written out here.
 *
 * CR0.EM or CR0.TS make every escape #NM; WAIT/FWAIT is #NM with TS and MP (SDM vol. 3
 * §2.5, table 12-1).
 */
#include <string.h>

#include "vmm/soft/exec.h"

/*
 * Stubs: 8 escapes x (8 memory forms with [rdx] + 64 register forms), 32 bytes apart.
 * In: rdi the guest image, rsi a host save area, rdx the memory operand, rcx the flags the
 * instruction sees (FCMOVcc). Out: rax the flags after it (FCOMI, FUCOMI).
 */
__asm__(".pushsection .text\n"
	".macro KAP_X87_STUB esc, modrm\n"
	".balign 32\n"
	"0:\n"
	"endbr64\n"
	"fxsave64 (%rsi)\n"
	"fxrstor64 (%rdi)\n"
	"pushq %rcx\n"
	"popfq\n"
	".byte \\esc, \\modrm\n"
	"pushfq\n"
	"popq %rax\n"
	"fxsave64 (%rdi)\n"
	"fxrstor64 (%rsi)\n"
	"ret\n"
	/* pads to 32 bytes; both assemblers refuse an .org that goes back (a longer stub) */
	".org 0b + 32\n"
	".endm\n"
	".macro KAP_X87_ESC esc\n"
	".irp r,0,1,2,3,4,5,6,7\n"
	"KAP_X87_STUB \\esc, (\\r << 3) | 2\n"
	".endr\n"
	".irp a,0,1,2,3,4,5,6,7\n"
	".irp b,0,1,2,3,4,5,6,7\n"
	"KAP_X87_STUB \\esc, 0xc0 | (\\a << 3) | \\b\n"
	".endr\n"
	".endr\n"
	".endm\n"
	".balign 32\n"
	".globl kap_soft_x87_stubs\n"
	".hidden kap_soft_x87_stubs\n"
	".type kap_soft_x87_stubs, @function\n"
	"kap_soft_x87_stubs:\n"
	".irp e,0xd8,0xd9,0xda,0xdb,0xdc,0xdd,0xde,0xdf\n"
	"KAP_X87_ESC \\e\n"
	".endr\n"
	".size kap_soft_x87_stubs, . - kap_soft_x87_stubs\n"
	".purgem KAP_X87_STUB\n"
	".purgem KAP_X87_ESC\n"
	".popsection\n");

extern const char kap_soft_x87_stubs[];
typedef uint64_t (*x87_stub)(void *img, void *host, void *mem, uint64_t flags);

static x87_stub stub_for(unsigned int esc, unsigned int modrm)
{
	unsigned int i = (esc - 0xd8) * 72 + (modrm >= 0xc0 ? 8 + (modrm & 63) : (modrm >> 3) & 7);
	return (x87_stub)(uintptr_t)(kap_soft_x87_stubs + 32 * i);
}

/* FSW bits. */
#define FSW_IE	0x0001
#define FSW_DE	0x0002
#define FSW_ZE	0x0004
#define FSW_SF	0x0040
#define FSW_ES	0x0080
#define FSW_B	0x8000
#define FSW_EXC 0x003f

void kap_soft_fpu_reset(struct kap_soft_cpu *cpu)
{
	memset(&cpu->fpu, 0, sizeof(cpu->fpu));
	cpu->fpu.fcw = 0x37f;
	cpu->fpu.mxcsr = 0x1f80;
	cpu->fpu.mxcsr_mask = 0xffff;
	cpu->fcs = cpu->fds = 0;
}

/* #NM for CR0.EM/TS, then #MF for a pending unmasked exception (waiting instructions). */
static void x87_enter(struct kap_soft_cpu *cpu, bool waiting)
{
	if (cpu->cr0 & (KAP_SOFT_CR0_EM | KAP_SOFT_CR0_TS))
		kap_soft_raise(cpu, KAP_SOFT_XNM, 0, false);
	if (waiting && (cpu->fpu.fsw & FSW_ES))
		kap_soft_raise(cpu, KAP_SOFT_XMF, 0, false);
}

/* 9B WAIT/FWAIT. */
void kap_soft_fwait(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	(void)d;
	if ((cpu->cr0 & (KAP_SOFT_CR0_TS | KAP_SOFT_CR0_MP)) == (KAP_SOFT_CR0_TS | KAP_SOFT_CR0_MP))
		kap_soft_raise(cpu, KAP_SOFT_XNM, 0, false);
	if (cpu->fpu.fsw & FSW_ES)
		kap_soft_raise(cpu, KAP_SOFT_XMF, 0, false);
}

/* ES and B follow the unmasked exception flags (SDM vol. 1 §8.1.3.1). */
static void update_es(struct kap_soft_fxsave *f)
{
	if (f->fsw & ~f->fcw & FSW_EXC)
		f->fsw |= FSW_ES | FSW_B;
	else
		f->fsw &= (uint16_t) ~(FSW_ES | FSW_B);
}

/* The 2-bit tag of physical register i (FSTENV/FSAVE's full tag word, §8.1.7). */
static unsigned int full_tag(const struct kap_soft_fxsave *f, unsigned int phys)
{
	if (!(f->ftw & (1u << phys)))
		return 3;
	unsigned int top = (f->fsw >> 11) & 7;
	unsigned int st = (phys - top) & 7;
	uint64_t m = f->st[st].mant;
	unsigned int e = f->st[st].se & 0x7fff;
	if (e == 0x7fff)
		return 2;
	if (e == 0)
		return m == 0 ? 1 : 2;
	return (m >> 63) ? 0 : 2; /* unnormals are special */
}

static uint16_t full_tag_word(const struct kap_soft_fxsave *f)
{
	uint16_t t = 0;
	for (unsigned int i = 0; i < 8; i++)
		t |= (uint16_t)(full_tag(f, i) << (2 * i));
	return t;
}

/* FNSTENV/FNSAVE's environment: 14 bytes (16-bit operand size) or 28 (SDM vol. 1 fig. 8-9). */
static unsigned int env_store(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, uint8_t *out)
{
	struct kap_soft_fxsave *f = &cpu->fpu;
	uint16_t tw = full_tag_word(f);
	bool real = !(cpu->cr0 & KAP_SOFT_CR0_PE);
	if (d->osize == 2) {
		uint16_t v[7] = {f->fcw, f->fsw, tw, (uint16_t)f->fip, 0, (uint16_t)f->fdp, 0};
		if (real) {
			v[4] = (uint16_t)(((f->fip >> 4) & 0xf000) | (f->fop & 0x7ff));
			v[6] = (uint16_t)((f->fdp >> 4) & 0xf000);
		} else {
			v[4] = cpu->fcs;
			v[6] = cpu->fds;
		}
		memcpy(out, v, 14);
		return 14;
	}
	uint32_t v[7] = {
	    0xffff0000u | f->fcw, 0xffff0000u | f->fsw,	 0xffff0000u | tw, (uint32_t)f->fip, 0,
	    (uint32_t)f->fdp,	  0xffff0000u | cpu->fds};
	if (real) {
		v[3] = 0xffff0000u | (uint16_t)f->fip;
		v[4] = (uint32_t)(((f->fip >> 4) & 0x0ffff000) | (f->fop & 0x7ff));
		v[5] = 0xffff0000u | (uint16_t)f->fdp;
		v[6] = (uint32_t)((f->fdp >> 4) & 0x0ffff000);
	} else {
		v[4] = ((uint32_t)(f->fop & 0x7ff) << 16) | cpu->fcs;
	}
	memcpy(out, v, 28);
	return 28;
}

static unsigned int env_load(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d,
			     const uint8_t *in)
{
	struct kap_soft_fxsave *f = &cpu->fpu;
	uint16_t fcw, fsw, tw;
	unsigned int n;
	if (d->osize == 2) {
		uint16_t v[7];
		memcpy(v, in, 14);
		fcw = v[0], fsw = v[1], tw = v[2];
		f->fip = v[3];
		f->fdp = v[5];
		n = 14;
	} else {
		uint32_t v[7];
		memcpy(v, in, 28);
		fcw = (uint16_t)v[0], fsw = (uint16_t)v[1], tw = (uint16_t)v[2];
		f->fip = v[3];
		f->fdp = v[5];
		if (cpu->cr0 & KAP_SOFT_CR0_PE) {
			cpu->fcs = (uint16_t)v[4];
			cpu->fds = (uint16_t)v[6];
			f->fop = (uint16_t)((v[4] >> 16) & 0x7ff);
		}
		n = 28;
	}
	f->fcw = (uint16_t)(fcw | 0x40); /* bit 6 reads as 1 */
	f->fsw = fsw;
	f->ftw = 0;
	for (unsigned int i = 0; i < 8; i++)
		if (((tw >> (2 * i)) & 3) != 3)
			f->ftw |= (uint8_t)(1u << i);
	update_es(f);
	return n;
}

/* The x87 control instructions, written out; false when d is not one. */
static bool x87_control(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d, unsigned int esc)
{
	struct kap_soft_fxsave *f = &cpu->fpu;
	unsigned int reg = d->reg & 7;
	if (d->mod == 3) {
		if (esc == 0xdb && (d->rm & 7) == 2 && reg == 4) { /* DB E2 FNCLEX */
			x87_enter(cpu, false);
			f->fsw &= (uint16_t) ~(FSW_EXC | FSW_SF | FSW_ES | FSW_B);
			return true;
		}
		if (esc == 0xdb && (d->rm & 7) == 3 && reg == 4) { /* DB E3 FNINIT */
			x87_enter(cpu, false);
			f->fcw = 0x37f;
			f->fsw = 0;
			f->ftw = 0;
			f->fop = 0;
			f->fip = f->fdp = 0;
			cpu->fcs = cpu->fds = 0;
			return true;
		}
		if (esc == 0xdb && reg == 4 && (d->rm & 7) < 5) { /* FENI FDISI FSETPM: NOPs */
			x87_enter(cpu, false);
			return true;
		}
		if (esc == 0xdf && reg == 4 && (d->rm & 7) == 0) { /* DF E0 FNSTSW AX */
			x87_enter(cpu, false);
			set_reg(cpu, d, 0, 2, f->fsw);
			return true;
		}
		return false;
	}
	unsigned int seg = ea_seg(d);
	uint64_t off = ea(cpu, d);
	uint8_t buf[108];
	if (esc == 0xd9 && reg >= 4) {
		x87_enter(cpu, reg == 4 || reg == 5);
		switch (reg) {
		case 4: { /* FLDENV */
			unsigned int n = d->osize == 2 ? 14 : 28;
			kap_soft_read_buf(cpu, seg, off, buf, n);
			env_load(cpu, d, buf);
			break;
		}
		case 5: /* FLDCW */
			f->fcw = (uint16_t)(kap_soft_read(cpu, seg, off, 2) | 0x40);
			update_es(f);
			break;
		case 6: { /* FNSTENV: then every exception is masked (SDM vol. 2, FSTENV) */
			unsigned int n = env_store(cpu, d, buf);
			kap_soft_write_buf(cpu, seg, off, buf, n);
			f->fcw |= 0x3f;
			update_es(f);
			break;
		}
		case 7: /* FNSTCW */
			kap_soft_write(cpu, seg, off, 2, f->fcw);
			break;
		}
		return true;
	}
	if (esc == 0xdd && (reg == 4 || reg == 6 || reg == 7)) {
		x87_enter(cpu, reg == 4);
		if (reg == 7) { /* FNSTSW m16 */
			kap_soft_write(cpu, seg, off, 2, f->fsw);
			return true;
		}
		unsigned int envn = d->osize == 2 ? 14 : 28;
		if (reg == 4) { /* FRSTOR */
			kap_soft_read_buf(cpu, seg, off, buf, envn + 80);
			env_load(cpu, d, buf);
			for (unsigned int i = 0; i < 8; i++) {
				memcpy(&f->st[i].mant, buf + envn + 10 * i, 8);
				memcpy(&f->st[i].se, buf + envn + 10 * i + 8, 2);
				memset(f->st[i].rsvd, 0, sizeof(f->st[i].rsvd));
			}
			return true;
		}
		/* FNSAVE: then as FNINIT */
		unsigned int n = env_store(cpu, d, buf);
		for (unsigned int i = 0; i < 8; i++) {
			memcpy(buf + n + 10 * i, &f->st[i].mant, 8);
			memcpy(buf + n + 10 * i + 8, &f->st[i].se, 2);
		}
		kap_soft_write_buf(cpu, seg, off, buf, n + 80);
		f->fcw = 0x37f;
		f->fsw = 0;
		f->ftw = 0;
		f->fop = 0;
		f->fip = f->fdp = 0;
		cpu->fcs = cpu->fds = 0;
		return true;
	}
	return false;
}

/* Memory operand size of the escape's /reg memory form, negative when it stores; 0: #UD. */
static int mem_size(unsigned int esc, unsigned int reg)
{
	switch (esc) {
	case 0xd8:
		return 4;
	case 0xd9:
		return reg == 0 ? 4 : (reg == 2 || reg == 3) ? -4 : 0;
	case 0xda:
		return 4;
	case 0xdb:
		return reg == 0			? 4
		       : (reg >= 1 && reg <= 3) ? -4
		       : reg == 5		? 10
		       : reg == 7		? -10
						: 0;
	case 0xdc:
		return 8;
	case 0xdd:
		return reg == 0 ? 8 : (reg >= 1 && reg <= 3) ? -8 : 0;
	case 0xde:
		return 2;
	default: /* 0xdf */
		switch (reg) {
		case 0:
			return 2;
		case 4:
			return 10;
		case 5:
			return 8;
		case 6:
			return -10;
		case 7:
			return -8;
		default:
			return -2;
		}
	}
}

/* Register forms that do not exist (#UD on hardware too). */
static bool reg_form_valid(unsigned int esc, unsigned int modrm)
{
	unsigned int reg = (modrm >> 3) & 7, rm = modrm & 7;
	switch (esc) {
	case 0xd9:
		if (reg == 2)
			return rm == 0; /* FNOP */
		if (reg == 3)
			return true; /* FSTP1 alias (D9 D8+i) */
		if (reg == 4)
			return rm != 2 && rm != 3 && rm != 6 && rm != 7;
		if (reg == 5)
			return rm != 7;
		return true;
	case 0xda:
		return reg < 4 || modrm == 0xe9;
	case 0xdb:
		return reg != 4 && reg != 7; /* DB E0-E7 handled as control */
	case 0xdd:
		return reg < 6;
	case 0xde:
		return reg != 3 || rm == 1;
	case 0xdf:
		/* DF E0 is FNSTSW AX (control); E1-E7 and F8-FF are undefined: the host's own
		 * x87 would fault on them inside a stub (SIGILL), so they are #UD here. */
		return reg != 4 && reg != 7;
	default:
		return true;
	}
}

void kap_soft_x87(struct kap_soft_cpu *cpu, const struct kap_soft_insn *d)
{
	unsigned int esc = d->op & 0xff, reg = d->reg & 7;
	if (x87_control(cpu, d, esc))
		return;
	unsigned int modrm = d->mod == 3 ? 0xc0 | (reg << 3) | (d->rm & 7) : 0;
	int msz = 0;
	if (d->mod == 3) {
		if (!reg_form_valid(esc, modrm))
			kap_soft_unimplemented(cpu, d);
	} else {
		msz = mem_size(esc, reg);
		if (msz == 0)
			kap_soft_unimplemented(cpu, d);
	}
	x87_enter(cpu, true);
	struct kap_soft_fxsave *f = &cpu->fpu;
	unsigned int seg = d->mod == 3 ? 0 : ea_seg(d);
	uint64_t off = d->mod == 3 ? 0 : ea(cpu, d);
	uint8_t mem[16] = {0};
	if (msz > 0)
		kap_soft_read_buf(cpu, seg, off, mem, (unsigned int)msz);

	/* Run on a copy: the guest state changes only once any store has succeeded. */
	static _Thread_local struct kap_soft_fxsave img, host;
	img = *f;
	img.fcw = f->fcw | FSW_EXC;
	img.fsw = f->fsw & (uint16_t) ~(FSW_EXC | FSW_ES | FSW_B);
	img.mxcsr = 0x1f80;
	uint64_t fl = (kap_soft_get_flags(cpu) & KAP_SOFT_ARITH) | 2;
	uint64_t out = stub_for(esc, d->mod == 3 ? modrm : (reg << 3))(&img, &host, mem, fl);
	unsigned int raised = img.fsw & FSW_EXC;
	unsigned int unmasked = raised & ~f->fcw & FSW_EXC;
	if (unmasked & (FSW_IE | FSW_DE | FSW_ZE)) {
		/* No result, no pop (SDM vol. 1 §8.5): only the flags and C1 (stack fault). */
		f->fsw = (uint16_t)((f->fsw & ~(FSW_SF | 0x0200)) | raised |
				    (img.fsw & (FSW_SF | 0x0200)));
		update_es(f);
		return;
	}
	if (msz < 0)
		kap_soft_write_buf(cpu, seg, off, mem, (unsigned int)-msz);
	uint16_t fcw = f->fcw;
	img.fcw = fcw;
	img.fsw = (uint16_t)(img.fsw | (f->fsw & FSW_EXC));
	img.mxcsr = f->mxcsr;
	/* The last instruction and operand pointers are the guest's, not the stub's. */
	img.fop = (uint16_t)(((esc & 7) << 8) | (d->mod == 3 ? modrm
							     : (unsigned int)(d->mod << 6) |
								   (reg << 3) | (d->rm & 7)));
	img.fip = cpu->mode == 8 ? cpu->rip : cpu->rip - cpu->seg[KAP_SOFT_CS].base;
	cpu->fcs = cpu->seg[KAP_SOFT_CS].sel;
	if (d->mod != 3) {
		img.fdp = off;
		cpu->fds = cpu->seg[seg].sel;
	} else {
		img.fdp = f->fdp;
	}
	*f = img;
	update_es(f);
	/* FCOMI, FUCOMI and their popping forms set ZF, PF and CF (and clear OF, SF, AF). */
	if (d->mod == 3 && (esc == 0xdb || esc == 0xdf) && (reg == 5 || reg == 6)) {
		uint64_t fv = kap_soft_get_flags(cpu);
		fv = (fv & ~KAP_SOFT_ARITH) | (out & (KAP_SOFT_ZF | KAP_SOFT_PF | KAP_SOFT_CF));
		kap_soft_set_flags(cpu, fv);
	}
}
