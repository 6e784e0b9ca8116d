"""Issue 10's escapes, each tried for real and required to fail:
- host directory fds inherited by the container init and a cwd resolved through them
  (CVE-2024-21626): process.cwd, `exec --cwd`, `run -w` and an image's WorkingDir of
  /proc/self/fd/N are refused, and the init holds no fd but stdio, the exec fifo and the log;
- processes entering a container are dumpable and hold host fds until execve (CVE-2016-9962):
  a racer inside the container tries /proc/<pid>/{fd,cwd,root} of every process that enters
  during 200 execs, and an exec into a created container tries /proc/1/fd;
- linux.sysctl keys that walk out of /proc/sys or name a non-namespaced (host) parameter;
- uid/gid 4294967295, which the kernel reads as "unchanged" (the process would stay root);
- --pid-file through a planted symlink, and /dev nodes chmod-ed through a swapped symlink.
Every probe is harmless if the bug is there: it reads or names things, never writes the host
(the sysctl probes write a value the parameter already has, or a file name that is new)."""
import ctypes
import json
import os
import shutil
import stat
import subprocess
import threading
import time
import uuid

import pytest

import clients
from conftest import make_rootfs

pytestmark = [pytest.mark.root]

PROGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs")


def created(kap, make_bundle, cid, args=("sleep", "1000"), edit=None):
    b = make_bundle(args, edit=edit)
    r = kap("create", "--bundle", b, cid)
    return r


# --- 1. host fds and the working directory ------------------------------------------------

@pytest.mark.parametrize("cwd", ["/proc/self/fd/3", "/proc/self/fd/4", "/proc/self/fd/5",
                                 "/proc/1/cwd", "/proc/self/root"])
def test_cwd_magic_link_refused(kap, make_bundle, cid, kroot, cwd):
    def edit(c):
        c["process"]["cwd"] = cwd
        c["process"]["args"] = ["sh", "-c", "pwd; ls"]
    r = created(kap, make_bundle, cid, edit=edit)
    assert r.returncode != 0, f"cwd {cwd} accepted: {r.stdout}"
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1 and "process.cwd" in msg and cwd in msg, msg
    assert os.listdir(kroot) == [], "a failed create left state behind"


def test_cwd_dotdot_stays_in_root(kap, make_bundle, cid):
    def edit(c):
        c["process"]["cwd"] = "/tmp/../../../.."
        c["process"]["args"] = ["sh", "-c", "pwd; ls /"]
    b = make_bundle(edit=edit)
    r = kap("run", "--bundle", b, cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "/"


def test_init_holds_no_host_fd(kap, make_bundle, cid, kroot):
    """A created (not started) container's init: only stdio, the exec fifo and the log."""
    r = created(kap, make_bundle, cid)
    assert r.returncode == 0, r.stderr
    pid = kap.state(cid)["pid"]
    held = {}
    for n in os.listdir(f"/proc/{pid}/fd"):
        held[int(n)] = os.readlink(f"/proc/{pid}/fd/{n}")
    dirs = {n: t for n, t in held.items()
            if n > 2 and stat.S_ISDIR(os.stat(f"/proc/{pid}/fd/{n}").st_mode)}
    assert dirs == {}, f"the init holds host directories: {dirs}"
    extra = {n: t for n, t in held.items() if n > 2 and not t.endswith("exec.fifo")}
    assert extra == {}, f"the init holds fds besides stdio and exec.fifo: {extra}"


def test_init_is_not_dumpable(kap, make_bundle, cid):
    r = created(kap, make_bundle, cid)
    assert r.returncode == 0, r.stderr
    pid = kap.state(cid)["pid"]
    # Non-dumpable: its /proc files belong to root, whatever uid it runs as; the exec
    # below is the real check (a process of the container is refused).
    r = kap("exec", cid, "sh", "-c", "for f in /proc/1/cwd /proc/1/root /proc/1/fd/*; do "
            "readlink $f || echo denied $f; done 2>&1")
    assert r.returncode == 0, r.stderr
    assert "denied /proc/1/cwd" in r.stdout and "denied /proc/1/root" in r.stdout, r.stdout
    assert "kapsel" not in r.stdout and "/state" not in r.stdout, \
        f"a process of the container sees the init's host fds: {r.stdout}"
    with open(f"/proc/{pid}/status") as f:
        assert any(line.startswith("State:") for line in f)


def test_exec_cwd_magic_link_refused(kap, make_bundle, cid):
    b = make_bundle(("sleep", "1000"))
    kap("run", "-d", "--bundle", b, cid, check=True)
    for cwd in ("/proc/self/fd/3", "/proc/1/cwd"):
        r = kap("exec", "--cwd", cwd, cid, "pwd")
        assert r.returncode != 0, f"exec --cwd {cwd} accepted: {r.stdout}"
        assert cwd in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture
def racer(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to build the /proc racer")
    out = tmp_path / "proc-racer"
    r = subprocess.run(["gcc", "-O2", "-static", "-o", str(out),
                        os.path.join(PROGS, "proc-racer.c")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static racer (glibc static libc missing?): {r.stderr}")
    return str(out)


def test_exec_entering_process_unreachable(kap, tmp_path, cid, racer):
    """A process in the container races 200 execs for /proc/<pid>/{fd,cwd,root} of each new
    process while it is still the runtime (not yet executed): every attempt must fail."""
    rootfs = make_rootfs(str(tmp_path / "racer-rootfs"))
    shutil.copy2(racer, os.path.join(rootfs, "bin", "proc-racer"))
    from conftest import base_config
    cfg = base_config(rootfs, ["sh", "-c", "proc-racer > /tmp/race.log & sleep 1000"])
    b = tmp_path / "racer-bundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(cfg))
    kap("run", "-d", "--bundle", str(b), cid, check=True)
    for _ in range(200):
        r = kap("exec", cid, "true")
        assert r.returncode == 0, r.stderr
    log = kap("exec", cid, "cat", "/tmp/race.log", check=True).stdout
    leaks = [line for line in log.splitlines() if line.startswith("LEAK")]
    seen = [line for line in log.splitlines() if line.startswith("SEEN")]
    assert not leaks, f"{len(leaks)} processes reachable before execve: {leaks[:5]}"
    # The racer must really have caught processes in flight, or the test proves nothing.
    assert len(seen) >= 20, f"the racer saw only {len(seen)} entering processes"


# --- 2. image working directories -----------------------------------------------------------

class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=60):
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout)


@pytest.fixture
def k(kapsel, tmp_path):
    return K(kapsel, str(tmp_path / "store"), str(tmp_path / "state"))


@pytest.mark.parametrize("wd", ["/proc/self/fd/3", "/proc/self/fd/4", "/proc/self/fd/5",
                                "/proc/self/fd/6", "/proc/self/fd/7"])
def test_image_workdir_magic_link_refused(k, tmp_path, wd):
    arch = clients.oci_archive(str(tmp_path), ref="localhost/evil-wd:1",
                               config={"WorkingDir": wd})
    k("load", "-i", arch, check=True)
    r = k("run", "--rm", "localhost/evil-wd:1", "sh", "-c", "pwd; ls ../../../..")
    assert r.returncode != 0, f"WorkingDir {wd} accepted: {r.stdout}"
    assert wd in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert k("ps", "-a").stdout.count("evil-wd") == 0


def test_run_workdir_flag_magic_link_refused(k):
    r = k("run", "--rm", "-w", "/proc/self/fd/3", "busybox", "pwd")
    assert r.returncode != 0, f"-w /proc/self/fd/3 accepted: {r.stdout}"
    assert "/proc/self/fd/3" in r.stderr, r.stderr


# --- 3. sysctls ------------------------------------------------------------------------------

def with_sysctl(sysctl, namespaces=None):
    def edit(c):
        c["linux"]["sysctl"] = sysctl
        if namespaces is not None:
            c["linux"]["namespaces"] = [{"type": t} for t in namespaces]
            if "uts" not in namespaces:
                c.pop("hostname", None)
        c["process"]["args"] = ["true"]
    return edit


def test_sysctl_path_escape_refused(kap, make_bundle, cid, kroot):
    # The key resolves to /proc/sys/kernel/../../../tmp/NAME: a scratch file of this test.
    name = "kapsel-sysctl-" + uuid.uuid4().hex[:8]
    scratch = "/tmp/" + name
    with open(scratch, "w") as f:
        f.write("original\n")
    key = "kernel.//.//.//.tmp." + name
    try:
        r = created(kap, make_bundle, cid, edit=with_sysctl({key: "overwritten"}))
        with open(scratch) as f:
            assert f.read() == "original\n", "a sysctl key wrote a host file"
    finally:
        os.unlink(scratch)
    assert r.returncode != 0
    assert key in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(kroot) == []


@pytest.mark.parametrize("key", ["kernel..shmmax", "net.ipv4..ip_forward", "net.ipv4./.x",
                                 "net.ipv4.conf.lo.", ".net.ipv4.ip_forward"])
def test_sysctl_bad_component_refused(kap, make_bundle, cid, key):
    r = created(kap, make_bundle, cid, edit=with_sysctl({key: "0"}))
    assert r.returncode != 0 and key in r.stderr, r.stderr


def current(key):
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


@pytest.mark.parametrize("key", ["kernel.core_pattern", "vm.overcommit_memory",
                                 "kernel.pid_max"])
def test_sysctl_host_global_refused(kap, make_bundle, cid, key):
    # The value the host already has: harmless even if it were written.
    r = created(kap, make_bundle, cid, edit=with_sysctl({key: current(key)}))
    assert r.returncode != 0
    assert key in r.stderr and "not namespaced" in r.stderr, r.stderr


@pytest.mark.parametrize("key,ns", [("net.ipv4.ip_forward", "network"),
                                    ("kernel.shmmax", "ipc"),
                                    ("fs.mqueue.queues_max", "ipc"),
                                    ("kernel.domainname", "uts")])
def test_sysctl_needs_own_namespace(kap, make_bundle, cid, key, ns):
    others = [t for t in ("pid", "network", "ipc", "uts", "mount") if t != ns]
    r = created(kap, make_bundle, cid, edit=with_sysctl({key: current(key)}, others))
    assert r.returncode != 0
    assert key in r.stderr and ns in r.stderr, r.stderr


def test_sysctl_namespaced_applied(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234",
                                "net.ipv4.conf.lo.forwarding": "1"}
        c["process"]["args"] = ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward "
                                "/proc/sys/kernel/shmmni /proc/sys/net/ipv4/conf/lo/forwarding"]
    r = kap("run", "--bundle", make_bundle(edit=edit), cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1234", "1"]


# --- 4. uid/gid 4294967295 -------------------------------------------------------------------

@pytest.mark.parametrize("field", ["uid", "gid"])
def test_config_minus_one_id_refused(kap, make_bundle, cid, field):
    def edit(c):
        c["process"]["user"][field] = 4294967295
    r = created(kap, make_bundle, cid, edit=edit)
    assert r.returncode != 0
    assert f"process.user.{field}" in r.stderr and "4294967295" in r.stderr, r.stderr


def test_config_minus_one_additional_gid_refused(kap, make_bundle, cid):
    def edit(c):
        c["process"]["user"]["additionalGids"] = [4294967295]
    r = created(kap, make_bundle, cid, edit=edit)
    assert r.returncode != 0 and "additionalGids" in r.stderr, r.stderr


@pytest.mark.parametrize("user", ["-1", "4294967295", "4294967296", "0:-1", "0:4294967295",
                                  "18446744073709551615"])
def test_exec_user_out_of_range_refused(kap, make_bundle, cid, user):
    kap("run", "-d", "--bundle", make_bundle(("sleep", "1000")), cid, check=True)
    r = kap("exec", "--user", user, cid, "id", "-u")
    assert r.returncode != 0, f"--user {user} ran: {r.stdout}"
    assert user in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_exec_process_file_minus_one_refused(kap, make_bundle, cid, tmp_path):
    kap("run", "-d", "--bundle", make_bundle(("sleep", "1000")), cid, check=True)
    p = tmp_path / "process.json"
    p.write_text(json.dumps({"args": ["id", "-u"], "cwd": "/",
                             "user": {"uid": 4294967295, "gid": 0}}))
    r = kap("exec", "--process", str(p), cid)
    assert r.returncode != 0 and "4294967295" in r.stderr, r.stderr


@pytest.mark.parametrize("user", ["4294967295", "0:4294967295", "-1"])
def test_run_user_minus_one_refused(k, user):
    r = k("run", "--rm", "-u", user, "busybox", "id", "-u")
    assert r.returncode != 0, f"-u {user} ran: {r.stdout}"
    assert user.split(":")[-1] in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr


# --- 5. pid files and /dev nodes -------------------------------------------------------------

def test_exec_pid_file_symlink_not_followed(kap, make_bundle, cid, tmp_path):
    kap("run", "-d", "--bundle", make_bundle(("sleep", "1000")), cid, check=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "exec.pid"
    os.symlink(victim, link)
    kap("exec", "--pid-file", str(link), cid, "true", check=True)
    assert victim.read_text() == "precious\n", "exec --pid-file wrote through a symlink"
    assert not os.path.islink(link) and int(link.read_text()) > 0


def test_create_pid_file_temp_symlink_not_followed(kapsel, kroot, make_bundle, cid, tmp_path):
    """The temp file beside the pid file has a predictable name (.NAME.tmp.PID): plant a
    symlink there for the pid the runtime will have, and it must not be followed."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pidfile = tmp_path / "ctr.pid"

    def plant():
        os.symlink(victim, tmp_path / f".ctr.pid.tmp.{os.getpid()}")
    b = make_bundle(("sleep", "1000"))
    # Files, not pipes: the created init keeps the runtime's stdio open.
    with open(tmp_path / "err", "w+") as err:
        r = subprocess.run([kapsel, "--root", kroot, "create", "--pid-file", str(pidfile),
                            "--bundle", b, cid], preexec_fn=plant, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        err.seek(0)
        stderr = err.read()
    try:
        assert r.returncode == 0, stderr
        assert victim.read_text() == "precious\n", "create --pid-file wrote through a symlink"
        assert int(pidfile.read_text()) > 0
    finally:
        subprocess.run([kapsel, "--root", kroot, "delete", "--force", cid], capture_output=True)


RENAME_EXCHANGE = 2


def test_dev_node_swap_never_chmods_host(kap, tmp_path, cid):
    """/dev/null of a bundle without a /dev tmpfs lives in the bundle's rootfs: flip it with
    a symlink to a host file (renameat2 RENAME_EXCHANGE in a tight loop) during creates; the
    host file's mode and owner must never change."""
    libc = ctypes.CDLL(None, use_errno=True)
    rootfs = make_rootfs(str(tmp_path / "swap-rootfs"))
    dev = os.path.join(rootfs, "dev")
    victim = tmp_path / "victim"
    victim.write_text("x")
    os.chmod(victim, 0o600)
    nodes = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
             "urandom": (1, 9), "tty": (5, 0)}
    for n, (ma, mi) in nodes.items():
        os.mknod(os.path.join(dev, n), 0o600 | stat.S_IFCHR, os.makedev(ma, mi))
        os.symlink(str(victim), os.path.join(dev, n + ".swap"))
    from conftest import base_config
    cfg = base_config(rootfs, ["true"])
    cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
    cfg["root"]["readonly"] = False
    b = tmp_path / "swap-bundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(cfg))
    stop = threading.Event()

    def flip():
        pairs = [(os.path.join(dev, n), os.path.join(dev, n + ".swap")) for n in nodes]
        while not stop.is_set():
            for a, z in pairs:
                libc.renameat2(-100, a.encode(), -100, z.encode(), RENAME_EXCHANGE)
                # The runtime replaces a symlink it sees: plant a new one.
                if not os.path.islink(a) and not os.path.islink(z):
                    try:
                        os.unlink(z)
                        os.symlink(str(victim), z)
                    except OSError:
                        pass

    t = threading.Thread(target=flip)
    t.start()
    try:
        for i in range(60):
            kap("run", "--bundle", str(b), f"{cid}-{i}")
            st = os.stat(victim)
            assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, \
                f"run {i}: a /dev setup changed a host file: {oct(st.st_mode)}"
    finally:
        stop.set()
        t.join()
