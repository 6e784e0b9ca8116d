"""Exit statuses as podman's and runc's callers read them: podman's commands exit 125 for
kapsel's own errors, usage errors included (podman(1) "Exit Codes"); runc's commands keep
runc's 1, which podman, containerd and CRI-O expect from their runtime. Every call gets a
private --root and --store and names objects that do not exist, so nothing here touches
the host."""
import subprocess

import pytest

ENGINE = 125

# podman's commands: (a usage error, a missing object or otherwise failing call).
PODMAN = {
    "stop": (["stop", "--bogus", "kt-nx"], ["stop", "kt-nx"]),
    "rm": (["rm", "--bogus", "kt-nx"], ["rm", "kt-nx"]),
    "cp": (["cp", "kt-nx:/a"], ["cp", "kt-nx:/a", "{tmp}/x"]),
    "top": (["top"], ["top", "kt-nx"]),
    "stats": (["stats", "--interval", "x"], ["stats", "--no-stream", "kt-nx"]),
    "system": (["system"], ["system", "nosuch"]),
    "system df": (["system", "df", "extra"], ["system", "df", "--format", "yaml"]),
    "wait": (["wait", "--bogus", "kt-nx"], ["wait", "kt-nx"]),
    "rename": (["rename", "kt-nx"], ["rename", "kt-nx", "kt-ny"]),
    "restart": (["restart", "--bogus", "kt-nx"], ["restart", "kt-nx"]),
    "attach": (["attach"], ["attach", "kt-nx"]),
    "inspect": (["inspect", "--bogus", "kt-nx"], ["inspect", "kt-nx"]),
    "version": (["version", "--bogus"], ["version", "--format", "{{.Nope"]),
    "info": (["info", "--bogus"], ["info", "--format", "{{.Nope"]),
    "volume": (["volume"], ["volume", "inspect", "kt-nx"]),
    "volume rm": (["volume", "rm"], ["volume", "rm", "kt-nx"]),
    "port": (["port", "--bogus", "kt-nx"], ["port", "kt-nx"]),
    "images": (["images", "extra"], ["images", "--format", "{{.Nope"]),
    "push": (["push", "--chunk-size", "x", "kt-nx"], ["push", "kt-nx:1"]),
    "build": (["build", "--bogus", "{tmp}"], ["build", "{tmp}/nodir"]),
    "tag": (["tag", "kt-nx"], ["tag", "kt-nx", "kt-ny"]),
    "untag": (["untag", "--bogus", "kt-nx"], ["untag", "kt-nx"]),
    "history": (["history"], ["history", "kt-nx"]),
    "commit": (["commit", "--bogus", "kt-nx"], ["commit", "kt-nx", "kt-img"]),
    "network": (["network"], ["network", "rm", "kt-nx"]),
    "login": (["login"], ["login", "--bogus", "kt-nx.example"]),
    "logout": (["logout", "--bogus"], ["logout", "kt-nx.example"]),
    "save": (["save"], ["save", "-o", "{tmp}/o.tar", "kt-nx"]),
    "prune": (["prune", "--bogus"], ["prune", "extra"]),
    "completion": (["completion"], ["completion", "nosh"]),
    # ps with no ID lists (podman's); ps ID is runc's (below)
    "ps (list)": (["ps", "--bogus"], ["ps", "-a", "--format", "{{.Nope"]),
    "ps (list) format": (["ps", "--format", "yaml"], ["ps", "-q", "--format", "{{.Nope"]),
}

# runc's commands: the same kinds of failure keep runc's 1.
RUNC = [
    ["create", "--bogus", "kt-nx"],
    ["create", "--bundle", "{tmp}/nob", "kt-nx"],
    ["run", "--bundle", "{tmp}/nob", "kt-nx"],
    ["start", "kt-nx"],
    ["state"],
    ["state", "kt-nx"],
    ["kill", "kt-nx", "KILL"],
    ["delete", "kt-nx"],
    ["list", "--bogus"],
    ["pause", "kt-nx"],
    ["resume", "kt-nx"],
    ["exec", "--process", "{tmp}/nop", "kt-nx"],
    ["update", "--memory", "12q", "kt-nx"],
    ["events", "kt-nx"],
    ["features", "--bogus"],
    ["spec", "--bogus"],
    ["ps", "kt-nx"],
    ["ps", "--bogus", "kt-nx"],
    ["ps", "kt-nx", "--format", "yaml"],
    ["ps", "--format", "yaml", "kt-nx"],
]


@pytest.fixture
def kx(kapsel, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "store").mkdir(mode=0o700)

    def run(args):
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        return subprocess.run([kapsel, "--root", tmp_path / "state", "--store",
                               tmp_path / "store", *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
    return run


def reported(r):
    """Exactly one error line from kapsel (a bare parent command prints its usage)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kapsel:")]
    return len(lines) == 1 or r.stderr.startswith("Usage:")


@pytest.mark.parametrize("cmd", sorted(PODMAN))
def test_podman_command_errors_exit_125(kx, cmd):
    for args in PODMAN[cmd]:
        r = kx(args)
        assert r.returncode == ENGINE, (args, r.returncode, r.stderr)
        assert reported(r), (args, r.stderr)


@pytest.mark.parametrize("args", RUNC, ids=lambda a: " ".join(a))
def test_runc_command_errors_exit_1(kx, args):
    r = kx(args)
    assert r.returncode == 1, (args, r.returncode, r.stderr)
    assert reported(r), (args, r.stderr)


def test_help_still_exits_0(kx):
    for args in (["stop", "--help"], ["volume", "--help"], ["state", "--help"]):
        assert kx(args).returncode == 0, args


def test_man_pages_say_which_status(kapsel, tmp_path):
    r = subprocess.run([kapsel, "__man", tmp_path, tmp_path / "stamp"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    def exit_status(page):
        text = (tmp_path / page).read_text()
        return text.split(".SH EXIT STATUS\n", 1)[1].split(".SH", 1)[0]
    # a podman command and a subcommand, which takes its parent's status
    for page in ("kapsel-stop.1", "kapsel-volume-rm.1", "kapsel-system-df.1"):
        assert "125 when kapsel fails, usage errors included" in exit_status(page), page
    for page in ("kapsel-state.1", "kapsel-kill.1"):
        assert "125 when kapsel fails" not in exit_status(page), page
