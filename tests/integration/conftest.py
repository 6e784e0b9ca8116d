"""Shared fixtures for kapsel's integration tests: the binary, a private state root, and OCI
bundles built from Debian's busybox-static (no network, no images)."""
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAPSEL = os.environ.get("KAPSEL", os.path.join(REPO, "build", "src", "kapsel", "kapsel"))
BUSYBOX = "/bin/busybox"


def pytest_configure(config):
    for m in ("root: needs root", "rootless: runs as an unprivileged user",
              "cgroup_v1: needs cgroup v1 controllers", "cgroup_v2: needs cgroup v2",
              "kvm: needs /dev/kvm", "podman: needs podman", "containerd: needs containerd"):
        config.addinivalue_line("markers", m)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (run the suite as root)")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kapsel():
    if not os.access(KAPSEL, os.X_OK):
        pytest.fail(f"kapsel binary not found at {KAPSEL}: build it first (meson/ninja)")
    return KAPSEL


@pytest.fixture
def kroot(tmp_path):
    root = tmp_path / "state"
    root.mkdir()
    return str(root)


def make_rootfs(dest):
    """A minimal root filesystem: busybox-static and its applets, plus /etc basics."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    for d in ("bin", "etc", "dev", "proc", "sys", "tmp", "root", "run", "var", "usr/bin"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        p = os.path.join(dest, "bin", a)
        if not os.path.lexists(p):
            os.symlink("busybox", p)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    return dest


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    return make_rootfs(str(tmp_path_factory.mktemp("rootfs") / "rootfs"))


DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def base_config(rootfs_path, args):
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in
                             ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs_path, "readonly": True},
        "hostname": "kapsel-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                            "/proc/acpi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


@pytest.fixture
def make_bundle(tmp_path, rootfs):
    """make_bundle(args, edit=None) -> bundle dir; edit(config) may change the config."""
    def make(args=("true",), edit=None, name=None):
        b = tmp_path / (name or ("bundle-" + uuid.uuid4().hex[:8]))
        b.mkdir()
        cfg = base_config(rootfs, list(args))
        if edit:
            r = edit(cfg)
            cfg = r if r is not None else cfg
        (b / "config.json").write_text(json.dumps(cfg, indent=2))
        return str(b)
    return make


@pytest.fixture
def cid():
    return "t-" + uuid.uuid4().hex[:12]


class Runner:
    def __init__(self, binary, root):
        self.binary, self.root = binary, root

    def __call__(self, *args, check=False, input=None, timeout=60, **kw):
        cmd = [self.binary, "--root", self.root] + [str(a) for a in args]
        # Files, not pipes: a detached container inherits the runtime's stdio and would keep
        # a pipe open long after the runtime exits.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(cmd, stdout=out, stderr=err, input=input.encode()
                               if input is not None else None, timeout=timeout, **kw)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(cmd, p.returncode,
                                            out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr}")
        return r

    def state(self, cid):
        return json.loads(self("state", cid, check=True).stdout)


@pytest.fixture
def kap(kapsel, kroot):
    r = Runner(kapsel, kroot)
    yield r
    # Nothing a test created may outlive it.
    for name in os.listdir(kroot):
        subprocess.run([kapsel, "--root", kroot, "delete", "--force", name],
                       capture_output=True)


def cgroup_mounted():
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/sys/fs/cgroup" for line in f)


@pytest.fixture
def cgroupfs():
    """A cgroup hierarchy for tests that run plain containers or podman/ctr beside a VM: the
    nested runner's outer guest mounts none, so there (only where nothing at all is mounted on
    /sys/fs/cgroup) a cgroup2 one for the test, unmounted after it. A host's own hierarchy
    (v1, v2 or hybrid) is never covered."""
    mounted = False
    if not cgroup_mounted():
        r = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"no cgroup hierarchy at /sys/fs/cgroup and cgroup2 does not mount: "
                        f"{r.stderr.strip()}")
        mounted = True
        # what a container's defaults ask for (the pids limit above all)
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            avail = f.read().split()
        for c in ("pids", "memory", "cpu", "io"):
            if c in avail:
                with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                    f.write(f"+{c}")
    yield
    if mounted:
        subprocess.run(["umount", "-l", "/sys/fs/cgroup"])
