# Stage 1: the React front end (an npm workspace: the two packages, then the dashboard),
# built into src/secstream/web.
FROM node:20-slim AS web
WORKDIR /app/frontend
COPY frontend/package.json frontend/package-lock.json* ./
COPY frontend/packages/client/package.json packages/client/
COPY frontend/packages/react/package.json packages/react/
COPY frontend/apps/dashboard/package.json apps/dashboard/
RUN if [ -f package-lock.json ]; then npm ci; else npm install; fi
COPY frontend/ ./
RUN npm run build

# Stage 2: the Python service, with the built front end as package data.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src/ src/
COPY --from=web /app/src/secstream/web/ src/secstream/web/
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin secstream \
    && mkdir -p /app/.secstream \
    && chown secstream /app/.secstream
USER secstream
EXPOSE 8000
STOPSIGNAL SIGTERM
CMD ["secstream", "serve", "--host", "0.0.0.0", "--port", "8000"]
