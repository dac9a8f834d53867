# pip checks hashes all-or-nothing: these lock entries have none, so they are
# installed after the verified ones, without --require-hashes.
${INSTALL}
RUN echo 'envrepro: installed without hash verification: ${NAMES}'
