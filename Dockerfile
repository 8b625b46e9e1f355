FROM python:3.11-slim
WORKDIR /app
# openapi.yaml too: services/api/docs_assets/openapi.yaml links to it, and pip install copies it into the
# package, which serves it at /openapi.yaml and renders it at /docs.
COPY pyproject.toml openapi.yaml ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir . && useradd --system cml
USER cml
ENV PYTHONUNBUFFERED=1
