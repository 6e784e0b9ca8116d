"""`kapsel run` of an image the store lacks pulls it, as podman's --pull policies say
(podman-run(1)), and short names resolve through registries.conf as
containers-registries.conf(5) says: aliases, localhost/ first for images already in the store,
then unqualified-search-registries in order. Against Debian's docker-registry on 127.0.0.1;
every kapsel call gets a private --store and --root and its own registries.conf
(CONTAINERS_REGISTRIES_CONF), so the host's configuration never leaks in."""
import json
import os
import pty
import shutil
import subprocess
import threading

import pytest

from registry import Layout, Registry, free_port, skopeo_push

pytestmark = pytest.mark.root

NEEDS = ("docker-registry", "skopeo")
BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    missing = [t for t in NEEDS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    if not os.path.isfile(BUSYBOX):
        pytest.skip("needs busybox-static (/bin/busybox)")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


def push_image(registry, tmp_path, ref, msg):
    """A runnable image (static busybox, Cmd: cat /msg) with /msg = msg, pushed as ref
    (REPO:TAG on the registry)."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    layout = Layout(tmp_path / f"layout-{ref.replace('/', '_').replace(':', '_')}")
    desc, _ = layout.image([[("dir", "bin", 0o755), ("file", "bin/busybox", bb, 0o755),
                             ("symlink", "bin/cat", "busybox"), ("symlink", "bin/sh", "busybox"),
                             ("file", "msg", msg.encode() + b"\n", 0o644)]],
                           config={"Cmd": ["/bin/cat", "/msg"]})
    layout.tag("t", desc)
    skopeo_push(layout, "t", f"{registry.host}/{ref}")
    return desc["digest"]


class K:
    def __init__(self, kapsel, tmp_path):
        self.kapsel = kapsel
        self.store = str(tmp_path / "store")
        self.root = str(tmp_path / "state")
        self.conf = str(tmp_path / "registries.conf")
        with open(self.conf, "w") as f:
            f.write("# no search registries\n")
        self.env = dict(os.environ)
        for v in ("REGISTRY_AUTH_FILE", "KAPSEL_REGISTRIES_CONF_DIR"):
            self.env.pop(v, None)
        self.env["CONTAINERS_REGISTRIES_CONF"] = self.conf

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def __call__(self, *args, timeout=120):
        return subprocess.run([self.kapsel, "--store", self.store, "--root", self.root] +
                              [str(a) for a in args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)

    def tty(self, *args, timeout=120):
        """As __call__, with stderr on a terminal (where pull progress is shown)."""
        master, slave = pty.openpty()
        p = subprocess.Popen([self.kapsel, "--store", self.store, "--root", self.root] +
                             [str(a) for a in args], stdout=subprocess.PIPE, stderr=slave,
                             stdin=subprocess.DEVNULL, env=self.env)
        os.close(slave)
        chunks = []

        def reader():
            while True:
                try:
                    d = os.read(master, 4096)
                except OSError:
                    break
                if not d:
                    break
                chunks.append(d)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        out, _ = p.communicate(timeout=timeout)
        t.join(timeout=10)
        os.close(master)
        err = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        return subprocess.CompletedProcess(args, p.returncode, out.decode(), err)

    def images(self):
        r = self("images", "--format", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout or "[]")

    def names(self):
        """Every stored name (podman's RepoTags)."""
        return [n for img in self.images() for n in img.get("RepoTags", [])]


@pytest.fixture
def k(kapsel, tmp_path):
    return K(kapsel, tmp_path)


def one_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def manifest_gets(registry, repo):
    registry.logf.flush()
    with open(registry.log, errors="replace") as f:
        return sum(1 for l in f if f'"GET /v2/{repo}/manifests/' in l)


def test_run_absent_image_pulls_and_runs(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/absent:1", "absent one")
    ref = f"{registry.host}/autopull/absent:1"
    r = k.tty("run", "--rm", ref)
    assert r.returncode == 0, r.stderr
    # stdout is the container's alone; the pull talks on stderr (a terminal).
    assert r.stdout == "absent one\n"
    assert f"Trying to pull {ref}..." in r.stderr
    assert ref in k.names()
    # Present now: no second pull under the default policy (missing).
    before = manifest_gets(registry, "autopull/absent")
    r = k("run", "--rm", ref)
    assert r.returncode == 0 and r.stdout == "absent one\n", r.stderr
    assert r.stderr == ""
    assert manifest_gets(registry, "autopull/absent") == before


def test_pull_progress_only_on_a_terminal(k, registry, tmp_path):
    """As pull's display: a script's stderr stays empty on success."""
    push_image(registry, tmp_path, "autopull/script:1", "scripted")
    r = k("run", "--rm", f"{registry.host}/autopull/script:1")
    assert r.returncode == 0 and r.stdout == "scripted\n"
    assert r.stderr == ""


def test_run_quiet_pull(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/quiet:1", "quiet")
    r = k.tty("run", "-q", "--rm", f"{registry.host}/autopull/quiet:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "quiet\n"
    assert r.stderr == ""


def test_pull_never_refuses_and_leaves_nothing(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/never:1", "never")
    ref = f"{registry.host}/autopull/never:1"
    before = manifest_gets(registry, "autopull/never")
    r = k("run", "--pull", "never", "--rm", ref)
    assert r.returncode == 125
    line = one_line(r)
    assert ref in line and "--pull=never" in line, line
    assert r.stdout == ""
    assert manifest_gets(registry, "autopull/never") == before
    assert k.images() == []
    assert k("ps", "-a", "-q").stdout.strip() == ""
    blobs = os.path.join(k.store, "blobs", "sha256")
    assert not os.path.isdir(blobs) or os.listdir(blobs) == []


def test_pull_policy_bad_value(k):
    r = k("run", "--pull", "sometimes", "--rm", "busybox", "true")
    assert r.returncode == 125
    assert "--pull \"sometimes\": expected always, missing, never or newer" in one_line(r)


def test_pull_always_pulls_again(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/always:1", "always one")
    ref = f"{registry.host}/autopull/always:1"
    assert k("run", "--rm", ref).returncode == 0
    push_image(registry, tmp_path, "autopull/always:1", "always two")
    before = manifest_gets(registry, "autopull/always")
    r = k.tty("run", "--pull", "always", "--rm", ref)
    assert r.returncode == 0, r.stderr
    assert f"Trying to pull {ref}..." in r.stderr
    assert manifest_gets(registry, "autopull/always") > before
    assert r.stdout == "always two\n"


def test_pull_always_fails_when_registry_fails(k, registry, tmp_path):
    """always: a failed pull is an error even with the image stored (podman)."""
    push_image(registry, tmp_path, "autopull/alwaysfail:1", "x")
    ref = f"{registry.host}/autopull/alwaysfail:1"
    assert k("run", "--rm", ref).returncode == 0
    other = f"127.0.0.1:{free_port()}/autopull/alwaysfail:1"
    assert k("tag", ref, other).returncode == 0
    r = k("run", "--pull", "always", "--rm", other)
    assert r.returncode == 125
    assert other in r.stderr.splitlines()[-1]


def test_pull_newer_picks_up_repushed_tag(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/newer:1", "newer one")
    ref = f"{registry.host}/autopull/newer:1"
    r = k("run", "--rm", ref)
    assert r.stdout == "newer one\n", r.stderr
    push_image(registry, tmp_path, "autopull/newer:1", "newer two")
    # missing: the stored image is used as it is.
    r = k("run", "--rm", ref)
    assert r.stdout == "newer one\n", r.stderr
    r = k("run", "--pull", "newer", "--rm", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "newer two\n"
    # Unchanged: still the same image, no error.
    r = k("run", "--pull=newer", "--rm", ref)
    assert r.returncode == 0 and r.stdout == "newer two\n", r.stderr


def test_pull_newer_keeps_stored_image_when_registry_is_gone(k, tmp_path, registry):
    own = Registry(tmp_path / "own")
    try:
        push_image(own, tmp_path, "autopull/gone:1", "still here")
        ref = f"{own.host}/autopull/gone:1"
        assert k("run", "--rm", ref).stdout == "still here\n"
    finally:
        own.stop()
    r = k("run", "--pull", "newer", "--rm", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "still here\n"
    assert "checking for a newer image failed, using the stored one" in r.stderr
    # always has no such fallback.
    r = k("run", "--pull", "always", "--rm", ref)
    assert r.returncode == 125 and r.stdout == ""


def test_short_name_tries_search_registries_in_order(k, registry, tmp_path):
    push_image(registry, tmp_path, "autopull/search:1", "searched")
    closed = f"127.0.0.1:{free_port()}"
    k.write_conf(f'unqualified-search-registries = ["{closed}", "{registry.host}"]\n')
    r = k.tty("run", "--rm", "autopull/search:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "searched\n"
    err = r.stderr
    assert err.index(f"Trying to pull {closed}/autopull/search:1") < \
        err.index(f"Trying to pull {registry.host}/autopull/search:1"), err
    assert f"{registry.host}/autopull/search:1" in k.names()
    # Now stored under the search registry's name: found there, not pulled again.
    r = k("run", "--rm", "autopull/search:1")
    assert r.returncode == 0 and "Trying to pull" not in r.stderr, r.stderr


def test_short_name_alias(k, registry, tmp_path):
    push_image(registry, tmp_path, "team/aliased", "via alias")  # tag: latest
    drop = tmp_path / "conf.d"
    drop.mkdir()
    (drop / "50-alias.conf").write_text(
        f'[aliases]\n"myalias" = "{registry.host}/team/aliased"\n')
    (drop / "ignored.txt").write_text("not toml at all [[[\n")
    k.env["KAPSEL_REGISTRIES_CONF_DIR"] = str(drop)
    r = k.tty("run", "--rm", "myalias")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "via alias\n"
    assert f'Resolved "myalias" as an alias ({drop}/50-alias.conf:2)' in r.stderr
    assert f"{registry.host}/team/aliased:latest" in k.names()


def test_localhost_first_for_locally_tagged_image(k, registry, tmp_path):
    """An image tagged `demo:1` is localhost/demo:1 (podman); `run demo:1` uses it even when
    a search registry has a demo:1 of its own. Before, run looked for docker.io/library/demo:1
    and failed ("not found locally")."""
    push_image(registry, tmp_path, "autopull/base:1", "local one")
    push_image(registry, tmp_path, "demo:1", "remote one")
    base = f"{registry.host}/autopull/base:1"
    assert k("run", "-q", "--rm", base).returncode == 0
    r = k("tag", base, "demo:1")
    assert r.returncode == 0, r.stderr
    assert "localhost/demo:1" in k.names()
    k.write_conf(f'unqualified-search-registries = ["{registry.host}"]\n')
    before = manifest_gets(registry, "demo")
    r = k("run", "--rm", "demo:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "local one\n"
    assert "Trying to pull" not in r.stderr
    assert manifest_gets(registry, "demo") == before


def test_malformed_registries_conf(k, registry):
    k.write_conf('unqualified-search-registries = ["a.io"]\n'
                 '[aliases]\n'
                 'short = enforcing\n')
    r = k("run", "--rm", "nosuchimage:1")
    assert r.returncode == 125
    line = one_line(r)
    assert f"{k.conf}:3: expected a value" in line, line
    k.write_conf('unqualified-search-registries = ["not a registry"]\n')
    r = k("run", "--rm", "nosuchimage:1")
    assert r.returncode == 125
    assert f"{k.conf}:1: unqualified-search-registries" in one_line(r)


def test_image_nowhere(k, registry):
    closed = f"127.0.0.1:{free_port()}"
    k.write_conf(f'unqualified-search-registries = ["{registry.host}", "{closed}"]\n')
    r = k("run", "--rm", "nosuch/image:1")
    assert r.returncode == 125
    assert r.stdout == ""
    line = one_line(r)
    assert ("image nosuch/image:1 not found locally; kapsel pull nosuch/image:1 tried 2 "
            "registries: ") in line, line
    assert f"{registry.host}/nosuch/image:1: " in line
    assert f"{closed}/nosuch/image:1: " in line
    assert k.images() == []
