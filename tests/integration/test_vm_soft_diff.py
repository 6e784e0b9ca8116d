"""The soft CPU against KVM on generated instruction sequences (issue 18, item 6).

Each seed generates a straight-line sequence of integer instructions, in 32-bit code and in
64-bit code (REX, R8-R15, 64-bit operands): the ALU group in every operand size on registers,
immediates and memory, INC/DEC/NEG/NOT, shifts, rotates (through carry too), SHLD/SHRD,
MUL/IMUL/DIV/IDIV, BT*, BSF/BSR, SETcc/CMOVcc, XADD/CMPXCHG, MOVZX/MOVSX/MOVSXD, BSWAP,
CBW..CQO, XCHG, LEA and string instructions with REP/REPE/REPNE in both directions. GNU as
assembles it; a test kernel runs it (32-bit: the multiboot kernel's test=diff, its module;
64-bit: the bzImage kernel's diff=1, its initrd) with EBP/RBP at a 4 KiB scratch area, and
prints the registers, EFLAGS and a hash of the area that the sequence left. Both accelerators must print the same, EFLAGS
compared in the bits the SDM defines after the last instruction that set each (the generator
tracks that; undefined flags are never read: ADC, SETcc and friends only follow an
instruction that defined what they read).

A second generator (SseGen) does the same for SSE-SSE4.2 and the MMX-SSE conversions over
edge floats under a random MXCSR rounding mode: XMM0-7, MM0-3 and MXCSR go into the hashed
area. Its soft side always runs; an emulating KVM that cannot run SSE makes it skip saying so.

The KVM side needs /dev/kvm (the emulating KVM here runs this directly; scripts/vm-tests.sh's
nested-SVM runner has a real one). Without it the tests skip saying so."""
import os
import random
import shutil
import subprocess

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
BZIMAGE = os.path.join(GUESTS, "bzimage.bin")
PASS = 85

CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
ALL = CF | PF | AF | ZF | SF | OF
REGS32 = ["eax", "ebx", "ecx", "edx", "esi", "edi"]
REGS64 = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi"] + [f"r{i}" for i in range(8, 16)]
LOW8_32 = ["eax", "ebx", "ecx", "edx"]  # the registers with a low byte outside 64-bit mode
EDGE = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff,
        0x80000000, 0x80000001, 0xfffffffe, 0xffffffff, 0x100000000, 0x7fffffffffffffff,
        0x8000000000000000, 0xffffffffffffffff]
SFX = {1: "b", 2: "w", 4: "l", 8: "q"}
# Conditions and the flags they read.
CONDS = {"o": OF, "no": OF, "b": CF, "ae": CF, "e": ZF, "ne": ZF, "be": CF | ZF, "a": CF | ZF,
         "s": SF, "ns": SF, "p": PF, "np": PF, "l": SF | OF, "ge": SF | OF,
         "le": ZF | SF | OF, "g": ZF | SF | OF}


def reg(name, size):
    """The name of register name's low size bytes (AT&T, with %)."""
    if name.startswith("r") and name[1:].isdigit():
        return "%" + name + {1: "b", 2: "w", 4: "d", 8: ""}[size]
    base = name[1:]  # ax, bx, si...
    if size == 8:
        return "%r" + base
    if size == 4:
        return "%e" + base
    if size == 2:
        return "%" + base
    return "%" + (base[0] + "l" if base[1] == "x" else base + "l")


class Gen:
    """A random straight-line sequence for 32-bit (bits=32) or 64-bit code."""

    def __init__(self, seed, bits=32):
        self.r = random.Random(seed * 2 + (bits == 64))
        self.bits = bits
        self.regs = REGS64 if bits == 64 else REGS32
        self.sizes = [1, 2, 4, 8, 8] if bits == 64 else [1, 2, 4, 4]
        self.w = bits // 8
        self.lines = []
        self.defined = 0  # the EFLAGS bits the SDM defines now

    def imm(self, size):
        v = self.r.choice(EDGE) if self.r.random() < 0.5 else self.r.getrandbits(64)
        if size == 8:  # an imm32, sign-extended
            v &= 0xffffffff
            return v - (1 << 32) if v & 0x80000000 else v
        return v & ((1 << (8 * size)) - 1)

    def mem(self, size):
        return f"{self.r.randrange(0, 0x800 - size)}(%{'r' if self.bits == 64 else 'e'}bp)"

    def rname(self, size):
        regs = self.regs if size > 1 or self.bits == 64 else LOW8_32
        return reg(self.r.choice(regs), size)

    def operand(self, size, want_mem=None):
        """A register (of that size) or a memory operand; and whether it is memory."""
        if want_mem or (want_mem is None and self.r.random() < 0.3):
            return self.mem(size), True
        return self.rname(size), False

    def emit(self, line, defined):
        self.lines.append(line)
        self.defined = defined

    def step(self):
        r = self.r
        kind = r.choice(["alu"] * 6 + ["incdec", "negnot", "shift"] * 2 +
                        ["rot", "shd", "mul", "div", "bt", "bs", "cc", "xadd", "movx",
                         "misc", "string", "string"])
        size = r.choice(self.sizes)
        sfx = SFX[size]
        big = [s for s in self.sizes if s > 1]
        if kind == "alu":
            op = r.choice(["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"])
            if op in ("adc", "sbb") and not self.defined & CF:
                op = "add"
            dst, dmem = self.operand(size)
            if r.random() < 0.4:
                src = f"${self.imm(size)}"
            else:
                src, _ = self.operand(size, want_mem=False if dmem else None)
            logic = op in ("or", "and", "xor")
            self.emit(f"{op}{sfx} {src}, {dst}", ALL & ~AF if logic else ALL)
        elif kind == "incdec":
            dst, _ = self.operand(size)
            self.emit(f"{r.choice(['inc', 'dec'])}{sfx} {dst}", (self.defined & CF) | (ALL & ~CF))
        elif kind == "negnot":
            dst, _ = self.operand(size)
            if r.random() < 0.5:
                self.emit(f"neg{sfx} {dst}", ALL)
            else:
                self.emit(f"not{sfx} {dst}", self.defined)
        elif kind == "shift":
            c = r.randrange(1, 8 * size)
            dst, _ = self.operand(size)
            op = r.choice(["shl", "shr", "sar"])
            self.emit(f"{op}{sfx} ${c}, {dst}", CF | SF | ZF | PF | (OF if c == 1 else 0))
        elif kind == "rot":
            c = r.randrange(1, 8 * size)
            dst, _ = self.operand(size)
            ops = ["rol", "ror"] + (["rcl", "rcr"] if self.defined & CF else [])
            op = r.choice(ops)
            self.emit(f"{op}{sfx} ${c}, {dst}",
                      (self.defined & (SF | ZF | PF | AF)) | CF | (OF if c == 1 else 0))
        elif kind == "shd":
            size = r.choice(big)
            c = r.randrange(1, 8 * size)
            dst, _ = self.operand(size)
            self.emit(f"{r.choice(['shld', 'shrd'])}{SFX[size]} ${c}, {self.rname(size)}, {dst}",
                      CF | SF | ZF | PF | (OF if c == 1 else 0))
        elif kind == "mul":
            form = r.randrange(3)
            if form == 0:
                src, _ = self.operand(size)
                self.emit(f"{r.choice(['mul', 'imul'])}{sfx} {src}", CF | OF)
            else:
                size = r.choice(big)
                dst = self.rname(size)
                src, _ = self.operand(size)
                if form == 1:
                    self.emit(f"imul{SFX[size]} {src}, {dst}", CF | OF)
                else:
                    self.emit(f"imul{SFX[size]} ${self.imm(size)}, {src}, {dst}", CF | OF)
        elif kind == "div":
            # Full width, with a divisor that cannot fault: DIV after RDX/EDX=0, IDIV after
            # CDQ/CQO by anything but 0 and -1.
            w, sx = self.w, SFX[self.w]
            k = 0
            while k in (0, (1 << (8 * w)) - 1):
                k = self.r.choice(EDGE + [self.r.getrandbits(64)]) & ((1 << (8 * w)) - 1)
            mov = "movabsq" if w == 8 else "movl"
            if r.random() < 0.5:
                self.lines += ["xorl %edx, %edx", f"{mov} ${k}, {reg('rcx', w)}"]
                self.emit(f"div{sx} {reg('rcx', w)}", 0)
            else:
                self.lines += ["cqto" if w == 8 else "cltd", f"{mov} ${k}, {reg('rcx', w)}"]
                self.emit(f"idiv{sx} {reg('rcx', w)}", 0)
        elif kind == "bt":
            size = r.choice(big)
            dst, _ = self.operand(size)
            op = r.choice(["bt", "bts", "btr", "btc"])
            self.emit(f"{op}{SFX[size]} ${r.randrange(8 * size)}, {dst}", CF)
        elif kind == "bs":
            size = r.choice(big)
            src, dst = self.rname(size), self.rname(size)
            self.lines.append(f"or{SFX[size]} ${1 << r.randrange(min(31, 8 * size - 1))}, {src}")
            self.emit(f"{r.choice(['bsf', 'bsr'])}{SFX[size]} {src}, {dst}", ZF)
        elif kind == "cc":
            usable = [c for c, need in CONDS.items() if self.defined & need == need]
            if not usable:
                self.emit(f"cmpl ${self.imm(4)}, {self.rname(4)}", ALL)
                return
            c = r.choice(usable)
            if r.random() < 0.5:
                dst, _ = self.operand(1)
                self.lines.append(f"set{c} {dst}")
            else:
                size = r.choice(big)
                self.lines.append(f"cmov{c}{SFX[size]} {self.rname(size)}, {self.rname(size)}")
        elif kind == "xadd":
            dst, _ = self.operand(size)
            op = "xadd" if r.random() < 0.5 else "cmpxchg"
            self.emit(f"{op}{sfx} {self.rname(size)}, {dst}", ALL)
        elif kind == "movx":
            s = r.choice([1, 2, 4] if self.bits == 64 else [1, 2])
            d = r.choice([d for d in big if d > s])
            src, _ = self.operand(s)
            self.movx(src, s, d)
        elif kind == "misc":
            w = self.w
            ext = ["cbtw", "cwtl", "cltd", "cwtd"] + (["cltq", "cqto"] if w == 8 else [])
            sz = r.choice([4] + ([8] if w == 8 else []))
            idx = r.choice(self.regs)
            while idx in ("rsp",):
                idx = r.choice(self.regs)
            self.lines.append(r.choice(ext + [
                f"bswap {self.rname(sz)}",
                f"xchg{SFX[sz]} {self.rname(sz)}, {self.rname(sz)}",
                f"lea{SFX[sz]} {r.randrange(-100, 100)}({reg(r.choice(self.regs), w)},"
                f"{reg(idx, w)},{r.choice([1, 2, 4, 8])}), {self.rname(sz)}"]))
        else:
            self.string(r.choice([s for s in self.sizes]), sfx)

    def movx(self, src, s, d):
        """MOVZX or MOVSX of src (s bytes) into a d-byte register; MOVSXD for s == 4."""
        if s == 4:
            self.lines.append(f"movslq {src}, {self.rname(8)}")
        else:
            op = self.r.choice(["movz", "movs"]) + SFX[s] + SFX[d]
            self.lines.append(f"{op} {src}, {self.rname(d)}")

    def string(self, size, sfx):
        r = self.r
        sfx = SFX[size]
        n = r.randrange(1, 17)
        down = r.random() < 0.3
        span = n * size
        lo, hi = (span, 0x800 - size) if down else (0, 0x800 - span)
        w = self.w
        bp = reg("rbp", w)
        self.lines += [f"lea{SFX[w]} {r.randrange(lo, hi)}({bp}), {reg('rsi', w)}",
                       f"lea{SFX[w]} {r.randrange(lo, hi)}({bp}), {reg('rdi', w)}",
                       f"movl ${n}, %ecx", "std" if down else "cld"]
        op = r.choice(["movs", "stos", "lods", "cmps", "scas"])
        if op in ("movs", "stos"):
            self.lines.append(f"rep {op}{sfx}")
        elif op == "lods":
            self.lines.append(f"{op}{sfx}")
        else:
            self.lines.append(f"{r.choice(['repe', 'repne'])} {op}{sfx}")
            self.defined = ALL
        self.lines.append("cld")

    def program(self, n):
        w = self.w
        for name in self.regs:
            v = self.r.choice(EDGE) if self.r.random() < 0.5 else self.r.getrandbits(64)
            if w == 8:
                self.lines.append(f"movabsq ${v}, {reg(name, 8)}")
            else:
                self.lines.append(f"movl ${v & 0xffffffff}, {reg(name, 4)}")
        self.emit(f"cmp{SFX[w]} {reg('rbx', w)}, {reg('rax', w)}", ALL)
        for _ in range(n):
            self.step()
        self.tail()
        return "\n".join([f".code{self.bits}", ".text"] + self.lines) + "\n"

    def tail(self):
        """The registers and flags stored above the hashed area, then RET to the guest."""
        w, bp = self.w, reg("rbp", self.w)
        self.lines += [f"mov{SFX[w]} {reg(name, w)}, {0xf00 + w * i}({bp})"
                       for i, name in enumerate(self.regs)]
        self.lines += [f"pushf{SFX[w]}", f"pop{SFX[w]} {reg('rax', w)}",
                       f"mov{SFX[w]} {reg('rax', w)}, {0xf00 + w * len(self.regs)}({bp})",
                       "ret"]


# SSE-SSE4.2 on registers and aligned memory, the immediates drawn per use ("{i}": 0-255).
SSE_OPS = [
    "addps", "addpd", "addss", "addsd", "subps", "subsd", "mulps", "mulpd", "mulss", "divps",
    "divsd", "divss", "sqrtps", "sqrtsd", "minps", "maxpd", "minss", "maxsd", "rcpps", "rsqrtss",
    "andps", "andnpd", "orps", "xorpd", "unpcklps", "unpckhpd", "cvtps2dq", "cvttps2dq",
    "cvtdq2ps", "cvtpd2ps", "cvtps2pd", "cvtpd2dq", "cvttpd2dq", "cvtdq2pd", "cvtss2sd",
    "cvtsd2ss", "haddps", "hsubpd", "addsubps", "addsubpd", "movsldup", "movshdup", "movddup",
    "paddb", "paddw", "paddd", "paddq", "paddsb", "paddusw", "psubb", "psubq", "psubsw",
    "psubusb", "pmullw", "pmulhw", "pmulhuw", "pmuludq", "pmaddwd", "psadbw", "pavgb", "pavgw",
    "pmaxsw", "pmaxub", "pminsw", "pminub", "pcmpeqb", "pcmpeqd", "pcmpgtb", "pcmpgtw",
    "packsswb", "packssdw", "packuswb", "punpcklbw", "punpckhwd", "punpckldq", "punpckhqdq",
    "pand", "pandn", "por", "pxor", "psllw", "psrld", "psraw", "psrlq", "pshufb", "phaddw",
    "phaddsw", "phsubd", "pmaddubsw", "pmulhrsw", "psignb", "psignd", "pabsb", "pabsw",
    "pmulld", "pmuldq", "pminsb", "pminuw", "pminud", "pmaxsd", "pmaxuw", "pcmpeqq",
    "pcmpgtq", "packusdw", "phminposuw", "pmovsxbw", "pmovzxwd", "pmovsxdq", "pmovzxbq",
    "pshufd ${i},", "pshuflw ${i},", "pshufhw ${i},", "shufps ${i},", "shufpd ${i},",
    "palignr ${i},", "pblendw ${i},", "blendps ${i},", "blendpd ${i},", "insertps ${i},",
    "dpps ${i},", "dppd ${i},", "mpsadbw ${i},", "roundps ${r},", "roundsd ${r},",
    "cmpps ${c},", "cmpsd ${c},", "pblendvb %xmm0,", "blendvps %xmm0,",
]
# Edge values for single and double lanes: zeros, ones, denormals, infinities, NaNs, big.
F32 = [0, 0x80000000, 0x3f800000, 0xbf800000, 0x00000001, 0x807fffff, 0x7f800000, 0xff800000,
       0x7fc00000, 0x7f800001, 0x4effffff, 0xcf000000, 0x3dcccccd, 0x7f7fffff, 0x4b800001]
F64 = [0, 0x8000000000000000, 0x3ff0000000000000, 0x0000000000000001, 0x7ff0000000000000,
       0x7ff8000000000000, 0xfff0000000000001, 0x41dfffffffc00000, 0xc1e0000000000000,
       0x3fb999999999999a, 0x7fefffffffffffff, 0x43e0000000000000]


class SseGen:
    """An SSE sequence: XMM0-7 (and MM0-3) from edge data in the scratch area, a rounding mode
    with every exception masked, random operations, then the registers, MM registers and MXCSR
    stored back into the area, which the guest hashes."""

    def __init__(self, seed, bits):
        self.r = random.Random(seed * 7919 + bits)
        self.bits, self.w = bits, (8 if bits == 64 else 4)
        self.regs = REGS64 if bits == 64 else REGS32
        self.defined = ALL
        self.lines = []

    def program(self, n):
        r, w = self.r, self.w
        bp, ax = reg("rbp", w), reg("rax", w)
        self.lines += [f"mov %cr4, {ax}", f"or{SFX[w]} $0x600, {ax}", f"mov {ax}, %cr4",
                       "fninit"]
        for off in range(0, 0x200, 4):  # lanes of edge singles, doubles or raw bits
            if off % 8 == 0 and r.random() < 0.4:
                v = r.choice(F64) ^ (r.getrandbits(8) if r.random() < 0.3 else 0)
                self.lines += [f"movl ${v & 0xffffffff}, {off}({bp})",
                               f"movl ${v >> 32}, {off + 4}({bp})"]
                continue
            if off % 8 == 4 and self.lines[-1].endswith(f" {off}({bp})"):
                continue
            v = r.choice(F32) if r.random() < 0.6 else r.getrandbits(32)
            self.lines.append(f"movl ${v}, {off}({bp})")
        self.lines += [f"movdqa {16 * k}({bp}), %xmm{k}" for k in range(8)]
        self.lines += [f"movq {0x80 + 8 * k}({bp}), %mm{k}" for k in range(4)]
        mx = 0x1f80 | r.choice([0, 0x2000, 0x4000, 0x6000]) | r.choice([0, 0x8040])
        self.lines += [f"movl ${mx}, 0x300({bp})", f"ldmxcsr 0x300({bp})"]
        for _ in range(n):
            self.step()
        self.lines += [f"movdqu %xmm{k}, {0x400 + 16 * k}({bp})" for k in range(8)]
        self.lines += [f"movq %mm{k}, {0x480 + 8 * k}({bp})" for k in range(4)]
        self.lines += ["emms", f"stmxcsr 0x4a0({bp})"]
        self.lines.append(f"cmp{SFX[w]} {reg('rbx', w)}, {ax}")
        self.lines += [f"mov{SFX[w]} {reg(name, w)}, {0xf00 + w * i}({bp})"
                       for i, name in enumerate(self.regs)]
        self.lines += [f"pushf{SFX[w]}", f"pop{SFX[w]} {ax}",
                       f"mov{SFX[w]} {ax}, {0xf00 + w * len(self.regs)}({bp})", "ret"]
        return "\n".join([f".code{self.bits}", ".text"] + self.lines) + "\n"

    def step(self):
        r = self.r
        bp = reg("rbp", self.w)
        k = r.random()
        if k < 0.08:  # the MMX-SSE conversions
            m, x = f"%mm{r.randrange(4)}", f"%xmm{r.randrange(8)}"
            self.lines.append(r.choice([f"cvtpi2ps {m}, {x}", f"cvtpi2pd {m}, {x}",
                                        f"cvtps2pi {x}, {m}", f"cvttps2pi {x}, {m}",
                                        f"cvtpd2pi {x}, {m}", f"cvttpd2pi {x}, {m}",
                                        f"movq2dq {m}, {x}", f"movdq2q {x}, {m}"]))
            return
        if k < 0.12:  # string compares: ECX and the flags
            imm = r.choice([0x00, 0x04, 0x08, 0x0c, 0x01, 0x44, 0x18, 0x3a, 0x70])
            self.lines.append(f"{r.choice(['pcmpistri', 'pcmpistrm'])} ${imm}, "
                              f"%xmm{r.randrange(8)}, %xmm{r.randrange(1, 8)}")
            return
        if k < 0.16:  # to and from general registers
            g = reg(r.choice(["rax", "rbx", "rcx", "rdx"]), 4)
            x = f"%xmm{r.randrange(8)}"
            self.lines.append(r.choice([f"cvtsd2si {x}, {g}", f"cvttss2si {x}, {g}",
                                        f"cvtsi2sd {g}, {x}", f"pextrw $3, {x}, {g}",
                                        f"pmovmskb {x}, {g}", f"movmskps {x}, {g}",
                                        f"ptest {x}, %xmm{r.randrange(8)}",
                                        f"ucomisd {x}, %xmm{r.randrange(8)}",
                                        f"comiss {x}, %xmm{r.randrange(8)}",
                                        f"pextrd $2, {x}, {g}", f"pinsrb $5, {g}, {x}"]))
            return
        op = r.choice(SSE_OPS)
        op = op.format(i=r.randrange(256), r=r.randrange(16), c=r.randrange(8))
        src = f"{16 * r.randrange(32)}({bp})" if r.random() < 0.3 else f"%xmm{r.randrange(8)}"
        if op.startswith(("pmovsx", "pmovzx", "cvtps2pd", "cvtdq2pd", "movddup")) or \
                op.endswith(("ss", "sd")) or " " in op and op.split()[0].endswith(("ss", "sd")):
            src = f"%xmm{r.randrange(8)}"  # narrower memory operands: registers only here
        dst = f"%xmm{r.randrange(1, 8) if 'xmm0' in op else r.randrange(8)}"
        self.lines.append(f"{op} {src}, {dst}")


def assemble(src, tmp, bits):
    s, o, b = tmp / "seq.s", tmp / "seq.o", tmp / "seq.bin"
    s.write_text(src)
    subprocess.run(["as", f"--{bits}", "-o", str(o), str(s)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
    return str(b)


def run(accel, code, bits):
    """The registers, flags and hash the guest printed."""
    # (the bzImage kernel checks its memory map against mem=)
    kernel, cmdline = (BZIMAGE, "mem=128 diff=1") if bits == 64 else (MULTIBOOT, "test=diff")
    r = subprocess.run([KAPSEL, "vm", "run", "--accel", accel, "--kernel", kernel, "--mem",
                        "128M", "--initrd", code, "--cmdline", cmdline],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == PASS, f"{accel}: {r.stdout}{r.stderr}"
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("diff "):
            _, k, v = line.split()
            out[k] = int(v, 16)
    assert len(out) == (16 if bits == 64 else 8), r.stdout
    return out


@pytest.fixture(scope="module", autouse=True)
def tools():
    for k in (MULTIBOOT, BZIMAGE):
        if not os.path.exists(k):
            pytest.fail(f"test kernel {k} missing: build with meson/ninja first")
    for t in ("as", "objcopy"):
        if not shutil.which(t):
            pytest.skip(f"needs {t} (binutils) to assemble the sequences")


def need_kvm():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("needs /dev/kvm for the reference side (scripts/vm-tests.sh --nested "
                    "runs it in nested SVM)")


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("seed", range(16))
def test_generated_sequence_matches_kvm(seed, bits, tmp_path):
    need_kvm()
    g = Gen(seed, bits)
    code = assemble(g.program(400), tmp_path, bits)
    kvm, soft = run("kvm", code, bits), run("soft", code, bits)
    mask = g.defined | 0xfffff000 | 0x700  # and the non-arithmetic bits (TF, IF, DF, ...)
    for k in g.regs:
        assert soft[k] == kvm[k], f"seed {seed}: {k} soft {soft[k]:#x} kvm {kvm[k]:#x}"
    assert soft["flags"] & mask == kvm["flags"] & mask, \
        f"seed {seed}: flags soft {soft['flags']:#x} kvm {kvm['flags']:#x} (compared {mask:#x})"
    assert soft["hash"] == kvm["hash"], f"seed {seed}: the scratch memory differs"


@pytest.mark.parametrize("bits", [32, 64])
def test_a_changed_result_is_caught(bits, tmp_path):
    # The comparison itself: one more INC before the tail, or one more store, shows in the
    # registers or the hash (a differ that always agrees would pass everything above).
    g = Gen(1, bits)
    src = g.program(50)
    base = run("soft", assemble(src, tmp_path, bits), bits)
    ax, bp = reg("rax", g.w), reg("rbp", g.w)
    tail = f"mov{SFX[g.w]} {ax}, 3840({bp})"
    assert tail in src
    for i, extra in enumerate([f"inc{SFX[g.w]} {ax}", f"movl $0x5a5a5a5a, 64({bp})"]):
        d = tmp_path / str(i)
        d.mkdir()
        other = run("soft", assemble(src.replace(tail, extra + "\n" + tail, 1), d, bits), bits)
        assert other != base, extra


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("seed", range(8))
def test_generated_sse_sequence_matches_kvm(seed, bits, tmp_path):
    # SSE-SSE4.2 and the MMX-SSE conversions over edge floats under a random rounding mode:
    # the XMM and MM registers, MXCSR's flags, the general registers and EFLAGS. The soft side
    # always runs (no crash, no sanitizer report); the comparison needs a KVM that runs SSE.
    g = SseGen(seed, bits)
    code = assemble(g.program(200), tmp_path, bits)
    soft = run("soft", code, bits)
    need_kvm()
    kernel, cmdline = (BZIMAGE, "mem=128 diff=1") if bits == 64 else (MULTIBOOT, "test=diff")
    probe = subprocess.run([KAPSEL, "vm", "run", "--accel", "kvm", "--kernel", kernel, "--mem",
                            "128M", "--initrd", code, "--cmdline", cmdline],
                           capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    if probe.returncode != PASS and "this KVM cannot run that instruction" in probe.stderr:
        pytest.skip("this /dev/kvm cannot run SSE instructions (it emulates them): "
                    + probe.stderr.strip().splitlines()[-1][:160])
    kvm = run("kvm", code, bits)
    for k in g.regs:
        assert soft[k] == kvm[k], f"seed {seed}: {k} soft {soft[k]:#x} kvm {kvm[k]:#x}"
    assert soft["flags"] & ALL == kvm["flags"] & ALL, f"seed {seed}: flags"
    assert soft["hash"] == kvm["hash"], f"seed {seed}: the XMM/MM registers or MXCSR differ"
