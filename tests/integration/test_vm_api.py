"""The VM control API (docs/vm.md, Control API): `kapsel vm run --name/--api-sock` serves
HTTP/1.1 + JSON on a unix socket; `vm ls|inspect|pause|resume|stop` use it. The guest is the
multiboot test kernel's test=count, which prints "count N clock MS" every 100 ms of kvmclock
time, so a pause shows as no output and, on resume, as no jump in the guest's clock."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


@pytest.fixture(scope="module", autouse=True)
def guests(kapsel):
    if not os.path.exists(MULTIBOOT):
        pytest.fail(f"test kernel {MULTIBOOT} missing: build with meson/ninja first")


def kap(root, *args, timeout=60):
    return subprocess.run([KAPSEL, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    return sep and m and len(body) >= int(m.group(1))


def request(path, raw, timeout=30, responses=1):
    """Sends raw bytes, returns (status, headers, body) of the last of `responses` answers
    (each framed by its Content-Length; the connection may stay open: keep-alive)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(raw)
    data = b""
    for i in range(responses):
        if i:
            data = data[data.index(b"\r\n\r\n") + 4 + int(re.search(
                rb"\r\ncontent-length: *(\d+)", data, re.I).group(1)):]
        while not complete(data):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, headers, body


def call(path, method, target, body=None, ctype="application/json"):
    b = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    raw = (f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           + (f"Content-Type: {ctype}\r\n" if b else "")
           + f"Content-Length: {len(b)}\r\n\r\n").encode() + b
    status, headers, data = request(path, raw)
    return status, (json.loads(data) if data else None)


class VM:
    def __init__(self, root, tmp_path, name="t", test="count", extra=()):
        self.root, self.name = root, name
        self.console = tmp_path / f"console-{name}.txt"
        self.proc = subprocess.Popen(
            [KAPSEL, "--root", str(root), "vm", "run", "--name", name, "--kernel", MULTIBOOT,
             "--cmdline", f"test={test}", "--console", f"file:{self.console}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.dir = root / "vm" / name
        self.sock = str(self.dir / "api.sock")

    def wait_ready(self):
        wait_for(lambda: (self.dir / "state.json").exists() or self.proc.poll() is not None,
                 what="the VM's state.json")
        assert self.proc.poll() is None, self.proc.communicate()
        return self

    def lines(self):
        try:
            return re.findall(r"count (\d+) clock (\d+|-)\n", self.console.read_text())
        except FileNotFoundError:
            return []

    def end(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()


@pytest.fixture
def vmroot(tmp_path):
    root = tmp_path / "root"
    vms = []

    def start(**kw):
        v = VM(root, tmp_path, **kw)
        vms.append(v)
        return v
    yield root, start
    for v in vms:
        v.end()


def test_describe_and_socket(vmroot):
    root, start = vmroot
    v = start(name="desc").wait_ready()
    st = os.lstat(v.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(v.dir).st_mode) == 0o700
    state = json.loads((v.dir / "state.json").read_text())
    assert state["pid"] == v.proc.pid and state["api_socket"] == v.sock
    for target in ("/", "/machine"):
        status, d = call(v.sock, "GET", target)
        assert status == 200
        assert d["id"] == "desc" and d["state"] == "Running" and d["vcpus"] == 1
        assert d["mem_mib"] == 256 and d["kernel"] == MULTIBOOT and d["pid"] == v.proc.pid
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", d["started"])
    # state.json is written before the vCPU threads start: wait until the guest ran.
    wait_for(lambda: v.lines(), what="the guest's first line")
    status, m = call(v.sock, "GET", "/metrics")
    assert status == 200 and m["uptime_ms"] >= 0 and m["exits"]["io"] > 0
    assert len(m["vcpus"]) == 1 and m["vcpus"][0]["run_time_ns"] > 0
    # The CLI's view of the same VM.
    r = kap(root, "vm", "inspect", "desc")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == "desc"
    r = kap(root, "vm", "ls", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert [d["id"] for d in json.loads(r.stdout)] == ["desc"]
    r = kap(root, "vm", "ls")
    assert r.returncode == 0 and re.search(r"^desc\s+Running\s", r.stdout, re.M), r.stdout


def test_pause_resume(vmroot):
    root, start = vmroot
    v = start(name="cnt").wait_ready()
    wait_for(lambda: len(v.lines()) >= 3, what="the guest counting")
    r = kap(root, "vm", "pause", "cnt")
    assert r.returncode == 0, r.stderr
    assert call(v.sock, "GET", "/")[1]["state"] == "Paused"
    before = v.lines()
    time.sleep(1.5)
    assert v.lines() == before, "the guest ran while paused"
    assert call(v.sock, "GET", "/metrics")[1]["paused_ms"] >= 1000
    r = kap(root, "vm", "resume", "cnt")
    assert r.returncode == 0, r.stderr
    assert call(v.sock, "GET", "/")[1]["state"] == "Running"
    wait_for(lambda: len(v.lines()) >= len(before) + 3, what="counting after resume")
    after = v.lines()
    n0, c0 = int(before[-1][0]), before[-1][1]
    n1, c1 = int(after[len(before)][0]), after[len(before)][1]
    assert n1 > n0
    if c0 != "-":
        # kvmclock stopped for the pause: the next line is ~100 ms of guest time later,
        # not the 1.5 s the pause lasted.
        assert int(c1) - int(c0) < 1000, (before[-3:], after[len(before):len(before) + 3])
    # Through the API directly, and twice: the second of each is a state error.
    assert call(v.sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
    status, d = call(v.sock, "PATCH", "/vm", {"state": "Paused"})
    assert status == 400 and "already paused" in d["fault_message"]
    r = kap(root, "vm", "pause", "cnt")
    assert r.returncode == 1 and "already paused" in r.stderr and len(r.stderr.splitlines()) == 1
    assert call(v.sock, "PATCH", "/vm", {"state": "Resumed"})[0] == 204
    status, d = call(v.sock, "PATCH", "/vm", {"state": "Resumed"})
    assert status == 400 and "not paused" in d["fault_message"]


@pytest.mark.parametrize("raw,status,msg", [
    (b"PATCH /vm HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"state\":",
     400, "request body"),
    (b"PATCH /vm HTTP/1.1\r\nContent-Length: 27\r\n\r\n{\"state\":\"Paused\",\"x\":1}   ",
     400, "unknown field \"x\""),
    (b"PATCH /vm HTTP/1.1\r\nContent-Length: 18\r\n\r\n{\"state\":\"Frozen\"}", 400, "Frozen"),
    (b"PATCH /vm HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"state\":true}", 400, "state"),
    (b"PATCH /vm HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400, "expected an object"),
    (b"PATCH /vm HTTP/1.1\r\n\r\n", 400, "needs a JSON body"),
    (b"PATCH /vm HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", 415,
     "application/json"),
    (b"DELETE /vm HTTP/1.1\r\n\r\n", 405, "not allowed"),
    (b"POST / HTTP/1.1\r\n\r\n", 405, "not allowed"),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404, "no such resource"),
    (b"PUT /actions HTTP/1.1\r\nContent-Length: 22\r\n\r\n{\"action_type\":\"Boom\"}", 400,
     "unknown action"),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "Transfer-Encoding"),
    (b"PATCH /vm HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n", 413, "too large"),
    (b"GET / HTTP/3.0\r\n\r\n", 505, "version"),
    (b"\x00\x01\x02garbage\r\n\r\n", 400, ""),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bare"),
])
def test_bad_requests(vmroot, raw, status, msg):
    root, start = vmroot
    v = start(name="bad").wait_ready()
    got, headers, body = request(v.sock, raw)
    assert got == status, body
    assert msg in json.loads(body)["fault_message"]
    # The VM and its API are still there, and unchanged.
    s, d = call(v.sock, "GET", "/")
    assert s == 200 and d["state"] == "Running"
    assert v.proc.poll() is None


def test_oversize_and_hostile_clients(vmroot):
    root, start = vmroot
    v = start(name="host").wait_ready()
    # A body larger than announced bounds: the head is refused when the header arrives.
    got, _, _ = request(v.sock, b"PATCH /vm HTTP/1.1\r\nContent-Length: 16385\r\n\r\n" +
                        b"x" * 16385)
    assert got == 413
    # Headers without end: refused at the bound, not buffered forever.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(v.sock)
    try:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert s.recv(4096).startswith(b"HTTP/1.1 431")
    s.close()
    # A client killed mid-request (SIGKILL) leaves nothing behind and blocks nobody.
    code = ("import socket,time; s=socket.socket(socket.AF_UNIX); s.connect(%r); "
            "s.sendall(b'PATCH /vm HTTP/1.1\\r\\nContent-Length: 100\\r\\n\\r\\n{'); "
            "print('sent', flush=True); time.sleep(60)" % v.sock)
    p = subprocess.Popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "sent"
    assert call(v.sock, "GET", "/")[0] == 200  # served while the half request waits
    p.kill()
    p.wait()
    # Keep-alive: two requests on one connection, answered in order.
    got, _, body = request(v.sock, b"GET / HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n"
                           b"Connection: close\r\n\r\n", responses=2)
    assert got == 200 and b"uptime_ms" in body
    # More connections than the server keeps open: the extra ones are closed, the VM lives.
    socks = []
    for _ in range(40):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(v.sock)
        socks.append(c)
    for c in socks:
        c.close()
    def answers():
        try:
            return call(v.sock, "GET", "/")[0] == 200
        except (OSError, IndexError):
            return False  # refused or closed at accept while the flood is being reaped
    assert wait_for(answers, what="the API after a flood")
    assert v.proc.poll() is None
    v.end()
    assert v.proc.returncode == 143
    assert os.listdir(root / "vm") == []


def test_missing_vm(tmp_path):
    root = tmp_path / "root"
    for args in (["inspect", "ghost"], ["pause", "ghost"], ["resume", "ghost"],
                 ["stop", "ghost"], ["stop", "--force", "ghost"]):
        r = kap(root, "vm", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == "kapsel: vm ghost: no such VM", r.stderr
    r = kap(root, "vm", "inspect", "../etc")
    assert r.returncode == 1 and "invalid name" in r.stderr
    r = kap(root, "vm", "ls", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_cleanup_on_every_exit(vmroot, tmp_path):
    root, start = vmroot
    # The guest ends the VM itself.
    v = start(name="self", test="pass")
    v.proc.wait(timeout=60)
    assert v.proc.returncode == 85
    assert not v.dir.exists()
    # SIGTERM to the VMM.
    v = start(name="term").wait_ready()
    v.proc.send_signal(signal.SIGTERM)
    v.proc.wait(timeout=60)
    assert not v.dir.exists()
    # vm stop (through the API), then vm stop --force (SIGKILL: the CLI removes what is left).
    v = start(name="stop").wait_ready()
    r = kap(root, "vm", "stop", "--timeout", "0", "stop")
    assert r.returncode == 0, r.stderr
    assert v.proc.wait(timeout=60) == 143 and not v.dir.exists()
    v = start(name="kill").wait_ready()
    r = kap(root, "vm", "stop", "--force", "kill")
    assert r.returncode == 0, r.stderr
    assert v.proc.wait(timeout=60) == -signal.SIGKILL
    assert not v.dir.exists()
    # A VMM killed behind kapsel's back: its directory is stale, and ls removes it.
    v = start(name="stale").wait_ready()
    v.proc.kill()
    v.proc.wait()
    assert v.dir.exists()
    r = kap(root, "vm", "ls", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert not v.dir.exists()
    # ...and the name can be used again; while it runs, a second VM of that name is refused.
    v = start(name="stale").wait_ready()
    dup = start(name="stale")
    out, err = dup.proc.communicate(timeout=60)
    assert dup.proc.returncode == 1 and "vm stale: already running" in err
    assert call(v.sock, "GET", "/")[0] == 200
    v.end()
    assert os.listdir(root / "vm") == []


def test_api_sock_option(tmp_path):
    sock = str(tmp_path / "my.sock")
    p = subprocess.Popen([KAPSEL, "vm", "run", "--api-sock", sock, "--kernel", MULTIBOOT,
                          "--cmdline", "test=count", "--console", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(sock) or p.poll() is not None, what="the socket")
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        status, d = call(sock, "GET", "/")
        assert status == 200 and d["id"] == "" and d["api_socket"] == sock
        assert call(sock, "PUT", "/actions", {"action_type": "Stop"})[0] == 204
        assert p.wait(timeout=60) == 143
        assert not os.path.exists(sock)
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    # A path that is not a socket is refused, and left alone.
    f = tmp_path / "file"
    f.write_text("keep")
    r = subprocess.run([KAPSEL, "vm", "run", "--api-sock", str(f), "--kernel", MULTIBOOT,
                        "--cmdline", "test=pass"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "exists and is not a socket" in r.stderr
    assert f.read_text() == "keep"
    r = subprocess.run([KAPSEL, "vm", "run", "--name", "bad/name", "--kernel", MULTIBOOT],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--name bad/name" in r.stderr


def test_relative_api_sock_with_name(tmp_path):
    """A relative --api-sock is recorded absolute, so vm inspect works from anywhere."""
    root = tmp_path / "root"
    p = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "run", "--name", "rel",
                          "--api-sock", "rel.sock", "--kernel", MULTIBOOT,
                          "--cmdline", "test=count", "--console", "none"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (root / "vm" / "rel" / "state.json").exists() or p.poll() is not None,
                 what="state.json")
        r = kap(root, "vm", "inspect", "rel")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["api_socket"] == str(tmp_path / "rel.sock")
        assert kap(root, "vm", "stop", "--timeout", "0", "rel").returncode == 0
        assert p.wait(timeout=60) == 143
        assert not (tmp_path / "rel.sock").exists() and os.listdir(root / "vm") == []
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()


# ---- vm stop: the ACPI power button first ----


def test_vm_stop_presses_the_power_button(vmroot):
    """`vm stop` presses the ACPI power button (\\_SB.GED0's edge, notifying \\_SB.PWRB): the
    test kernel's test=pwrbtn sees the edge and powers off through \\_S5, as an OS would."""
    root, start = vmroot
    v = start(name="pb", test="pwrbtn").wait_ready()
    wait_for(lambda: "pwrbtn: waiting on GSI 5" in v.console.read_text()
             or v.proc.poll() is not None, what="the guest waiting for the button")
    assert v.proc.poll() is None, v.proc.communicate()
    r = kap(root, "vm", "stop", "pb")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # The guest powered off: the VMM's status is the guest's power-off, not SIGTERM's.
    assert v.proc.wait(timeout=60) == 0
    assert "pwrbtn: pressed" in v.console.read_text()
    assert not v.dir.exists()


def test_power_button_action(vmroot):
    root, start = vmroot
    v = start(name="pa", test="pwrbtn").wait_ready()
    wait_for(lambda: "pwrbtn: waiting" in v.console.read_text() or v.proc.poll() is not None,
             what="the guest waiting for the button")
    assert call(v.sock, "PUT", "/actions", {"action_type": "PowerButton"})[0] == 204
    assert v.proc.wait(timeout=60) == 0
    assert "pwrbtn: pressed" in v.console.read_text()


def test_vm_stop_falls_back_when_the_guest_ignores_the_button(vmroot):
    """test=count has no ACPI driver: after --timeout the VMM is ended as on SIGTERM."""
    root, start = vmroot
    v = start(name="deaf").wait_ready()
    t0 = time.time()
    r = kap(root, "vm", "stop", "--timeout", "1", "deaf")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ("kapsel: vm stop deaf: the guest did not power off within 1s: "
                                "stopping the VMM"), r.stderr
    assert v.proc.wait(timeout=60) == 143 and not v.dir.exists()
    assert time.time() - t0 >= 1


def test_vm_stop_of_a_paused_vm_does_not_wait(vmroot):
    """A paused guest cannot answer the button: the VMM is ended at once."""
    root, start = vmroot
    v = start(name="still").wait_ready()
    assert kap(root, "vm", "pause", "still").returncode == 0
    t0 = time.time()
    r = kap(root, "vm", "stop", "still")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert v.proc.wait(timeout=60) == 143
    assert time.time() - t0 < 8
