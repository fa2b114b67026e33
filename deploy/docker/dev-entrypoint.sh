#!/bin/sh
# The dev image's entrypoint: the local SoftHSMv2 token and its demo keys in $HSM_DEV_DIR, made on
# first start as `npm start` makes them, then the command (the service) on that token.
# Replicas share the directory (a volume) and may start at once: the set-up runs under a lock, so
# one of them creates the token and the keys and the others find them. HSM_DEV_SETUP is the set-up
# command (the tests run it from the sources).
set -eu
dir="${HSM_DEV_DIR:-/app/.hsm}"
mkdir -p "$dir"
# shellcheck disable=SC2086 # HSM_DEV_SETUP is a command line
flock "$dir/.setup.lock" ${HSM_DEV_SETUP:-node dist/dev/start.js --setup-only}
# What src/dev/start.ts gives the service it starts, for the service this script starts.
export SOFTHSM2_CONF="$dir/softhsm2.conf"
export HSM_TOKEN_LABEL="${HSM_TOKEN_LABEL:-hsm-signer}"
if [ -z "${HSM_PIN:-}" ]; then export HSM_PIN_FILE="${HSM_PIN_FILE:-$dir/user.pin}"; fi
export ISSUANCE_DB="${ISSUANCE_DB:-sqlite:$dir/issuance.db}"
exec "$@"
