# envrepro environment image, rendered from envrepro's images/env.Dockerfile.
# Python 3.11.7 + the exact lock of the captured environment, nothing else: the model,
# its snapshot and envrepro's runtime scripts are mounted read-only at run time, never baked in.
#
# The builder stages get the host's pip configuration (index URLs, possibly with credentials) and
# CA bundle; the final image only receives files copied out of the virtual environment, so neither
# reaches its layers or history (the classic builder has no secret mounts).
# Layers, from most to least shared:
#   envrepro-base   the base image + the envrepro user (every environment on this base)
#   envrepro-heavy  + TensorFlow's dependency closure (every environment with the same closure)
#   final           + the rest of the lock, copied as an overlay of only the files it added
# Source-only pins (sdists) are built in pip's isolated build environment (PIP_USE_PEP517).

FROM python:3.11-slim AS envrepro-base
ENV VIRTUAL_ENV=/opt/envrepro/venv \
    PATH=/opt/envrepro/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/envrepro
RUN set -e; \
    if command -v useradd >/dev/null 2>&1; then \
      groupadd --gid 10001 envrepro; \
      useradd --uid 10001 --gid 10001 --home-dir /home/envrepro --create-home --shell /bin/sh envrepro; \
    else \
      echo 'envrepro:x:10001:10001:envrepro:/home/envrepro:/bin/sh' >> /etc/passwd; \
      echo 'envrepro:x:10001:' >> /etc/group; \
      mkdir -p /home/envrepro; chown 10001:10001 /home/envrepro; \
    fi

FROM python:3.11-slim AS heavy-builder
LABEL org.envrepro.stage="builder"
ENV PIP_CONFIG_FILE=/etc/envrepro-build/pip.conf \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_USE_PEP517=1
COPY build/ /etc/envrepro-build/
# No ensurepip: the base's pip installs into the venv (pip.sh), so the venv holds the lock only.
RUN sh /etc/envrepro-build/pip.sh --create
# TensorFlow and its dependency closure: this stage, and its copy into the
# final image, are shared by every environment whose lock differs only outside it.
COPY heavy.lock /etc/envrepro-build/heavy.lock
RUN sh /etc/envrepro-build/pip.sh install --no-deps --no-cache-dir --require-hashes -r /etc/envrepro-build/heavy.lock

FROM envrepro-base AS envrepro-heavy
COPY --from=heavy-builder /opt/envrepro/venv /opt/envrepro/venv

FROM envrepro-heavy

USER 10001:10001
WORKDIR /home/envrepro
LABEL org.envrepro.base="python:3.11-slim" \
      org.envrepro.key="091867f26b3416bdc0a062464bc7462f" \
      org.envrepro.lock-sha256="f86b9af280fa3ea9b40347318eff839a9b6533497a624492d331f78fa2a43f0c" \
      org.envrepro.python="3.11.7" \
      org.envrepro.runtime-version="2" \
      org.envrepro.tensorflow="2.15.1" \
      org.envrepro.translated-for="linux-gpu" \
      org.envrepro.translated-from="linux"
