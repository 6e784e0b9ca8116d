"""kapsel manifest create|add|remove|inspect|rm|push: manifest lists (OCI image indexes) in the
store, pushed to Debian's docker-registry on 127.0.0.1 and read back with skopeo, podman and
kapsel pull. The second platform comes from `kapsel pull --platform linux/arm64` of a small
arm64 image the tests push with skopeo (it is only stored, never run)."""
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

import clients
from registry import MT_OCI_INDEX, MT_OCI_MANIFEST, Layout, Registry, skopeo_push

pytestmark = pytest.mark.root

NEEDS = ("docker-registry", "skopeo")
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    missing = [t for t in NEEDS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def sources(registry, tmp_path_factory):
    """In the registry: src/arm64:1, one arm64 image; src/multi:1, an index of an amd64 and an
    arm64 image (pushed with skopeo --all)."""
    lay = Layout(tmp_path_factory.mktemp("layout"))
    arm, _ = lay.image([[("file", "hello", b"arm64 says hi\n", 0o644)]], arch="arm64")
    lay.tag("arm", arm)
    skopeo_push(lay, "arm", f"{registry.host}/src/arm64:1")
    amd, _ = lay.image([[("file", "hello", b"amd64 says hi\n", 0o644)]], arch="amd64")
    arm2, _ = lay.image([[("file", "hello", b"arm64 again\n", 0o644)]], arch="arm64")
    lay.tag_index("multi", [amd, arm2])
    skopeo_push(lay, "multi", f"{registry.host}/src/multi:1", all_images=True)
    return {"arm64": arm, "multi_amd64": amd, "multi_arm64": arm2}


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=120):
        env = dict(os.environ)
        env.pop("REGISTRY_AUTH_FILE", None)
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout, env=env)


def make_k(kapsel, base):
    store, root = base / "store", base / "state"
    store.mkdir(mode=0o700)
    root.mkdir()
    return K(kapsel, str(store), str(root))


@pytest.fixture
def k(kapsel, tmp_path):
    return make_k(kapsel, tmp_path)


def raw(registry, repo, ref, accept=MT_OCI_INDEX):
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"], r.headers["Content-Type"], r.read()


def has_manifest(registry, repo, ref):
    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{ref}", method="HEAD",
        headers={"Accept": ", ".join([MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST,
                                      MT_DOCKER_MANIFEST])})
    try:
        urllib.request.urlopen(req, timeout=10)
        return True
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
        return False


def uploads(registry, repo):
    """Blob upload sessions started for repo so far (the access log)."""
    registry.logf.flush()
    with open(registry.log, errors="replace") as f:
        return sum(f'"POST /v2/{repo}/blobs/uploads/' in line for line in f)


def two_platform_list(k, registry, name="mylist"):
    """A list of the store's amd64 busybox and the pulled arm64 image: (list, amd, arm)."""
    r = k("pull", "-q", "--platform", "linux/arm64", f"{registry.host}/src/arm64:1")
    assert r.returncode == 0, r.stderr
    arm = r.stdout.strip().splitlines()[-1]
    r = k("manifest", "create", name, "busybox")
    assert r.returncode == 0, r.stderr
    r = k("manifest", "add", name, f"{registry.host}/src/arm64:1")
    assert r.returncode == 0, r.stderr
    amd = json.loads(k("image", "inspect", "busybox", check=True).stdout)
    amd = amd[0] if isinstance(amd, list) else amd
    return f"localhost/{name}:latest", amd["Digest"], arm


def blob_size(k, digest):
    return os.path.getsize(os.path.join(k.store, "blobs", "sha256", digest[7:]))


def test_create_add_inspect_images_rmi(k, registry, sources):
    lst, amd, arm = two_platform_list(k, registry)
    idx = json.loads(k("manifest", "inspect", "mylist", check=True).stdout)
    assert idx["mediaType"] == MT_OCI_INDEX and idx["schemaVersion"] == 2
    plats = {(m["platform"]["os"], m["platform"]["architecture"]): m for m in idx["manifests"]}
    assert set(plats) == {("linux", "amd64"), ("linux", "arm64")}
    assert plats["linux", "amd64"]["digest"] == amd
    assert plats["linux", "arm64"]["digest"] == arm
    for m in idx["manifests"]:
        assert m["size"] == blob_size(k, m["digest"])
        assert m["mediaType"] == MT_OCI_MANIFEST
    # `images` shows the list under its own ID (the index digest), as podman does.
    out = k("images", check=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("localhost/mylist")]
    assert len(line) == 1, out
    # The images keep their IDs: the list's ID is its index digest, not their config's.
    r = k("images", check=True)
    bid = [ln.split()[2] for ln in r.stdout.splitlines() if "library/busybox" in ln][0]
    r = k("image", "inspect", bid)
    assert r.returncode == 0, r.stderr
    # rmi removes the list, not the images it names.
    r = k("rmi", "mylist")
    assert r.returncode == 0, r.stderr
    out = k("images", check=True).stdout
    assert "localhost/mylist" not in out and "busybox" in out and "src/arm64" in out
    r = k("manifest", "inspect", "mylist")
    assert r.returncode == 125 and "not found" in r.stderr


def test_push_list_then_skopeo_podman_and_kapsel_read_it(k, registry, sources, kapsel,
                                                         tmp_path, tmp_path_factory):
    lst, amd, arm = two_platform_list(k, registry)
    dest = f"{registry.host}/kapsel/list:1"
    r = k("manifest", "push", lst, f"docker://{dest}")
    assert r.returncode == 0, r.stderr
    pushed = r.stdout.strip()
    got, ctype, body = raw(registry, "kapsel/list", "1")
    assert got == pushed and ctype == MT_OCI_INDEX
    # skopeo's raw view: the index with both entries, digests and sizes as stored.
    sk = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                        capture_output=True, check=True, timeout=60).stdout
    assert sk == body
    idx = json.loads(sk)
    ents = {m["platform"]["architecture"]: m for m in idx["manifests"]}
    assert set(ents) == {"amd64", "arm64"}
    assert ents["amd64"]["digest"] == amd and ents["arm64"]["digest"] == arm
    for m in idx["manifests"]:
        d, _, mbody = raw(registry, "kapsel/list", m["digest"], MT_OCI_MANIFEST)
        assert d == m["digest"] and len(mbody) == m["size"] == blob_size(k, m["digest"])
        for blob in [json.loads(mbody)["config"]] + json.loads(mbody)["layers"]:
            req = urllib.request.Request(
                f"http://{registry.host}/v2/kapsel/list/blobs/{blob['digest']}", method="HEAD")
            with urllib.request.urlopen(req, timeout=10) as h:
                assert int(h.headers["Content-Length"]) == blob["size"]

    # skopeo copy of the list name (no --all) picks the amd64 image.
    oci = tmp_path / "oci"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                    "--override-arch", "amd64", "--override-os", "linux",
                    f"docker://{dest}", f"oci:{oci}:x"], check=True, timeout=120)
    assert json.load(open(oci / "index.json"))["manifests"][0]["digest"] == amd

    # kapsel pull of the list into a fresh store: the amd64 image, which runs.
    k2 = make_k(kapsel, tmp_path_factory.mktemp("k2"))
    r = k2("pull", "-q", dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == amd
    r = k2("run", "--rm", dest, "echo", "from the list")
    assert r.returncode == 0 and r.stdout == "from the list\n", r.stderr

    # podman pulls the list name and gets the amd64 image.
    if shutil.which("podman"):
        pod = clients.Podman(str(tmp_path_factory.mktemp("podman")), k.binary)
        try:
            r = pod("pull", "--tls-verify=false", dest, timeout=120)
            assert r.returncode == 0, r.stderr
            r = pod("image", "inspect", "--format", "{{.Architecture}}", dest, check=True)
            assert r.stdout.strip() == "amd64"
        finally:
            pod.cleanup()


def test_push_of_a_list_name_pushes_the_index_and_skips_present_blobs(k, registry, sources):
    lst, amd, arm = two_platform_list(k, registry)
    dest = f"{registry.host}/kapsel/plain:1"
    first = k("push", lst, dest)
    assert first.returncode == 0, first.stderr
    d, ctype, _ = raw(registry, "kapsel/plain", "1")
    assert d == first.stdout.strip() and ctype == MT_OCI_INDEX
    again = k("manifest", "push", "--all", lst, dest)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    # Both images' config and layer: busybox has 1 layer, the arm64 image 1.
    assert again.stderr.count("skipped: already exists") == 4, again.stderr


def test_push_format_docker_makes_a_manifest_list(k, registry, sources):
    lst, amd, arm = two_platform_list(k, registry)
    dest = f"{registry.host}/kapsel/dlist:1"
    r = k("manifest", "push", "--format", "docker", lst, dest)
    assert r.returncode == 0, r.stderr
    d, ctype, body = raw(registry, "kapsel/dlist", "1", MT_DOCKER_LIST)
    assert ctype == MT_DOCKER_LIST and d == r.stdout.strip()
    idx = json.loads(body)
    assert idx["mediaType"] == MT_DOCKER_LIST
    for m in idx["manifests"]:
        assert m["mediaType"] == MT_DOCKER_MANIFEST
        md, _, mb = raw(registry, "kapsel/dlist", m["digest"], MT_DOCKER_MANIFEST)
        assert md == m["digest"] and len(mb) == m["size"]
        assert json.loads(mb)["mediaType"] == MT_DOCKER_MANIFEST


def test_add_all_of_a_pulled_index(k, registry, sources):
    """--all on a multi-platform image kapsel pulled: every entry of the index it came
    through. Only the arm64 one was pulled, so the push names the missing amd64 manifest
    and sends nothing."""
    r = k("pull", "-q", "--platform", "linux/arm64", f"{registry.host}/src/multi:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == sources["multi_arm64"]["digest"]
    r = k("manifest", "create", "--all", "fromindex", f"{registry.host}/src/multi:1")
    assert r.returncode == 0, r.stderr
    idx = json.loads(k("manifest", "inspect", "fromindex", check=True).stdout)
    assert sorted(m["digest"] for m in idx["manifests"]) == sorted(
        [sources["multi_amd64"]["digest"], sources["multi_arm64"]["digest"]])
    before = uploads(registry, "kapsel/half")
    r = k("manifest", "push", "fromindex", f"{registry.host}/kapsel/half:1")
    assert r.returncode == 125
    assert r.stderr.count("\n") == 1, r.stderr
    assert sources["multi_amd64"]["digest"] in r.stderr and "not in the store" in r.stderr
    assert "linux/amd64" in r.stderr
    assert uploads(registry, "kapsel/half") == before
    assert not has_manifest(registry, "kapsel/half", "1")


def test_bad_input(k, registry, sources):
    k("manifest", "create", "good", "busybox", check=True)
    cases = [
        (("manifest", "add", "good", "nosuch:1"), "nosuch"),
        (("manifest", "create", "Bad Name!!", "busybox"), "Bad Name!!"),
        (("manifest", "create", "good"), "in use"),
        (("manifest", "add", "busybox", "busybox"), "not a manifest list"),
        (("manifest", "push", "busybox", f"{registry.host}/kapsel/x:1"),
         "not a manifest list"),
        (("manifest", "push", "good", "bad//dest"), "bad//dest"),
        (("manifest", "add", "--arch", "Arm 64", "good", "busybox"), "--arch"),
        (("manifest", "push", "--format", "v1", "good", "x"), "--format v1"),
        (("manifest", "remove", "good", "sha256:" + "0" * 64), "does not list"),
        (("manifest", "add", "--all", "good", "busybox"), "single image"),
        (("manifest", "frobnicate"), "frobnicate"),
    ]
    for args, want in cases:
        r = k(*args)
        assert r.returncode == 125, (args, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and want in r.stderr, (args, r.stderr)
    assert uploads(registry, "kapsel/x") == 0


def test_duplicate_platform_is_refused(k, registry, sources):
    """One entry per platform: a second amd64 manifest is refused (naming the first and how to
    remove it); adding the same manifest again replaces its entry."""
    k("manifest", "create", "dup", "busybox", check=True)
    first = json.loads(k("manifest", "inspect", "dup", check=True).stdout)
    # The same manifest again: its entry is replaced, the list is unchanged.
    r = k("manifest", "add", "dup", "busybox")
    assert r.returncode == 0, r.stderr
    assert json.loads(k("manifest", "inspect", "dup", check=True).stdout) == first
    # The arm64 image declared amd64: another manifest for linux/amd64.
    k("pull", "-q", "--platform", "linux/arm64", f"{registry.host}/src/arm64:1", check=True)
    r = k("manifest", "add", "--arch", "amd64", "dup", f"{registry.host}/src/arm64:1")
    assert r.returncode == 125
    amd = first["manifests"][0]["digest"]
    assert r.stderr.count("\n") == 1
    assert "already has" in r.stderr and amd in r.stderr and "linux/amd64" in r.stderr
    assert json.loads(k("manifest", "inspect", "dup", check=True).stdout) == first
    # After `manifest remove` of the first, the other goes in.
    k("manifest", "remove", "dup", amd, check=True)
    r = k("manifest", "add", "--arch", "amd64", "dup", f"{registry.host}/src/arm64:1")
    assert r.returncode == 0, r.stderr
    idx = json.loads(k("manifest", "inspect", "dup", check=True).stdout)
    assert [m["digest"] for m in idx["manifests"]] == [sources["arm64"]["digest"]]
    assert idx["manifests"][0]["platform"]["architecture"] == "amd64"


def test_manifest_rm_keeps_the_images(k, registry, sources):
    k("manifest", "create", "gone", "busybox", check=True)
    r = k("manifest", "rm", "gone")
    assert r.returncode == 0, r.stderr
    assert "localhost/gone" not in k("images", check=True).stdout
    k("image", "inspect", "busybox", check=True)
    r = k("manifest", "rm", "busybox")
    assert r.returncode == 125 and "not a manifest list" in r.stderr


def test_push_all_false_sends_the_index_alone(k, registry, sources):
    """--all=false: the registry has the images already; only the index goes. A registry that
    lacks them refuses the index, and kapsel says so in one line."""
    lst, amd, arm = two_platform_list(k, registry)
    first = k("manifest", "push", "-q", lst, f"{registry.host}/kapsel/alone:1")
    assert first.returncode == 0, first.stderr
    # The stored index is what was pushed: its digest is the list's ID.
    line = [ln for ln in k("images", check=True).stdout.splitlines()
            if ln.startswith("localhost/mylist")][0]
    assert first.stdout.strip()[7:19] in line
    before = uploads(registry, "kapsel/alone")
    r = k("manifest", "push", "--all=false", lst, f"{registry.host}/kapsel/alone:2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == first.stdout and "Copying blob" not in r.stderr
    assert uploads(registry, "kapsel/alone") == before
    assert raw(registry, "kapsel/alone", "2")[0] == first.stdout.strip()
    r = k("manifest", "push", "-q", "--all=false", lst, f"{registry.host}/kapsel/empty:1")
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert "400" in r.stderr and "MANIFEST_BLOB_UNKNOWN" in r.stderr
    assert not has_manifest(registry, "kapsel/empty", "1")
    r = k("manifest", "push", "--all=maybe", lst, f"{registry.host}/kapsel/empty:1")
    assert r.returncode == 125 and "--all=maybe" in r.stderr
