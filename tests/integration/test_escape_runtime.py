"""Escapes aimed at the runtime itself, with hostile bundles (the container-side battery runs
default `kapsel run` containers in test_escape.py)."""
import os
import subprocess
import threading

import pytest

pytestmark = pytest.mark.root


def test_symlink_swap_race_during_create(kap, make_bundle, tmp_path, rootfs):
    # /evil flips between a real directory and a symlink to a host directory while containers
    # that mount a tmpfs on /evil/x start: no mount and no file may ever land on the host side.
    root = tmp_path / "raceroot"
    subprocess.run(["cp", "-a", rootfs, str(root)], check=True)
    host = tmp_path / "host-target"
    (host / "x").mkdir(parents=True)
    evil = root / "evil"
    stop = threading.Event()

    def flip():
        tmp_link = root / "evil.lnk"
        tmp_dir = root / "evil.dir"
        (tmp_dir / "x").mkdir(parents=True)
        while not stop.is_set():
            try:
                os.symlink(str(host), tmp_link)
                os.rename(tmp_link, evil)  # evil -> host
                if evil.is_symlink():
                    os.unlink(evil)
                os.rename(tmp_dir, evil)  # evil is a directory
                os.rename(evil, tmp_dir)
            except OSError:
                pass

    def edit(c):
        c["root"]["path"] = str(root)
        c["root"]["readonly"] = False
        c["mounts"].append({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"})
    bundle = make_bundle(["sh", "-c", "touch /evil/x/pwned 2>/dev/null; true"], edit)
    t = threading.Thread(target=flip)
    t.start()
    ok = 0
    try:
        for i in range(60):
            ok += kap("run", "--bundle", bundle, f"race-{i}").returncode == 0
            with open("/proc/self/mountinfo") as f:
                assert str(host) not in f.read()
            assert os.listdir(host / "x") == [], "a container wrote through the symlink"
    finally:
        stop.set()
        t.join()
    assert ok > 0, "no container started at all: the race was not exercised"
