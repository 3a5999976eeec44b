# Sourced by test scripts: puts the tools that tests/install-tools.sh installed on PATH.
# shellcheck shell=bash
STS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/.. && pwd -P)"
export STS_ROOT
export PATH="${STS_ROOT}/.tools/bin:${STS_ROOT}/.tools/venv/bin:${STS_ROOT}/.tools/npm/node_modules/.bin:/usr/lib/postgresql/15/bin:${PATH}"
export HELM_CACHE_HOME="${STS_ROOT}/.tools/helm/cache" HELM_CONFIG_HOME="${STS_ROOT}/.tools/helm/config" HELM_DATA_HOME="${STS_ROOT}/.tools/helm/data"
export ES_SCHEMA_JSON="${STS_ROOT}/.tools/npm/node_modules/@elastic/request-converter/dist/schema.json"
