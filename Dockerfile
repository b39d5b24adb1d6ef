# synthray on Ray's own image, so every node of a cluster (KubeRay pods, `ray up` VMs) runs
# the same Ray, Python and code. Two variants from one recipe:
#   docker build -t synthray:0.1.0-cpu .
#   docker build -t synthray:0.1.0-gpu \
#     --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu --build-arg TORCH_VARIANT=cu128 .
# The repository lands in /home/ray/synthray: the k8s manifests and the cluster launcher
# config run jobs/*.py and configs/*.yaml from there, and Serve imports serve.app from it.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

# cpu: CPU-only torch wheels (no CUDA libraries in the image); cu128 etc.: CUDA wheels
# matching the GPU base image's CUDA.
ARG TORCH_VARIANT=cpu
WORKDIR /home/ray/synthray

# Dependencies first: this layer is rebuilt only when pyproject.toml changes. torch and
# torchvision are the versions pyproject.toml pins, from PyTorch's own index for the variant.
COPY --chown=ray:users pyproject.toml README.md ./
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        torch==2.14.1 torchvision==0.29.1

COPY --chown=ray:users synthray/ synthray/
COPY --chown=ray:users serve/ serve/
RUN pip install --no-cache-dir . \
    && python -c "import ray, synthray, torch; print('ray', ray.__version__, 'torch', torch.__version__)"

# Entrypoints and configs; the Serve app (serve.app:build_app) imports from here too.
COPY --chown=ray:users jobs/ jobs/
COPY --chown=ray:users configs/ configs/
COPY --chown=ray:users cluster/ cluster/
ENV PYTHONPATH=/home/ray/synthray
