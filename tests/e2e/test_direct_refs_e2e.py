"""A capture whose lock has a direct reference, through the installed CLI and a real Docker engine
(docs/threat-model.md, "Direct references").

A tiny sdist is served over HTTPS on 127.0.0.1 with a self-signed certificate, which the host
trusts through the CA bundle the test gives it (PIP_CERT: the system's certificates plus that one;
set for the CLI process only). The lock pins it as ``dirrefdemo @ https://127.0.0.1:PORT/...``
with its sha256. ``envrepro run`` refuses it without ``--allow-direct-references`` (exit 2, one
line, no request to the server, no image); with it the host downloads the sdist once, it is built
in a container with no network (build log), the image comes from the wheelhouse builder (label)
and the module imports inside it. Base: the local ``python:3.11-slim`` stand-in.
"""
from __future__ import annotations

import datetime
import hashlib
import http.server
import io
import os
import ssl
import tarfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro.image import spec
from envrepro.sidecar import layout, manifest, writer
from envrepro.fsutil import sha256_tree

pytestmark = pytest.mark.e2e


def self_signed(folder: Path) -> "tuple[Path, Path]":
    """A certificate for 127.0.0.1 that is its own CA, and its key (cryptography: a test extra)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envrepro e2e loopback")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def system_bundle() -> bytes:
    """The host's CA certificates (PyPI must still verify: the build tools come from there)."""
    for path in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"),
                 ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if path and os.path.isfile(path):
            return Path(path).read_bytes()
    import certifi

    return Path(certifi.where()).read_bytes()


def sdist(magic: str) -> bytes:
    """dirrefdemo-0.1.tar.gz: a setup.py-only sdist (like termcolor 1.1.0) of one module."""
    files = {
        "dirrefdemo-0.1/setup.py": "from setuptools import setup\n"
                                   "setup(name='dirrefdemo', version='0.1', py_modules=['dirrefdemo'])\n",
        "dirrefdemo-0.1/PKG-INFO": "Metadata-Version: 2.1\nName: dirrefdemo\nVersion: 0.1\n",
        "dirrefdemo-0.1/dirrefdemo.py": f"MAGIC = {magic!r}\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def https_server(tmp_path):
    """Serves /dirrefdemo-0.1.tar.gz over TLS on 127.0.0.1; ``.requests``: the paths asked for."""
    magic = uuid.uuid4().hex
    body = sdist(magic)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.server.requests.append(self.path)
            if self.path != "/dirrefdemo-0.1.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(system_bundle() + b"\n" + cert.read_bytes())
    server.url = f"https://127.0.0.1:{server.server_port}/dirrefdemo-0.1.tar.gz"
    server.sha256, server.magic, server.bundle = hashlib.sha256(body).hexdigest(), magic, bundle
    yield server
    server.shutdown()
    server.server_close()


def make_capture(tmp_path: Path, lock: str) -> manifest.Capture:
    model = tmp_path / "my_model"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"not really a graph")
    root = layout.sidecar_for(model)
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "custom_layers.py").write_text("VALUE = 42\n")
    (root / "requirements.lock").write_text(lock)
    writer.write_manifest(root, {
        "schema": layout.SCHEMA, "model": {"name": "my_model", "format": "savedmodel", "sha256": sha256_tree(model)},
        "python": {"version": "3.11.7"}, "frameworks": {"tensorflow": "2.21.0", "keras_flavor": "keras3"},
        "env": {"TF_USE_LEGACY_KERAS": None, "KERAS_BACKEND": None},
        "load": {"compile": True, "custom_objects": {}, "modules": ["custom_layers"]},
        "optimizer": None})
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)     # the sandbox user reads as "other"
    return manifest.read(root)


def test_a_direct_reference_is_refused_then_built_in_the_sandbox_with_the_flag(engine, standin_311, tmp_path,
                                                                               https_server):
    lock = (f"dirrefdemo @ {https_server.url} \\\n    --hash=sha256:{https_server.sha256}\n"
            "    # via -r requirements.in\n")
    capture = make_capture(tmp_path / "c", lock)
    tag = spec.image_tag(spec.capture_key(capture, "python:3.11-slim", capture.lock))
    engine.remove_image(tag, force=True)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PIP_CERT": str(https_server.bundle), "ENVREPRO_BUILDER": "", "ENVREPRO_BASE_IMAGE": "",
           "ENVREPRO_REGISTRY": "", "ENVREPRO_ALLOW_DIRECT_REFERENCES": ""}
    inside = ["python", "-c", "import dirrefdemo; print('magic', dirrefdemo.MAGIC)"]

    refused = cli("run", capture.model_path, "--", *inside, env=env, timeout=300)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("envrepro: error: ")]
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in refused.stderr
    assert f"lock line 1: dirrefdemo @ {https_server.url} is a direct reference" in errors[0]
    assert "--allow-direct-references" in errors[0]
    assert https_server.requests == [] and not engine.image_exists(tag)
    assert not engine.images(f"{spec.LABEL_KEY}={spec.capture_key(capture, 'python:3.11-slim', capture.lock)}")

    built = cli("run", capture.model_path, "--allow-direct-references", "--", *inside, env=env, timeout=1500)
    assert built.returncode == 0, built.stderr[-3000:]
    assert f"magic {https_server.magic}" in built.stdout
    assert https_server.requests == ["/dirrefdemo-0.1.tar.gz"]          # the host fetched it, once
    labels = engine.inspect_image(tag)["Config"]["Labels"]
    assert labels["org.envrepro.builder"] == "wheelhouse"
    (log,) = (tmp_path / "cache" / "envrepro" / "logs").glob("build-*.log")
    text = log.read_text()
    assert "Downloading dirrefdemo from " + https_server.url in text
    assert "Building dirrefdemo==0.1 from source in a container of python:3.11-slim of its own (no network" in text
    assert "dirrefdemo==0.1" in text and "Step 1/" not in text             # no Dockerfile build
    try:
        # the sdist's wheel is in the image, installed from the wheelhouse by its own hash
        code, out, err = engine.run(tag, ["python", "-c", "from importlib import metadata; "
                                          "print(metadata.distribution('dirrefdemo').read_text('INSTALLER'))"],
                                    network_disabled=True, read_only=True, tmpfs={"/tmp": "rw,size=16m"},
                                    stream=False)
        assert code == 0 and out.strip() == "pip", err
    finally:
        engine.remove_image(tag, force=True)
