"""The one adapter to pip-tools and pip: what the package index has for each pin.

Hashes come from pip-tools (``PyPIRepository.get_hashes``, what ``pip-compile --generate-hashes``
uses), honouring the host's pip configuration, but only its http(s) indexes: local ``file://``
indexes and ``--find-links`` folders are ignored, their files would not be reachable from the
image build. The same lookup tells whether a wheel exists for a Linux container of the training
Python (``sdist_only``), and serves the platform translation of a macOS/Windows lock
(``envrepro.packages.platforms``). An unreachable index is detected within ~3 s and is not an error.

Import cost matters: neither pip nor pip-tools is imported until an index is asked.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from envrepro.packages.pipcmd import packaging_module, redact
from envrepro.jsoncache import JsonCache, key_of
from envrepro.sidecar.lockfile import canonical_name, is_http_url

# The image build runs in python:X.Y-slim (Debian bookworm, glibc 2.36) unless overridden; wheel
# compatibility ("sdist_only") is judged for a Linux container of the training Python/arch.
DEFAULT_TARGET_GLIBC = (2, 36)

HASH_WORKERS = 8
REACHABILITY_TIMEOUT = 3.0
INDEX_TIMEOUT = 15           # pip's per-socket timeout while hashing
INDEX_RETRIES = 2


def hashes_wanted() -> bool:
    """Whether a capture asks the index for hashes by default: not when ENVREPRO_OFFLINE is set."""
    return os.environ.get("ENVREPRO_OFFLINE", "") in ("", "0", "false", "no")


@dataclass
class IndexInfo:
    """What the index has for one ``name==version``, judged for a Linux target."""

    hashes: Set[str]
    wheel_ok: bool = False       # a wheel compatible with the Linux target exists
    sdist: bool = False
    found: bool = False          # the index has files for name==version
    error: Optional[str] = None


def _split_urls(value: Any) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def _pip_args(pip_settings: Optional[Mapping[str, Any]]) -> List[str]:
    args = ["--timeout", str(INDEX_TIMEOUT), "--retries", str(INDEX_RETRIES), "--no-input",
            "--disable-pip-version-check"]
    s = dict(pip_settings or {})
    if s.get("index_url"):
        args += ["--index-url", str(s["index_url"])]
    for url in _split_urls(s.get("extra_index_urls") or s.get("extra_index_url")):
        args += ["--extra-index-url", url]
    for host in _split_urls(s.get("trusted_hosts") or s.get("trusted_host")):
        args += ["--trusted-host", host]
    for key, flag in (("cert", "--cert"), ("client_cert", "--client-cert"), ("proxy", "--proxy")):
        if s.get(key):
            args += [flag, str(s[key])]
    if s.get("timeout"):
        args[1] = str(int(float(s["timeout"])))
    return args


def _strip_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _reachable(url: str, cert: Optional[str], client_cert: Optional[str],
               trusted_hosts: Sequence[str], proxy: Optional[str],
               timeout: float = REACHABILITY_TIMEOUT) -> Optional[str]:
    """None if the index answers at all (any HTTP status), else the error in one line."""
    import ssl
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a redirect is an answer: don't follow it (it may be a big page)

    url = _strip_userinfo(url)
    host = urllib.parse.urlsplit(url).hostname or ""
    ctx = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None,
                                     capath=cert if cert and os.path.isdir(cert) else None)
    if any(host == t.split(":")[0] for t in trusted_hosts):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        with contextlib.suppress(Exception):
            ctx.load_cert_chain(client_cert)
    handlers: List[Any] = [urllib.request.HTTPSHandler(context=ctx), _NoRedirect()]
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "envrepro (reachability check)"})
    try:
        with opener.open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None      # it answered: reachable (401/403/404/405 included)
    except Exception as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def linux_target_tags(python_facts: Mapping[str, Any]) -> Set[Tuple[str, str, str]]:
    """(interpreter, abi, platform) tags a Linux container of the training Python accepts."""
    tags = packaging_module("tags")

    nums = [int(x) for x in re.findall(r"\d+", str(python_facts.get("version") or "3"))[:2]]
    major, minor = (nums + [0, 0])[:2]
    machine = str(python_facts.get("machine") or "x86_64").lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686",
            "x86": "i686"}.get(machine, machine)
    glibc = python_facts.get("target_glibc") or DEFAULT_TARGET_GLIBC
    if isinstance(glibc, str):
        glibc = tuple(int(x) for x in re.findall(r"\d+", glibc)[:2])
    gmajor, gminor = int(glibc[0]), int(glibc[1])
    platforms = [f"manylinux_{gmajor}_{m}_{arch}" for m in range(gminor, 4, -1)]
    legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
    for (lm, ln), alias in legacy.items():
        if (gmajor, gminor) >= (lm, ln):
            platforms.append(f"{alias}_{arch}")
    platforms.append(f"linux_{arch}")
    impl = str(python_facts.get("implementation") or "CPython").lower()
    result: List[Any] = []
    version = (major, minor)
    if impl == "cpython":
        abi = f"cp{major}{minor}" + ("m" if version < (3, 8) else "")
        result.extend(tags.cpython_tags(version, abis=[abi], platforms=platforms))
        interpreter = f"cp{major}{minor}"
    else:
        interpreter = f"pp{major}{minor}" if impl == "pypy" else None
    result.extend(tags.compatible_tags(version, interpreter=interpreter, platforms=platforms))
    return {(t.interpreter, t.abi, t.platform) for t in result}


def wheel_tags(filename: str) -> Set[Tuple[str, str, str]]:
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return set()
    pys, abis, plats = parts[-3], parts[-2], parts[-1]
    return {(p, a, pl) for p in pys.split(".") for a in abis.split(".") for pl in plats.split(".")}


def _python_ok(requires_python: Optional[str], version: str) -> bool:
    if not requires_python:
        return True
    try:
        SpecifierSet = packaging_module("specifiers").SpecifierSet
        return SpecifierSet(requires_python).contains(version, prereleases=True)
    except Exception:
        return True


@contextlib.contextmanager
def _pip_logging_contained() -> Iterator[None]:
    """pip-tools calls ``logging.basicConfig()`` on import and pip's ``setup_logging``
    (``dictConfig``, which closes existing handlers) when a repository is made: keep both away
    from the training process's logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pip_logger = logging.getLogger("pip")
    pip_level = pip_logger.level
    pip_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        pip_logger.setLevel(pip_level)


def _make_repository(pip_settings: Optional[Mapping[str, Any]], warnings: List[str]
                     ) -> Tuple[Any, List[str], Dict[str, Any]]:
    """A pip-tools PyPIRepository on the host's pip configuration; (repo, http index urls,
    connection settings). Import and construction happen here, lazily."""
    import warnings as _warnings

    with _pip_logging_contained(), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)  # pkg_resources, via pip-tools
        import piptools.repositories.pypi as pypi_mod
        from piptools.locations import CACHE_DIR

        class _Repository(pypi_mod.PyPIRepository):  # type: ignore[misc, valid-type]
            """pip-tools' repository, also taking the sha256 the index publishes with each
            file link (PEP 503 ``#sha256=`` / PEP 691 ``hashes``).

            pip-tools asks the index's JSON API for hashes and downloads and hashes every file
            it can't find there; that API is a PyPI extension (mirrors and proxies often lack
            it), and downloading every wheel of a TensorFlow release takes minutes. The set of
            files and the resulting hashes are the same.
            """

            _matching: Dict[Tuple[str, str], Any] = {}

            def _get_matching_candidates(self, ireq: Any) -> Any:
                # pip-tools filters thousands of candidates (grpcio, numpy) with a specifier,
                # several times per pin: once is enough.
                key = (canonical_name(ireq.name), str(ireq.specifier))
                found = self._matching.get(key)
                if found is None:
                    found = self._matching[key] = super()._get_matching_candidates(ireq)
                return found

            def _get_hashes_from_pypi(self, ireq: Any) -> Dict[str, str]:
                by_link: Dict[str, str] = {}
                matching = self._get_matching_candidates(ireq)
                for candidate in matching:
                    digest = _link_sha256(candidate.link)
                    if digest:
                        by_link[candidate.link.url] = f"sha256:{digest}"
                if len(by_link) < len(matching):
                    for url, digest in super()._get_hashes_from_pypi(ireq).items():
                        by_link.setdefault(url, digest)
                return by_link

        original = pypi_mod.setup_logging
        pypi_mod.setup_logging = lambda *a, **k: None
        try:
            repo = _Repository(_pip_args(pip_settings), cache_dir=CACHE_DIR)
        finally:
            pypi_mod.setup_logging = original
    opts = repo.options
    if pip_settings and ("extra_index_urls" in pip_settings
                         or "extra_index_url" in pip_settings):
        opts.extra_index_urls = _split_urls(pip_settings.get("extra_index_urls")
                                            or pip_settings.get("extra_index_url"))
    urls = [] if getattr(opts, "no_index", False) else \
        [opts.index_url] + list(opts.extra_index_urls or [])
    http_urls = [u for u in dict.fromkeys(urls) if is_http_url(u)]
    conn = {"cert": opts.cert, "client_cert": opts.client_cert,
            "trusted_hosts": list(opts.trusted_hosts or []), "proxy": opts.proxy}
    return repo, http_urls, conn


def _link_sha256(link: Any) -> Optional[str]:
    """The sha256 the index published with a file link, if any."""
    published = getattr(link, "_hashes", None)
    if isinstance(published, dict) and published.get("sha256"):
        return str(published["sha256"])
    if getattr(link, "hash_name", None) == "sha256" and getattr(link, "hash", None):
        return str(link.hash)
    return None


def _use_only(repo: Any, index_urls: List[str], warnings: List[str]) -> None:
    """Point the repository's finder at the reachable http(s) indexes only (no file:// indexes,
    no find-links), accepting files for any Python (the target is not this interpreter)."""
    opts = repo.options
    opts.index_url = index_urls[0]
    opts.extra_index_urls = index_urls[1:]
    opts.find_links = []
    opts.no_index = False
    try:
        finder = repo.command._build_package_finder(options=opts, session=repo.session,
                                                    ignore_requires_python=True)
        if not hasattr(repo, "_finder"):
            raise AttributeError("PyPIRepository._finder")
        repo._finder = finder
    except Exception as exc:  # pragma: no cover - other pip-tools internals
        warnings.append(f"could not restrict pip-tools to the http(s) indexes ({exc}); "
                        "hashes may include files from local indexes")


def _index_info(repo: Any, name: str, version: str, target_tags: Set[Tuple[str, str, str]],
                target_version: str) -> IndexInfo:
    from pip._internal.req.constructors import install_req_from_line

    info = IndexInfo(hashes=set())
    try:
        ireq = install_req_from_line(f"{name}=={version}")
        try:
            candidates = list(repo._get_matching_candidates(ireq))
        except IndexError:  # pip-tools: no candidate has that version
            candidates = []
        if not candidates:
            info.error = "not on the index"
            return info
        info.found = True
        for c in candidates:
            link = c.link
            if link.is_wheel:
                if (wheel_tags(link.filename) & target_tags
                        and _python_ok(link.requires_python, target_version)):
                    info.wheel_ok = True
            else:
                info.sdist = True
        info.hashes = set(repo.get_hashes(ireq))
    except Exception as exc:
        info.error = redact(f"{type(exc).__name__}: {exc}")
    return info


def lookup_index(pins: Mapping[str, str], python_facts: Mapping[str, Any],
                 pip_settings: Optional[Mapping[str, Any]] = None,
                 warnings: Optional[List[str]] = None
                 ) -> Tuple[Optional[Dict[str, IndexInfo]], str]:
    """Ask the host's http(s) indexes about each ``name==version`` of ``pins``: its sha256
    hashes, and whether a wheel for a Linux container of ``python_facts`` (version, machine,
    implementation) or an sdist exists. ``({name: info}, reason)``, or ``(None, reason)``
    when no index answers (~3 s). Used for the capture's hashes and for translating a macOS
    or Windows lock for Linux (``envrepro.packages.platforms``).
    """
    import concurrent.futures

    warnings = warnings if warnings is not None else []
    try:
        repo, http_urls, conn = _make_repository(pip_settings, warnings)
    except Exception as exc:
        return None, redact(f"could not set up pip-tools ({type(exc).__name__}: {exc})")
    if not http_urls:
        return None, "no http(s) package index configured"
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(http_urls)) as pool:
        errors = list(pool.map(lambda u: _reachable(u, conn["cert"], conn["client_cert"],
                                                    conn["trusted_hosts"], conn["proxy"]),
                               http_urls))
    reachable = [u for u, e in zip(http_urls, errors) if e is None]
    if not reachable:
        return None, "offline: " + "; ".join(f"{_strip_userinfo(u)} unreachable ({e})"
                                             for u, e in zip(http_urls, errors))
    for u, e in zip(http_urls, errors):
        if e is not None:
            warnings.append(f"index {_strip_userinfo(u)} unreachable ({e}); hashed without it")
    _use_only(repo, reachable, warnings)
    target_tags = linux_target_tags(python_facts)
    target_version = str(python_facts.get("version") or "")
    infos: Dict[str, IndexInfo] = {}
    keys = {n: _info_key(reachable, n, v, target_tags, target_version) for n, v in pins.items()}
    for n, key in keys.items():
        entry = INDEX_CACHE.get(key)
        if entry is not None and isinstance(entry["value"], dict):
            infos[n] = _info_from(entry["value"])
    todo = {n: v for n, v in pins.items() if n not in infos}
    if todo:
        with _pip_logging_contained(), repo.allow_all_wheels():
            with concurrent.futures.ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
                futures = {pool.submit(_index_info, repo, n, v, target_tags, target_version): n
                           for n, v in todo.items()}
                for future in concurrent.futures.as_completed(futures):
                    n = futures[future]
                    infos[n] = future.result()
                    if infos[n].found and infos[n].error is None:
                        INDEX_CACHE.put(keys[n], _info_doc(infos[n]))
    where = ", ".join(_strip_userinfo(u) for u in reachable)
    cached = f"; {len(pins) - len(todo)} of {len(pins)} from the cache" if len(todo) < len(pins) else ""
    return infos, f"sha256 of every file of each release on {where} (pip-tools{cached})"


# What an index answered for one release, reused for a day: files of a release on an index are
# immutable, but wheels can be added to it, which changes ``wheel_ok`` (hence the expiry).
INDEX_CACHE = JsonCache("index", 24 * 3600)


def _info_key(urls: Sequence[str], name: str, version: str, tags: Set[Tuple[str, str, str]],
              target_version: str) -> str:
    return key_of({"v": 1, "urls": sorted(_strip_userinfo(u) for u in urls), "name": canonical_name(name),
                   "version": version, "tags": sorted(map(list, tags)), "python": target_version})


def _info_doc(info: IndexInfo) -> Dict[str, Any]:
    return {"hashes": sorted(info.hashes), "wheel_ok": info.wheel_ok, "sdist": info.sdist}


def _info_from(doc: Mapping[str, Any]) -> IndexInfo:
    hashes = {h for h in doc.get("hashes") or [] if isinstance(h, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", h)}
    return IndexInfo(hashes=hashes, wheel_ok=bool(doc.get("wheel_ok")), sdist=bool(doc.get("sdist")),
                     found=True)
