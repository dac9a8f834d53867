# The captured setuptools/wheel (pip-compile's "unsafe" pins: no hashes)
${INSTALL}
