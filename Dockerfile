# renkei: one image for every part of the stack (control worker, agency workers, HTTP API and
# codec server, one-shot init). The command chooses the part: see docker-compose.yml.
FROM python:3.11-slim-bookworm

# Graphviz draws the BPF diagrams (SVG) for the catalog; the Debian version of the image's release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 renkei \
    && useradd --system --uid 10001 --gid renkei --home-dir /app renkei

WORKDIR /app
COPY pyproject.toml README.md ./
COPY renkei ./renkei
COPY workflows ./workflows
COPY activities ./activities
COPY whitelist ./whitelist
COPY workers ./workers
# A regular install: the sample definitions, whitelist data, migrations and tariffs ship as
# package data, and pip compiles every module, so the workflow sandbox imports bytecode.
RUN pip install --no-cache-dir . \
    && rm -rf /app/renkei /app/workflows /app/activities /app/whitelist /app/workers

USER 10001:10001
ENV PYTHONUNBUFFERED=1 \
    RENKEI_WEB_HOST=0.0.0.0 \
    RENKEI_DATA_DIR=/app/.renkei

EXPOSE 8234 9464
ENTRYPOINT ["renkei"]
CMD ["--help"]
