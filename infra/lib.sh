# shellcheck shell=bash
# Helpers shared by deploy.sh and teardown.sh; sourced after `set -euo pipefail`, not run.
# Options the caller parses afterwards (--stack, --region) override the defaults set here.

PROG=$(basename "$0")  # for messages
STACK_NAME=${STACK_NAME:-crypto-backtest}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$PROG: error: $*" >&2; exit 2; }
log() { echo "$PROG: $*" >&2; }

# need_value OPTION VALUE...: die unless the option has a non-empty value.
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

# shared_option OPTION VALUE...: the options both scripts take (--stack NAME, --region REGION,
# -h/--help), for the `*)` branch of a script's own option loop, which then shifts 2; any other
# option is an error.
shared_option() {
  case $1 in
    --stack) need_value "$@"; STACK_NAME=$2 ;;
    --region) need_value "$@"; REGION=$2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

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
