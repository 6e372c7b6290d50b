# The image `lepton deploy --target kubernetes` and `lepton job submit --backend kubernetes` run
# (docs/kubernetes.md). CPU build:
#   docker build -t REGISTRY/lepton:0.1.0 .
# GPU build: the same with the CUDA wheels of torch 2.13.0 that your nodes' driver supports:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cuXXX -t REGISTRY/lepton:0.1.0-cuda .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# torch first, from its own index: the CPU wheel is a fraction of the default CUDA one, and
# `torch>=2.5` in pyproject is then already satisfied.
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX"

WORKDIR /opt/lepton
COPY pyproject.toml README.md ./
COPY lepton_ai ./lepton_ai
# postgres and s3: what a --store-secret store usually is (LEPTON_DB_URL=postgresql://, LEPTON_ARTIFACTS=s3://)
RUN pip install ".[serve,onnx,hf,k8s,postgres,s3]"

# A numeric non-root user, so that Kubernetes can check runAsNonRoot; the manifests mount
# LEPTON_HOME and /tmp as volumes and keep the root filesystem read-only.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/lepton lepton \
    && mkdir -p /var/lib/lepton && chown 10001:10001 /var/lib/lepton
USER 10001:10001
ENV LEPTON_HOME=/var/lib/lepton
EXPOSE 8080
CMD ["lepton", "--help"]
