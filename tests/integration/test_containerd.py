"""Acceptance: containerd (io.containerd.runc.v2 shim) drives kapsel (`ctr run --runc-binary`).

One private containerd daemon per session (own root, state, socket; CRI disabled) in its own
namespace; the image is an OCI archive built with the stdlib and `ctr images import`ed. The shim
calls the runtime as `kapsel --root R --log FILE --log-format json <cmd> ...`."""
import os
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root, pytest.mark.containerd]

IMAGE = clients.IMAGE


@pytest.fixture(scope="session")
def containerd(tmp_path_factory):
    clients.require("containerd", "ctr", "containerd-shim-runc-v2")
    base = str(tmp_path_factory.mktemp("containerd"))
    cd = clients.Containerd(os.path.join(base, "daemon")).start()
    try:
        archive = clients.oci_archive(str(tmp_path_factory.mktemp("containerd-image")))
        cd.ctr("images", "import", archive, check=True)
        r = cd.ctr("images", "ls", "-q", check=True)
        assert IMAGE in r.stdout.split(), f"image not imported: {r.stdout}"
        # The shim's runtime root is <runc-root>/<namespace>; the directory itself is created
        # by the runtime (test_runtime_root_parents covers a root whose parents are missing).
        cd.runc_root = os.path.join(base, "runc")
        os.makedirs(cd.runc_root)
        yield cd
    finally:
        cd.stop()


@pytest.fixture
def ctr(containerd, kapsel):
    """ctr bound to the private daemon; ctr.run(...) adds --runc-binary kapsel."""
    class Ctr:
        def __call__(self, *args, **kw):
            return containerd.ctr(*args, **kw)

        def run(self, *args, runc_root=None, **kw):
            return containerd.ctr("run", "--runc-binary", kapsel, "--runc-root",
                                  runc_root or containerd.runc_root, *args, **kw)

        status = staticmethod(containerd.task_status)
    return Ctr()


@pytest.fixture
def cid(containerd):
    c = "kt-" + uuid.uuid4().hex[:10]
    yield c
    containerd.ctr("task", "kill", "-s", "SIGKILL", c)
    containerd.ctr("task", "rm", "-f", c)
    containerd.ctr("container", "rm", c)


def test_run_rm_echo(ctr, cid):
    r = ctr.run("--rm", IMAGE, cid, "echo", "hi", timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"


def test_exit_code(ctr, cid):
    r = ctr.run("--rm", IMAGE, cid, "sh", "-c", "exit 7", timeout=30)
    assert r.returncode == 7, r.stderr


def test_detached_exec_pause_ps_kill(ctr, cid, containerd):
    r = ctr.run("-d", IMAGE, cid, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert ctr.status(cid) == "RUNNING"

    # containerd 1.6's ctr can lose the output of an exec that exits at once (seen with runc
    # too: 2 of 14 runs under load); a short linger keeps this a test of kapsel, not of ctr.
    r = ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo hi2; sleep 0.3",
            timeout=30)
    assert (r.returncode, r.stdout) == (0, "hi2\n"), r.stderr
    r = ctr("task", "exec", "--exec-id", "e2", cid, "sh", "-c", "exit 4", timeout=30)
    assert r.returncode == 4, r.stderr

    r = ctr("task", "ps", cid)
    assert r.returncode == 0, r.stderr
    pids = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()]
    ls = ctr("task", "ls", check=True).stdout
    init_pid = next(line.split()[1] for line in ls.splitlines() if line.split()[0] == cid)
    assert init_pid in pids, (r.stdout, ls)

    r = ctr("task", "pause", cid)
    assert r.returncode == 0, r.stderr
    assert ctr.status(cid) == "PAUSED"
    r = ctr("task", "resume", cid)
    assert r.returncode == 0, r.stderr
    assert ctr.status(cid) == "RUNNING"
    r = ctr("task", "exec", "--exec-id", "e3", cid, "true", timeout=30)
    assert r.returncode == 0, r.stderr

    r = ctr("task", "kill", "-s", "SIGKILL", cid)
    assert r.returncode == 0, r.stderr
    clients.wait_for(lambda: ctr.status(cid) == "STOPPED", what=f"task {cid} to stop")
    r = ctr("task", "rm", cid)
    assert r.returncode == 0, r.stderr
    r = ctr("container", "rm", cid)
    assert r.returncode == 0, r.stderr
    # the runtime's state went with it
    assert not os.path.exists(os.path.join(containerd.runc_root, containerd.NAMESPACE, cid))


def test_kill_sigterm(ctr, cid):
    r = ctr.run("-d", IMAGE, cid, "sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait")
    assert r.returncode == 0, r.stderr
    r = ctr("task", "kill", cid)  # SIGTERM
    assert r.returncode == 0, r.stderr
    clients.wait_for(lambda: ctr.status(cid) == "STOPPED", what=f"task {cid} to stop")


def test_nonexistent_command_error_shown(ctr, cid):
    """The shim reports the last line of the runtime's JSON log as the error."""
    r = ctr.run("--rm", IMAGE, cid, "kapsel-no-such-cmd", timeout=30)
    assert r.returncode != 0
    assert "kapsel-no-such-cmd" in r.stderr, r.stderr


def test_runtime_root_parents(ctr, cid, containerd, tmp_path):
    """containerd's default runtime root is /run/containerd/runc/<namespace>, whose parents
    need not exist yet: like runc, the runtime must create the whole path."""
    root = str(tmp_path / "not" / "yet")
    r = ctr.run("--rm", IMAGE, cid, "echo", "hi", runc_root=root, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
