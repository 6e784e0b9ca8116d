"""podman's container lifecycle commands on image containers: wait, rename, restart, start of
an exited container, run --restart (kept by the monitor), attach, kill -s. Each kapsel call
gets a private --store and --root; runc's start and kill forms keep working."""
import json
import os
import subprocess
import time
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root]


K = clients.Kapsel  # --store/--root fixed for the module's runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def state_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("state"))


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
        n = "lc-" + uuid.uuid4().hex[:10]
        made.append(n)
        return n
    yield new
    for n in made:
        k("rm", "-f", n)


def meta(k, n):
    with open(os.path.join(k.store, "containers", n, "container.json")) as f:
        return json.load(f)


def status(k, n):
    for line in k("ps", "-a", check=True).stdout.splitlines()[1:]:
        if line.split()[0] == n:
            return line
    return None


# ---- wait ----

def test_wait_prints_exit_code_of_running_container(k, names):
    n = names()
    k("run", "-d", "--name", n, "busybox", "sh", "-c", "sleep 1; exit 7", check=True)
    t = time.monotonic()
    r = k("wait", n)
    assert (r.returncode, r.stdout) == (0, "7\n"), r.stderr
    assert time.monotonic() - t < 10


def test_wait_on_exited_container_returns_at_once(k, names):
    n = names()
    assert k("run", "--name", n, "busybox", "sh", "-c", "exit 3").returncode == 3
    r = k("wait", n, timeout=10)
    assert (r.returncode, r.stdout) == (0, "3\n"), r.stderr


def test_wait_several_and_condition(k, names):
    a, b = names(), names()
    k("run", "-d", "--name", a, "busybox", "sh", "-c", "exit 1", check=True)
    k("run", "-d", "--name", b, "busybox", "sleep", "100", check=True)
    r = k("wait", "--condition", "running", b, timeout=10)
    assert (r.returncode, r.stdout) == (0, "-1\n"), r.stderr
    p = subprocess.Popen(k.argv("wait", a, b), stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    assert p.poll() is None, "wait returned while b runs"
    k("stop", "-t", "0", b, check=True)
    out, _ = p.communicate(timeout=20)
    assert out.split() == ["1", "137"]


def test_wait_unknown_container_and_bad_condition(k, names):
    r = k("wait", "no-such-" + uuid.uuid4().hex[:6])
    assert r.returncode == 125
    assert len(r.stderr.strip().splitlines()) == 1 and "no such container" in r.stderr
    n = names()
    k("run", "--name", n, "busybox", "true")
    r = k("wait", "--condition", "paused-ish", n)
    assert r.returncode == 125 and "--condition" in r.stderr


# ---- rename ----

def test_rename_running_container(k, names):
    old, new = names(), names()
    k("run", "-d", "--name", old, "busybox", "sh", "-c", "echo hello; sleep 100", check=True)
    k("rename", old, new, check=True)
    assert status(k, old) is None
    assert "Up" in status(k, new)
    assert k("exec", new, "echo", "in-exec", check=True).stdout == "in-exec\n"
    assert "hello" in k("logs", new, check=True).stdout
    assert k("exec", old, "true").returncode != 0
    k("stop", "-t", "0", new, check=True)
    assert "Exited (137)" in status(k, new)
    assert meta(k, new)["name"] == new
    # Its directory and runtime state went with it: the old name is free again.
    k("run", "--rm", "--name", old, "busybox", "true", check=True)


def test_rename_stopped_container_then_start(k, names):
    old, new = names(), names()
    k("run", "--name", old, "busybox", "sh", "-c", "echo once >> /count; cat /count")
    k("rename", old, new, check=True)
    k("start", new, check=True)
    assert k("wait", new, check=True).stdout == "0\n"
    # The same files (the upper layer) under the new name.
    assert k("logs", new, check=True).stdout == "once\nonce\nonce\n"


def test_rename_to_taken_name_fails_and_keeps_both(k, names):
    a, b = names(), names()
    k("run", "-d", "--name", a, "busybox", "sleep", "100", check=True)
    k("run", "--name", b, "busybox", "true", check=True)
    r = k("rename", a, b)
    assert r.returncode == 125 and "already in use" in r.stderr
    assert "Up" in status(k, a) and "Exited (0)" in status(k, b)
    assert meta(k, a)["name"] == a and meta(k, b)["name"] == b
    assert k("exec", a, "true").returncode == 0


def test_rename_refuses_invalid_and_unknown(k, names):
    a = names()
    k("run", "--name", a, "busybox", "true", check=True)
    r = k("rename", a, "bad/name")
    assert r.returncode == 125 and "must match" in r.stderr
    r = k("rename", "no-such-" + uuid.uuid4().hex[:6], names())
    assert r.returncode == 125 and "no such container" in r.stderr
    assert status(k, a) is not None


# ---- restart and start ----

def test_restart_running_container(k, names):
    n = names()
    k("run", "-d", "--name", n, "busybox", "sh", "-c", "echo up; sleep 100", check=True)
    pid1 = meta(k, n)["monitorPid"]
    r = k("restart", "-t", "1", n)
    assert (r.returncode, r.stdout) == (0, n + "\n"), r.stderr
    assert "Up" in status(k, n)
    assert meta(k, n)["monitorPid"] != pid1
    assert k("logs", n, check=True).stdout == "up\nup\n"
    assert k("exec", n, "true").returncode == 0


def test_restart_and_start_exited_container(k, names):
    n = names()
    assert k("run", "--name", n, "busybox", "sh", "-c", "echo x >> /f; wc -l < /f; exit 4").returncode == 4
    assert k("restart", n).returncode == 0
    assert k("wait", n).stdout == "4\n"
    r = k("start", n)
    assert (r.returncode, r.stdout) == (0, n + "\n")
    assert k("wait", n).stdout == "4\n"
    assert k("logs", n).stdout.split() == ["1", "2", "3"]


def test_start_running_is_a_no_op_and_unknown_fails(k, names):
    n = names()
    k("run", "-d", "--name", n, "busybox", "sleep", "100", check=True)
    pid = meta(k, n)["monitorPid"]
    assert k("start", n).returncode == 0
    assert meta(k, n)["monitorPid"] == pid
    r = k("start", "no-such-" + uuid.uuid4().hex[:6])
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert k("restart", "no-such-" + uuid.uuid4().hex[:6]).returncode == 125


def test_runc_start_of_created_bundle_container(kap, make_bundle, cid, tmp_path):
    b = make_bundle(["sh", "-c", f"echo ran > {tmp_path}/out; exit 0"],
                    edit=lambda c: c["mounts"].append({"destination": str(tmp_path), "type": "bind",
                                                      "source": str(tmp_path),
                                                      "options": ["rbind"]}))
    kap("create", "--bundle", b, cid, check=True)
    assert kap.state(cid)["status"] == "created"
    kap("start", cid, check=True)
    for _ in range(100):
        if kap.state(cid)["status"] == "stopped":
            break
        time.sleep(0.05)
    assert (tmp_path / "out").read_text() == "ran\n"
    r = kap("start", cid)
    assert r.returncode != 0 and "cannot start" in r.stderr


# ---- --restart ----

def test_restart_on_failure_runs_n_plus_one_times(k, names):
    n = names()
    k("run", "-d", "--name", n, "--restart", "on-failure:2", "busybox",
      "sh", "-c", "echo run; exit 3", check=True)
    deadline = time.time() + 20
    while time.time() < deadline and meta(k, n)["state"] != "exited":
        time.sleep(0.2)
    assert "Exited (3)" in status(k, n)
    time.sleep(1)  # nothing more comes
    assert k("logs", n).stdout == "run\nrun\nrun\n"
    assert meta(k, n)["restartCount"] == 2


def test_restart_on_failure_not_on_success(k, names):
    n = names()
    assert k("run", "--name", n, "--restart", "on-failure", "busybox",
             "sh", "-c", "echo run; exit 0").returncode == 0
    assert k("logs", n).stdout == "run\n"
    assert meta(k, n)["restartCount"] == 0


def test_restart_always_until_stop(k, names):
    n = names()
    k("run", "-d", "--name", n, "--restart", "always", "busybox",
      "sh", "-c", "echo run; sleep 0.2", check=True)
    deadline = time.time() + 20
    while time.time() < deadline and meta(k, n)["restartCount"] < 2:
        time.sleep(0.2)
    assert meta(k, n)["restartCount"] >= 2
    k("stop", "-t", "1", n, check=True)
    assert "Exited" in status(k, n)
    count = meta(k, n)["restartCount"]
    time.sleep(1.5)
    assert "Exited" in status(k, n) and meta(k, n)["restartCount"] == count
    assert meta(k, n)["stoppedByUser"] is True


def test_restart_policy_refusals(k, names):
    r = k("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.returncode == 125 and "--rm" in r.stderr and "--restart" in r.stderr
    for bad in ("sometimes", "always:3", "on-failure:0", "on-failure:x"):
        r = k("run", "--restart", bad, "busybox", "true")
        assert r.returncode == 125 and "--restart" in r.stderr, bad
    # --rm with "no" is fine.
    assert k("run", "--rm", "--restart", "no", "busybox", "true").returncode == 0


# ---- attach ----

def test_attach_streams_output_and_returns_exit_code(k, names):
    n = names()
    k("run", "-d", "--name", n, "busybox", "sh", "-c",
      "sleep 1; echo out-line; echo err-line >&2; exit 5", check=True)
    r = k("attach", n, timeout=20)
    assert r.returncode == 5
    assert "out-line" in r.stdout and "err-line" in r.stderr


def test_attach_tty_stdin_and_detach_keys(k, names):
    n = names()
    k("run", "-dit", "--name", n, "busybox", "sh", check=True)
    # A terminal for attach (script(1)), keys after a moment, then ctrl-p ctrl-q.
    feed = "sleep 1; printf 'echo attached-$((6*7))\\r'; sleep 1; printf '\\020\\021'"
    cmd = " ".join(k.argv("attach", n))
    p = subprocess.run(["sh", "-c", f"({feed}) | script -qec '{cmd}' /dev/null"],
                       capture_output=True, text=True, timeout=30)
    assert "attached-42" in p.stdout
    assert p.returncode == 0
    assert "Up" in status(k, n)  # detached, still running


def test_attach_refusals(k, names):
    n = names()
    k("run", "--name", n, "busybox", "true", check=True)
    r = k("attach", n)
    assert r.returncode == 125 and "not running" in r.stderr
    r = k("attach", "no-such-" + uuid.uuid4().hex[:6])
    assert r.returncode == 125 and "no such container" in r.stderr


# ---- kill -s ----

def test_kill_signal_flag(k, names):
    a, b = names(), names()
    trap = "trap 'exit 42' USR1; while :; do sleep 0.1; done"
    k("run", "-d", "--name", a, "busybox", "sh", "-c", trap, check=True)
    k("run", "-d", "--name", b, "busybox", "sh", "-c", trap, check=True)
    time.sleep(0.5)
    r = k("kill", "-s", "USR1", a, b)
    assert (r.returncode, r.stdout.split()) == (0, [a, b]), r.stderr
    assert k("wait", a, b).stdout.split() == ["42", "42"]


def test_kill_signal_long_form_and_runc_form(k, names):
    a = names()
    k("run", "-d", "--name", a, "busybox", "sleep", "100", check=True)
    assert k("kill", "--signal", "KILL", a).returncode == 0
    assert k("wait", a).stdout == "137\n"
    b = names()
    k("run", "-d", "--name", b, "busybox", "sleep", "100", check=True)
    r = k("kill", b, "KILL")  # runc's form: no output
    assert (r.returncode, r.stdout) == (0, "")
    assert k("wait", b).stdout == "137\n"


def test_kill_signal_refusals(k, names):
    a = names()
    k("run", "--name", a, "busybox", "true", check=True)
    r = k("kill", "-s", "NOPE", a)
    assert r.returncode != 0 and "unknown signal" in r.stderr
    r = k("kill", "-s", "KILL", a)
    assert r.returncode != 0 and "not running" in r.stderr
