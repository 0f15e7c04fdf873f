# ml-debug-mcp for GPU hosts: the MCP server over streamable HTTP, next to the CUDA build of PyTorch.
#   docker build -t ml-debug-mcp .
#   docker run --gpus all -p 8765:8765 -v /runs:/runs -e ML_DEBUG_MCP_TOKEN=$(openssl rand -hex 32) ml-debug-mcp
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

LABEL org.opencontainers.image.title="ml-debug-mcp" \
      org.opencontainers.image.description="MCP server for debugging ML training runs"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ML_DEBUG_MCP_TRANSPORT=http \
    ML_DEBUG_MCP_HOST=0.0.0.0 \
    ML_DEBUG_MCP_PORT=8765 \
    ML_DEBUG_MCP_ROOTS=/runs \
    MPLBACKEND=Agg

WORKDIR /opt/ml-debug-mcp
COPY pyproject.toml README.md ./
COPY ml_debug_mcp ./ml_debug_mcp
COPY server ./server
COPY tools ./tools
COPY core ./core
COPY resources ./resources
# [all] = [torch,plot,tensorboard]: the base image's CUDA torch already satisfies torch>=2.3, so pip keeps it.
RUN pip install "./[all]" \
    && useradd --create-home --uid 10001 mcp \
    && mkdir -p /runs \
    && chown 10001:10001 /runs

USER 10001:10001
WORKDIR /runs
VOLUME ["/runs"]
EXPOSE 8765

# The server refuses to listen on 0.0.0.0 without ML_DEBUG_MCP_TOKEN: pass it with -e at run time.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ML_DEBUG_MCP_PORT', '8765'), timeout=4)"]

ENTRYPOINT ["ml-debug-mcp"]
