# The images of the five services, and of the upstream emulator:
#   docker build --build-arg SERVICE=edge -t agent-mesh/edge .      (store, llm-broker, tool-service, orchestrator, edge)
#   docker build --target emulator -t agent-mesh/emulator .
# `npm run images` builds all six with podman (deploy/images/build.sh), on a local base when no
# registry image can be pulled (BASE: any Debian-like image with Node.js 24 and npm in PATH).
#
# A service image holds the production dependencies of its workspace and services/common only
# (the edge's also services/llm-broker, for EDGE_INLINE_BROKER), the built JavaScript of those,
# and the .proto files; it runs as uid 1000, writes nothing
# outside /tmp (runs with a read-only root filesystem; the tool-service's search index is built into
# the image), and starts node directly (no shell), so
# SIGTERM reaches the service's shutdown handler, with OpenTelemetry `--require`d first.
ARG BASE=node:24-bookworm-slim

# Every workspace's dependencies, dev ones included (the TypeScript build needs them). Only the
# manifests are copied first, so this layer is reused until package-lock.json changes.
FROM ${BASE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
COPY services/common/package.json services/common/
COPY services/store/package.json services/store/
COPY services/llm-broker/package.json services/llm-broker/
COPY services/tool-service/package.json services/tool-service/
COPY services/orchestrator/package.json services/orchestrator/
COPY services/edge/package.json services/edge/
COPY test/emulator/package.json test/emulator/
# `extra_ca` (optional build secret): a CA that outbound TLS needs where a proxy intercepts it. A
# secret is mounted for this one step and never stored in a layer.
RUN --mount=type=secret,id=extra_ca --mount=type=cache,target=/root/.npm \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi; \
    npm ci --no-audit --no-fund --loglevel=error

# The build of every workspace: one layer shared by all six images.
FROM deps AS build
COPY tsconfig.json ./
COPY proto proto
COPY services services
COPY test/emulator test/emulator
RUN npx tsc -b

# Production dependencies of one service's workspace and services/common (the edge's also of
# services/llm-broker, which it runs inside itself with EDGE_INLINE_BROKER). Type declarations and
# source maps are dropped, and so is all of gpt-tokenizer but what the llm-broker's counter reads
# (its CommonJS split pattern and the cl100k_base ranks as tiktoken's data file): it ships every
# encoding's ranks three times over (TypeScript, ES and CommonJS modules) and as raw data.
FROM deps AS prod-deps
ARG SERVICE
RUN --mount=type=secret,id=extra_ca --mount=type=cache,target=/root/.npm \
    case "$SERVICE" in store|llm-broker|tool-service|orchestrator|edge) ;; \
      *) echo "build arg SERVICE must be one of store, llm-broker, tool-service, orchestrator, edge" >&2; exit 1 ;; esac; \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi; \
    extra=; [ "$SERVICE" != edge ] || extra="--workspace services/llm-broker"; \
    rm -rf node_modules && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=error \
      --workspace "services/$SERVICE" --workspace services/common $extra \
    && find node_modules \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -type f -delete \
    && rm -rf node_modules/gpt-tokenizer/esm node_modules/gpt-tokenizer/src node_modules/gpt-tokenizer/cjs/bpeRanks \
    && { [ ! -d node_modules/gpt-tokenizer ] || find node_modules/gpt-tokenizer/data -type f ! -name cl100k_base.tiktoken -delete; }

# What one service image runs, under /out: its build and services/common's, and the edge's also
# services/llm-broker's (package.json, dist, and the runtime files: the edge's public/, the
# orchestrator's prompts/), the .proto files, and the README and docs/ (the tool-service's local
# search corpus).
FROM build AS bundle
ARG SERVICE
COPY README.md ./
COPY docs docs
RUN set -e; \
    extra=; [ "$SERVICE" != edge ] || extra=services/llm-broker; \
    for ws in services/common "services/$SERVICE" $extra; do \
      mkdir -p "/out/$ws"; \
      for f in package.json dist public prompts; do [ ! -e "$ws/$f" ] || cp -r "$ws/$f" "/out/$ws/"; done; \
    done; \
    cp -r proto README.md docs /out/; \
    ln -s "services/$SERVICE/dist/main.js" /out/main.js; \
    find /out \( -name '*.d.ts' -o -name '*.map' -o -name '*.tsbuildinfo' \) -type f -delete

# The upstream emulator's production dependencies.
FROM deps AS emulator-deps
RUN --mount=type=secret,id=extra_ca --mount=type=cache,target=/root/.npm \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi; \
    rm -rf node_modules && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=error --workspace test/emulator

# The emulator's build, without declarations and source maps.
FROM build AS emulator-bundle
RUN mkdir -p /out/test/emulator && cp -r test/emulator/package.json test/emulator/dist /out/test/emulator/ \
    && find /out \( -name '*.d.ts' -o -name '*.map' -o -name '*.tsbuildinfo' \) -type f -delete

# The upstream emulator (for tests and demos): OpenAI chat completions and Anthropic Messages on 8090.
FROM ${BASE} AS emulator
WORKDIR /app
ENV NODE_ENV=production EMULATOR_HOST=0.0.0.0
COPY --from=emulator-deps /src/node_modules node_modules
COPY --from=emulator-bundle /out/ ./
USER 1000:1000
EXPOSE 8090
ENTRYPOINT ["node", "/app/test/emulator/dist/main.js"]

# A service (the default target).
FROM ${BASE} AS service
ARG SERVICE
WORKDIR /app
# Inside a container every listener binds all interfaces: probes, Services and scrapes come
# from the pod's IP. (Outside containers they default to 127.0.0.1.) The traces' service name is
# the image's (a manifest may override it); it also picks the instrumentations the service loads.
ENV NODE_ENV=production OTEL_SERVICE_NAME=${SERVICE} \
    EDGE_HOST=0.0.0.0 ORCHESTRATOR_HOST=0.0.0.0 LLM_BROKER_HOST=0.0.0.0 TOOL_SERVICE_HOST=0.0.0.0 STORE_HOST=0.0.0.0
COPY --from=prod-deps /src/node_modules node_modules
COPY --from=bundle /out/ ./
# The tool-service's local search index, built here once over the corpus this image holds (its
# README and docs/, and what the base has of /usr/share/doc and WordNet), saved under the corpus'
# content hash: a replica loads it in a moment at start instead of building it (see
# services/tool-service/src/search/index-worker.ts); a different corpus at run time builds anew.
ENV TOOL_INDEX_CACHE_DIR=/app/search-index
RUN if [ "$SERVICE" = tool-service ]; then node /app/services/tool-service/dist/search/prebuild.js; fi
USER 1000:1000
ENTRYPOINT ["node", "--require", "/app/services/common/dist/telemetry/register.js", "/app/main.js"]
