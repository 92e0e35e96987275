# crowdgate's image: the web app (ML backend + webhook receiver) and the RQ worker.
#   docker build -t crowdgate .
#   docker run -e REDIS_URL=... -e CROWDGATE_WEBHOOK_SECRET=... -p 9090:9090 crowdgate            # web app
#   docker run -e REDIS_URL=... crowdgate crowdgate-worker                                        # worker
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    CROWDGATE_BIND=0.0.0.0:9090

# torch first and pinned. Pass PyTorch's CPU wheel index as TORCH_INDEX_URL to keep the image small;
# without it pip takes the default build, which is much larger.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY core core
COPY crowdgate crowdgate
COPY ml_backend ml_backend
COPY qa_hooks qa_hooks
COPY routing routing
COPY scripts scripts
COPY label_configs label_configs
COPY data data
# /models: versioned model artifacts, written by the worker and read by the web app (a shared volume)
RUN pip install --no-deps . && useradd --create-home --uid 1000 crowdgate \
    && mkdir /models && chown crowdgate /models
ENV CROWDGATE_MODEL_DIR=/models
USER crowdgate

EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9090/health', timeout=2)"
CMD ["crowdgate-web"]
