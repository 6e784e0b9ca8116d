"""Named volumes, as podman's: `kapsel volume create/ls/inspect/rm/prune`, and their use by
`kapsel run -v NAME:/path` and `--mount type=volume` (created on first use, filled from the
image once, data outliving the container, rm refused while a container uses one). Every
kapsel call gets a private --store and --root."""
import json
import os
import re
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root]


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=60):
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout)


@pytest.fixture
def k(kapsel, tmp_path):
    """A store of its own per test: volume ls and prune see only what the test made."""
    runner = K(kapsel, str(tmp_path / "store"), str(tmp_path / "state"))
    r = runner("run", "--rm", "busybox", "true")
    assert r.returncode == 0, f"the embedded busybox image does not run: {r.stderr}"
    yield runner
    r = runner("ps", "-a", "--format", "json")
    for e in json.loads(r.stdout or "[]"):
        runner("rm", "-f", e["Names"][0])


def names(k):
    return [v["Name"] for v in json.loads(k("volume", "ls", "--format", "json",
                                            check=True).stdout)]


def data_dir(k, name):
    return os.path.join(k.store, "volumes", name, "_data")


def test_create_ls_inspect_rm(k):
    assert names(k) == []
    r = k("volume", "create", "vol1")
    assert (r.returncode, r.stdout) == (0, "vol1\n"), r.stderr
    r = k("volume", "create")
    anon = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anon), r.stdout
    assert names(k) == sorted(["vol1", anon])
    table = k("volume", "ls", check=True).stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert ["local", "vol1"] in [l.split() for l in table[1:]]
    assert k("volume", "ls", "-q", check=True).stdout.split() == sorted(["vol1", anon])
    (v,) = json.loads(k("volume", "inspect", "vol1", check=True).stdout)
    assert (v["Name"], v["Driver"], v["Scope"]) == ("vol1", "local", "local")
    assert v["Mountpoint"] == data_dir(k, "vol1") and os.path.isdir(v["Mountpoint"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v["CreatedAt"]), v
    assert v["Containers"] == [] and v["MountCount"] == 0
    # The definition on disk is whole JSON.
    with open(os.path.join(k.store, "volumes", "vol1", "volume.json")) as f:
        assert json.load(f)["Name"] == "vol1"
    r = k("volume", "rm", "vol1", anon)
    assert r.returncode == 0 and r.stdout.split() == ["vol1", anon], r.stderr
    assert names(k) == []
    assert not os.path.exists(os.path.join(k.store, "volumes", "vol1"))


def test_errors(k, tmp_path):
    k("volume", "create", "dup", check=True)
    r = k("volume", "create", "dup")
    assert r.returncode != 0 and "volume dup already exists" in r.stderr
    for bad in ("a/b", "..", ".hidden", "-x", "_x", "x y", "../../escape", "x" * 129, ""):
        r = k("volume", "create", "--", bad)
        assert r.returncode != 0 and "volume name" in r.stderr, (bad, r.stderr)
    # Nothing was made for them, inside the store or out of it.
    assert sorted(os.listdir(os.path.join(k.store, "volumes"))) == [".lock", "dup"]
    assert not os.path.exists(os.path.join(k.store, "escape"))
    for cmd in (("inspect", "nope"), ("rm", "nope")):
        r = k("volume", *cmd)
        assert r.returncode != 0 and "no such volume nope" in r.stderr, (cmd, r.stderr)
    r = k("volume", "ls", "--format", "yaml")
    assert r.returncode != 0 and "--format yaml" in r.stderr
    r = k("volume", "frob")
    assert r.returncode != 0 and "frob" in r.stderr
    # -v with something that is neither a path nor a name.
    r = k("run", "--rm", "-v", "a/b:/data", "busybox", "true")
    assert r.returncode == 125 and "-v a/b:/data" in r.stderr, r.stderr
    r = k("run", "--rm", "-v", "good:/data:bogus", "busybox", "true")
    assert r.returncode == 125 and '"bogus"' in r.stderr, r.stderr
    assert "good" not in names(k), "a refused run made its volume"


def test_data_outlives_the_container(k):
    """Created on first use; a second container sees what the first wrote."""
    r = k("run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert r.returncode == 0, r.stderr
    assert names(k) == ["shared"]
    r = k("run", "--rm", "--mount", "type=volume,src=shared,dst=/elsewhere", "busybox",
          "cat", "/elsewhere/f")
    assert (r.returncode, r.stdout) == (0, "kept\n"), r.stderr
    with open(os.path.join(data_dir(k, "shared"), "f")) as f:
        assert f.read() == "kept\n"
    # Read-only, both spellings.
    for args in (["-v", "shared:/data:ro"], ["--mount", "type=volume,src=shared,dst=/data,ro"]):
        r = k("run", "--rm", *args, "busybox", "sh", "-c", "cat /data/f; touch /data/g")
        assert r.stdout == "kept\n" and "Read-only" in r.stderr, (args, r.stderr)


def test_copy_up(k):
    """A new volume gets the image's content at its destination, once, as podman does;
    symlinks are copied as links; nocopy leaves it empty."""
    r = k("run", "--rm", "-v", "etc:/etc", "busybox", "sh", "-c",
          "grep ^root: /etc/passwd && rm /etc/group")
    assert r.returncode == 0 and r.stdout.startswith("root:"), (r.stdout, r.stderr)
    d = data_dir(k, "etc")
    assert os.path.isfile(os.path.join(d, "passwd"))
    # Not copied again: what the first container removed stays removed.
    r = k("run", "--rm", "-v", "etc:/etc", "busybox", "test", "-e", "/etc/group")
    assert r.returncode == 1, r.stderr
    # The image's /bin holds busybox's links: they arrive as links, not followed.
    r = k("run", "--rm", "-v", "bin:/bin", "busybox", "true")
    assert r.returncode == 0, r.stderr
    ash = os.path.join(data_dir(k, "bin"), "ash")
    assert os.path.islink(ash) and os.readlink(ash) == "busybox"
    assert os.path.isfile(os.path.join(data_dir(k, "bin"), "busybox"))
    # Listing, modes and times as the image has them.
    ls = "ls -la --full-time /bin | tail -n +4"
    img = k("run", "--rm", "busybox", "sh", "-c", ls, check=True).stdout
    vol = k("run", "--rm", "-v", "bin:/bin", "busybox", "sh", "-c", ls, check=True).stdout
    assert img == vol and img
    r = k("run", "--rm", "-v", "empty:/etc:nocopy", "busybox", "ls", "-A", "/etc")
    assert (r.returncode, r.stdout) == (0, ""), (r.stdout, r.stderr)
    r = k("run", "--rm", "--mount", "type=volume,src=empty2,dst=/etc,volume-nocopy",
          "busybox", "ls", "-A", "/etc")
    assert (r.returncode, r.stdout) == (0, ""), (r.stdout, r.stderr)
    # What a new volume already holds is kept; the rest of the image's content joins it.
    k("volume", "create", "merged", check=True)
    with open(os.path.join(data_dir(k, "merged"), "passwd"), "w") as f:
        f.write("mine\n")
    r = k("run", "--rm", "-v", "merged:/etc", "busybox", "sh", "-c",
          "cat /etc/passwd; grep -c ^root: /etc/group")
    assert (r.returncode, r.stdout) == (0, "mine\n1\n"), (r.stdout, r.stderr)
    # A volume on a path the image lacks starts empty.
    r = k("run", "--rm", "-v", "fresh:/not/in/image", "busybox", "ls", "-A", "/not/in/image")
    assert (r.returncode, r.stdout) == (0, ""), (r.stdout, r.stderr)


def test_rm_refused_while_used(k):
    c = "vc-" + uuid.uuid4().hex[:8]
    r = k("run", "--name", c, "-v", "used:/data", "busybox", "true")
    assert r.returncode == 0, r.stderr
    k("volume", "create", "unused", check=True)
    (v,) = json.loads(k("volume", "inspect", "used", check=True).stdout)
    assert v["Containers"] == [c]
    # The exited container still holds it (podman refuses too).
    r = k("volume", "rm", "used")
    assert r.returncode != 0 and f"in use by container {c}" in r.stderr, r.stderr
    assert os.path.isdir(data_dir(k, "used"))
    # prune takes only what no container uses.
    r = k("volume", "prune")
    assert r.returncode == 0 and r.stdout.split() == ["unused"], (r.stdout, r.stderr)
    assert names(k) == ["used"]
    # Once the container is gone, the volume may go.
    k("rm", c, check=True)
    k("volume", "rm", "used", check=True)
    assert names(k) == []


def test_rm_force_removes_the_container(k):
    c = "vf-" + uuid.uuid4().hex[:8]
    r = k("run", "-d", "--name", c, "-v", "busy:/data", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = k("volume", "rm", "busy")
    assert r.returncode != 0 and c in r.stderr
    r = k("volume", "rm", "-f", "busy")
    assert r.returncode == 0, r.stderr
    assert names(k) == []
    ps = json.loads(k("ps", "-a", "--format", "json", check=True).stdout)
    assert c not in [e["Names"][0] for e in ps]
