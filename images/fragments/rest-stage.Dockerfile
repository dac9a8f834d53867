## The rest of the lock is installed on top of the heavy venv, then only the files that install
## added (newer than a mark) are copied out: the final image's last layer is that small overlay.
## (Lines starting with ## explain a fragment and are not rendered.)

FROM envrepro-heavy AS rest-builder
LABEL org.envrepro.stage="builder"
${PIP_ENV} \
    PYTHONDONTWRITEBYTECODE=
COPY build/ ${BUILD_DIR}/
RUN touch ${BUILD_DIR}/mark
${STEPS}
RUN mkdir -p /overlay && cd / && \
    find .${VENV} \( -type f -o -type l \) -newer ${BUILD_DIR}/mark -print0 | xargs -0 -r cp -a --parents -t /overlay

