#!/usr/bin/env bash
# Deploy (or update) the backtest stack on AWS in one command, then print the Airflow settings.
#
#   infra/deploy.sh --subnets subnet-aaa,subnet-bbb --security-groups sg-ccc [options]
#
# 1. If the stack does not exist yet, create it with a placeholder image (this creates the
#    ECR repository the image goes to).
# 2. Build the job image from docker/ (linux/amd64; the backtest package and the users'
#    strategies/), tagged with the git commit, and push it to the stack's repository, unless that
#    tag is there already (tags are immutable): a commit, or an uncommitted change, to docker/,
#    backtest/ or strategies/ makes a new image.
# 3. Deploy the stack with that image (`aws cloudformation deploy`: a no-op when nothing changed).
# 4. Print the settings for the Airflow components and the policy to attach.
# 5. With --mwaa-environment NAME, or when the stack has an MWAA environment (docs/mwaa.md):
#    build the Amazon MWAA bundle from the stack's outputs (infra/mwaa_bundle.py, or use
#    --mwaa-bundle DIR), upload plugins.zip, requirements.txt and startup.sh to the environment's
#    bucket, point the environment at those object versions (the stack's own environment: its
#    Mwaa*S3Path/ObjectVersion parameters; another: `aws mwaa update-environment`), wait until it
#    is available again, sync dags/ to its DAG folder (no deletes), and create or update the
#    project's pools through its REST API.
#
# Running it again is safe: an unchanged commit and unchanged options change nothing (but
# --mwaa-environment updates the environment each time: new object versions).
# Options not given on an update keep the stack's current values.
#
# Options (environment variable in brackets):
#   --stack NAME            stack name, also the queue and job definition name [STACK_NAME] (crypto-backtest)
#   --region REGION         [AWS_REGION, AWS_DEFAULT_REGION, else the AWS CLI's configured region]
#   --subnets IDS           comma-separated subnet ids of an existing VPC (required to create)
#   --security-groups IDS   comma-separated security group ids (required to create)
#   --public-ip ENABLED|DISABLED   public IP for the tasks (ENABLED: public subnets, e.g. the default VPC)
#   --bucket NAME           use this existing bucket for the store (default: the stack creates one)
#   --prefix PREFIX         key prefix of the store in the bucket (data)
#   --repository NAME       ECR repository name (crypto-backtest)
#   --vcpu N --memory MIB   job size, a Fargate combination (1 / 2048)
#   --max-vcpus N           vCPUs in use at once per compute environment (16)
#   --timeout SECONDS       job attempt timeout (3600)
#   --log-retention DAYS    job log retention (30)
#   --service-role ARN      Batch service role (default: the service-linked role)
#   --tag TAG               image tag (default: git commit, plus -dirty-<time> when docker/,
#                           backtest/ or strategies/ has uncommitted changes)
#   --skip-build            do not build or push; the image --tag must be in the repository
#   --mwaa-environment NAME also deploy the project to this Amazon MWAA environment (step 5;
#                           default: the stack's MwaaEnvironmentName output, when it has one)
#   --mwaa-bundle DIR       for step 5: this bundle (make mwaa-bundle) instead of a new one
#   --dry-run               make only the AWS calls that read; print the others (and docker's) instead
#   -h, --help
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "$0")/lib.sh"  # PROG, STACK_NAME and REGION defaults, and the helpers
TAG=""
SKIP_BUILD=0
MWAA_ENV=""
MWAA_BUNDLE=""
DRY_RUN=0
PYTHON=${PYTHON:-.venv/bin/python}  # builds the bundle, tells the pools (the project's venv: make)
MWAA_POLL_SECONDS=${MWAA_POLL_SECONDS:-30}
PLACEHOLDER_IMAGE="public.ecr.aws/docker/library/python:3.11-slim"
declare -a OVERRIDES=()

while [[ $# -gt 0 ]]; do
  case $1 in
    --subnets) need_value "$@"; OVERRIDES+=("SubnetIds=$2"); shift 2 ;;
    --security-groups) need_value "$@"; OVERRIDES+=("SecurityGroupIds=$2"); shift 2 ;;
    --public-ip) need_value "$@"; OVERRIDES+=("AssignPublicIp=$2"); shift 2 ;;
    --bucket) need_value "$@"; OVERRIDES+=("BucketName=$2"); shift 2 ;;
    --prefix) need_value "$@"; OVERRIDES+=("DataPrefix=$2"); shift 2 ;;
    --repository) need_value "$@"; OVERRIDES+=("RepositoryName=$2"); shift 2 ;;
    --vcpu) need_value "$@"; OVERRIDES+=("JobVcpu=$2"); shift 2 ;;
    --memory) need_value "$@"; OVERRIDES+=("JobMemory=$2"); shift 2 ;;
    --max-vcpus) need_value "$@"; OVERRIDES+=("MaxVcpus=$2"); shift 2 ;;
    --timeout) need_value "$@"; OVERRIDES+=("JobTimeoutSeconds=$2"); shift 2 ;;
    --log-retention) need_value "$@"; OVERRIDES+=("LogRetentionDays=$2"); shift 2 ;;
    --service-role) need_value "$@"; OVERRIDES+=("BatchServiceRoleArn=$2"); shift 2 ;;
    --tag) need_value "$@"; TAG=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --mwaa-environment) need_value "$@"; MWAA_ENV=$2; shift 2 ;;
    --mwaa-bundle) need_value "$@"; MWAA_BUNDLE=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) shared_option "$@"; shift 2 ;;  # --stack, --region, --help
  esac
done

[[ -z $MWAA_BUNDLE || $MWAA_BUNDLE == /* ]] || MWAA_BUNDLE=$(pwd)/$MWAA_BUNDLE  # the caller's directory
cd "$(dirname "$0")/.."
TEMPLATE=infra/backtest-stack.yaml

for tool in aws git; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ $SKIP_BUILD -eq 0 && $DRY_RUN -eq 0 ]]; then
  command -v docker >/dev/null || die "docker is not installed (or use --skip-build with an image already pushed)"
fi
resolve_region
# change COMMAND...: run a command that changes something, or with --dry-run print it (stderr) instead
change() {
  if [[ $DRY_RUN -eq 1 ]]; then
    { printf '%s: dry-run:' "$PROG"; printf ' %q' "$@"; printf '\n'; } >&2
  else
    "$@"
  fi
}
deploy_stack() {  # deploy_stack IMAGE_URI: create or update, a no-op when nothing changed
  change aws cloudformation --region "$REGION" deploy --stack-name "$STACK_NAME" --template-file "$TEMPLATE" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides "ImageUri=$1" ${OVERRIDES[@]+"${OVERRIDES[@]}"}
}

has_override() {
  local item
  for item in ${OVERRIDES[@]+"${OVERRIDES[@]}"}; do
    [[ $item == "$1="* ]] && return 0
  done
  return 1
}

# 1. The stack, hence its ECR repository, must exist before the image can be pushed.
if ! status=$(cfn describe-stacks --stack-name "$STACK_NAME" --query "Stacks[0].StackStatus" --output text 2>&1); then
  [[ $status == *"does not exist"* ]] || die "cannot read stack $STACK_NAME: $status"
  status=NONE
fi
case $status in
  NONE | REVIEW_IN_PROGRESS)
    [[ $DRY_RUN -eq 0 ]] || die "--dry-run needs an existing stack ($STACK_NAME is not there)"
    has_override SubnetIds || die "a new stack needs --subnets"
    has_override SecurityGroupIds || die "a new stack needs --security-groups"
    log "creating stack $STACK_NAME in $REGION with a placeholder image (first deploy)"
    deploy_stack "$PLACEHOLDER_IMAGE"
    ;;
  ROLLBACK_COMPLETE | ROLLBACK_FAILED | DELETE_FAILED)
    die "stack $STACK_NAME is in state $status and cannot be updated: run infra/teardown.sh --stack $STACK_NAME first"
    ;;
  *_IN_PROGRESS)
    die "stack $STACK_NAME is busy ($status); wait for it to finish and run this again"
    ;;
  *) log "stack $STACK_NAME exists ($status)" ;;
esac
REPOSITORY_URI=$(stack_output EcrRepositoryUri)
[[ -n $REPOSITORY_URI && $REPOSITORY_URI != None ]] || die "stack $STACK_NAME has no EcrRepositoryUri output"
REPOSITORY_NAME=${REPOSITORY_URI#*/}
REGISTRY=${REPOSITORY_URI%%/*}

# 2. The image, tagged with the commit it was built from.
if [[ -z $TAG ]]; then
  TAG=$(git rev-parse --short=12 HEAD)
  # Uncommitted changes to what goes into the image: a tag of its own, never reused.
  if [[ -n $(git status --porcelain -- docker backtest strategies .dockerignore) ]]; then
    TAG="$TAG-dirty-$(date -u +%Y%m%dT%H%M%SZ)"
  fi
fi
IMAGE_URI="$REPOSITORY_URI:$TAG"
if aws ecr describe-images --region "$REGION" --repository-name "$REPOSITORY_NAME" \
  --image-ids "imageTag=$TAG" >/dev/null 2>&1; then
  log "image $IMAGE_URI is in the repository already: not building"
elif [[ $SKIP_BUILD -eq 1 ]]; then
  die "--skip-build: image $IMAGE_URI is not in the repository"
else
  log "building $IMAGE_URI"
  change docker build --platform linux/amd64 -f docker/Dockerfile -t "$IMAGE_URI" .
  if [[ $DRY_RUN -eq 0 ]]; then
    aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
  fi
  change docker push "$IMAGE_URI"
fi

# 3. The stack with that image (a new job definition revision when the image changed).
log "deploying stack $STACK_NAME with $IMAGE_URI"
deploy_stack "$IMAGE_URI"

# 4. What Airflow needs.
cat <<EOF

# Airflow settings (the environment of every Airflow component), from stack $STACK_NAME:
BACKTEST_EXECUTOR=batch
BACKTEST_SOURCE=binance
BACKTEST_DATA_URL=$(stack_output DataUrl)
BACKTEST_BATCH_JOB_QUEUE=$(stack_output JobQueueName)
BACKTEST_BATCH_JOB_DEFINITION=$(stack_output JobDefinitionName)
BACKTEST_JOB_VCPU=$(stack_output JobVcpu)
BACKTEST_JOB_MEMORY_MIB=$(stack_output JobMemory)
BACKTEST_BATCH_JOB_TIMEOUT_SECONDS=$(stack_output JobTimeoutSeconds)
BACKTEST_NOTIFY_SNS_TOPIC_ARN=$(stack_output AlertsTopicArn)
AWS_DEFAULT_REGION=$REGION

# Attach this policy to the role or user Airflow's workers and dag-processor use (the
# BACKTEST_AWS_CONN_ID connection's, or the instance/IRSA role), e.g.:
#   aws iam attach-role-policy --role-name <airflow-role> --policy-arn $(stack_output AirflowPolicyArn)
# Job logs: CloudWatch log group $(stack_output LogGroupName)
# Alerts: subscribe to the topic, e.g.
#   aws sns subscribe --topic-arn $(stack_output AlertsTopicArn) --protocol email --notification-endpoint <you@example.com>
# Pools (once per Airflow deployment; docs/operation.md, "Concurrency"): the exchange's API budget
#   airflow pools set backtest_exchange 2 "Refresh tasks: concurrent request streams to the exchange"
EOF

# 5. The Amazon MWAA environment (docs/mwaa.md): --mwaa-environment's, else the stack's own, if any.
STACK_MWAA=$(stack_output MwaaEnvironmentName)
if [[ -z $MWAA_ENV ]]; then
  MWAA_ENV=$STACK_MWAA
  if [[ $MWAA_ENV == None ]]; then
    [[ -z $MWAA_BUNDLE ]] || die "--mwaa-bundle: no MWAA environment (no --mwaa-environment, none in the stack)"
    exit 0
  fi
fi
mwaa() { aws mwaa --region "$REGION" "$@"; }
if [[ -z $MWAA_BUNDLE ]]; then
  [[ -x $PYTHON ]] || die "$PYTHON not found: run make first, or set PYTHON to the project's venv python"
  MWAA_BUNDLE=$PWD/dist/mwaa
  log "building the MWAA bundle $MWAA_BUNDLE from stack $STACK_NAME"
  "$PYTHON" infra/mwaa_bundle.py --out "$MWAA_BUNDLE" --stack "$STACK_NAME" --region "$REGION" >/dev/null
fi
for file in plugins.zip requirements.txt startup.sh dags; do
  [[ -e $MWAA_BUNDLE/$file ]] || die "$MWAA_BUNDLE/$file is missing: not a bundle of make mwaa-bundle"
done
read -r BUCKET_ARN DAG_PATH < <(mwaa get-environment --name "$MWAA_ENV" \
  --query 'Environment.[SourceBucketArn,DagS3Path]' --output text) || die "cannot read MWAA environment $MWAA_ENV"
MWAA_BUCKET=${BUCKET_ARN##*:}
log "MWAA environment $MWAA_ENV: bucket $MWAA_BUCKET, DAG folder $DAG_PATH"

# upload KEY: put the bundle's file at the bucket's root; its new VersionId (the bucket is versioned)
upload() {
  if [[ $DRY_RUN -eq 1 ]]; then
    change aws s3api --region "$REGION" put-object --bucket "$MWAA_BUCKET" --key "$1" --body "$MWAA_BUNDLE/$1"
    echo "DRY-RUN-VERSION-OF-$1"
  else
    aws s3api --region "$REGION" put-object --bucket "$MWAA_BUCKET" --key "$1" --body "$MWAA_BUNDLE/$1" \
      --query VersionId --output text
  fi
}
PLUGINS_VERSION=$(upload plugins.zip)
REQUIREMENTS_VERSION=$(upload requirements.txt)
STARTUP_VERSION=$(upload startup.sh)
for version in "$PLUGINS_VERSION" "$REQUIREMENTS_VERSION" "$STARTUP_VERSION"; do
  [[ -n $version && $version != None && $version != null ]] || die "bucket $MWAA_BUCKET has no versioning (MWAA needs it)"
done
log "uploaded plugins.zip ($PLUGINS_VERSION), requirements.txt ($REQUIREMENTS_VERSION), startup.sh ($STARTUP_VERSION)"
if [[ $MWAA_ENV == "$STACK_MWAA" ]]; then
  # The stack's own environment: its parameters take the versions (else the next deploy would
  # undo them); `cloudformation deploy` waits until the environment runs them.
  log "updating the stack's MWAA environment $MWAA_ENV (MWAA takes 20 to 30 minutes)"
  OVERRIDES+=("MwaaPluginsS3Path=plugins.zip" "MwaaPluginsS3ObjectVersion=$PLUGINS_VERSION")
  OVERRIDES+=("MwaaRequirementsS3Path=requirements.txt" "MwaaRequirementsS3ObjectVersion=$REQUIREMENTS_VERSION")
  OVERRIDES+=("MwaaStartupScriptS3Path=startup.sh" "MwaaStartupScriptS3ObjectVersion=$STARTUP_VERSION")
  deploy_stack "$IMAGE_URI"
else
  change aws mwaa --region "$REGION" update-environment --name "$MWAA_ENV" \
    --plugins-s3-path plugins.zip --plugins-s3-object-version "$PLUGINS_VERSION" \
    --requirements-s3-path requirements.txt --requirements-s3-object-version "$REQUIREMENTS_VERSION" \
    --startup-script-s3-path startup.sh --startup-script-s3-object-version "$STARTUP_VERSION" >/dev/null
fi
if [[ $DRY_RUN -eq 0 && $MWAA_ENV != "$STACK_MWAA" ]]; then
  log "waiting for $MWAA_ENV to install the bundle (MWAA takes 20 to 30 minutes)"
  while :; do
    read -r status update < <(mwaa get-environment --name "$MWAA_ENV" \
      --query 'Environment.[Status,LastUpdate.Status]' --output text) || die "cannot read MWAA environment $MWAA_ENV"
    case $status/$update in
      AVAILABLE/SUCCESS) break ;;
      *FAILED*) die "MWAA environment $MWAA_ENV: $status/$update (see its LastUpdate.Error and the requirements log)" ;;
    esac
    sleep "$MWAA_POLL_SECONDS"
  done
fi
# The DAG file last, once the environment runs the wheel it imports; other files there are kept.
change aws s3 --region "$REGION" sync "$MWAA_BUNDLE/dags" "s3://$MWAA_BUCKET/${DAG_PATH%/}/"

# The pools (backtest_airflow.settings.pool_slots) through the environment's Airflow REST API.
while IFS=$'\t' read -r pool body; do
  if mwaa invoke-rest-api --name "$MWAA_ENV" --method GET --path "/pools/$pool" >/dev/null 2>&1; then
    change aws mwaa --region "$REGION" invoke-rest-api --name "$MWAA_ENV" --method PATCH --path "/pools/$pool" --body "$body" >/dev/null
    log "pool $pool exists: PATCH $body"
  else
    change aws mwaa --region "$REGION" invoke-rest-api --name "$MWAA_ENV" --method POST --path /pools --body "$body" >/dev/null
    log "pool $pool is new: POST $body"
  fi
done < <("$PYTHON" -c '
import json
from backtest_airflow.settings import pool_slots
for name, (slots, description) in pool_slots().items():
    print(name, json.dumps({"name": name, "slots": slots, "description": description}), sep="\t")
')
done_or_not=$([[ $DRY_RUN -eq 1 ]] && echo "would run (dry run)" || echo runs)
log "MWAA environment $MWAA_ENV $done_or_not $(grep -v '^[#-]' "$MWAA_BUNDLE/requirements.txt")"
