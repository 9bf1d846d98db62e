#!/usr/bin/env bash
# The fault suite. One run:
#   jepsen/run.sh --workload cas --nemesis partition,kill --time 60 --seed 7
# (any `folio-jepsen run` flag), or another subcommand first:
#   jepsen/run.sh campaign --runs 100 --time 20 --seed 1    # the long campaign for RESULTS.md
#   jepsen/run.sh campaign --smoke                          # what CI runs
#   jepsen/run.sh check --dir jepsen/store/<run>            # re-check a stored history
#   jepsen/run.sh clean                                     # remove what a killed run left
# Runs go to jepsen/store/. Needs root (network namespaces, iptables, a tmpfs). Installs what it
# needs and builds the workspace first; FOLIO_PROFILE=release uses an optimized build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
profile="${FOLIO_PROFILE:-debug}"
if [ "$profile" = release ]; then
  cargo build --release --workspace --bins
else
  cargo build --workspace --all-targets
fi
sub=run
case "${1:-}" in
  run|campaign|check|clean) sub="$1"; shift ;;
esac
exec "$CARGO_TARGET_DIR/$profile/folio-jepsen" "$sub" "$@"
