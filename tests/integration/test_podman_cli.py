"""The habits a podman user brings (issue 16, "Broken today"): options after positional
arguments, "--", "-e=V", podman's exit statuses, and an image run that stays an image run in a
directory holding a config.json. Every kapsel call gets a private --store and --root (the
fixtures of test_run_image)."""
import json
import os
import time

import pytest

import clients
from registry import FakeRegistry, Layout
from test_run_image import K, k, name, ps, state_root, store, traces  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.root]


def test_stop_time_after_name(k, name):
    # pid 1 without a TERM handler ignores SIGTERM: only -t decides how long stop waits.
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    t0 = time.monotonic()
    r = k("stop", name, "-t", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == name + "\n"
    assert time.monotonic() - t0 < 5, "-t after the name was not taken as the timeout"


def test_rm_force_after_name(k, name):
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    r = k("rm", name, "-f")
    assert r.returncode == 0, r.stderr
    assert traces(k, name) == []


def test_logs_follow_after_name(k, name):
    r = k("run", "-d", "--name", name, "busybox", "sh", "-c",
          "for i in 1 2; do echo line$i; sleep 0.2; done")
    assert r.returncode == 0, r.stderr
    r = k("logs", name, "-f", timeout=20)
    assert (r.returncode, r.stdout) == (0, "line1\nline2\n"), r.stderr


def test_save_output_after_image(k, tmp_path):
    out = tmp_path / "b.tar"
    r = k("save", "busybox", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0


def test_pull_quiet_after_ref(kapsel, tmp_path):
    lay = Layout(tmp_path / "layout")
    desc, _ = lay.image([[("file", "hello", b"hi\n", 0o644)]])
    lay.tag("v1", desc)
    f = FakeRegistry(lay, "cli/app", "v1", desc)
    try:
        r = clients.run([kapsel, "--store", tmp_path / "s", "pull", f"{f.host}/cli/app:v1",
                         "-q"])
    finally:
        f.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sha256:") and len(r.stdout.splitlines()) == 1, r.stdout
    assert r.stderr == "", "-q: no progress"


def test_vm_disk_create_format_after_args(kapsel, tmp_path):
    raw = tmp_path / "raw.img"
    r = clients.run([kapsel, "vm", "disk", "create", raw, "1M", "--format", "raw"])
    assert r.returncode == 0, r.stderr
    with open(raw, "rb") as fh:
        assert fh.read(4) != b"QFI\xfb", "--format raw made a qcow2 image"
    assert raw.stat().st_size == 1 << 20
    q = tmp_path / "q.img"
    r = clients.run([kapsel, "vm", "disk", "create", q, "1M", "--format=qcow2"])
    assert r.returncode == 0, r.stderr
    with open(q, "rb") as fh:
        assert fh.read(4) == b"QFI\xfb"
    r = clients.run([kapsel, "vm", "disk", "create", tmp_path / "v.img", "1M", "--format",
                     "vmdk"])
    assert r.returncode == 1 and "vmdk" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "v.img").exists()


def test_command_args_after_image_stay_the_commands(k):
    # Options end at the image: what follows is the container's argv, flags and all.
    r = k("run", "--rm", "busybox", "echo", "-e=1", "--rm", "-t", "--", "x")
    assert (r.returncode, r.stdout) == (0, "-e=1 --rm -t -- x\n"), r.stderr
    r = k("run", "--rm", "busybox", "ls", "-d", "/")
    assert (r.returncode, r.stdout) == (0, "/\n"), r.stderr


def test_double_dash_ends_options(k, name):
    r = k("run", "--rm", "--name", name, "--", "busybox", "sh", "-c", "echo $0", "-x")
    assert (r.returncode, r.stdout) == (0, "-x\n"), r.stderr
    # a positional that looks like a flag, after "--"
    r = k("rm", "--", "-not-a-flag")
    assert r.returncode != 0 and "-not-a-flag" in r.stderr and "unknown flag" not in r.stderr


def test_short_flag_equals_value(k):
    # pflag's -e=V: the value is V (getopt alone would give "=V", or call -e ambiguous)
    r = k("run", "--rm", "-e=A=1", "-w=/tmp", "busybox", "sh", "-c", 'echo "$A"; pwd')
    assert (r.returncode, r.stdout) == (0, "1\n/tmp\n"), r.stderr


def test_run_exit_statuses_as_podman(k, name):
    r = k("run", "--rm", "--no-such-flag", "busybox", "true")
    assert r.returncode == 125 and "--no-such-flag" in r.stderr
    assert k("run").returncode == 125
    r = k("run", "--rm", "busybox", "/no/such/program")
    assert r.returncode == 127 and "/no/such/program" in r.stderr
    r = k("run", "--rm", "busybox", "no-such-program")
    assert r.returncode == 127 and "no-such-program" in r.stderr
    r = k("run", "--rm", "busybox", "/etc/passwd")
    assert r.returncode == 126 and "/etc/passwd" in r.stderr
    assert k("run", "--rm", "busybox", "sh", "-c", "exit 42").returncode == 42
    assert k("run", "--rm", "no-such-image:1", "true").returncode == 125
    assert k("run", "--help").returncode == 0
    # after the image, --help is the command's (podman runs it)
    assert k("run", "--rm", "busybox", "--help").returncode == 127

    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    assert k("exec", name, "sh", "-c", "exit 42").returncode == 42
    r = k("exec", name, "no-such-program")
    assert r.returncode == 127 and "no-such-program" in r.stderr
    r = k("exec", name, "/etc/passwd")
    assert r.returncode == 126 and "/etc/passwd" in r.stderr
    r = k("exec", "--no-such-flag", name, "true")
    assert r.returncode == 125 and "--no-such-flag" in r.stderr
    r = k("exec", "kt-no-such-container", "true")
    assert r.returncode == 125 and "kt-no-such-container" in r.stderr


def test_runtime_exec_keeps_runc_status(kap, make_bundle, cid, tmp_path):
    # exec as podman and containerd call it (--process): runc's statuses, not podman's.
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"args": ["no-such-program"], "cwd": "/", "env": ["PATH=/bin"],
                              "user": {"uid": 0, "gid": 0}}))
    r = kap("exec", "--process", str(pf), cid)
    assert r.returncode == 1 and "no-such-program" in r.stderr, (r.returncode, r.stderr)
    kap("kill", cid, "KILL")


@pytest.fixture
def bundle_dir(tmp_path):
    # A directory holding a config.json that is not even valid: a bundle run would fail on it.
    d = tmp_path / "cwd"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def run_in(k, cwd, *args):
    return clients.run(["sh", "-c", 'cd "$0" && exec "$@"', cwd, k.binary, "--store", k.store,
                        "--root", k.root, *args])


def test_config_json_in_cwd_is_not_a_bundle_run(k, bundle_dir):
    before = set(ps(k, "-a"))
    r = run_in(k, bundle_dir, "run", "busybox")
    assert r.returncode == 0, r.stderr
    made = set(ps(k, "-a")) - before
    assert len(made) == 1, "kapsel run busybox made no image container"
    for n in made:
        k("rm", "-f", n)
    r = run_in(k, bundle_dir, "run", "--rm", "busybox")
    assert r.returncode == 0, r.stderr
    r = run_in(k, bundle_dir, "run", "docker.io/library/busybox:latest")
    assert r.returncode == 0, r.stderr
    for n in set(ps(k, "-a")) - before:
        k("rm", "-f", n)
    # runc's shape with an id that names no image is still runc's run (and fails on {}).
    r = run_in(k, bundle_dir, "run", "kt-not-an-image")
    assert r.returncode == 1 and "config.json" in r.stderr, r.stderr


def test_exited_container_is_not_running(k, name):
    assert k("run", "--name", name, "busybox", "true").returncode == 0
    assert name in ps(k, "-a")
    for args in (["exec", name, "true"], ["kill", name], ["events", name],
                 ["events", "--stats", name]):
        r = k(*args)
        assert r.returncode != 0, args
        assert f"container {name} is not running" in r.stderr, (args, r.stderr)
        assert "does not exist" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert k("exec", name, "true").returncode == 125
    # a name nobody knows still does not exist
    r = k("kill", "kt-never-made")
    assert r.returncode == 1 and "kt-never-made does not exist" in r.stderr, r.stderr


def pty_run(argv, rows, cols, script=(), timeout=30):
    """Runs argv with a new pty of rows x cols as its stdin, stdout and stderr (and controlling
    terminal); script: (wait-for-bytes, action) steps, action a callable getting the master fd.
    Returns (exit status, everything read)."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen([str(a) for a in argv], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    out, steps = b"", list(script)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if steps and steps[0][0] in out:
                steps.pop(0)[1](master)
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every slave fd closed
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, out.decode(errors="replace")


def kargs(k, *args):
    return [k.binary, "--store", k.store, "--root", k.root, *args]


def test_tty_size_before_the_process_starts(k):
    # Seen 6 runs in 10 printing "0 0": the size came only from the relay, after the start.
    for _ in range(10):
        rc, out = pty_run(kargs(k, "run", "--rm", "-it", "busybox", "stty", "size"), 37, 111)
        assert rc == 0, out
        assert out.split() == ["37", "111"], out


def test_tty_follows_sigwinch(k):
    import fcntl
    import struct
    import termios

    def resize(m):
        fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))

    def enter(m):
        time.sleep(0.5)
        os.write(m, b"\n")

    rc, out = pty_run(kargs(k, "run", "--rm", "-it", "busybox", "sh", "-c",
                            "stty size; echo ready; read x; stty size"), 24, 80,
                      script=[(b"ready", resize), (b"ready", enter)])
    assert rc == 0, out
    assert "24 80" in out and "50 132" in out, out


def test_run_it_without_a_tty(k):
    r = k("run", "--rm", "-it", "busybox", "true", input="")
    assert r.returncode == 125 and "the input device is not a TTY" in r.stderr, r.stderr
    # -t alone, or -i alone, is no error
    r = k("run", "--rm", "-i", "busybox", "cat", input="piped\n")
    assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr


def test_exec_interactive_and_tty(k, name):
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    r = k("exec", "-i", name, "cat", input="to-cat\n")
    assert (r.returncode, r.stdout) == (0, "to-cat\n"), r.stderr
    # podman's exec without -i gives the process no stdin
    r = k("exec", name, "cat", input="not-read\n")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    rc, out = pty_run(kargs(k, "exec", "-it", name, "stty", "size"), 33, 99)
    assert rc == 0 and out.split() == ["33", "99"], out
    r = k("exec", "-it", name, "true", input="")
    assert r.returncode == 125 and "the input device is not a TTY" in r.stderr, r.stderr


def test_ps_of_a_container_format_json_after_name(k, name):
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    for args in (["ps", name, "-f", "json"], ["ps", name, "--format=json"],
                 ["ps", "-f", "json", name]):
        r = k(*args)
        assert r.returncode == 0, (args, r.stderr)
        pids = json.loads(r.stdout)
        assert pids and all(isinstance(p, int) for p in pids), r.stdout
    # ps(1) options after the name are still ps's (runc's shape); a failing ps is reported by
    # its exit status, not a raw wait status
    r = k("ps", name, "-o", "pid,comm")
    assert r.returncode == 0 and "sleep" in r.stdout, r.stderr
    r = k("ps", name, "--no-such-ps-option")
    ours = [line for line in r.stderr.splitlines() if line.startswith("kapsel:")]
    assert r.returncode == 1 and len(ours) == 1 and "0x" not in ours[0], r.stderr
    assert "exit status 1" in ours[0], r.stderr


def test_update_memory_minimum_as_run(k, name):
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    run_err = k("run", "--rm", "--memory", "1", "busybox", "true").stderr
    assert "below the minimum of 6m" in run_err
    r = k("update", "--memory", "1", name)
    assert r.returncode == 1 and "--memory: 1 is below the minimum of 6m" in r.stderr, r.stderr
    assert "busy" not in r.stderr.lower()


def test_exec_user_from_the_containers_passwd(k, name):
    assert k("run", "-d", "--name", name, "busybox", "sleep", "1000").returncode == 0
    r = k("exec", "-u", "65534", name, "sh", "-c", "id -u; id -g")
    assert (r.returncode, r.stdout.split()) == (0, ["65534", "65534"]), r.stderr
    r = k("exec", "-u", "nobody", name, "sh", "-c", "id -u; id -g")
    assert (r.returncode, r.stdout.split()) == (0, ["65534", "65534"]), r.stderr
    r = k("exec", "-u", "1234:5678", name, "sh", "-c", "id -u; id -g")
    assert r.stdout.split() == ["1234", "5678"], r.stderr
    r = k("exec", "-u", "1234", name, "id", "-g")  # not in passwd: gid 0, as podman
    assert r.stdout.split() == ["0"], r.stderr
    r = k("exec", "-u", "kt-no-such-user", name, "true")
    assert r.returncode == 125 and "kt-no-such-user" in r.stderr, r.stderr


def test_help_help(kapsel):
    for args in (["help", "--help"], ["help", "-h"]):
        r = clients.run([kapsel, *args])
        assert r.returncode == 0 and r.stdout.startswith("Usage: kapsel"), (args, r.stderr)


def test_pull_from_a_registry_that_never_answers(kapsel, tmp_path):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # the kernel accepts; nobody ever reads or answers
    port = srv.getsockname()[1]
    env = dict(os.environ, KAPSEL_REGISTRY_TIMEOUT="4")
    t0 = time.monotonic()
    try:
        r = clients.run([kapsel, "--store", tmp_path / "s", "pull", f"127.0.0.1:{port}/x/y:1"],
                        env=env, timeout=60)
    finally:
        srv.close()
    took = time.monotonic() - t0
    assert r.returncode == 125, r.stderr
    assert took < 20, f"gave up only after {took:.0f} s"
    lines = r.stderr.strip().splitlines()
    assert "no answer for" in lines[0], r.stderr  # said while waiting
    assert "no answer within 4 s" in lines[-1] and len(lines) == 2, r.stderr


def start_and_sigkill(k, *args):
    """Starts `kapsel run ARGS` in the foreground, waits until its container runs, and kills
    the kapsel process with SIGKILL."""
    import signal
    import subprocess
    n = args[args.index("--name") + 1]
    p = subprocess.Popen(kargs(k, "run", *args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        clients.wait_for(lambda: ps(k).get(n, {}).get("State") == "running",
                         what="the container to run")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def test_sigkill_of_foreground_run_keeps_the_exit_code(k, name):
    start_and_sigkill(k, "--name", name, "busybox", "sh", "-c", "sleep 1; exit 7")
    # (ps may show "exited" a moment before the monitor has recorded the code)
    clients.wait_for(lambda: ps(k, "-a")[name]["ExitCode"] == 7, timeout=20,
                     what="the exit code recorded by the monitor")
    e = ps(k, "-a")[name]
    assert e["State"] == "exited" and e["Status"].startswith("Exited (7)"), e


def test_sigkill_of_foreground_run_honours_rm(k, name):
    start_and_sigkill(k, "--rm", "--name", name, "busybox", "sleep", "1")
    clients.wait_for(lambda: traces(k, name) == [], timeout=20, what="--rm by the monitor")
    assert name not in ps(k, "-a")


def test_foreground_run_forwards_signals(k, name):
    import signal
    import subprocess
    p = subprocess.Popen(kargs(k, "run", "--rm", "--name", name, "busybox", "sh", "-c",
                               "trap 'exit 5' TERM; echo ready; while :; do sleep 0.1; done"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 5
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    clients.wait_for(lambda: traces(k, name) == [], what="--rm")


def test_logs_of_a_foreground_run_keep_the_streams_apart(k, name):
    r = k("run", "--name", name, "busybox", "sh", "-c", "echo out1; echo err1 >&2; echo out2")
    assert (r.returncode, r.stdout, r.stderr) == (0, "out1\nout2\n", "err1\n")
    r = k("logs", name)
    assert (r.returncode, r.stdout, r.stderr) == (0, "out1\nout2\n", "err1\n")
    # the file itself: podman's k8s-file records, with stream and time
    with open(os.path.join(k.store, "containers", name, "ctr.log")) as f:
        recs = [line.split(" ", 3) for line in f.read().splitlines()]
    # (the order across the two streams is the order the pump read them in)
    assert sorted((s, t, x) for _, s, t, x in recs) == [
        ("stderr", "F", "err1"), ("stdout", "F", "out1"), ("stdout", "F", "out2")], recs
    assert [x for _, s, _, x in recs if s == "stdout"] == ["out1", "out2"]
    assert all(ts.endswith("Z") and "T" in ts for ts, *_ in recs)


def test_logs_of_a_detached_run_keep_the_streams_apart(k, name):
    r = k("run", "-d", "--name", name, "busybox", "sh", "-c", "echo o; echo e >&2")
    assert r.returncode == 0, r.stderr
    clients.wait_for(lambda: ps(k, "-a")[name]["State"] == "exited", what="exit")
    r = k("logs", name)
    assert (r.stdout, r.stderr) == ("o\n", "e\n")


def test_logs_since_until_tail_timestamps(k, name):
    r = k("run", "--name", name, "busybox", "sh", "-c",
          "echo a; echo b; sleep 1.5; echo c; echo d")
    assert r.returncode == 0, r.stderr
    assert k("logs", "--tail", "1", name).stdout == "d\n"
    assert k("logs", name, "--tail", "3").stdout == "b\nc\nd\n"
    assert k("logs", "--tail", "0", name).stdout == ""
    assert k("logs", "--tail", "-1", name).stdout == "a\nb\nc\nd\n"
    lines = k("logs", "-t", name).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b", "c", "d"], lines
    ts = [line.split(" ", 1)[0] for line in lines]
    # the records' own times cut the log between b and c
    cut = ts[2]
    assert k("logs", "--since", cut, name).stdout == "c\nd\n"
    assert k("logs", "--until", ts[1], name).stdout == "a\nb\n"
    assert k("logs", "--since", "1h", name).stdout == "a\nb\nc\nd\n"
    assert k("logs", "--since", "2999-01-01", name).stdout == ""
    assert k("logs", "--until", "1000000000", name).stdout == ""  # 2001
    r = k("logs", "--since", "yesterday-ish", name)
    assert r.returncode == 125 and "yesterday-ish" in r.stderr and r.stderr.count("\n") == 1
    r = k("logs", "--tail", "x", name)
    assert r.returncode == 125 and "--tail" in r.stderr


def test_run_dit_keeps_a_terminal(k, name):
    # -dit from a script (no terminal here): the shell gets a pty the monitor holds, so it
    # waits for input instead of exiting on EOF, and exec gets in later.
    r = k("run", "-dit", "--name", name, "busybox", "sh", input="")
    assert (r.returncode, r.stdout) == (0, name + "\n"), r.stderr
    time.sleep(1)
    assert ps(k)[name]["State"] == "running"
    r = k("exec", name, "readlink", "/proc/1/fd/0")
    assert r.returncode == 0 and r.stdout.startswith("/dev/pts/"), r.stderr
    r = k("exec", name, "sh", "-c", "[ -t 0 ] && echo tty")
    assert r.stdout == "", "exec without -t must not get the container's terminal"
    assert k("stop", "-t", "1", name).returncode == 0
    assert ps(k, "-a")[name]["State"] == "exited"


def host_device_names():
    import stat
    names = set()
    for n in os.listdir("/dev"):
        st = os.lstat(os.path.join("/dev", n))
        if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and n not in ("console",
                                                                                  "ptmx"):
            names.add(n)
    return names


def test_privileged_gets_the_host_devices(k):
    host = host_device_names()
    r = k("run", "--rm", "--privileged", "busybox", "ls", "/dev")
    assert r.returncode == 0, r.stderr
    missing = host - set(r.stdout.split())
    assert not missing, f"--privileged lacks host devices {sorted(missing)}"
    # without it, only the default set (runtime-spec config-linux.md#default-devices)
    r = k("run", "--rm", "busybox", "ls", "/dev")
    extra = set(r.stdout.split()) & (host - {"null", "zero", "full", "random", "urandom",
                                              "tty"})
    assert not extra, sorted(extra)


def test_net_host_has_etc_hosts(k, name):
    r = k("run", "--rm", "--net", "host", "--name", name, "busybox", "cat", "/etc/hosts")
    assert r.returncode == 0, r.stderr
    with open("/etc/hosts") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                assert line.strip() in r.stdout, (line, r.stdout)
    assert name in r.stdout


def test_pull_rate_counts_only_what_was_downloaded(kapsel, tmp_path):
    # Two images share a big layer; the second pull downloads only a small one, slowly
    # (64 KiB every 50 ms: about 1.3 MB/s). The rate shown must be the download's, not the
    # big present layer's bytes over the pull's time (seen: "106 GiB/s").
    import random
    rnd = random.Random(16)
    big = [("file", "big", rnd.randbytes(6 << 20), 0o644)]
    small = [("file", "small", rnd.randbytes(384 << 10), 0o644)]
    lay = Layout(tmp_path / "layout")
    d1, _ = lay.image([big], compression="none")
    d2, _ = lay.image([big, small], compression="none")
    lay.tag("v1", d1)
    lay.tag("v2", d2)
    store = tmp_path / "s"
    f1 = FakeRegistry(lay, "cli/app", "v1", d1)
    try:
        r = clients.run([kapsel, "--store", store, "pull", f"{f1.host}/cli/app:v1"])
        assert r.returncode == 0, r.stderr
    finally:
        f1.stop()
    f2 = FakeRegistry(lay, "cli/app", "v2", d2, mode="slow")
    try:
        rc, out = pty_run([kapsel, "--store", store, "pull", f"{f2.host}/cli/app:v2"], 24, 200,
                          timeout=60)
    finally:
        f2.stop()
    assert rc == 0, out
    import re
    rates = re.findall(r"total .*?([0-9.]+) (B|KiB|MiB|GiB|TiB)/s", out)
    assert rates, out
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
    fastest = max(float(v) * scale[u] for v, u in rates)
    assert fastest < 4 << 20, f"rate shown {fastest / (1 << 20):.1f} MiB/s: {rates[-3:]}"


def test_images_created_in_words_and_json_as_podman(k):
    import re
    lines = k("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    col = lines[0].index("CREATED")
    for row in lines[1:]:
        assert re.match(r"(\d+ \w+|About an? \w+|Less than a second) ago\s", row[col:]), row
        assert row.endswith("B"), row  # the SIZE column is whole
    imgs = json.loads(k("images", "--format", "json").stdout)
    for img in imgs:
        assert {"Id", "Names", "RepoTags", "Digest", "Created", "CreatedAt", "Size"} <= set(img)
        assert len(img["Id"]) == 64 and isinstance(img["Created"], int)


def test_ps_json_keys_as_podman(k, name):
    assert k("run", "--name", name, "busybox", "sh", "-c", "exit 3").returncode == 3
    e = ps(k, "-a")[name]
    assert {"Id", "Names", "Image", "Command", "Created", "State", "Exited", "ExitCode",
            "Status"} <= set(e), e
    assert (e["Names"], e["State"], e["Exited"], e["ExitCode"]) == ([name], "exited", True, 3)


def test_missing_container_creates_no_store(kapsel, tmp_path):
    # The "not running" check reads the image store; a runtime command on a container that
    # does not exist (containerd cleaning up, say) must not create one.
    store = tmp_path / "never-made"
    for args in (["kill", "kt-nope"], ["exec", "kt-nope", "true"], ["events", "kt-nope"]):
        r = clients.run([kapsel, "--store", store, "--root", tmp_path / "root", *args])
        assert r.returncode != 0 and "kt-nope does not exist" in r.stderr, r.stderr
    assert not store.exists()
