"""Local stand-ins for the official ``python:X.Y-slim`` images.

No registry is reachable from the test machines, so the end-to-end tests cannot pull
``python:3.8-slim``. This module builds a look-alike once and tags it with the official name, so
envrepro finds the base locally (and never pulls it) exactly as it would on a user's machine:
a Debian bookworm ``minbase`` root (debootstrap, cached as ``envrepro-standin/bookworm:minbase``)
plus a pyenv build of the newest patch release of X.Y copied to ``/usr/local``, with ``python``,
``python3``, ``pip`` on PATH and only pip/setuptools/wheel in site-packages, like the official
images. Uses the ``docker`` CLI only (no envrepro, no Docker SDK), so CI can run it first:

    python tests/e2e/standins.py 3.8 3.11
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, List, Optional

PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
MINBASE_TAG = "envrepro-standin/bookworm:minbase"
SUITE = "bookworm"
# What python:X.Y-slim-bookworm carries besides the interpreter: certificates, netbase, tzdata and
# the shared libraries the interpreter's extension modules link against.
DEB_PACKAGES = [
    "ca-certificates", "netbase", "tzdata", "libssl3", "libffi8", "libsqlite3-0", "libbz2-1.0",
    "liblzma5", "libreadline8", "libncursesw6", "libexpat1", "libuuid1", "zlib1g", "libnsl2",
    "libtirpc3", "libgdbm6", "libgdbm-compat4",
]
# site-packages entries the official images ship; everything else in a pyenv build is dropped.
KEEP_SITE = re.compile(r"^(pip|setuptools|wheel|pkg_resources|_distutils_hack)([-_.].*)?$|^distutils-precedence\.pth$")
LOCK_DIR = Path(tempfile.gettempdir()) / "envrepro-standins"


def log(msg: str) -> None:
    print(f"[standins] {msg}", file=sys.stderr, flush=True)


def image_present(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise concurrent builders (pytest-xdist workers, CI + a developer shell)."""
    import fcntl

    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def newest_patch(minor: str) -> str:
    """'3.8' -> '3.8.18': the newest pyenv build of that X.Y present on this machine."""
    if minor.count(".") >= 2:
        if not (PYENV_ROOT / minor).is_dir():
            raise SystemExit(f"no pyenv build {minor} under {PYENV_ROOT}")
        return minor
    found = [p.name for p in PYENV_ROOT.glob(minor + ".*") if re.fullmatch(r"\d+\.\d+\.\d+", p.name)]
    if not found:
        raise SystemExit(f"no pyenv build of Python {minor} under {PYENV_ROOT}")
    return max(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def _install_debootstrap() -> None:
    """A fresh CI machine has no debootstrap: install Debian's package when we can (root + apt)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("debootstrap is not installed (apt-get install debootstrap)")
    log("installing Debian's debootstrap (once)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "debootstrap"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: install debootstrap by hand")


def ensure_minbase(tag: str = MINBASE_TAG) -> str:
    """debootstrap a bookworm minbase root and ``docker import`` it (about a minute, once)."""
    with _locked(tag):
        if image_present(tag):
            return tag
        if shutil.which("debootstrap") is None:
            _install_debootstrap()
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="envrepro-minbase-") as tmp:
            root = Path(tmp) / "root"
            log(f"debootstrap --variant=minbase {SUITE} (once; cached as {tag})")
            subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(DEB_PACKAGES),
                            SUITE, str(root)], check=True, stdout=subprocess.DEVNULL)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (root / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                                   stdout=subprocess.PIPE)
            subprocess.run(["docker", "import", "--change", "CMD [\"bash\"]", "-", tag],
                           stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise SystemExit("tar of the debootstrap root failed")
        log(f"{tag} ready in {time.time() - t0:.0f}s")
        return tag


def _keep(rel: str, xy: str) -> bool:
    parts = rel.split("/")
    if "__pycache__" in parts or rel.endswith((".pyc", ".a")):
        return False
    lib = f"lib/python{xy}"
    if rel.startswith(lib + "/"):
        sub = parts[2] if len(parts) > 2 else ""
        if sub in ("test", "idlelib", "tkinter", "turtledemo", "lib2to3") and len(parts) > 3:
            return sub == "lib2to3" and "tests" not in parts
        if sub == "site-packages" and len(parts) > 3:
            return bool(KEEP_SITE.match(parts[3]))
    return True


def _python_context(version: str, base: str, out: IO[bytes]) -> None:
    """The build context (Dockerfile + ``python/``) as a tar, with the pyenv prefix rewritten."""
    src = PYENV_ROOT / version
    xy = ".".join(version.split(".")[:2])
    old_prefix = str(src).encode()
    dockerfile = f"""FROM {base}
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTHON_VERSION={version}
COPY python/ /usr/local/
RUN echo /usr/local/lib > /etc/ld.so.conf.d/usr-local-python.conf && ldconfig \\
 && cd /usr/local/bin \\
 && ln -sf python{xy} python3 && ln -sf python3 python \\
 && for s in pip3 pip{xy} pip; do [ -e $s ] || ln -sf pip3 $s; done \\
 && python3 --version && pip --version
CMD ["python3"]
"""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            tar.addfile(ti, io.BytesIO(data))

        add_bytes("Dockerfile", dockerfile.encode())
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = Path(dirpath, name)
                rel = full.relative_to(src).as_posix()
                if not _keep(rel, xy):
                    continue
                arc = "python/" + rel
                if full.is_symlink():
                    ti = tarfile.TarInfo(arc)
                    ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, os.readlink(full), 0o777, 0
                    tar.addfile(ti)
                    continue
                mode = (full.stat().st_mode & 0o7777) | 0o444
                if mode & 0o100:
                    mode |= 0o111
                data = full.read_bytes()
                if old_prefix in data and b"\0" not in data[:8192]:
                    data = data.replace(old_prefix, b"/usr/local")
                add_bytes(arc, data, mode)


def ensure_standin(tag: str = "python:3.8-slim", python: Optional[str] = None) -> str:
    """Build (once, cached by tag) a stand-in for the official ``python:X.Y-slim`` image.

    ``python`` is a full version ('3.8.18') or X.Y; by default X.Y is read from the tag and the
    newest pyenv patch release of it is used.
    """
    with _locked(tag):
        if image_present(tag):
            return tag
        if python is None:
            m = re.search(r":(\d+\.\d+)", tag)
            if not m:
                raise SystemExit(f"can't tell the Python version from {tag!r}; pass python=")
            python = m.group(1)
        version = newest_patch(python)
        base = ensure_minbase()
        t0 = time.time()
        log(f"building {tag} from {base} + pyenv {version}")
        with tempfile.TemporaryFile(prefix="envrepro-standin-ctx-") as ctx:
            _python_context(version, base, ctx)
            ctx.seek(0)
            proc = subprocess.run(["docker", "build", "-q", "--force-rm", "-t", tag, "-"], stdin=ctx,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise SystemExit(f"building {tag} failed:\n{proc.stdout.decode(errors='replace')[-3000:]}")
        log(f"{tag} ready in {time.time() - t0:.0f}s")
        return tag


def main(argv: List[str]) -> int:
    for arg in argv or ["3.8"]:
        xy = ".".join(arg.split(".")[:2])
        ensure_standin(f"python:{xy}-slim", arg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
