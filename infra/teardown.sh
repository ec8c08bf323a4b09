#!/usr/bin/env bash
# Delete the backtest stack (compute environments, queue, job definition, roles, policy, logs).
#
#   infra/teardown.sh [--stack NAME] [--region REGION] [--delete-images]
#
# Kept on purpose (DeletionPolicy: Retain), and listed at the end:
#   - the store bucket the stack created: candle history and results (and all their versions);
#   - the ECR repository with its images, unless --delete-images is given.
# The log group and its job logs are deleted with the stack. Jobs still queued or running are
# cancelled by Batch when their queue goes. Deploying again under the same name needs the
# repository gone (--delete-images) or a different --repository for infra/deploy.sh.
#
# Options (environment variable in brackets):
#   --stack NAME       [STACK_NAME] (crypto-backtest)
#   --region REGION    [AWS_REGION, AWS_DEFAULT_REGION, else the AWS CLI's configured region]
#   --delete-images    also delete the ECR repository and every image in it
#   -h, --help
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "$0")/lib.sh"  # PROG, STACK_NAME and REGION defaults, and the helpers
DELETE_IMAGES=0

while [[ $# -gt 0 ]]; do
  case $1 in
    --delete-images) DELETE_IMAGES=1; shift ;;
    *) shared_option "$@"; shift 2 ;;  # --stack, --region, --help
  esac
done

command -v aws >/dev/null || die "aws is not installed"
resolve_region

if ! status=$(cfn describe-stacks --stack-name "$STACK_NAME" --query "Stacks[0].StackStatus" --output text 2>&1); then
  [[ $status == *"does not exist"* ]] || die "cannot read stack $STACK_NAME: $status"
  log "stack $STACK_NAME does not exist in $REGION: nothing to delete"
  exit 0
fi

# What outlives the stack, read before it goes.
resource_id() {
  cfn list-stack-resources --stack-name "$STACK_NAME" \
    --query "StackResourceSummaries[?LogicalResourceId=='$1'].PhysicalResourceId" --output text
}
BUCKET=$(resource_id Bucket)
REPOSITORY=$(resource_id Repository)
DATA_URL=$(stack_output DataUrl)
[[ $DATA_URL != None ]] || DATA_URL=""

log "deleting stack $STACK_NAME ($status) in $REGION"
cfn delete-stack --stack-name "$STACK_NAME"
cfn wait stack-delete-complete --stack-name "$STACK_NAME"
log "stack $STACK_NAME deleted"

if [[ $DELETE_IMAGES -eq 1 && -n $REPOSITORY && $REPOSITORY != None ]]; then
  log "deleting ECR repository $REPOSITORY and its images"
  aws ecr delete-repository --region "$REGION" --repository-name "$REPOSITORY" --force >/dev/null
  REPOSITORY=""
fi

echo "Retained (delete by hand when no longer needed):"
if [[ -n $BUCKET && $BUCKET != None ]]; then
  echo "  S3 bucket $BUCKET (store ${DATA_URL:-}; versioned: empty every version first, e.g. in the console)"
else
  echo "  the store (${DATA_URL:-an existing bucket}) was not created by the stack and is untouched"
fi
if [[ -n $REPOSITORY && $REPOSITORY != None ]]; then
  echo "  ECR repository $REPOSITORY with its images:"
  echo "    aws ecr delete-repository --region $REGION --repository-name $REPOSITORY --force"
fi
