# Python ${PYTHON_VERSION} for a base image that has none (the CUDA/cuDNN bases for --gpus), built
# from the python.org source of the exact captured version. Only /usr/local leaves this stage.
FROM ${CUDA_BASE} AS envrepro-python-build
ENV DEBIAN_FRONTEND=noninteractive
COPY build/ca.crt /etc/envrepro-build/ca.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential \
      libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev libffi-dev liblzma-dev \
      libncursesw5-dev uuid-dev libgdbm-dev \
 && rm -rf /var/lib/apt/lists/*
RUN set -e; \
    cacert=""; if [ -s /etc/envrepro-build/ca.crt ]; then cacert="--cacert /etc/envrepro-build/ca.crt"; fi; \
    curl -fsSL $$cacert -o /tmp/python.tgz https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tgz; \
    mkdir /tmp/python; tar -xzf /tmp/python.tgz -C /tmp/python --strip-components=1; cd /tmp/python; \
    ./configure --prefix=/usr/local --enable-shared --with-ensurepip=install LDFLAGS=-Wl,-rpath,/usr/local/lib; \
    make -j"$$(nproc)"; make install; \
    cd /usr/local/bin; ln -sf python${PYTHON_XY} python3; ln -sf python3 python; ln -sf pip3 pip; \
    find /usr/local -depth -type d -name test -path '*/python${PYTHON_XY}/test' -exec rm -rf {} +; \
    rm -rf /tmp/python /tmp/python.tgz

FROM ${CUDA_BASE} AS envrepro-python
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PATH=/usr/local/bin:$$PATH
# The -dev packages pull in the matching runtime libraries whatever the Ubuntu release is called.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
      libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev libffi-dev liblzma-dev \
      libncursesw5-dev uuid-dev libgdbm-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=envrepro-python-build /usr/local /usr/local
RUN ldconfig && python3 --version
