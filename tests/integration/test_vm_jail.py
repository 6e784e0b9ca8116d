"""The jailer (docs/vm.md, Jailer): `kapsel vm run --jail` runs the VMM in its own mount, pid,
net, ipc, uts, cgroup and user namespaces, in an empty read-only root, as an unprivileged uid
without capabilities, in a cgroup of its own, each thread under its own seccomp filter.

The freestanding guests run jailed (serial output, virtio devices, the control API), and the
jail is checked from outside through /proc. KAPSEL_JAIL_SELFTEST=open makes vCPU 0 call open()
after its filter is installed: the VMM must die with one line naming the thread and the syscall.
Nothing here changes the host: the "user namespaces not allowed" case lowers
user.max_user_namespaces only inside a throwaway user namespace."""
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import KAPSEL
from test_vm import MULTIBOOT, PASS, mb, guests  # noqa: F401  (guests: module fixture)
from test_vm_net import netns, tap  # noqa: F401  (fixtures: a scratch netns with ktap0)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
    pytest.mark.skipif(os.geteuid() != 0, reason="--jail needs root"),
]

DEFAULT_ID = 65534


@pytest.fixture
def disk(tmp_path):
    p = tmp_path / "disk.img"
    data = bytearray(1 << 20)
    data[0:11] = b"KAPSEL-DISK"
    p.write_bytes(bytes(data))
    return p


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


@pytest.mark.parametrize("test,args", [
    ("pass", []),
    ("blk mode=rw serial=jail", ["--transport", "mmio", "--disk", "{disk},serial=jail"]),
    ("rng", ["--transport", "mmio", "--disk", "{disk}", "--rng"]),
    ("pci-blk mode=rw irq=msix", ["--disk", "{disk}"]),
])
def test_guests_run_jailed(disk, test, args):
    r = mb(test, "--jail", *[a.format(disk=disk) for a in args])
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "seccomp" not in r.stderr, r.stderr
    if test.startswith("blk"):
        assert "blk ok" in r.stdout
        assert disk.read_bytes()[512:1024] != bytes(512), "the guest's writes did not land"


def test_qcow2_disk_grows_jailed(tmp_path):
    """A qcow2 image allocates clusters as the guest writes: the file grows (ftruncate) on
    the device thread, inside its filter."""
    img = tmp_path / "d.qcow2"
    r = subprocess.run([KAPSEL, "vm", "disk", "create", str(img), "1M"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    before = img.stat().st_size
    r = mb("blk mode=rw", "--jail", "--transport", "mmio", "--disk", f"{img},format=qcow2")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk ok" in r.stdout
    assert img.stat().st_size > before


def test_tap_works_from_its_own_net_namespace(tap):
    """The tap is opened before the jail closes; the jailed VMM's own (empty) net namespace
    does not stop the guest from reaching the host through it. nsenter rather than `ip netns
    exec`, which mounts a /sys without the cgroup hierarchies the jail needs."""
    r = subprocess.run(["nsenter", f"--net=/run/netns/{tap}", KAPSEL, "vm", "run", "--jail",
                        "--kernel", MULTIBOOT, "--transport", "mmio", "--cmdline",
                        "test=net ip=10.0.2.15 host=10.0.2.1", "--net",
                        "tap=ktap0,mac=52:54:00:12:34:56"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "net: echo reply from 10.0.2.1" in r.stdout


def test_no_cgroupfs_refused(netns):
    """`ip netns exec` mounts a /sys without cgroup hierarchies: no cgroup, no jail."""
    r = subprocess.run(["ip", "netns", "exec", netns, KAPSEL, "vm", "run", "--jail",
                        "--kernel", MULTIBOOT, "--cmdline", "test=pass"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "jail: no cgroup hierarchy at /sys/fs/cgroup" in r.stderr, r.stderr
    assert "multiboot guest" not in r.stdout, "the guest ran unjailed"


def test_virtio_console_jailed():
    r = subprocess.run([KAPSEL, "vm", "run", "--jail", "--kernel", MULTIBOOT, "--transport",
                        "mmio", "--cmdline", "test=vcon", "--virtio-console"],
                       input="hello\nquit\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "hvc: hello\n" in r.stdout


def test_vsock_both_directions_jailed(tmp_path):
    """The vsock socket is bound before the jail closes; the guest's own connection is a
    connect() by path from inside the jail, to a listener the jail's uid may use."""
    os.chmod(tmp_path, 0o755)
    path = str(tmp_path / "v.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + "_5000")
    os.chmod(path + "_5000", 0o777)
    listener.listen(1)
    listener.settimeout(30)
    p = subprocess.Popen([KAPSEL, "vm", "run", "--jail", "--kernel", MULTIBOOT, "--transport",
                          "mmio", "--cmdline", "test=vsock cid=7", "--vsock",
                          f"cid=7,socket={path}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(path) or p.poll() is not None, what="vsock socket")
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            try:
                s.connect(path)
            except OSError as e:  # the VMM is gone: say why it went, not just ENOENT
                p.kill()
                out, err = p.communicate(timeout=60)
                raise AssertionError(f"connect {path}: {e}; kapsel exited {p.returncode}: "
                                     f"{out}{err}")
            s.sendall(b"CONNECT 1234\n")
            f = s.makefile("rb")
            try:
                ok = f.readline()
            except ConnectionResetError:
                ok = b""
            if ok or time.monotonic() > deadline or p.poll() is not None:
                break
            f.close()
            s.close()
            time.sleep(0.1)
        assert ok.startswith(b"OK "), ok
        s.sendall(b"ping\n")
        assert f.readline() == b"pong: ping\n"
        f.close()
        s.close()
        c, _ = listener.accept()
        c.settimeout(30)
        assert c.recv(100) == b"hello from the guest\n"
        c.sendall(b"hello from the host\n")
        assert c.recv(100) == b""
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == PASS, out + err
    assert "vsock: host says hello from the host" in out
    assert not os.path.exists(path), "the vsock socket outlived the VM"


def test_jail_seen_from_outside(tmp_path):
    root = tmp_path / "root"
    console = tmp_path / "console.txt"
    # An fd kapsel inherits is not the VMM's: the jail must not keep it.
    secret = tmp_path / "inherited-secret"
    secret.write_text("x")
    fd = os.open(secret, os.O_RDONLY)
    p = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "run", "--name", "j", "--jail",
                          "--jail-uid", "4242", "--jail-gid", "4343", "--kernel", MULTIBOOT,
                          "--cmdline", "test=count", "--cpus", "2", "--console",
                          f"file:{console}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         pass_fds=(fd,))
    os.close(fd)
    vmdir = root / "vm" / "j"
    cgroups = []
    try:
        wait_for(lambda: (vmdir / "state.json").exists() or p.poll() is not None,
                 what="state.json")
        assert p.poll() is None, p.communicate()
        pid = json.loads((vmdir / "state.json").read_text())["pid"]
        assert pid != p.pid, "the VMM is the jailed child, not the process started"
        # Every thread has started (two vCPUs, the API thread, the event loop).
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/task")) >= 4, what="threads")
        wait_for(lambda: "count" in console.read_text(), what="guest output")

        def all_filtered():
            # The event loop's thread installs its filter last, after the vCPUs started
            # (the guest may print before that).
            for tid in os.listdir(f"/proc/{pid}/task"):
                t = f"/proc/{pid}/task/{tid}"
                if (not open(f"{t}/comm").read().startswith("kvm-") and
                        status_fields(f"{t}/status")["Seccomp"] != ["2"]):
                    return False
            return True
        wait_for(all_filtered, what="every thread's seccomp filter")
        for tid in os.listdir(f"/proc/{pid}/task"):
            t = f"/proc/{pid}/task/{tid}"
            comm = open(f"{t}/comm").read().strip()
            if comm.startswith("kvm-"):
                continue  # KVM's own kernel workers attached to the VM's process
            st = status_fields(f"{t}/status")
            assert st["CapEff"] == ["0000000000000000"], (comm, st["CapEff"])
            assert st["CapPrm"] == ["0000000000000000"], (comm, st["CapPrm"])
            assert st["CapBnd"] == ["0000000000000000"], (comm, st["CapBnd"])
            assert st["NoNewPrivs"] == ["1"], comm
            assert st["Seccomp"] == ["2"], comm
            assert st["Uid"] == ["4242"] * 4, (comm, st["Uid"])
            assert st["Gid"] == ["4343"] * 4, (comm, st["Gid"])
            assert st["Groups"] == [], (comm, st["Groups"])
        for ns in ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
        links = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        assert str(secret) not in links, links
        # Its root is an empty tmpfs: none of the host's files.
        assert os.listdir(f"/proc/{pid}/root") == []
        assert not os.path.exists(f"/proc/{pid}/root/etc")
        # A cgroup of its own, in every hierarchy it joined (v2, or v1 cpu and memory).
        for line in open(f"/proc/{pid}/cgroup"):
            _, ctrl, path = line.strip().split(":", 2)
            if path.startswith("/kapsel/vm-"):
                base = "/sys/fs/cgroup" if ctrl == "" else f"/sys/fs/cgroup/{ctrl.split(',')[0]}"
                cgroups.append(base + path)
        assert cgroups, open(f"/proc/{pid}/cgroup").read()
        for d in cgroups:
            assert os.path.isdir(d), d
        # The control API through the jail.
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "pause", "j"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "inspect", "j"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "Paused", r.stdout
        assert json.loads(r.stdout)["pid"] == pid
        # A snapshot names host paths the jail cannot reach: refused, and the VM lives on.
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "snapshot", "j", "--mem",
                            str(tmp_path / "mem"), "--state", str(tmp_path / "state")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "memory file" in r.stderr, r.stderr
        assert not (tmp_path / "mem").exists() and p.poll() is None
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "resume", "j"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "stop", "--timeout", "0", "j"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "seccomp" not in err, err
    for d in cgroups:
        assert not os.path.exists(d), f"cgroup {d} outlived the VM"
    assert not vmdir.exists(), "the VM's directory outlived the VM"


def test_api_sock_jailed(tmp_path, accel=()):
    """--api-sock without --name: the API thread's first JSON is made inside the jail."""
    sock = str(tmp_path / "my.sock")
    p = subprocess.Popen([KAPSEL, "vm", "run", "--jail", "--api-sock", sock, "--kernel",
                          MULTIBOOT, "--cmdline", "test=count", "--console", "none", *accel],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(sock) or p.poll() is not None, what="the socket")
        for req, want in ((b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                           b"HTTP/1.1 200"),
                          (b"PUT /actions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"Content-Length: 23\r\n\r\n{\"action_type\": \"Stop\"}",
                           b"HTTP/1.1 204")):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(sock)
            s.sendall(req)
            assert s.recv(4096).startswith(want)
            s.close()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert not os.path.exists(sock), "the API socket outlived the VM"


def test_caller_killed_takes_the_vmm(tmp_path):
    """SIGKILL of the process started leaves no jailed VMM running (PR_SET_PDEATHSIG,
    set again after the id change clears it), and the next jailed run removes its cgroup."""
    root = tmp_path / "root"
    p = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "run", "--name", "k", "--jail",
                          "--kernel", MULTIBOOT, "--cmdline", "test=count", "--console", "none"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = root / "vm" / "k" / "state.json"
    try:
        wait_for(lambda: state.exists() or p.poll() is not None, what="state.json")
        pid = json.loads(state.read_text())["pid"]
        cgroups = [l.strip().split(":", 2)[2] for l in open(f"/proc/{pid}/cgroup")
                   if ":/kapsel/vm-" in l]
        assert cgroups
    finally:
        p.kill()
        p.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10,
             what="the VMM to die with its caller")
    r = mb("pass", "--jail")
    assert r.returncode == PASS, r.stderr
    assert not os.path.exists(f"/sys/fs/cgroup/memory/kapsel/vm-{pid}")
    assert not os.path.exists(f"/sys/fs/cgroup/kapsel/vm-{pid}")


def test_forbidden_syscall_kills_with_one_line(accel=()):
    env = dict(os.environ, KAPSEL_JAIL_SELFTEST="open")
    r = subprocess.run([KAPSEL, "vm", "run", "--jail", "--kernel", MULTIBOOT, "--cmdline",
                        "test=count", "--console", "none", *accel],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and r.returncode != PASS
    lines = [l for l in r.stderr.splitlines() if "seccomp" in l]
    assert len(lines) == 1, r.stderr
    assert ("the vcpu0 thread called open (syscall 2), which its seccomp filter does not "
            "allow: the VMM was killed") in lines[0], r.stderr
    leftover = [d for d in os.listdir("/sys/fs/cgroup/memory/kapsel")
                if d.startswith("vm-")] if os.path.isdir("/sys/fs/cgroup/memory/kapsel") else []
    for d in leftover:
        # Another VM's of a concurrent test may exist; ours (dead) must not.
        assert os.path.exists(f"/proc/{d[3:]}"), f"cgroup {d} of a dead VMM left behind"


def test_jail_from_vm_json(tmp_path):
    """vm.json's "jail" runs the VMM jailed too (the self-test's kill shows it)."""
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "cmdline": "test=count", "jail": True,
                               "jail_uid": 4242, "jail_gid": 4242, "console": "none"}))
    env = dict(os.environ, KAPSEL_JAIL_SELFTEST="open")
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stderr
    assert "the vcpu0 thread called open (syscall 2)" in r.stderr, r.stderr


@pytest.mark.parametrize("conf,msg", [
    ({"jail": True, "jail_uid": 0}, "jail_uid: expected a host id from 1 to 4294967294"),
    ({"jail": True, "jail_gid": -1}, "jail_gid"),
    ({"jail_uid": 1000}, "jail_uid: needs \"jail\": true"),
    ({"jail": "yes"}, "jail"),
])
def test_bad_jail_in_vm_json(tmp_path, conf, msg):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps(dict({"kernel": MULTIBOOT, "cmdline": "test=pass"}, **conf)))
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert msg in r.stderr and "multiboot guest" not in r.stdout, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_selftest_without_jail_does_nothing():
    env = dict(os.environ, KAPSEL_JAIL_SELFTEST="open")
    r = subprocess.run([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--cmdline", "test=pass"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == PASS, r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--jail", "--jail-uid", "abc"],
     "--jail-uid abc: expected a numeric host id from 1 to 4294967294"),
    (["--jail", "--jail-uid", "0"], "--jail-uid 0: expected a numeric host id"),
    (["--jail", "--jail-gid", "-5"], "--jail-gid -5: expected a numeric host id"),
    (["--jail", "--jail-uid", "4294967295"], "--jail-uid 4294967295: expected"),
    (["--jail-uid", "1000"], "--jail-uid and --jail-gid need --jail"),
])
def test_bad_jail_options(args, msg):
    r = mb("pass", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- virtio-fs in the jail ----

def fs_share(tmp_path, owner=DEFAULT_ID):
    """A share the jail's uid owns (the jailed VMM acts on it as that uid), with hello.txt and
    the symlink etc -> /etc; a file beside it that nothing may reach."""
    d = tmp_path / "share"
    d.mkdir()
    (d / "hello.txt").write_text("hello from the host share\n")
    os.symlink("/etc", d / "etc")
    for p in (d, d / "hello.txt"):
        os.chown(p, owner, owner)
    (tmp_path / "outside").write_text("secret")
    return d


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_virtiofs_read_write_jailed(tmp_path, transport):
    """The guest reads the share, reopens a file for writing (through the jail's own procfs),
    writes it, creates one; its hostile requests get the same errors as unjailed, and nothing
    outside the share changes."""
    from test_vm_virtiofs import guest_lines
    share = fs_share(tmp_path)
    r = mb(f"virtiofs transport={transport} write=1", "--jail", "--transport", transport,
           "--fs", f"tag=share0,path={share}", timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "seccomp" not in r.stderr, r.stderr
    assert "virtiofs: read: hello from the host share" in r.stdout, r.stdout
    got = guest_lines(r.stdout)
    want = {"open rw": "0", "write": "5", "create": "0", "write new": "21"}
    # Every other kind of request a driver sends: each syscall it needs is in the virtio-fs
    # thread's table (a missing one would have killed the VMM).
    want.update({k: "0" for k in ("fsync", "setattr", "mkdir", "rename", "link", "unlink",
                                  "symlink", "mknod", "access", "statfs", "opendir",
                                  "mkdir gone", "rmdir")})
    want["readdir"] = "1"
    assert {k: got.get(k) for k in want} == want, r.stdout
    assert (share / "hello.txt").read_text() == "HELLO from the host share\n"
    moved = share / "dir" / "moved.txt"
    assert moved.read_text() == "written" and moved.stat().st_mode & 0o777 == 0o600
    assert os.readlink(share / "dir" / "sym") == "moved.txt"
    assert stat.S_ISFIFO(os.lstat(share / "dir" / "fifo").st_mode)
    assert sorted(os.listdir(share)) == ["dir", "etc", "hello.txt"]
    assert sorted(os.listdir(share / "dir")) == ["fifo", "moved.txt", "sym"]
    # Made by the jailed VMM: the jail's uid on the host.
    assert moved.stat().st_uid == DEFAULT_ID
    for what, e in [("lookup ..", errno.EINVAL), ("lookup ../etc", errno.EINVAL),
                    ("lookup /etc/passwd", errno.EINVAL), ("lookup etc/passwd", errno.ENOTDIR),
                    ("open etc", errno.ELOOP), ("getattr unknown node", errno.ESTALE)]:
        assert got[what] == f"-{e}", (what, r.stdout)
    assert sorted(os.listdir(tmp_path)) == ["outside", "share"]
    assert (tmp_path / "outside").read_text() == "secret"


def test_virtiofs_jailed_uid_cannot_write_a_root_file(tmp_path):
    """The jail adds no right: a file only root may write stays unwritten (EACCES), as the
    jail's uid would find it on the host."""
    from test_vm_virtiofs import guest_lines
    share = fs_share(tmp_path)
    os.chown(share / "hello.txt", 0, 0)
    os.chmod(share / "hello.txt", 0o644)
    r = mb("virtiofs transport=mmio write=1", "--jail", "--transport", "mmio",
           "--fs", f"tag=share0,path={share}", timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    got = guest_lines(r.stdout)
    assert got["open rw"] == f"-{errno.EACCES}", r.stdout
    assert (share / "hello.txt").read_text() == "hello from the host share\n"


FS_SCRIPT = """echo KAPSEL-INIT-START
mkdir -p /mnt && mount -t virtiofs share0 /mnt && echo FS-MOUNTED
cat /mnt/hello.txt
ok=1
mkdir /mnt/d || ok=0
echo data > /mnt/d/f || ok=0
mv /mnt/d/f /mnt/d/g || ok=0
chmod 600 /mnt/d/g || ok=0
touch -d 2020-01-01 /mnt/d/g || ok=0
ln /mnt/d/g /mnt/d/h && rm /mnt/d/h || ok=0
ln -s g /mnt/d/s && [ "$(readlink /mnt/d/s)" = g ] || ok=0
mkfifo /mnt/d/p && rm /mnt/d/p || ok=0
[ -r /mnt/d/g ] && [ "$(cat /mnt/d/g)" = data ] || ok=0
printf 'x%.0s' $(seq 1 5000) > /mnt/d/big && truncate -s 3000 /mnt/d/big || ok=0
ls -la /mnt/d > /dev/null && df /mnt > /dev/null || ok=0
mkdir /mnt/e && rmdir /mnt/e || ok=0
sync
[ $ok = 1 ] && echo FS-OK || echo FS-FAILED
poweroff -f
"""


def test_linux_virtiofs_jailed(tmp_path):
    """A Linux guest's virtiofs driver works a share of a jailed VMM through every kind of
    request it makes (mkdir, create, write, rename, chmod, utimes, link, unlink, symlink,
    readlink, mknod of a FIFO, truncate, readdir, statfs, rmdir): the virtio-fs thread's
    seccomp table has each syscall they need (a missing one kills the VMM, naming it)."""
    from test_vm_linux import fetch_kernel, make_initramfs, need_linux_speed
    need_linux_speed()
    share = fs_share(tmp_path)
    initrd = make_initramfs(tmp_path / "initrd.cpio", FS_SCRIPT, ["virtio_pci", "virtiofs"])
    cmd = [KAPSEL, "vm", "run", "--jail", "--kernel", fetch_kernel(), "--initrd", initrd,
           "--mem", "256M", "--cmdline", "console=ttyS0 reboot=k panic=-1 rdinit=/init",
           "--fs", f"tag=share0,path={share}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if "user namespaces are not allowed here" in r.stderr:
        # The nested runner's outer guest (scripts/vm-tests.sh --nested) refuses them.
        pytest.skip(f"--jail cannot start here: {r.stderr.strip()}")
    assert "seccomp filter does not allow" not in r.stderr, r.stderr
    assert "FS-MOUNTED" in r.stdout and "hello from the host share" in r.stdout, r.stdout[-3000:]
    assert "FS-OK" in r.stdout, r.stdout[-3000:]
    assert (share / "d" / "g").read_text() == "data\n"
    assert (share / "d" / "g").stat().st_mode & 0o777 == 0o600
    assert (share / "d" / "big").stat().st_size == 3000
    assert os.readlink(share / "d" / "s") == "g"
    assert sorted(os.listdir(tmp_path)) == ["initrd.cpio", "outside", "share"]


def test_jail_as_non_root_refused():
    r = subprocess.run([KAPSEL, "vm", "run", "--jail", "--kernel", MULTIBOOT, "--cmdline",
                        "test=pass"], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: (os.setgroups([]), os.setgid(DEFAULT_ID),
                                           os.setuid(DEFAULT_ID)))
    assert r.returncode == 1, r.stderr
    assert "--jail: needs root" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_jail_where_user_namespaces_are_not_allowed():
    """user.max_user_namespaces is per user namespace: 0 inside a throwaway one (the host's
    value is untouched) makes kapsel's user namespace impossible there."""
    script = ('echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"')
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh",
                        KAPSEL, "vm", "run", "--jail", "--kernel", MULTIBOOT, "--cmdline",
                        "test=pass"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "--jail: user namespaces are not allowed here" in r.stderr, r.stderr
    assert "multiboot guest" not in r.stdout, "the guest ran unjailed"


# ---- live migration of jailed VMMs ----

@pytest.mark.parametrize("kind,src_jail,dst_jail", [
    ("unix", True, True), ("tcp", True, True), ("unix", True, False), ("unix", False, True)])
def test_migrate_jailed(tmp_path, kind, src_jail, dst_jail):
    """A jailed source reaches no address: `vm migrate` dials the destination and hands the
    connection over with PUT /migrate; a jailed destination takes the stream before its jail
    closes. The count goes on at the destination, the source ends with status 0."""
    from test_vm_migrate import free_port, migrate_ok
    addr = f"unix:{tmp_path}/mig.sock" if kind == "unix" else f"tcp:127.0.0.1:{free_port()}"
    rounds, _ = migrate_ok(tmp_path, addr, src_extra=["--jail"] if src_jail else [],
                           dst_extra=["--jail"] if dst_jail else [])
    assert rounds >= 2


@pytest.mark.parametrize("mode", ["stall", "refuse-end"])
def test_jailed_migration_cancel_and_refusal_leave_the_source_running(tmp_path, mode):
    """The jailed source streams over the connection vm migrate handed it: a cancel (the API
    thread's shutdown wakes its blocked send) or a destination that refuses at the end leave
    the guest counting at the source."""
    from test_vm_migrate import FakeDestination, HELLO, source, still_counting, stop
    from test_vm_migrate import wait_for as wait
    root = tmp_path / "root"
    # 64 MiB of dirty RAM do not fit in the socket's buffer: a send blocks on the stall.
    src, con = (source(root, tmp_path, "dirty dirty_mib=64", "128M", "--jail") if mode == "stall"
                else source(root, tmp_path, "count", "64M", "--jail"))
    fake = FakeDestination(str(tmp_path / "fake.sock"), mode)
    try:
        mig = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "migrate", "src",
                                f"unix:{tmp_path}/fake.sock"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        wait(lambda: HELLO in fake.got, what="the handshake")
        if mode == "stall":
            time.sleep(0.5)
            r = subprocess.run([KAPSEL, "--root", str(root), "vm", "migrate", "--cancel",
                                "src"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        _, err = mig.communicate(timeout=120)
        assert mig.returncode != 0 and len(err.strip().splitlines()) == 1, err
        assert ("cancelled" if mode == "stall"
                else "refused it: the fake destination says no") in err, err
        still_counting(src, con)
    finally:
        stop(src)


def jailed_vsock_pair(tmp_path, addr, dst_jail=True):
    """A jailed test=vsockecho source with a host connection that echoes, and a destination
    waiting on addr: (root, src, dst, dst console, host socket)."""
    from test_vm_migrate import MULTIBOOT as MB, VSOCK_DEV, echo, start, vsock_connect
    from test_vm_migrate import wait_for as wait
    root = tmp_path / "root"
    src, con = start(root, tmp_path, "src", "vm", "run", "--jail", "--kernel", MB, "--cmdline",
                     "test=vsockecho", "--mem", "32M", *VSOCK_DEV,
                     "--vsock", f"cid=3,socket={tmp_path}/src.vsock")
    wait(lambda: ("vsockecho: ready" in con.read_text(errors="replace") if con.exists()
                  else False) and (root / "vm" / "src" / "state.json").exists()
         or src.poll() is not None, what="the jailed vsock guest")
    assert src.poll() is None, src.communicate()
    dst, dcon = start(root, tmp_path, "dst", "vm", "run", *(["--jail"] if dst_jail else []),
                      "--incoming", addr, "--mem", "32M", *VSOCK_DEV,
                      "--vsock", f"cid=3,socket={tmp_path}/dst.vsock")
    s, _ = vsock_connect(tmp_path / "src.vsock")
    echo(s, "before the migration")
    if addr.startswith("unix:"):
        wait(lambda: os.path.exists(addr[5:]) or dst.poll() is not None, what="the socket")
    else:
        time.sleep(0.5)
    assert dst.poll() is None, dst.communicate()
    return root, src, dst, dcon, s


def test_vsock_connection_survives_migration_of_jailed_vmms(tmp_path):
    """unix: carries the host sockets (SCM_RIGHTS) from a jailed source, through the
    connection `vm migrate` handed it, to a jailed destination that takes them before its jail
    closes: the host process goes on talking on its socket."""
    from test_vm_migrate import echo, stop
    root, src, dst, dcon, s = jailed_vsock_pair(tmp_path, f"unix:{tmp_path}/mig.sock")
    try:
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "migrate", "src",
                            f"unix:{tmp_path}/mig.sock"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (r.stderr, stop(dst))
        src.communicate(timeout=30)
        assert src.returncode == 0
        echo(s, "after the migration")
        assert "vsockecho: got after the migration" in dcon.read_text()
        assert "seccomp" not in (stop(dst)[1] or "")
    finally:
        s.close()
        stop(src)
        stop(dst)


def test_jailed_destination_refuses_vsock_sockets_over_tcp(tmp_path):
    """tcp: hands sockets over with pidfd_getfd, which a jailed destination cannot use (its
    pid namespace holds itself alone): it refuses in one line, the migration fails, and the
    source's guest runs on and keeps its connection."""
    from test_vm_migrate import echo, free_port, stop
    addr = f"tcp:127.0.0.1:{free_port()}"
    root, src, dst, _, s = jailed_vsock_pair(tmp_path, addr)
    try:
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "migrate", "src", addr],
                           capture_output=True, text=True, timeout=120)
        # The source reads the refusal even when the destination closed while it was still
        # sending (the reason is in the socket before the close).
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
        msg = "a jailed destination (--jail) cannot take the source's vsock sockets over tcp:"
        assert "the destination refused it: frame" in r.stderr and msg in r.stderr, r.stderr
        _, err = dst.communicate(timeout=60)
        assert dst.returncode == 1 and msg in err and len(err.strip().splitlines()) == 1, err
        echo(s, "still on the source")
        assert src.poll() is None
    finally:
        s.close()
        stop(src)
        stop(dst)


def test_jailed_vm_refuses_migration_without_a_handed_connection(tmp_path):
    """A jailed VMM dials nothing: a PUT /migrate without the connection attached (any HTTP
    client but `vm migrate`) answers 400 naming that, and the VM runs on."""
    root = tmp_path / "root"
    p = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "run", "--jail", "--name", "j",
                          "--kernel", MULTIBOOT, "--cmdline", "test=count", "--console", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: subprocess.run([KAPSEL, "--root", str(root), "vm", "inspect", "j"],
                                        capture_output=True).returncode == 0
                 or p.poll() is not None, what="the jailed VM's API")
        sock = str(root / "vm" / "j" / "api.sock")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        body = b'{"destination": "unix:/nonexistent/dst.sock"}'
        c.sendall(b"PUT /migrate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        resp = b""
        while chunk := c.recv(4096):
            resp += chunk
        c.close()
        assert resp.startswith(b"HTTP/1.1 400"), resp
        assert b"a jailed VMM (--jail) cannot dial unix:/nonexistent/dst.sock" in resp, resp
        # vm migrate dials itself: with nobody listening it fails in one line, and the VM
        # runs on.
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "migrate", "j",
                            f"unix:{tmp_path / 'dst.sock'}"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1
        assert "connect" in r.stderr and "dst.sock" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert p.poll() is None, "the jailed VM died"
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
