"""The OCI runtime's VM handler: a bundle with the annotation run.oci.handler=vm runs in a
micro-VM under the runc commands (docs/vm.md, "The OCI runtime's VM handler"): create boots
the VM and holds the process, start runs it, state/kill/exec/delete work as for a container;
podman (--annotation) and containerd (ctr run --annotation) drive it.

The refusals (an unknown handler, no guest kernel, a terminal without a console socket) run
everywhere; a kernel that dies at once needs /dev/kvm but not its speed; the Linux-guest
tests need KVM at hardware speed and skip elsewhere with the measured rate, like
test_run_vm.py: scripts/vm-tests.sh --nested tests/integration/test_oci_vm.py runs them."""
import array
import json
import os
import select
import socket
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

import clients
from conftest import KAPSEL
from test_run_vm import BOOT_TIMEOUT, guest_kernel
from test_vm_linux import need_linux_speed

pytestmark = [pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_kvm = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")


def bundle(path, args, handler="vm", terminal=False):
    subprocess.run([os.path.join(REPO, "scripts", "mkbundle.sh"), str(path), *args],
                   check=True, capture_output=True)
    cfg_path = os.path.join(str(path), "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if handler is not None:
        cfg.setdefault("annotations", {})["run.oci.handler"] = handler
    cfg["process"]["terminal"] = terminal
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    return str(path)


class Runtime:
    """kapsel's runc commands on a private --root; stdio in files (the monitor inherits the
    create's stdio and keeps it: a pipe would never reach EOF)."""

    def __init__(self, root, env=None):
        self.root, self.env = root, env or dict(os.environ)

    def __call__(self, *args, timeout=900, stdout=None, stderr=None, input=None):
        if stdout is not None:
            p = subprocess.run([KAPSEL, "--root", self.root, *[str(a) for a in args]],
                               stdout=stdout, stderr=stderr or stdout, env=self.env,
                               stdin=subprocess.DEVNULL, timeout=timeout)
            return p
        return clients.run([KAPSEL, "--root", self.root, *args], timeout=timeout,
                           env=self.env, input=input)

    def state(self, cid):
        r = self("state", cid, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def cid():
    return "kv-" + uuid.uuid4().hex[:10]


@pytest.fixture
def rt(tmp_path):
    root = str(tmp_path / "state")
    r = Runtime(root)
    yield r
    if os.path.isdir(root):
        for c in os.listdir(root):
            r("delete", "--force", c, timeout=60)


def one_line(r):
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def cgroup_of(cid):
    return [p for p in (f"/sys/fs/cgroup/kapsel/{cid}",) if os.path.exists(p)]


def nothing_left(rt, cid):
    left = []
    if os.path.lexists(os.path.join(rt.root, cid)):
        left.append("state directory")
    left += cgroup_of(cid)
    r = subprocess.run(["pgrep", "-f", "--", f"--root {rt.root}"], capture_output=True, text=True)
    left += [f"process {p}" for p in r.stdout.split()]
    return left


# ---- refused before anything exists: everywhere ----

def test_unknown_handler_one_line(rt, cid, tmp_path):
    b = bundle(tmp_path / "b", ["true"], handler="krun")
    r = rt("create", "-b", b, cid, timeout=60)
    line = one_line(r)
    assert "run.oci.handler=krun" in line and "no such handler" in line, line
    assert nothing_left(rt, cid) == []


def test_no_guest_kernel_one_line(rt, cid, tmp_path):
    b = bundle(tmp_path / "b", ["true"])
    rt.env = {**os.environ, "KAPSEL_VM_KERNEL_DIR": str(tmp_path / "none")}
    rt.env.pop("KAPSEL_VM_KERNEL", None)
    r = rt("create", "-b", b, cid, timeout=60)
    line = one_line(r)
    assert "no guest kernel" in line and str(tmp_path / "none") in line, line
    assert nothing_left(rt, cid) == []


def test_terminal_needs_console_socket(rt, cid, tmp_path):
    b = bundle(tmp_path / "b", ["sh"], terminal=True)
    r = rt("create", "-b", b, cid, timeout=60)
    line = one_line(r)
    assert "process.terminal" in line and "--console-socket" in line, line
    assert nothing_left(rt, cid) == []


def test_without_annotation_stays_a_container(rt, cid, tmp_path, cgroupfs):
    """No annotation: the ordinary container engine (the host's kernel)."""
    b = bundle(tmp_path / "b", ["uname", "-r"], handler=None)
    r = rt("run", "-b", b, cid, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.uname().release


@needs_kvm
def test_vm_that_dies_leaves_nothing(rt, cid, tmp_path):
    """A bzImage of garbage: the VM ends before its agent connects; create says so in one
    line and leaves no state, no cgroup, no monitor or VMM."""
    img = bytearray(0x10000)
    img[0x1f1] = 1
    img[0x1fe:0x200] = b"\x55\xaa"
    img[0x202:0x206] = b"HdrS"
    img[0x206:0x208] = (0x020f).to_bytes(2, "little")
    img[0x20e:0x210] = (0x100).to_bytes(2, "little")
    img[0x211] = 0x01
    img[0x300:0x310] = b"6.6.6-garbage\0\0\0"
    img[0x400:0x8000] = b"\xff" * (0x8000 - 0x400)
    kern = tmp_path / "vmlinuz-garbage"
    kern.write_bytes(bytes(img))
    b = bundle(tmp_path / "b", ["true"])
    rt.env = {**os.environ, "KAPSEL_VM_KERNEL": str(kern), "KAPSEL_VM_BOOT_TIMEOUT": "20"}
    with open(tmp_path / "out", "w+") as out:
        r = rt("create", "-b", b, "--pid-file", tmp_path / "pid", cid, stdout=out, timeout=120)
        out.seek(0)
        text = out.read()
    assert r.returncode != 0, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and f"create {cid}" in lines[0] and "VM ended" in lines[0], text
    assert not os.path.exists(tmp_path / "pid")
    assert nothing_left(rt, cid) == []


# ---- Linux guests: in the nested runner ----

@pytest.fixture
def vm_env():
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    need_linux_speed()
    kern = guest_kernel()
    return {**os.environ, "KAPSEL_VM_KERNEL": kern, "KAPSEL_VM_BOOT_TIMEOUT": BOOT_TIMEOUT}


def wait_gone(pid, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
            return True
        time.sleep(0.2)
    return False


def wait_for(path, text, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(path) as f:
            if text in f.read():
                return True
        time.sleep(0.2)
    return False


def test_create_start_state_exec_kill_delete(rt, cid, tmp_path, vm_env):
    rt.env = vm_env
    version = os.path.basename(vm_env["KAPSEL_VM_KERNEL"])[len("vmlinuz-"):]
    b = bundle(tmp_path / "b", ["sh", "-c", "echo started $(uname -r); "
                                "trap 'echo got-term; exit 7' TERM; "
                                "while :; do sleep 1; done"])
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        r = rt("create", "-b", b, "--pid-file", tmp_path / "pid", cid, stdout=out)
    assert r.returncode == 0, out_path.read_text()
    st = rt.state(cid)
    pid = int((tmp_path / "pid").read_text())
    assert st["status"] == "created" and st["pid"] == pid, st
    assert st["annotations"]["run.oci.handler"] == "vm"
    assert "started" not in out_path.read_text()     # held until start

    r = rt("start", cid, timeout=60)
    assert r.returncode == 0, r.stderr
    assert rt.state(cid)["status"] == "running"
    assert wait_for(out_path, f"started {version}"), out_path.read_text()

    # exec with a command: its output, its status, the guest's kernel, PID 1 the agent
    r = rt("exec", cid, "sh", "-c", "echo in-exec $(uname -r) $(cat /proc/1/comm); exit 5")
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() == f"in-exec {version} init", r.stdout

    # exec --process --detach --pid-file, as conmon and the containerd shim call it
    proc = {"args": ["sh", "-c", "echo from-process $FOO $(id -u); exit 3"],
            "env": ["PATH=/bin", "FOO=bar"], "cwd": "/tmp", "user": {"uid": 65534, "gid": 65534},
            "terminal": False}
    (tmp_path / "process.json").write_text(json.dumps(proc))
    with open(tmp_path / "exec-out", "w") as eo:
        r = rt("exec", "--process", tmp_path / "process.json", "--detach", "--pid-file",
               tmp_path / "exec-pid", cid, stdout=eo)
    assert r.returncode == 0, (tmp_path / "exec-out").read_text()
    assert wait_gone(int((tmp_path / "exec-pid").read_text()))
    assert (tmp_path / "exec-out").read_text() == "from-process bar 65534\n"

    # kill: the signal reaches the process inside, whose exit ends the monitor
    r = rt("kill", cid, "TERM", timeout=60)
    assert r.returncode == 0, r.stderr
    assert wait_gone(pid), "the monitor outlived its process"
    assert "got-term" in out_path.read_text()
    assert rt.state(cid)["status"] == "stopped"
    r = rt("exec", cid, "true", timeout=60)
    assert r.returncode != 0 and "stopped" in r.stderr, r.stderr

    r = rt("delete", cid, timeout=60)
    assert r.returncode == 0, r.stderr
    assert nothing_left(rt, cid) == []


def test_run_exit_status_and_delete_force(rt, cid, tmp_path, vm_env):
    """runc run: the process's status is ours; delete --force of a created VM container ends
    its monitor and VMM."""
    rt.env = vm_env
    b = bundle(tmp_path / "b", ["sh", "-c", "echo out; echo err >&2; exit 42"])
    r = rt("run", "-b", b, cid)
    assert r.returncode == 42, r.stderr
    assert r.stdout == "out\n" and "err" in r.stderr, (r.stdout, r.stderr)
    assert nothing_left(rt, cid) == []

    with open(tmp_path / "out", "w") as out:
        r = rt("create", "-b", b, "--pid-file", tmp_path / "pid", cid, stdout=out)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    r = rt("delete", "--force", cid, timeout=60)
    assert r.returncode == 0, r.stderr
    assert wait_gone(int((tmp_path / "pid").read_text()), 30)
    assert nothing_left(rt, cid) == []


def console_server(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    return srv


def receive_master(srv):
    """The pty master a --console-socket receives (SCM_RIGHTS, as runc sends it)."""
    srv.settimeout(900)
    conn, _ = srv.accept()
    fds = array.array("i")
    _, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(4))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:4])
    conn.close()
    assert len(fds) == 1, anc
    return fds[0]


def read_until(fd, want, timeout=300):
    buf, end = b"", time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_terminal_console_socket_and_exec_tty(rt, cid, tmp_path, vm_env):
    """process.terminal: the master goes to --console-socket; the process sees a pty in the
    guest, reads what is typed on the master; an exec with terminal:true gets a master of its
    own through exec's --console-socket (detached, as conmon and the shim call it)."""
    rt.env = vm_env
    b = bundle(tmp_path / "b", ["sh", "-c", "tty; read x; echo got-$x; sleep 1000"],
               terminal=True)
    srv = console_server(tmp_path / "c.sock")
    with open(tmp_path / "out", "w") as out:
        p = subprocess.Popen([KAPSEL, "--root", rt.root, "create", "--console-socket",
                              str(tmp_path / "c.sock"), "-b", b, cid], stdout=out, stderr=out,
                             stdin=subprocess.DEVNULL, env=vm_env)
        master = receive_master(srv)
        assert p.wait(timeout=900) == 0, (tmp_path / "out").read_text()
    r = rt("start", cid, timeout=60)
    assert r.returncode == 0, r.stderr
    got = read_until(master, b"/dev/pts/")
    assert b"/dev/pts/" in got, got
    os.write(master, b"hello\n")
    got += read_until(master, b"got-hello")
    assert b"got-hello" in got, got

    proc = {"args": ["sh", "-c", "tty; echo exec-tty-ok"], "env": ["PATH=/bin"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "terminal": True}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    srv2 = console_server(tmp_path / "e.sock")
    with open(tmp_path / "exec-out", "w") as eo:
        e = subprocess.Popen([KAPSEL, "--root", rt.root, "exec", "--process",
                              str(tmp_path / "p.json"), "--detach", "--pid-file",
                              str(tmp_path / "exec-pid"), "--console-socket",
                              str(tmp_path / "e.sock"), cid], stdout=eo, stderr=eo,
                             stdin=subprocess.DEVNULL, env=vm_env)
        m2 = receive_master(srv2)
        assert e.wait(timeout=300) == 0, (tmp_path / "exec-out").read_text()
    got2 = read_until(m2, b"exec-tty-ok")
    assert b"/dev/pts/" in got2 and b"exec-tty-ok" in got2, got2
    assert wait_gone(int((tmp_path / "exec-pid").read_text()), 60)

    r = rt("delete", "--force", cid, timeout=60)
    assert r.returncode == 0, r.stderr
    assert nothing_left(rt, cid) == []
    os.close(master)
    os.close(m2)


# ---- podman and containerd ----

@pytest.fixture
def podman(tmp_path, vm_env, cgroupfs):
    clients.require("podman", "conmon")
    # conmon gives the runtime podman's conmon_env_vars only: a wrapper names the kernel.
    wrap = tmp_path / "bin" / "kapsel"
    wrap.parent.mkdir()
    wrap.write_text(f"#!/bin/sh\nexport KAPSEL_VM_KERNEL={vm_env['KAPSEL_VM_KERNEL']}\n"
                    f"export KAPSEL_VM_BOOT_TIMEOUT={BOOT_TIMEOUT}\nexec {KAPSEL} \"$@\"\n")
    wrap.chmod(0o755)
    # podman refuses a runroot path longer than 50 characters: not under tmp_path.
    base = tempfile.mkdtemp(prefix="kpv-", dir="/tmp")
    pm = clients.Podman(base, str(wrap))
    try:
        pm.import_image(str(tmp_path / "image"))
        yield pm
    finally:
        pm.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_podman_run_echo_exit_code_exec_stop(podman):
    a = ["--annotation", "run.oci.handler=vm"]
    r = podman("run", "--rm", *a, clients.IMAGE, "sh", "-c", "echo hi $(cat /proc/1/comm); exit 3",
               timeout=900)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hi init\n", r.stdout

    n = "kv-" + uuid.uuid4().hex[:8]
    r = podman("run", "-d", "--name", n, *a, clients.IMAGE, "sh", "-c",
               "trap 'exit 0' TERM; while :; do sleep 1; done", timeout=900)
    assert r.returncode == 0, r.stderr
    r = podman("exec", n, "sh", "-c", "echo in-vm $(cat /proc/1/comm); exit 5", timeout=300)
    assert (r.returncode, r.stdout) == (5, "in-vm init\n"), r.stderr
    r = podman("stop", "--time", "60", n, timeout=300)
    assert r.returncode == 0, r.stderr
    r = podman("inspect", "--format", "{{.State.ExitCode}}", n, check=True)
    assert r.stdout.strip() == "0", r.stdout
    podman("rm", n, check=True)


def test_ctr_run(tmp_path, vm_env, cgroupfs):
    clients.require("containerd", "ctr", "containerd-shim-runc-v2")
    cd = clients.Containerd(str(tmp_path / "daemon")).start()
    try:
        archive = clients.oci_archive(str(tmp_path / "image"))
        cd.ctr("images", "import", archive, check=True)
        wrap = tmp_path / "kapsel-vm"
        wrap.write_text(f"#!/bin/sh\nexport KAPSEL_VM_KERNEL={vm_env['KAPSEL_VM_KERNEL']}\n"
                        f"export KAPSEL_VM_BOOT_TIMEOUT={BOOT_TIMEOUT}\n"
                        f"exec {KAPSEL} \"$@\"\n")
        wrap.chmod(0o755)
        c = "kv-" + uuid.uuid4().hex[:8]
        r = cd.ctr("run", "--rm", "--runc-binary", str(wrap), "--runc-root",
                   str(tmp_path / "runc"), "--annotation", "run.oci.handler=vm",
                   clients.IMAGE, c, "sh", "-c", "echo ctr $(cat /proc/1/comm); exit 6",
                   timeout=900)
        assert r.returncode == 6, r.stderr
        assert r.stdout == "ctr init\n", r.stdout
    finally:
        cd.stop()
        shutil.rmtree(str(tmp_path / "daemon"), ignore_errors=True)
