#!/usr/bin/env bats
# Unit tests of scripts/restore/lib.sh: JSON escaping, template rendering, job
# names. (Names are judged by the Jobs' binaries, not here.)
# shellcheck disable=SC2154  # stderr is set by bats' run --separate-stderr

setup() {
  load helpers
  unit_setup
  # shellcheck disable=SC1091  # lib.sh is checked on its own
  source "${RESTORE}/lib.sh"
  # shellcheck disable=SC2317  # called by lib::usage_error
  usage() { echo "Usage: test"; }
}

# json_roundtrip VALUE: escape VALUE, parse it as a JSON string, compare.
json_roundtrip() {
  local escaped
  escaped=$(lib::json_escape "$1")
  python3 -c 'import json,sys; v=json.loads("\"" + sys.argv[1] + "\""); sys.exit(0 if v == sys.argv[2] else 1)' \
    "${escaped}" "$1" || fail "round trip failed for $(printf '%q' "$1"): ${escaped}"
}

@test "json_escape leaves a plain name alone" {
  run lib::json_escape 'sts-backup-20240101-0300.graph'
  assert_success
  assert_output 'sts-backup-20240101-0300.graph'
}

@test "json_escape escapes backslash, quote and control characters" {
  run lib::json_escape $'a\\b"c\nd\te\rf\bg\fh\001i\037j\177k'
  assert_success
  assert_output 'a\\b\"c\nd\te\rf\bg\fh\u0001i\u001fj\u007fk'
}

@test "json_escape output parses back to the same string for hostile values" {
  local value
  # shellcheck disable=SC2016  # the $(...) and backticks are literal on purpose
  for value in 'a/b' 'a&b' '\&' '&&\\&' 'x"y' "it's" 'a b' $'line1\nline2' \
    $'tab\there' '$(touch /tmp/pwned)' '`id`' '"},{"name":"EVIL","value":"1' \
    '\u0022' 'é ü 中' $'\x01\x1f' '__FORCE__' '"__FORCE__"'; do
    json_roundtrip "${value}"
  done
}

@test "render_template fills hostile values into valid JSON with the exact values" {
  local manifest name=$'a/b&c"d e\nf\\g\t&amp;' indices='x"y,&z'
  manifest=$(lib::render_template "$(<"${FIXTURES}/job-elasticsearch-restore.json")" \
    JOB_NAME=job-1 SNAPSHOT_NAME="${name}" INDICES="${indices}" FORCE=false)
  MANIFEST_FILE="${BATS_TEST_TMPDIR}/manifest.json"
  printf '%s\n' "${manifest}" >"${MANIFEST_FILE}"
  python3 -c 'import json,sys; json.load(sys.stdin)' <"${MANIFEST_FILE}"
  run manifest_get 'env("restore", "SNAPSHOT_NAME")'
  assert_output "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1], ensure_ascii=False))' "${name}")"
  run manifest_get 'env("restore", "INDICES_TO_RESTORE")'
  assert_output '"x\"y,&z"'
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"false"'
  run manifest_get 'm["metadata"]["name"]'
  assert_output '"job-1"'
  run manifest_get 'len(m["spec"]["template"]["spec"]["containers"][0]["env"])'
  assert_output '11'
}

@test "render_template does not rescan inserted text for placeholders" {
  local manifest
  manifest=$(lib::render_template \
    '{"a": "__BACKUP_NAME__", "b": "__FORCE__", "c": "__JOB_NAME__"}' \
    JOB_NAME=j BACKUP_NAME='x"__FORCE__' FORCE=true)
  assert_equal "${manifest}" '{"a": "x\"__FORCE__", "b": "true", "c": "j"}'
}

@test "render_template replaces every occurrence and leaves other strings" {
  run lib::render_template '["__JOB_NAME__", "__JOB_NAME__", "__OTHER__", "__JOB_NAME___x", "x__JOB_NAME__"]' JOB_NAME=j
  assert_success
  assert_output '["j", "j", "__OTHER__", "__JOB_NAME___x", "x__JOB_NAME__"]'
}

@test "render_template replaces only whole quoted placeholders" {
  run lib::render_template '{"v": "prefix __FORCE__", "w": "__FORCE__"}' FORCE=true
  assert_success
  assert_output '{"v": "prefix __FORCE__", "w": "true"}'
}

@test "render_template fails when a placeholder is missing" {
  run --separate-stderr lib::render_template '{"name": "__JOB_NAME__"}' JOB_NAME=j BACKUP_NAME=b
  assert_failure 1
  assert_equal "${stderr}" 'ERROR: the job template has no placeholder "__BACKUP_NAME__"; the chart and the scripts do not match (see docs/interfaces.md)'
}

@test "job_name is the prefix, a UTC timestamp and a random suffix within 63 characters" {
  run lib::job_name elasticsearch-list-snapshots
  assert_success
  assert_output --regexp '^elasticsearch-list-snapshots-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$'
  ((${#output} <= 63))
}
