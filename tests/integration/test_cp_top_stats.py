"""`kapsel cp`, `top`, `stats`, `system df` and `system prune` on image containers (issue 16), as
podman has them. cp is tested for what matters most: a container's symlinks never make it read
or write outside the container, in either direction, running or stopped. The escape probes
point at a scratch directory of the test's own, never at anything the host needs. Every kapsel
call gets a private --store and --root."""
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root]


K = clients.Kapsel  # --store/--root fixed for the module's runs


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cpstore"))


@pytest.fixture(scope="session")
def state_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cpstate"))


@pytest.fixture
def k(kapsel, store, state_root):
    runner = K(kapsel, store, state_root)
    r = runner("run", "--rm", "busybox", "true")
    assert r.returncode == 0, f"the embedded busybox image does not run: {r.stderr}"
    return runner


@pytest.fixture
def names(k):
    made = []

    def new():
        made.append("i16cp-" + uuid.uuid4().hex[:10])
        return made[-1]

    yield new
    for n in made:
        k("rm", "-f", n)


# The container's files, set up by its own shell: a tree, a file owned by 1234, and symlinks
# that would lead to the host's `hostdir` if anything followed them outside the container.
SETUP = ("mkdir -p /data/sub /data/ro && echo hi > /data/sub/f && echo top > /data/t && "
         "touch /data/owned && chown 1234:1234 /data/owned && "
         "ln -s {up}{host} /data/esc && ln -s {up}{host}/secret /data/escfile && "
         "ln -s {up}{host}/target /data/escnew && ln -s /data/sub /data/inside")
UP = "/.." * 12


def start(k, name, host, cmd="sleep 1000"):
    script = SETUP.format(up=UP, host=host) + f" && echo ready && {cmd}"
    k("run", "-d", "--name", name, "busybox", "sh", "-c", script, check=True)
    clients.wait_for(lambda: "ready" in k("logs", name).stdout, what=f"{name} set up")


def state_of(k, name):
    for e in json.loads(k("ps", "-a", "--format", "json", check=True).stdout):
        if e["Names"][0] == name:
            return e["State"]
    return None


def stopped(k, name, host):
    start(k, name, host, cmd="true")
    clients.wait_for(lambda: state_of(k, name) == "exited", what=f"{name} exited")


@pytest.fixture
def hostdir(tmp_path):
    """A scratch host directory the container's symlinks aim at, with a secret in it."""
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    (d / "target").write_text("host target\n")
    return d


def host_untouched(d):
    assert sorted(os.listdir(d)) == ["secret", "target"]
    assert (d / "secret").read_text() == "host secret\n"
    assert (d / "target").read_text() == "host target\n"


def one_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    return lines[0]


# ---- cp ----

@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_out_file_and_dir(k, names, hostdir, tmp_path, state):
    n = names()
    (start if state == "running" else stopped)(k, n, hostdir)
    k("cp", f"{n}:/data/sub/f", tmp_path / "f", check=True)
    assert (tmp_path / "f").read_text() == "hi\n"
    # A directory whole; into an existing directory under its own name.
    out = tmp_path / "out"
    out.mkdir()
    k("cp", f"{n}:/data", out, check=True)
    assert (out / "data" / "sub" / "f").read_text() == "hi\n"
    # Symlinks come out as symlinks, never followed.
    assert os.readlink(out / "data" / "esc") == f"{UP}{hostdir}"
    assert not (out / "data" / "esc").is_dir() or os.path.islink(out / "data" / "esc")
    # "DIR/." copies the contents; a new name copies the directory as that name.
    k("cp", f"{n}:/data/sub/.", out, check=True)
    assert (out / "f").read_text() == "hi\n"
    k("cp", f"{n}:/data/sub", tmp_path / "renamed", check=True)
    assert (tmp_path / "renamed" / "f").read_text() == "hi\n"
    host_untouched(hostdir)


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_in_file_and_dir(k, names, hostdir, tmp_path, state):
    n = names()
    (start if state == "running" else stopped)(k, n, hostdir)
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "g").write_text("from host\n")
    (src / "h").write_text("h\n")
    os.chown(src / "h", 4321, 4321)
    k("cp", src / "h", f"{n}:/data/newfile", check=True)
    k("cp", src, f"{n}:/data/sub", check=True)
    k("cp", "-a", src / "h", f"{n}:/data/kept", check=True)
    # Through a symlink that stays inside the container: it means the container's /data/sub.
    k("cp", src / "h", f"{n}:/data/inside/", check=True)
    back = tmp_path / "back"
    k("cp", "-a", f"{n}:/data", back, check=True)
    assert (back / "newfile").read_text() == "h\n"
    assert (back / "sub" / "src" / "deep" / "g").read_text() == "from host\n"
    assert (back / "sub" / "h").read_text() == "h\n"
    # Without -a what is copied in belongs to the container's root; -a keeps the owner.
    assert os.stat(back / "newfile").st_uid == 0
    assert os.stat(back / "kept").st_uid == 4321
    assert os.stat(back / "owned").st_uid == 1234
    if state == "running":
        r = k("exec", n, "cat", "/data/sub/src/deep/g", check=True)
        assert r.stdout == "from host\n"
    host_untouched(hostdir)


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_symlink_escape_out(k, names, hostdir, tmp_path, state):
    """Symlinks in the container aimed at the host: a copy out reads the container's own
    (missing) files, never the host's."""
    n = names()
    (start if state == "running" else stopped)(k, n, hostdir)
    for path in ("/data/esc/secret", "/data/escfile", "/data/esc/."):
        dst = tmp_path / ("got" + uuid.uuid4().hex[:6])
        r = k("cp", f"{n}:{path}", dst)
        if r.returncode == 0:
            # Only a symlink may come out, and no host content.
            assert os.path.islink(dst) or not os.path.exists(dst)
            if os.path.isdir(dst) and not os.path.islink(dst):
                assert "secret" not in os.listdir(dst)
        else:
            assert f"{n}:{path}" in one_line(r)
        assert not (os.path.isfile(dst) and not os.path.islink(dst) and
                    open(dst).read() == "host secret\n")
    # The link itself copies as a link.
    k("cp", f"{n}:/data/escfile", tmp_path / "link", check=True)
    assert os.readlink(tmp_path / "link") == f"{UP}{hostdir}/secret"
    host_untouched(hostdir)


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_symlink_escape_in(k, names, hostdir, tmp_path, state):
    """Symlinks in the container aimed at the host: a copy in writes only inside it."""
    n = names()
    (start if state == "running" else stopped)(k, n, hostdir)
    f = tmp_path / "payload"
    f.write_text("payload\n")
    d = tmp_path / "pdir"
    d.mkdir()
    (d / "secret").write_text("overwritten\n")
    attempts = [(f, "/data/esc/"), (f, "/data/esc/secret"), (f, "/data/escfile"),
                (f, "/data/escnew"), (str(d) + "/.", "/data/esc"), (d, "/data/esc/x")]
    for src, dst in attempts:
        k("cp", src, f"{n}:{dst}")
        host_untouched(hostdir)
    # What did land, landed in the container: the escaping links were replaced there.
    back = tmp_path / "back"
    k("cp", f"{n}:/data", back, check=True)
    assert (back / "escfile").read_text() == "payload\n"
    assert (back / "escnew").read_text() == "payload\n"


def test_cp_errors(k, names, hostdir, tmp_path):
    n = names()
    start(k, n, hostdir)
    missing = "i16cp-missing-" + uuid.uuid4().hex[:6]
    line = one_line(k("cp", f"{missing}:/etc/passwd", tmp_path / "x"))
    assert f"no such container {missing}" in line
    line = one_line(k("cp", tmp_path, f"{missing}:/tmp"))
    assert f"no such container {missing}" in line
    line = one_line(k("cp", f"{n}:/no/such/file", tmp_path / "x"))
    assert f"{n}:/no/such/file" in line and "No such file" in line
    line = one_line(k("cp", tmp_path / "nope", f"{n}:/tmp"))
    assert str(tmp_path / "nope") in line
    line = one_line(k("cp", tmp_path / "a", tmp_path / "b"))
    assert "CONTAINER:PATH" in line
    line = one_line(k("cp", f"{n}:/a", f"{n}:/b"))
    assert "between containers" in line
    line = one_line(k("cp", f"{n}:/data", tmp_path / "nodir" / "x"))
    assert "nodir" in line
    (tmp_path / "file").write_text("x")
    line = one_line(k("cp", f"{n}:/data", tmp_path / "file"))
    assert "non-directory" in line
    assert not os.path.exists(tmp_path / "x")
    one_line(k("cp", f"{n}:/data"))
    one_line(k("cp", "--bogus", f"{n}:/data", tmp_path))


def test_cp_out_writes_host_files_in_place(k, names, hostdir, tmp_path):
    """An existing host file is written, as cp(1) writes it: a device node of the user's stays
    a device (a scratch copy of /dev/null here), a hard link stays linked."""
    n = names()
    start(k, n, hostdir)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    k("cp", f"{n}:/data/t", null, check=True)
    st = os.lstat(null)
    assert (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == os.makedev(1, 3)
    (tmp_path / "a").write_text("old\n")
    os.link(tmp_path / "a", tmp_path / "b")
    k("cp", f"{n}:/data/t", tmp_path / "a", check=True)
    assert (tmp_path / "b").read_text() == "top\n"


def test_cp_stopped_leaves_no_mount(k, names, hostdir, tmp_path):
    n = names()
    stopped(k, n, hostdir)
    k("cp", f"{n}:/data/t", tmp_path / "t", check=True)
    k("cp", tmp_path / "t", f"{n}:/data/t2", check=True)
    cdir = os.path.join(k.store, "containers", n)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if cdir in line]
    # And the container can still be removed.
    k("rm", n, check=True)


# ---- top ----

def test_top_default_columns(k, names, hostdir):
    n = names()
    start(k, n, hostdir, cmd="sleep 1000 & sleep 1001")
    r = k("top", n, check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME",
                                "COMMAND"]
    rows = [l.split(None, 7) for l in lines[1:]]
    by_cmd = {row[7]: row for row in rows}
    assert set(by_cmd) == {"sleep 1000", "sleep 1001"}, r.stdout
    init = by_cmd["sleep 1001"]
    assert init[0] == "root" and init[1] == "1" and init[2] == "0" and init[5] == "?"
    assert by_cmd["sleep 1000"][2] == "1"  # its parent: the container's pid 1
    # An exec'd process's parent is the runtime, outside the container: 0, as podman shows.
    p = subprocess.Popen(k.argv("exec", n, "sleep", "1002"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        row = clients.wait_for(
            lambda: [l.split(None, 7) for l in k("top", n).stdout.splitlines()
                     if l.endswith("sleep 1002")], what="exec'd process in top")[0]
        assert row[2] == "0", row
    finally:
        p.kill()
        p.wait()


def test_top_descriptors(k, names, hostdir):
    n = names()
    start(k, n, hostdir)
    r = k("top", n, "pid,hpid", "comm", "seccomp", "capeff", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["PID", "HPID", "COMMAND", "SECCOMP", "EFFECTIVE", "CAPS"]
    pid, hpid, comm, seccomp, caps = lines[1].split()
    assert pid == "1" and comm == "sleep" and seccomp == "filter"
    assert "CHOWN" in caps.split(",") and "SYS_ADMIN" not in caps.split(",")
    with open(f"/proc/{hpid}/cmdline") as f:
        assert f.read().startswith("sleep")
    # AIX descriptors.
    r = k("top", n, "%p", "%c", check=True)
    assert r.stdout.splitlines()[0].split() == ["PID", "COMMAND"]


def test_top_errors(k, names, hostdir):
    n = names()
    start(k, n, hostdir)
    line = one_line(k("top", n, "pid", "nosuchfield"))
    assert '"nosuchfield"' in line
    missing = "i16cp-missing-" + uuid.uuid4().hex[:6]
    assert f"no such container {missing}" in one_line(k("top", missing))
    one_line(k("top"))
    m = names()
    stopped(k, m, hostdir)
    assert "not running" in one_line(k("top", m))


# ---- stats ----

def test_stats_no_stream_json(k, names, hostdir):
    n = names()
    k("run", "-d", "--name", n, "--memory", "64m", "busybox", "sh", "-c",
      "sleep 1000 & sleep 1000 & wait", check=True)
    clients.wait_for(lambda: len(k("top", n).stdout.splitlines()) == 4, what="3 processes")
    r = k("stats", "--no-stream", "--format", "json", n, check=True)
    (s,) = json.loads(r.stdout)
    assert set(s) == {"id", "name", "cpu_time", "cpu_percent", "avg_cpu", "mem_usage",
                      "mem_percent", "net_io", "block_io", "pids"}
    assert s["name"] == n and s["pids"] == "3"
    usage, limit = s["mem_usage"].split(" / ")
    assert limit == "67.1MB", s  # 64 MiB, in podman's decimal units
    assert usage != "0B" and s["cpu_percent"].endswith("%") and s["mem_percent"].endswith("%")
    assert s["net_io"] == "0B / 0B"  # --net none: only lo, which is not counted


def test_stats_table_and_template(k, names, hostdir):
    n = names()
    start(k, n, hostdir)
    r = k("stats", "--no-stream", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("NAME") and "CPU %" in lines[0] and \
        "MEM USAGE / LIMIT" in lines[0] and "NET IO" in lines[0] and \
        "BLOCK IO" in lines[0] and "PIDS" in lines[0]
    assert any(l.split()[0] == n for l in lines[1:])
    r = k("stats", "--no-stream", "--format", "table {{.Name}}\\t{{ .PIDS }}", n, check=True)
    assert r.stdout.splitlines() == ["NAME\tPIDS", f"{n}\t1"]


def test_stats_streams_until_interrupted(k, names, hostdir):
    n = names()
    start(k, n, hostdir)
    p = subprocess.Popen(k.argv("stats", "--format", "{{.Name}} {{.PIDS}}", n),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    assert out.splitlines().count(f"{n} 1") >= 2, (out, err)


def test_stats_errors(k, names, hostdir):
    n = names()
    start(k, n, hostdir)
    line = one_line(k("stats", "--no-stream", "--format", "{{.Nope}}", n))
    assert ".Nope" in line
    missing = "i16cp-missing-" + uuid.uuid4().hex[:6]
    assert f"no such container {missing}" in one_line(k("stats", "--no-stream", missing))
    m = names()
    stopped(k, m, hostdir)
    assert "not running" in one_line(k("stats", "--no-stream", m))
    # Without names: only running containers, the stopped one left out.
    r = k("stats", "--no-stream", "--format", "{{.Name}}", check=True)
    assert n in r.stdout.split() and m not in r.stdout.split()


# ---- system df / prune ----

def df_json(k):
    return {row["Type"]: row for row in json.loads(k("system", "df", "--format", "json",
                                                     check=True).stdout)}


def test_system_df(k, names, hostdir):
    before = df_json(k)
    n, m = names(), names()
    start(k, n, hostdir)
    stopped(k, m, hostdir)
    after = df_json(k)
    assert after["Containers"]["Total"] == before["Containers"]["Total"] + 2
    assert after["Containers"]["Active"] == before["Containers"]["Active"] + 1
    assert after["Containers"]["RawReclaimable"] > before["Containers"]["RawReclaimable"]
    assert after["Images"]["Total"] >= 1 and after["Images"]["Active"] >= 1
    assert after["Images"]["RawSize"] > 0
    r = k("system", "df", check=True)
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [row.split()[0] for row in rows[1:]] == ["Images", "Containers", "Local"]
    # Local volumes: each directory under <store>/volumes.
    vol = os.path.join(k.store, "volumes", "i16cp-vol-" + uuid.uuid4().hex[:6])
    os.makedirs(vol)
    try:
        with open(os.path.join(vol, "blob"), "w") as f:
            f.write("x" * 5000)
        v = df_json(k)["Local Volumes"]
        assert v["Total"] >= 1 and v["RawSize"] >= 5000 and v["RawReclaimable"] >= 5000
    finally:
        os.remove(os.path.join(vol, "blob"))
        os.rmdir(vol)
    one_line(k("system", "df", "--format", "yaml"))
    one_line(k("system", "nosuch"))


def test_system_prune(kapsel, tmp_path, hostdir):
    # A store of its own: prune -a removes the image every other test uses.
    k = K(kapsel, str(tmp_path / "store"), str(tmp_path / "state"))
    run, done = "i16cp-" + uuid.uuid4().hex[:10], "i16cp-" + uuid.uuid4().hex[:10]
    try:
        start(k, run, hostdir)
        stopped(k, done, hostdir)
        # No terminal to ask on and no --force: refused, nothing removed.
        line = one_line(k("system", "prune", input=""))
        assert "--force" in line
        names = {e["Names"][0] for e in json.loads(k("ps", "-a", "--format", "json").stdout)}
        assert names == {run, done}
        r = k("system", "prune", "-f", check=True)
        assert "Deleted Containers" in r.stdout and done in r.stdout.split()
        assert "Total reclaimed space:" in r.stdout
        names = {e["Names"][0] for e in json.loads(k("ps", "-a", "--format", "json").stdout)}
        assert names == {run}
        # -a: the image is in use by the running container, so it stays...
        k("system", "prune", "-a", "-f", check=True)
        assert "busybox" in k("images", check=True).stdout
        # ...until nothing uses it.
        k("rm", "-f", run, check=True)
        r = k("system", "prune", "--all", "--force", check=True)
        assert "Deleted Images" in r.stdout
        assert "busybox" not in k("images", check=True).stdout
        assert df_json(k)["Images"]["Total"] == 0
    finally:
        k("rm", "-f", run)
        k("rm", "-f", done)
