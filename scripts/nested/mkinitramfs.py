#!/usr/bin/python3
"""Builds the outer guest's initramfs for scripts/vm-tests.sh: busybox-static, the init of
scripts/nested/init, and the kernel modules the outer guest needs (virtio-pci, 9p over virtio,
overlayfs, kvm-amd, tun, bridge, veth, nftables) with everything they depend on, in load order. Dependencies come
from each module's own `.modinfo` `depends=` field, so no depmod (kmod) is needed on the host.

usage: mkinitramfs.py KROOT OUT.cpio   (KROOT: a `dpkg -x` of a linux-image-*-amd64 .deb)"""
import functools
import glob
import lzma
import os
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"
# What the init uses; their dependencies are added. Built-in ones (modules.builtin) are fine
# to be missing; any other missing module is an error.
WANTED = ["virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "irqbypass", "kvm",
          "kvm_amd", "tun", "bridge", "loop",
          # The scratch disk for /tmp: ext4 (its crc32c is found by name, not a depends=).
          "virtio_blk", "ext4", "crc32c_generic",
          # Container networks (kapsel run --net NETWORK, with --vm too): veth pairs and the
          # nftables expressions of net/nft.c (nat chains, dnat, masquerade, fib, ct).
          "veth", "nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_fib_ipv4",
          "nft_ct"]

# Module parameters (scripts/nested/init passes them to insmod). The outer kvm-amd offers no
# nested SVM (kapsel's guests do not need it) and does not use virtual GIF, one less feature of
# QEMU's SVM emulation to depend on.
# KAPSEL_NESTED_KVM_AMD replaces them (e.g. to try "npt=0": shadow paging instead of the
# emulated nested paging).
PARAMS = {"kvm_amd": os.environ.get("KAPSEL_NESTED_KVM_AMD", "nested=0 vgif=0")}


def modname(path):
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def read_ko(path):
    with open(path, "rb") as f:
        data = f.read()
    return lzma.decompress(data) if path.endswith(".xz") else data


def depends(data):
    # .modinfo holds NUL-separated key=value strings; a module has exactly one depends= entry
    # (empty when it depends on nothing).
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    end = data.index(b"\0", i + 1)
    val = data[i + len(b"\0depends="):end].decode()
    return [d.replace("-", "_") for d in val.split(",") if d]


def cpio_newc(entries):
    """An uncompressed newc archive: entries of (name, mode, data)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


@functools.lru_cache(maxsize=None)
def index(kroot):
    """(modules dir, {name: .ko path}, {built-in names}) of an unpacked kernel package; cached,
    since the glob over its few thousand modules is slow over the nested runner's 9p."""
    mdirs = glob.glob(os.path.join(kroot, "lib", "modules", "*"))
    if len(mdirs) != 1:
        sys.exit(f"mkinitramfs: {kroot}/lib/modules: expected one kernel version, "
                 f"found {len(mdirs)}")
    paths = {}
    for p in glob.glob(os.path.join(mdirs[0], "kernel", "**", "*.ko*"), recursive=True):
        paths.setdefault(modname(p), p)
    with open(os.path.join(mdirs[0], "modules.builtin")) as f:
        builtin = {modname(line.strip()) for line in f if line.strip()}
    return mdirs[0], paths, builtin


def modules(kroot, wanted):
    """[(name, bytes)] of the wanted modules of an unpacked kernel package and everything their
    depends= name, each after its dependencies (insmod order). Built-in modules are skipped;
    any other missing one is a SystemExit naming it."""
    mdir, paths, builtin = index(kroot)
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        if name not in paths:
            if name in builtin:
                return
            sys.exit(f"mkinitramfs: module {name} not in {mdir} (neither a .ko nor built in)")
        data = read_ko(paths[name])
        for d in depends(data):
            visit(d)
        order.append((name, data))

    for m in wanted:
        visit(m)
    return order


def main():
    kroot, out = sys.argv[1], sys.argv[2]
    mods = modules(kroot, WANTED)
    order = [name for name, _ in mods]
    blobs = dict(mods)

    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    with open(os.path.join(HERE, "init"), "rb") as f:
        init = f.read()
    d = stat.S_IFDIR | 0o755
    entries = [(n, d, b"") for n in ("bin", "dev", "proc", "sys", "lib", "lower", "rw",
                                     "newroot", "job")]
    entries += [("bin/busybox", stat.S_IFREG | 0o755, bb),
                ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
                ("init", stat.S_IFREG | 0o755, init),
                ("lib/modules.order", stat.S_IFREG | 0o644,
                 "".join(f"{m} {PARAMS.get(m, '')}".strip() + "\n" for m in order).encode())]
    entries += [(f"lib/{m}.ko", stat.S_IFREG | 0o644, blobs[m]) for m in order]
    with open(out, "wb") as f:
        f.write(cpio_newc(entries))


if __name__ == "__main__":
    main()
