# syntax=docker/dockerfile:1
# Build a wheel in one stage, install only the wheel and its pinned dependencies in the next.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY watcher ./watcher
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt /wheels/*.whl \
    && rm -rf /wheels /tmp/constraints.txt \
    && useradd --system --uid 10001 --no-create-home watcher
USER watcher
STOPSIGNAL SIGTERM
ENTRYPOINT ["zoho-job-watcher"]
CMD ["run", "--config", "/etc/zoho-job-watcher/watcher.yaml"]
