"""Acceptance: podman drives kapsel as its OCI runtime (`podman --runtime kapsel`).

Every podman call uses private storage (--root/--runroot/--tmpdir under a temp dir) and a
generated containers.conf (clients.podman_containers_conf, also shown in docs/clients.md); the
image is a busybox rootfs imported with `podman import`, so no registry and no network."""
import json
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root, pytest.mark.podman]

IMAGE = clients.IMAGE


@pytest.fixture(scope="session")
def podman(kapsel, tmp_path_factory):
    clients.require("podman", "conmon")
    base = str(tmp_path_factory.mktemp("podman"))
    pm = clients.Podman(base, kapsel)
    try:
        pm.import_image(str(tmp_path_factory.mktemp("podman-image")))
        yield pm
    finally:
        pm.cleanup()


@pytest.fixture
def name(podman):
    n = "kt-" + uuid.uuid4().hex[:10]
    yield n
    podman("rm", "--force", "--time", "0", n)


def status(podman, n):
    r = podman("ps", "-a", "--filter", f"name=^{n}$", "--format", "{{.Status}}", check=True)
    return r.stdout.strip()


# A shell that exits on SIGTERM (pid 1 ignores signals it has no handler for).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]


def test_run_rm_echo(podman):
    r = podman("run", "--rm", IMAGE, "echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"


def test_run_exit_code(podman):
    r = podman("run", "--rm", IMAGE, "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr


def test_detached_lifecycle(podman, name, kapsel):
    r = podman("run", "-d", "--name", name, IMAGE, *SLEEPER)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()

    r = podman("exec", name, "echo", "hi2")
    assert (r.returncode, r.stdout) == (0, "hi2\n"), r.stderr
    r = podman("exec", name, "sh", "-c", "exit 5")
    assert r.returncode == 5, r.stderr

    r = podman("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}", check=True)
    assert any(line.split()[1] == name and " Up " in f" {line} "
               for line in r.stdout.splitlines()), r.stdout

    r = podman("top", name, "pid", "args")
    assert r.returncode == 0, r.stderr
    assert "sleep 1000" in r.stdout

    r = podman("pause", name)
    assert r.returncode == 0, r.stderr
    assert status(podman, name) == "Paused"
    r = podman("inspect", "--format", "{{.State.Status}}", name, check=True)
    assert r.stdout.strip() == "paused"
    r = podman("unpause", name)
    assert r.returncode == 0, r.stderr
    assert status(podman, name).startswith("Up")
    r = podman("exec", name, "true")
    assert r.returncode == 0, r.stderr

    r = podman("stop", "--time", "10", name)
    assert r.returncode == 0, r.stderr
    assert status(podman, name).startswith("Exited (0)")

    r = podman("rm", name)
    assert r.returncode == 0, r.stderr
    assert status(podman, name) == ""
    # the runtime's state went with it
    r = clients.run([kapsel, "list", "-q"])
    assert cid not in r.stdout.split()


def test_kill(podman, name):
    r = podman("run", "-d", "--name", name, IMAGE, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = podman("kill", name)
    assert r.returncode == 0, r.stderr
    r = podman("wait", name, timeout=30)
    assert r.stdout.strip() == "137", r.stderr
    assert status(podman, name).startswith("Exited (137)")
    r = podman("rm", name)
    assert r.returncode == 0, r.stderr


def test_restart_stopped_container(podman, name):
    r = podman("run", "-d", "--name", name, IMAGE, *SLEEPER)
    assert r.returncode == 0, r.stderr
    assert podman("stop", name).returncode == 0
    r = podman("start", name)
    assert r.returncode == 0, r.stderr
    assert status(podman, name).startswith("Up")
    assert podman("exec", name, "true").returncode == 0


def test_resource_limits_visible_inside(podman):
    # kapsel bind-mounts each v1 hierarchy's container cgroup at /sys/fs/cgroup/<controller>
    # (on a cgroup v2 host the same values are in memory.max and pids.max).
    script = ("if [ -e /sys/fs/cgroup/cgroup.controllers ]; then "
              "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; else "
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; fi")
    r = podman("run", "--rm", "--memory", "64m", "--pids-limit", "32", IMAGE, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["67108864", "32"]


def test_nonexistent_command_fails(podman, name):
    r = podman("run", "--name", name, IMAGE, "kapsel-no-such-cmd")
    assert r.returncode != 0
    assert "kapsel-no-such-cmd" in r.stderr
    # podman maps "executable not found" from the runtime's message to 127
    assert r.returncode == 127, r.stderr


def test_runtime_gets_json_logging(podman, name, kapsel, tmp_path):
    """podman (via conmon) passes --log FILE --log-format=json to runtimes named in
    runtime_supports_json; kapsel's error must arrive there as runc-style JSON lines."""
    wrapper, argv_log = clients.logging_wrapper(str(tmp_path / "wrap"), kapsel)
    r = podman("run", "--name", name, IMAGE, "kapsel-no-such-cmd", runtime=wrapper)
    assert r.returncode != 0
    calls = clients.read_argv_log(argv_log)
    create = [a for a in calls if "create" in a]
    assert create, calls
    argv = create[0]
    assert "--log-format=json" in argv or ["--log-format", "json"] in \
        [argv[i:i + 2] for i in range(len(argv))], argv
    # the log file podman passed
    log = next(a.split("=", 1)[1] if a.startswith("--log=") else argv[i + 1]
               for i, a in enumerate(argv) if a == "--log" or a.startswith("--log="))
    with open(log) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    assert lines, "the runtime wrote nothing to the log file"
    entries = [json.loads(line) for line in lines]
    for e in entries:
        assert {"level", "msg", "time"} <= e.keys(), e
    assert entries[-1]["level"] == "error"
    assert "kapsel-no-such-cmd" in entries[-1]["msg"]
