"""Fake probes: small executable Python scripts that stand in for the training interpreter and
crash, hang, kill themselves or write garbage, run by the real proberunner (and the real CLI).

A fake receives the probe's argv (``-B -c CODE --model M --out O``); ``out`` is the probe's
output folder."""
import sys


def fake_probe(folder, body, name="fakepython"):
    """An executable in ``folder`` that stands in for the training interpreter and runs ``body``
    (``os``, ``signal``, ``subprocess``, ``sys``, ``time`` and ``out`` are at hand)."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport os, signal, subprocess, sys, time\n"
                    "out = sys.argv[sys.argv.index('--out') + 1]\n" + body)
    path.chmod(0o755)
    return str(path)


def alive(pid):
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
