## One lock file installed by pip.sh; FLAGS say whether hashes are required and where local wheels are.
COPY ${FILE} ${BUILD_DIR}/${FILE}
RUN sh ${BUILD_DIR}/pip.sh install ${FLAGS} -r ${BUILD_DIR}/${FILE}
