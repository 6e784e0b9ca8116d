"""Bad input: one clear line naming what is wrong, a non-zero exit, and nothing left behind."""
import json
import os

import pytest

from test_lifecycle import assert_nothing_left

pytestmark = pytest.mark.root


def create_fails(kap, bundle, cid, kroot, *needles):
    r = kap("create", "--bundle", bundle, cid)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    assert_nothing_left(kroot, cid)
    return err


def test_missing_config(kap, cid, kroot, tmp_path):
    create_fails(kap, str(tmp_path), cid, kroot, "config.json", "No such file")


def test_invalid_json(kap, cid, kroot, tmp_path):
    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.2",')
    create_fails(kap, str(tmp_path), cid, kroot, "config.json", "invalid JSON")


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion"),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "bogus"),
    (lambda c: c["linux"]["resources"].update(memory={"limit": "lots"})
     if "resources" in c["linux"] else c["linux"].update(resources={"memory": {"limit": "x"}}),
     "linux.resources.memory.limit"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_BOGUS"), "CAP_BOGUS"),
    (lambda c: c["process"].update(args=["/no/such/binary"]), "/no/such/binary"),
    (lambda c: c["process"].update(args=["nosuchcmd"]), "nosuchcmd"),
    (lambda c: c["root"].update(path="/nonexistent-rootfs"), "root.path"),
    (lambda c: c["linux"]["namespaces"].append({"type": "network", "path": "/etc/passwd"})
     or c["linux"].update(namespaces=[n for n in c["linux"]["namespaces"]
                                      if n != {"type": "network"}]), "not a namespace"),
    (lambda c: c["process"].update(cwd="/does/not/exist"), "cwd"),
    (lambda c: c.update(hooks={"prestart": [{"path": "/nonexistent/hook"}]}), "prestart"),
])
def test_bad_config_fields(kap, make_bundle, cid, kroot, edit, needle):
    create_fails(kap, make_bundle(["sleep", "10"], edit), cid, kroot, needle)


def test_rootfs_symlink_rejected(kap, make_bundle, cid, kroot, tmp_path, rootfs):
    link = tmp_path / "rootlink"
    os.symlink(rootfs, link)
    create_fails(kap, make_bundle(["true"], lambda c: c["root"].update(path=str(link))), cid,
                 kroot, "root.path", "symlink")


def test_duplicate_id(kap, make_bundle, cid, kroot):
    kap("create", "--bundle", make_bundle(["sleep", "100"]), cid, check=True)
    r = kap("create", "--bundle", make_bundle(["sleep", "100"]), cid)
    assert r.returncode != 0 and "already exists" in r.stderr
    assert kap.state(cid)["status"] == "created"  # the first one is untouched


@pytest.mark.parametrize("bad", ["../escape", "a/b", "x\ny", "..", "tab\tid"])
def test_bad_ids(kap, make_bundle, kroot, bad):
    r = kap("create", "--bundle", make_bundle(["true"]), bad)
    assert r.returncode != 0 and "container id" in r.stderr
    assert os.listdir(kroot) == []


def test_operations_on_missing_container(kap):
    for args in (["start", "nope"], ["state", "nope"], ["kill", "nope"], ["delete", "nope"],
                 ["pause", "nope"], ["resume", "nope"], ["exec", "nope", "true"],
                 ["events", "--stats", "nope"], ["ps", "nope"], ["update", "--memory", "1m",
                                                                  "nope"]):
        r = kap(*args)
        assert r.returncode != 0 and "nope" in r.stderr, args


def test_json_log_format(kap, make_bundle, cid, tmp_path):
    log = tmp_path / "log.json"
    r = kap("--log", str(log), "--log-format", "json", "create", "--bundle",
            make_bundle(["nosuchcmd"]), cid)
    assert r.returncode != 0
    last = json.loads(log.read_text().strip().splitlines()[-1])
    assert last["level"] == "error" and "nosuchcmd" in last["msg"] and "time" in last
