"""The image store through the real binary: load of the embedded busybox layout, images /
image inspect / save -> load round trips, a `podman save` docker-archive, rmi and prune, and
hostile tarballs that must leave the store exactly as it was (listed before and after)."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

import clients
from conftest import KAPSEL

LAYOUT = os.environ.get("KAPSEL_DEFAULT_IMAGE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL))), "images", "busybox-oci")
NAME = "docker.io/library/busybox:latest"


@pytest.fixture
def layout():
    if not os.path.isfile(os.path.join(LAYOUT, "index.json")):
        pytest.skip(f"no embedded busybox layout at {LAYOUT} (needs busybox-static at build)")
    return LAYOUT


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


def k(kapsel, store, *args, check=False):
    r = subprocess.run([kapsel, "--store", store] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"kapsel {' '.join(map(str, args))}: {r.returncode}: {r.stderr}")
    return r


def listing(store):
    """Every path under the store with its type and size (lock files are content-free)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(store):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, store)] = (st.st_mode, st.st_size if not os.path.isdir(p)
                                              else 0)
    return out


def images_json(kapsel, store):
    return json.loads(k(kapsel, store, "images", "--format", "json", check=True).stdout)


def test_load_embedded_layout(kapsel, store, layout):
    r = k(kapsel, store, "load", layout, check=True)
    assert r.stdout == f"Loaded image: {NAME}\n"
    imgs = images_json(kapsel, store)
    # podman's fields: one object per image, its names together, the full Id
    assert [i["Names"] for i in imgs] == [[NAME]] and imgs[0]["RepoTags"] == [NAME]
    assert len(imgs[0]["Id"]) == 64 and imgs[0]["Size"] > 100000
    assert imgs[0]["Created"] > 0 and imgs[0]["Digest"].startswith("sha256:")
    table = k(kapsel, store, "images", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert table[1].split()[:3] == ["docker.io/library/busybox", "latest", imgs[0]["Id"][:12]]
    assert k(kapsel, store, "images", "-q", check=True).stdout == imgs[0]["Id"][:12] + "\n"
    # Loading again is a no-op that still succeeds.
    k(kapsel, store, "load", "-i", layout, check=True)
    assert listing(os.path.join(store, "tmp")) == {}
    assert oct(os.stat(store).st_mode & 0o777) == oct(0o700)


def test_inspect(kapsel, store, layout):
    k(kapsel, store, "load", layout, check=True)
    for ref in ("busybox", NAME, images_json(kapsel, store)[0]["Id"][:12]):
        doc = json.loads(k(kapsel, store, "image", "inspect", ref, check=True).stdout)
        assert len(doc) == 1
        img = doc[0]
        assert img["RepoTags"] == [NAME]
        assert img["Config"]["Cmd"] == ["sh"]
        assert img["Config"]["Env"][0].startswith("PATH=")
        assert img["Os"] == "linux" and img["Architecture"]
        assert len(img["Layers"]) == 1 and img["Layers"][0]["MediaType"].endswith("tar+gzip")
        assert img["RootFS"]["Layers"] == [img["Layers"][0]["DiffID"]]
    r = k(kapsel, store, "image", "inspect", "nosuchimage")
    assert r.returncode == 125 and "not found" in r.stderr


def layer_dir(store, diff_id):
    return os.path.join(store, "layers", diff_id.split(":")[1])


def tree(root):
    """path -> (type, mode, uid, gid, size or link target) for every entry under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            extra = os.readlink(p) if os.path.islink(p) else (
                st.st_size if os.path.isfile(p) else 0)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, extra)
    return out


def test_layer_matches_tar(kapsel, store, layout):
    """The unpacked layer is what the tar says, entry by entry."""
    k(kapsel, store, "load", layout, check=True)
    img = json.loads(k(kapsel, store, "image", "inspect", "busybox", check=True).stdout)[0]
    blob = img["Layers"][0]["Digest"].split(":")[1]
    got = tree(layer_dir(store, img["Layers"][0]["DiffID"]))
    want = {}
    with tarfile.open(os.path.join(layout, "blobs", "sha256", blob)) as t:
        for m in t.getmembers():
            name = m.name.rstrip("/")
            if name in (".", ""):
                continue
            kind = {tarfile.DIRTYPE: 0o040000, tarfile.SYMTYPE: 0o120000}.get(m.type, 0o100000)
            extra = m.linkname if m.issym() else (m.size if m.isfile() else 0)
            want[name] = (kind | (m.mode if not m.issym() else 0o777), m.uid, m.gid, extra)
    assert got == want


def test_save_load_roundtrip(kapsel, store, layout, tmp_path):
    k(kapsel, store, "load", layout, check=True)
    archive = tmp_path / "busybox.tar"
    k(kapsel, store, "save", "-o", archive, "busybox", check=True)
    with tarfile.open(archive) as t:
        names = t.getnames()
        assert "oci-layout" in names and "index.json" in names
        index = json.load(t.extractfile("index.json"))
    ann = index["manifests"][0]["annotations"]
    assert ann["io.containerd.image.name"] == NAME
    assert ann["org.opencontainers.image.ref.name"] == "latest"
    other = str(tmp_path / "other")
    r = k(kapsel, other, "load", "-i", archive, check=True)
    assert r.stdout == f"Loaded image: {NAME}\n"
    a, b = images_json(kapsel, store)[0], images_json(kapsel, other)[0]
    assert (a["Id"], a["Digest"], a["Size"]) == (b["Id"], b["Digest"], b["Size"])
    img = json.loads(k(kapsel, store, "image", "inspect", "busybox", check=True).stdout)[0]
    diff = img["Layers"][0]["DiffID"]
    assert tree(layer_dir(store, diff)) == tree(layer_dir(other, diff))
    # skopeo reads what we wrote (a real OCI consumer), when it is installed.
    if clients.shutil.which("skopeo"):
        r = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["Layers"] == [img["Layers"][0]["Digest"]]


@pytest.mark.podman
def test_load_podman_docker_archive(kapsel, store, layout, tmp_path):
    clients.require("podman")
    k(kapsel, store, "load", layout, check=True)
    oci = tmp_path / "bb-oci.tar"
    k(kapsel, store, "save", "-o", oci, "busybox", check=True)
    # podman refuses a runroot longer than 50 characters: a short private dir.
    base = Path(tempfile.mkdtemp(prefix="kpm-"))
    pm = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
          "--tmpdir", str(base / "tmp"), "--storage-driver", "vfs"]
    # No storage.conf of the host may leak in: an empty one, the driver on the command line.
    (tmp_path / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{base}/run"\ngraphroot = "{base}/root"\n')
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(tmp_path / "storage.conf"),
               XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    try:
        for args in (["load", "-i", str(oci)],
                     ["save", "--format", "docker-archive", "-o", str(tmp_path / "d.tar"),
                      NAME]):
            r = subprocess.run(pm + args, capture_output=True, text=True, timeout=120, env=env)
            assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(pm + ["system", "reset", "--force"], capture_output=True, env=env)
        clients.shutil.rmtree(base, ignore_errors=True)
    other = str(tmp_path / "other")
    r = k(kapsel, other, "load", tmp_path / "d.tar", check=True)
    assert r.stdout == f"Loaded image: {NAME}\n"
    a, b = images_json(kapsel, store)[0], images_json(kapsel, other)[0]
    assert a["Id"] == b["Id"]  # the same config blob
    img = json.loads(k(kapsel, store, "image", "inspect", "busybox", check=True).stdout)[0]
    diff = img["Layers"][0]["DiffID"]
    assert tree(layer_dir(store, diff)) == tree(layer_dir(other, diff))


def test_rmi_and_prune(kapsel, store, layout):
    k(kapsel, store, "load", layout, check=True)
    img = json.loads(k(kapsel, store, "image", "inspect", "busybox", check=True).stdout)[0]
    # A container using the image (what `kapsel run` records): rmi refuses without --force.
    refs = os.path.join(store, "refs")
    with open(os.path.join(refs, "ctr1"), "w") as f:
        f.write(img["Digest"])
    r = k(kapsel, store, "rmi", "busybox")
    assert r.returncode == 125 and "in use by container ctr1" in r.stderr
    assert images_json(kapsel, store)
    k(kapsel, store, "rmi", "--force", "busybox", check=True)
    assert images_json(kapsel, store) == []
    # The container still holds the content: prune keeps it.
    assert k(kapsel, store, "prune", check=True).stdout == "Freed 0 bytes\n"
    assert os.listdir(os.path.join(store, "layers"))
    os.unlink(os.path.join(refs, "ctr1"))
    freed = int(k(kapsel, store, "prune", check=True).stdout.split()[1])
    assert freed > 100000
    assert os.listdir(os.path.join(store, "blobs", "sha256")) == []
    assert os.listdir(os.path.join(store, "layers")) == []
    # Plain rmi removes the name and the content only it used.
    k(kapsel, store, "load", layout, check=True)
    k(kapsel, store, "rmi", "busybox", check=True)
    assert os.listdir(os.path.join(store, "blobs", "sha256")) == []
    assert os.listdir(os.path.join(store, "layers")) == []
    r = k(kapsel, store, "rmi", "busybox")
    assert r.returncode == 125 and "not found" in r.stderr


# ---- hostile archives ----------------------------------------------------------------------

def _tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, arg in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = kind, 0o644
            data = None
            if kind == tarfile.REGTYPE:
                data = arg or b"x"
                ti.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = arg
            t.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def oci_archive(path, layer_tar, *, compress="gzip", diff_id=None, corrupt_blob=False,
                truncate=False):
    """An oci-archive with one layer; knobs break it in one specific way each."""
    blobs = {}

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return "sha256:" + d, len(data)

    if compress == "gzip":
        layer, mt = gzip.compress(layer_tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    elif compress == "zstd":
        layer = subprocess.run(["zstd", "-q", "-c"], input=layer_tar, capture_output=True,
                               check=True).stdout
        mt = "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        layer, mt = layer_tar, "application/vnd.oci.image.layer.v1.tar"
    if truncate:
        layer = layer[:len(layer) // 2]
    ldigest, lsize = blob(layer)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers",
        "diff_ids": [diff_id or "sha256:" + hashlib.sha256(layer_tar).hexdigest()]}}).encode()
    cdigest, csize = blob(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": cdigest, "size": csize},
                      "layers": [{"mediaType": mt, "digest": ldigest, "size": lsize}]}).encode()
    mdigest, msize = blob(man)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
        "size": msize, "annotations": {"org.opencontainers.image.ref.name": "localhost/evil:1"}}]})
    with tarfile.open(path, "w") as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index.encode())
        for d, data in blobs.items():
            if corrupt_blob and d == ldigest.split(":")[1]:
                data = data[:-1] + bytes([data[-1] ^ 1])
            add(f"blobs/sha256/{d}", data)
    return path


R, L, H, D = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
GOOD = [("etc/", D, None), ("etc/hello", R, b"hello")]
HOSTILE = {
    "dotdot": (dict(layer_tar=_tar([("../../evil", R, None)])), "../../evil"),
    "symlink-write-through": (dict(layer_tar=_tar([("s", L, "/tmp"), ("s/evil", R, None)])),
                              "s/evil"),
    "hardlink-outside": (dict(layer_tar=_tar([("h", H, "../../../../etc/passwd")])), "\"h\""),
    "diff-id-mismatch": (dict(layer_tar=_tar(GOOD), diff_id="sha256:" + "1" * 64),
                         "diff_id mismatch"),
    "blob-digest-mismatch": (dict(layer_tar=_tar(GOOD), corrupt_blob=True), "digest mismatch"),
    "truncated-gzip": (dict(layer_tar=_tar(GOOD) * 20, truncate=True), "gzip"),
    "truncated-zstd": (dict(layer_tar=_tar(GOOD) * 20, compress="zstd", truncate=True), "zstd"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_load_leaves_store_unchanged(kapsel, store, layout, tmp_path, case):
    if "zstd" in case and not clients.shutil.which("zstd"):
        pytest.skip("needs the zstd tool to build the archive")
    k(kapsel, store, "load", layout, check=True)
    before = listing(store)
    kwargs, needle = HOSTILE[case]
    archive = oci_archive(str(tmp_path / f"{case}.tar"), **kwargs)
    r = k(kapsel, store, "load", archive)
    assert r.returncode == 125, r.stdout
    assert needle in r.stderr, r.stderr
    after = listing(store)
    assert after == before
    assert [i["Names"] for i in images_json(kapsel, store)] == [[NAME]]
    assert not os.path.exists("/tmp/evil")


def test_good_archive_control(kapsel, store, tmp_path):
    """The same builder without a flaw loads: the hostile cases fail for their flaw alone."""
    for compress in ("gzip", "none") + (("zstd",) if clients.shutil.which("zstd") else ()):
        archive = oci_archive(str(tmp_path / f"good-{compress}.tar"), _tar(GOOD),
                              compress=compress)
        r = k(kapsel, store, "load", archive, check=True)
        assert r.stdout == "Loaded image: localhost/evil:1\n"
