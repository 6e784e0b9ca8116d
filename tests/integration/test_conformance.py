"""OCI runtime-spec conformance gaps found by opencontainers/runtime-tools `validation/*`
(issue 10): each test names the spec section it checks. Everything runs on scratch paths; the
tests that need the runtime's own mount or UTS namespace run kapsel inside a throwaway one
(`unshare`), so nothing reaches the host even when the runtime is wrong."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.root


def hook_script(path, body):
    """An executable /bin/sh hook at path; it runs on the host, in the runtime's namespaces."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return str(path)


def wait_stopped(kap, cid, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if kap.state(cid)["status"] == "stopped":
            return
        time.sleep(0.01)
    raise AssertionError(f"container {cid} did not stop")


# config.md#posix-platform-hooks: "If a poststart/poststop hook fails, the runtime MUST log a
# warning, but the remaining hooks and lifecycle continue as if the hook had succeeded."
@pytest.mark.parametrize("kind", ["poststart", "poststop"])
def test_failing_post_hook_warns_and_later_hooks_run(kap, make_bundle, cid, tmp_path, kind):
    fail = hook_script(tmp_path / "fail.sh", "cat >/dev/null; exit 3")
    marks = [tmp_path / f"ran-{i}" for i in range(2)]
    ok = [hook_script(tmp_path / f"ok{i}.sh", f"cat >/dev/null; echo ran > {m}")
          for i, m in enumerate(marks)]
    hooks = [{"path": ok[0]}, {"path": fail}, {"path": fail}, {"path": ok[1]}]
    b = make_bundle(["true"], edit=lambda c: c.update(hooks={kind: hooks}))
    r = kap("run", "-b", b, cid)
    assert r.returncode == 0, r.stderr
    assert all(m.exists() for m in marks), f"a {kind} hook after a failing one did not run"
    # One warning per failed hook, naming it.
    assert r.stderr.count(f"hooks.{kind}[1]") == 1, r.stderr
    assert r.stderr.count(f"hooks.{kind}[2]") == 1, r.stderr
    assert "exit status 3" in r.stderr


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer",
                                  "startContainer"])
def test_failing_pre_hook_still_fails(kap, make_bundle, cid, tmp_path, kind):
    """Negative: the other hook kinds still fail the operation and stop at the first failure."""
    out = tmp_path / "out"
    out.mkdir()
    # startContainer hooks run after pivot_root: their paths are the container's.
    mark = "/out/ran" if kind == "startContainer" else str(out / "ran")
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}
    ok = {"path": "/bin/sh", "args": ["sh", "-c", f"echo ran > {mark}"]}

    def edit(c):
        c["hooks"] = {kind: [fail, ok]}
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                            "options": ["rbind", "rw"]})
    b = make_bundle(["true"], edit=edit)
    r = kap("run", "-b", b, cid)
    assert r.returncode != 0
    assert f"hooks.{kind}[0]" in r.stderr and "exit status 3" in r.stderr, r.stderr
    assert not (out / "ran").exists(), f"a {kind} hook ran after a failing one"


# runtime.md#start ("the runtime MUST run the user-specified program") and config.md#poststart
# ("called after the user-specified process is executed"): `start` returns only once the
# program runs, so a signal sent right after it reaches the program's handler.
# A startContainer hook that takes a while widens the window between `start`'s byte and the
# program's execve, so that a `start` returning early loses every time, not only under load.
SLOW_START = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.2"]}]}


@pytest.mark.parametrize("slow,tries", [(False, 30), (True, 5)], ids=["plain", "slow-start"])
def test_start_returns_once_program_runs(kap, make_bundle, tmp_path, slow, tries):
    """What `start` guarantees: when it returns, the container process has executed its
    program (runtime.md#start). /proc/<pid>/exe is read at once, from here: the program, never
    the runtime. (A signal sent at that moment may still beat the program's own handler setup
    — a shell's `trap` runs after execve, and a pid-namespace init drops unhandled signals —
    so that is not something a runtime can promise, and not what this checks.)"""
    def edit(c):
        if slow:
            c["hooks"] = SLOW_START
    b = make_bundle(["sh", "-c", "while :; do sleep 0.01; done"], edit=edit)
    for i in range(tries):
        cid = f"sig-{os.getpid()}-{i}"
        kap("create", "-b", b, cid, check=True)
        pid = kap.state(cid)["pid"]
        kap("start", cid, check=True)
        exe = os.readlink(f"/proc/{pid}/exe")
        kap("kill", cid, "SIGKILL", check=True)
        wait_stopped(kap, cid)
        kap("delete", cid, check=True)
        assert exe.endswith("/busybox"), f"try {i}: start returned while the init was {exe}"


def test_kill_command_right_after_start(kap, make_bundle, tmp_path):
    """The same through `kapsel kill ID SIGUSR1`, as runtime-tools does it."""
    out = tmp_path / "out"
    out.mkdir()
    script = 'trap "echo got > /out/got; exit 0" USR1; while :; do sleep 0.01; done'

    def edit(c):
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                            "options": ["rbind", "rw"]})
    b = make_bundle(["sh", "-c", script], edit=edit)
    for i in range(5):
        cid = f"sigk-{os.getpid()}-{i}"
        kap("create", "-b", b, cid, check=True)
        kap("start", cid, check=True)
        kap("kill", cid, "SIGUSR1", check=True)
        wait_stopped(kap, cid)
        kap("delete", cid, check=True)
        assert (out / "got").exists(), f"try {i}: SIGUSR1 did not reach the trap"
        (out / "got").unlink()


@pytest.mark.parametrize("slow,tries", [(False, 10), (True, 3)], ids=["plain", "slow-start"])
def test_poststart_hook_sees_the_program(kap, make_bundle, cid, tmp_path, slow, tries):
    seen = tmp_path / "seen"
    # The state on stdin gives the pid; what runs there must already be the program.
    hook = hook_script(tmp_path / "post.sh",
                       'pid=$(sed -n \'s/.*"pid": *\\([0-9]*\\).*/\\1/p\')\n'
                       f'readlink /proc/$pid/exe >> {seen}\n'
                       f'tr "\\0" " " < /proc/$pid/cmdline >> {seen}; echo >> {seen}')

    def edit(c):
        c["hooks"] = {"poststart": [{"path": hook}]}
        if slow:
            c["hooks"].update(SLOW_START)
    b = make_bundle(["sleep", "0.2"], edit=edit)
    for i in range(tries):
        kap("run", "-b", b, f"{cid}-{i}", check=True)
    lines = seen.read_text().splitlines()
    assert len(lines) == 2 * tries, lines
    exes, cmdlines = lines[0::2], lines[1::2]
    assert all(e == "/bin/busybox" for e in exes), exes
    assert all(c.strip() == "sleep 0.2" for c in cmdlines), cmdlines


def test_start_of_dead_init_fails(kap, make_bundle, cid):
    """Negative: `start` neither hangs nor succeeds when the init died before it."""
    b = make_bundle(["true"])
    kap("create", "-b", b, cid, check=True)
    pid = kap.state(cid)["pid"]
    os.kill(pid, signal.SIGKILL)
    end = time.time() + 5
    while os.path.exists(f"/proc/{pid}") and time.time() < end:
        time.sleep(0.01)
    r = kap("start", cid, timeout=20)
    assert r.returncode != 0
    assert "exited" in r.stderr or "stopped" in r.stderr, r.stderr


# The SIGPIPE disposition kapsel sets while it writes the state to a hook (issue 10) must not
# reach the container's program nor the hooks after the first.
def sigpipe_ignored(status_text):
    for line in status_text.splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGPIPE - 1)))
    raise AssertionError("no SigIgn in " + status_text)


def test_sigpipe_default_in_container_and_hooks(kap, make_bundle, cid, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "startContainer"):
        d = "/out" if kind == "startContainer" else str(out)
        hooks[kind] = [{"path": "/bin/sh",
                        "args": ["sh", "-c", f"cat /proc/self/status > {d}/{kind}-{i}"]}
                       for i in range(2)]

    def edit(c):
        c["hooks"] = hooks
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                            "options": ["rbind", "rw"]})
    b = make_bundle(["cat", "/proc/self/status"], edit=edit)
    r = kap("run", "-b", b, cid)
    assert r.returncode == 0, r.stderr
    assert not sigpipe_ignored(r.stdout), "the container's program starts with SIGPIPE ignored"
    for kind in hooks:
        for i in range(2):
            status = (out / f"{kind}-{i}").read_text()
            assert not sigpipe_ignored(status), f"hooks.{kind}[{i}] runs with SIGPIPE ignored"


# config-linux.md#namespaces: "If a namespace type is not specified in the namespaces array,
# the container MUST inherit the runtime namespace of that type."
NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
            "cgroup": "cgroup"}


def private_mount_ns(kapsel, kroot, script, tmp_path):
    """Run script under sh with $K = kapsel --root kroot, in a throwaway private mount
    namespace: mounts made by a container that shares the runtime's stay in there."""
    env = dict(os.environ, K=f"{kapsel} --root {kroot}", T=str(tmp_path))
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)


def without_ns(types, keep_hostname=False):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] not in types]
        c["root"]["readonly"] = False
        if not keep_hostname:
            del c["hostname"]
    return edit


def ns_report():
    return "; ".join(f"readlink /proc/self/ns/{f}" for f in NS_FILES.values())


def test_omitted_namespaces_are_inherited(kap, make_bundle, cid):
    """pid, network, ipc, uts and cgroup left out: the container shares the runtime's."""
    omit = ("pid", "network", "ipc", "uts", "cgroup")
    b = make_bundle(["sh", "-c", ns_report()], edit=without_ns(omit))
    r = kap("run", "-b", b, cid)
    assert r.returncode == 0, r.stderr
    got = dict(zip(NS_FILES, r.stdout.split()))
    for t in omit:
        assert got[t] == os.readlink(f"/proc/self/ns/{NS_FILES[t]}"), (t, got)
    assert got["mount"] != os.readlink("/proc/self/ns/mnt")


def test_omitted_mount_namespace_is_inherited(kapsel, kroot, make_bundle, tmp_path):
    """runtime-tools linux_ns_itype: every type left out, mount included. The container is
    chrooted into its rootfs; `exec` lands there too, not on the host."""
    b = make_bundle(["sh", "-c", ns_report() + "; ls /; test -e /work && echo LEAK; true"],
                    edit=without_ns(tuple(NS_FILES)))
    sleeper = make_bundle(["sleep", "30"], edit=without_ns(tuple(NS_FILES)))
    script = f"""
        readlink /proc/self/ns/mnt > $T/runtime-mnt
        $K run -b {b} c1 > $T/out || exit 1
        $K create -b {sleeper} c2 && $K start c2 || exit 2
        $K exec c2 sh -c 'ls /bin/busybox; test -e /work && echo LEAK; true' > $T/exec || exit 3
        $K delete --force c2
    """
    r = private_mount_ns(kapsel, kroot, script, tmp_path)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "out").read_text()
    got = dict(zip(NS_FILES, out.split()))
    assert got["mount"] == (tmp_path / "runtime-mnt").read_text().strip(), got
    for t in ("pid", "network", "ipc", "uts", "cgroup"):
        assert got[t] == os.readlink(f"/proc/self/ns/{NS_FILES[t]}"), (t, got)
    assert "bin" in out.split() and "LEAK" not in out, out
    ex = (tmp_path / "exec").read_text()
    assert "/bin/busybox" in ex and "LEAK" not in ex, ex


@pytest.mark.parametrize("field,edit", [
    ("root.readonly", lambda c: c["root"].update(readonly=True)),
    ("linux.rootfsPropagation", lambda c: c["linux"].update(rootfsPropagation="shared")),
])
def test_no_mount_namespace_refuses_host_mount_changes(kapsel, kroot, make_bundle, tmp_path,
                                                       field, edit):
    """Negative: without a mount namespace the rootfs's mount is the host's: kapsel refuses
    to make it read-only or change its propagation, with one line naming the field."""
    def both(c):
        without_ns(("mount",))(c)
        edit(c)
    b = make_bundle(["true"], edit=both)
    r = private_mount_ns(kapsel, kroot, f"$K run -b {b} c1", tmp_path)
    assert r.returncode != 0
    assert field in r.stderr and "mount namespace" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# config.md#hostname with a uts namespace joined by path: runc and crun set it in there.
def test_hostname_in_joined_uts_namespace(kapsel, kroot, make_bundle, tmp_path):
    host = socket.gethostname()
    nsfile = tmp_path / "uts"

    def edit(c):
        c["hostname"] = "joined-uts"
        for n in c["linux"]["namespaces"]:
            if n["type"] == "uts":
                n["path"] = str(nsfile)
    b = make_bundle(["hostname"], edit=edit)
    script = f"""
        touch {nsfile} && unshare --uts={nsfile} true || exit 9
        $K run -b {b} c1 > $T/out || exit 1
        nsenter --uts={nsfile} hostname > $T/after
        umount {nsfile}
    """
    r = private_mount_ns(kapsel, kroot, script, tmp_path)
    assert socket.gethostname() == host, "the host's hostname changed"
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_text().strip() == "joined-uts"
    assert (tmp_path / "after").read_text().strip() == "joined-uts"


@pytest.mark.parametrize("case", ["no-uts", "runtime-uts"])
def test_hostname_refused_without_own_uts_namespace(kap, make_bundle, cid, case):
    """Negative: hostname with no uts namespace listed, or with the runtime's own one joined,
    would rename the host: refused, naming the field."""
    host = socket.gethostname()

    def edit(c):
        c["hostname"] = "must-not-happen"
        if case == "no-uts":
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                        if n["type"] != "uts"]
        else:
            for n in c["linux"]["namespaces"]:
                if n["type"] == "uts":
                    n["path"] = f"/proc/{os.getpid()}/ns/uts"
    b = make_bundle(["hostname"], edit=edit)
    r = kap("run", "-b", b, cid)
    assert socket.gethostname() == host, "the host's hostname changed"
    assert r.returncode != 0
    assert r.stderr.startswith("kapsel: hostname:") and "uts namespace" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
