# The bot and its worker in one container, on an NVIDIA GPU (NVIDIA Container Toolkit).
#   docker build -t sdbot .
#   docker compose -f deploy/compose.yaml up -d     (or the `docker run` in README "Running as a service")
# Volumes: /data (the database), /outputs (the images), /models (model folders and the
# Hugging Face cache). The token comes from the environment (DISCORD_TOKEN), never the image.
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/huggingface \
    SDBOT__DATABASE_URL=sqlite+aiosqlite:////data/sdbot.sqlite3 \
    SDBOT__OUTPUTS_DIR=/outputs \
    SDBOT__WORKER__COMPILE_CACHE_DIR=/models/torch-compile

# tini as PID 1: passes SIGTERM on to the bot and reaps what the worker leaves behind.
# Unpinned: the base image's Ubuntu release fixes the versions, and its updates are security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# The dependencies first, in their own layer: a change to the code does not reinstall torch.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY alembic.ini config.example.toml ./
COPY bot bot
COPY inference inference
COPY db db
COPY migrations migrations
RUN pip install --no-deps -e .

RUN groupadd --system --gid 10001 sdbot \
    && useradd --system --uid 10001 --gid sdbot --create-home sdbot \
    && mkdir -p /data /outputs /models /config \
    && chown sdbot:sdbot /data /outputs /models
# By number: the host resolves no names of the image's users (volume ownership, Kubernetes).
USER 10001:10001
VOLUME ["/data", "/outputs", "/models"]

# The bot stops in order on SIGTERM within [worker] shutdown_grace_s (30 s by default):
# give `docker stop` the grace plus 30 s (--stop-timeout 60, compose's stop_grace_period).
STOPSIGNAL SIGTERM
# Beside a running bot: no second worker on its GPU (--no-worker).
HEALTHCHECK --interval=1m --timeout=30s --start-period=2m \
    CMD ["sdbot", "--config", "/config/config.toml", "check", "--no-worker"]
ENTRYPOINT ["tini", "--", "sdbot", "--config", "/config/config.toml"]
CMD ["run"]
