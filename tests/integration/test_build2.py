"""`kapsel build` flags beyond the basics (--layers=false, --squash, --platform, --format,
--compression, --timestamp/SOURCE_DATE_EPOCH, ADD --chown of a tar), SIGINT during a RUN,
`kapsel push` cross-repository mounts and --format conversion against Debian's
docker-registry on 127.0.0.1, and a comparison with `buildah bud` of the same Containerfile.
Every call gets a private --store and --root."""
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request

import pytest

import clients
from registry import Registry

pytestmark = [pytest.mark.root]

MT_OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def argv(self, *args):
        return [self.binary, "--store", self.store, "--root", self.root] + [str(a) for a in args]

    def __call__(self, *args, check=False, timeout=120, env=None):
        e = dict(os.environ)
        e.pop("REGISTRY_AUTH_FILE", None)
        e.update(env or {})
        return clients.run(self.argv(*args), check=check, timeout=timeout, env=e)

    def blob_path(self, digest):
        return os.path.join(self.store, "blobs/sha256", digest.split(":")[1])

    def blob(self, digest):
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def manifest(self, image):
        info = json.loads(self("image", "inspect", image, check=True).stdout)[0]
        return json.loads(self.blob(info["Digest"]))

    def config(self, image):
        return json.loads(self.blob(self.manifest(image)["config"]["digest"]))

    def members(self, desc):
        """{name: TarInfo} of a layer blob (gzip or zstd)."""
        data = self.blob(desc["digest"])
        if desc["mediaType"].endswith("zstd"):
            data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                                  check=True).stdout
        else:
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            return {m.name.rstrip("/"): m for m in t.getmembers()}


@pytest.fixture
def k(kapsel, tmp_path):
    store, root = tmp_path / "store", tmp_path / "state"
    store.mkdir(mode=0o700)
    root.mkdir()
    return K(kapsel, str(store), str(root))


def context(tmp_path, containerfile, files=None, name="ctx"):
    ctx = tmp_path / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(containerfile)
    for n, content in (files or {}).items():
        p = ctx / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return ctx


def leftovers(k):
    tmp = os.path.join(k.store, "tmp")
    dirs = [d for d in os.listdir(tmp) if d.startswith("build-")] if os.path.isdir(tmp) else []
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if k.store in line]
    states = os.listdir(k.root) if os.path.isdir(k.root) else []
    return dirs, mounts, states


def names(k, image):
    return [line.split()[0] + ":" + line.split()[1]
            for line in k("images", check=True).stdout.splitlines()[1:]]


STEPS = """\
FROM busybox
COPY a.txt /a
RUN echo x > /b && rm /bin/true
ENV X=1
RUN echo y > /c
"""


# ---- --layers=false ----

def test_layers_false_makes_one_layer_for_the_stage(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    # The per-step build makes a layer a step.
    assert k("build", "-q", "-t", "many", ctx).returncode == 0
    base = len(k.manifest("localhost/many")["layers"]) - 3
    r = k("build", "--layers=false", "-t", "one", ctx)
    assert r.returncode == 0, r.stderr
    m = k.manifest("localhost/one")
    assert len(m["layers"]) == base + 1
    top = k.members(m["layers"][-1])
    assert {"a", "b", "c", "bin/.wh.true"} <= set(top)
    cfg = k.config("localhost/one")
    assert sum(1 for h in cfg["history"] if not h.get("empty_layer")) == len(m["layers"])
    assert "X=1" in cfg["config"]["Env"]
    out = k("run", "--rm", "localhost/one", "sh", "-c", "cat /a /b /c; ls /bin/true")
    assert out.stdout == "a\nx\ny\n" and "No such file" in out.stderr
    # --layers=false reuses none of the per-step layers, nor its own.
    assert "Using cache" not in r.stderr
    again = k("build", "--layers=false", "-t", "one2", ctx)
    assert again.returncode == 0 and "Using cache" not in again.stderr
    assert leftovers(k)[:2] == ([], [])


def test_layers_bad_value(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    r = k("build", "--layers=maybe", "-t", "bad", ctx)
    assert r.returncode != 0 and "--layers=maybe" in r.stderr
    assert "localhost/bad" not in k("images").stdout


# ---- --squash ----

def test_squash_makes_one_layer_with_the_base(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    r = k("build", "-q", "--squash", "-t", "sq", ctx)
    assert r.returncode == 0, r.stderr
    m = k.manifest("localhost/sq")
    assert len(m["layers"]) == 1
    files = k.members(m["layers"][0])
    assert {"a", "b", "c", "bin/busybox", "bin/sh"} <= set(files)
    assert "bin/true" not in files
    assert not [n for n in files if os.path.basename(n).startswith(".wh.")]
    cfg = k.config("localhost/sq")
    assert len(cfg["rootfs"]["diff_ids"]) == 1
    assert [h for h in cfg["history"] if not h.get("empty_layer")][0]["created_by"] \
        == "kapsel build --squash"
    out = k("run", "--rm", "localhost/sq", "sh", "-c", "cat /a /b /c; echo $X")
    assert out.stdout == "a\nx\ny\n1\n", out.stderr
    # Without --squash the same build keeps the base's layers apart.
    assert k("build", "-q", "-t", "nosq", ctx).returncode == 0
    assert len(k.manifest("localhost/nosq")["layers"]) > 1


# ---- --platform ----

def test_platform_amd64_accepted_others_refused(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo hi > /x\n")
    ok = k("build", "-q", "--platform", "linux/amd64", "-t", "p1", ctx)
    assert ok.returncode == 0, ok.stderr
    assert k.config("localhost/p1")["architecture"] == "amd64"
    bad = k("build", "-q", "--platform", "linux/arm64", "-t", "p2", ctx)
    assert bad.returncode != 0
    assert "--platform linux/arm64" in bad.stderr and "emulation" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "localhost/p2" not in k("images").stdout


# ---- --format ----

def test_format_docker_media_types(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    r = k("build", "-q", "--format", "docker", "-t", "dk", ctx)
    assert r.returncode == 0, r.stderr
    m = k.manifest("localhost/dk")
    assert m["mediaType"] == MT_DOCKER_MANIFEST
    assert m["config"]["mediaType"] == MT_DOCKER_CONFIG
    assert {l["mediaType"] for l in m["layers"]} == {MT_DOCKER_GZIP}
    assert k("run", "--rm", "localhost/dk", "cat", "/b").stdout == "x\n"
    oci = k("build", "-q", "--format", "oci", "-t", "oc", ctx)
    assert oci.returncode == 0
    assert k.manifest("localhost/oc")["mediaType"] == MT_OCI_MANIFEST


@pytest.mark.parametrize("args,message", [
    (["--format", "xml"], "--format xml"),
    (["--compression", "lz4"], "--compression lz4"),
    (["--format", "docker", "--compression", "zstd"], "zstd"),
    (["--timestamp", "yesterday"], "--timestamp"),
])
def test_bad_format_compression_timestamp(k, tmp_path, args, message):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    r = k("build", "-q", *args, "-t", "bad", ctx)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "localhost/bad" not in k("images").stdout
    assert leftovers(k)[:2] == ([], [])


# ---- --compression ----

@pytest.mark.skipif(not shutil.which("zstd"), reason="needs the zstd CLI to read the layer")
def test_compression_zstd(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    r = k("build", "-q", "--compression", "zstd", "-t", "z", ctx)
    assert r.returncode == 0, r.stderr
    new = k.manifest("localhost/z")["layers"][-3:]
    assert {l["mediaType"] for l in new} == {MT_OCI_ZSTD}
    assert k.blob(new[0]["digest"])[:4] == b"\x28\xb5\x2f\xfd"
    assert "a" in k.members(new[0]) and "b" in k.members(new[1])
    assert k("run", "--rm", "localhost/z", "cat", "/a", "/b", "/c").stdout == "a\nx\ny\n"
    # The cache keeps compressions apart: a gzip build of the same steps makes gzip layers.
    g = k("build", "-q", "-t", "g", ctx)
    assert g.returncode == 0
    assert {l["mediaType"] for l in k.manifest("localhost/g")["layers"][-3:]} == {MT_OCI_GZIP}


# ---- --timestamp and SOURCE_DATE_EPOCH ----

def test_timestamp_builds_at_different_times_are_identical(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    one = k("build", "-q", "--no-cache", "--timestamp", "1600000000", "-t", "t1", ctx)
    time.sleep(1.1)
    os.utime(ctx / "a.txt")  # a newer mtime is clamped too
    two = k("build", "-q", "--no-cache", "--timestamp", "1600000000", "-t", "t2", ctx)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert one.stdout == two.stdout
    m1, m2 = k.manifest("localhost/t1"), k.manifest("localhost/t2")
    assert m1 == m2
    cfg = k.config("localhost/t1")
    assert cfg["created"] == "2020-09-13T12:26:40Z"
    assert {h["created"] for h in cfg["history"][-4:]} == {"2020-09-13T12:26:40Z"}
    for desc in m1["layers"][-2:]:
        assert all(mem.mtime <= 1600000000 for mem in k.members(desc).values())
    # Without it, two builds a second apart differ (created times): the test has teeth.
    three = k("build", "-q", "--no-cache", "-t", "t3", ctx)
    time.sleep(1.1)
    four = k("build", "-q", "--no-cache", "-t", "t4", ctx)
    assert three.stdout != four.stdout


def test_source_date_epoch_builds_at_different_times_are_identical(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    one = k("build", "-q", "--no-cache", "-t", "e1", ctx, env=env)
    time.sleep(1.1)
    two = k("build", "-q", "--no-cache", "-t", "e2", ctx, env=env)
    assert one.returncode == 0 and two.returncode == 0
    assert one.stdout == two.stdout
    assert k.manifest("localhost/e1") == k.manifest("localhost/e2")
    # --timestamp wins over the environment; a cached step of another epoch is not reused.
    three = k("build", "-q", "--timestamp", "1600000000", "-t", "e3", ctx, env=env)
    assert three.returncode == 0
    assert k.config("localhost/e3")["created"] == "2020-09-13T12:26:40Z"
    assert k.manifest("localhost/e3")["layers"][-1] != k.manifest("localhost/e1")["layers"][-1]


# ---- ADD of a local tar with --chown ----

def make_tar(path):
    with tarfile.open(path, "w") as t:
        d = tarfile.TarInfo("in")
        d.type, d.mode, d.uid, d.gid = tarfile.DIRTYPE, 0o755, 123, 456
        t.addfile(d)
        data = b"from tar\n"
        f = tarfile.TarInfo("in/t")
        f.size, f.uid, f.gid = len(data), 123, 456
        t.addfile(f, io.BytesIO(data))
        s = tarfile.TarInfo("in/link")
        s.type, s.linkname, s.uid, s.gid = tarfile.SYMTYPE, "/etc/passwd", 123, 456
        t.addfile(s)


def test_add_tar_with_chown(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nADD --chown=1000:1001 files.tar /opt/\n")
    make_tar(ctx / "files.tar")
    r = k("build", "-q", "-t", "addc", ctx)
    assert r.returncode == 0, r.stderr
    files = k.members(k.manifest("localhost/addc")["layers"][-1])
    for n in ("opt/in", "opt/in/t", "opt/in/link"):
        assert (files[n].uid, files[n].gid) == (1000, 1001), n
    # The link was chowned itself, not followed to the rootfs's /etc/passwd.
    assert "etc/passwd" not in files
    assert k("run", "--rm", "localhost/addc", "cat", "/opt/in/t").stdout == "from tar\n"

    # Without --chown the tar's owners stay.
    ctx2 = context(tmp_path, "FROM busybox\nADD files.tar /opt/\n", name="ctx2")
    make_tar(ctx2 / "files.tar")
    assert k("build", "-q", "-t", "addn", ctx2).returncode == 0
    files = k.members(k.manifest("localhost/addn")["layers"][-1])
    assert (files["opt/in/t"].uid, files["opt/in/t"].gid) == (123, 456)


def test_add_tar_chown_unknown_user(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nADD --chown=nosuchuser files.tar /opt/\n")
    make_tar(ctx / "files.tar")
    r = k("build", "-q", "-t", "addbad", ctx)
    assert r.returncode != 0
    assert "Containerfile:2: ADD" in r.stderr and "nosuchuser" in r.stderr
    assert leftovers(k)[:2] == ([], [])


# ---- SIGINT during a RUN ----

def test_sigint_during_run_leaves_nothing_and_next_build_works(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo before > /x\nRUN sleep 30\n")
    err = tmp_path / "err.txt"
    with open(err, "wb") as ef:
        p = subprocess.Popen(k.argv("build", "-t", "intr", ctx), stdout=subprocess.DEVNULL,
                             stderr=ef)
        deadline = time.time() + 60
        # The RUN's container exists: its state directory is under --root.
        while time.time() < deadline and not (
                "RUN sleep 30" in err.read_text() and os.listdir(k.root)):
            time.sleep(0.1)
        assert os.listdir(k.root), err.read_text()
        time.sleep(0.5)
        started = time.time()
        p.send_signal(signal.SIGINT)
        # Long enough for a build that ignored the signal to end by itself (no harm left).
        rc = p.wait(timeout=60)
    assert time.time() - started < 10, err.read_text()  # not the 30 s of the sleep
    assert rc != 0
    assert "interrupted" in err.read_text()
    assert leftovers(k) == ([], [], [])
    assert "localhost/intr" not in k("images").stdout
    # No process of the RUN survived (its container's `sleep 30`).
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 30" not in [line.strip() for line in ps.splitlines()]
    ok = context(tmp_path, "FROM busybox\nRUN echo after > /y\n", name="ctx2")
    r = k("build", "-q", "-t", "next", ok)
    assert r.returncode == 0, r.stderr
    assert k("run", "--rm", "localhost/next", "cat", "/y").stdout == "after\n"
    assert leftovers(k) == ([], [], [])


# ---- push: cross-repository mount, --format ----

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    missing = [t for t in ("docker-registry", "skopeo") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


def access_log(registry):
    registry.logf.flush()
    with open(registry.log, errors="replace") as f:
        return [line for line in f if '"POST /v2/' in line or '"PUT /v2/' in line
                or '"PATCH /v2/' in line]


def get_manifest(registry, repo, ref, accept):
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"], json.loads(r.read())


def has_blob(registry, repo, digest):
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/blobs/{digest}",
                                 method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


@pytest.fixture
def built(k, tmp_path):
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"})
    k("build", "-q", "-t", "app:1", ctx, check=True)
    return "localhost/app:1"


def test_push_mounts_blobs_from_another_repository(k, built, registry):
    repo1, repo2 = f"m{os.getpid()}/one", f"m{os.getpid()}/two"
    r = k("push", "--insecure", built, f"{registry.host}/{repo1}:1")
    assert r.returncode == 0, r.stderr
    before = len(access_log(registry))
    r = k("push", "--insecure", built, f"{registry.host}/{repo2}:1")
    assert r.returncode == 0, r.stderr
    layers = k.manifest(built)["layers"]
    assert r.stderr.count(f"mounted from {repo1}") == len(layers) + 1  # + the config
    new = access_log(registry)[before:]
    mounts = [line for line in new if "mount=sha256" in line and f"from={repo1}" in line]
    assert len(mounts) == len(layers) + 1
    assert not [line for line in new if '"PATCH ' in line or "/blobs/uploads/" in line
                and '"PUT ' in line]  # no bytes uploaded
    for l in layers:
        assert has_blob(registry, repo2, l["digest"])
    digest, m = get_manifest(registry, repo2, "1", MT_OCI_MANIFEST)
    assert digest == r.stdout.strip()
    # skopeo reads the mounted image whole.
    s = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                        f"docker://{registry.host}/{repo2}:1"], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr


def test_push_mount_declined_falls_back_to_upload(k, built, registry):
    """A record naming a repository that lacks the blob: the registry answers 202 and the
    blob is uploaded instead."""
    repo = f"d{os.getpid()}/dest"
    layers = k.manifest(built)["layers"]
    srcdir = os.path.join(k.store, "blob-sources")
    os.makedirs(srcdir, exist_ok=True)
    for l in layers:
        with open(os.path.join(srcdir, l["digest"][7:]), "w") as f:
            f.write(f"{registry.host}/nowhere/empty\n")
    before = len(access_log(registry))
    r = k("push", "--insecure", built, f"{registry.host}/{repo}:1")
    assert r.returncode == 0, r.stderr
    assert "mounted from" not in r.stderr
    new = access_log(registry)[before:]
    assert len([line for line in new if "from=nowhere/empty" in line]) == len(layers)
    for l in layers:
        assert has_blob(registry, repo, l["digest"])
    digest, _ = get_manifest(registry, repo, "1", MT_OCI_MANIFEST)
    assert digest == r.stdout.strip()


def test_push_format_docker_and_back(k, built, registry, tmp_path):
    repo = f"f{os.getpid()}/app"
    r = k("push", "--insecure", "--format", "docker", built, f"{registry.host}/{repo}:d")
    assert r.returncode == 0, r.stderr
    digest, m = get_manifest(registry, repo, "d", MT_DOCKER_MANIFEST)
    assert digest == r.stdout.strip()
    assert m["mediaType"] == MT_DOCKER_MANIFEST
    assert m["config"]["mediaType"] == MT_DOCKER_CONFIG
    assert {l["mediaType"] for l in m["layers"]} == {MT_DOCKER_GZIP}
    stored = k.manifest(built)
    assert [l["digest"] for l in m["layers"]] == [l["digest"] for l in stored["layers"]]
    assert m["config"]["digest"] == stored["config"]["digest"]
    # skopeo copies it back into an OCI layout and the bytes check out.
    out = tmp_path / "layout"
    s = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                        f"docker://{registry.host}/{repo}:d", f"oci:{out}:d"],
                       capture_output=True, text=True)
    assert s.returncode == 0, s.stderr

    # A docker-built image pushed --format oci gets OCI types; as stored without --format.
    ctx = context(tmp_path, STEPS, {"a.txt": "a\n"}, name="dctx")
    k("build", "-q", "--format", "docker", "-t", "dk:1", ctx, check=True)
    r = k("push", "--insecure", "--format", "oci", "localhost/dk:1", f"{registry.host}/{repo}:o")
    assert r.returncode == 0, r.stderr
    _, m = get_manifest(registry, repo, "o", MT_OCI_MANIFEST)
    assert m["mediaType"] == MT_OCI_MANIFEST
    assert {l["mediaType"] for l in m["layers"]} == {MT_OCI_GZIP}
    r = k("push", "--insecure", "localhost/dk:1", f"{registry.host}/{repo}:asis")
    assert r.returncode == 0
    _, m = get_manifest(registry, repo, "asis", MT_DOCKER_MANIFEST)
    assert m["mediaType"] == MT_DOCKER_MANIFEST


def test_push_format_bad(k, built, registry, tmp_path):
    repo = f"b{os.getpid()}/app"
    r = k("push", "--insecure", "--format", "xml", built, f"{registry.host}/{repo}:1")
    assert r.returncode != 0 and "--format xml" in r.stderr
    if shutil.which("zstd"):
        ctx = context(tmp_path, STEPS, {"a.txt": "a\n"}, name="zctx")
        k("build", "-q", "--compression", "zstd", "-t", "z:1", ctx, check=True)
        r = k("push", "--insecure", "--format", "docker", "localhost/z:1",
              f"{registry.host}/{repo}:z")
        assert r.returncode != 0
        assert "--format docker" in r.stderr and "tar+zstd" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/tags/list")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=10)


# ---- against buildah bud ----

BUILDAH_FILE = """\
FROM busybox AS build
WORKDIR /src
COPY greeting.txt ./
RUN tr a-z A-Z < greeting.txt > /shout && mkdir -p /data && echo built > /data/f
FROM busybox
ENV WHO=world
COPY --from=build /shout /app/shout
COPY run.sh /app/run.sh
RUN rm /bin/true && mkdir /empty
USER 1000:1000
WORKDIR /app
LABEL org.example.k=v
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "/app/run.sh"]
CMD ["x"]
"""


def layer_files(tf_bytes):
    """{name: (type, mode, uid, gid, size, linkname, content)} of an uncompressed tar."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tf_bytes)) as t:
        for m in t.getmembers():
            data = t.extractfile(m).read() if m.isfile() else b""
            # (Go's archive/tar keeps the file-type bits in the mode field; compare perms)
            out[m.name.rstrip("/").removeprefix("./")] = (
                m.type, m.mode & 0o7777, m.uid, m.gid, m.size, m.linkname, data)
    return out


def test_same_as_buildah_bud(k, tmp_path):
    if not shutil.which("buildah"):
        pytest.skip("needs buildah (scripts/setup.sh installs it)")
    ctx = context(tmp_path, BUILDAH_FILE, {"greeting.txt": "hello\n",
                                            "run.sh": 'cat /app/shout; echo "hi $WHO"\n'})
    r = k("build", "-q", "--layers=false", "-t", "cmp:1", ctx)
    assert r.returncode == 0, r.stderr
    # buildah gets the same busybox: kapsel's, saved as an OCI archive.
    arch = tmp_path / "busybox.tar"
    k("save", "-o", arch, "busybox", check=True)
    bstore = tmp_path / "buildah"
    bargs = ["buildah", "--root", str(bstore / "root"), "--runroot", str(bstore / "run"),
             "--storage-driver", "vfs"]
    env = dict(os.environ, BUILDAH_ISOLATION="chroot")
    env.pop("REGISTRY_AUTH_FILE", None)
    pulled = subprocess.run(bargs + ["pull", f"oci-archive:{arch}"], capture_output=True,
                            text=True, env=env, timeout=120)
    if pulled.returncode != 0:
        pytest.fail("buildah pull: " + pulled.stderr)
    iid = pulled.stdout.strip().splitlines()[-1]
    subprocess.run(bargs + ["tag", iid, "docker.io/library/busybox:latest"], check=True,
                   capture_output=True, env=env)
    bud = subprocess.run(bargs + ["bud", "--layers=false", "--network", "none",
                                  "--pull-never", "-t", "cmp:1", "-f",
                                  str(ctx / "Containerfile"), str(ctx)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bud.returncode == 0, bud.stdout + bud.stderr
    out = tmp_path / "blayout"
    subprocess.run(bargs + ["push", "localhost/cmp:1", f"oci:{out}:cmp"], check=True,
                   capture_output=True, env=env, timeout=120)
    index = json.load(open(out / "index.json"))
    bblob = lambda d: open(out / "blobs/sha256" / d.split(":")[1], "rb").read()
    bm = json.loads(bblob(index["manifests"][0]["digest"]))
    bcfg = json.loads(bblob(bm["config"]["digest"]))
    km, kcfg = k.manifest("localhost/cmp:1"), k.config("localhost/cmp:1")

    # The same config fields (buildah adds its own version label).
    bcfg["config"].get("Labels", {}).pop("io.buildah.version", None)
    for field in ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "Labels", "ExposedPorts"):
        assert kcfg["config"].get(field) == bcfg["config"].get(field), field
    assert kcfg["architecture"] == bcfg["architecture"] and kcfg["os"] == bcfg["os"]
    # The same layers: busybox, then one with the final stage's changes, file by file.
    assert len(km["layers"]) == len(bm["layers"]) == 2
    # (buildah recompresses what it pushes: the uncompressed digests are the ones to match)
    assert kcfg["rootfs"]["diff_ids"][0] == bcfg["rootfs"]["diff_ids"][0]
    kf = layer_files(gzip.decompress(k.blob(km["layers"][1]["digest"])))
    bf = layer_files(gzip.decompress(bblob(bm["layers"][1]["digest"])))
    # buildah's RUN leaves the empty mount target it made for /etc/hostname (chroot
    # isolation); kapsel leaves its runtime's mount targets out, as for `kapsel commit`.
    for n in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):
        if n in bf and n not in kf and bf[n][4] == 0:
            del bf[n]
    if "etc" in bf and "etc" not in kf and not [n for n in bf if n.startswith("etc/")]:
        del bf["etc"]
    assert set(kf) == set(bf), (sorted(set(kf) ^ set(bf)))
    for name in kf:
        kt, bt = kf[name], bf[name]
        assert kt[0] == bt[0], name
        if os.path.basename(name).startswith(".wh."):
            continue  # a whiteout's own metadata means nothing (layer.md "Whiteouts")
        assert kt[1:] == bt[1:], name
