# syntax=docker/dockerfile:1
# zoho-job-watcher as a long-lived container. The config is a mount (see docker-compose.yml and
# deploy/), the state lives on a volume, and the JSON events go to stdout for `docker logs`.

# One base for both stages, pinned by tag; bump it here (or with --build-arg) and nowhere else.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# Stage 1 builds the wheel, so the image never holds the source tree or build tools' leftovers.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY watcher ./watcher
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# Stage 2: only the wheel and its dependencies at the versions pinned in constraints.txt.
FROM ${PYTHON_IMAGE}
# Events must reach `docker logs` as they happen; the root filesystem may be read-only, so the
# interpreter does not try to write bytecode caches at run time (pip compiled them at install).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed uid/gid, so volume and secret ownership can be set on the host or with fsGroup, and so
# Kubernetes' runAsNonRoot can check it (USER below is numeric for the same reason). The state
# directory is created owned by that user before VOLUME, so a new volume starts out writable.
RUN groupadd --system --gid 10001 watcher \
    && useradd --system --uid 10001 --gid watcher --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin watcher \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/zoho-job-watcher \
    && install -d -m 0755 /etc/zoho-job-watcher /etc/zoho-job-watcher/jobs.d
# Bind mounts instead of COPY: neither the wheel nor the constraints file stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        -c /tmp/constraints.txt /wheels/*.whl
VOLUME /var/lib/zoho-job-watcher
USER 10001:10001
EXPOSE 9464
# Needs the config's http listener on port 9464 (deploy/watcher.yaml turns it on). The opener
# raises on a 503, a refused connection or a timeout: an uncaught exception is exit status 1,
# unhealthy. It uses no proxy: HTTP_PROXY, set for the way out to Zoho, would take the probe too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
# Exec form: the console script is PID 1 itself, with no shell that would swallow SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["zoho-job-watcher"]
CMD ["run", "--config", "/etc/zoho-job-watcher/watcher.yaml"]
