"""Rootless `kapsel run IMAGE` with the user's /etc/subuid and /etc/subgid ranges: container id 0
is the user, 1.. the ranges (through newuidmap/newgidmap, as podman does), so an image's files
owned by 1000 are 1000 inside and `-u 1000` works. The store keeps the layers unpacked with
ownership shifted into the ranges, once per (layer, mapping), under <store>/idmapped/; root's
store is untouched.

A test user of its own, whose ranges each test sets: lines for it only, removed afterwards."""
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from conftest import KAPSEL

pytestmark = pytest.mark.rootless
USER = "kapsel-subid"
START = 400000  # the test user's range: START..START+65535


def edit_ranges(path, lines):
    """Replace the test user's lines in /etc/subuid or /etc/subgid by `lines`."""
    with open(path) as f:
        keep = [l for l in f.read().splitlines() if not l.startswith(USER + ":")]
    tmp = path + ".kapsel-test"
    with open(tmp, "w") as f:
        f.write("".join(l + "\n" for l in keep + lines))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def user():
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user")
    for tool in ("useradd", "runuser", "newuidmap", "newgidmap"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} (Debian's passwd, util-linux and uidmap)")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", USER], check=True)
        pw = pwd.getpwnam(USER)
    yield pw
    for f in ("/etc/subuid", "/etc/subgid"):
        edit_ranges(f, [])


@pytest.fixture
def ranges(user):
    """Set the user's ranges (default: one of 65536 at START); removed after the test."""
    def set_(uid_lines=None, gid_lines=None):
        dflt = [f"{USER}:{START}:65536"]
        edit_ranges("/etc/subuid", dflt if uid_lines is None else uid_lines)
        edit_ranges("/etc/subgid", dflt if gid_lines is None else gid_lines)
    set_()
    yield set_
    for f in ("/etc/subuid", "/etc/subgid"):
        edit_ranges(f, [])


@pytest.fixture(scope="module")
def image_tar():
    """An image (from the embedded busybox) with a file and a directory owned by 1000, built by
    root in a scratch store and saved as an oci-archive."""
    d = tempfile.mkdtemp(prefix="kapsel-subid-img-")
    ctx = os.path.join(d, "ctx")
    os.mkdir(ctx)
    with open(os.path.join(ctx, "f"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(ctx, "Containerfile"), "w") as f:
        f.write("FROM busybox\nCOPY --chown=1000:1000 f /data/f\n"
                "RUN mkdir -p /home/u && chown 1000:1000 /home/u && chmod 700 /home/u\n")
    store = os.path.join(d, "store")
    r = subprocess.run([KAPSEL, "--store", store, "build", "-t", "subid", ctx],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tar = os.path.join(d, "img.tar")
    r = subprocess.run([KAPSEL, "save", "--store", store, "-o", tar, "localhost/subid:latest"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    os.chmod(d, 0o755)
    os.chmod(tar, 0o644)
    yield {"tar": tar, "store": store}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def home(user, image_tar):
    # World-traversable, owned by the user: pytest's tmp dirs are 0700 root.
    d = f"/tmp/kapsel-subid-{uuid.uuid4().hex[:8]}"
    os.mkdir(d, 0o755)
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    # Shifted files are not the user's on the host: root removes what is left.
    with open("/proc/self/mountinfo") as f:
        for m in [l.split()[4] for l in f if d in l]:
            subprocess.run(["umount", "-l", m])
    shutil.rmtree(d, ignore_errors=True)


def as_user(home, args, path="/usr/bin:/bin"):
    env = ["env", f"XDG_RUNTIME_DIR={home}/run", f"HOME={home}", f"PATH={path}"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["runuser", "-u", USER, "--"] + env + args, stdout=out, stderr=err,
                           timeout=120)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, p.returncode, out.read().decode(),
                                           err.read().decode())


@pytest.fixture
def k(home, image_tar):
    def run(*args, path="/usr/bin:/bin"):
        return as_user(home, [KAPSEL] + [str(a) for a in args], path)
    r = run("load", "-q", "-i", image_tar["tar"])
    assert r.returncode == 0, r.stderr
    return run


def store_of(home):
    return os.path.join(home, ".local", "share", "kapsel")


def shifted(home):
    """{mapping key: [layer hex, ...]} under <store>/idmapped."""
    d = os.path.join(store_of(home), "idmapped")
    if not os.path.isdir(d):
        return {}
    return {key: sorted(os.listdir(os.path.join(d, key))) for key in os.listdir(d)}


def leftovers(home, name):
    """What a failed run may leave behind, as descriptions (empty: nothing). Shifted layers
    that were unpacked whole stay: they are the mapping's cache, as pulled layers are."""
    store = store_of(home)
    left = [f"container dir {name}"] if os.path.lexists(
        os.path.join(store, "containers", name)) else []
    left += [f"tmp/{e}" for e in os.listdir(os.path.join(store, "tmp"))]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {l.split()[4]}" for l in f if home in l]
    return left


def test_image_owners_show_inside_and_id_shows_the_mapping(user, ranges, home, k):
    r = k("run", "--rm", "localhost/subid", "sh", "-c",
          "cat /proc/self/uid_map /proc/self/gid_map; stat -c '%u:%g %n' /data/f /home/u; id -u")
    assert r.returncode == 0, r.stderr
    lines = [l.split() for l in r.stdout.strip().split("\n")]
    own = [["0", str(user.pw_uid), "1"], ["1", str(START), "65536"]]
    assert lines[0:2] == own
    assert lines[2:4] == [["0", str(user.pw_gid), "1"], ["1", str(START), "65536"]]
    assert lines[4:6] == [["1000:1000", "/data/f"], ["1000:1000", "/home/u"]]
    assert lines[6] == ["0"]
    # On the host the shifted copy belongs to the range, the plain layers stay the user's.
    (key, layers), = shifted(home).items()
    found = [os.path.join(store_of(home), "idmapped", key, h, "data", "f") for h in layers]
    f = [p for p in found if os.path.exists(p)][0]
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (START + 999, START + 999)


def test_u_1000_writes_a_file_the_host_sees_in_the_range(ranges, home, k):
    name = "sub-" + uuid.uuid4().hex[:8]
    r = k("run", "--name", name, "-u", "1000:1000", "localhost/subid", "sh", "-c",
          "id -u; id -g; echo hi > /home/u/new && stat -c '%u:%g' /home/u/new")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "1000", "1000:1000"]
    new = os.path.join(store_of(home), "containers", name, "upper", "home", "u", "new")
    st = os.stat(new)
    assert (st.st_uid, st.st_gid) == (START + 999, START + 999)
    # rm removes what the container made as 1000, which the user does not own on the host.
    r = k("rm", name)
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(os.path.join(store_of(home), "containers", name))


def test_a_second_run_reuses_the_shifted_layers(ranges, home, k):
    r = k("run", "--rm", "localhost/subid", "true")
    assert r.returncode == 0, r.stderr
    first = shifted(home)
    (key, layers), = first.items()
    base = os.path.join(store_of(home), "idmapped", key)
    before = {h: os.stat(os.path.join(base, h)) for h in layers}
    r = k("run", "--rm", "localhost/subid", "stat", "-c", "%u", "/data/f")
    assert r.returncode == 0 and r.stdout.strip() == "1000", r.stderr
    assert shifted(home) == first
    for h, st in before.items():
        now = os.stat(os.path.join(base, h))
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), h
    # rmi takes the shifted copies with the layers.
    r = k("rmi", "localhost/subid")
    assert r.returncode == 0, r.stderr
    assert shifted(home) == {}


def test_another_mapping_gets_its_own_copies(ranges, home, k):
    assert k("run", "--rm", "localhost/subid", "true").returncode == 0
    ranges([f"{USER}:{START + 100000}:65536"], [f"{USER}:{START + 100000}:65536"])
    r = k("run", "--rm", "localhost/subid", "stat", "-c", "%u", "/data/f")
    assert r.returncode == 0 and r.stdout.strip() == "1000", r.stderr
    assert len(shifted(home)) == 2


def test_roots_runs_are_unaffected(image_tar, ranges, home, k):
    assert k("run", "--rm", "localhost/subid", "true").returncode == 0
    store = image_tar["store"]
    r = subprocess.run([KAPSEL, "--store", store, "run", "--rm", "localhost/subid", "sh", "-c",
                        "cat /proc/self/uid_map; stat -c %u /data/f"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "4294967295", "1000"]
    assert not os.path.exists(os.path.join(store, "idmapped"))
    owners = set()
    for d, _, files in os.walk(os.path.join(store, "layers")):
        if "f" in files and d.endswith("/data"):
            owners.add(os.stat(os.path.join(d, "f")).st_uid)
    assert owners == {1000}


def test_without_ranges_only_the_user_is_mapped(user, ranges, home, k):
    ranges([], [])
    r = k("--debug", "run", "--rm", "localhost/subid", "sh", "-c", "cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    assert [l.split() for l in r.stdout.strip().split("\n")] == [["0", str(user.pw_uid), "1"]]
    assert f"no /etc/subuid and /etc/subgid ranges for {USER}" in r.stderr
    assert shifted(home) == {}
    r = k("run", "--rm", "-u", "1000", "localhost/subid", "true")
    assert r.returncode == 125
    assert "maps only root (0:0)" in r.stderr, r.stderr


def test_a_range_too_small_for_an_owner_is_an_error(ranges, home, k):
    ranges([f"{USER}:{START}:500"], [f"{USER}:{START}:500"])
    name = "sub-" + uuid.uuid4().hex[:8]
    r = k("run", "--rm", "--name", name, "localhost/subid", "true")
    assert r.returncode == 125, r.stdout
    msg = r.stderr.strip().split("\n")[-1]
    assert "uid 1000 is outside" in msg and f"{START}:500" in msg and "uids 0-500" in msg, msg
    assert leftovers(home, name) == []
    # The layer holding the owner 1000 was not kept half-shifted (busybox's below it may be).
    for key, layers in shifted(home).items():
        for h in layers:
            assert not os.path.lexists(
                os.path.join(store_of(home), "idmapped", key, h, "data")), h


def test_a_user_beyond_the_ranges_is_an_error(ranges, home, k):
    r = k("run", "--rm", "-u", "70000", "localhost/subid", "true")
    assert r.returncode == 125
    assert "user 70000:0 does not exist" in r.stderr and "uids 0-65536" in r.stderr, r.stderr


def test_malformed_lines_are_ignored_as_shadow_does(user, ranges, home, k):
    bad = [f"{USER}:abc:10", f"{USER}:{START + 70000}", f"{USER}:-5:10", f"{USER}:{START}:0"]
    ranges(bad + [f"{USER}:{START}:65536"], [f"{USER}:{START}:65536"] + bad)
    r = k("--debug", "run", "--rm", "localhost/subid", "sh", "-c",
          "cat /proc/self/uid_map; stat -c %u /data/f")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", str(user.pw_uid), "1", "1", str(START), "65536", "1000"]
    assert "/etc/subuid:" in r.stderr and "ignored" in r.stderr


def test_ranges_for_uids_only_are_an_error(ranges, home, k):
    ranges(None, [])
    name = "sub-" + uuid.uuid4().hex[:8]
    r = k("run", "--rm", "--name", name, "localhost/subid", "true")
    assert r.returncode == 125
    assert "has ranges in /etc/subuid but none in /etc/subgid" in r.stderr, r.stderr
    assert leftovers(home, name) == []


def test_newuidmap_missing_is_an_error(ranges, home, k):
    empty = os.path.join(home, "empty-path")
    os.mkdir(empty)
    name = "sub-" + uuid.uuid4().hex[:8]
    r = k("run", "--rm", "--name", name, "localhost/subid", "true", path=empty)
    assert r.returncode == 125
    assert "newuidmap not found in PATH" in r.stderr and "uidmap" in r.stderr, r.stderr
    assert leftovers(home, name) == []
    assert json.loads(k("ps", "-a", "--format", "json").stdout or "[]") == []
