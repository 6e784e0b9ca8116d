"""kapsel push against Debian's docker-registry on 127.0.0.1 — the acceptance for build +
push: a multi-stage Containerfile built from the embedded busybox is pushed, pulled back by
podman and skopeo, and runs under podman with the output `kapsel run` gives. Also: blobs the
registry has are skipped (a re-run after an interruption resumes), chunked uploads, and a
registry that refuses is reported with its status and message."""
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

import clients
from registry import Registry, free_port

pytestmark = pytest.mark.root

NEEDS = ("docker-registry", "skopeo", "podman")

CONTAINERFILE = """\
FROM busybox AS build
WORKDIR /src
COPY greeting.txt ./
RUN tr a-z A-Z < greeting.txt > /shout && echo built >> /shout
FROM busybox
ENV WHO=world
COPY --from=build /shout /app/shout
COPY run.sh /app/run.sh
USER 1000:1000
ENTRYPOINT ["/bin/sh", "/app/run.sh"]
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    missing = [t for t in NEEDS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=120):
        env = dict(os.environ)
        env.pop("REGISTRY_AUTH_FILE", None)
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout, env=env)


@pytest.fixture
def k(kapsel, tmp_path):
    store, root = tmp_path / "store", tmp_path / "state"
    store.mkdir(mode=0o700)
    root.mkdir()
    return K(kapsel, str(store), str(root))


@pytest.fixture
def built(k, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    (ctx / "greeting.txt").write_text("hello\n")
    (ctx / "run.sh").write_text('cat /app/shout; echo "hi $WHO"; id -u\n')
    k("build", "-q", "-t", "app:1", ctx, check=True)
    return "localhost/app:1"


def manifest(registry, repo, ref):
    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{ref}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"], json.loads(r.read())


def test_push_then_podman_and_skopeo_pull_and_run(k, built, registry, tmp_path,
                                                  tmp_path_factory):
    want = k("run", "--rm", built, check=True).stdout
    assert want == "HELLO\nbuilt\nhi world\n1000\n"
    dest = f"{registry.host}/kapsel/app:1"
    r = k("push", built, f"docker://{dest}")
    assert r.returncode == 0, r.stderr
    digest = r.stdout.strip()
    assert k("image", "inspect", built, check=True).stdout.count(digest) == 1
    got, m = manifest(registry, "kapsel/app", "1")
    assert got == digest and len(m["layers"]) == 3

    # skopeo copies it to an OCI layout byte for byte: the same manifest digest.
    oci = tmp_path / "oci"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                    f"docker://{dest}", f"oci:{oci}:app"], check=True, timeout=120)
    index = json.load(open(oci / "index.json"))
    assert index["manifests"][0]["digest"] == digest

    # podman pulls it and runs it (with kapsel as its runtime) to the same output.
    # podman refuses a runroot path longer than 50 characters: a short base.
    pod = clients.Podman(str(tmp_path_factory.mktemp("podman")), k.binary)
    try:
        r = pod("pull", "--tls-verify=false", dest, timeout=120)
        assert r.returncode == 0, r.stderr
        r = pod("run", "--rm", dest, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout == want
    finally:
        pod.cleanup()


def test_push_skips_blobs_the_registry_has_and_resumes(k, built, registry):
    dest = f"{registry.host}/kapsel/resume:1"
    first = k("push", built, dest)
    assert first.returncode == 0, first.stderr
    assert "skipped" not in first.stderr
    # As if the push had been interrupted after the blobs: the manifest is gone.
    digest = first.stdout.strip()
    req = urllib.request.Request(f"http://{registry.host}/v2/kapsel/resume/manifests/{digest}",
                                 method="DELETE")
    urllib.request.urlopen(req, timeout=10)
    again = k("push", built, dest)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("skipped: already exists") == 4, again.stderr
    assert manifest(registry, "kapsel/resume", "1")[0] == digest


def test_push_chunked(k, built, registry):
    dest = f"{registry.host}/kapsel/chunked:2"
    r = k("push", "--chunk-size", "65536", built, dest)
    assert r.returncode == 0, r.stderr
    assert manifest(registry, "kapsel/chunked", "2")[0] == r.stdout.strip()
    log = open(registry.log, errors="replace").read()
    assert '"PATCH /v2/kapsel/chunked/blobs/uploads/' in log


def test_push_to_a_refusing_registry(k, built, tmp_path):
    if not shutil.which("docker-registry"):
        pytest.skip("needs docker-registry")
    port = free_port()
    conf = tmp_path / "ro.yml"
    conf.write_text(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {tmp_path}/ro-storage
  maintenance:
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except Exception:
                assert time.time() < deadline, "read-only registry did not start"
                time.sleep(0.1)
        r = k("push", "-q", built, f"127.0.0.1:{port}/kapsel/app:1")
        assert r.returncode != 0
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1, r.stderr
        # The status and the registry's own message (text/plain from this one).
        assert "HTTP status 405: Method not allowed" in lines[0], lines[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_push_bad_input(k, built):
    r = k("push", "nosuch:1", "127.0.0.1:1/x:1")
    assert r.returncode != 0 and "nosuch" in r.stderr
    r = k("push", built, "127.0.0.1:1/x@sha256:" + "0" * 64)
    assert r.returncode != 0 and "names another manifest" in r.stderr
    r = k("push", built, "127.0.0.1:1/x:1")  # nothing listens there
    assert r.returncode != 0 and "127.0.0.1:1/x" in r.stderr
