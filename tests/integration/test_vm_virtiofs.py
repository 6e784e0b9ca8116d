"""virtio-fs (issue 14): `kapsel vm run --fs tag=NAME,path=DIR[,ro]` and vm.json "fs", driven
by the multiboot test kernel's hostile FUSE driver (tests/guests/virtiofs.h, test=virtiofs):
it reads a file the test put in the share and prints the errors its hostile requests get.
PASS is exit status 85, as in test_vm.py."""
import errno
import json
import os
import subprocess

import pytest

from conftest import KAPSEL
from test_vm import MULTIBOOT, PASS, mb, guests  # noqa: F401  (guests: module fixture)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


@pytest.fixture
def share(tmp_path):
    d = tmp_path / "share"
    d.mkdir()
    (d / "hello.txt").write_text("hello from the host share\n")
    os.symlink("/etc", d / "etc")
    (tmp_path / "outside").write_text("secret")
    return d


def guest_lines(out):
    return {line.split(" = ")[0][len("virtiofs: "):]: line.split(" = ")[1]
            for line in out.splitlines() if line.startswith("virtiofs: ") and " = " in line}


@pytest.mark.parametrize("transport,ro", [("mmio", False), ("mmio", True), ("pci", False)])
def test_guest_reads_share_and_hostile_requests_fail(share, tmp_path, transport, ro):
    spec = f"tag=share0,path={share}" + (",ro" if ro else "")
    r = mb(f"virtiofs transport={transport}", "--transport", transport, "--fs", spec,
           timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    out = r.stdout
    assert "virtiofs: tag share0, request queues 1" in out
    assert "virtiofs: init 7." in out and "max_write 131072" in out
    assert "virtiofs: read: hello from the host share" in out
    assert "virtiofs: readlink etc: /etc" in out
    assert "virtiofs ok" in out
    got = guest_lines(out)
    assert got == {
        "lookup before init": f"-{errno.EIO}",
        "lookup ..": f"-{errno.EINVAL}",
        "lookup /etc/passwd": f"-{errno.EINVAL}",
        "lookup ../etc": f"-{errno.EINVAL}",
        "lookup etc/passwd": f"-{errno.ENOTDIR}",
        "open etc": f"-{errno.ELOOP}",
        "getattr unknown node": f"-{errno.ESTALE}",
        "read beyond buffer": f"-{errno.EINVAL}",
        "header beyond buffer": f"-{errno.EINVAL}",
        "unknown opcode": f"-{errno.ENOSYS}",
        "readlink forgotten node": f"-{errno.ESTALE}",
    }, out
    # Nothing beside the share changed, and no device needed a reset.
    assert sorted(os.listdir(tmp_path)) == ["outside", "share"]
    assert (tmp_path / "outside").read_text() == "secret"
    assert "needs reset" not in r.stderr


def test_fs_on_pci_and_from_vm_json(share, tmp_path):
    """The default transport is PCI: the share is a virtio-pci function (device id 26 is
    0x1040 + 26 = 0x105a); vm.json's "fs" adds shares as the flag does."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "fs": [f"tag=a,path={share}"]}))
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg), "--cmdline", "test=pci",
                        "--disk", str(disk), "--fs", f"tag=b,path={share},ro"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert r.stdout.count(" 0x105a1af4 ") == 2, r.stdout


@pytest.mark.parametrize("spec,msg", [
    ("tag=x,path={missing}", "--fs tag=x,path={missing}: path {missing}: No such file"),
    ("tag=x,path={file}", "is not a directory"),
    ("tag=" + "t" * 37 + ",path={share}", "tag must be 1-36"),
    ("tag=a/b,path={share}", "tag must be 1-36"),
    ("path={share}", "expected tag=NAME,path=DIR[,ro]"),
    ("tag=x", "expected tag=NAME,path=DIR[,ro]"),
    ("tag=x,path={share},rw", "unknown or repeated option \"rw\""),
])
def test_bad_fs_flag(share, tmp_path, spec, msg):
    subst = {"missing": str(tmp_path / "missing"), "file": str(share / "hello.txt"),
             "share": str(share)}
    spec, msg = spec.format(**subst), msg.format(**subst)
    r = mb("pass", "--fs", spec)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and msg in lines[0], r.stderr
    assert "multiboot guest" not in r.stdout


def test_duplicate_tag(share):
    r = mb("pass", "--fs", f"tag=x,path={share}", "--fs", f"tag=x,path={share},ro")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "tag x already used" in lines[0], r.stderr


@pytest.mark.parametrize("conf,msg", [
    ({"fs": "tag=x,path=/"}, "fs: expected an array of strings"),
    ({"fs": [5]}, "fs[0]: expected a string"),
    ({"fs": ["tag=x,path=/nonexistent-kapsel-share"]}, "fs[0]: --fs tag=x,path="),
])
def test_bad_fs_in_vm_json(tmp_path, conf, msg):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, **conf}))
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and msg in lines[0], r.stderr


def test_guest_writes_share(share, tmp_path):
    """write=1: a file reopened for writing, one created, and every other kind of request a
    driver sends (fsync, setattr, mkdir, rename, link, unlink, symlink, mknod, access, statfs,
    readdir, rmdir) succeed and land in the share, and nowhere else."""
    r = mb("virtiofs transport=mmio write=1", "--transport", "mmio", "--fs",
           f"tag=share0,path={share}", timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    got = guest_lines(r.stdout)
    want = {"open rw": "0", "write": "5", "create": "0", "write new": "21", "readdir": "1"}
    want.update({k: "0" for k in ("fsync", "setattr", "mkdir", "rename", "link", "unlink",
                                  "symlink", "mknod", "access", "statfs", "opendir",
                                  "mkdir gone", "rmdir")})
    assert {k: got.get(k) for k in want} == want, r.stdout
    assert (share / "hello.txt").read_text() == "HELLO from the host share\n"
    assert (share / "dir" / "moved.txt").read_text() == "written"
    assert sorted(os.listdir(share / "dir")) == ["fifo", "moved.txt", "sym"]
    assert sorted(os.listdir(tmp_path)) == ["outside", "share"]
