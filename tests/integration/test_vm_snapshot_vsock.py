"""vsock connections across a snapshot restore (docs/vm.md, virtio-vsock and Snapshot and
restore). The guest is the multiboot test kernel's test=vsockecho dial=5000: it connects from
guest port 3000 to host port 5000 (the unix socket PATH_5000) and answers every line with
"echo: " + the line, on that connection and on host connections to its port 1234.

- A guest-initiated connection survives: the restored VMM connects to its own PATH_5000 again
  and the guest's stream goes on there, with the saved credit counters (more than the guest's
  4096-byte buffer flows after the restore), no transport reset and no RST.
- Its listener gone: that connection alone is reset (the guest sees a RST for it), one warning
  line names the socket, and the VM runs on (a new host connection is served).
- Host-initiated connections cannot follow (their client was the old VMM's): test_vm_migrate's
  test_restore_resets_saved_vsock_connections.
- Another CID: the guest gets a transport reset and no connection is made.
- A forged guest-initiated connection is refused by name before anything runs."""
import os
import socket
import struct

import pytest

from test_vm_migrate import (MULTIBOOT, VSOCK_DEV, echo, kap, recv_line, start, stop, text,
                             vsock_connect, vsock_section, wait_for)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    s.settimeout(60)
    return s


def dial_guest(root, tmp, name, sock):
    """A vsockecho guest dialing host port 5000 on sock_5000: (proc, console, host socket)."""
    if not os.path.exists(MULTIBOOT):
        pytest.fail(f"test kernel {MULTIBOOT} missing: build with meson/ninja first")
    lst = listen(f"{sock}_5000")
    proc, console = start(root, tmp, name, "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
                          "test=vsockecho dial=5000", "--mem", "32M", *VSOCK_DEV,
                          "--vsock", f"cid=3,socket={sock}")
    try:
        conn, _ = lst.accept()
    finally:
        lst.close()
    wait_for(lambda: ("vsockecho: dialed 5000" in text(console) and
                      (root / "vm" / name / "state.json").exists()) or
             proc.poll() is not None, what="the guest's connection")
    assert proc.poll() is None, proc.communicate()
    return proc, console, conn


@pytest.fixture(scope="module")
def dialed_state(tmp_path_factory):
    """A vsockecho guest saved with its connection to host port 5000 open: (mem, state)."""
    tmp = tmp_path_factory.mktemp("dialed")
    root = tmp / "root"
    src, _, conn = dial_guest(root, tmp, "src", tmp / "v.sock")
    try:
        echo(conn, "before the snapshot")
        assert kap(root, "vm", "pause", "src").returncode == 0
        mem, state = tmp / "mem", tmp / "state"
        r = kap(root, "vm", "snapshot", "src", "--mem", str(mem), "--state", str(state))
        assert r.returncode == 0, r.stderr
    finally:
        stop(src)
    # The snapshotted VMM is gone, and its end of the connection with it.
    assert recv_line(conn) == ""
    conn.close()
    return mem, state


def restore(tmp_path, dialed_state, cid=3):
    mem, state = dialed_state
    return start(tmp_path / "root", tmp_path, "r", "vm", "restore", "--mem", str(mem),
                 "--state", str(state), *VSOCK_DEV, "--vsock",
                 f"cid={cid},socket={tmp_path}/r.vsock")


def test_guest_connection_survives_restore(dialed_state, tmp_path):
    lst = listen(f"{tmp_path}/r.vsock_5000")
    dst, con = restore(tmp_path, dialed_state)
    conn = None
    try:
        # The restored VMM dials the listener on its own --vsock path again.
        conn, _ = lst.accept()
        echo(conn, "after the restore")
        # More than the guest's 4096-byte receive buffer: the saved credit goes on.
        for i in range(24):
            echo(conn, f"line {i} " + "z" * 200)
        assert dst.poll() is None, dst.communicate()
        t = text(con)
        assert "vsockecho: got after the restore" in t, t
        assert "transport reset" not in t and "vsockecho: reset" not in t, t
        # The guest did not dial again: the connection it had goes on.
        assert "dialed" not in t, t
        conn.shutdown(socket.SHUT_WR)
        assert recv_line(conn) == ""
        wait_for(lambda: "vsockecho: closed 5000" in text(con), what="the guest to see the close")
    finally:
        lst.close()
        if conn:
            conn.close()
        _, err = stop(dst)
    assert "vsock0" not in err, err


def test_restore_without_the_listener_resets_that_connection(dialed_state, tmp_path):
    dst, con = restore(tmp_path, dialed_state)
    try:
        wait_for(lambda: "vsockecho: reset 3000 5000" in text(con) or dst.poll() is not None,
                 what="the guest's RST for the connection to port 5000")
        assert dst.poll() is None, dst.communicate()
        assert "transport reset" not in text(con), text(con)
        # The VM and its device go on: a host connection is served.
        s, _ = vsock_connect(tmp_path / "r.vsock")
        echo(s, "after the restore")
        s.close()
    finally:
        _, err = stop(dst)
    lines = [ln for ln in err.splitlines() if "vsock0" in ln]
    assert len(lines) == 1, err
    assert ("vsock0: restore: guest port 3000's connection to host port 5000 is reset: "
            f"{tmp_path}/r.vsock_5000:") in lines[0], lines


def test_restore_with_another_cid_resets_the_transport(dialed_state, tmp_path):
    lst = listen(f"{tmp_path}/r.vsock_5000")
    lst.settimeout(0.1)
    dst, con = restore(tmp_path, dialed_state, cid=4)
    try:
        wait_for(lambda: "vsock: transport reset" in text(con) or dst.poll() is not None,
                 what="the transport reset")
        assert dst.poll() is None, dst.communicate()
        with pytest.raises(socket.timeout):
            lst.accept()
    finally:
        lst.close()
        stop(dst)


def test_forged_guest_connection_refused(dialed_state, tmp_path):
    from test_vm_snapshot_virtio import reseal
    mem, state = dialed_state
    data = bytearray(state.read_bytes())
    off, _ = vsock_section(data)
    assert struct.unpack_from("<I", data, off + 8)[0] == 1
    flags = off + 24 + 37
    assert data[flags] & 0x80, "the saved connection is not marked guest-initiated"
    data[flags] |= 1  # a REQUEST owed: only kapsel's own connections ever have one
    bad = tmp_path / "forged.state"
    bad.write_bytes(reseal(data))
    root = tmp_path / "root"
    r = kap(root, "vm", "restore", "--mem", str(mem), "--state", str(bad), "--name", "bad",
            "--console", "none", *VSOCK_DEV, "--vsock", f"cid=3,socket={tmp_path}/r.vsock")
    assert r.returncode != 0, r
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "vsock0" in r.stderr, r.stderr
    assert "a guest-initiated connection that is not established" in r.stderr, r.stderr
    assert not (root / "vm" / "bad").exists()
    assert not (tmp_path / "r.vsock").exists()
