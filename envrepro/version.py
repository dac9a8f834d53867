"""envrepro's own version, read once from its package metadata (the rooms import it from here,
not from the package, so no room imports the public API in ``envrepro/__init__.py``)."""


def _installed_version() -> str:
    """envrepro's version, from its package metadata: pyproject.toml is the one place it is
    written. A bare checkout on sys.path (never installed) has none and says so."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "0+unknown"
    try:
        return version("envrepro")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()
