#!/usr/bin/env bash
# Runs the restore-script checks: shellcheck on every script and the test
# files, then the bats suites (the kubectl interactions with the real kubectl
# against the API double of tests/cluster, one per bats file), all as TAP on
# stdout. Exits non-zero when
# anything failed and ends with "scripts: N passed, M failed".
#
# Usage: tests/scripts/run.sh [BATS_FILE...]
# Needs bats, bats-assert, bats-support, shellcheck, kubectl and the venv of
# the API double (tests/install-tools.sh) and python3.

set -o errexit
set -o nounset
set -o pipefail

TEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "${TEST_DIR}/../.." && pwd -P)"
readonly TEST_DIR ROOT

passed=0
failed=0
skipped=0
number=0

# report ok|skip|failed NAME: one TAP result line, counted.
report() {
  number=$((number + 1))
  if [[ $1 == skip ]]; then
    skipped=$((skipped + 1))
    printf 'ok %d %s\n' "${number}" "$2"
  elif [[ $1 == ok ]]; then
    passed=$((passed + 1))
    printf 'ok %d %s\n' "${number}" "$2"
  else
    failed=$((failed + 1))
    printf 'not ok %d %s\n' "${number}" "$2"
  fi
}

# Prints the files shellcheck checks, relative to ROOT.
lint_files() {
  local file
  for file in "${ROOT}"/scripts/restore/*.sh \
    "${TEST_DIR}/run.sh" "${TEST_DIR}/helpers.bash" "${TEST_DIR}"/*.bats; do
    printf '%s\n' "${file#"${ROOT}/"}"
  done
}

run_shellcheck() {
  local file
  while IFS= read -r file; do
    if (cd "${ROOT}" && shellcheck -x "${file}") >"${TMP}/sc" 2>&1; then
      report ok "shellcheck ${file}"
    else
      report failed "shellcheck ${file}"
      sed 's/^/# /' "${TMP}/sc"
    fi
  done < <(lint_files)
}

# Re-numbers bats' TAP results after the shellcheck ones; drops its plan.
run_bats() {
  local line
  while IFS= read -r line; do
    case ${line} in
      1..*) ;;
      'ok '*' # skip'*) report skip "$(cut -d' ' -f3- <<<"${line}")" ;;
      'ok '*) report ok "$(cut -d' ' -f3- <<<"${line}")" ;;
      'not ok '*) report failed "$(cut -d' ' -f4- <<<"${line}")" ;;
      *) printf '%s\n' "${line}" ;;
    esac
  done < <(bats --tap "$@" 2>&1 || true)
}

main() {
  local tool planned
  # shellcheck disable=SC1091  # optional, from tests/install-tools.sh
  [[ ! -f ${ROOT}/tests/env.sh ]] || source "${ROOT}/tests/env.sh"
  for tool in bats shellcheck python3 kubectl; do
    command -v "${tool}" >/dev/null || {
      printf 'run.sh: %s not found; run tests/install-tools.sh\n' "${tool}" >&2
      exit 1
    }
  done
  TMP="$(mktemp -d)"
  trap 'rm -rf "${TMP:?}"' EXIT
  local -a suites=("$@")
  ((${#suites[@]} > 0)) || suites=("${TEST_DIR}"/*.bats)
  planned=$(($(lint_files | wc -l) + $(bats --count "${suites[@]}")))
  printf '1..%d\n' "${planned}"
  run_shellcheck
  run_bats "${suites[@]}"
  # Results bats never printed (a crash) count as failed.
  ((number >= planned)) || failed=$((failed + planned - number))
  ((skipped == 0)) || printf '# %d skipped (not counted as passed)\n' "${skipped}"
  printf 'scripts: %d passed, %d failed\n' "${passed}" "${failed}"
  ((failed == 0 && passed > 0))
}

main "$@"
