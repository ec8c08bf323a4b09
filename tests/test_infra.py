"""The AWS deployment as code (infra/): the stack deployed for real into moto and checked through
the service APIs; what moto's CloudFormation cannot deploy checked on the template itself; the
IAM policies judged by moto (real S3 requests on a moto server that enforces IAM, its policy
evaluator for the other services); the Fargate size rules evaluated; the scripts run; and the
DAG's batch mode run against the stack's outputs.

moto 5.2.5 deploys every resource of the template except the bucket policies, the Glue database and
tables, the Athena workgroup, the MWAA environment and a security group egress rule (no
CloudFormation support: the Glue tables are checked against the project's files in
tests/test_glue_tables.py, the rest on the template), and it ignores some properties: on the bucket VersioningConfiguration,
PublicAccessBlockConfiguration, OwnershipControls and LifecycleConfiguration; on the ECR
repository ImageScanningConfiguration, EncryptionConfiguration and LifecyclePolicy; on the job
definition PlatformCapabilities, Timeout and PropagateTags; on the queue JobStateTimeLimitActions. It evaluates neither the template's
Rules nor parameter constraints (AllowedValues, AllowedPattern, MinValue). Those parts are
asserted on the template (parsed with cfn-lint's CloudFormation-aware decoder).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from functools import cache
from itertools import product

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support import REPO, aws_env, free_port

pytestmark = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(S3..BucketPolicy|Glue..|Athena..|MWAA..|EC2..SecurityGroupEgress):UserWarning"
)

INFRA = REPO / "infra"
TEMPLATE_FILE = INFRA / "backtest-stack.yaml"
REGION = "us-east-1"

# Fargate's vCPU/memory (MiB) combinations for a Batch job, written out here independently of the template.
FARGATE_SIZES = {
    "0.25": {512, 1024, 2048},
    "0.5": set(range(1024, 4097, 1024)),
    "1": set(range(2048, 8193, 1024)),
    "2": set(range(4096, 16385, 1024)),
    "4": set(range(8192, 30721, 1024)),
}
# Resource types of the template that moto's CloudFormation skips (with a warning).
MOTO_UNSUPPORTED = {
    "AWS::S3::BucketPolicy",
    "AWS::Glue::Database",
    "AWS::Glue::Table",
    "AWS::Athena::WorkGroup",
    "AWS::MWAA::Environment",
    "AWS::EC2::SecurityGroupEgress",
}
# What the DAG's configuration (and infra/deploy.sh) reads from the stack.
REQUIRED_OUTPUTS = {
    "JobQueueName",
    "JobQueueArn",
    "JobDefinitionName",
    "JobDefinitionArn",
    "JobVcpu",
    "JobMemory",
    "BucketName",
    "DataUrl",
    "EcrRepositoryUri",
    "AirflowPolicyArn",
    "LogGroupName",
    "AlertsTopicArn",
}


# ---------------------------------------------------------------------------------- the template


@cache
def template() -> dict:
    """The template as plain data, short-form tags (!Ref, !Sub ...) in their long form."""
    from cfnlint.decode import decode

    parsed, errors = decode(str(TEMPLATE_FILE))
    assert not errors, errors
    return json.loads(json.dumps(parsed))


def resource(logical_id: str) -> dict:
    return template()["Resources"][logical_id]


# What CloudFormation checks before it creates anything, which no tool here does: moto stores
# Rules and parameter constraints without evaluating them; cfn-lint 1.58 checks given parameter
# values for presence and AllowedValues only (E2900, in test_template_lints_clean...), and reads
# Rules only to prune its condition scenarios, with Fn::Contains assertions taken as true.
def rule_value(expr, params: dict[str, str]):
    """Evaluate a Rules expression (the functions this template uses) for the given parameters."""
    if isinstance(expr, list):
        return [rule_value(item, params) for item in expr]
    if not isinstance(expr, dict):
        return expr
    ((function, args),) = expr.items()
    if function == "Ref":
        return params[args]
    if function == "Condition":
        return rule_value(template()["Conditions"][args], params)
    values = rule_value(args, params)
    if function == "Fn::Equals":
        return str(values[0]) == str(values[1])
    if function == "Fn::Contains":
        return str(values[1]) in [str(v) for v in values[0]]
    if function == "Fn::And":
        return all(values)
    if function == "Fn::Or":
        return any(values)
    if function == "Fn::Not":
        return not values[0]
    raise NotImplementedError(function)


def parameter_errors(given: dict[str, str]) -> list[str]:
    """What CloudFormation checks before it creates anything: parameter constraints, then Rules."""
    errors, values = [], {}
    for name, spec in template()["Parameters"].items():
        if name not in given and "Default" not in spec:
            errors.append(f"Parameters: [{name}] must have values")
            continue
        value = values[name] = str(given.get(name, spec.get("Default")))
        if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
            values[name] = value.split(",")
        if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
            errors.append(f"Parameter '{name}' must be one of AllowedValues")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
            errors.append(f"Parameter '{name}' must match pattern {spec['AllowedPattern']}")
        if len(value) < spec.get("MinLength", 0):
            errors.append(f"Parameter '{name}' must contain at least {spec['MinLength']} characters")
        if spec["Type"] == "Number" and not spec.get("MinValue", -1e300) <= float(value) <= spec.get("MaxValue", 1e300):
            errors.append(f"Parameter '{name}' must be from {spec.get('MinValue')} to {spec.get('MaxValue')}")
    for rule in template().get("Rules", {}).values():
        if errors or ("RuleCondition" in rule and not rule_value(rule["RuleCondition"], values)):
            continue
        errors += [a["AssertDescription"] for a in rule["Assertions"] if not rule_value(a["Assert"], values)]
    return errors


def condition_holds(name: str, given: dict[str, str]) -> bool:
    """A template condition's value for these parameters (the defaults for the others)."""
    params = {k: str(given.get(k, spec.get("Default"))) for k, spec in template()["Parameters"].items()}
    return rule_value(template()["Conditions"][name], params)


def created(given: dict[str, str]) -> set[str]:
    """The resources CloudFormation creates for these parameters (their conditions hold)."""
    return {
        k for k, r in template()["Resources"].items() if "Condition" not in r or condition_holds(r["Condition"], given)
    }


def _refers_to(value, names: set[str]) -> bool:
    if isinstance(value, dict):
        if value.get("Ref") in names or (value.get("Fn::GetAtt") or [None])[0] in names:
            return True
        return any(_refers_to(v, names) for v in value.values())
    return isinstance(value, list) and any(_refers_to(v, names) for v in value)


# ---------------------------------------------------------------------------------- IAM
# Policies are judged by moto, two ways (there is no maintained offline IAM evaluator on PyPI):
# - S3, where moto's server enforces IAM per request with the real action and object/bucket ARN:
#   a user holding the policy makes the real call on a second moto server that enforces IAM
#   (`iam_moto`), and AccessDenied or success is the verdict.
# - Batch, ECR, CloudWatch Logs, SNS, IAM, where moto's server authorizes every request against
#   resource "*" (and Batch under lower-case action names): moto's policy evaluator itself, the
#   class its server enforces with (`allowed`), on the ARN that AWS authorizes.
# Of the condition operators moto evaluates StringEquals only (StringLike and Bool hold whatever
# the request), and only on context keys the caller supplies: the cases hinging on those
# conditions are asserted on the policy document.


ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def allowed(documents: list[dict], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """moto's verdict on one request under these identity policies: an explicit Deny wins, else an Allow is needed."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    verdicts = {
        IAMPolicy(json.dumps(d)).is_action_permitted(action, resource, incoming_condition_values=context)
        for d in documents
    }
    return PermissionResult.PERMITTED in verdicts and PermissionResult.DENIED not in verdicts


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statement(documents: list[dict], sid: str) -> dict:
    (found,) = [s for d in documents for s in d["Statement"] if s.get("Sid") == sid]
    return found


@pytest.fixture(scope="module")
def iam_moto():
    """An administrator's boto3 session on a second moto server, in its own process, that enforces IAM.

    moto's switch (INITIAL_NO_AUTH_ACTION_COUNT, the requests let through before it enforces IAM)
    is process-wide: the shared in-process server of the other tests stays open.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},  # the three requests making the administrator
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        with pytest.raises(ClientError, match="InvalidClientTokenId"):  # from now on every request is checked
            iam.list_users()
        yield endpoint, boto3.Session(key["AccessKeyId"], key["SecretAccessKey"], region_name=REGION)
    finally:
        server.terminate()
        server.wait(timeout=30)


class StoreUser:
    """An IAM user holding these policies on the IAM-enforcing moto server, making real S3 requests."""

    def __init__(self, iam_moto, documents: list[dict], buckets: list[str]):
        endpoint, admin = iam_moto
        self.admin_s3 = admin.client("s3", endpoint_url=endpoint)
        for bucket in buckets:
            if bucket not in {b["Name"] for b in self.admin_s3.list_buckets()["Buckets"]}:
                self.admin_s3.create_bucket(Bucket=bucket)
        iam, name = admin.client("iam", endpoint_url=endpoint), f"user-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        for i, document in enumerate(documents):
            iam.put_user_policy(UserName=name, PolicyName=f"policy-{i}", PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        user = boto3.Session(key["AccessKeyId"], key["SecretAccessKey"], region_name=REGION)
        self.s3 = user.client("s3", endpoint_url=endpoint)

    def can(self, action: str, bucket: str, key: str = "", prefix: str | None = None) -> bool:
        """Whether the request `action` on the bucket (and key) passes IAM; other errors fail the test."""
        if action == "s3:GetObject":  # there is something to get
            self.admin_s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        request = {
            "s3:GetObject": lambda: self.s3.get_object(Bucket=bucket, Key=key),
            "s3:PutObject": lambda: self.s3.put_object(Bucket=bucket, Key=key, Body=b"y"),
            "s3:DeleteObject": lambda: self.s3.delete_object(Bucket=bucket, Key=key),
            "s3:ListBucket": lambda: self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix or ""),
            "s3:ListAllMyBuckets": self.s3.list_buckets,
            "s3:PutBucketPolicy": lambda: self.s3.put_bucket_policy(Bucket=bucket, Policy="{}"),
            "s3:DeleteBucket": lambda: self.s3.delete_bucket(Bucket=bucket),
        }[action]
        try:
            request()
        except ClientError as error:
            if error.response["Error"]["Code"] == "AccessDenied":
                return False
            raise
        return True


# ---------------------------------------------------------------------------------- Batch retries


def _batch_glob(pattern: str, value: str) -> bool:
    """Batch's patterns: exact, or a prefix when they end with '*'."""
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def retry_action(strategy: dict, status_reason: str = "", reason: str = "", exit_code: int | None = None) -> str:
    """What Batch does after a failed attempt: the first entry whose conditions all match, else RETRY."""
    for entry in strategy["evaluateOnExit"]:
        checks = []
        if "onStatusReason" in entry:
            checks.append(_batch_glob(entry["onStatusReason"], status_reason))
        if "onReason" in entry:
            checks.append(_batch_glob(entry["onReason"], reason))
        if "onExitCode" in entry:
            checks.append(exit_code is not None and _batch_glob(entry["onExitCode"], str(exit_code)))
        if all(checks):
            return entry["action"].upper()
    return "RETRY"


# ---------------------------------------------------------------------------------- deploying into moto


@dataclass(frozen=True)
class Network:
    subnets: list[str]
    security_group: str
    batch_service_role: str


@dataclass(frozen=True)
class Stack:
    name: str
    params: dict[str, str]
    outputs: dict[str, str]


@pytest.fixture(scope="module")
def aws(moto_server):
    """boto3 clients on the moto server."""

    def client(service: str):
        return boto3.client(service, endpoint_url=moto_server, region_name=REGION)

    return client


@pytest.fixture(scope="module")
def network(aws) -> Network:
    """An existing VPC (two subnets, a security group) and Batch's service-linked role, in moto."""
    ec2, iam = aws("ec2"), aws("iam")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in enumerate("ab")
    ]
    group = ec2.create_security_group(GroupName=f"backtest-{uuid.uuid4().hex[:8]}", Description="jobs", VpcId=vpc)
    try:
        role = iam.create_service_linked_role(AWSServiceName="batch.amazonaws.com")["Role"]["Arn"]
    except iam.exceptions.ClientError:  # created by another test of this session
        role = iam.list_roles(PathPrefix="/aws-service-role/batch.amazonaws.com/")["Roles"][0]["Arn"]
    return Network(subnets, group["GroupId"], role)


def deploy(aws, network: Network, **overrides: str) -> Stack:
    """Create the stack from the template in moto and wait for CREATE_COMPLETE.

    moto requires a Batch service role on compute environments, so the tests pass the
    service-linked role's ARN (a real deployment leaves BatchServiceRoleArn empty: same role).
    """
    name = f"backtest-{uuid.uuid4().hex[:8]}"
    params = {
        "SubnetIds": ",".join(network.subnets),
        "SecurityGroupIds": network.security_group,
        "ImageUri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{name}:0123456789ab",
        "RepositoryName": name,
        "BatchServiceRoleArn": network.batch_service_role,
        **overrides,
    }
    assert parameter_errors(params) == []  # what CloudFormation would check first (moto does not)
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE_FILE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    (described,) = cfn.describe_stacks(StackName=name)["Stacks"]
    return Stack(name, params, {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])})


@pytest.fixture(scope="module")
def stack(aws, network) -> Stack:
    """The stack with non-default settings (a nested data prefix, a small job, private IPs)."""
    return deploy(
        aws,
        network,
        DataPrefix="prod/backtests",
        JobVcpu="0.5",
        JobMemory="3072",
        MaxVcpus="8",
        JobTimeoutSeconds="1800",
        LogRetentionDays="14",
        AssignPublicIp="DISABLED",
    )


def role_policies(iam, role_arn: str) -> list[dict]:
    """A role's inline policies (it has no managed ones)."""
    name = role_arn.rsplit("/", 1)[1]
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    documents = [
        iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]
    ]
    # moto returns the inline policies its CloudFormation created as a Python repr, not JSON.
    return [ast.literal_eval(d) if isinstance(d, str) else d for d in documents]


def managed_policy(iam, arn: str) -> dict:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]


# ---------------------------------------------------------------------------------- static checks


@pytest.mark.slow
def test_template_lints_clean_and_allowed_values_reject_non_fargate_sizes():
    from cfnlint.api import ManualArgs, lint

    text = TEMPLATE_FILE.read_text()
    base = {"SubnetIds": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"], "ImageUri": "image:tag"}

    def findings(**params):
        config = ManualArgs(regions=[REGION], parameters=[{**base, **params}])
        return [f"{m.rule.id} {m.message}" for m in lint(text, config=config)]

    assert [f"{m.rule.id} {m.message}" for m in lint(text, config=ManualArgs(regions=[REGION]))] == []
    assert findings(JobVcpu="1", JobMemory="2048") == []
    assert findings(JobVcpu="3") == ["E2900 '3' is not one of ['0.25', '0.5', '1', '2', '4']"]
    (bad_memory,) = findings(JobMemory="3000")
    assert bad_memory.startswith("E2900 '3000' is not one of ['512', '1024', '2048'")
    # A pair of allowed values that Fargate does not offer is the Rules' job: cfn-lint does not evaluate
    # them (CloudFormation does, at deploy time; see the next tests).
    assert findings(JobVcpu="4", JobMemory="512") == []


def test_rules_accept_exactly_fargate_combinations():
    spec = template()["Parameters"]
    accepted = {
        (vcpu, int(memory))
        for vcpu, memory in product(spec["JobVcpu"]["AllowedValues"], spec["JobMemory"]["AllowedValues"])
        if not parameter_errors(
            {"SubnetIds": "s", "SecurityGroupIds": "g", "ImageUri": "i", "JobVcpu": vcpu, "JobMemory": memory}
        )
    }
    assert accepted == {(vcpu, memory) for vcpu, sizes in FARGATE_SIZES.items() for memory in sizes}
    assert len(accepted) == 3 + 4 + 7 + 13 + 23


@pytest.mark.parametrize(
    "vcpu, memory, message",
    [
        ("0.25", "512", None),
        ("0.5", "4096", None),
        ("4", "30720", None),
        ("0.25", "4096", "Fargate: JobVcpu 0.25 needs JobMemory 512, 1024 or 2048 (MiB)."),
        ("1", "1024", "Fargate: JobVcpu 1 needs JobMemory from 2048 to 8192 MiB in steps of 1024."),
        ("2", "30720", "Fargate: JobVcpu 2 needs JobMemory from 4096 to 16384 MiB in steps of 1024."),
        ("4", "512", "Fargate: JobVcpu 4 needs JobMemory from 8192 to 30720 MiB in steps of 1024."),
        ("3", "4096", "Parameter 'JobVcpu' must be one of AllowedValues"),
        ("1", "2500", "Parameter 'JobMemory' must be one of AllowedValues"),
    ],
)
def test_invalid_fargate_size_is_rejected_before_deploying(vcpu, memory, message):
    params = {"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1", "ImageUri": "image:1"}
    errors = parameter_errors({**params, "JobVcpu": vcpu, "JobMemory": memory})
    assert errors == ([message] if message else [])


def test_other_parameter_constraints():
    params = {"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1", "ImageUri": "image:1"}
    assert parameter_errors({}) == [
        "Parameters: [SubnetIds] must have values",
        "Parameters: [SecurityGroupIds] must have values",
        "Parameters: [ImageUri] must have values",
    ]
    for name, value in [
        ("DataPrefix", "/data/"),
        ("RepositoryName", "Crypto"),
        ("BucketName", "Not_A_Bucket"),
        ("AssignPublicIp", "YES"),
        ("LogRetentionDays", "10"),
        ("JobTimeoutSeconds", "30"),
        ("MaxVcpus", "0"),
    ]:
        assert len(parameter_errors({**params, name: value})) == 1, name
    assert parameter_errors({**params, "DataPrefix": "prod/backtests", "BucketName": "my.bucket-1"}) == []


# ---------------------------------------------------------------------------------- deployed into moto


@pytest.mark.slow
def test_stack_deploys_into_moto(aws, stack):
    from moto.cloudformation.parsing import get_model_map

    cfn = aws("cloudformation")
    (described,) = cfn.describe_stacks(StackName=stack.name)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    types = {r["Type"] for r in template()["Resources"].values()}
    assert types - set(get_model_map()) == MOTO_UNSUPPORTED  # everything else is deployed
    deployed = {
        r["LogicalResourceId"]: r
        for r in cfn.list_stack_resources(StackName=stack.name)["StackResourceSummaries"]
        if r.get("LogicalResourceId")
    }
    resources = template()["Resources"]
    expected = {k for k in created(stack.params) if resources[k]["Type"] not in MOTO_UNSUPPORTED}
    assert "MwaaEnvironment" not in created(stack.params)  # optional, off by default
    assert set(deployed) == expected
    assert {r["ResourceStatus"] for r in deployed.values()} == {"CREATE_COMPLETE"}
    assert set(template()["Outputs"]) >= REQUIRED_OUTPUTS
    skipped = {k for k, r in resources.items() if r["Type"] in MOTO_UNSUPPORTED}
    shown = {
        k
        for k, o in template()["Outputs"].items()
        if ("Condition" not in o or condition_holds(o["Condition"], stack.params)) and not _refers_to(o, skipped)
    }
    assert set(stack.outputs) == shown


@pytest.mark.slow
def test_compute_environments_and_queue(aws, stack, network):
    batch = aws("batch")
    (queue,) = batch.describe_job_queues(jobQueues=[stack.outputs["JobQueueName"]])["jobQueues"]
    assert queue["jobQueueArn"] == stack.outputs["JobQueueArn"]
    assert queue["state"] == "ENABLED"
    order = sorted(queue["computeEnvironmentOrder"], key=lambda item: item["order"])
    assert [item["order"] for item in order] == [1, 2]
    environments = batch.describe_compute_environments(
        computeEnvironments=[item["computeEnvironment"] for item in order]
    )
    by_arn = {env["computeEnvironmentArn"]: env for env in environments["computeEnvironments"]}
    spot, on_demand = (by_arn[item["computeEnvironment"]] for item in order)
    assert spot["computeResources"]["type"] == "FARGATE_SPOT"  # Spot first
    assert on_demand["computeResources"]["type"] == "FARGATE"
    for env in (spot, on_demand):
        assert env["type"] == "MANAGED" and env["state"] == "ENABLED"
        assert env["computeResources"]["maxvCpus"] == 8
        assert env["computeResources"]["subnets"] == network.subnets
        assert env["computeResources"]["securityGroupIds"] == [network.security_group]
        assert env["serviceRole"] == network.batch_service_role
    # Without BatchServiceRoleArn the compute environments use Batch's service-linked role.
    assert resource("SpotComputeEnvironment")["Properties"]["ServiceRole"] == {
        "Fn::If": ["HasBatchServiceRole", {"Ref": "BatchServiceRoleArn"}, {"Ref": "AWS::NoValue"}]
    }


# The reasons AWS Batch can act on for a job left RUNNABLE in a queue of ECS/Fargate compute
# environments (its guide, "Automatic remediation with jobStateTimeLimitActions"); Fargate: CANCEL only.
RUNNABLE_REASONS = {
    "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
}


def test_queue_cancels_jobs_stuck_runnable_after_the_configured_time():
    """On the template: moto's Batch ignores JobStateTimeLimitActions."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    actions = resource("JobQueue")["Properties"]["JobStateTimeLimitActions"]
    assert {a["Reason"] for a in actions} == RUNNABLE_REASONS and len(actions) == len(RUNNABLE_REASONS)
    for action in actions:
        assert (action["State"], action["Action"]) == ("RUNNABLE", "CANCEL")
        assert action["MaxTimeSeconds"] == {"Ref": "RunnableTimeoutSeconds"}
    # The parameter's range is AWS's; the pinned cfn-lint's schema has the property with that range.
    spec = template()["Parameters"]["RunnableTimeoutSeconds"]
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, "AWS::Batch::JobQueue").schema
    item = schema["definitions"]["JobStateTimeLimitAction"]
    assert "JobStateTimeLimitActions" in schema["properties"]
    limits = item["properties"]["MaxTimeSeconds"]
    assert (spec["MinValue"], spec["MaxValue"]) == (limits["minimum"], limits["maximum"]) == (600, 86400)
    assert spec["MinValue"] <= spec["Default"] <= spec["MaxValue"]
    params = {"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1", "ImageUri": "image:1"}
    assert parameter_errors({**params, "RunnableTimeoutSeconds": "3600"}) == []
    for bad in ("599", "86401"):
        assert parameter_errors({**params, "RunnableTimeoutSeconds": bad}) == [
            "Parameter 'RunnableTimeoutSeconds' must be from 600 to 86400"
        ]


@pytest.mark.slow
def test_one_job_definition_for_all_pairs(aws, stack):
    (definition,) = aws("batch").describe_job_definitions(
        jobDefinitionName=stack.outputs["JobDefinitionName"], status="ACTIVE"
    )["jobDefinitions"]
    assert definition["jobDefinitionArn"] == stack.outputs["JobDefinitionArn"]
    assert definition["type"] == "container"
    container = definition["containerProperties"]
    assert container["image"] == stack.params["ImageUri"]
    assert container["command"] == []  # the DAG's plan renders each job's command
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {"VCPU": "0.5", "MEMORY": "3072"}
    assert container["jobRoleArn"] == stack.outputs["JobRoleArn"]
    assert container["executionRoleArn"] == stack.outputs["ExecutionRoleArn"]
    assert container["networkConfiguration"] == {"assignPublicIp": "DISABLED"}
    assert container["fargatePlatformConfiguration"] == {"platformVersion": "LATEST"}
    assert container["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"}
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": stack.outputs["LogGroupName"],
            "awslogs-region": REGION,
            "awslogs-stream-prefix": "backtest",
        },
    }
    assert definition["retryStrategy"]["attempts"] == 3
    # moto's CloudFormation drops these three properties: checked on the template.
    properties = resource("JobDefinition")["Properties"]
    assert properties["PlatformCapabilities"] == ["FARGATE"]
    assert properties["Timeout"] == {"AttemptDurationSeconds": {"Ref": "JobTimeoutSeconds"}}
    assert properties["PropagateTags"] is True


@pytest.mark.slow
@pytest.mark.parametrize(
    "status_reason, reason, exit_code, action",
    [
        ("Essential container in task exited", "", 2, "EXIT"),  # invalid arguments
        ("Essential container in task exited", "", 3, "EXIT"),  # bad or missing data
        ("Essential container in task exited", "", 1, "EXIT"),  # a bug
        ("Essential container in task exited", "OutOfMemoryError: Container killed due to memory usage", 137, "EXIT"),
        ("Essential container in task exited", "", 4, "RETRY"),  # storage/network I/O error
        ("Your Spot Task was interrupted.", "", 137, "RETRY"),
        ("Your Spot Task was interrupted.", "", None, "RETRY"),
        ("Host EC2 (instance i-0123456789abcdef0) terminated.", "", None, "RETRY"),
        ("Task failed to start", "CannotPullContainerError: pull image manifest has been retried", None, "RETRY"),
        ("CannotPullContainerError: ref pull has been retried 1 time(s)", "", None, "RETRY"),
        ("ResourceInitializationError: unable to pull secrets or registry auth", "", None, "RETRY"),
        ("Timeout waiting for network interface provisioning to complete.", "", None, "RETRY"),
    ],
)
def test_retry_strategy_retries_infrastructure_and_io_failures_only(
    aws, stack, status_reason, reason, exit_code, action
):
    (definition,) = aws("batch").describe_job_definitions(jobDefinitions=[stack.outputs["JobDefinitionArn"]])[
        "jobDefinitions"
    ]
    deployed = definition["retryStrategy"]
    assert retry_action(deployed, status_reason, reason, exit_code) == action
    # The same verdicts from the template itself, which also keeps within Batch's limits.
    strategy = resource("JobDefinition")["Properties"]["RetryStrategy"]
    entries = [{k[0].lower() + k[1:]: v for k, v in entry.items()} for entry in strategy["EvaluateOnExit"]]
    assert retry_action({"evaluateOnExit": entries}, status_reason, reason, exit_code) == action
    assert len(entries) <= 5
    for entry in entries:
        assert entry["action"] in ("RETRY", "EXIT")
        assert re.fullmatch(r"[0-9]*\*?", entry.get("onExitCode", ""))
        for key in ("onStatusReason", "onReason"):
            assert re.fullmatch(r"[A-Za-z0-9.: \t]*\*?", entry.get(key, ""))


@pytest.mark.slow
def test_bucket_repository_and_log_group(aws, stack):
    s3, ecr, logs = aws("s3"), aws("ecr"), aws("logs")
    bucket = stack.outputs["BucketName"]
    (sse,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (repository,) = ecr.describe_repositories(repositoryNames=[stack.params["RepositoryName"]])["repositories"]
    assert repository["repositoryUri"] == stack.outputs["EcrRepositoryUri"]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    (group,) = logs.describe_log_groups(logGroupNamePrefix=stack.outputs["LogGroupName"])["logGroups"]
    assert group["logGroupName"] == f"/aws/batch/{stack.name}"
    assert group["retentionInDays"] == 14

    # What moto's CloudFormation ignores, on the template.
    bucket_props = resource("Bucket")["Properties"]
    assert bucket_props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket_props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert resource("Bucket")["DeletionPolicy"] == resource("Bucket")["UpdateReplacePolicy"] == "Retain"
    repo_props = resource("Repository")["Properties"]
    assert repo_props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    (lifecycle_rule,) = json.loads(repo_props["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert lifecycle_rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20}
    assert lifecycle_rule["action"] == {"type": "expire"}
    assert resource("Repository")["DeletionPolicy"] == "Retain"

    # The bucket policy (a resource type moto cannot deploy), resolved for this bucket and evaluated.
    policy = resource("BucketPolicy")
    assert policy["Condition"] == resource("Bucket")["Condition"] == "CreateBucket"
    arn = f"arn:aws:s3:::{bucket}"
    document = json.loads(
        json.dumps(policy["Properties"]["PolicyDocument"])
        .replace(json.dumps({"Fn::GetAtt": ["Bucket", "Arn"]}), json.dumps(arn))
        .replace(json.dumps({"Fn::Sub": "${Bucket.Arn}/*"}), json.dumps(f"{arn}/*"))
    )
    # moto: the Deny overrides an Allow of everything for the bucket and its objects, not elsewhere; it
    # cannot evaluate the Bool condition (for moto it holds whatever aws:SecureTransport is), so that
    # part is asserted on the document: IAM applies the Deny to plain-HTTP requests only.
    for action, target in [("s3:GetObject", f"{arn}/prod/backtests/candles/x"), ("s3:ListBucket", arn)]:
        assert not allowed([document, ALLOW_ALL], action, target, {"aws:SecureTransport": "false"})
    assert allowed([document, ALLOW_ALL], "s3:GetObject", "arn:aws:s3:::other/x", {"aws:SecureTransport": "false"})
    (deny,) = document["Statement"]
    assert (deny["Effect"], deny["Principal"]) == ("Deny", "*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.slow
def test_job_role_reads_candles_and_writes_results_only(aws, stack, iam_moto):
    iam = aws("iam")
    docs = role_policies(iam, stack.outputs["JobRoleArn"])
    store, prefix = stack.outputs["BucketName"], "prod/backtests"
    job = StoreUser(iam_moto, docs, [store, "another-bucket"])
    candle = f"{prefix}/candles/interval=1h/symbol=BTCUSDT/month=2026-09/part-0.parquet"
    result = f"{prefix}/results/crypto_backtest_daily/date=2026-10-01/run=manual/strategy=sma_trend/BTCUSDT.json"
    lock = f"{prefix}/locks/candles-1h-BTCUSDT.lock"

    assert job.can("s3:GetObject", store, candle)
    assert job.can("s3:PutObject", store, result)
    assert job.can("s3:ListBucket", store, prefix=f"{prefix}/candles/interval=1h/symbol=BTCUSDT/")
    assert not job.can("s3:PutObject", store, candle)  # cannot write candles
    assert not job.can("s3:DeleteObject", store, candle)
    assert not job.can("s3:PutObject", store, lock)
    assert not job.can("s3:GetObject", store, lock)
    assert not job.can("s3:GetObject", store, result)
    assert not job.can("s3:GetObject", store, "other/candles/x")
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):  # no other bucket
        assert not job.can(action, "another-bucket", f"{prefix}/candles/x")
    assert not job.can("s3:ListBucket", "another-bucket", prefix=f"{prefix}/candles/")
    assert not job.can("s3:ListAllMyBuckets", "")
    assert not job.can("s3:PutBucketPolicy", store)
    for action in ("iam:PassRole", "batch:SubmitJob", "logs:PutLogEvents"):
        assert not allowed(docs, action, "*")
    # Listing only below candles/ (not results/, not the whole bucket): moto ignores StringLike.
    assert statement(docs, "ListCandles")["Condition"] == {
        "StringLike": {"s3:prefix": [f"{prefix}/candles/*", f"{prefix}/candles"]}
    }
    assert {a for d in docs for s in d["Statement"] for a in _as_list(s["Action"])} == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    trust = iam.get_role(RoleName=stack.outputs["JobRoleArn"].rsplit("/", 1)[1])["Role"]["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ecs-tasks.amazonaws.com"}]


@pytest.mark.slow
def test_execution_role_pulls_the_image_and_writes_logs_only(aws, stack, iam_moto):
    docs = role_policies(aws("iam"), stack.outputs["ExecutionRoleArn"])
    repository = f"arn:aws:ecr:{REGION}:123456789012:repository/{stack.params['RepositoryName']}"
    streams = f"arn:aws:logs:{REGION}:123456789012:log-group:{stack.outputs['LogGroupName']}:log-stream:"
    assert allowed(docs, "ecr:GetAuthorizationToken", "*")
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert allowed(docs, action, repository)
        assert not allowed(docs, action, f"arn:aws:ecr:{REGION}:123456789012:repository/other")
    assert not allowed(docs, "ecr:PutImage", repository)
    assert allowed(docs, "logs:CreateLogStream", f"{streams}backtest/default/abc")
    assert allowed(docs, "logs:PutLogEvents", f"{streams}backtest/default/abc")
    assert not allowed(docs, "logs:PutLogEvents", f"arn:aws:logs:{REGION}:123456789012:log-group:other:log-stream:x")
    assert not allowed(docs, "logs:DeleteLogGroup", f"{streams}x")
    store = stack.outputs["BucketName"]
    assert not StoreUser(iam_moto, docs, [store]).can("s3:GetObject", store, "prod/backtests/candles/x")


@pytest.mark.slow
def test_airflow_policy_submits_watches_and_maintains_the_store(aws, stack, iam_moto):
    doc = managed_policy(aws("iam"), stack.outputs["AirflowPolicyArn"])
    docs = [doc]
    account = f"{REGION}:123456789012"
    queue, definition = stack.outputs["JobQueueArn"], stack.outputs["JobDefinitionArn"]
    job = f"arn:aws:batch:{account}:job/0f7a6c3e-1b2c-4d5e-8f90-123456789abc"
    assert allowed(docs, "batch:SubmitJob", queue)
    assert allowed(docs, "batch:SubmitJob", definition)
    assert allowed(docs, "batch:SubmitJob", definition.rsplit(":", 1)[0])  # by name: the latest revision
    assert not allowed(docs, "batch:SubmitJob", f"arn:aws:batch:{account}:job-queue/other")
    assert not allowed(docs, "batch:SubmitJob", f"arn:aws:batch:{account}:job-definition/other:1")
    assert allowed(docs, "batch:TagResource", job, {"batch:CreateAction": "SubmitJob"})
    assert not allowed(docs, "batch:TagResource", job, {"batch:CreateAction": "TagResource"})
    # Tagging outside SubmitJob (no batch:CreateAction at all) is denied by StringEquals without
    # IfExists; moto lets a condition on a key the request lacks pass, so: on the document.
    assert statement(docs, "TagJobsOnSubmit")["Condition"] == {"StringEquals": {"batch:CreateAction": "SubmitJob"}}
    assert allowed(docs, "batch:DescribeJobs", "*") and allowed(docs, "batch:ListJobs", "*")
    assert allowed(docs, "batch:DescribeJobDefinitions", "*")  # a resubmit copies the retry rules
    assert allowed(docs, "batch:TerminateJob", job)
    for action in ("batch:RegisterJobDefinition", "batch:UpdateJobQueue", "batch:CreateComputeEnvironment"):
        assert not allowed(docs, action, "*")
    streams = f"arn:aws:logs:{account}:log-group:{stack.outputs['LogGroupName']}:log-stream:"
    assert allowed(docs, "logs:GetLogEvents", f"{streams}backtest/default/abc")
    assert not allowed(docs, "logs:GetLogEvents", f"arn:aws:logs:{account}:log-group:other:log-stream:x")

    store, prefix = stack.outputs["BucketName"], "prod/backtests"
    airflow = StoreUser(iam_moto, docs, [store, "another-bucket"])
    for key in ("candles/interval=1h/symbol=BTCUSDT/month=2026-09/part-0.parquet", "locks/candles-1h-BTCUSDT.lock"):
        assert airflow.can("s3:GetObject", store, f"{prefix}/{key}")
        assert airflow.can("s3:PutObject", store, f"{prefix}/{key}")
    assert airflow.can("s3:DeleteObject", store, f"{prefix}/locks/candles-1h-BTCUSDT.lock")
    assert not airflow.can("s3:DeleteObject", store, f"{prefix}/candles/x")
    assert airflow.can("s3:GetObject", store, f"{prefix}/results/crypto_backtest_daily/x/BTCUSDT.json")
    assert airflow.can("s3:PutObject", store, f"{prefix}/results/crypto_backtest_daily/x/leaderboard.csv")
    assert airflow.can("s3:ListBucket", store, prefix=f"{prefix}/results/")
    assert not airflow.can("s3:GetObject", store, "elsewhere/x")
    assert not airflow.can("s3:PutObject", "another-bucket", f"{prefix}/candles/x")
    assert not airflow.can("s3:DeleteBucket", store)
    # Listing only below the data prefix (not elsewhere/): moto ignores StringLike.
    assert statement(docs, "ListStore")["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}/*", prefix]}}

    topic = stack.outputs["AlertsTopicArn"]
    assert allowed(docs, "sns:Publish", topic)
    assert not allowed(docs, "sns:Publish", f"arn:aws:sns:{account}:another-topic")
    for action in ("sns:Subscribe", "sns:SetTopicAttributes", "sns:DeleteTopic"):
        assert not allowed(docs, action, topic)


@pytest.mark.slow
def test_outputs_are_the_dags_configuration(aws, stack):
    out = stack.outputs
    assert out["JobQueueName"] == stack.name and out["JobQueueArn"].endswith(f":job-queue/{stack.name}")
    assert out["JobDefinitionName"] == stack.name
    assert out["JobDefinitionArn"].endswith(f":job-definition/{stack.name}:1")
    assert out["DataUrl"] == f"s3://{out['BucketName']}/prod/backtests"
    assert (out["JobVcpu"], out["JobMemory"]) == ("0.5", "3072")
    assert out["EcrRepositoryUri"] == f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{stack.params['RepositoryName']}"
    aws("s3").head_bucket(Bucket=out["BucketName"])
    aws("iam").get_policy(PolicyArn=out["AirflowPolicyArn"])
    assert out["LogGroupName"] == f"/aws/batch/{stack.name}"
    topic = aws("sns").get_topic_attributes(TopicArn=out["AlertsTopicArn"])["Attributes"]
    assert topic["TopicArn"] == out["AlertsTopicArn"] and topic["KmsMasterKeyId"] == "alias/aws/sns"


@pytest.mark.slow
def test_athena_policy_queries_the_tables_and_reads_the_store_only(aws, stack, iam_moto):
    """The S3 part judged by real requests; the Athena and Glue ARNs name resources moto's
    CloudFormation does not create (tests/test_glue_tables.py checks the tables), so: on the template."""
    docs = [managed_policy(aws("iam"), stack.outputs["AthenaPolicyArn"])]
    store, prefix = stack.outputs["BucketName"], "prod/backtests"
    analyst = StoreUser(iam_moto, docs, [store, "another-bucket"])
    for key in ("results/crypto_backtest_daily/tables/leaderboard/date=2026-10-01/run=x.parquet",
                "candles/interval=1h/symbol=BTCUSDT/month=2026-09/part-0.parquet", "athena-results/q.csv"):  # fmt: skip
        assert analyst.can("s3:GetObject", store, f"{prefix}/{key}")
    assert analyst.can("s3:PutObject", store, f"{prefix}/athena-results/q.csv")
    assert analyst.can("s3:ListBucket", store, prefix=f"{prefix}/results/")
    for key in ("results/crypto_backtest_daily/x/leaderboard.parquet", "candles/x", "locks/x"):
        assert not analyst.can("s3:PutObject", store, f"{prefix}/{key}")  # nothing of the store's changes
    assert not analyst.can("s3:GetObject", store, f"{prefix}/locks/x")
    assert not analyst.can("s3:GetObject", "another-bucket", f"{prefix}/candles/x")
    assert not analyst.can("s3:DeleteObject", store, f"{prefix}/results/x")
    queries = statement([template()["Resources"]["AthenaPolicy"]["Properties"]["PolicyDocument"]], "RunQueries")
    assert queries["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:workgroup/${AthenaWorkGroup}"
    }


# ---------------------------------------------------------------------------------- MWAA (optional)

MWAA = {"MwaaEnvironmentName": "backtest-env", "MwaaVpcId": "vpc-0123abcd", "MwaaSubnetIds": "subnet-0aaa,subnet-0bbb"}
MWAA_RESOURCES = {
    "MwaaDagBucket",
    "MwaaDagBucketPolicy",
    "MwaaSecurityGroup",
    "MwaaSecurityGroupSelfIngress",
    "MwaaSecurityGroupSelfEgress",
    "MwaaExecutionRole",
    "MwaaEnvironment",
}
MWAA_LOGS = {"DagProcessingLogs", "SchedulerLogs", "TaskLogs", "WebserverLogs", "WorkerLogs"}


def test_mwaa_environment_is_optional_and_needs_its_network():
    from cfnlint.api import ManualArgs, lint

    base = {"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1", "ImageUri": "image:1"}
    assert {k for k in template()["Resources"] if k.startswith("Mwaa")} == MWAA_RESOURCES
    assert not created(base) & MWAA_RESOURCES  # the default: no environment
    assert created({**base, **MWAA}) >= MWAA_RESOURCES
    given_bucket = created({**base, **MWAA, "MwaaDagBucketName": "my-dags"}) & MWAA_RESOURCES
    assert given_bucket == MWAA_RESOURCES - {"MwaaDagBucket", "MwaaDagBucketPolicy"}
    assert parameter_errors({**base, **MWAA}) == []
    assert parameter_errors({**base, "MwaaEnvironmentName": "backtest-env"}) == [
        "MWAA: give MwaaVpcId, the VPC of its two private subnets.",
        "MWAA: give MwaaSubnetIds, two private subnets in different AZs.",
    ]
    # cfn-lint is clean with the environment on too (the plain lint, without it, is the first test's).
    params = {"SubnetIds": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"], "ImageUri": "image:tag"}
    params |= {**MWAA, "MwaaVpcId": "vpc-0123abcd", "MwaaSubnetIds": ["subnet-0123abcd", "subnet-4567abcd"]}
    config = ManualArgs(regions=[REGION], parameters=[params])
    assert [f"{m.rule.id} {m.message}" for m in lint(TEMPLATE_FILE.read_text(), config=config)] == []


def test_mwaa_environment_is_private_and_logs_everything_to_cloudwatch():
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    env = resource("MwaaEnvironment")
    props = env["Properties"]
    assert env["Condition"] == "CreateMwaa"
    assert props["WebserverAccessMode"] == "PRIVATE_ONLY"
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, "AWS::MWAA::Environment").schema
    assert set(schema["definitions"]["LoggingConfiguration"]["properties"]) == MWAA_LOGS  # every log type MWAA has
    assert set(props["LoggingConfiguration"]) == MWAA_LOGS
    assert all(log["Enabled"] is True for log in props["LoggingConfiguration"].values())
    assert props["ExecutionRoleArn"] == {"Fn::GetAtt": ["MwaaExecutionRole", "Arn"]}
    assert props["AirflowVersion"] == {"Ref": "MwaaAirflowVersion"}
    assert template()["Parameters"]["MwaaAirflowVersion"]["Default"] == "3.3.1"
    assert props["NetworkConfiguration"]["SecurityGroupIds"] == [{"Ref": "MwaaSecurityGroup"}]
    # What infra/deploy.sh uploads, as parameters, each left out while empty.
    for kind in ("Requirements", "Plugins", "StartupScript"):
        for suffix, condition in (("S3Path", f"HasMwaa{kind}"), ("S3ObjectVersion", f"HasMwaa{kind}Version")):
            assert props[f"{kind}{suffix}"] == {
                "Fn::If": [condition, {"Ref": f"Mwaa{kind}{suffix}"}, {"Ref": "AWS::NoValue"}]
            }
            assert template()["Parameters"][f"Mwaa{kind}{suffix}"]["Default"] == ""
    bucket = resource("MwaaDagBucket")["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}  # MWAA requires it
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    (deny,) = resource("MwaaDagBucketPolicy")["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # No inbound rule but the self-referencing one MWAA requires.
    assert "SecurityGroupIngress" not in resource("MwaaSecurityGroup")["Properties"]
    ingress = resource("MwaaSecurityGroupSelfIngress")["Properties"]
    assert ingress["GroupId"] == ingress["SourceSecurityGroupId"] == {"Ref": "MwaaSecurityGroup"}
    assert template()["Outputs"]["MwaaEnvironmentName"]["Value"] == {"Ref": "MwaaEnvironment"}
    assert template()["Outputs"]["MwaaDagBucketName"]["Condition"] == "CreateMwaa"


def _document(value) -> dict:
    """A policy document as moto returns it: a dict, JSON, or (from its CloudFormation) a Python repr."""
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return ast.literal_eval(value)


@pytest.mark.slow
def test_mwaa_execution_role_is_the_airflow_policy_plus_what_mwaa_needs(aws, network):
    (subnet,) = aws("ec2").describe_subnets(SubnetIds=network.subnets[:1])["Subnets"]
    mwaa = deploy(aws, network, **{**MWAA, "MwaaVpcId": subnet["VpcId"], "MwaaSubnetIds": ",".join(network.subnets)})
    iam, name = aws("iam"), mwaa.outputs["MwaaExecutionRoleArn"].rsplit("/", 1)[1]
    trust = _document(iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"])
    (assume,) = trust["Statement"]
    assert set(assume["Principal"]["Service"]) == {"airflow.amazonaws.com", "airflow-env.amazonaws.com"}
    assert assume["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    # Exactly the Airflow side's policy attached (on the template: moto's CloudFormation does not attach it).
    assert resource("MwaaExecutionRole")["Properties"]["ManagedPolicyArns"] == [{"Ref": "AirflowPolicy"}]
    (inline,) = [
        _document(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
        for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
    ]
    # moto's evaluator ignores NotResource (it would allow any key): the KMS statement on the document.
    key = statement([inline], "CeleryQueueKey")
    assert key["NotResource"] == "arn:aws:kms:*:123456789012:key/*"  # AWS-owned keys, not this account's
    assert key["Condition"] == {"StringLike": {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}}
    docs = [{**inline, "Statement": [s for s in inline["Statement"] if s is not key]}]
    account = f"{REGION}:123456789012"
    assert allowed(docs, "airflow:PublishMetrics", f"arn:aws:airflow:{account}:environment/backtest-env")
    assert not allowed(docs, "airflow:PublishMetrics", f"arn:aws:airflow:{account}:environment/other")
    dags, store = mwaa.outputs["MwaaDagBucketName"], mwaa.outputs["BucketName"]
    assert allowed(docs, "s3:GetObject", f"arn:aws:s3:::{dags}/dags/crypto_backtest_daily.py")
    assert allowed(docs, "s3:ListBucket", f"arn:aws:s3:::{dags}")
    assert not allowed(docs, "s3:PutObject", f"arn:aws:s3:::{dags}/dags/x")  # the environment reads its code
    assert not allowed(docs, "s3:GetObject", f"arn:aws:s3:::{store}/data/candles/x")  # the store: AirflowPolicy's
    assert not allowed(docs, "s3:ListAllMyBuckets", f"arn:aws:s3:::{dags}")
    for log in ("Task", "Scheduler", "DAGProcessing", "WebServer", "Worker"):
        assert allowed(docs, "logs:PutLogEvents", f"arn:aws:logs:{account}:log-group:airflow-backtest-env-{log}")
    assert not allowed(docs, "logs:PutLogEvents", f"arn:aws:logs:{account}:log-group:airflow-other-Task")
    assert allowed(docs, "cloudwatch:PutMetricData", "*")
    assert allowed(docs, "sqs:SendMessage", f"arn:aws:sqs:{REGION}:999999999999:airflow-celery-0123")
    assert not allowed(docs, "sqs:SendMessage", f"arn:aws:sqs:{account}:another-queue")
    for action in ("batch:SubmitJob", "sns:Publish", "iam:PassRole", "s3:DeleteObject"):
        assert not allowed(docs, action, "*")  # the DAG's own rights are the attached policy's only
    airflow = managed_policy(iam, mwaa.outputs["AirflowPolicyArn"])
    assert allowed([*docs, airflow], "batch:SubmitJob", mwaa.outputs["JobQueueArn"])


@pytest.mark.slow
def test_existing_bucket_is_used_not_created(aws, network, s3_bucket, iam_moto):
    other = deploy(aws, network, BucketName=s3_bucket)
    resources = aws("cloudformation").list_stack_resources(StackName=other.name)["StackResourceSummaries"]
    assert "AWS::S3::Bucket" not in {r.get("ResourceType") for r in resources}
    assert other.outputs["BucketName"] == s3_bucket
    assert other.outputs["DataUrl"] == f"s3://{s3_bucket}/data"
    job = StoreUser(iam_moto, role_policies(aws("iam"), other.outputs["JobRoleArn"]), [s3_bucket])
    assert job.can("s3:GetObject", s3_bucket, "data/candles/x")
    assert job.can("s3:PutObject", s3_bucket, "data/results/x")
    assert not job.can("s3:PutObject", s3_bucket, "data/candles/x")


@pytest.mark.slow
def test_teardown_deletes_the_stack_but_keeps_the_store_and_the_images(aws, network, moto_server):
    doomed = deploy(aws, network)
    bucket, repository = doomed.outputs["BucketName"], doomed.params["RepositoryName"]
    if shutil.which("aws"):  # the script, with the AWS CLI, against moto
        run = infra_script("teardown.sh", "--stack", doomed.name, "--region", REGION, endpoint=moto_server)
        assert run.returncode == 0, run.stderr
        assert f"S3 bucket {bucket} (store {doomed.outputs['DataUrl']};" in run.stdout
        assert f"ECR repository {repository} with its images" in run.stdout
    else:
        aws("cloudformation").delete_stack(StackName=doomed.name)
    cfn = aws("cloudformation")
    assert not [s for s in cfn.describe_stacks()["Stacks"] if s["StackName"] == doomed.name]
    aws("s3").head_bucket(Bucket=bucket)  # DeletionPolicy: Retain
    aws("ecr").describe_repositories(repositoryNames=[repository])
    assert aws("logs").describe_log_groups(logGroupNamePrefix=doomed.outputs["LogGroupName"])["logGroups"] == []
    with pytest.raises(aws("iam").exceptions.NoSuchEntityException):
        aws("iam").get_role(RoleName=doomed.outputs["JobRoleArn"].rsplit("/", 1)[1])


def infra_script(name: str, *args: str, endpoint: str) -> subprocess.CompletedProcess:
    """An infra/ script, its AWS CLI on the moto server (no user config or credentials)."""
    env = {
        **os.environ,
        **aws_env(endpoint),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(["bash", str(INFRA / name), *args], capture_output=True, text=True, timeout=120, env=env)


def test_deploy_script_checks_its_input(moto_server):
    script = str(INFRA / "deploy.sh")
    usage = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, check=True)
    assert "--subnets" in usage.stdout and "--security-groups" in usage.stdout
    bad = subprocess.run(["bash", script, "--vcpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--vcpu needs a value" in bad.stderr
    if not shutil.which("aws"):
        pytest.skip("the AWS CLI is not installed")
    stack_name = f"nothing-{uuid.uuid4().hex[:8]}"
    new = infra_script("deploy.sh", "--stack", stack_name, "--skip-build", "--region", REGION, endpoint=moto_server)
    assert new.returncode == 2 and "a new stack needs --subnets" in new.stderr, new.stderr


# ---------------------------------------------------------------------------------- the DAG on the stack


@pytest.mark.slow
def test_dag_batch_mode_runs_on_the_stack_outputs(airflow_db, aws, stack, moto_server, monkeypatch):
    """tests/test_dag_batch.py's batch-mode run (tests/support/batch.py), configured from the stack's outputs only."""
    from tests.support.batch import (
        PAIRS,
        Batch,
        assert_jobs_are_the_plans,
        environment_of,
        moto_batch_without_docker,
        planned,
        run_batch_dag,
    )

    out = stack.outputs
    batch = Batch(
        aws("batch"), out["JobQueueName"], out["JobQueueArn"], out["JobDefinitionName"], out["JobDefinitionArn"]
    )
    # run_batch_dag leaves Batch reachable through the Airflow connection only; the store is the
    # stack's bucket, on moto's S3.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("BACKTEST_JOB_VCPU", out["JobVcpu"])
    monkeypatch.setenv("BACKTEST_JOB_MEMORY_MIB", out["JobMemory"])
    with moto_batch_without_docker(moto_server):
        dag, dag_run = run_batch_dag(batch, out["DataUrl"], moto_server, monkeypatch)
    plan, jobs = planned(dag, dag_run, out["DataUrl"])
    assert plan.results_url.startswith(f"{out['DataUrl']}/results/crypto_backtest_daily/date=2026-10-01/")

    # Every job went to the stack's queue and job definition, sized as the stack says.
    submitted = assert_jobs_are_the_plans(batch, plan, jobs, "SUCCEEDED")
    for job in submitted.values():
        command = job["container"]["command"]
        assert command[command.index("--data-url") + 1] == out["DataUrl"]
        env = environment_of(job)
        assert (env["BACKTEST_JOB_VCPU"], env["BACKTEST_JOB_MEMORY_MIB"]) == (out["JobVcpu"], out["JobMemory"])

    # moto runs no container, so no result is written and rank fails the run (expected here).
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert [states["backtest", i] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)
    assert [states["refresh", i] for i in range(len(PAIRS))] == ["success"] * len(PAIRS)
    assert states["rank", -1] == "failed" and dag_run.state == "failed"

    # The Airflow side wrote candles and the leaderboard into the stack's store and released its locks.
    prefix = "prod/backtests/"
    listing = aws("s3").list_objects_v2(Bucket=out["BucketName"], Prefix=prefix)
    keys = [obj["Key"] for obj in listing.get("Contents", [])]
    for pair in PAIRS:
        assert any(k.startswith(f"{prefix}candles/interval=1h/symbol={pair}/") for k in keys), keys
    results = plan.results_url.removeprefix(f"s3://{out['BucketName']}/")
    assert {k.rsplit("/", 1)[1] for k in keys if k.startswith(results)} >= {
        "leaderboard.parquet",
        "leaderboard.csv",
        "leaderboard.md",
    }
    assert not [k for k in keys if k.startswith(f"{prefix}locks/")]
