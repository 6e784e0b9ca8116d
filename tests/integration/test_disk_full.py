"""Disk full while pulling or unpacking (issue 4, Faults): a store on a small tmpfs. The command
fails with a clear error, the store stays consistent (nothing half-written in blobs/ or layers/,
tmp/ empty), and the same pull succeeds once there is space."""
import os
import subprocess

import pytest

import clients
from registry import Layout, Registry, skopeo_push

pytestmark = [pytest.mark.root]


def listing(store):
    out = []
    for top in ("blobs", "layers", "tmp"):
        base = os.path.join(store, top)
        for dirpath, dirnames, filenames in os.walk(base):
            for n in dirnames + filenames:
                out.append(os.path.relpath(os.path.join(dirpath, n), store))
    return sorted(out)


@pytest.fixture
def small_store(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "kapsel-test-full", str(store)],
                   check=True)
    yield str(store)
    subprocess.run(["umount", "-l", str(store)], check=False)


@pytest.fixture(scope="module")
def big_layout(tmp_path_factory):
    # One small layer and one of 12 MiB of incompressible data: it cannot fit in 6 MiB.
    lay = Layout(tmp_path_factory.mktemp("big") / "layout")
    desc, _ = lay.image([[("dir", "etc", 0o755), ("file", "etc/small", b"x" * 100, 0o644)],
                         [("file", "blob.bin", os.urandom(12 << 20), 0o644)]])
    lay.tag("v1", desc)
    return lay


def test_load_into_full_store(kapsel, small_store, big_layout):
    k = lambda *a: clients.run([kapsel, "--store", small_store] + list(a), timeout=120)
    assert k("images").returncode == 0  # creates the store layout
    before = listing(small_store)
    r = k("load", big_layout.path)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "No space left on device" in r.stderr, r.stderr
    assert listing(small_store) == before
    # space appears: the same load now works
    subprocess.run(["mount", "-o", "remount,size=64m", small_store], check=True)
    r = k("load", big_layout.path)
    assert r.returncode == 0, r.stderr


def test_pull_into_full_store(kapsel, small_store, big_layout, tmp_path):
    reg = Registry(tmp_path)
    try:
        skopeo_push(big_layout, "v1", f"{reg.host}/full/img:v1")
        k = lambda *a: clients.run([kapsel, "--store", small_store] + list(a), timeout=120)
        assert k("images").returncode == 0
        before = listing(small_store)
        r = k("pull", "-q", f"{reg.host}/full/img:v1")
        assert r.returncode != 0
        assert "No space left on device" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert listing(small_store) == before
        subprocess.run(["mount", "-o", "remount,size=64m", small_store], check=True)
        r = k("pull", "-q", f"{reg.host}/full/img:v1")
        assert r.returncode == 0, r.stderr
        assert "full/img" in k("images").stdout
    finally:
        reg.stop()
