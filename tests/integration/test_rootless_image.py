"""`kapsel run IMAGE` as an unprivileged user, on the embedded busybox image (no network): the
store under ~/.local/share/kapsel, state under $XDG_RUNTIME_DIR/kapsel, a native rootless
overlay (userxattr) mounted in a user and mount namespace of kapsel's own, no cgroup unless one
is delegated. The container is root of a user namespace that maps only the user, so it can do
nothing on the host the user could not."""
import json
import os
import shutil
import time
import uuid

import pytest

from conftest import KAPSEL
from test_rootless import as_user, user  # noqa: F401 (user: the shared test-user fixture)

pytestmark = pytest.mark.rootless
SLEEPER = ["sh", "-c", "echo started; trap 'echo bye; exit 0' TERM; sleep 1000 & wait"]


@pytest.fixture(scope="module")
def home(user):
    # World-traversable, owned by the user; one per module, so the image is loaded once.
    d = f"/tmp/kapsel-rootless-img-{uuid.uuid4().hex[:8]}"
    os.mkdir(d, 0o755)
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    r = as_user(user, d, [KAPSEL, "ps", "-a", "--format", "json"])
    for e in json.loads(r.stdout or "[]"):
        as_user(user, d, [KAPSEL, "rm", "-f", e["Names"][0]])
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def k(user, home):
    def run(*args):
        return as_user(user, home, [KAPSEL] + [str(a) for a in args])
    return run


@pytest.fixture
def name():
    return "rl-" + uuid.uuid4().hex[:10]


def traces(home, n):
    """What a container may leave behind, as descriptions (empty: nothing)."""
    store = os.path.join(home, ".local", "share", "kapsel")
    left = []
    for p, what in ((os.path.join(store, "containers", n), "container dir"),
                    (os.path.join(store, "refs", n), "image reference"),
                    (os.path.join(home, "run", "kapsel", n), "runtime state")):
        if os.path.lexists(p):
            left.append(f"{what} {p}")
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if home in line]
    return left


def wait_for(pred, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def subuid_ranges(name):
    """The user's /etc/subuid ranges in file order: what podman (and kapsel) map to 1.."""
    out = []
    with open("/etc/subuid") as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name:
                out.append((int(parts[1]), int(parts[2])))
    return out


def test_runs_as_root_of_a_namespace_mapping_the_user_and_its_ranges(user, k):
    # Container root is the user; IDs 1.. are the user's /etc/subuid ranges (the fixture's
    # user has some: Debian's useradd gives one, test_rootless adds one), as podman maps them.
    r = k("run", "--rm", "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map; echo hi")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(user.pw_uid), "1"]
    want, inside = [], 1
    for start, count in subuid_ranges(user.pw_name):
        want.append([str(inside), str(start), str(count)])
        inside += count
    assert [line.split() for line in lines[2:-1]] == want
    assert lines[-1] == "hi"


def test_rm_leaves_nothing(home, k, name):
    # A directory the container locks even its owner out of must go too.
    r = k("run", "--rm", "--name", name, "busybox", "sh", "-c",
          "mkdir -p /d/e && touch /d/e/f && chmod 000 /d/e /d && echo done")
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert traces(home, name) == []
    assert os.listdir(os.path.join(home, ".local", "share", "kapsel", "containers")) == []
    assert os.listdir(os.path.join(home, "run", "kapsel")) == []


def test_detached_logs_exec_stop_rm(user, home, k, name):
    r = k("run", "-d", "--name", name, "busybox", *SLEEPER)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: "started" in k("logs", name).stdout)
    # Nothing of the container is mounted where the host (or the user's shell) can see it.
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if home in line]

    r = k("exec", name, "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "0"
    assert r.stdout.split("\n")[1].split() == ["0", str(user.pw_uid), "1"]

    st = json.loads(k("state", name).stdout)
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/status") as f:
        uid = [line for line in f if line.startswith("Uid:")][0].split()[1:]
    assert uid == [str(user.pw_uid)] * 4, "the container runs as the user on the host"
    ps = {e["Names"][0]: e for e in json.loads(k("ps", "--format", "json").stdout)}
    assert ps[name]["State"] == "running"

    r = k("stop", name)
    assert r.returncode == 0, r.stderr
    assert "bye" in k("logs", name).stdout
    ps = {e["Names"][0]: e for e in json.loads(k("ps", "-a", "--format", "json").stdout)}
    assert (ps[name]["State"], ps[name]["ExitCode"]) == ("exited", 0), ps[name]
    r = k("rm", name)
    assert r.returncode == 0, r.stderr
    assert traces(home, name) == []


def test_rm_force_of_a_running_container(home, k, name):
    # sh as pid 1 ignores SIGTERM: rm -f must get to SIGKILL without a cgroup to kill through.
    r = k("run", "-d", "--name", name, "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = k("rm", "-f", name)
    assert r.returncode == 0, r.stderr
    assert traces(home, name) == []


def test_cannot_write_root_owned_host_files_or_make_devices(home, k):
    secret = os.path.join(home, "root-owned-" + uuid.uuid4().hex[:6])
    os.mkdir(secret, 0o755)
    with open(os.path.join(secret, "f"), "w") as f:
        f.write("root's\n")
    os.chmod(os.path.join(secret, "f"), 0o644)
    try:
        # Even --privileged: every capability, but only over what the user owns.
        r = k("run", "--rm", "--privileged", "-v", f"{secret}:/mnt", "busybox", "sh", "-c",
              "echo x >> /mnt/f && echo WROTE; touch /mnt/new && echo CREATED;"
              " chown 0 /mnt/f && echo CHOWNED; mknod /tmp/sda b 8 0 && echo MKNOD;"
              " ls -ln /mnt/f; true")
        assert r.returncode == 0, r.stderr
        for word in ("WROTE", "CREATED", "CHOWNED", "MKNOD"):
            assert word not in r.stdout, r.stdout
        assert "65534" in r.stdout  # host root appears as the overflow id
        assert open(os.path.join(secret, "f")).read() == "root's\n"
        assert os.listdir(secret) == ["f"]
    finally:
        shutil.rmtree(secret)


def test_limits_need_a_delegated_cgroup(user, home, k, name):
    r = as_user(user, home, ["sh", "-c", "test -w /sys/fs/cgroup/kapsel || "
                                         "{ test ! -e /sys/fs/cgroup/kapsel && "
                                         "test -w /sys/fs/cgroup; }"])
    if r.returncode == 0:
        pytest.skip("this host delegates a cgroup to the test user")
    for flag in (["--memory", "64m"], ["--cpus", "0.5"], ["--pids-limit", "10"]):
        r = k("run", "--rm", "--name", name, *flag, "busybox", "true")
        assert r.returncode == 125, r.stdout
        assert f"{flag[0]} needs a delegated cgroup for uid {user.pw_uid}" in r.stderr
        assert traces(home, name) == []
    # podman's default pids limit is dropped silently; an explicit "unlimited" is fine.
    r = k("run", "--rm", "--pids-limit", "-1", "busybox", "true")
    assert r.returncode == 0, r.stderr
