#!/usr/bin/env bash
# Fuzzes the coordinator's REST API from its own OpenAPI document with schemathesis, with
# every check (no 5xx, every status and response body as documented, schema-valid
# requests accepted and schema-violating ones refused, content types, auth), and fails on
# any failure.
#
#   tests/fuzz/api.sh URL REPORT_DIR [NAME=VALUE ...]
#
#   URL         the coordinator, e.g. http://127.0.0.1:8800
#   REPORT_DIR  where the NDJSON reports and the summary go
#   NAME=VALUE  real ids the fuzzer mixes into generated path parameters (projectId=shop,
#               environmentId=shop-prod, ...), so requests reach real objects, not only 404s
#
# The bearer token comes from OCORE_FUZZ_TOKEN (an admin token). schemathesis (pinned
# below) is installed into a virtualenv, reused between runs: $OCORE_FUZZ_VENV, by default
# target/fuzz-venv. Bounds: OCORE_FUZZ_EXAMPLES generated cases per operation and phase
# (default 60), OCORE_FUZZ_DEADLINE seconds for everything (default 180; a pass still
# running then is stopped, and what it ran counts); OCORE_FUZZ_SEED replays a run;
# OCORE_FUZZ_CHECKS is schemathesis's --checks (default all).
#
# Two passes. The first covers every operation but three, with stateful sequences: it
# may create, change and delete what it finds. The three it leaves out would cut the rest
# off (revoking the fuzzer's own token, re-addressing or removing the agent, after which
# every agent call fails with 502 as it should); the second pass fuzzes those three
# without real ids or sequences.
#
# The last line of output is the summary: `api fuzz: N requests, M 5xx, K 2xx`.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
(($# >= 2)) || { usage >&2; exit 64; }
URL=$1
REPORT_DIR=$2
shift 2
: "${OCORE_FUZZ_TOKEN:?set OCORE_FUZZ_TOKEN to an admin token of the coordinator}"
EXAMPLES=${OCORE_FUZZ_EXAMPLES:-60}
CHECKS=${OCORE_FUZZ_CHECKS:-all}
DEADLINE=${OCORE_FUZZ_DEADLINE:-180}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${OCORE_FUZZ_VENV:-$ROOT/target/fuzz-venv}

say() { printf 'api.sh: %s\n' "$*" >&2; }

# --- schemathesis, pinned, in its own virtualenv ---
ST=$VENV/bin/schemathesis
if ! [[ -x $ST ]] || [[ "$("$ST" --version 2>/dev/null)" != *" $SCHEMATHESIS_VERSION" ]]; then
    command -v python3 >/dev/null || { say "python3 is missing: run tests/env/setup.sh"; exit 1; }
    say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV" \
        || { say "cannot create a virtualenv (python3-venv missing? run tests/env/setup.sh)"; exit 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || { say "pip could not install schemathesis==$SCHEMATHESIS_VERSION from PyPI"; exit 1; }
fi

# The deadline counts from here: installing is not fuzzing.
START=$SECONDS
mkdir -p "$REPORT_DIR"
REPORT_DIR=$(cd "$REPORT_DIR" && pwd)
rm -f "$REPORT_DIR"/*.ndjson
# schemathesis keeps a cache in the working directory: keep it with the reports.
cd "$REPORT_DIR"

# --- the config: real ids as dictionaries, drawn for half of the generated values ---
# NAME=VALUE may repeat a name; its values form one dictionary.
declare -A VALUES=()
NAMES=()
for pair in "$@"; do
    [[ $pair == *=* ]] || { say "expected NAME=VALUE, got '$pair'"; exit 64; }
    name=${pair%%=*} value=${pair#*=}
    [[ -v VALUES[$name] ]] || NAMES+=("$name")
    VALUES[$name]+="${VALUES[$name]:+, }\"$value\""
done
CONFIG=$REPORT_DIR/schemathesis.toml
{
    echo '# Written by tests/fuzz/api.sh.'
    for name in "${NAMES[@]}"; do
        printf '[dictionaries.%s]\nvalues = [%s]\n' "$name" "${VALUES[$name]}"
    done
    echo '[parameters]'
    for name in "${NAMES[@]}"; do
        printf '"path.%s" = { dictionary = "%s", probability = 0.5 }\n' "$name" "$name"
    done
    # An import's body must be a real archive, which random bytes never are: refusing
    # them (400) is right, so "schema-valid data is accepted" does not apply there.
    echo '[[operations]]'
    echo 'include-operation-id = "post_api_environments__environmentId__snapshots_import"'
    echo 'checks.positive_data_acceptance.enabled = false'
} >"$CONFIG"
EMPTY=$REPORT_DIR/empty.toml
echo '# No real ids: tests/fuzz/api.sh, second pass.' >"$EMPTY"

# The three operations the first pass leaves to the second.
LEFT_OUT=(delete_api_tokens__id_ patch_api_agents__name_ delete_api_agents__name_)
run() {
    local config=$1 report=$2 budget=$3
    shift 3
    local seed=() checks=()
    [[ -n ${OCORE_FUZZ_SEED:-} ]] && seed=(--seed "$OCORE_FUZZ_SEED")
    # Every check is schemathesis's default; naming them on the command line would also
    # override the per-operation settings of the config file.
    [[ $CHECKS != all ]] && checks=(--checks "$CHECKS")
    local status=0
    timeout --kill-after=10 "$budget" "$ST" --no-color --config-file "$config" \
        run "$URL/api/openapi.json" \
        --header "Authorization: Bearer $OCORE_FUZZ_TOKEN" \
        "${checks[@]}" --max-examples "$EXAMPLES" --workers 2 \
        --request-timeout 30 "${seed[@]}" \
        --report ndjson --report-ndjson-path "$REPORT_DIR/$report.ndjson" "$@" \
        || status=$?
    if ((status == 124)); then
        # The deadline is the time budget: the run stops there, with what it found so far.
        say "$report pass stopped at its deadline of ${budget}s"
        status=0
    fi
    return $status
}

FIRST=0 SECOND=0
left=$((DEADLINE - (SECONDS - START)))
run "$CONFIG" first $((left * 3 / 4)) \
    "${LEFT_OUT[@]/#/--exclude-operation-id=}" || FIRST=$?
left=$((DEADLINE - (SECONDS - START)))
run "$EMPTY" second $((left > 10 ? left : 10)) --phases examples,coverage,fuzzing \
    "${LEFT_OUT[@]/#/--include-operation-id=}" || SECOND=$?

# --- the tally, from the reports ---
"$VENV/bin/python" - "$REPORT_DIR" <<'PY'
import glob, json, sys
requests = errors = ok = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.ndjson")):
    with open(path) as f:
        for line in f:
            try:
                event = json.loads(line).get("ScenarioFinished")
            except ValueError:
                continue  # the last line of a run stopped at its deadline
            if not event:
                continue
            for step in (event.get("recorder") or {}).get("interactions", {}).values():
                response = step.get("response")
                if response is None:
                    continue
                requests += 1
                ok += 200 <= response["status_code"] < 300
                if response["status_code"] >= 500:
                    errors += 1
                    r = step["request"]
                    print(f"5xx: {r['method']} {r['uri']} -> {response['status_code']}")
print(f"api fuzz: {requests} requests, {errors} 5xx, {ok} 2xx")
PY
say "schemathesis exit codes: $FIRST (first pass), $SECOND (second pass); $((SECONDS - START)) s"
((FIRST == 0 && SECOND == 0))
