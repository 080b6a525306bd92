# Soma server image for the services mode (docker-compose.yml). Models are not baked in: provision them on
# the host once (`make provision-full`, into ~/.cache/soma/models) and mount that directory read-only.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voice_server ./voice_server
COPY pipeline ./pipeline
COPY models ./models
COPY clients ./clients
RUN pip install --no-cache-dir .

ENV SOMA_HOST=0.0.0.0 \
    SOMA_DATA_DIR=/data \
    SOMA_MODELS_DIR=/models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
VOLUME ["/data"]
EXPOSE 8443
CMD ["soma", "serve"]
