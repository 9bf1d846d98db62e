# Folio's container image: the release `folio` binary on a Debian base, run as a non-root user,
# with its data under one volume. No RUN step, so the image builds without a shell or network in
# the base, and nothing in it needs a shell at run time.
#
# The build context holds `folio` (the release binary) and an empty `data/` directory:
# `scripts/image.sh` prepares it, builds the binary if needed, and (on a machine that reaches no
# image registry) first makes a base from Debian's packages with debootstrap. Elsewhere:
#   docker build --build-arg BASE=debian:bookworm-slim -t folio:dev <context>
# The binary links glibc and libstdc++ dynamically: the base must be Debian bookworm or newer.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

COPY folio /usr/local/bin/folio
COPY --chown=10001:10001 data/ /var/lib/folio/

# A fixed numeric id: Kubernetes' runAsNonRoot can check it, and no passwd entry is needed.
USER 10001:10001
WORKDIR /var/lib/folio
VOLUME ["/var/lib/folio"]
# gRPC (client API, admin, Raft peers) and HTTP (/metrics, /livez, /readyz).
EXPOSE 7070 9090
ENV FOLIO_LOG=info,openraft=warn
ENTRYPOINT ["/usr/local/bin/folio"]
CMD ["server", "--config", "/etc/folio/folio.toml"]
