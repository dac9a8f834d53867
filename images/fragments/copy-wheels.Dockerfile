COPY wheels/ ${WHEELS_DIR}/
