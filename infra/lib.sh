# shellcheck shell=bash
# Helpers shared by deploy.sh and teardown.sh; sourced after `set -euo pipefail`, not run.
# Options the caller parses afterwards (--stack, --region) override the defaults set here.

PROG=$(basename "$0")  # for messages
STACK_NAME=${STACK_NAME:-crypto-backtest}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$PROG: error: $*" >&2; exit 2; }
log() { echo "$PROG: $*" >&2; }

# REGION from --region, else AWS_REGION / AWS_DEFAULT_REGION (set by the caller), else the CLI's.
resolve_region() {
  if [[ -z $REGION ]]; then
    REGION=$(aws configure get region || true)
  fi
  [[ -n $REGION ]] || die "no AWS region: pass --region or set AWS_REGION"
}

cfn() { aws cloudformation --region "$REGION" "$@"; }
stack_output() {
  cfn describe-stacks --stack-name "$STACK_NAME" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
