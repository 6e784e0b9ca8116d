#!/usr/bin/env python3
"""Build kapsel's embedded default image, busybox:latest, as an OCI image layout directory.

One gzip layer made from a static busybox binary: bin/busybox, a symlink per applet (at the path
`busybox --list-full` gives), /etc/passwd and /etc/group, and the usual empty directories. The
output is reproducible: fixed owners, mtimes from SOURCE_DATE_EPOCH (else the binary's), a gzip
header without a timestamp. Standard library only.

  mkimage-busybox.py [--busybox /bin/busybox] --output DIR [--name docker.io/library/busybox:latest]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
        "s390x": "s390x", "riscv64": "riscv64"}

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"


def applets(busybox):
    """Applet paths relative to / ("bin/ls", "usr/sbin/chroot")."""
    for flag in ("--list-full", "--list"):
        r = subprocess.run([busybox, flag], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            names = r.stdout.split()
            if flag == "--list":
                names = ["bin/" + n for n in names]
            return sorted(set(n.lstrip("/") for n in names if n.strip("/") != "bin/busybox"))
    sys.exit(f"{busybox}: cannot list applets")


def layer_tar(busybox, mtime):
    buf = io.BytesIO()
    dirs = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755,
            "root": 0o700, "run": 0o755, "sbin": 0o755, "sys": 0o755, "tmp": 0o1777,
            "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755}
    links = applets(busybox)
    for link in links:
        parent = os.path.dirname(link)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)

    def info(name, kind, mode, size=0, target=""):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.linkname = target
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(info(d + "/", tarfile.DIRTYPE, dirs[d]))
        with open(busybox, "rb") as f:
            data = f.read()
        tar.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for link in links:
            target = "busybox" if os.path.dirname(link) == "bin" else "/bin/busybox"
            tar.addfile(info(link, tarfile.SYMTYPE, 0o777, target=target))
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            raw = text.encode()
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, len(raw)), io.BytesIO(raw))
    return buf.getvalue()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--output", required=True)
    ap.add_argument("--name", default="docker.io/library/busybox:latest")
    args = ap.parse_args()

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    mtime = int(epoch) if epoch else int(os.stat(args.busybox).st_mtime)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    arch = ARCH.get(platform.machine(), platform.machine())

    out = os.path.abspath(args.output)
    tmp = tempfile.mkdtemp(prefix=".busybox-oci.", dir=os.path.dirname(out))
    try:
        os.makedirs(os.path.join(tmp, "blobs", "sha256"))
        tar = layer_tar(args.busybox, mtime)
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
            g.write(tar)
        gz = gz.getvalue()
        diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
        layer = write_blob(tmp, gz)
        config = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=" + PATH], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created,
                         "created_by": "kapsel scripts/mkimage-busybox.py " + args.busybox}],
        }
        config_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": write_blob(tmp, config_raw),
                       "size": len(config_raw)},
            "layers": [{"mediaType": MT_LAYER, "digest": layer, "size": len(gz)}],
        }
        manifest_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [{
                "mediaType": MT_MANIFEST,
                "digest": write_blob(tmp, manifest_raw),
                "size": len(manifest_raw),
                "platform": {"os": "linux", "architecture": arch},
                # containerd's convention for the full name; ref.name is the tag (image-spec
                # annotations.md).
                "annotations": {"io.containerd.image.name": args.name,
                                "org.opencontainers.image.ref.name": tag},
            }],
        }
        with open(os.path.join(tmp, "index.json"), "w") as f:
            json.dump(index, f, sort_keys=True, separators=(",", ":"))
        with open(os.path.join(tmp, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        os.chmod(tmp, 0o755)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    main()
