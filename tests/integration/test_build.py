"""`kapsel build` end to end on the embedded busybox image (no registry, no network): a
multi-stage Containerfile whose image `kapsel run` runs, the layers it writes (whiteouts,
reproducible digests), and the bad input a build must refuse with file:line and the
instruction — leaving no tag, temp directory or mount behind. Every call gets a private
--store and --root."""
import gzip
import io
import json
import os
import tarfile

import pytest

import clients

pytestmark = [pytest.mark.root]


class K:
    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def __call__(self, *args, check=False, timeout=120, env=None):
        e = dict(os.environ)
        e.update(env or {})
        return clients.run([self.binary, "--store", self.store, "--root", self.root] +
                           [str(a) for a in args], check=check, timeout=timeout, env=e)

    def inspect(self, image):
        return json.loads(self("image", "inspect", image, check=True).stdout)[0]

    def layer(self, digest):
        """Names in a layer blob, in order, with their tar members."""
        with open(os.path.join(self.store, "blobs/sha256", digest.split(":")[1]), "rb") as f:
            data = gzip.decompress(f.read())
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            return [(m.name, m) for m in t.getmembers()]


@pytest.fixture
def k(kapsel, tmp_path):
    store, root = tmp_path / "store", tmp_path / "state"
    store.mkdir(mode=0o700)
    root.mkdir()
    return K(kapsel, str(store), str(root))


def context(tmp_path, containerfile, files=None):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(containerfile)
    for name, content in (files or {}).items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return ctx


def leftovers(k):
    """Temp build directories and mounts under the store a build must not leave."""
    tmp = os.path.join(k.store, "tmp")
    dirs = [d for d in os.listdir(tmp) if d.startswith("build-")] if os.path.isdir(tmp) else []
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if k.store in line]
    return dirs, mounts


MULTI = """\
# a comment
ARG BASE=busybox
FROM ${BASE} AS build
ARG WHO=nobody
WORKDIR /src
COPY a.txt sub ./
RUN echo "built $(cat a.txt) $(cat n.txt) for $WHO" > /out \\
 && rm /bin/true
FROM busybox
ENV GREETING="hi there"
COPY --from=build /out /out
COPY --chown=1000:1000 --chmod=0600 a.txt /home/a.txt
USER 1000:1000
LABEL org.example.stage=final
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /out; echo $GREETING; id -u; cat /home/a.txt"]
"""


def test_multistage_build_runs(k, tmp_path):
    ctx = context(tmp_path, MULTI, {"a.txt": "hello\n", "sub/n.txt": "nested\n",
                                    "secret.txt": "no\n", ".containerignore": "secret.txt\n"})
    r = k("build", "-t", "demo:1", "--build-arg", "WHO=me", "--label", "extra=yes", ctx)
    assert r.returncode == 0, r.stderr
    assert "STEP 6/15: RUN" in r.stderr
    image_id = r.stdout.strip()
    info = k.inspect("localhost/demo:1")
    assert info["Id"] == image_id
    cfg = info["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["User"] == "1000:1000"
    assert "GREETING=hi there" in cfg["Env"]
    run = k("run", "--rm", "localhost/demo:1")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "built hello nested for me\nhi there\n1000\nhello\n"

    # Only the final stage is in the image: busybox + two COPY layers.
    layers = info["Layers"]
    assert len(layers) == 3
    names = dict(k.layer(layers[2]["Digest"]))
    home = names["home/a.txt"]
    assert (home.uid, home.gid, home.mode) == (1000, 1000, 0o600)

    # The config carries what the Containerfile set (image-spec config.md field names).
    blob = os.path.join(k.store, "blobs/sha256")
    manifest = json.load(open(os.path.join(blob, info["Digest"].split(":")[1])))
    config = json.load(open(os.path.join(blob, manifest["config"]["digest"].split(":")[1])))
    assert config["config"]["Labels"] == {"org.example.stage": "final", "extra": "yes"}
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert [h.get("empty_layer", False) for h in config["history"]][-8:] == [
        True, False, False, True, True, True, True, True]
    assert leftovers(k) == ([], [])


def test_run_layer_has_whiteouts_and_no_runtime_mountpoints(k, tmp_path):
    ctx = context(tmp_path, MULTI, {"a.txt": "hello\n", "sub/n.txt": "nested\n"})
    r = k("build", "-q", "--target", "build", "-t", "stage1", ctx)
    assert r.returncode == 0, r.stderr
    layers = k.inspect("localhost/stage1")["Layers"]
    copy = [n for n, _ in k.layer(layers[-2]["Digest"])]
    assert copy == ["src", "src/a.txt", "src/n.txt"]
    run = [n for n, _ in k.layer(layers[-1]["Digest"])]
    # rm /bin/true -> an OCI whiteout; /proc, /sys, /dev are the runtime's, not the step's.
    assert run == ["bin", "bin/.wh.true", "out"]


def test_reproducible_with_source_date_epoch(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nCOPY a.txt /a\nRUN echo x > /b\n", {"a.txt": "a\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    one = k("build", "-q", "-t", "r1", ctx, env=env)
    two = k("build", "-q", "-t", "r2", ctx, env=env)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    l1 = [x["Digest"] for x in k.inspect("localhost/r1")["Layers"]]
    l2 = [x["Digest"] for x in k.inspect("localhost/r2")["Layers"]]
    assert l1 == l2
    assert one.stdout == two.stdout  # the same config, so the same image ID
    for _, m in k.layer(l1[-1]):
        assert m.mtime <= 1700000000


def test_add_local_tar_extracts(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nADD files.tar /opt/\nCMD [\"cat\", \"/opt/in/t\"]\n")
    with tarfile.open(ctx / "files.tar", "w") as t:
        data = b"from tar\n"
        info = tarfile.TarInfo("in/t")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    r = k("build", "-q", "-t", "addtar", ctx)
    assert r.returncode == 0, r.stderr
    assert k("run", "--rm", "localhost/addtar").stdout == "from tar\n"


def test_failing_run_reports_and_leaves_nothing(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo first; echo last >&2; exit 3\n")
    r = k("build", "-q", "-t", "broken", ctx)
    assert r.returncode != 0
    assert f"{ctx}/Containerfile:2: RUN echo first; echo last >&2; exit 3: exit status 3" \
        in r.stderr
    assert "first\nlast\n" in r.stderr  # the tail of the output, even with -q
    assert "broken" not in k("images").stdout
    assert leftovers(k) == ([], [])


@pytest.mark.parametrize("containerfile,files,message", [
    ("FROM busybox\nCOPY ../outside /x\n", {}, "COPY: source ../outside is outside the build context"),
    ("FROM busybox\nCOPY link /x\n", {}, "COPY: source link is outside the build context"),
    ("FROM busybox\nCOPY missing /x\n", {}, "COPY: source missing: No such file or directory"),
    ("FROM busybox\nCOPY secret /x\n", {"secret": "s", ".dockerignore": "secret\n"},
     "COPY: source secret is excluded by .containerignore"),
    ("FROM busybox\nCOPY --from=nope /a /b\n", {}, "COPY: --from=nope: no such stage or image"),
    ("FROM busybox\nADD https://example.org/x /x\n", {},
     "ADD: remote source https://example.org/x: not supported (builds have no network)"),
    ("FROM busybox\nFROBNICATE\n", {}, "Containerfile:2: unknown instruction FROBNICATE"),
    ("FROM busybox\nENV A\n", {}, "Containerfile:2: ENV: A has no value"),
    ("FROM nosuchimage-here\n", {}, "FROM: image nosuchimage-here not found locally"),
])
def test_bad_input(k, tmp_path, containerfile, files, message):
    ctx = context(tmp_path, containerfile, files)
    # A symlink out of the context: followed, it would read the host's /etc/passwd.
    os.symlink("/etc/passwd", ctx / "link")
    (tmp_path / "outside").write_text("host file\n")
    r = k("build", "-q", "-t", "bad", ctx)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "bad" not in k("images").stdout
    assert leftovers(k) == ([], [])


def test_unknown_target(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox AS one\n")
    r = k("build", "--target", "two", ctx)
    assert r.returncode != 0
    assert "--target two: no stage of that name" in r.stderr


CACHED = """\
FROM busybox
COPY a.txt /a
RUN cat /proc/sys/kernel/random/uuid > /stamp1
COPY b.txt /b
RUN cat /proc/sys/kernel/random/uuid > /stamp2
CMD ["cat", "/stamp1", "/stamp2"]
"""


def test_cache_rebuild_runs_nothing_and_reruns_from_changed_copy(k, tmp_path):
    ctx = context(tmp_path, CACHED, {"a.txt": "a\n", "b.txt": "b\n"})
    first = k("build", "-t", "cached", ctx)
    assert first.returncode == 0, first.stderr
    assert "Using cache" not in first.stderr
    s1 = k("run", "--rm", "localhost/cached").stdout.split()

    # Unchanged: every step is a hit, no RUN runs (the stamps stay), the same layers.
    again = k("build", "-t", "cached", ctx)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("--> Using cache") == 4, again.stderr
    assert k("run", "--rm", "localhost/cached").stdout.split() == s1

    # b.txt changed: the steps before its COPY are hits, the COPY and what follows run.
    (ctx / "b.txt").write_text("b changed\n")
    edit = k("build", "-t", "cached", ctx)
    assert edit.returncode == 0, edit.stderr
    assert edit.stderr.count("--> Using cache") == 2, edit.stderr
    s3 = k("run", "--rm", "localhost/cached").stdout.split()
    assert s3[0] == s1[0] and s3[1] != s1[1]

    # A build arg in scope is part of the key; --no-cache runs everything.
    nocache = k("build", "--no-cache", "-t", "cached", ctx)
    assert "Using cache" not in nocache.stderr
    s4 = k("run", "--rm", "localhost/cached").stdout.split()
    assert s4[0] != s1[0] and s4[1] != s3[1]


def test_cache_ignores_excluded_files_and_follows_build_args(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nARG V=1\nCOPY . /ctx/\nRUN echo $V > /v\n",
                  {"kept": "k\n", "junk.log": "1\n", ".containerignore": "*.log\n"})
    assert k("build", "-q", "-t", "ig", ctx).returncode == 0
    (ctx / "junk.log").write_text("2\n")  # excluded: does not change the COPY's key
    r = k("build", "-t", "ig", ctx)
    assert r.stderr.count("--> Using cache") == 2, r.stderr
    assert k("run", "--rm", "localhost/ig", "ls", "-A", "/ctx").stdout.split() == \
        [".containerignore", "Containerfile", "kept"]
    r = k("build", "--build-arg", "V=2", "-t", "ig", ctx)
    assert r.stderr.count("--> Using cache") == 0, r.stderr
    assert k("run", "--rm", "localhost/ig", "cat", "/v").stdout == "2\n"


def test_tag_untag_history(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nCOPY a.txt /a\nENV X=1\nCMD [\"cat\", \"/a\"]\n",
                  {"a.txt": "a\n"})
    image_id = k("build", "-q", "-t", "orig", ctx, check=True).stdout.strip()
    assert k("tag", "orig", "second:2", "reg.example:5000/team/app:3").returncode == 0
    listing = k("images").stdout
    assert "localhost/second" in listing and "reg.example:5000/team/app" in listing
    assert k.inspect("localhost/second:2")["Id"] == image_id
    assert k("run", "--rm", "reg.example:5000/team/app:3").stdout == "a\n"

    hist = k("image", "history", "--no-trunc", "localhost/second:2", check=True).stdout
    lines = hist.splitlines()
    assert lines[0].split() == ["CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert 'CMD ["cat", "/a"]' in lines[1] and "0 B" in lines[1]
    assert "ENV X=1" in lines[2]
    assert "COPY a.txt /a" in lines[3] and "0 B" not in lines[3]

    # A name the image does not have is refused; the named ones go, the image stays.
    r = k("untag", "orig", "localhost/nope:1")
    assert r.returncode != 0 and "localhost/nope:1 is not a name of image orig" in r.stderr
    assert k("untag", "orig", "second:2").returncode == 0
    assert "localhost/second" not in k("images").stdout
    assert k("untag", "orig").returncode == 0  # every remaining name
    listing = k("images").stdout
    assert "localhost/orig" not in listing and "reg.example:5000/team/app" not in listing
    r = k("tag", "nosuch", "x")
    assert r.returncode != 0 and "nosuch" in r.stderr
    r = k("tag", "busybox", "bad@@name")
    assert r.returncode != 0 and "bad@@name" in r.stderr


def test_commit_container(k, tmp_path):
    r = k("run", "--name", "to-commit", "busybox", "sh", "-c",
          "echo data > /newfile; rm /bin/true; mkdir -p /x/y")
    assert r.returncode == 0, r.stderr
    try:
        r = k("commit", "--change", 'CMD ["cat", "/newfile"]', "--change", "ENV A=1",
              "to-commit", "committed:1")
        assert r.returncode == 0, r.stderr
        assert "runtime error" not in r.stderr  # UBSan: the empty /x/y walked cleanly
        assert k("run", "--rm", "localhost/committed:1").stdout == "data\n"
        info = k.inspect("localhost/committed:1")
        assert info["Id"] == r.stdout.strip()
        assert "A=1" in info["Config"]["Env"]
        names = [n for n, _ in k.layer(info["Layers"][-1]["Digest"])]
        # The change, and not the run's /etc/hosts and /etc/hostname mount targets.
        assert names == ["bin", "bin/.wh.true", "etc", "newfile", "x", "x/y"]
        bad = k("commit", "--change", "RUN true", "to-commit", "x:1")
        assert bad.returncode != 0 and "--change: RUN cannot be applied by commit" in bad.stderr
        bad = k("commit", "no-such-container", "x:1")
        assert bad.returncode != 0 and "no container named no-such-container" in bad.stderr
    finally:
        k("rm", "-f", "to-commit")


def test_copy_globs(k, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nCOPY *.txt /dst/\nCOPY sub/o*.md /one\n"
                  "CMD [\"sh\", \"-c\", \"ls /dst; cat /one\"]\n",
                  {"a.txt": "a", "b.txt": "b", "skip.txt": "s", "c.log": "c",
                   "sub/only.md": "only\n", ".containerignore": "skip.txt\n"})
    r = k("build", "-q", "-t", "globs", ctx)
    assert r.returncode == 0, r.stderr
    # Matches sorted, the ignored one left out; one match with a file destination is a file.
    assert k("run", "--rm", "localhost/globs").stdout == "a.txt\nb.txt\nonly\n"
    for line, msg in [("COPY *.nope /x/", "COPY: source *.nope: no file in the context matches"),
                      ("COPY s*/only.md /x", "COPY: source s*/only.md: wildcards only in the "
                                             "last path component")]:
        (ctx / "Containerfile").write_text(f"FROM busybox\n{line}\n")
        r = k("build", "-q", ctx)
        assert r.returncode != 0 and msg in r.stderr, r.stderr


def test_run_layer_hardlinks_opaque_dirs_long_names(k, tmp_path):
    long = "d" * 60 + "/" + "f" * 70  # > 100 bytes with its parents: a PAX path
    ctx = context(tmp_path, f"""FROM busybox
RUN echo one > /h1 && ln /h1 /h2
RUN rm -rf /home && mkdir -p /home/new && echo x > /home/new/x
RUN mkdir -p /deep/{long.split('/')[0]} && echo long > /deep/{long}
""")
    r = k("build", "-q", "-t", "fmt", ctx)
    assert r.returncode == 0, r.stderr
    layers = k.inspect("localhost/fmt")["Layers"]
    hl = dict(k.layer(layers[-3]["Digest"]))
    assert hl["h1"].isfile() and hl["h2"].islnk() and hl["h2"].linkname == "h1"
    op = [n for n, _ in k.layer(layers[-2]["Digest"])]
    # The recreated /home hides the image's: an opaque whiteout inside it (layer.md).
    assert op == ["home", "home/.wh..wh..opq", "home/new", "home/new/x"]
    names = [n for n, _ in k.layer(layers[-1]["Digest"])]
    assert f"deep/{long}" in names
    out = k("run", "--rm", "localhost/fmt", "sh", "-c",
            f"cat /h2; ls -A /home; cat /deep/{long}; stat -c %h /h1").stdout
    assert out == "one\nnew\nlong\n2\n"
