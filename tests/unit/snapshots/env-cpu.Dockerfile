# envrepro environment image, rendered from envrepro's images/env.Dockerfile.
# Python 3.8.18 + the exact lock of the captured environment, nothing else: the model,
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

FROM python:3.8-slim AS envrepro-base
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

FROM python:3.8-slim AS heavy-builder
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

FROM envrepro-heavy AS rest-builder
LABEL org.envrepro.stage="builder"
ENV PIP_CONFIG_FILE=/etc/envrepro-build/pip.conf \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_USE_PEP517=1 \
    PYTHONDONTWRITEBYTECODE=
COPY build/ /etc/envrepro-build/
RUN touch /etc/envrepro-build/mark
COPY rest.lock /etc/envrepro-build/rest.lock
RUN sh /etc/envrepro-build/pip.sh install --no-deps --no-cache-dir --require-hashes -r /etc/envrepro-build/rest.lock
RUN mkdir -p /overlay && cd / && \
    find ./opt/envrepro/venv \( -type f -o -type l \) -newer /etc/envrepro-build/mark -print0 | xargs -0 -r cp -a --parents -t /overlay

FROM envrepro-heavy
COPY --from=rest-builder /overlay/ /
USER 10001:10001
WORKDIR /home/envrepro
LABEL org.envrepro.key="kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk" \
      org.envrepro.python="3.8.18"
