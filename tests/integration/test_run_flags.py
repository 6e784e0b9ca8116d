"""podman's `run` flags for what surrounds the process, on the embedded busybox image:
--env-file, --ulimit, --device, --init, --tmpfs and --mount (named volumes: test_volume.py).
Each has a positive test and one for its errors: exit status 125 and a one-line message that
names the flag and the value. Every kapsel call gets a private --store and --root."""
import json
import os
import shutil
import time
import uuid

import pytest

import clients
from conftest import KAPSEL
from test_rootless import as_user, user  # noqa: F401 (user: the shared test-user fixture)

pytestmark = [pytest.mark.root]


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=60, env=None):
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def k(kapsel, tmp_path_factory):
    runner = K(kapsel, str(tmp_path_factory.mktemp("store")),
               str(tmp_path_factory.mktemp("state")))
    r = runner("run", "--rm", "busybox", "true")
    assert r.returncode == 0, f"the embedded busybox image does not run: {r.stderr}"
    return runner


@pytest.fixture
def name(k):
    n = "rf-" + uuid.uuid4().hex[:10]
    yield n
    k("rm", "-f", n)


def refused(k, *args, needle):
    """Runs `kapsel run --rm ARGS busybox true`: must fail with 125, one line naming needle."""
    r = k("run", "--rm", *args, "busybox", "true")
    assert r.returncode == 125, (args, r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
    return lines[0]


# ---- --env-file ----

def test_env_file(k, tmp_path):
    f = tmp_path / "env"
    f.write_text("# a comment\n\nA=1\n   B=two words = x\nFROM_HOST\nUNSET_ON_HOST\n"
                 "C=file\n  # indented comment\nEMPTY=\n")
    env = dict(os.environ, FROM_HOST="host value")
    env.pop("UNSET_ON_HOST", None)
    r = k("run", "--rm", "--env-file", f, "-e", "C=flag", "busybox", "sh", "-c",
          'echo "$A|$B|$FROM_HOST|$C|${EMPTY-unset}|${UNSET_ON_HOST-unset}"', env=env)
    assert r.returncode == 0, r.stderr
    # K alone takes the host's value (and is left out when the host has none); --env wins.
    assert r.stdout == "1|two words = x|host value|flag||unset\n"


def test_env_file_errors(k, tmp_path):
    missing = tmp_path / "missing"
    line = refused(k, "--env-file", missing, needle=str(missing))
    assert "No such file" in line
    for text, lineno, what in (("A=1\n=value\n", 2, "no variable name"),
                               ("A=1\n# c\nBAD KEY=1\n", 3, "whitespace")):
        f = tmp_path / f"bad{lineno}"
        f.write_text(text)
        line = refused(k, "--env-file", f, needle=f"{f}:{lineno}")
        assert what in line


# ---- --ulimit ----

def test_ulimit(k):
    r = k("run", "--rm", "--ulimit", "nofile=100:200", "--ulimit", "nproc=50",
          "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; ulimit -Hu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["100", "200", "50", "50"]
    r = k("run", "--rm", "--ulimit", "core=0:unlimited", "busybox", "sh", "-c",
          "ulimit -c; ulimit -Hc")
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("the hard core limit cannot be raised here (no CAP_SYS_RESOURCE)")
    assert r.stdout.split() == ["0", "unlimited"], r.stderr


def test_ulimit_errors(k):
    assert "bogus" in refused(k, "--ulimit", "bogus=1", needle="--ulimit")
    assert "soft limit is above the hard" in refused(k, "--ulimit", "nofile=300:200",
                                                     needle="nofile=300:200")
    refused(k, "--ulimit", "nofile=abc", needle="nofile=abc")
    refused(k, "--ulimit", "nofile", needle="NAME=SOFT")
    refused(k, "--ulimit", "nofile=1:", needle="nofile=1:")
    assert "twice" in refused(k, "--ulimit", "nofile=10", "--ulimit", "nofile=20",
                              needle="nofile")


# ---- --device ----

# /dev/net/tun: a device no container gets by default, harmless to open (nothing happens
# without its ioctl).
TUN = "/dev/net/tun"


def test_device(k):
    if not os.path.exists(TUN):
        pytest.skip(f"no {TUN} on this host")
    r = k("run", "--rm", "busybox", "test", "-e", "/dev/tun")
    assert r.returncode == 1, "the default container already has the device"
    st = os.stat(TUN)
    r = k("run", "--rm", "--device", f"{TUN}:/dev/tun", "busybox", "sh", "-c",
          "stat -c '%t:%T %F' /dev/tun; echo > /dev/tun")
    assert r.stdout.startswith(f"{os.major(st.st_rdev):x}:{os.minor(st.st_rdev):x} "
                               "character special"), (r.stdout, r.stderr)
    # Opened for writing (the write itself fails: no interface attached).
    assert "can't create" not in r.stderr, r.stderr
    # Without a container path: the host's.
    r = k("run", "--rm", "--device", TUN, "busybox", "test", "-c", TUN)
    assert r.returncode == 0, r.stderr


def test_device_permissions(k):
    """:r allows reading only: the device cgroup refuses the open for writing."""
    if not os.path.exists(TUN):
        pytest.skip(f"no {TUN} on this host")
    r = k("run", "--rm", "--device", f"{TUN}:/dev/tun:r", "busybox", "sh", "-c",
          "cat /dev/tun; echo > /dev/tun")
    assert "can't create /dev/tun: Operation not permitted" in r.stderr, r.stderr
    assert "cat: can't open" not in r.stderr, r.stderr


def test_device_errors(k, tmp_path):
    assert "not a device node" in refused(k, "--device", "/etc/passwd", needle="/etc/passwd")
    refused(k, "--device", str(tmp_path / "none"), needle=str(tmp_path / "none"))
    refused(k, "--device", "/dev/null:dev/x", needle="dev/x")
    refused(k, "--device", "/dev/null:/dev/../x", needle="/dev/../x")
    assert "permissions" in refused(k, "--device", "/dev/null:/dev/x:rwx", needle="rwx")
    refused(k, "--device", "dev/null", needle="dev/null")
    refused(k, "--device", "/dev/null:/a:r:w", needle="/dev/null:/a:r:w")


# ---- --init ----

def test_init_is_pid1(k):
    r = k("run", "--rm", "--init", "busybox", "sh", "-c",
          "tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o pid,ppid,comm; exit 7")
    assert r.returncode == 7, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[0] == "/run/kapsel-init", lines
    procs = {l.split()[0]: l.split()[1:] for l in lines[2:]}
    assert procs["1"] == ["0", "kapsel-init"], lines
    # The command is its child.
    assert ["1", "sh"] in procs.values(), lines
    # And it is the host's file, read-only.
    r = k("run", "--rm", "--init", "busybox", "sh", "-c", "echo x > /run/kapsel-init")
    assert r.returncode != 0 and "Read-only" in r.stderr, r.stderr


def test_init_exit_statuses(k):
    assert k("run", "--rm", "--init", "busybox", "true").returncode == 0
    r = k("run", "--rm", "--init", "busybox", "no-such-command")
    assert r.returncode == 127, (r.returncode, r.stderr)
    r = k("run", "--rm", "--init", "busybox", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15, (r.returncode, r.stderr)


def zombies(k, name):
    r = k("exec", name, "ps", "-o", "stat,comm", check=True)
    return [l for l in r.stdout.splitlines()[1:] if l.split()[0].startswith("Z")]


def test_init_reaps_orphans(k, name):
    """An orphan is reparented to PID 1: kapsel-init reaps it; a plain `sleep` as PID 1 (the
    control) leaves it a zombie."""
    for init in (True, False):
        n = f"{name}-{int(init)}"
        try:
            args = ["--init"] if init else []
            r = k("run", "-d", "--name", n, *args, "busybox", "sleep", "1000")
            assert r.returncode == 0, r.stderr
            # The exec'd sh exits at once; its background child becomes PID 1's.
            k("exec", n, "sh", "-c", "sleep 0.2 & exit 0", check=True)
            deadline = time.time() + 10
            while time.time() < deadline:
                time.sleep(0.5)
                if init or zombies(k, n):
                    break
            time.sleep(0.5)
            z = zombies(k, n)
            if init:
                assert z == [], z
            else:
                assert z and "sleep" in z[0], "the control found no zombie to reap"
        finally:
            k("rm", "-f", n)


def test_init_forwards_signals(k, name):
    """`kapsel stop` sends SIGTERM to PID 1; kapsel-init passes it on to the command, which
    dies at once (a bare `sleep` as PID 1 has no handler and ignores it)."""
    r = k("run", "-d", "--init", "--name", name, "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    t = time.monotonic()
    r = k("stop", "-t", "20", name)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t < 10, "SIGTERM was not forwarded (stop waited for SIGKILL)"
    e = json.loads(k("ps", "-a", "--format", "json", check=True).stdout)
    e = {x["Names"][0]: x for x in e}[name]
    assert e["ExitCode"] == 143, e


def test_init_errors(k, tmp_path):
    refused(k, "--init", "--init-path", str(tmp_path / "none"), needle=str(tmp_path / "none"))
    (tmp_path / "plain").write_text("not a program")
    assert "not an executable" in refused(k, "--init", "--init-path", tmp_path / "plain",
                                          needle=str(tmp_path / "plain"))
    assert "needs --init" in refused(k, "--init-path", "/bin/true", needle="--init-path")
    refused(k, "--init", "-v", f"{tmp_path}:/run/kapsel-init", needle="/run/kapsel-init")


# ---- --tmpfs ----

def mounts_at(stdout, path):
    return [l.split() for l in stdout.splitlines() if l.split()[1:2] == [path]]


def test_tmpfs(k):
    r = k("run", "--rm", "--tmpfs", "/scratch:size=1m,mode=0700", "--tmpfs", "/plain",
          "busybox", "sh", "-c",
          "cat /proc/mounts; stat -c 'mode %a' /scratch; "
          "dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1; true")
    assert r.returncode == 0, r.stderr
    (m,) = mounts_at(r.stdout, "/scratch")
    opts = m[3].split(",")
    assert m[2] == "tmpfs" and "size=1024k" in opts and "noexec" in opts and "nosuid" in opts
    assert "mode 700" in r.stdout
    assert "No space left" in r.stdout
    (p,) = mounts_at(r.stdout, "/plain")
    assert p[2] == "tmpfs" and "nodev" in p[3].split(",")
    # The user's options come after podman's defaults and win.
    r = k("run", "--rm", "--tmpfs", "/x:exec", "busybox", "grep", " /x ", "/proc/mounts")
    assert r.returncode == 0 and "noexec" not in r.stdout, (r.stdout, r.stderr)


def test_tmpfs_errors(k):
    assert "absolute" in refused(k, "--tmpfs", "rel", needle="rel")
    refused(k, "--tmpfs", "/a/../b", needle="/a/../b")
    assert '"bogus=1"' in refused(k, "--tmpfs", "/x:size=1m,bogus=1", needle="--tmpfs")
    assert "twice" in refused(k, "--tmpfs", "/x", "--tmpfs", "/x/", needle="/x")


# ---- --mount ----

def test_mount_bind(k, tmp_path):
    (tmp_path / "f").write_text("host\n")
    r = k("run", "--rm", "--mount", f"type=bind,src={tmp_path},dst=/data,ro", "busybox",
          "sh", "-c", "cat /data/f; touch /data/new")
    assert r.stdout == "host\n" and "Read-only" in r.stderr, (r.stdout, r.stderr)
    assert not (tmp_path / "new").exists()
    r = k("run", "--rm", "--mount",
          f"type=bind,source={tmp_path},target=/data,readonly=false,bind-propagation=rslave",
          "busybox", "sh", "-c", "echo w > /data/new")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new").read_text() == "w\n"


def test_mount_tmpfs(k):
    r = k("run", "--rm", "--mount", "type=tmpfs,destination=/t,tmpfs-size=2m,tmpfs-mode=1770",
          "busybox", "sh", "-c", "cat /proc/mounts; stat -c 'mode %a' /t")
    assert r.returncode == 0, r.stderr
    (m,) = mounts_at(r.stdout, "/t")
    assert m[2] == "tmpfs" and "size=2048k" in m[3].split(","), m
    assert "mode 1770" in r.stdout


def test_mount_errors(k, tmp_path):
    src = str(tmp_path)
    assert '"foo"' in refused(k, "--mount", f"type=bind,src={src},dst=/d,foo=1", needle="foo")
    assert "tmpfs-size" in refused(k, "--mount", f"type=bind,src={src},dst=/d,tmpfs-size=1m",
                                   needle="type=bind")
    assert "bind-propagation" in refused(k, "--mount", "type=tmpfs,dst=/d,bind-propagation=shared",
                                         needle="type=tmpfs")
    refused(k, "--mount", f"src={src},dst=/d", needle="type=")
    refused(k, "--mount", f"type=nfs,src={src},dst=/d", needle="nfs")
    refused(k, "--mount", f"type=bind,src={src}", needle="dst=")
    refused(k, "--mount", "type=bind,src=rel,dst=/d", needle="rel")
    refused(k, "--mount", f"type=bind,src={src}/missing,dst=/d", needle=f"{src}/missing")
    refused(k, "--mount", "type=bind,dst=/d", needle="src=")
    refused(k, "--mount", f"type=bind,src={src},dst=d", needle="dst=d")
    refused(k, "--mount", f"type=bind,src={src},dst=/d,ro=maybe", needle="ro=maybe")
    refused(k, "--mount", f"type=bind,src={src},dst=/d,bind-propagation=bogus", needle="bogus")
    refused(k, "--mount", "type=tmpfs,dst=/d,tmpfs-size=lots", needle="tmpfs-size=lots")
    refused(k, "--mount", "type=tmpfs,dst=/d,tmpfs-mode=999", needle="tmpfs-mode=999")
    refused(k, "--mount", "type=volume,dst=/d", needle="src=NAME")
    refused(k, "--mount", "type=volume,src=../x,dst=/d", needle="../x")
    assert "twice" in refused(k, "-v", f"{src}:/d", "--mount", "type=tmpfs,dst=/d",
                              needle="/d")


# ---- rootless ----

@pytest.mark.rootless
def test_rootless(user):  # noqa: F811 (the shared test-user fixture)
    """The same flags as an unprivileged user: the reaper, a named volume (copied up and
    kept), a tmpfs, a limit and a device (bound from the host's node)."""
    home = f"/tmp/kapsel-rootless-rf-{uuid.uuid4().hex[:8]}"
    os.mkdir(home, 0o755)
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        def k(*args):
            return as_user(user, home, [KAPSEL] + [str(a) for a in args])
        r = k("run", "--rm", "--init", "-v", "rlvol:/etc", "--tmpfs", "/scratch",
              "--ulimit", "nofile=64:128", "--device", "/dev/null:/dev/mynull", "busybox",
              "sh", "-c", "ps -o pid,comm | grep ' 1 '; grep -c ^root: /etc/passwd; "
              "echo kept > /etc/mine; grep -c ' /scratch tmpfs' /proc/mounts; ulimit -n; "
              "echo x > /dev/mynull && echo null-ok")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["1", "kapsel-init", "1", "1", "64", "null-ok"], r.stdout
        r = k("run", "--rm", "-v", "rlvol:/etc", "busybox", "cat", "/etc/mine")
        assert (r.returncode, r.stdout) == (0, "kept\n"), r.stderr
        r = k("volume", "rm", "rlvol")
        assert r.returncode == 0, r.stderr
    finally:
        r = as_user(user, home, [KAPSEL, "ps", "-a", "--format", "json"])
        for e in json.loads(r.stdout or "[]"):
            as_user(user, home, [KAPSEL, "rm", "-f", e["Names"][0]])
        shutil.rmtree(home, ignore_errors=True)
