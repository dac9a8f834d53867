COPY --from=rest-builder /overlay/ /
