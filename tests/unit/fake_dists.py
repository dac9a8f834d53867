"""Fake installed distributions (the probe's format) and a tiny local project, for the tests of
the lock writer and its parts."""
from pathlib import Path

PY38 = {"version": "3.8.18", "sys_platform": "linux", "machine": "x86_64",
        "implementation": "CPython"}
PY311 = dict(PY38, version="3.11.7")


def dist(name, version, *requires, **extra):
    d = {"name": name, "version": version, "requires": list(requires),
         "location": "/venv/lib/python3.8/site-packages", "installer": "pip",
         "direct_url": None, "editable": False, "top_level": [name.replace("-", "_")],
         "metadata_dir": f"/venv/lib/python3.8/site-packages/{name}-{version}.dist-info"}
    d.update(extra)
    return d


def project(root: Path, name="envrepro-testpkg", version="0.1.0", broken=False) -> Path:
    root.mkdir(parents=True)
    (root / "setup.py").write_text(
        "raise SystemExit('broken on purpose')\n" if broken else
        f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, "
        "py_modules=['envrepro_testmod'])\n")
    (root / "envrepro_testmod.py").write_text("VALUE = 1\n")
    return root
