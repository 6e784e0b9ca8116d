"""The runc lifecycle on real kernel interfaces: create/start/state/kill/delete, run, exec,
pause/resume, ps/list, and what a failed create must leave behind (nothing)."""
import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.root


def cgroup_dirs(cid):
    """Every cgroup directory named after the container, in any hierarchy."""
    found = []
    for top in os.listdir("/sys/fs/cgroup"):
        p = os.path.join("/sys/fs/cgroup", top, "kapsel", cid)
        if os.path.isdir(p):
            found.append(p)
    return found


def assert_nothing_left(kroot, cid):
    assert not os.path.exists(os.path.join(kroot, cid)), "state directory left behind"
    assert cgroup_dirs(cid) == [], "cgroup left behind"


def wait_status(kap, cid, want, timeout=10):
    end = time.time() + timeout
    st = None
    while time.time() < end:
        r = kap("state", cid)
        if r.returncode != 0:
            time.sleep(0.05)
            continue
        st = json.loads(r.stdout)["status"]
        if st == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{cid} never became {want} (last: {st})")


def test_run_prints_and_returns_status(kap, make_bundle, cid):
    r = kap("run", "--bundle", make_bundle(["echo", "hi"]), cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    r = kap("run", "--bundle", make_bundle(["sh", "-c", "exit 3"]), cid)
    assert r.returncode == 3


def test_run_killed_by_signal_is_128_plus_n(kap, make_bundle, cid):
    # The init of a pid namespace is immune to signals from inside it: kill from outside.
    p = subprocess.Popen([kap.binary, "--root", kap.root, "run", "--bundle",
                          make_bundle(["sleep", "1000"]), cid])
    wait_status(kap, cid, "running")
    kap("kill", cid, "KILL", check=True)
    assert p.wait(timeout=30) == 128 + 9


def test_lifecycle_states(kap, make_bundle, cid, kroot):
    b = make_bundle(["sleep", "1000"])
    kap("create", "--bundle", b, cid, check=True)
    st = kap.state(cid)
    assert st["status"] == "created" and st["id"] == cid and st["pid"] > 0
    assert st["bundle"] == b and st["ociVersion"].startswith("1.")
    assert "annotations" in st
    kap("start", cid, check=True)
    assert kap.state(cid)["status"] == "running"
    r = kap("start", cid)
    assert r.returncode != 0 and "running" in r.stderr
    r = kap("delete", cid)
    assert r.returncode != 0 and "--force" in r.stderr
    kap("kill", cid, "KILL", check=True)
    wait_status(kap, cid, "stopped")
    assert kap.state(cid)["pid"] == 0
    kap("delete", cid, check=True)
    assert_nothing_left(kroot, cid)


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", "15"])
def test_kill_signal_forms(kap, make_bundle, cid, sig):
    # pid 1 of a namespace only gets signals it handles: trap TERM.
    kap("run", "-d", "--bundle", make_bundle(
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]), cid, check=True)
    kap("kill", cid, sig, check=True)
    wait_status(kap, cid, "stopped")


def test_kill_all_and_delete_force(kap, make_bundle, cid, kroot):
    kap("run", "-d", "--bundle", make_bundle(["sh", "-c", "sleep 1000 & sleep 1000"]), cid,
        check=True)
    wait_status(kap, cid, "running")
    kap("delete", "--force", cid, check=True)
    assert_nothing_left(kroot, cid)


def test_pid1_hostname_and_rootfs_isolation(kap, make_bundle, cid):
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "echo $$; hostname; ls /; test -e /work && echo LEAK; true"]), cid)
    lines = r.stdout.split("\n")
    assert lines[0] == "1"
    assert lines[1] == "kapsel-test"
    assert "LEAK" not in r.stdout and "bin" in r.stdout


def test_default_dev(kap, make_bundle, cid):
    r = kap("run", "--bundle", make_bundle(["ls", "-l", "/dev/"]), cid, check=True)
    for name in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
                 "fd", "stdin", "stdout", "stderr"):
        assert name in r.stdout, name
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "echo x > /dev/null && head -c 4 /dev/zero | wc -c && readlink /dev/ptmx"]),
        cid)
    assert r.stdout.split() == ["4", "pts/ptmx"]


def test_devices_from_config(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/kmsg2", "type": "c", "major": 1, "minor": 11,
                                  "fileMode": 0o600, "uid": 0, "gid": 0}]
    r = kap("run", "--bundle", make_bundle(["stat", "-c", "%t:%T %a", "/dev/kmsg2"], edit),
            cid, check=True)
    assert r.stdout.strip() == "1:b 600"


def test_masked_and_readonly_paths(kap, make_bundle, cid):
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "wc -c < /proc/timer_list; ls /sys/firmware | wc -l;"
         " grep -c ' /proc/timer_list ' /proc/mounts;"
         " echo 1 > /proc/sys/kernel/domainname && echo WROTE; touch /x && echo ROOTRW; true"]),
        cid)
    out = r.stdout.split()
    # /proc/timer_list is masked by /dev/null (empty); /sys/firmware by an empty tmpfs.
    assert out[:3] == ["0", "0", "1"], r.stdout + r.stderr
    assert "WROTE" not in r.stdout and "ROOTRW" not in r.stdout
    assert "Read-only file system" in r.stderr


def test_bind_mount_ro_and_tmpfs_options(kap, make_bundle, cid, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("payload")

    def edit(c):
        c["mounts"].append({"destination": "/data", "type": "bind", "source": str(src),
                            "options": ["rbind", "ro", "nosuid"]})
        c["mounts"].append({"destination": "/small", "type": "tmpfs", "source": "tmpfs",
                            "options": ["size=1m", "mode=700", "noexec"]})
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "cat /data/f; echo; touch /data/g || echo RO; stat -c %a /small;"
         " grep ' /small ' /proc/mounts"], edit), cid)
    assert r.stdout.startswith("payload\nRO\n700\n"), r.stdout + r.stderr
    assert "noexec" in r.stdout and "size=1024k" in r.stdout
    assert not (src / "g").exists()


def test_mount_destination_symlink_cannot_escape(kap, make_bundle, cid, tmp_path, rootfs):
    # A rootfs whose /evil is a symlink to a host path: the mount must land inside the root.
    evil_root = tmp_path / "evilroot"
    subprocess.run(["cp", "-a", rootfs, str(evil_root)], check=True)
    target = tmp_path / "host-target"
    target.mkdir()
    os.symlink(str(target), evil_root / "evil")

    def edit(c):
        c["root"]["path"] = str(evil_root)
        c["root"]["readonly"] = False
        c["mounts"].append({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"})
    r = kap("run", "--bundle", make_bundle(["sh", "-c", "touch /evil/x/m && echo ok"], edit),
            cid)
    assert r.returncode == 0, r.stderr
    assert list(target.iterdir()) == [], "mount escaped the rootfs through a symlink"
    with open("/proc/self/mountinfo") as f:
        assert str(target) not in f.read()


def test_env_cwd_user_rlimits_caps(kap, make_bundle, cid):
    def edit(c):
        p = c["process"]
        p["env"].append("FOO=bar")
        p["cwd"] = "/tmp"
        p["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [5]}
        p["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
        p["capabilities"] = {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"],
                             "inheritable": ["CAP_KILL"]}
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; ulimit -n;"
         " grep -E 'CapBnd|CapEff|NoNewPrivs' /proc/self/status"], edit), cid)
    out = r.stdout.split("\n")
    assert out[:6] == ["bar", "/tmp", "65534", "65534", "65534 5", "512"], r.stdout + r.stderr
    assert "CapBnd:\t0000000000000020" in r.stdout
    assert "CapEff:\t0000000000000020" in r.stdout
    assert "NoNewPrivs:\t1" in r.stdout


def test_sysctl_and_domainname(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["domainname"] = "example.org"
    r = kap("run", "--bundle", make_bundle(
        ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname"], edit),
            cid, check=True)
    assert r.stdout.split() == ["1", "example.org"]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host = f.read().strip()
    # The host's value is whatever it was; the container's write went to its own netns.
    assert host in ("0", "1")


def test_user_namespace_mappings(kap, make_bundle, cid, rootfs):
    # The mapped root (host uid 100000) must be able to reach the rootfs: pytest's tmp dirs
    # are 0700, so use a world-traversable copy.
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="kapsel-userns-")
    os.chmod(top, 0o755)
    subprocess.run(["cp", "-a", rootfs, top + "/rootfs"], check=True)

    def edit(c):
        c["root"]["path"] = top + "/rootfs"
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["type"] not in ("sysfs", "mqueue")]
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"], edit), cid, check=True)
    pid = kap.state(cid)["pid"]
    with open(f"/proc/{pid}/status") as f:
        uid_line = [l for l in f if l.startswith("Uid:")][0]
    assert uid_line.split()[1] == "100000"
    r = kap("exec", cid, "id", "-u", check=True)
    assert r.stdout.strip() == "0"
    kap("delete", "--force", cid, check=True)
    shutil.rmtree(top)


def test_join_namespace_by_path(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    pid = kap.state(cid)["pid"]
    netns = f"/proc/{pid}/ns/net"

    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"] + [
            {"type": "network", "path": netns}]
    r = kap("run", "--bundle", make_bundle(["readlink", "/proc/self/ns/net"], edit),
            cid + "-b")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.readlink(netns)


def test_time_namespace_offsets(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    r = kap("run", "--bundle", make_bundle(["cat", "/proc/uptime"], edit), cid)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[0]) > 86400 * 365


def test_no_pivot(kap, make_bundle, cid):
    r = kap("run", "--no-pivot", "--bundle", make_bundle(["sh", "-c", "ls / | wc -l"]), cid)
    assert r.returncode == 0, r.stderr


def test_exec_joins_container(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    r = kap("exec", "--env", "A=1", "--cwd", "/tmp", cid, "sh", "-c",
            "echo $A; pwd; hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["1", "/tmp", "kapsel-test", "sleep 1000 "]
    r = kap("exec", cid, "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = kap("exec", cid, "no-such-binary")
    assert r.returncode != 0 and "no-such-binary" in r.stderr
    # the exec'd process is in the container's cgroup
    r = kap("exec", cid, "cat", "/proc/self/cgroup", check=True)
    assert "memory:/" in r.stdout


def test_exec_process_file_and_user(kap, make_bundle, cid, tmp_path):
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps({"args": ["id", "-u"], "cwd": "/", "user": {"uid": 1000,
                                                                        "gid": 1000},
                              "env": ["PATH=/bin"]}))
    r = kap("exec", "--process", str(pf), cid, check=True)
    assert r.stdout.strip() == "1000"
    r = kap("exec", "--user", "65534:65534", cid, "id", "-u", check=True)
    assert r.stdout.strip() == "65534"


def test_pause_resume_ps_list(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    pid = kap.state(cid)["pid"]
    kap("pause", cid, check=True)
    assert kap.state(cid)["status"] == "paused"
    r = kap("resume", cid + "-nope")
    assert r.returncode != 0
    kap("resume", cid, check=True)
    assert kap.state(cid)["status"] == "running"
    r = kap("resume", cid)
    assert r.returncode != 0 and "not paused" in r.stderr
    pids = json.loads(kap("ps", "--format", "json", cid, check=True).stdout)
    assert pid in pids
    r = kap("ps", cid, check=True)
    assert "PID" in r.stdout and "sleep" in r.stdout
    lst = json.loads(kap("list", "--format", "json", check=True).stdout)
    assert [c["id"] for c in lst] == [cid] and lst[0]["status"] == "running"
    assert kap("list", "-q", check=True).stdout.split() == [cid]
    assert cid in kap("list", check=True).stdout


def test_events_stats_and_update(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 32}}
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"], edit), cid, check=True)
    ev = json.loads(kap("events", "--stats", cid, check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"]["current"] >= 1
    kap("update", "--memory", "128m", "--pids-limit", "64", cid, check=True)
    with open(f"/sys/fs/cgroup/memory/kapsel/{cid}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 128 << 20
    with open(f"/sys/fs/cgroup/pids/kapsel/{cid}/pids.max") as f:
        assert f.read().strip() == "64"
    r = kap("update", "--resources", "-", cid, input='{"pids": {"limit": 99}}', check=True)
    with open(f"/sys/fs/cgroup/pids/kapsel/{cid}/pids.max") as f:
        assert f.read().strip() == "99"
    r = kap("update", "--resources", "-", cid, input='{"pids": {"limit": "x"}}')
    assert r.returncode != 0 and "pids.limit" in r.stderr


def test_cgroup_limits_applied_and_removed(kap, make_bundle, cid, kroot):
    def edit(c):
        c["linux"]["resources"] = {
            "memory": {"limit": 64 << 20},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 32},
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
        }
    kap("create", "--bundle", make_bundle(["sleep", "1000"], edit), cid, check=True)
    base = "/sys/fs/cgroup"
    rd = lambda p: open(os.path.join(base, p)).read().strip()
    assert rd(f"memory/kapsel/{cid}/memory.limit_in_bytes") == str(64 << 20)
    assert rd(f"cpu/kapsel/{cid}/cpu.shares") == "512"
    assert rd(f"cpu/kapsel/{cid}/cpu.cfs_quota_us") == "50000"
    assert rd(f"pids/kapsel/{cid}/pids.max") == "32"
    rules = rd(f"devices/kapsel/{cid}/devices.list").split("\n")
    assert "c 1:3 rwm" in rules and "a *:* rwm" not in rules and "c 1:1 rwm" not in rules
    pid = kap.state(cid)["pid"]
    assert str(pid) in rd(f"memory/kapsel/{cid}/cgroup.procs").split()
    kap("delete", "--force", cid, check=True)
    assert_nothing_left(kroot, cid)
    assert os.path.isdir(os.path.join(base, "memory")), "never remove what kapsel did not make"


def test_hooks(kap, make_bundle, cid, tmp_path):
    out = tmp_path / "hooks.log"

    def hook(name):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}.{name}"]}

    def edit(c):
        c["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime", "poststart",
                                            "poststop")}
        c["hooks"]["createContainer"] = [{"path": "/bin/true"}]
        c["hooks"]["startContainer"] = [{"path": "/bin/true"}]
        c["hooks"]["poststop"].append({"path": "/bin/false"})  # a warning, not a failure
    kap("run", "--bundle", make_bundle(["true"], edit), cid, check=True)
    for k in ("prestart", "createRuntime", "poststart", "poststop"):
        st = json.loads(open(f"{out}.{k}").read())
        assert st["id"] == cid and st["pid"] >= 0, k


def test_failing_prestart_hook_fails_create(kap, make_bundle, cid, kroot):
    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    r = kap("create", "--bundle", make_bundle(["sleep", "10"], edit), cid)
    assert r.returncode != 0 and "prestart" in r.stderr
    assert_nothing_left(kroot, cid)


def test_pid_file(kap, make_bundle, cid, tmp_path):
    pf = tmp_path / "pid"
    kap("create", "--pid-file", str(pf), "--bundle", make_bundle(["sleep", "1000"]), cid,
        check=True)
    assert int(pf.read_text()) == kap.state(cid)["pid"]


def test_console_socket_receives_pty(kap, make_bundle, cid, tmp_path):
    import array
    import socket
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def edit(c):
        c["process"]["terminal"] = True
    b = make_bundle(["sh", "-c", "tty; echo done"], edit)
    p = subprocess.Popen([kap.binary, "--root", kap.root, "create", "--console-socket", path,
                          "--bundle", b, cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = srv.accept()
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(4))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:4])
    assert p.wait(timeout=30) == 0, p.stderr.read()
    assert len(fds) == 1
    kap("start", cid, check=True)
    master = os.fdopen(fds[0], "rb", buffering=0)
    buf = b""
    end = time.time() + 10
    while b"done" not in buf and time.time() < end:
        try:
            buf += master.read(1024)
        except OSError:
            break
    assert b"/dev/pts/0" in buf or b"/dev/console" in buf, buf
    assert b"done" in buf


def test_run_terminal_attached(kap, make_bundle, cid):
    def edit(c):
        c["process"]["terminal"] = True
    r = kap("run", "--bundle", make_bundle(["sh", "-c", "tty; echo hi"], edit), cid)
    assert r.returncode == 0, r.stderr
    assert "hi" in r.stdout and "/dev/" in r.stdout


def test_state_survives_and_reports_stopped(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(["sh", "-c", "sleep 0.2"]), cid, check=True)
    wait_status(kap, cid, "stopped")
    assert [c["status"] for c in json.loads(kap("list", "-f", "json").stdout)] == ["stopped"]


def test_delete_force_after_runtime_killed_mid_create(kap, make_bundle, cid, kroot):
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]}
    p = subprocess.Popen([kap.binary, "--root", kap.root, "create", "--bundle",
                          make_bundle(["sleep", "1000"], edit), cid])
    end = time.time() + 10
    while time.time() < end and not cgroup_dirs(cid):
        time.sleep(0.02)
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert os.path.isdir(os.path.join(kroot, cid))
    assert kap.state(cid)["status"] == "stopped"
    kap("delete", "--force", cid, check=True)
    assert_nothing_left(kroot, cid)


def test_events_reports_oom(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["resources"] = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}
    # busybox tail keeps a newline-free stream in memory: it grows until the OOM killer acts.
    # The hogs raise their oom_score_adj so that no OOM kill, a second one included, takes the
    # init shell.
    kap("run", "-d", "--bundle", make_bundle(
        ["sh", "-c", "sleep 1; (echo 500 > /proc/self/oom_score_adj; exec head -c 400m /dev/zero)"
         " | (echo 1000 > /proc/self/oom_score_adj; exec tail) >/dev/null; sleep 1000"], edit),
        cid, check=True)
    p = subprocess.Popen([kap.binary, "--root", kap.root, "events", "--interval", "1s", cid],
                         stdout=subprocess.PIPE, text=True)
    kinds = []
    try:
        end = time.time() + 30
        while time.time() < end:
            line = p.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            assert ev["id"] == cid
            kinds.append(ev["type"])
            if ev["type"] == "oom":
                break
    finally:
        p.kill()
        p.wait()
    assert "stats" in kinds and "oom" in kinds, kinds
    assert kap.state(cid)["status"] == "running", "the host and the container init survive"


def test_lsm_fields_ignored_without_lsm(kap, make_bundle, cid, tmp_path):
    if os.path.exists("/sys/kernel/security/apparmor") or os.path.exists("/sys/fs/selinux"):
        pytest.skip("host runs AppArmor or SELinux: the fields are applied, not ignored")

    def edit(c):
        c["process"]["apparmorProfile"] = "kapsel-test"
        c["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
        c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0"
    log = tmp_path / "debug.log"
    r = kap("--debug", "--log", str(log), "run", "--bundle", make_bundle(["true"], edit), cid)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert "apparmorProfile" in text and "selinuxLabel" in text


def test_cgroup_v1_more_resources(kap, make_bundle, cid, kroot):
    st = os.stat("/dev/vda") if os.path.exists("/dev/vda") else None

    def edit(c):
        res = {
            "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20,
                       "disableOOMKiller": True},
            "cpu": {"cpus": "0", "mems": "0"},
        }
        if st:
            res["blockIO"] = {"throttleReadBpsDevice": [
                {"major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                 "rate": 1048576}]}
        c["linux"]["resources"] = res
    kap("create", "--bundle", make_bundle(["sleep", "1000"], edit), cid, check=True)
    rd = lambda p: open(os.path.join("/sys/fs/cgroup", p)).read().strip()
    assert rd(f"memory/kapsel/{cid}/memory.soft_limit_in_bytes") == str(32 << 20)
    assert rd(f"memory/kapsel/{cid}/memory.memsw.limit_in_bytes") == str(96 << 20)
    assert "oom_kill_disable 1" in rd(f"memory/kapsel/{cid}/memory.oom_control")
    assert rd(f"cpuset/kapsel/{cid}/cpuset.cpus") == "0"
    assert rd(f"cpuset/kapsel/{cid}/cpuset.mems") == "0"
    if st:
        assert rd(f"blkio/kapsel/{cid}/blkio.throttle.read_bps_device") == \
            f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} 1048576"
    kap("delete", "--force", cid, check=True)
    assert_nothing_left(kroot, cid)


def test_cgroups_path_absolute_and_relative(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["cgroupsPath"] = f"/kapsel-test-parent/{cid}"
        c["linux"]["resources"] = {"pids": {"limit": 10}}
    kap("create", "--bundle", make_bundle(["sleep", "1000"], edit), cid, check=True)
    assert open(f"/sys/fs/cgroup/pids/kapsel-test-parent/{cid}/pids.max").read().strip() == "10"
    kap("delete", "--force", cid, check=True)
    # the parent was created by kapsel too, so it is removed with the container
    assert not os.path.exists("/sys/fs/cgroup/pids/kapsel-test-parent")


def test_hugepage_limits_error_or_applied(kap, make_bundle, cid, kroot):
    def edit(c):
        c["linux"]["resources"] = {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]}
    r = kap("create", "--bundle", make_bundle(["sleep", "1000"], edit), cid)
    if r.returncode == 0:
        found = [p for p in ("hugetlb", "unified") if os.path.exists(
            f"/sys/fs/cgroup/{p}/kapsel/{cid}")]
        assert found
        kap("delete", "--force", cid, check=True)
    else:
        # hybrid host whose cgroup2 root does not delegate hugetlb: a clear error, no leftovers
        assert "hugepageLimits" in r.stderr, r.stderr
        assert_nothing_left(kroot, cid)


def test_preserve_fds(kap, make_bundle, cid, tmp_path):
    f = tmp_path / "passed"
    f.write_text("through fd 3\n")
    fd = os.open(str(f), os.O_RDONLY)
    try:
        if fd != 3:
            os.dup2(fd, 3)
        r = kap("run", "--preserve-fds", "1", "--bundle",
                make_bundle(["sh", "-c", "cat <&3; ls /proc/self/fd | wc -l"]), cid,
                pass_fds=(3,))
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "through fd 3"
    # 0,1,2,3 and the fd ls itself opens
    assert int(lines[1]) == 5


def test_no_fd_leaks_without_preserve(kap, make_bundle, cid):
    r = kap("run", "--bundle", make_bundle(["ls", "/proc/self/fd"]), cid, check=True)
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory fd


def test_rootfs_propagation(kap, make_bundle, cid):
    def edit(c):
        c["linux"]["rootfsPropagation"] = "rshared"
    r = kap("run", "--bundle", make_bundle(["cat", "/proc/self/mountinfo"], edit), cid,
            check=True)
    root_line = [l for l in r.stdout.splitlines() if l.split()[4] == "/"][0]
    assert "shared:" in root_line, root_line


def test_runs_the_config_kapsel_spec_writes(kap, cid, tmp_path, rootfs):
    # runc's default config lists ambient caps with no inheritable set: runc and crun skip
    # what cannot be raised, and so does kapsel.
    b = tmp_path / "specbundle"
    b.mkdir()
    subprocess.run([kap.binary, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", "grep CapEff /proc/self/status"]
    cfg["root"]["path"] = rootfs
    (b / "config.json").write_text(json.dumps(cfg))
    r = kap("run", "--bundle", str(b), cid)
    assert r.returncode == 0, r.stderr
    assert "CapEff:\t0000000020000420" in r.stdout  # AUDIT_WRITE, KILL, NET_BIND_SERVICE


def test_runtime_binary_unwritable_from_container_processes(kap, make_bundle, cid):
    # CVE-2019-5736: the created init still runs kapsel's code; its /proc/PID/exe must lead to
    # a read-only view of the binary, never to the writable host file.
    import errno
    kap("create", "--bundle", make_bundle(["sleep", "100"]), cid, check=True)
    pid = kap.state(cid)["pid"]
    # The exploit's sequence: hold an O_PATH handle while kapsel runs, reopen it for writing
    # once no process executes the file any more (ETXTBSY no longer protects it then).
    handle = os.open(f"/proc/{pid}/exe", os.O_PATH)
    try:
        assert os.statvfs(f"/proc/self/fd/{handle}").f_flag & os.ST_RDONLY
        kap("delete", "--force", cid, check=True)
        with pytest.raises(OSError) as e:
            os.open(f"/proc/self/fd/{handle}", os.O_WRONLY)
        assert e.value.errno == errno.EROFS
    finally:
        os.close(handle)
    # ... and the binary on disk is untouched and still writable by its owner
    assert os.access(kap.binary, os.W_OK)


def test_exec_cap_adds_capability(kap, make_bundle, cid):
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"]), cid, check=True)
    r = kap("exec", "--cap", "CAP_SYS_ADMIN", cid, "grep", "CapEff", "/proc/self/status",
            check=True)
    assert int(r.stdout.split()[1], 16) & (1 << 21)
    r = kap("exec", cid, "grep", "CapEff", "/proc/self/status", check=True)
    assert not int(r.stdout.split()[1], 16) & (1 << 21)
    r = kap("exec", "--cap", "CAP_FLYING", cid, "true")
    assert r.returncode != 0 and "CAP_FLYING" in r.stderr
