"""A lock's direct references (envrepro.packages.directrefs): refused by default with one line,
only https archives pinned by sha256 taken with --allow-direct-references, downloaded by the host
(hash, https-only redirects, size bound) and pinned in the install plan. The download is faked by
an opener, except the redirect test, which runs a real HTTP server on loopback."""
import hashlib
import http.server
import threading
import urllib.request

import pytest

from envrepro.errors import BuildFailed, EnvreproError
from envrepro.packages import directrefs, installplan
from envrepro.packages.directrefs import DirectReferenceRefused
from envrepro.packages.wheelhouse.store import WheelStore
from envrepro.sidecar.lockfile import Lock

SDIST = b"termcolor 1.1.0 sdist bytes"
SHA = hashlib.sha256(SDIST).hexdigest()
URL = "https://files.example/packages/termcolor-1.1.0.tar.gz"
LOCK = (f"six==1.16.0 \\\n    --hash=sha256:{'a' * 64}\n"
        f"termcolor @ {URL} \\\n    --hash=sha256:{SHA}\n    # via -r requirements.in\n")


@pytest.fixture(autouse=True)
def not_allowed(monkeypatch):
    monkeypatch.delenv(directrefs.ENV, raising=False)
    monkeypatch.delenv(directrefs.MAX_MB_ENV, raising=False)


def test_a_direct_reference_is_refused_by_default_in_one_line_naming_the_lock_line_and_the_flag():
    lock = Lock.parse(LOCK.replace("https://files.example", "https://user:t0ken@files.example")
                      + f"wrapt @ https://x.example/wrapt-1.12.1.tar.gz#sha256={'b' * 64}\n")
    with pytest.raises(DirectReferenceRefused) as e:
        directrefs.check(lock, "/m.envrepro/requirements.lock")
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert msg.startswith("/m.envrepro/requirements.lock: lock line 3: termcolor @ "
                          "https://files.example/packages/termcolor-1.1.0.tar.gz is a direct reference "
                          "(and 1 more: wrapt): refused by default")
    assert "t0ken" not in msg and "--allow-direct-references" in msg and "ENVREPRO_ALLOW_DIRECT_REFERENCES=1" in msg


def test_the_captures_own_wheels_and_index_pins_are_not_direct_references():
    lock = Lock.parse("mylib @ file:///envrepro/capture/wheels/mylib-1.0-py3-none-any.whl\nsix==1.16.0\n")
    assert directrefs.check(lock) == [] and directrefs.pinned_lock(lock) is lock


@pytest.mark.parametrize("line, why", [
    ("mylib @ git+https://github.com/o/mylib.git@abc", "a VCS checkout (git+https) can't be hash-checked"),
    (f"termcolor @ http://files.example/termcolor-1.1.0.tar.gz --hash=sha256:{SHA}", "plaintext http"),
    (f"termcolor @ file:///home/me/termcolor-1.1.0.tar.gz --hash=sha256:{SHA}", "names a path on the host"),
    (f"termcolor @ ftp://files.example/termcolor-1.1.0.tar.gz --hash=sha256:{SHA}", "only https archives"),
    (f"termcolor @ {URL}", "no sha256"),
    (f"termcolor @ {URL}#md5=0123", "no sha256"),
    (f"termcolor @ https://u:p4ss@files.example/termcolor-1.1.0.tar.gz --hash=sha256:{SHA}", "carries credentials"),
    (f"termcolor @ https://files.example/termcolor-1.1.0.egg --hash=sha256:{SHA}", "not a wheel or sdist archive"),
    (f"termcolor @ https://files.example/dl?id=7 --hash=sha256:{SHA}", "not a wheel or sdist archive"),
    (f"termcolor @ https://files.example/six-1.16.0.tar.gz --hash=sha256:{SHA}", "is not a distribution of termcolor"),
    (f"termcolor @ {URL}#sha256={'c' * 64} --hash=sha256:{SHA}", "disagree"),
])
def test_kinds_that_are_never_built_are_refused_even_when_allowed(monkeypatch, line, why):
    monkeypatch.setenv(directrefs.ENV, "1")
    with pytest.raises(DirectReferenceRefused) as e:
        directrefs.check(line + "\n", "requirements.lock")
    msg = str(e.value)
    assert why in msg and "refused even with --allow-direct-references" in msg, msg
    assert e.value.exit_code == 2 and "\n" not in msg and "p4ss" not in msg and msg.startswith("requirements.lock: lock line 1: ")


def test_an_allowed_https_archive_is_pinned_and_installed_with_require_hashes(monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "1")
    (ref,) = directrefs.check(LOCK)
    assert (ref.url, ref.filename, ref.version, ref.sha256, ref.wheel) == (URL, "termcolor-1.1.0.tar.gz", "1.1.0",
                                                                        (SHA,), False)
    (wheel,) = directrefs.check(f"six @ https://f.example/six-1.16.0-py2.py3-none-any.whl#sha256={'d' * 64} "
                                '; python_version < "3.9"\n')
    assert wheel.url == "https://f.example/six-1.16.0-py2.py3-none-any.whl" and wheel.sha256 == ("d" * 64,)
    pinned = wheel.pinned()
    assert pinned.spec == 'six==1.16.0 ; python_version < "3.9"' and pinned.url is None
    assert pinned.hashes == ("sha256:" + "d" * 64,) and pinned.version == "1.16.0"
    plan = installplan.install_plan(directrefs.pinned_lock(LOCK))
    text = plan.heavy + plan.rest
    assert plan.require_hashes and plan.unverified == "" and "https://" not in text
    assert f"termcolor==1.1.0 \\\n    --hash=sha256:{SHA}" in text
    built = installplan.install_plan(directrefs.pinned_lock(LOCK), {"termcolor": "e" * 64})
    assert f"termcolor==1.1.0 \\\n    --hash=sha256:{'e' * 64}" in built.heavy + built.rest
    assert SHA not in built.heavy + built.rest


# -- the download ------------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, body, url, length):
        self.body, self.url = body, url
        self.headers = {"Content-Length": str(len(body))} if length else {}

    def read(self, n):
        out, self.body = self.body[:n], self.body[n:]
        return out

    def geturl(self):
        return self.url

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeOpener:
    """``opener()``'s stand-in: serves ``body`` from ``url`` (the final URL after redirects)."""

    def __init__(self, body=SDIST, url=URL, length=True):
        self.body, self.url, self.length = body, url, length
        self.requests = []

    def open(self, request, timeout=None):
        self.requests.append(request)
        return FakeResponse(self.body, self.url, self.length)


def ref_of(lock=LOCK):
    return directrefs.by_name(lock)["termcolor"]


def test_the_host_downloads_it_checks_its_sha256_and_stores_it_once(tmp_path):
    store = WheelStore(tmp_path / "wheels")
    opener = FakeOpener()
    lines = []
    files, downloaded = directrefs.fetch([ref_of()], store, lines.append, open_url=opener)
    assert downloaded == 1 and files["termcolor"].read_bytes() == SDIST and files["termcolor"].parent.name == SHA
    (request,) = opener.requests
    assert request.full_url == URL and not request.has_header("Authorization")
    assert any("Downloading termcolor from " + URL in line for line in lines)
    assert directrefs.fetch([ref_of()], store, lines.append, open_url=opener) == (files, 0)
    assert len(opener.requests) == 1                      # stored: not downloaded again


def test_a_file_other_than_the_pinned_one_is_refused_and_not_kept(tmp_path):
    store = WheelStore(tmp_path / "wheels")
    with pytest.raises(BuildFailed) as e:
        directrefs.fetch([ref_of()], store, lambda line: None, open_url=FakeOpener(b"trojaned termcolor"))
    assert "(hash mismatch)" in str(e.value) and SHA in str(e.value) and e.value.exit_code == 4
    assert store.get(hashlib.sha256(b"trojaned termcolor").hexdigest()) is None
    assert not any(p.is_file() for p in (store.root / "tmp").rglob("*"))


@pytest.mark.parametrize("length, said", [(True, "is 27 bytes, more than the 10 bytes allowed"),
                                          (False, "sent more than the 10 bytes allowed")])
def test_a_download_larger_than_the_bound_is_stopped(tmp_path, length, said):
    with pytest.raises(BuildFailed, match=said) as e:
        directrefs.download(ref_of(), tmp_path, open_url=FakeOpener(length=length), limit=10)
    assert "ENVREPRO_DIRECT_REFERENCE_MAX_MB" in e.value.fix and list(tmp_path.iterdir()) == []


def test_the_size_bound_comes_from_the_environment(monkeypatch):
    assert directrefs.max_bytes() == directrefs.MAX_MB << 20
    monkeypatch.setenv(directrefs.MAX_MB_ENV, "3")
    assert directrefs.max_bytes() == 3 << 20
    monkeypatch.setenv(directrefs.MAX_MB_ENV, "lots")
    with pytest.raises(EnvreproError, match="ENVREPRO_DIRECT_REFERENCE_MAX_MB='lots' is not a positive number"):
        directrefs.max_bytes()


def test_an_answer_from_a_url_that_is_not_https_is_refused(tmp_path):
    with pytest.raises(BuildFailed, match="redirected to http://mirror.example/termcolor-1.1.0.tar.gz, which is not https"):
        directrefs.download(ref_of(), tmp_path, open_url=FakeOpener(url="http://mirror.example/termcolor-1.1.0.tar.gz"))
    assert list(tmp_path.iterdir()) == []


def test_redirects_are_followed_to_https_only(tmp_path):
    """A real server on loopback answers 302 to a plaintext URL: the opener stops there."""
    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/termcolor-1.1.0.tar.gz":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/plain/termcolor-1.1.0.tar.gz")
                self.end_headers()
            else:
                served.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(SDIST)

        def log_message(self, *args):
            pass

    served = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ref = directrefs.DirectRef(ref_of().entry, f"http://127.0.0.1:{server.server_port}/termcolor-1.1.0.tar.gz",
                                   "termcolor-1.1.0.tar.gz", "1.1.0", (SHA,))
        with pytest.raises(BuildFailed, match=r"redirected to http://127\.0\.0\.1:\d+/plain/termcolor-1\.1\.0\.tar\.gz, "
                                              "which is not https: refused"):
            directrefs.download(ref, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert served == [] and list(tmp_path.iterdir()) == []
    # an https target is followed (at most MAX_REDIRECTS times)
    handler = next(h for h in directrefs.opener().handlers if isinstance(h, urllib.request.HTTPRedirectHandler))
    req = urllib.request.Request(URL)
    followed = handler.redirect_request(req, None, 302, "Found", {}, "https://mirror.example/termcolor-1.1.0.tar.gz")
    assert followed.full_url == "https://mirror.example/termcolor-1.1.0.tar.gz"
    assert handler.max_redirections == directrefs.MAX_REDIRECTS
