# envrepro environment image, rendered from envrepro's images/env.Dockerfile.
# Python ${PYTHON_VERSION} + the exact lock of the captured environment, nothing else: the model,
# its snapshot and envrepro's runtime scripts are mounted read-only at run time, never baked in.
#
# Stage "builder" gets the host's pip configuration (index URLs, possibly with credentials) and CA
# bundle. The final stage copies only the virtual environment out of it, so neither reaches the
# final image, its history or its layers (classic builder: no BuildKit secrets needed).
# Source-only pins (sdists) are built in pip's isolated build environment (PIP_USE_PEP517), which
# brings setuptools and wheel without adding them to the environment itself.
${PYTHON_STAGE}
FROM ${PYTHON_BASE} AS builder
ENV PIP_CONFIG_FILE=/etc/envrepro-build/pip.conf \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_USE_PEP517=1
COPY build/ /etc/envrepro-build/
RUN python3 -m venv /opt/envrepro/venv
${INSTALL_STEPS}

FROM ${PYTHON_BASE}
ENV VIRTUAL_ENV=/opt/envrepro/venv \
    PATH=/opt/envrepro/venv/bin:$$PATH \
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
COPY --from=builder /opt/envrepro/venv /opt/envrepro/venv
USER 10001:10001
WORKDIR /home/envrepro
${LABELS}
