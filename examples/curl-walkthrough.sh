#!/usr/bin/env bash
# The HTTP API by hand, with curl and jq: what the platform logs, and how anyone checks it.
#
#   TLOG_TOKEN=<a service token> examples/curl-walkthrough.sh http://127.0.0.1:8080
#
# Every route, with its parameters and answers, is described in OpenAPI 3.1 at $URL/openapi.json.
set -euo pipefail
url="${1:?usage: TLOG_TOKEN=<service token> $0 URL}"
: "${TLOG_TOKEN:?set TLOG_TOKEN to a service token (tlog token create --service NAME)}"

echo "# 1. The log: its origin, verifier key, size, the policy in force and its purposes"
curl -fsS "$url/v1/log" | jq '{origin, verifier_keys, size, policy, purposes: [.purposes[].code]}'

echo "# 2. A service logs one AI use (Authorization: Bearer <service token>); the answer carries a signed receipt"
event="curl-$(date -u +%Y%m%dT%H%M%S)-$$"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
answer="$(curl -fsS -X POST "$url/v1/uses" -H "Authorization: Bearer $TLOG_TOKEN" -H 'Content-Type: application/json' \
  -d '{"event_id":"'"$event"'","content_id":"sc:track:701","artist_id":"sc:user:7","purpose":"recommendation",
       "phase":"inference","system":{"id":"recs-ranker","model":"ranker","version":"2026.07.3"},"occurred_at":"'"$now"'"}')"
echo "$answer" | jq '.results[0] | {event_id, index, decision, duplicate}'
index="$(echo "$answer" | jq '.results[0].index')"

echo "# 3. Sending the same event_id again is safe: the first answer comes back, marked duplicate"
curl -fsS -X POST "$url/v1/uses" -H "Authorization: Bearer $TLOG_TOKEN" -H 'Content-Type: application/json' \
  -d '{"event_id":"'"$event"'","content_id":"sc:track:701","artist_id":"sc:user:7","purpose":"recommendation",
       "phase":"inference","system":{"id":"recs-ranker","model":"ranker","version":"2026.07.3"},"occurred_at":"'"$now"'"}' \
  | jq '.results[0] | {index, duplicate}'

echo "# 4. Anyone reads the public leaf (no identity in it) and its inclusion proof in the published checkpoint"
curl -fsS "$url/v1/leaves/$index" | jq '{type, purpose, phase, decision, logged_at}'
curl -fsS "$url/v1/proof/inclusion?index=$index" | jq '{index, size, hashes: (.proof | length)}'
curl -fsS "$url/checkpoint"

echo "# 5. The public figures: uses by purpose, phase and decision, for a period (a date or an RFC 3339 time)"
curl -fsS "$url/v1/stats?since=$(date -u +%Y-%m-%d)&purpose=recommendation" | jq '.totals'

echo "# 6. The public leaves as CSV, for a spreadsheet or DuckDB (tlog export --url walks a whole log)"
curl -fsS "$url/v1/export?start=0&end=3&format=csv" | cut -c1-100

echo "# 7. A mistake is a plain 400 that says what to do"
curl -sS "$url/v1/stats?purpose=recomendation" | jq -r '.error.message'
