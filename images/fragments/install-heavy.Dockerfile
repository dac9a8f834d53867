# TensorFlow and its dependency closure: this stage, and its copy into the
# final image, are shared by every environment whose lock differs only outside it.
${INSTALL}
