"""Rootless: kapsel run by an unprivileged user, with a user namespace and no cgroups unless
delegated. A rootless container cannot gain anything the user did not have."""
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from conftest import KAPSEL, make_rootfs

pytestmark = pytest.mark.rootless
USER = "kapsel-rl"


@pytest.fixture(scope="module")
def user():
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user")
    if not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs useradd and runuser (Debian's passwd and util-linux)")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
        pw = pwd.getpwnam(USER)
    if shutil.which("usermod"):
        subprocess.run(["usermod", "--add-subuids", "300000-365535", "--add-subgids",
                        "300000-365535", USER], capture_output=True)
    return pw


@pytest.fixture
def home(user):
    # World-traversable, owned by the user: pytest's tmp dirs are 0700 root.
    d = f"/tmp/kapsel-rootless-{uuid.uuid4().hex[:8]}"
    os.mkdir(d, 0o755)
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    as_user(user, d, ["sh", "-c", f"for c in $({KAPSEL} list -q); do {KAPSEL} delete -f $c;"
                                  " done"])
    shutil.rmtree(d, ignore_errors=True)


def as_user(user, home, args):
    env = ["env", f"XDG_RUNTIME_DIR={home}/run", f"HOME={home}", "PATH=/usr/bin:/bin"]
    cmd = ["runuser", "-u", USER, "--"] + env + args
    # Files, not pipes: a detached container keeps the runtime's stdio open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(cmd, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, p.returncode, out.read().decode(),
                                           err.read().decode())


def rootless_bundle(user, home, args, edit=None):
    b = os.path.join(home, "bundle-" + uuid.uuid4().hex[:6])
    os.mkdir(b)
    make_rootfs(os.path.join(b, "rootfs"))
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", b], check=True)
    r = as_user(user, home, [KAPSEL, "spec", "--rootless", "--bundle", b])
    assert r.returncode == 0, r.stderr
    cfg = json.load(open(os.path.join(b, "config.json")))
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    cfg["root"]["readonly"] = False
    if edit:
        edit(cfg)
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    return b


def test_spec_rootless_runs_with_own_uid_mapped(user, home):
    b = rootless_bundle(user, home, ["sh", "-c", "id -u; cat /proc/self/uid_map"])
    r = as_user(user, home, [KAPSEL, "run", "--bundle", b, "rl1"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(user.pw_uid), "1"]
    # state lives under $XDG_RUNTIME_DIR/kapsel, removed after run
    assert os.path.isdir(os.path.join(home, "run", "kapsel"))
    assert os.listdir(os.path.join(home, "run", "kapsel")) == []


def test_detached_state_under_xdg_runtime_dir(user, home):
    b = rootless_bundle(user, home, ["sleep", "100"])
    r = as_user(user, home, [KAPSEL, "run", "-d", "--bundle", b, "rl2"])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(home, "run", "kapsel", "rl2", "state.json"))
    r = as_user(user, home, [KAPSEL, "exec", "rl2", "id", "-u"])
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    st = json.loads(as_user(user, home, [KAPSEL, "state", "rl2"]).stdout)
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/status") as f:
        uid = [l for l in f if l.startswith("Uid:")][0].split()[1]
    assert uid == str(user.pw_uid), "the container runs as the user on the host"
    assert as_user(user, home, [KAPSEL, "delete", "-f", "rl2"]).returncode == 0


def test_cannot_write_files_of_other_host_users(user, home):
    secret = os.path.join(home, "root-owned")
    os.mkdir(secret, 0o755)
    with open(os.path.join(secret, "f"), "w") as f:
        f.write("root's\n")
    os.chmod(os.path.join(secret, "f"), 0o644)

    def edit(c):
        c["mounts"].append({"destination": "/mnt", "type": "bind", "source": secret,
                            "options": ["rbind"]})
    b = rootless_bundle(user, home, [
        "sh", "-c", "echo x >> /mnt/f && echo WROTE; chown 0 /mnt/f && echo CHOWNED;"
        " mknod /dev/sda b 8 0 && echo MKNOD; ls -ln /mnt/f; true"], edit)
    r = as_user(user, home, [KAPSEL, "run", "--bundle", b, "rl3"])
    assert r.returncode == 0, r.stderr
    assert "WROTE" not in r.stdout and "CHOWNED" not in r.stdout and "MKNOD" not in r.stdout
    assert "65534" in r.stdout  # host root appears as the overflow id
    assert open(os.path.join(secret, "f")).read() == "root's\n"


def test_subuid_ranges_through_newuidmap(user, home):
    if not shutil.which("newuidmap"):
        pytest.skip("needs newuidmap/newgidmap (Debian's uidmap)")

    def edit(c):
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": user.pw_uid, "size": 1},
                                     {"containerID": 1, "hostID": 300000, "size": 65535}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": user.pw_gid, "size": 1},
                                     {"containerID": 1, "hostID": 300000, "size": 65535}]
    b = rootless_bundle(user, home, ["cat", "/proc/self/uid_map"], edit)
    r = as_user(user, home, [KAPSEL, "run", "--bundle", b, "rl4"])
    assert r.returncode == 0, r.stderr
    assert [l.split() for l in r.stdout.strip().split("\n")] == [
        ["0", str(user.pw_uid), "1"], ["1", "300000", "65535"]]


def test_limits_without_delegated_cgroup_are_an_error(user, home):
    def edit(c):
        c["linux"]["resources"] = {"pids": {"limit": 10}}
    b = rootless_bundle(user, home, ["true"], edit)
    r = as_user(user, home, [KAPSEL, "run", "--bundle", b, "rl5"])
    assert r.returncode != 0
    assert "pids" in r.stderr or "cgroup" in r.stderr, r.stderr
    assert os.listdir(os.path.join(home, "run", "kapsel")) == []
