"""`kapsel run` of an image made for another platform: refused before anything is created,
naming both platforms (podman would start it and fail in exec with "exec format error"),
unless binfmt_misc has a handler for it (then a warning, as podman gives)."""
import os

import pytest

import clients
from registry import Layout

BUSYBOX = "/bin/busybox"


def layout_with(tmp_path, arch, os_="linux"):
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static (/bin/busybox)")
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    lay = Layout(tmp_path / "layout")
    desc, _ = lay.image([[("dir", "bin", 0o755), ("file", "bin/true", bb, 0o755)]],
                        arch=arch, os_=os_, config={"Cmd": ["/bin/true"]})
    lay.tag("img", desc)
    return lay.path


def run(kapsel, tmp_path, *args):
    return clients.run([kapsel, "--store", str(tmp_path / "store"), "--root",
                        str(tmp_path / "state")] + list(args), timeout=60)


def test_same_platform_runs(kapsel, tmp_path):
    path = layout_with(tmp_path, "amd64")
    assert run(kapsel, tmp_path, "load", "-i", path).returncode == 0
    r = run(kapsel, tmp_path, "run", "--rm", "localhost/layout:img")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("arch,os_,msg", [
    ("riscv64", "linux", "image localhost/layout:img is for linux/riscv64; this machine runs linux/amd64 (no "
                         "binfmt_misc handler /proc/sys/fs/binfmt_misc/qemu-riscv64)"),
    ("amd64", "windows", "image localhost/layout:img is for windows/amd64; this machine runs linux/amd64"),
])
def test_other_platform_refused(kapsel, tmp_path, arch, os_, msg):
    handler = "/proc/sys/fs/binfmt_misc/qemu-riscv64"
    if os_ == "linux" and os.path.exists(handler):
        pytest.skip(f"{handler} exists: this machine runs riscv64 images through qemu-user")
    path = layout_with(tmp_path, arch, os_)
    assert run(kapsel, tmp_path, "load", "-i", path).returncode == 0
    state = tmp_path / "state"
    r = run(kapsel, tmp_path, "run", "--rm", "--name", "x", "localhost/layout:img")
    assert r.returncode == 125, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"kapsel: {msg}"]
    # nothing made: no container directory, no runtime state
    cdir = tmp_path / "store" / "containers"
    assert not cdir.exists() or os.listdir(cdir) == []
    assert not state.exists() or os.listdir(state) == []
