"""Serving a captured model from its reproduced environment (host side).

``context`` renders the serving Dockerfile and build context, ``proof`` starts the image and
checks its answers against the capture's reference, ``image`` builds, labels and runs it; ``k8s``
writes Kubernetes manifests. The server itself runs inside the image: envrepro/runtime/serve/.
"""
