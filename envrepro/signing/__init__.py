"""Signed captures: ``envrepro sign`` and ``envrepro verify``, and the ``require_signature`` gate.

One signature covers a model and its capture together, file by file (``scope``). It is an OpenSSF
model signing (``model-signing``) signature made with a private EC key, offline (``openssf``:
the one module that imports the library, an optional extra). ``payload`` reads what a signature
lists without a key, to name what differs; ``signature`` signs and verifies; ``gate`` is what
``load``, ``run``, ``shell``, ``build``, ``serve``, ``push``, ``bundle`` and bundle loads pass
through (config ``trusted_keys:`` and ``require_signature:``). docs/format.md and
docs/threat-model.md ("Signed captures") describe the design.
"""
