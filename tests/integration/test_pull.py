"""kapsel pull against Debian's docker-registry (images pushed with skopeo from OCI layouts the
tests build) and against a fake registry that misbehaves on purpose. Unpacked results are
compared file by file with what `umoci unpack` makes of the same image; failures must give one
clear line and leave the store's blobs/ and layers/ exactly as they were."""
import json
import os
import pty
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from registry import (FakeRegistry, Layout, Registry, sha256, skopeo_push)

pytestmark = pytest.mark.root

NEEDS = ("docker-registry", "skopeo", "umoci")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    missing = [t for t in NEEDS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


def run(kapsel, *args, env=None, timeout=120):
    e = dict(os.environ)
    e.pop("REGISTRY_AUTH_FILE", None)
    e.update(env or {})
    return subprocess.run([kapsel] + [str(a) for a in args], capture_output=True, text=True,
                          env=e, timeout=timeout, stdin=subprocess.DEVNULL)


def pull(kapsel, store, ref, *args, env=None, ok=True):
    r = run(kapsel, "pull", "--store", store, *args, ref, env=env)
    if ok and r.returncode != 0:
        raise AssertionError(f"pull {ref} failed ({r.returncode}): {r.stderr}")
    return r


def one_line_error(r):
    """The failure is reported as exactly one line."""
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def listing(store):
    """What `find <store>/blobs <store>/layers` shows, with sizes."""
    out = []
    for top in ("blobs", "layers"):
        base = os.path.join(store, top)
        for dirpath, dirnames, filenames in os.walk(base):
            for n in sorted(dirnames + filenames):
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                out.append((os.path.relpath(p, store), st.st_size if stat.S_ISREG(st.st_mode)
                            else 0))
    return sorted(out)


def tmp_entries(store):
    d = os.path.join(store, "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def blob(store, digest):
    with open(os.path.join(store, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        return f.read()


def image_layers(store, manifest_digest):
    """Layer directories of a pulled image, bottom first."""
    m = json.loads(blob(store, manifest_digest))
    cfg = json.loads(blob(store, m["config"]["digest"]))
    return [os.path.join(store, "layers", d.split(":")[1]) for d in cfg["rootfs"]["diff_ids"]]


def tree(root):
    """path -> (type, mode, uid, gid, content digest or link target) for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = ("file", sha256(f.read()))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", None)
            else:
                what = ("other", st.st_rdev)
            out[rel] = (what[0], stat.S_IMODE(st.st_mode) if what[0] != "link" else 0,
                        st.st_uid, st.st_gid, what[1])
    return out


class Overlay:
    """The merged view of a pulled image: overlayfs over its layers, read-only."""

    def __init__(self, layers, where):
        self.path = str(where)
        os.makedirs(self.path)
        empty = self.path + "-empty"
        os.makedirs(empty)
        # Without an upper dir overlayfs needs at least two lower dirs: an empty one at the bottom.
        lower = ":".join(list(reversed(layers)) + [empty])
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}",
                            self.path], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount overlayfs: {r.stderr.strip()}")

    def close(self):
        subprocess.run(["umount", self.path], check=True)


def umoci_tree(layout, tag, where):
    bundle = str(where)
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout.path}:{tag}", bundle],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return tree(os.path.join(bundle, "rootfs"))


def assert_same_as_umoci(kapsel, store, digest, layout, tag, tmp_path):
    ov = Overlay(image_layers(store, digest), tmp_path / "merged")
    try:
        ours = tree(ov.path)
    finally:
        ov.close()
    theirs = umoci_tree(layout, tag, tmp_path / "umoci")
    assert ours == theirs
    return ours


def image_name(store):
    with open(os.path.join(store, "images.json")) as f:
        return f.read()


# ---- images ----

BASE = [("dir", "etc", 0o755), ("file", "etc/os-release", b"ID=kapsel-test\n", 0o644),
        ("dir", "bin", 0o755), ("file", "bin/tool", b"\x7fELF" + b"\0" * 5000, 0o755)]


def layered_entries():
    lower = [
        ("dir", "a", 0o755), ("file", "a/keep", b"keep\n", 0o644),
        ("file", "a/gone", b"gone\n", 0o644),
        ("dir", "d", 0o750, 1000, 1000), ("file", "d/old1", b"1", 0o600, 1000, 1000),
        ("dir", "d/sub", 0o755), ("file", "d/sub/old2", b"2", 0o644),
        ("dir", "tmp", 0o1777),
        ("file", "bin-suid", b"#!/bin/sh\n", 0o4755),
        ("file", "big", os.urandom(300000), 0o644),
    ]
    upper = [
        ("dir", "a", 0o755), ("whiteout", "a/gone"),
        ("dir", "d", 0o700, 1000, 1000), ("opaque", "d"), ("file", "d/new", b"new\n", 0o640, 1000, 100),
        ("dir", "links", 0o755),
        ("symlink", "links/rel", "../a/keep"), ("symlink", "links/abs", "/etc/passwd"),
        ("symlink", "links/dangling", "nowhere"),
        ("file", "links/h1", b"hardlinked\n", 0o644), ("hardlink", "links/h2", "links/h1"),
        ("file", "setgid", b"g", 0o2750, 0, 50),
    ]
    return [lower, upper]


def layered_image(layout, compression="gzip", entries=None):
    return layout.image(entries or layered_entries(), compression=compression)


# ---- against docker-registry ----

def test_pull_single_layer(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = lay.image([BASE])
    lay.tag("v1", desc)
    ref = f"{registry.host}/single/app:v1"
    skopeo_push(lay, "v1", ref)
    r = pull(kapsel, store, ref)
    # Not a terminal: no progress, only the manifest digest on stdout.
    assert r.stdout.strip() == desc["digest"]
    assert r.stderr == ""
    assert ref in image_name(store)
    assert desc["digest"] in image_name(store)
    ours = assert_same_as_umoci(kapsel, store, desc["digest"], lay, "v1", tmp_path)
    assert ours["bin/tool"][:2] == ("file", 0o755)
    assert tmp_entries(store) == []


def test_pull_layers_whiteouts_links(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = layered_image(lay)
    lay.tag("v1", desc)
    ref = f"{registry.host}/layered/app:v1"
    skopeo_push(lay, "v1", ref)
    pull(kapsel, store, ref)
    ours = assert_same_as_umoci(kapsel, store, desc["digest"], lay, "v1", tmp_path)
    assert "a/gone" not in ours and "d/old1" not in ours and "d/sub" not in ours
    assert ours["a/keep"][0] == "file"
    assert ours["d"][1:4] == (0o700, 1000, 1000)
    assert ours["d/new"][1:4] == (0o640, 1000, 100)
    assert ours["links/rel"] == ("link", 0, 0, 0, "../a/keep")
    assert ours["links/abs"][4] == "/etc/passwd"
    assert ours["bin-suid"][1] == 0o4755 and ours["setgid"][1:4] == (0o2750, 0, 50)
    assert ours["tmp"][1] == 0o1777

    # In the layer itself: overlayfs' forms of whiteouts and opaque dirs, a real hardlink.
    lower, upper = image_layers(store, desc["digest"])
    wh = os.lstat(os.path.join(upper, "a", "gone"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(os.path.join(upper, "d"), "trusted.overlay.opaque") == b"y"
    h1, h2 = (os.lstat(os.path.join(upper, "links", n)) for n in ("h1", "h2"))
    assert h1.st_ino == h2.st_ino and h1.st_nlink == 2
    assert not any(n.startswith(".wh.") for _, _, fs in os.walk(upper) for n in fs)


def test_pull_multi_platform(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    amd, _ = lay.image([[("file", "arch", b"amd64\n", 0o644)]], arch="amd64")
    arm, _ = lay.image([[("file", "arch", b"arm64\n", 0o644)]], arch="arm64")
    arm["platform"]["variant"] = "v8"
    lay.tag_index("multi", [arm, amd])
    ref = f"{registry.host}/multi/app:multi"
    skopeo_push(lay, "multi", ref, all_images=True)

    r = pull(kapsel, store, ref)
    assert r.stdout.strip() == amd["digest"]
    (layer,) = image_layers(store, amd["digest"])
    assert open(os.path.join(layer, "arch")).read() == "amd64\n"

    s2 = str(tmp_path / "store2")
    r = pull(kapsel, s2, ref, "--platform", "linux/arm64")
    assert r.stdout.strip() == arm["digest"]
    (layer,) = image_layers(s2, arm["digest"])
    assert open(os.path.join(layer, "arch")).read() == "arm64\n"

    r = pull(kapsel, s2, ref, "--platform", "linux/s390x", ok=False)
    line = one_line_error(r)
    assert "s390x" in line and "linux/amd64" in line and "linux/arm64/v8" in line
    r = pull(kapsel, s2, ref, "--platform", "linux", ok=False)
    assert "OS/ARCH" in one_line_error(r)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none", "mixed"])
def test_pull_compressions(kapsel, registry, store, tmp_path, compression):
    if compression in ("zstd", "mixed") and not shutil.which("zstd"):
        pytest.skip("needs the zstd CLI (scripts/setup.sh installs it)")
    lay = Layout(tmp_path / "layout")
    comp = ["zstd", "gzip"] if compression == "mixed" else compression
    entries = layered_entries()
    desc, mbytes = layered_image(lay, compression=comp, entries=entries)
    lay.tag("v1", desc)
    # umoci 0.4 cannot read zstd layers: it unpacks a gzip twin with the same tar streams.
    twin = Layout(tmp_path / "twin")
    tdesc, _ = layered_image(twin, compression="gzip", entries=entries)
    twin.tag("v1", tdesc)
    ref = f"{registry.host}/comp/{compression}:v1"
    skopeo_push(lay, "v1", ref)
    digest = pull(kapsel, store, ref).stdout.strip()
    if compression != "none":
        # skopeo kept our compressed layers (it compresses uncompressed ones when pushing).
        assert digest == desc["digest"]
        assert json.loads(blob(store, digest)) == json.loads(mbytes)
    assert_same_as_umoci(kapsel, store, digest, twin, "v1", tmp_path)


def test_pull_docker_schema2(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = layered_image(lay)
    lay.tag("v1", desc)
    ref = f"{registry.host}/docker/app:v1"
    skopeo_push(lay, "v1", ref, fmt="v2s2")
    r = pull(kapsel, store, ref)
    digest = r.stdout.strip()
    m = json.loads(blob(store, digest))
    assert m["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert_same_as_umoci(kapsel, store, digest, lay, "v1", tmp_path)


def test_repull_downloads_nothing(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = layered_image(lay)
    lay.tag("v1", desc)
    ref = f"{registry.host}/again/app:v1"
    skopeo_push(lay, "v1", ref)
    before = registry.blob_gets()
    pull(kapsel, store, ref)
    first = registry.blob_gets() - before
    assert first == 3  # config + 2 layers
    blobs = os.path.join(store, "blobs", "sha256")
    mtimes = {n: os.stat(os.path.join(blobs, n)).st_mtime_ns for n in os.listdir(blobs)}
    listed = listing(store)
    time.sleep(0.05)
    r = pull(kapsel, store, ref)
    assert r.stdout.strip() == desc["digest"]
    assert registry.blob_gets() - before == first
    assert {n: os.stat(os.path.join(blobs, n)).st_mtime_ns for n in os.listdir(blobs)} == mtimes
    assert listing(store) == listed
    # By digest: not even the manifest is fetched again.
    r = pull(kapsel, store, f"{registry.host}/again/app@{desc['digest']}")
    assert r.stdout.strip() == desc["digest"]
    assert registry.blob_gets() - before == first


def test_pull_progress_on_tty(kapsel, registry, store, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = lay.image([BASE])
    lay.tag("v1", desc)
    ref = f"{registry.host}/tty/app:v1"
    skopeo_push(lay, "v1", ref)

    def on_tty(*extra):
        master, slave = pty.openpty()
        p = subprocess.Popen([kapsel, "pull", "--store", store, *extra, ref],
                             stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        p.wait(timeout=60)
        os.close(master)
        assert p.returncode == 0
        return out.decode(errors="replace")

    layer = json.loads(lay.blobs[desc["digest"]])["layers"][0]["digest"]
    shown = on_tty()
    assert "Pulling" in shown and "total" in shown and layer[:19] in shown
    assert "\x1b[K" in shown  # redrawn in place
    shutil.rmtree(store)
    assert on_tty("-q") == ""


def test_pull_bad_reference(kapsel, store):
    # (UPPER/case would be a registry host, as docker reads it.)
    for bad in ("Upper:tag", "busybox:bad tag", "busybox@sha256:123", "a//b"):
        r = pull(kapsel, store, bad, ok=False)
        one_line_error(r)
    assert not os.path.exists(store)


# ---- against a registry that misbehaves ----

@pytest.fixture
def fake_image(tmp_path):
    lay = Layout(tmp_path / "fake-layout")
    desc, _ = lay.image([BASE, [("file", "data", os.urandom(400000), 0o644)]])
    return lay, desc


@pytest.fixture
def seeded_store(kapsel, registry, tmp_path):
    """A store that already holds an image, so "unchanged" means something."""
    lay = Layout(tmp_path / "seed-layout")
    desc, _ = lay.image([[("file", "seed", b"seed\n", 0o644)]])
    lay.tag("v1", desc)
    ref = f"{registry.host}/seed/app:v1"
    skopeo_push(lay, "v1", ref)
    s = str(tmp_path / "seeded")
    pull(kapsel, s, ref)
    return s


@pytest.fixture
def fake(fake_image):
    made = []

    def start(mode, **kw):
        lay, desc = fake_image
        f = FakeRegistry(lay, "hostile/app", "v1", desc, mode=mode, **kw)
        made.append(f)
        return f
    yield start
    for f in made:
        f.stop()


@pytest.mark.parametrize("mode,expect", [
    ("drop-blob", ["hostile/app: blob sha256:", "after 4 attempts"]),
    ("wrong-digest", ["digest mismatch"]),
    ("500", ["hostile/app: manifest \"v1\": server error (HTTP 500", "after 4 attempts"]),
    ("404", ["hostile/app: manifest \"v1\": not found (HTTP 404: MANIFEST_UNKNOWN"]),
    ("403", ["hostile/app: manifest \"v1\": access denied (HTTP 403: DENIED: requested"]),
    ("huge-manifest", ["hostile/app: manifest \"v1\": larger than 4194304 bytes"]),
    ("401-token", ["hostile/app: authentication required", "refused anonymous access",
                   "kapsel login 127.0.0.1:"]),
    ("401-bare", ["hostile/app: API check (GET /v2/): authentication required (HTTP 401 "
                  "without a WWW-Authenticate challenge)"]),
])
def test_hostile_registry(kapsel, seeded_store, fake, mode, expect):
    f = fake(mode)
    before = listing(seeded_store)
    r = pull(kapsel, seeded_store, f"{f.host}/hostile/app:v1", ok=False)
    line = one_line_error(r)
    assert f.host in line
    for e in expect:
        assert e in line, line
    assert listing(seeded_store) == before
    assert tmp_entries(seeded_store) == []


def test_dropped_connection_resumes(kapsel, store, fake, fake_image):
    f = fake("drop-once")
    r = pull(kapsel, store, f"{f.host}/hostile/app:v1")
    assert r.stdout.strip() == fake_image[1]["digest"]
    # Each dropped layer (parallel downloads may both meet the drop) resumed where it broke.
    ranges = [rng for _, _, rng in f.blob_requests if rng]
    assert 1 <= len(ranges) <= 2 and f.dropped == len(ranges)
    assert all(r.startswith("bytes=") and r != "bytes=0-" for r in ranges)
    assert tmp_entries(store) == []


def write_auth(path, host, user, password):
    import base64
    tok = base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(path, "w") as fh:
        json.dump({"auths": {host: {"auth": tok}}}, fh)


def test_token_auth_from_auth_file(kapsel, store, fake, tmp_path):
    f = fake("token+redirect", creds=("alice", "s3cret:x"))
    auth = tmp_path / "auth.json"
    write_auth(auth, f.host, "alice", "s3cret:x")
    r = pull(kapsel, store, f"{f.host}/hostile/app:v1", env={"REGISTRY_AUTH_FILE": str(auth)})
    assert r.returncode == 0
    tokens = [a for p, a in f.requests if p.startswith("/token")]
    assert tokens and all(a and a.startswith("Basic ") for a in tokens)
    assert any("scope=repository%3Ahostile%2Fapp%3Apull" in p for p, _ in f.requests
               if p.startswith("/token"))
    # Blobs were redirected to another host name: the token must not follow them there.
    redirected = [a for p, a in f.requests if p.startswith("/redirected/")]
    assert redirected and all(a is None for a in redirected)
    assert all(a == f"Bearer {f.token}" for p, a in f.requests
               if p.startswith("/v2/hostile/app/"))


def test_token_auth_wrong_password(kapsel, seeded_store, fake, tmp_path):
    f = fake("token")
    auth = tmp_path / "auth.json"
    write_auth(auth, f.host, "user", "wrong")
    before = listing(seeded_store)
    r = pull(kapsel, seeded_store, f"{f.host}/hostile/app:v1", "--authfile", auth, ok=False)
    line = one_line_error(r)
    assert f"credentials for {f.host} from {auth} were rejected by the token service" in line
    assert listing(seeded_store) == before


def test_login_logout(kapsel, store, fake, tmp_path):
    f = fake("token", creds=("bob", "hunter2"))
    auth = tmp_path / "cfg" / "auth.json"
    r = subprocess.run([kapsel, "login", "--authfile", auth, "-u", "bob", "--password-stdin",
                        f.host], input="wrong\n", capture_output=True, text=True)
    assert r.returncode != 0 and "rejected" in one_line_error(r)
    assert not auth.exists()
    r = subprocess.run([kapsel, "login", "--authfile", auth, "-u", "bob", "--password-stdin",
                        f.host], input="hunter2\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    assert f.host in json.load(open(auth))["auths"]
    pull(kapsel, store, f"{f.host}/hostile/app:v1", "--authfile", auth)
    r = run(kapsel, "logout", "--authfile", auth, f.host)
    assert r.returncode == 0, r.stderr
    assert json.load(open(auth))["auths"] == {}
    r = run(kapsel, "logout", "--authfile", auth, f.host)
    assert "not logged in" in one_line_error(r)


def test_interrupted_pull_leaves_nothing(kapsel, seeded_store, fake):
    f = fake("slow")
    before = listing(seeded_store)
    p = subprocess.Popen([kapsel, "pull", "--store", seeded_store, f"{f.host}/hostile/app:v1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not any(f.is_layer(d) for d, _, _ in f.blob_requests) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert p.poll() is None, "the pull finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert listing(seeded_store) == before
    assert tmp_entries(seeded_store) == []


def host_address():
    """A non-loopback address of this machine, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            a = s.getsockname()[0]
            return None if a.startswith("127.") else a
    except OSError:
        return None


def test_plain_http_needs_insecure(kapsel, store, fake_image, tmp_path):
    addr = host_address()
    if not addr:
        pytest.skip("no non-loopback address to serve a remote-looking registry on")
    lay, desc = fake_image
    f = FakeRegistry(lay, "hostile/app", "v1", desc)
    try:
        # Rebind to the host address: not localhost, so plain HTTP is not allowed by default.
        f.stop()
        f.server = f.server.__class__((addr, 0), f.server.RequestHandlerClass)
        f.server.daemon_threads = True
        f.port = f.server.server_address[1]
        f.host = f"{addr}:{f.port}"
        import threading
        threading.Thread(target=f.server.serve_forever, daemon=True).start()
        ref = f"{f.host}/hostile/app:v1"
        r = pull(kapsel, store, ref, ok=False)
        line = one_line_error(r)
        assert "--insecure" in line and f.host in line
        pull(kapsel, store, ref, "--tls-verify=false")
        conf = tmp_path / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{f.host}"\ninsecure = true\n')
        pull(kapsel, str(tmp_path / "s3"), ref, env={"CONTAINERS_REGISTRIES_CONF": str(conf)})
    finally:
        f.stop()
