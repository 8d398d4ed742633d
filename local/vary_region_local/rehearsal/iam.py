"""One IAM statement taken from a deployed function's role, then put back: an IAM mutant in place.

CloudFormation (through SAM) gives each function's role its template `Policies` as inline policies
of the role (`<Function>RolePolicy0`, ...) and attaches the stack's managed policies (ApiKeyReadPolicy).
A mutant puts the inline policy back without one statement (or without one action of it), or
detaches one managed policy, exactly as a template without it would have deployed them; leaving the
block restores the role as it was. The emulator evaluates a role's policies at each call
(MiniStack 1.5.33, AUTH=true: a statement removed here is denied on the next call, no redeploy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import boto3


class IamPatchError(Exception):
    pass


@dataclass(frozen=True)
class Removal:
    """What to take away: a statement by Sid (only `action` of it, when given), or a managed policy."""

    function: str  # the function's physical name, e.g. vary-region-submit
    statement: str = ""
    action: str = ""
    managed_policy_arn: str = ""

    def describe(self) -> str:
        if self.managed_policy_arn:
            return f"{self.function}: managed policy {self.managed_policy_arn.rsplit('/', 1)[-1]} detached"
        what = f"{self.action} of statement {self.statement}" if self.action else f"statement {self.statement}"
        return f"{self.function}: {what} removed"


def role_of(function: str) -> str:
    arn = boto3.client("lambda").get_function_configuration(FunctionName=function)["Role"]
    return str(arn).rsplit("/", 1)[-1]


@contextmanager
def removed(removal: Removal) -> Iterator[str]:
    """The role without the removal inside the block; as it was after, whatever happened."""
    iam: Any = boto3.client("iam")
    role = role_of(removal.function)
    if removal.managed_policy_arn:
        iam.detach_role_policy(RoleName=role, PolicyArn=removal.managed_policy_arn)
        try:
            yield removal.describe()
        finally:
            iam.attach_role_policy(RoleName=role, PolicyArn=removal.managed_policy_arn)
        return
    name, document = _inline_policy_with(iam, role, removal.statement)
    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(without(document, removal)))
    try:
        yield removal.describe()
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))


def without(document: dict[str, Any], removal: Removal) -> dict[str, Any]:
    """The policy document less the statement (or the statement less the action)."""
    statements = document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
    kept = []
    for statement in statements:
        if statement.get("Sid") != removal.statement:
            kept.append(statement)
            continue
        if not removal.action:
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if removal.action not in actions:
            raise IamPatchError(f"statement {removal.statement} does not allow {removal.action}: {actions}")
        rest = [action for action in actions if action != removal.action]
        if rest:
            kept.append({**statement, "Action": rest})
    return {**document, "Statement": kept}


def _inline_policy_with(iam: Any, role: str, sid: str) -> tuple[str, dict[str, Any]]:
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # AWS answers it URL-encoded; boto3 usually decodes it
            document = json.loads(unquote(document))
        statements = document.get("Statement", [])
        if any(s.get("Sid") == sid for s in (statements if isinstance(statements, list) else [statements])):
            return name, document
    raise IamPatchError(f"no inline policy of role {role} has a statement {sid}")


def managed_policy_arn(function: str, physical_id: str) -> str:
    """The ARN of the stack's managed policy attached to the function's role (its physical id is the ARN
    on AWS; the name is matched too, in case an emulator gives the name)."""
    iam: Any = boto3.client("iam")
    attached = iam.list_attached_role_policies(RoleName=role_of(function))["AttachedPolicies"]
    for policy in attached:
        if physical_id in (policy["PolicyArn"], policy["PolicyName"]):
            return str(policy["PolicyArn"])
    raise IamPatchError(f"{physical_id} is not attached to {function}'s role: {attached}")
