"""The runtime must learn the pid of a process it forks through an intermediate before that
process can say anything else: `exec` (intermediate -> the process in the container's pid
namespace) and a two-stage `create` (joined namespaces -> the init). Under load the
intermediate can be descheduled right after fork(); its child then reported READY first, the
runtime ignored it, and both waited for each other forever (seen: `kapsel exec --user
65534:65534 ID id -u` hung for 60 s). strace delays the return of fork() in the intermediate
only (delay_exit: a new child does not exit the syscall), which makes that order certain."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

pytestmark = [pytest.mark.root]

DELAY_US = 300000


def strace_cmd(cmd):
    if not shutil.which("strace"):
        pytest.skip("needs strace (apt-get install strace) to delay fork() in the runtime")
    return ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=clone,fork,vfork",
            "-e", f"inject=clone,fork,vfork:delay_exit={DELAY_US}"] + cmd


def kill_runtimes(root):
    """Kill every process whose command line names this test's state root: the runtime and
    the processes it forked (they keep its command line until they execute)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if root.encode() in f.read():
                    os.kill(int(pid), 9)
        except OSError:
            pass


def strace_env():
    # LeakSanitizer cannot run under ptrace.
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=0")


def strace_delayed(cmd, root, timeout=30):
    # Files, not pipes: a created init keeps the runtime's stdio open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(strace_cmd(cmd), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, env=strace_env())
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            kill_runtimes(root)
            pytest.fail(f"hung for {timeout} s: {' '.join(cmd)}")
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(), err.read().decode()


def test_exec_when_intermediate_is_slow(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(("sleep", "1000")), cid, check=True)
    for user in ("65534:65534", "0:0"):
        rc, out, err = strace_delayed([kap.binary, "--root", kap.root, "exec", "--user", user,
                                       cid, "id", "-u"], kap.root)
        assert rc == 0, err
        assert out.strip() == user.split(":")[0]


def test_two_stage_create_records_the_init(kap, make_bundle, cid, tmp_path):
    """Joining a namespace by path makes create fork the init from an intermediate; the
    recorded pid must be the init's even when that intermediate is slow."""
    holder = subprocess.Popen(["unshare", "--ipc", "sleep", "1000"])
    try:
        ipc = f"/proc/{holder.pid}/ns/ipc"
        for _ in range(50):
            if os.readlink(ipc) != os.readlink("/proc/self/ns/ipc"):
                break
            time.sleep(0.02)

        def edit(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                        if n["type"] != "ipc"] + [{"type": "ipc", "path": ipc}]
        b = make_bundle(("sleep", "1000"), edit=edit)
        with tempfile.TemporaryFile() as err:
            tracer = subprocess.Popen(strace_cmd([kap.binary, "--root", kap.root, "create",
                                                  "--bundle", b, cid]),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err, env=strace_env())
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    r = kap("state", cid)
                    if r.returncode == 0 and json.loads(r.stdout)["status"] == "created":
                        break
                    assert tracer.poll() is None or tracer.returncode == 0, \
                        f"create failed: {err.seek(0) or err.read().decode()}"
                    time.sleep(0.05)
                else:
                    pytest.fail("create did not finish within 30 s")
                pid = kap.state(cid)["pid"]
                assert os.path.exists(f"/proc/{pid}/ns/ipc") and \
                    os.readlink(f"/proc/{pid}/ns/ipc") == os.readlink(ipc), \
                    "state.json records a process that is not the container's init"
            finally:
                # The created init lives on: end the tracer; the kernel detaches its tracees.
                tracer.kill()
                tracer.wait(timeout=30)
        kap("start", cid, check=True)
        r = kap("exec", cid, "cat", "/proc/1/cmdline")
        assert "sleep" in r.stdout, r.stdout + r.stderr
    finally:
        holder.kill()
        holder.wait()
