# ---- the model server (envrepro dockerfile --serve), on the environment above ----
# Layers from least to most specific, so models of one environment share all but the last:
# envrepro's runtime (the server), the capture's snapshot and reference, the plan, the model.
# Everything is owned by root and read-only for the server's user; no CA, pip configuration or
# credential is copied here (they stay in the environment's builder stages).
COPY serve/lib/ ${SERVE_ROOT}/lib/
COPY serve/capture/ ${CAPTURE_DIR}/
COPY serve/plan.json ${PLAN_FILE}
COPY serve/model/ ${MODEL_DIR}/
${SERVE_ENV}
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}${LIVE_PATH}', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ${ENTRYPOINT}
${LABELS}
