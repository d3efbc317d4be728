# Vouch: `vouch serve` on port 3000, everything it writes under /var/lib/vouch.
#   docker build -t vouch .
#   docker run -v vouch-data:/var/lib/vouch vouch ca init          # once: the CA key
#   docker run -v vouch-data:/var/lib/vouch -v ./policy.yaml:/etc/vouch/policy.yaml:ro \
#              -e VOUCH_SLACK_BOT_TOKEN=xoxb-… -e VOUCH_SLACK_SIGNING_SECRET=… -p 3000:3000 vouch
# The PKCS#11 module is not in the image: mount it, or derive an image (README, "Container image").
# tests/deploy/test_dockerfile.py keeps the install steps the same as the Makefile's.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/vouch && /opt/vouch/bin/pip install -q --upgrade pip
# The runtime dependencies exactly as locked and hashed, then Vouch alone (no test extras).
COPY requirements.lock ./
RUN /opt/vouch/bin/pip install -q --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY ca ca
COPY access access
COPY storage storage
COPY bot bot
COPY vouch vouch
RUN /opt/vouch/bin/pip install -q --no-deps .

FROM python:3.11-slim-bookworm
# openssh-client: ssh-keygen, to check KRLs and audit checkpoints from inside the container.
# Not pinned: bookworm's security updates should reach each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 vouch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vouch --no-create-home \
       --shell /usr/sbin/nologin vouch \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/vouch \
    && install -d -m 0755 /etc/vouch
COPY --from=builder /opt/vouch /opt/vouch

# Every path Vouch writes is absolute and under the data volume (the audit key, ./audit_key,
# is in the working directory), so the root filesystem can be read-only.
ENV PATH=/opt/vouch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/vouch \
    VOUCH_DATABASE_URL=sqlite:////var/lib/vouch/vouch.db \
    VOUCH_CA_KEY=/var/lib/vouch/ca_key \
    VOUCH_HOST_CA_KEY=/var/lib/vouch/host_ca_key \
    VOUCH_AUDIT_CHECKPOINTS=/var/lib/vouch/audit-checkpoints.log \
    VOUCH_POLICY_FILE=/etc/vouch/policy.yaml \
    VOUCH_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/vouch
VOLUME ["/var/lib/vouch"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"]
ENTRYPOINT ["vouch"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
