"""The image store against hostile shapes and bad luck (issue 10): a layer 1,500 directories deep
is removed by rmi and prune under `ulimit -n 1024`; a load that fails leaves no temp directory
and prune removes what a killed one left; a layer's content is synced before its rename makes
it a layer; the store is 0700, and the rootless fallback under /tmp is used only when the user
owns it."""
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from test_image_store import D, R, _tar, k, oci_archive, store  # noqa: F401 (fixture)
from test_rootless import USER, user  # noqa: F401 (user: the shared test-user fixture)

DEPTH = 1500
BAD_DIFF_ID = "sha256:" + "1" * 64


@pytest.fixture(autouse=True)
def remove_deep_store(store):
    """Python's rmtree (pytest's tmp cleanup) recurses per level and fails on 1,500: should a
    test fail and leave a deep tree, rm -rf removes it."""
    yield
    subprocess.run(["rm", "-rf", "--one-file-system", store], check=False)


def deep_tar(depth=DEPTH):
    entries, p = [], ""
    for _ in range(depth):
        p += "d/"
        entries.append((p, D, None))
    entries.append((p + "f", R, b"deep"))
    return _tar(entries)


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def klim(kapsel, store, *args):
    """kapsel under `ulimit -n 1024`."""
    return subprocess.run([kapsel, "--store", store] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=120, preexec_fn=low_nofile)


def entries(store, sub):
    return sorted(os.listdir(os.path.join(store, sub)))


@pytest.mark.parametrize("how", ["rmi", "prune"])
def test_deep_layer_removed_under_low_nofile(kapsel, store, tmp_path, how):
    archive = oci_archive(str(tmp_path / "deep.tar"), deep_tar())
    r = klim(kapsel, store, "load", archive)
    assert r.returncode == 0, r.stderr
    assert len(entries(store, "layers")) == 1
    if how == "rmi":
        r = klim(kapsel, store, "rmi", "localhost/evil:1")
    else:
        # rmi would collect the layer itself: drop the name by hand, leave it to prune.
        with open(os.path.join(store, "images.json"), "w") as f:
            json.dump({"images": {}}, f)
        r = klim(kapsel, store, "prune")
    assert r.returncode == 0, r.stderr
    assert entries(store, "layers") == []
    assert entries(store, "blobs/sha256") == []
    assert entries(store, "tmp") == []


def test_failed_load_of_deep_layer_leaves_no_temp(kapsel, store, tmp_path):
    archive = oci_archive(str(tmp_path / "bad.tar"), deep_tar(), diff_id=BAD_DIFF_ID)
    r = klim(kapsel, store, "load", archive)
    assert r.returncode == 125 and "diff_id mismatch" in r.stderr, r.stderr
    assert entries(store, "tmp") == []
    assert entries(store, "layers") == []


def test_prune_removes_what_a_killed_load_left(kapsel, store, tmp_path):
    # Many files: the unpack takes long enough to be caught in the middle.
    big = _tar([(f"f{i}", R, os.urandom(4096)) for i in range(4000)])
    archive = oci_archive(str(tmp_path / "big.tar"), big, compress="none")
    os.makedirs(os.path.join(store, "tmp"), exist_ok=True)
    p = subprocess.Popen([kapsel, "--store", store, "load", archive],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while time.monotonic() < end and not any(
            n.startswith("layer-") for n in os.listdir(os.path.join(store, "tmp"))):
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = entries(store, "tmp")
    if not any(n.startswith("layer-") for n in left):
        pytest.skip("the load finished before it could be killed mid-unpack")
    # A dead writer of images.json and of a ref left their temp files too.
    open(os.path.join(store, ".images.json.tmp.99999"), "w").close()
    open(os.path.join(store, "refs", ".ctr.tmp.99999"), "w").close()
    r = k(kapsel, store, "prune")
    assert r.returncode == 0, r.stderr
    assert entries(store, "tmp") == []
    assert not os.path.exists(os.path.join(store, ".images.json.tmp.99999"))
    assert entries(store, "refs") == []
    assert entries(store, "layers") == []


def test_layer_synced_before_rename(kapsel, store, tmp_path):
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    archive = oci_archive(str(tmp_path / "good.tar"), _tar([("etc/", D, None),
                                                           ("etc/hello", R, b"hello")]))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")  # LeakSanitizer refuses ptrace
    r = subprocess.run(["strace", "-f", "-o", str(tmp_path / "trace"), "-e",
                        "trace=syncfs,fsync,fdatasync,rename,renameat,renameat2",
                        kapsel, "--store", store, "load", archive],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    calls = [line.split(None, 1)[1] for line in open(tmp_path / "trace")
             if "(" in line and "resumed" not in line]
    renames = [i for i, c in enumerate(calls) if c.startswith("rename") and '"layers/' in c]
    assert len(renames) == 1, calls
    before = calls[:renames[0]]
    last_layer_sync = max((i for i, c in enumerate(before) if c.startswith("syncfs(")),
                          default=None)
    assert last_layer_sync is not None, calls
    # ... and after the layer was written: nothing of the layer is renamed in between.
    assert not any(c.startswith("rename") for c in before[last_layer_sync + 1:]), calls


def test_existing_store_made_private(kapsel, store):
    os.makedirs(store, 0o755)
    os.chmod(store, 0o755)
    r = k(kapsel, store, "images")
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(store).st_mode & 0o777) == oct(0o700)
    assert f"store {store} was mode 0755" in r.stderr
    # Already private: nothing to say.
    r = k(kapsel, store, "images")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


@pytest.mark.rootless
@pytest.mark.parametrize("prep,needle", [
    ("", None),
    ("mkdir -m 0755 /tmp/.local", "store fallback /tmp/.local is owned by uid 0"),
    ("mkdir -m 0777 /tmp/.local && chown {user} /tmp/.local",
     "store fallback /tmp/.local is writable by others (mode 0777)"),
    ("mkdir -p -m 0700 /tmp/.local/share && chown -R {user} /tmp/.local &&"
     " chmod 0775 /tmp/.local/share", "store fallback /tmp/.local/share is writable by others"),
    ("mkdir -m 0700 /tmp/elsewhere && chown {user} /tmp/elsewhere &&"
     " ln -s /tmp/elsewhere /tmp/.local", "store fallback /tmp/.local"),
], ids=["fresh", "root-owned", "world-writable", "group-writable-share", "symlink"])
def test_rootless_tmp_fallback(kapsel, user, prep, needle):
    """No HOME: the store goes under /tmp only if the user owns every part of the path. A
    private mount namespace with its own tmpfs on /tmp: the host's /tmp is never touched."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    # A checkout under /tmp (a clean clone there) must stay reachable under the new tmpfs:
    # keep the old /tmp aside and bind the checkout's top directory back.
    keep, saved = "", None
    if kapsel.startswith("/tmp/"):
        top = "/tmp/" + kapsel.split("/")[2]
        saved = tempfile.mkdtemp(prefix="kapsel-test-tmp.", dir="/run")
        keep = (f"saved={saved} && mount --rbind /tmp $saved && "
                f"mount -t tmpfs -o mode=1777 tmpfs /tmp && mkdir -p {top} && "
                f"mount --rbind $saved/{top[5:]} {top} && ")
    script = (keep + ("" if keep else "mount -t tmpfs -o mode=1777 tmpfs /tmp && ") +
              (prep.format(user=USER) + " && "
              if prep else "") + f"runuser -u {USER} -- env -i PATH=/usr/bin:/bin "
              f"ASAN_OPTIONS=detect_leaks=0 {kapsel} images -q; echo rc=$?; "
              "stat -c '%n %U %a' /tmp/.local /tmp/.local/share /tmp/.local/share/kapsel")
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            script], capture_output=True, text=True, timeout=60)
    finally:
        if saved:
            os.rmdir(saved)
    if "rc=" not in r.stdout:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    if needle is None:
        assert "rc=0" in r.stdout, r.stderr
        assert r.stdout.splitlines()[-3:] == [
            f"/tmp/.local {USER} 700", f"/tmp/.local/share {USER} 700",
            f"/tmp/.local/share/kapsel {USER} 700"], r.stdout
    else:
        assert "rc=1" in r.stdout, (r.stdout, r.stderr)
        err = [line for line in r.stderr.splitlines() if line.startswith("kapsel:")]
        assert len(err) == 1 and needle in err[0], r.stderr
