# vitcube server and GPU worker image (one image, two commands; see docker-compose.yml).
FROM python:3.11-slim

# PyPI's Linux torch wheel carries CUDA; override for a CPU-only image:
#   docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .
ARG TORCH_SPEC="torch==2.13.0"

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A C compiler: `training.compile: true` runs Triton, which builds its kernels' launchers with
# one at run time (and the inductor's CPU backend needs a C++ one); python:3.11-slim has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN pip install ${TORCH_SPEC}
COPY pyproject.toml README.md ./
COPY models ./models
COPY search ./search
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# the `vitcube` namespace: its own modules and one relative symlink per folder above
COPY vitcube ./vitcube
# with s3fs: the server keeps artifacts in S3/MinIO (VITCUBE_ARTIFACT_URL=s3://…)
RUN pip install ".[s3]"

RUN useradd --create-home --uid 1000 vitcube
USER vitcube
WORKDIR /home/vitcube
EXPOSE 8000
CMD ["vitcube", "--help"]
