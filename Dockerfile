# dittofs-operator: `dittoctl run` (operator + admission webhook) on a slim Python 3.11 image.
#
#   docker build -t dittofs-operator:0.1.0 .
#
# The builder stage builds the project wheel and installs it with its dependencies into a pip-less
# virtualenv; the final stage gets only that virtualenv: no pip, compilers or package caches, and it runs
# as a numeric non-root user (Pod Security "restricted", read-only root filesystem).

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY dittoctl/ dittoctl/
COPY reconciler/ reconciler/
COPY webhook/ webhook/
COPY certs/ certs/
# The wheel's dependencies come from pyproject.toml, at the versions CI tested (constraints.txt).
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --compile -c constraints.txt /wheels/*.whl \
    && /opt/venv/bin/dittoctl --help > /dev/null

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="dittofs-operator" \
      org.opencontainers.image.description="Kubernetes operator and validating admission webhook for DittoFS" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# The base image's own pip/setuptools/wheel are not needed at run time either. Its standard library comes
# without bytecode (the official image deletes it), and at run time the root filesystem is read-only: compiled
# here, or every start compiles the ~200 modules `dittoctl run` imports again (1.0 CPU-s on a 2-core EPYC).
# compileall writes despite PYTHONDONTWRITEBYTECODE; modules compiled already are left as they are.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && python -m compileall -q -j 0 -x '/(test|tests|idlelib|tkinter|turtledemo|lib2to3|ensurepip)/' \
       "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
COPY --from=builder /opt/venv /opt/venv
# 9443: admission webhook (HTTPS); 8081: /healthz, /readyz, /metrics.
EXPOSE 9443 8081
USER 65532:65532
ENTRYPOINT ["dittoctl"]
CMD ["run"]
