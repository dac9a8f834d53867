"""The host wheelhouse: the files environment images are installed from, fetched on the host
(where the user's pip configuration, proxy, CA and credentials work), verified against the lock,
kept by sha256 (``store``), and mounted read-only into build containers with no network
(``envrepro.image.commitbuild``). See docs/architecture.md, "Where the bytes come from"."""
from envrepro.packages.wheelhouse.portable import export_for_capture, import_dir

__all__ = ["export_for_capture", "import_dir"]
