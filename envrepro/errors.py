"""The few error types users see.

The library only raises; the CLI edge (``envrepro.cli``) turns each type into one line and the
exit code named here. Exceptions hold data and build their message in ``__str__``.
"""
from __future__ import annotations

from typing import Optional

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_RISKY = 1          # doctor: loads but risky
EXIT_BAD_INPUT = 2      # bad model path or format, bad/unknown/incomplete capture, tampered
                        # snapshot, a capture probe that failed, was killed or timed out
EXIT_NO_ENGINE = 3      # no Docker engine reachable
EXIT_BUILD_FAILED = 4   # image build failed
EXIT_LOAD_FAILED = 5    # load_model raised inside the container
EXIT_MISMATCH = 6       # loaded, but the reference, optimizer state or resume step differs
EXIT_INTERNAL = 70      # a bug in envrepro (traceback with --debug)


class EnvreproError(Exception):
    """Base class: a user-facing error with a path, a reason and a fix; ``detail`` is the
    output behind that line (a probe's stderr), printed only with --debug."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, what: str, path: Optional[str] = None, fix: Optional[str] = None,
                 detail: Optional[str] = None):
        super().__init__(what)
        self.what = what
        self.path = path
        self.fix = fix
        self.detail = detail

    def __str__(self) -> str:
        msg = self.what
        if self.path:
            msg = f"{self.path}: {msg}"
        if self.fix:
            msg = f"{msg} ({self.fix})"
        return msg


class ModelNotFound(EnvreproError):
    """No model (SavedModel dir, .h5 or .keras file) at the path given."""


class CaptureError(EnvreproError):
    """A capture could not be written (probe failed, lock failed, unsafe snapshot...)."""


class InvalidCapture(EnvreproError):
    """A capture exists but can't be trusted: unreadable, unknown schema, incomplete, tampered."""


class ProbeError(CaptureError):
    """The probe failed inside the training interpreter: it raised, was killed, gave no answer
    in time or answered with something that is not facts. Exit code 2, as bad input: the model
    or the environment given can't be captured as they are."""


class NoEngine(EnvreproError):
    exit_code = EXIT_NO_ENGINE


class BuildFailed(EnvreproError):
    exit_code = EXIT_BUILD_FAILED


class LoadFailed(EnvreproError):
    exit_code = EXIT_LOAD_FAILED


class VerificationMismatch(EnvreproError):
    exit_code = EXIT_MISMATCH


class PlatformError(BuildFailed):
    """A capture made on macOS or Windows can't be turned into a Linux environment: packages with
    no Linux build, or the re-resolution for Linux failed (or can't run on this host).

    Raised before anything is built. Exit code 4, as a failed build: the capture itself is valid
    (not bad input), but its environment can't be built here; the message names the packages.
    """


class BrokenInstall(EnvreproError):
    """A file or module envrepro ships is missing from its install (a deleted template, a
    half-copied site-packages). Exit 70, like an internal error, with the one fix that works."""

    exit_code = EXIT_INTERNAL
    FIX = "pip install --force-reinstall envrepro"

    @classmethod
    def missing(cls, shipped_path: str) -> "BrokenInstall":
        return cls(f"envrepro's install is incomplete: {shipped_path} is missing", None, cls.FIX)
