# The audit image: `python -m tunegate_trainer audit` on CPU nodes, without torch or
# CUDA (a few hundred MB instead of the trainer image's gigabytes). Build from the
# repository root:
#   docker build -f trainer-image/audit.Dockerfile -t ghcr.io/tunegate/audit:0.1.0 .
# Same build arguments as trainer-image/Dockerfile (BASE_IMAGE, PIP_INSTALL_OPTIONS).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INSTALL_OPTIONS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/tunegate
COPY pyproject.toml constraints.txt ./
COPY contract/tunegate_contract ./contract/tunegate_contract
COPY trainer-image/tunegate_trainer ./trainer-image/tunegate_trainer
# Only the packages the audit runs (as in the trainer image); constraints.txt pins the
# exact versions the tests ran.
RUN touch README.md \
    && pip install ${PIP_INSTALL_OPTIONS} -c constraints.txt '.[audit]'

RUN useradd --uid 10001 --user-group --create-home trainer
USER 10001:10001
ENTRYPOINT ["python", "-m", "tunegate_trainer"]
CMD ["audit"]
