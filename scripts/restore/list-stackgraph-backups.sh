#!/usr/bin/env bash
# Lists the StackGraph backups in the backup storage, through a one-shot Job
# made from the chart's job-stackgraph-list.json template.
#
# Usage: scripts/restore/list-stackgraph-backups.sh [-o table|json] [-n NAMESPACE]
#          [--context CONTEXT] [--keep]

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} [-o table|json] [-n NAMESPACE] [--context CONTEXT] [--keep]

Lists the StackGraph backups (name, size, time) by running a one-shot Job from
the sts-backup chart's job templates (needs backup.stackGraph.restore.enabled).

  -o, --output table|json  table (default) or one JSON array line on stdout
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes: 0 ok, 1 failure, 2 usage error, 130/143 interrupted.
USAGE
}

main() {
  lib::parse_args "output" "$@"
  ((${#ARGS[@]} == 0)) || lib::usage_error "unexpected argument: $(printf '%q' "${ARGS[0]}")"
  lib::init
  lib::load_template job-stackgraph-list.json backup.stackGraph.restore.enabled
  JOB_NAME=$(lib::job_name stackgraph-list-backups)
  local manifest
  manifest=$(lib::render_template "${TEMPLATE}" \
    JOB_NAME="${JOB_NAME}" OUTPUT_FORMAT="${OUTPUT}")
  lib::list_job "${manifest}" "StackGraph backups"
}

main "$@"
