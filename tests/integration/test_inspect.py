"""`kapsel inspect` of containers and images, `--format` templates as podman takes them (on
inspect, ps, images, network ls, version and info), `kapsel version` and `kapsel info`: each
with what must fail (unknown field, bad template, missing object) and its exit status, 125.
Every kapsel call gets a private --store and --root; the network test runs inside a network
namespace of its own, as test_network.py does."""
import fcntl
import json
import os
import re
import subprocess
import shutil
import time
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root]

EXIT_ENGINE = 125


class K:
    def __init__(self, binary, store, root, prefix=()):
        self.binary, self.store, self.root, self.prefix = binary, store, root, list(prefix)

    def __call__(self, *args, check=False, timeout=60):
        return clients.run(self.prefix + [self.binary, "--store", self.store, "--root",
                                          self.root] + [str(a) for a in args],
                           check=check, timeout=timeout)

    def json(self, *args):
        r = self(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def k(kapsel, tmp_path):
    store, root = tmp_path / "store", tmp_path / "state"
    root.mkdir()
    runner = K(kapsel, str(store), str(root))
    r = runner("run", "--rm", "busybox", "true")
    assert r.returncode == 0, f"the embedded busybox image does not run: {r.stderr}"
    yield runner
    cdir = os.path.join(str(store), "containers")
    for c in os.listdir(cdir) if os.path.isdir(cdir) else []:
        runner("rm", "-f", c)


@pytest.fixture
def name():
    return "kt-" + uuid.uuid4().hex[:10]


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def fails(r, *words):
    assert r.returncode == EXIT_ENGINE, (r.returncode, r.stdout, r.stderr)
    line = one_line(r.stderr)
    for w in words:
        assert w in line, line
    return line


def running(k, name, *flags):
    r = k("run", "-d", "--name", name, *flags, "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr


# ---- inspect: containers ----

def test_inspect_running_container(k, name, tmp_path):
    running(k, name, "-e", "FOO=bar", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "100",
            "-v", f"{tmp_path}:/mnt:ro", "--hostname", "box")
    docs = k.json("inspect", name)
    assert isinstance(docs, list) and len(docs) == 1
    c = docs[0]
    assert c["Id"] == name and c["Name"] == name
    assert c["Path"] == "sleep" and c["Args"] == ["1000"]
    st = c["State"]
    assert st["Status"] == "running" and st["Running"] is True and st["Paused"] is False
    assert st["Pid"] > 0 and os.path.exists(f"/proc/{st['Pid']}")
    assert st["ExitCode"] == 0 and st["FinishedAt"].startswith("0001-")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", c["Created"])
    assert re.match(r"[0-9a-f]{64}$", c["Image"])
    assert c["ImageName"] == "docker.io/library/busybox:latest"
    cfg = c["Config"]
    assert "FOO=bar" in cfg["Env"] and cfg["Hostname"] == "box"
    assert cfg["Cmd"] == ["sleep", "1000"] and cfg["WorkingDir"] == "/"
    assert isinstance(cfg["Labels"], dict) and cfg["User"] == ""
    hc = c["HostConfig"]
    assert hc["Memory"] == 64 << 20 and hc["NanoCpus"] == 500_000_000
    assert hc["PidsLimit"] == 100
    assert hc["Binds"] == [f"{tmp_path}:/mnt:ro"]
    assert hc["NetworkMode"] == "none"
    assert c["NetworkSettings"]["IPAddress"] == "" and c["NetworkSettings"]["Networks"] == {}
    # --format json is the same document
    again = k.json("inspect", "--format", "json", name)
    assert len(again) == 1 and again[0]["State"]["Pid"] == st["Pid"]


def test_inspect_format_fields(k, name):
    running(k, name, "-e", "FOO=bar")
    r = k("inspect", "--format", "{{.State.Pid}}", name)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.strip())
    assert pid > 0 and os.path.exists(f"/proc/{pid}")
    assert r.stdout == f"{pid}\n"
    # the pid is the container's: its environment has FOO=bar
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert b"FOO=bar" in f.read().split(b"\0")
    assert k("inspect", "-f", "{{.Name}}", name).stdout == f"{name}\n"
    # literal text around several actions
    r = k("inspect", "-f", "pid={{.State.Pid}} name={{.Name}} up={{.State.Running}}!", name)
    assert r.stdout == f"pid={pid} name={name} up=true!\n", r.stderr
    # Go's %v of a list, json of an object
    env = k("inspect", "-f", "{{.Config.Env}}", name).stdout
    assert env.startswith("[") and "FOO=bar" in env and env.endswith("]\n")
    cfg = json.loads(k("inspect", "-f", "{{json .Config}}", name).stdout)
    assert "FOO=bar" in cfg["Env"] and cfg["Cmd"] == ["sleep", "1000"]
    # control actions and functions podman users write
    r = k("inspect", "-f", "{{range .Config.Env}}{{.}}\\n{{end}}", name)
    assert "FOO=bar" in r.stdout.splitlines(), r.stdout
    assert k("inspect", "-f", "{{if .State.Running}}up{{else}}down{{end}}",
             name).stdout == "up\n"
    assert k("inspect", "-f", "{{.State.Status | upper}}", name).stdout == "RUNNING\n"
    assert k("inspect", "-f", "{{join .Args \",\"}}", name).stdout == "1000\n"
    # one line per object, in the order given
    out = k("inspect", "-f", "{{.Name}}", name, name).stdout
    assert out == f"{name}\n{name}\n"


def test_inspect_exit_code(k, name):
    r = k("run", "--name", name, "busybox", "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    assert k("inspect", "--format", "{{.State.ExitCode}}", name).stdout == "3\n"
    c = k.json("inspect", name)[0]
    st = c["State"]
    assert st["Status"] == "exited" and st["Running"] is False and st["Pid"] == 0
    assert st["ExitCode"] == 3 and not st["FinishedAt"].startswith("0001-")
    assert c["Path"] == "sh" and c["Args"] == ["-c", "exit 3"]


def test_inspect_unknown_field(k, name):
    running(k, name)
    r = k("inspect", "--format", "{{.State.Pidd}}", name)
    fails(r, "Pidd", "1:3")
    assert r.stdout == ""
    fails(k("inspect", "--format", "x {{.Nope.Deeper}}", name), "Nope", "1:5")
    fails(k("inspect", "--format", "{{.Name.Sub}}", name), "Sub", "string")
    fails(k("inspect", "--format", "{{nosuchfunc .Name}}", name), "nosuchfunc")


@pytest.mark.parametrize("tmpl,words", [
    ("{{.State.Pid", ["unclosed action", "1:1"]),
    ("ok {{if .State.Running}}x", ["{{if}} has no {{end}}", "1:4"]),
    ("{{end}}", ["{{end}} without"]),
    ("{{\"abc}}", ["unterminated string"]),
    ("{{.Name .Id}}", ["non-function"]),
    ("{{}}", ["missing value"]),
])
def test_inspect_malformed_template(k, name, tmpl, words):
    running(k, name)
    r = k("inspect", "--format", tmpl, name)
    fails(r, "template", *words)
    assert r.stdout == ""


def test_inspect_missing(k, name):
    r = k("inspect", "no-such-" + name)
    fails(r, f'"no-such-{name}"', "no such object")
    r = k("inspect", "--format", "{{.Name}}", "no-such-" + name)
    fails(r, f"no-such-{name}")
    fails(k("inspect", "--type", "container", "busybox"), "no such container busybox")
    fails(k("inspect", "--type", "image", name), name)
    fails(k("inspect", "--type", "volume", name), "--type", "volume")
    fails(k("inspect"), "requires at least 1 argument")
    # the ones that exist are still printed, the status says one was missing
    running(k, name)
    r = k("inspect", "-f", "{{.Name}}", name, "no-such-" + name)
    assert r.returncode == EXIT_ENGINE and r.stdout == f"{name}\n"
    assert f"no-such-{name}" in one_line(r.stderr)


# ---- inspect: images ----

def test_inspect_image(k):
    via_image = k.json("image", "inspect", "busybox")
    img = k.json("inspect", "busybox")
    assert img == via_image, "inspect and image inspect share one document"
    img = img[0]
    assert re.match(r"[0-9a-f]{64}$", img["Id"])
    assert img["RepoTags"] == ["docker.io/library/busybox:latest"]
    assert img["Labels"] == {} and img["Os"] == "linux"
    assert k.json("inspect", "--type", "image", "busybox") == via_image
    assert k("inspect", "-t", "image", "-f", "{{.Os}}/{{.Architecture}}",
             "busybox").stdout == "linux/amd64\n"
    assert k("image", "inspect", "-f", "{{index .RepoTags 0}}",
             "busybox").stdout == "docker.io/library/busybox:latest\n"
    assert k("inspect", "-f", "{{.Config.Cmd}}", "busybox").stdout == "[sh]\n"
    fails(k("inspect", "-f", "{{.Config.Nope}}", "busybox"), "Nope")
    # a container named like an image is found first, as podman does; --type picks
    running(k, "busybox")
    assert k("inspect", "-f", "{{.Name}}", "busybox").stdout == "busybox\n"
    assert k("inspect", "-t", "image", "-f", "{{.Os}}", "busybox").stdout == "linux\n"


def test_inspect_image_labels_and_exposed_ports(k, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        "FROM busybox\nLABEL org.example.a=one b=two\nEXPOSE 8080 53/udp\n")
    r = k("build", "-q", "-t", "labelled", str(ctx), timeout=120)
    assert r.returncode == 0, r.stderr
    img = k.json("inspect", "localhost/labelled")[0]
    assert img["Labels"] == {"org.example.a": "one", "b": "two"}
    assert img["Config"]["Labels"] == img["Labels"]
    assert img["Config"]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    r = k("inspect", "-f", '{{index .Labels "org.example.a"}} {{len .Config.ExposedPorts}}',
          "localhost/labelled")
    assert r.stdout == "one 2\n", r.stderr


# ---- --format on the list commands ----

def test_ps_format(k, name):
    running(k, name)
    lst = k.json("ps", "--format", "json")
    assert isinstance(lst, list)
    mine = [c for c in lst if name in c["Names"]]
    assert len(mine) == 1 and mine[0]["State"] == "running"
    r = k("ps", "--format", "{{.Names}} {{.State}} {{.Image}}")
    assert f"{name} running busybox" in r.stdout.splitlines(), (r.stdout, r.stderr)
    r = k("ps", "-a", "--format", "{{.ID}}\\t{{.Command}}")
    assert f"{name}\tsleep 1000" in r.stdout.splitlines()
    # "table TEMPLATE": a header from the field names, then the rows
    lines = k("ps", "--format", "table {{.Names}}\\t{{.State}}").stdout.splitlines()
    assert lines[0] == "NAMES\tSTATE" and f"{name}\trunning" in lines[1:], lines
    fails(k("ps", "--format", "{{.Nope}}"), "Nope")
    fails(k("ps", "--format", "{{.Names"), "unclosed action")
    r = k("ps", "--format", "yaml")
    assert r.returncode != 0 and "yaml" in one_line(r.stderr)


def test_images_format(k):
    assert any("docker.io/library/busybox:latest" in i["Names"]
               for i in k.json("images", "--format", "json"))
    r = k("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("docker.io/library/busybox:")]
    assert len(line) == 1 and re.match(r"\S+ [0-9a-f]{12}$", line[0])
    fails(k("images", "--format", "{{.Nope}}"), "Nope")
    fails(k("images", "--format", "{{if}}"), "template")


def have(cmd):
    return shutil.which(cmd) is not None or os.path.exists(f"/usr/sbin/{cmd}") or \
        os.path.exists(f"/sbin/{cmd}")


@pytest.fixture
def netk(kapsel, tmp_path):
    """kapsel inside a network namespace of the test's own (nothing touches the host's)."""
    if not (have("ip") and have("nsenter") and have("nft")):
        pytest.skip("needs iproute2, util-linux nsenter and nftables")
    ns = "kt-insp-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    store, root = tmp_path / "nstore", tmp_path / "nstate"
    root.mkdir()
    runner = K(kapsel, str(store), str(root), prefix=["nsenter", f"--net=/run/netns/{ns}"])
    yield runner
    cdir = os.path.join(str(store), "containers")
    for c in os.listdir(cdir) if os.path.isdir(cdir) else []:
        runner("rm", "-f", c)
    ndir = os.path.join(str(store), "networks")
    for f in os.listdir(ndir) if os.path.isdir(ndir) else []:
        if f.endswith(".dns.pid"):
            try:
                os.kill(int(open(os.path.join(ndir, f)).read()), 9)
            except (OSError, ValueError):
                pass
    subprocess.run(["ip", "netns", "del", ns])


def test_network_ls_format_and_container_networks(netk, name):
    r = netk("network", "create", "--subnet", "10.123.7.0/24", "insp")
    assert r.returncode == 0, r.stderr
    r = netk("network", "ls", "--format", "{{.Name}} {{.Driver}}")
    assert r.returncode == 0, r.stderr
    assert "insp bridge" in r.stdout.splitlines() and "kapsel bridge" in r.stdout.splitlines()
    assert {n["name"] for n in netk.json("network", "ls", "--format", "json")} >= {"insp"}
    fails(netk("network", "ls", "--format", "{{.Nope}}"), "Nope")
    r = netk("run", "-d", "--name", name, "--net", "insp", "-p", "18080:80", "busybox",
             "sleep", "1000")
    assert r.returncode == 0, r.stderr
    c = netk.json("inspect", name)[0]
    assert c["HostConfig"]["NetworkMode"] == "insp"
    ns = c["NetworkSettings"]
    assert ns["IPAddress"].startswith("10.123.7.") and ns["Gateway"] == "10.123.7.1"
    assert ns["Networks"]["insp"]["IPAddress"] == ns["IPAddress"]
    assert ns["Networks"]["insp"]["IPPrefixLen"] == 24
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}
    r = netk("inspect", "-f", "{{.NetworkSettings.Networks.insp.IPAddress}}", name)
    assert r.stdout.strip() == ns["IPAddress"], r.stderr


# ---- version and info ----

def test_version(k):
    v = k.json("version", "--format", "json")["Client"]
    first = k("--version").stdout.splitlines()[0]
    assert first == f"kapsel version {v['Version']}"
    assert v["OsArch"] == "linux/amd64" and v["Os"] == "linux"
    assert re.match(r"[0-9a-f]{7,40}$|$", v["GitCommit"])
    assert v["Built"] > 0 and v["BuiltTime"]
    assert k("version", "--format", "{{.Client.Version}}").stdout == v["Version"] + "\n"
    text = k("version").stdout
    assert f"Version:      {v['Version']}" in text and "OS/Arch:      linux/amd64" in text
    fails(k("version", "--format", "{{.Client.Nope}}"), "Nope")
    fails(k("version", "extra"), "requires exactly 0 arguments")


def cgroup_layout():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    with open("/proc/self/mountinfo") as f:
        if any(ln.split()[4] == "/sys/fs/cgroup/unified" for ln in f):
            return "hybrid"
    return "v1"


def kvm_works():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, 0xAE00) == 12  # KVM_GET_API_VERSION
    finally:
        os.close(fd)


def test_info(k, name):
    running(k, name)
    r = k("run", "--name", name + "x", "busybox", "true")
    assert r.returncode == 0, r.stderr
    info = k.json("info", "--format", "json")
    h = info["host"]
    assert h["kernel"] == os.uname().release and h["os"] == "linux" and h["arch"] == "amd64"
    assert h["cpus"] == os.cpu_count()
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    assert abs(h["memTotal"] - total_kb * 1024) < 1 << 20
    assert h["cgroupVersion"] == cgroup_layout() and h["cgroupManager"] == "cgroupfs"
    assert h["security"]["rootless"] is False
    assert h["security"]["seccompEnabled"] is True
    assert h["kvm"]["available"] is kvm_works()
    st = info["store"]
    assert st["graphRoot"] == k.store and st["runRoot"] == k.root
    assert st["imageStore"]["number"] == 1
    cs = st["containerStore"]
    assert (cs["number"], cs["running"], cs["stopped"]) == (2, 1, 1)
    assert k("info", "--format", "{{.Host.Kernel}}").stdout == os.uname().release + "\n"
    assert k("info", "-f", "{{.store.containerStore.number}}").stdout == "2\n"
    text = k("info").stdout
    assert f"kernel: {os.uname().release}" in text and f"graphRoot: {k.store}" in text
    fails(k("info", "--format", "{{.Host.Nope}}"), "Nope")
    fails(k("info", "--format", "{{range}}"), "template")
