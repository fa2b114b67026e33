# hsm-signer images.
#   docker build .               the production service (target runtime): dist/ and production
#                                dependencies on node:20-bookworm-slim, as the non-root user node
#   docker build --target dev .  the same plus SoftHSMv2: a local token with the demo keys, created
#                                on first start in /app/.hsm (a volume in docker-compose.yml)
#   docker build --target build . the sources with all dependencies (docker-compose's load test)

# Production dependencies only. pkcs11js is a native addon: it compiles here, where the build
# tools are, on the same Debian release as the runtime image.
FROM node:20-bookworm AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

# All dependencies and the compiled service, dist/.
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run build

# What both images run: package.json ("type": "module"), production node_modules and dist/.
# tini as PID 1: it forwards SIGTERM to node and reaps; a process that is PID 1 cannot be killed by
# its own signals, and the service's hard stop (a wedged PKCS#11 call) SIGKILLs itself.
FROM node:20-bookworm-slim AS base
# The commit in /metrics' hsm_signer_build_info: docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=$GIT_COMMIT
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY deploy/docker/healthcheck.cjs ./deploy/docker/

# Development: no authentication (NODE_ENV is not production), a SoftHSMv2 token of its own.
FROM base AS dev
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/docker/dev-entrypoint.sh /usr/local/bin/hsm-signer-dev-entrypoint
# Owned by node: a named volume mounted here starts as a copy of it, ownership included.
RUN mkdir -p /app/.hsm && chown node:node /app/.hsm
ENV NODE_ENV=development HSM_DEV_DIR=/app/.hsm
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["node", "deploy/docker/healthcheck.cjs"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "hsm-signer-dev-entrypoint"]
CMD ["node", "dist/main.js"]

# Production (the default target: the last stage). Configured by the environment; see the README.
FROM base AS runtime
ENV NODE_ENV=production
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["node", "deploy/docker/healthcheck.cjs"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["node", "dist/main.js"]
