"""Registries for the pull tests: Debian's docker-registry on a free loopback port, a builder
of OCI image layouts (stdlib tarfile/gzip/hashlib; zstd through the `zstd` CLI), skopeo to push
them, and a small fake registry that misbehaves on purpose (drops connections, serves the wrong
bytes, answers 500/404/401, wants tokens)."""
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- image layouts ----

def tar_layer(entries):
    """entries: tuples describing members, in order:
    ("dir", path, mode[, uid, gid]), ("file", path, bytes, mode[, uid, gid]),
    ("symlink", path, target), ("hardlink", path, target), ("whiteout", path),
    ("opaque", dirpath). Returns the uncompressed tar bytes (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            kind, path = e[0], e[1]
            ti = tarfile.TarInfo(path)
            ti.mtime = 1700000000
            ti.uname = ti.gname = ""
            data = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, e[2]
                if len(e) > 3:
                    ti.uid, ti.gid = e[3], e[4]
            elif kind == "file":
                data = e[2]
                ti.size, ti.mode = len(data), e[3]
                if len(e) > 4:
                    ti.uid, ti.gid = e[4], e[5]
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e[2], 0o777
            elif kind == "hardlink":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, e[2], 0o644
            elif kind == "whiteout":
                d, base = os.path.split(path)
                ti.name = os.path.join(d, ".wh." + base)
                ti.mode = 0o644
                data = b""
            elif kind == "opaque":
                ti.name = os.path.join(path, ".wh..wh..opq")
                ti.mode = 0o644
                data = b""
            else:
                raise ValueError(kind)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(data, how):
    if how == "none":
        return data
    if how == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if how == "zstd":
        if not shutil.which("zstd"):
            raise RuntimeError("zstd CLI missing")
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True,
                              check=True).stdout
    raise ValueError(how)


class Layout:
    """An OCI image layout directory (image-spec image-layout.md)."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(os.path.join(self.path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(self.path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}
        self.blobs = {}

    def add_blob(self, data):
        d = sha256(data)
        with open(os.path.join(self.path, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        self.blobs[d] = data
        return d

    def image(self, layers, compression="gzip", arch="amd64", os_="linux", config=None):
        """layers: lists of tar entries. Returns (manifest descriptor, manifest bytes)."""
        descs, diff_ids = [], []
        comps = compression if isinstance(compression, list) else [compression] * len(layers)
        for entries, comp in zip(layers, comps):
            raw = tar_layer(entries)
            blob = compress(raw, comp)
            descs.append({"mediaType": MT_LAYER[comp], "digest": self.add_blob(blob),
                          "size": len(blob)})
            diff_ids.append(sha256(raw))
        cfg = {"architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
               "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
               "rootfs": {"type": "layers", "diff_ids": diff_ids},
               "history": [{"created_by": "test"} for _ in layers]}
        if config:
            cfg["config"].update(config)
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                    "config": {"mediaType": MT_OCI_CONFIG, "digest": self.add_blob(cfg_bytes),
                               "size": len(cfg_bytes)},
                    "layers": descs}
        mbytes = json.dumps(manifest, sort_keys=True).encode()
        desc = {"mediaType": MT_OCI_MANIFEST, "digest": self.add_blob(mbytes),
                "size": len(mbytes), "platform": {"architecture": arch, "os": os_}}
        return desc, mbytes

    def tag(self, tag, desc):
        d = dict(desc)
        d["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index["manifests"].append(d)
        self._write_index()

    def tag_index(self, tag, descs):
        """A nested image index (multi-platform) tagged in the layout."""
        idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}
        ibytes = json.dumps(idx, sort_keys=True).encode()
        d = {"mediaType": MT_OCI_INDEX, "digest": self.add_blob(ibytes), "size": len(ibytes),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
        self.index["manifests"].append(d)
        self._write_index()
        return d

    def _write_index(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump(self.index, f)


def skopeo_push(layout, tag, dest, fmt=None, all_images=False):
    cmd = ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]
    if fmt:
        cmd += ["--format", fmt]
    if all_images:
        cmd += ["--all"]
    cmd += [f"oci:{layout.path}:{tag}", f"docker://{dest}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr}")


# ---- Debian's docker-registry ----

class Registry:
    def __init__(self, workdir):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.dir = os.path.join(str(workdir), f"registry-{self.port}")
        os.makedirs(os.path.join(self.dir, "storage"))
        self.config = os.path.join(self.dir, "config.yml")
        self.log = os.path.join(self.dir, "registry.log")
        with open(self.config, "w") as f:
            f.write(f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {self.dir}/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not start: " +
                                       open(self.log, errors="replace").read()[-2000:])
                time.sleep(0.1)

    def blob_gets(self):
        """GET requests for blobs so far (from the access log)."""
        self.logf.flush()
        n = 0
        with open(self.log, errors="replace") as f:
            for line in f:
                if '"GET /v2/' in line and "/blobs/sha256:" in line:
                    n += 1
        return n

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


# ---- a registry that misbehaves on purpose ----

class FakeRegistry:
    """Serves one image (from a Layout) as repository `repo`, tag `tag`, on 127.0.0.1.

    mode:
      "ok"            behave
      "drop-blob"     every layer GET sends half the bytes then closes the connection
      "drop-once"     the first layer GET drops mid-way; later ones honour Range
      "wrong-digest"  layer blobs have their bytes flipped (same length)
      "500"           every /v2/<repo>/ request answers 500
      "404"           manifests and blobs answer 404 with a registry error body
      "401-token"     Bearer challenge; the token service refuses anonymous requests
      "401-bare"      401 without any WWW-Authenticate challenge
      "token"         Bearer challenge; the token service wants user/password (self.creds)
      "redirect"      blobs answer 307 to another host name (localhost) that serves them
      "slow"          layer blobs trickle out (64 KiB every 50 ms)
      "403"           every /v2/<repo>/ request answers 403 DENIED
      "huge-manifest" the manifest is 5 MiB of JSON
    Modes combine with '+': "token+redirect".
    """

    def __init__(self, layout, repo, tag, desc, mode="ok", creds=("user", "pass")):
        self.layout, self.repo, self.tag, self.desc = layout, repo, tag, desc
        self.modes, self.creds = set(mode.split("+")), creds
        self.requests = []
        self.blob_requests = []
        self.token = "tok-" + base64.b16encode(os.urandom(8)).decode()
        self.lock = threading.Lock()
        self.dropped = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                fake.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def error(self, h, code, ecode, msg):
        body = json.dumps({"errors": [{"code": ecode, "message": msg}]}).encode()
        h.send(code, body, [("Content-Type", "application/json")])

    def authorized(self, h):
        if not self.modes & {"401-token", "401-bare", "token"}:
            return True
        auth = h.headers.get("Authorization", "")
        if "token" in self.modes and auth == f"Bearer {self.token}":
            return True
        if "401-bare" in self.modes:
            h.send(401, b"")
            return False
        realm = f"http://{self.host}/token"
        h.send(401, b"", [("WWW-Authenticate",
                           f'Bearer realm="{realm}",service="fake",'
                           f'scope="repository:{self.repo}:pull"')])
        return False

    def handle(self, h):
        path = h.path
        with self.lock:
            self.requests.append((path, h.headers.get("Authorization")))
        if path.startswith("/token"):
            want = "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
            if "token" in self.modes and h.headers.get("Authorization") == want:
                return h.send(200, json.dumps({"token": self.token}).encode(),
                              [("Content-Type", "application/json")])
            return h.send(401, b'{"details":"no"}', [("Content-Type", "application/json")])
        if path.startswith("/redirected/"):
            return self.serve_blob(h, path[len("/redirected/"):])
        if path == "/v2/" or path == "/v2":
            if not self.authorized(h):
                return
            return h.send(200, b"{}", [("Content-Type", "application/json")])
        prefix = f"/v2/{self.repo}/"
        if not path.startswith(prefix):
            return self.error(h, 404, "NAME_UNKNOWN", "repository name not known")
        if not self.authorized(h):
            return
        if "500" in self.modes:
            return h.send(500, b"internal error")
        if "403" in self.modes:
            return self.error(h, 403, "DENIED", "requested access to the resource is denied")
        rest = path[len(prefix):]
        if "404" in self.modes:
            if rest.startswith("manifests/"):
                return self.error(h, 404, "MANIFEST_UNKNOWN", "manifest unknown")
            return self.error(h, 404, "BLOB_UNKNOWN", "blob unknown")
        if rest.startswith("manifests/"):
            ref = rest[len("manifests/"):]
            if ref not in (self.tag, self.desc["digest"]):
                return self.error(h, 404, "MANIFEST_UNKNOWN", "manifest unknown")
            body = self.layout.blobs[self.desc["digest"]]
            if "huge-manifest" in self.modes:
                body = b'{"pad":"' + b"x" * (5 << 20) + b'"}'
            return h.send(200, body, [("Content-Type", self.desc["mediaType"]),
                                      ("Docker-Content-Digest", self.desc["digest"])])
        if rest.startswith("blobs/"):
            digest = rest[len("blobs/"):]
            if "redirect" in self.modes:
                h.send(307, b"", [("Location",
                                   f"http://localhost:{self.port}/redirected/{digest}")])
                return
            return self.serve_blob(h, digest)
        return self.error(h, 404, "UNSUPPORTED", "no")

    def is_layer(self, digest):
        m = json.loads(self.layout.blobs[self.desc["digest"]])
        return any(l["digest"] == digest for l in m["layers"])

    def serve_blob(self, h, digest):
        with self.lock:
            self.blob_requests.append((digest, h.headers.get("Authorization"),
                                       h.headers.get("Range")))
        data = self.layout.blobs.get(digest)
        if data is None:
            return self.error(h, 404, "BLOB_UNKNOWN", "blob unknown")
        layer = self.is_layer(digest)
        if layer and "wrong-digest" in self.modes:
            data = bytes(b ^ 0x55 for b in data)
        drop = layer and ("drop-blob" in self.modes or
                          ("drop-once" in self.modes and self.dropped == 0))
        rng = h.headers.get("Range")
        start = 0
        if rng and "drop-once" in self.modes and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if drop:
            with self.lock:
                self.dropped += 1
            h.wfile.write(data[start:start + max(1, (len(data) - start) // 2)])
            h.wfile.flush()
            # Abort: no more bytes, connection gone mid-body.
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if layer and "slow" in self.modes:
            try:
                for i in range(start, len(data), 65536):
                    h.wfile.write(data[i:i + 65536])
                    h.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        h.wfile.write(data[start:])
