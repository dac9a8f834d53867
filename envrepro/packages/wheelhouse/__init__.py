"""The host wheelhouse: the files environment images are installed from, fetched on the host
(``store``, ``fetch``, ``sdists``, ``target``), planned for one lock (``prepare``) and carried
between machines (``portable``). The image is built from it by ``envrepro.image.commitbuild``.
See docs/architecture.md, "Where the bytes come from"."""
