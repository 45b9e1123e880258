#!/usr/bin/env bash
# The scheduled refresh: one `seqrec-pipeline run` (stage one embeds only new and changed items, stage two
# warm-starts if the config says so), then old runs collected. For cron and systemd timers.
#
#   examples/refresh.sh CONFIG.yaml [more `run` options, e.g. --log-format json]
#
# Exit 0 when the refresh ran or was skipped because another job holds the workspace (the pipeline's
# exit code 3); any other failure keeps its exit code (2: bad input, 1: unexpected).
# SEQREC_BIN: the command to call (default seqrec-pipeline); SEQREC_KEEP: runs kept per output (default 7).
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG.yaml [run options]" >&2
  exit 2
fi
config=$1
shift
read -r -a bin <<< "${SEQREC_BIN:-seqrec-pipeline}"

log=()  # gc logs the way run does
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = "--log-format" ] && [ $((i + 1)) -lt ${#args[@]} ]; then log=(--log-format "${args[$((i + 1))]}"); fi
done

"${bin[@]}" run --config "$config" "$@"
code=$?
if [ "$code" -eq 3 ]; then
  echo "refresh: another job holds the workspace; skipped" >&2
  exit 0
fi
[ "$code" -eq 0 ] || exit "$code"
exec "${bin[@]}" gc --config "$config" --keep "${SEQREC_KEEP:-7}" --delete "${log[@]}"
