"""The command line itself: flags, help, usage errors, and the commands that need no running
container (features, spec). Everything here runs unprivileged and without cgroups."""
import json
import os
import subprocess

import pytest

COMMANDS = {
    "create": ["--bundle", "-b", "--pid-file", "--console-socket", "--no-pivot",
               "--no-new-keyring", "--preserve-fds"],
    "run": ["--bundle", "-b", "--detach", "-d", "--pid-file", "--console-socket", "--no-pivot",
            "--no-new-keyring", "--preserve-fds", "--keep", "--no-subreaper"],
    "start": [],
    "state": [],
    "kill": ["--all", "-a"],
    "delete": ["--force", "-f"],
    "list": ["--format", "-f", "--quiet", "-q"],
    "ps": ["--format", "-f"],
    "exec": ["--process", "-p", "--tty", "-t", "--console-socket", "--detach", "-d",
             "--pid-file", "--cwd", "--env", "-e", "--user", "-u", "--cap", "-c",
             "--no-new-privs", "--preserve-fds", "--additional-gids"],
    "pause": [],
    "resume": [],
    "events": ["--stats", "--interval"],
    "update": ["--resources", "-r", "--memory", "--memory-reservation", "--memory-swap",
               "--cpu-quota", "--cpu-period", "--cpu-share", "--cpuset-cpus", "--cpuset-mems",
               "--pids-limit", "--blkio-weight"],
    "features": [],
    "spec": ["--rootless", "--bundle", "-b"],
}

# What `runc spec` writes, key for key (runc libcontainer/specconv/example.go).
RUNC_SPEC_KEYS = {"ociVersion", "process", "root", "hostname", "mounts", "linux"}
RUNC_MOUNTS = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
RUNC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def run(kapsel, kroot, *args, **kw):
    return subprocess.run([kapsel, "--root", kroot, *args], capture_output=True, text=True,
                          timeout=30, **kw)


def assert_one_line_error(r, *needles, code=1):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err and "\n" not in err, f"expected one error line, got: {r.stderr!r}"
    assert err.startswith("kapsel: "), err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


def test_version(kapsel, kroot):
    for flag in ("--version", "-v"):
        r = run(kapsel, kroot, flag)
        assert r.returncode == 0
        lines = r.stdout.splitlines()
        assert lines[0].startswith("kapsel version ")
        assert "spec: 1.2.0" in lines


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], []])
def test_global_help(kapsel, kroot, args):
    r = run(kapsel, kroot, *args)
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert name in r.stdout
    for flag in ("--root", "--log", "--log-format", "--debug", "--systemd-cgroup"):
        assert flag in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help(kapsel, kroot, name):
    for args in ([name, "--help"], [name, "-h"], ["help", name]):
        r = run(kapsel, kroot, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.startswith(f"Usage: kapsel {name}")
        for flag in COMMANDS[name] + ["--help"]:
            assert flag in r.stdout, (name, flag)


def test_unknown_command(kapsel, kroot):
    assert_one_line_error(run(kapsel, kroot, "frobnicate"), "frobnicate")
    assert_one_line_error(run(kapsel, kroot, "help", "frobnicate"), "frobnicate")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_flag(kapsel, kroot, name):
    # run IMAGE and exec NAME CMD are podman's forms here: a usage error exits 125 as podman's
    code = 125 if name in ("run", "exec") else 1
    assert_one_line_error(run(kapsel, kroot, name, "--no-such-flag", "x"), "--no-such-flag",
                          code=code)


def test_unknown_global_flag(kapsel, kroot):
    assert_one_line_error(run(kapsel, kroot, "--no-such-flag", "list"), "--no-such-flag")


def test_flag_without_value(kapsel, kroot):
    assert_one_line_error(run(kapsel, kroot, "create", "--bundle"), "--bundle")


@pytest.mark.parametrize("args", [["start"], ["state"], ["delete"], ["pause"], ["resume"],
                                  ["kill"], ["create"], ["events"], ["update"],
                                  ["start", "a", "b"], ["kill", "a", "TERM", "extra"]])
def test_wrong_argument_count(kapsel, kroot, args):
    err = assert_one_line_error(run(kapsel, kroot, *args), f"{args[0]}: requires")
    if args == ["start"]:
        assert err == "kapsel: start: requires exactly 1 argument (container ID)"


def test_features(kapsel, kroot):
    r = run(kapsel, kroot, "features")
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)
    assert f["ociVersionMin"] == "1.0.0"
    assert f["ociVersionMax"] == "1.2.0"
    assert {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"} <= set(f["hooks"])
    assert {"ro", "nosuid", "rbind", "rprivate", "strictatime"} <= set(f["mountOptions"])
    lx = f["linux"]
    assert set(lx["namespaces"]) == {"cgroup", "ipc", "mount", "network", "pid", "time", "user",
                                     "uts"}
    assert lx["capabilities"][0] == "CAP_CHOWN"
    assert "CAP_SYS_ADMIN" in lx["capabilities"]
    assert "CAP_CHECKPOINT_RESTORE" in lx["capabilities"]
    assert lx["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                            "rdma": False}
    sc = lx["seccomp"]
    assert sc["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_NOTIFY"} <= set(sc["actions"])
    assert "SCMP_CMP_MASKED_EQ" in sc["operators"]
    assert {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64"} <= set(sc["archs"])
    assert set(sc["supportedFlags"]) <= set(sc["knownFlags"])
    for lsm in ("apparmor", "selinux", "intelRdt"):
        assert lx[lsm] == {"enabled": False}
    assert lx["mountExtensions"] == {"idmap": {"enabled": False}}
    assert "io.github.kapsel.version" in f["annotations"]


def test_spec(kapsel, kroot, tmp_path):
    r = run(kapsel, kroot, "spec", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert set(cfg) == RUNC_SPEC_KEYS
    assert cfg["ociVersion"] == "1.2.0"
    p = cfg["process"]
    assert p["terminal"] is True
    assert p["user"] == {"uid": 0, "gid": 0}
    assert p["args"] == ["sh"]
    assert p["cwd"] == "/"
    assert "TERM=xterm" in p["env"] and any(e.startswith("PATH=") for e in p["env"])
    assert p["noNewPrivileges"] is True
    for s in ("bounding", "effective", "permitted"):
        assert p["capabilities"][s] == RUNC_CAPS
    assert "inheritable" not in p["capabilities"]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in cfg["mounts"]] == RUNC_MOUNTS
    devpts = cfg["mounts"][2]
    assert devpts["type"] == "devpts" and "gid=5" in devpts["options"]
    lx = cfg["linux"]
    assert [n["type"] for n in lx["namespaces"]] == ["pid", "network", "ipc", "uts", "mount",
                                                      "cgroup"]
    assert lx["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert "/proc/kcore" in lx["maskedPaths"] and "/proc/sys" in lx["readonlyPaths"]
    assert "uidMappings" not in lx


def test_spec_refuses_to_overwrite(kapsel, kroot, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = run(kapsel, kroot, "spec", "-b", str(tmp_path))
    assert_one_line_error(r, "File config.json exists. Remove it first")
    assert (tmp_path / "config.json").read_text() == "{}"


@pytest.mark.parametrize("form", [["-b", "{}"], ["--bundle", "{}"], ["--bundle={}"],
                                  ["-bundle", "{}"], ["-bundle={}"]])
def test_spec_flag_forms(kapsel, kroot, tmp_path, form):
    r = run(kapsel, kroot, "spec", *[a.format(tmp_path) for a in form])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "config.json").exists()


def test_spec_in_current_directory(kapsel, kroot, tmp_path):
    r = run(kapsel, kroot, "spec", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "config.json").read_text())["hostname"] == "kapsel"


def test_spec_rootless(kapsel, kroot, tmp_path):
    r = run(kapsel, kroot, "spec", "--rootless", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    lx = cfg["linux"]
    types = [n["type"] for n in lx["namespaces"]]
    assert "user" in types and "network" not in types
    assert lx["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert lx["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in lx
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert mounts["/sys"]["type"] == "none" and mounts["/sys"]["source"] == "/sys"
    assert "rbind" in mounts["/sys"]["options"] and "ro" in mounts["/sys"]["options"]
    assert not any(o.startswith(("uid=", "gid=")) for m in cfg["mounts"]
                   for o in m.get("options", []))


def test_kill_unknown_signal(kapsel, kroot):
    for sig in ("FOO", "SIGFOO", "0", "65", "-9", "RTMIN+99", "9x", ""):
        assert_one_line_error(run(kapsel, kroot, "kill", "c1", sig),
                              f'kill: unknown signal "{sig}"')


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "sigterm", "Term", "9", "64", "RTMIN",
                                 "RTMIN+1", "SIGRTMAX-2", "CHLD", "CLD", "IOT"])
def test_kill_known_signal_reaches_the_container(kapsel, kroot, sig):
    err = assert_one_line_error(run(kapsel, kroot, "kill", "nosuch", sig), "nosuch")
    assert "unknown signal" not in err


@pytest.mark.parametrize("args", [["state"], ["delete"], ["start"], ["kill"], ["pause"],
                                  ["resume"], ["ps", "--format", "json"]])
def test_missing_container(kapsel, kroot, args):
    assert_one_line_error(run(kapsel, kroot, *args, "nosuch"), "nosuch")


@pytest.mark.parametrize("cid", ["../x", "a/b", "a\x01b", "a\nb", "..", ""])
def test_create_rejects_invalid_ids(kapsel, kroot, tmp_path, cid):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    run(kapsel, kroot, "spec", "-b", str(bundle))
    assert_one_line_error(run(kapsel, kroot, "create", "--bundle", str(bundle), cid))
    # Nothing was created, inside the state root or beside it ("../x").
    assert os.listdir(kroot) == []
    assert sorted(os.listdir(tmp_path)) == ["bundle", "state"]


def test_empty_list(kapsel, kroot):
    r = run(kapsel, kroot, "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert r.stdout.startswith("ID          PID         STATUS")
    r = run(kapsel, kroot, "list", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = run(kapsel, kroot, "list", "-q")
    assert r.returncode == 0 and r.stdout == ""
    assert_one_line_error(run(kapsel, kroot, "list", "--format", "yaml"), "yaml")


def test_exec_needs_a_command(kapsel, kroot):
    # podman's exec form: a usage error is podman's 125
    assert_one_line_error(run(kapsel, kroot, "exec", "c1"), "--process", code=125)


def test_bad_values(kapsel, kroot):
    assert_one_line_error(run(kapsel, kroot, "events", "--interval", "soon", "c1"), "soon")
    assert_one_line_error(run(kapsel, kroot, "events", "--interval", "0s", "c1"), "0s")
    assert_one_line_error(run(kapsel, kroot, "update", "--memory", "12q", "c1"), "12q")
    assert_one_line_error(run(kapsel, kroot, "update", "--pids-limit", "x", "c1"), "x")
    assert_one_line_error(run(kapsel, kroot, "create", "--preserve-fds", "-1", "c1"), "-1")


def test_log_format(kapsel, kroot, tmp_path):
    assert_one_line_error(run(kapsel, kroot, "--log-format", "xml", "list"), "xml")
    r = run(kapsel, kroot, "--log-format", "json", "state", "nosuch")
    assert r.returncode == 1
    line = json.loads(r.stderr)
    assert line["level"] == "error" and "nosuch" in line["msg"] and "time" in line

    log = tmp_path / "kapsel.log"
    r = run(kapsel, kroot, "--log", str(log), "--log-format=json", "state", "nosuch")
    assert_one_line_error(r, "nosuch")
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "nosuch" in last["msg"]


def test_systemd_cgroup_refused(kapsel, kroot, tmp_path):
    r = run(kapsel, kroot, "--systemd-cgroup", "create", "-b", str(tmp_path), "c1")
    assert_one_line_error(r, "--systemd-cgroup")
    r = run(kapsel, kroot, "--systemd-cgroup", "run", "-d", "-b", str(tmp_path), "c1")
    assert_one_line_error(r, "--systemd-cgroup")


def test_compat_globals_accepted(kapsel, kroot):
    r = run(kapsel, kroot, "--rootless", "false", "--debug", "list", "-q")
    assert r.returncode == 0, r.stderr
    assert "rootless" in r.stderr  # the debug line saying it is ignored
