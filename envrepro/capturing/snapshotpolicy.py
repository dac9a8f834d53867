"""What a snapshot may copy out of a custom module's package, and why a file is left out.

A snapshot copies a custom module with its whole top-level package, and captures travel to
other people, so anything under the package root would travel with the model. The policy:

- **Regular files only.** A FIFO, socket or device file (or a link to one) is never opened: the
  copier decides from ``lstat``/``stat`` first, and opens with ``O_NONBLOCK`` then checks the open
  file again, so a named pipe can't hang a capture and a device can't be read.
- **A denylist of names, not an allowlist of suffixes.** Package data has no closed list of
  suffixes: a vocabulary ``.txt``, a tokenizer ``.json``, a sentencepiece ``.model``, a ``.npy``
  table, a file without a suffix, and native extensions (``.so``, ``.pyd``) a module imports.
  An allowlist would drop some of them, and the model would fail to load far from the capture,
  in a container. So everything is copied except:
  - names that look like secrets (:data:`SECRET_FILES`, :data:`SECRET_FOLDERS`): ``.env``,
    private keys and certificates, ``id_rsa``, ``.netrc``, ``credentials*``, ``secrets.*``...;
  - hidden files and folders (a leading dot): configuration and tool state, not package data
    (no module or subpackage has a name that starts with a dot);
  - files whose content holds a PEM/OpenSSH/PGP private key, whatever their name.
  Bytecode and cache folders (``snapshot.SKIP_DIRS``) are left out as before, silently: they
  are rebuilt, never needed.
- **The files the probe named stay.** A module file that defines the model's custom objects (and
  a folder holding one) is copied even if its name matches a rule (``mypkg/credentials.py``):
  the model can't load without it. Its content is still checked for private keys.

Every file left out is reported with its reason (``SnapshotResult.skipped``, one capture
warning); the size cap in ``snapshot`` still stops a package that holds a dataset.
"""
from __future__ import annotations

import fnmatch
import re
import stat
from typing import Optional

# Lower-cased file names (fnmatch patterns) that hold credentials far more often than package data.
SECRET_FILES = (
    ".env", ".env.*", "*.env", ".envrc", ".netrc", "_netrc", ".pypirc", ".npmrc", ".yarnrc",
    ".yarnrc.yml", ".pgpass", ".htpasswd", ".git-credentials", ".dockercfg", ".s3cfg", ".boto",
    ".my.cnf", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12",
    "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ppk", "*.keytab", "*.ovpn", "*.tfstate",
    "*.tfstate.*", "*.tfvars", "credentials*", "secrets.*", "secret.*", "client_secret*",
    "service-account*.json", "service_account*.json",
)
# Lower-cased folder names that hold credentials (another user's home folder parts, k8s secrets).
SECRET_FOLDERS = frozenset({"secrets", "credentials", ".ssh", ".aws", ".gnupg", ".docker", ".kube",
                            ".azure", ".gcloud"})

PRIVATE_KEY_RE = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PRIVATE_KEY_TAIL = 80   # bytes kept between chunks so a header split by a chunk boundary matches

SECRET = "looks like a secret"
HIDDEN = "hidden, not package data"
PRIVATE_KEY = "holds a private key"


def secret_name(name: str) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, pattern) for pattern in SECRET_FILES)


def file_name_reason(name: str) -> Optional[str]:
    """Why a file of this name is left out of a snapshot, or None to copy it."""
    if secret_name(name):
        return SECRET
    if name.startswith("."):
        return HIDDEN
    return None


def folder_name_reason(name: str) -> Optional[str]:
    """Why a folder of this name is left out of a snapshot (with all it holds), or None."""
    if name.lower() in SECRET_FOLDERS:
        return SECRET
    if name.startswith("."):
        return HIDDEN
    return None


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in a word or two."""
    for test, what in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return what
    return "special file"
