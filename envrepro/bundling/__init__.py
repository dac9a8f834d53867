"""Air-gapped bundles: one tar holding a captured model, its capture and its environment (the
image as ``docker save`` output, or with ``--wheels`` the wheelhouse the image builds from).

``layout`` names the members and reads the bundle manifest, ``write`` writes a bundle,
``verify`` checks and stages one (every byte is untrusted), ``extract`` writes one member
safely, ``open`` puts a verified bundle in place and loads its image. docs/format.md "Bundles".
"""
