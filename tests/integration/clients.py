"""Helpers for the real-client acceptance tests (podman, containerd): a busybox image built
locally with no registry, private client state under a temp dir, and a command runner that
never hangs on a detached container's inherited stdio.

Nothing here touches the host's own podman or containerd state: podman gets its own --root,
--runroot, --tmpdir and CONTAINERS_CONF; containerd is a private daemon with its own root,
state and socket."""
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from conftest import make_rootfs

IMAGE = "localhost/kbusybox:latest"


def run(cmd, *, check=False, timeout=60, env=None, input=None):
    """Run cmd with stdout/stderr in files (not pipes: a detached container or a shim inherits
    them and would keep a pipe open) and return a CompletedProcess with text output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([str(c) for c in cmd], stdout=out, stderr=err, env=env,
                           input=input.encode() if input is not None else None,
                           timeout=timeout)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(cmd, p.returncode, out.read().decode(errors="replace"),
                                        err.read().decode(errors="replace"))
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def require(*tools):
    """Skip with the exact reason when a client is missing (e.g. 'podman not installed')."""
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed")


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# The image: busybox-static as a single-layer rootfs.

def rootfs_tar(dest_dir):
    """A tar of a busybox rootfs (conftest.make_rootfs); returns its path."""
    rootfs = make_rootfs(os.path.join(dest_dir, "rootfs"))
    path = os.path.join(dest_dir, "rootfs.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name)
    return path


def _blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def oci_archive(dest_dir, ref=IMAGE, config=None):
    """An OCI image layout tarball (oci-layout, index.json, blobs/sha256/...) holding a
    one-layer linux/amd64 image of the busybox rootfs, built with the stdlib only; the index
    entry is annotated with the image name so `ctr images import` names it `ref`. `config`
    overrides fields of the image config's "config" object (WorkingDir, User...)."""
    layer_tar = open(rootfs_tar(dest_dir), "rb").read()
    layout = os.path.join(dest_dir, "layout")
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    gz = gzip.compress(layer_tar, mtime=0)
    layer_digest = _blob(blobs, gz)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"], "WorkingDir": "/", **(config or {})},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "kapsel tests"}],
    }
    cfg = json.dumps(config).encode()
    cfg_digest = _blob(blobs, cfg)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg_digest, "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(gz)}],
    }).encode()
    man_digest = _blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": man_digest, "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    path = os.path.join(dest_dir, "image.oci.tar")
    with tarfile.open(path, "w") as t:
        for name in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(layout, name), arcname=name)
    return path


# ---------------------------------------------------------------------------------------------
# podman

def podman_containers_conf(path, kapsel):
    """The containers.conf the podman tests use (docs/clients.md shows the same)."""
    nofile = min(1024, _hard("RLIMIT_NOFILE"))
    nproc = min(1024, _hard("RLIMIT_NPROC"))
    text = f"""\
[containers]
# root here lacks CAP_SYS_RESOURCE: without this podman tries to raise RLIMIT_NOFILE/NPROC
# above the hard limits and the container's setrlimit fails.
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
# conmon passes --log-format=json (and --log FILE) only to runtimes named here.
runtime_supports_json = ["kapsel", "crun", "runc"]

[engine.runtimes]
kapsel = ["{kapsel}"]
"""
    with open(path, "w") as f:
        f.write(text)
    return path


def logging_wrapper(directory, kapsel, name="kapsel"):
    """A script called `name` (podman matches runtime_supports_json on the basename) that
    appends its argv, one JSON list a line, to DIRECTORY/argv.log and execs kapsel."""
    os.makedirs(directory, exist_ok=True)
    log = os.path.join(directory, "argv.log")
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/usr/bin/python3\nimport json, os, sys\n"
                f"with open({log!r}, 'a') as f:\n"
                "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                f"os.execv({kapsel!r}, [{kapsel!r}] + sys.argv[1:])\n")
    os.chmod(path, 0o755)
    return path, log


def read_argv_log(log):
    try:
        with open(log) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _hard(name):
    hard = resource.getrlimit(getattr(resource, name))[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


class Podman:
    """podman with private storage; every container command goes through --runtime kapsel."""

    def __init__(self, base, kapsel):
        self.base, self.kapsel = base, kapsel
        for d in ("root", "runroot", "tmp"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        self.conf = podman_containers_conf(os.path.join(base, "containers.conf"), kapsel)
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        # no per-user or system-wide storage.conf/registries may leak in
                        CONTAINERS_STORAGE_CONF=os.path.join(base, "storage.conf"),
                        XDG_CONFIG_HOME=os.path.join(base, "xdg"))
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{base}/runroot"\n'
                    f'graphroot = "{base}/root"\n')
        self.global_args = ["podman", "--root", os.path.join(base, "root"),
                            "--runroot", os.path.join(base, "runroot"),
                            "--tmpdir", os.path.join(base, "tmp"),
                            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                            "--events-backend", "file"]

    def __call__(self, *args, check=False, timeout=60, runtime=None):
        return run(self.global_args + ["--runtime", runtime or self.kapsel] + list(args),
                   check=check, timeout=timeout, env=self.env)

    def import_image(self, workdir, ref=IMAGE):
        tar = rootfs_tar(workdir)
        self("import", "--change", 'CMD ["/bin/sh"]', tar, ref, check=True)
        return ref

    def userdata(self, cid, where="runroot"):
        return os.path.join(self.base, where, "overlay-containers", cid, "userdata")

    def cleanup(self):
        self("rm", "--all", "--force", "--time", "0", timeout=60)
        # Unmount the overlay layers podman may still hold, then drop everything.
        self("system", "reset", "--force", timeout=60)
        subprocess.run(["umount", "-R", os.path.join(self.base, "root", "overlay")],
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# containerd

def containerd_config(path, root, state, sock):
    """A minimal containerd config: private root/state/socket, CRI off (it wants a network)."""
    text = f"""\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""
    with open(path, "w") as f:
        f.write(text)
    return path


class Containerd:
    """A private containerd daemon for one test session."""

    NAMESPACE = "kapsel-test"

    def __init__(self, base):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.root = os.path.join(base, "root")
        self.state = os.path.join(base, "state")
        self.sock = os.path.join(base, "containerd.sock")
        self.config = containerd_config(os.path.join(base, "config.toml"), self.root,
                                        self.state, self.sock)
        self.logpath = os.path.join(base, "containerd.log")
        self.proc = None

    def start(self):
        self._log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(["containerd", "--config", self.config],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or
                     (os.path.exists(self.sock) and
                      self.ctr("version").returncode == 0),
                     timeout=30, what="containerd's socket")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"containerd exited ({self.proc.returncode}): {self.log()}")
        return self

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def ctr(self, *args, check=False, timeout=60):
        return run(["ctr", "--address", self.sock, "--namespace", self.NAMESPACE] + list(args),
                   check=check, timeout=timeout)

    def task_status(self, cid):
        for line in self.ctr("task", "ls", check=True).stdout.splitlines()[1:]:
            f = line.split()
            if f and f[0] == cid:
                return f[-1]
        return None

    def remove_all(self):
        for line in self.ctr("task", "ls", "-q").stdout.split():
            self.ctr("task", "kill", "-s", "SIGKILL", line)
            self.ctr("task", "rm", "-f", line)
        for line in self.ctr("container", "ls", "-q").stdout.split():
            self.ctr("container", "rm", line)

    def stop(self):
        if self.proc is None:
            return
        try:
            self.remove_all()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None
        # Shims exit with their tasks; snapshots are overlay mounts under root.
        subprocess.run(["sh", "-c", f"grep -o ' {self.base}[^ ]*' /proc/self/mounts | "
                        "sort -r | xargs -r -n1 umount -l"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


class Kapsel:
    """kapsel with a fixed --store and --root: k("run", "--rm", "busybox", "true")."""

    def __init__(self, binary, store, root):
        self.binary, self.store, self.root = binary, store, root

    def argv(self, *args):
        return [self.binary, "--store", self.store, "--root", self.root] + [str(a) for a in args]

    def __call__(self, *args, check=False, timeout=60, input=None):
        return run(self.argv(*args), check=check, timeout=timeout, input=input)
