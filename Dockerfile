# syntax=docker/dockerfile:1
# The reward service without the embedded judge: in production the judge is the
# vllm/vllm-openai image (see docker-compose.yml). Multi-stage: wheels are built in the first
# stage; the runtime stage has no compiler and runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EQS_REWARD_HOST=0.0.0.0 EQS_REWARD_PORT=8000 \
    EQS_REWARD_DATA_DIR=/data \
    EQS_REWARD_PROMPTS_DIR=/app/prompts EQS_REWARD_FEWSHOT_DIR=/app/fewshot_bank
RUN useradd --create-home --uid 10001 eqs && mkdir -p /data && chown eqs /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY prompts ./prompts
COPY fewshot_bank ./fewshot_bank
USER eqs
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
CMD ["eqs-reward", "serve"]
