"""virtio-console and virtio-vsock of kapsel vm run (issue 6), driven from the multiboot test
kernel's own drivers (tests/guests/virtio-dev.h). The vsock host side is Firecracker's: the
host connects to the unix socket and writes "CONNECT <port>\\n"; guest connections to host
port P reach the unix socket PATH_P. PASS is exit status 85, as in test_vm.py."""
import os
import socket
import subprocess
import time

import pytest

from test_vm import MULTIBOOT, PASS, guests, mb  # noqa: F401  (guests: module fixture)
from conftest import KAPSEL

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def vcon(data):
    # stdin is a pipe: the console backend polls it and hands the bytes to hvc0, not the UART.
    return subprocess.run([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--transport", "mmio",
                           "--cmdline", "test=vcon", "--virtio-console"], input=data,
                          capture_output=True, text=True, timeout=60)


def test_virtio_console_echo():
    r = vcon("hello\nworld\nquit\n")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "hvc emergency write\n" in r.stdout
    assert "hvc ready\nhvc: hello\nhvc: world\nhvc bye\n" in r.stdout, r.stdout


def test_virtio_console_input_larger_than_its_buffer():
    # 64-byte guest buffers, a 4 KiB device ring: lines arrive whole, in order.
    lines = [f"line {i:03d} " + "x" * 40 for i in range(40)]
    r = vcon("\n".join(lines) + "\nquit\n")
    assert r.returncode == PASS, r.stdout + r.stderr
    for line in lines:
        assert f"hvc: {line}\n" in r.stdout


def wait_for(path, proc):
    for _ in range(400):
        if os.path.exists(path) or proc.poll() is not None:
            return
        time.sleep(0.05)


def test_vsock_both_directions(tmp_path):
    path = str(tmp_path / "v.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + "_5000")
    listener.listen(1)
    listener.settimeout(30)
    p = subprocess.Popen([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--transport", "mmio",
                          "--cmdline", "test=vsock cid=7", "--vsock", f"cid=7,socket={path}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(path, p)
        # Until the guest listens on 1234 it answers the request with a reset, which closes
        # the host's connection (as Firecracker does): a client tries again, as here.
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(path)
            s.sendall(b"CONNECT 1234\n")
            f = s.makefile("rb")
            try:
                ok = f.readline()
            except ConnectionResetError:
                ok = b""
            if ok or time.monotonic() > deadline or p.poll() is not None:
                break
            f.close()
            s.close()
            time.sleep(0.1)
        assert ok.startswith(b"OK ") and int(ok[3:]) >= 1 << 30, ok
        s.sendall(b"ping\n")
        assert f.readline() == b"pong: ping\n"
        f.close()
        s.close()
        c, _ = listener.accept()
        c.settimeout(30)
        assert c.recv(100) == b"hello from the guest\n"
        c.sendall(b"hello from the host\n")
        assert c.recv(100) == b"", "the guest's SHUTDOWN did not reach the host"
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == PASS, out + err
    assert "vsock: host says hello from the host" in out
    assert not os.path.exists(path), "the vsock socket outlived the VM"


def test_vsock_bad_connect_line_is_dropped(tmp_path):
    path = str(tmp_path / "v.sock")
    p = subprocess.Popen([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--transport", "mmio",
                          "--cmdline", "test=spin", "--vsock", f"cid=9,socket={path}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(path, p)
        for line in (b"HELLO 1\n", b"CONNECT x\n", b"CONNECT 99999999999\n", b"C" * 64):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(path)
            s.sendall(line)
            try:
                assert s.recv(10) == b"", line
            except ConnectionResetError:
                pass  # closed with the unread rest of the line: a reset, also fine
            s.close()
        assert p.poll() is None
        p.terminate()
        p.communicate(timeout=30)
    finally:
        p.kill()


@pytest.mark.parametrize("arg,msg", [
    ("cid=2,socket={sock}", "cid must be 3 to 4294967294"),
    ("cid=0,socket={sock}", "cid must be 3 to 4294967294"),
    ("cid=4294967295,socket={sock}", "cid must be 3 to 4294967294"),
    ("cid=x,socket={sock}", "cid must be 3 to 4294967294"),
    ("cid=5", "expected cid=N,socket=PATH"),
    ("socket={sock}", "expected cid=N,socket=PATH"),
    ("cid=5,socket={sock},port=1", "unknown option \"port=1\""),
    ("cid=5,socket={file}", "exists and is not a socket"),
    ("cid=5,socket={tmp}/no/such/dir/v.sock", "No such file or directory"),
])
def test_bad_vsock_options(tmp_path, arg, msg):
    regular = tmp_path / "file"
    regular.write_text("x")
    fmt = dict(sock=tmp_path / "v.sock", file=regular, tmp=tmp_path)
    r = mb("pass", "--vsock", arg.format(**fmt))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], r.stderr
    assert "multiboot guest" not in r.stdout
    assert regular.read_text() == "x"


def test_second_vsock_refused(tmp_path):
    r = mb("pass", "--vsock", f"cid=5,socket={tmp_path}/a", "--vsock",
           f"cid=6,socket={tmp_path}/b")
    assert r.returncode == 1 and "only one vsock device" in r.stderr, r.stderr


def test_vsock_socket_in_use_refused(tmp_path):
    path = str(tmp_path / "v.sock")
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(path)
    busy.listen(1)
    r = mb("pass", "--vsock", f"cid=5,socket={path}")
    assert r.returncode == 1 and "in use by another VM" in r.stderr, r.stderr
    busy.close()
    # A stale socket (nobody listening) is replaced.
    r = mb("pass", "--transport", "mmio", "--vsock", f"cid=5,socket={path}")
    assert r.returncode == PASS, r.stdout + r.stderr
