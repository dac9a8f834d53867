#!/bin/sh
# envrepro: install one part of the lock from the host's wheelhouse, in a container with no
# network, that is then committed as one image layer (envrepro/build/commitbuild.py).
# /mnt holds (read-only) this script, pip.sh, the part's lock files and wheels/: only the files
# the lock pins, each checked against the lock by the host and again by pip (--require-hashes).
# No index, pip configuration, CA bundle or credential is ever in this container.
#   heavy: the envrepro user, the venv, the captured setuptools/wheel, TensorFlow's closure
#   rest:  the rest of the lock (its hashless entries last, named)
set -e
# PYTHONDONTWRITEBYTECODE=1 stays set: the base's own pip modules leave no .pyc in the layer,
# while pip still compiles what it installs (it calls compileall, which ignores the setting).
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
       PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off
FIND="--find-links /mnt/wheels"
if [ -d ${WHEELS_DIR} ]; then FIND="$$FIND --find-links ${WHEELS_DIR}"; fi
install() {   # lock file, extra pip flags
  if [ -f "/mnt/$$1" ]; then
    echo "envrepro: installing $$1 from the wheelhouse (no index) $$2"
    sh /mnt/pip.sh install --no-index --no-deps $$FIND $$2 -r "/mnt/$$1"
  fi
}
HASHES=""
if [ -f /mnt/require-hashes ]; then HASHES="--require-hashes"; fi
case "$$1" in
  heavy)
    if command -v useradd >/dev/null 2>&1; then
      groupadd --gid ${USER_UID} envrepro
      useradd --uid ${USER_UID} --gid ${USER_UID} --home-dir /home/envrepro --create-home --shell /bin/sh envrepro
    else
      echo 'envrepro:x:${USER_UID}:${USER_UID}:envrepro:/home/envrepro:/bin/sh' >> /etc/passwd
      echo 'envrepro:x:${USER_UID}:' >> /etc/group
      mkdir -p /home/envrepro; chown ${USER_UID}:${USER_UID} /home/envrepro
    fi
    sh /mnt/pip.sh --create
    install tools.lock ""
    install heavy.lock "$$HASHES"
    ;;
  rest)
    install rest.lock "$$HASHES"
    if [ -f /mnt/unverified.lock ]; then
      echo "envrepro: installed without hash verification: $$(cat /mnt/unverified-names)"
      install unverified.lock ""
    fi
    ;;
  *) echo "usage: wheelhouse-install.sh heavy|rest" >&2; exit 2 ;;
esac
