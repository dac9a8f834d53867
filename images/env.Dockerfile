# envrepro environment image, rendered from envrepro's images/env.Dockerfile.
# Python ${PYTHON_VERSION} + the exact lock of the captured environment, nothing else: the model,
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
${PYTHON_STAGE}
FROM ${PYTHON_BASE} AS envrepro-base
ENV VIRTUAL_ENV=${VENV} \
    PATH=${VENV}/bin:$$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/envrepro
RUN set -e; \
    if command -v useradd >/dev/null 2>&1; then \
      groupadd --gid ${USER_UID} envrepro; \
      useradd --uid ${USER_UID} --gid ${USER_UID} --home-dir /home/envrepro --create-home --shell /bin/sh envrepro; \
    else \
      echo 'envrepro:x:${USER_UID}:${USER_UID}:envrepro:/home/envrepro:/bin/sh' >> /etc/passwd; \
      echo 'envrepro:x:${USER_UID}:' >> /etc/group; \
      mkdir -p /home/envrepro; chown ${USER_UID}:${USER_UID} /home/envrepro; \
    fi

FROM ${PYTHON_BASE} AS heavy-builder
LABEL org.envrepro.stage="builder"
${PIP_ENV}
COPY build/ ${BUILD_DIR}/
# No ensurepip: the base's pip installs into the venv (pip.sh), so the venv holds the lock only.
RUN sh ${BUILD_DIR}/pip.sh --create
${HEAVY_STEPS}

FROM envrepro-base AS envrepro-heavy
COPY --from=heavy-builder ${VENV} ${VENV}
${REST_STAGE}
FROM envrepro-heavy
${REST_OVERLAY}
USER ${USER_UID}:${USER_UID}
WORKDIR /home/envrepro
${LABELS}
