"""Where MiniStack differs from AWS, and how the rehearsal gets past it: here only.

Each workaround names the emulator version it was seen in and why it is needed, and is printed at
the start of every rehearsal, so it can be dropped the day the emulator is fixed (delete it, run
`make rehearse`: the gap shows again or it is gone). None touches template.yaml or the functions:
the template ones rewrite a copy of what `sam build` made, just before `sam deploy` uploads it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Template = dict[str, Any]


@dataclass(frozen=True)
class Workaround:
    name: str
    seen_in: str  # the MiniStack version that needed it
    reason: str  # one line: the gap, as seen


SPLIT_IN_CONDITIONS = Workaround(
    "conditions-split",
    "1.5.33",
    "Fn::Split inside a Conditions entry is not evaluated (EventBusIsArn fails the change set with "
    "KeyError: 0): the rehearsal evaluates Fn::Split/Fn::Select there over the deployed parameter values",
)
SCALING_CONFIG_NUMBER = Workaround(
    "scaling-config-number",
    "1.5.33",
    "an SQS event source's ScalingConfig.MaximumConcurrency given by a parameter arrives as a string "
    "(every poll fails: '>=' not supported between 'int' and 'str'): the parameter's number is written in",
)
HTTP_API_ROUTES = Workaround(
    "http-api-routes",
    "1.5.33",
    "an HTTP API whose routes are in its OpenAPI Body (as SAM emits them) is created with its $default "
    "stage but no routes (POST .../webhook/<token> answers 404): the Body's routes are created through "
    "the API Gateway v2 API",
)
SECRET_REF_ARN = Workaround(
    "secret-ref-arn",
    "1.5.33",
    "Ref of an AWS::SecretsManager::Secret gives its name, not its ARN as on AWS (the API key policy's "
    "Resource then matches nothing: GetSecretValue denied): each such Ref becomes Fn::GetAtt <secret>.Id, "
    "the same ARN on AWS",
)
SQS_BATCH_ACTIONS = Workaround(
    "sqs-batch-actions",
    "1.5.33",
    "SendMessageBatch is authorized as sqs:SendMessageBatch, which AWS does not have (SendMessage grants "
    "the batch too, SQS developer guide 'Amazon SQS batch actions'): each statement allowing "
    "sqs:SendMessage, DeleteMessage or ChangeMessageVisibility also names its batch twin",
)
DENIALS_LOGGED = Workaround(
    "denials-logged",
    "1.5.33",
    "a call IAM denies is answered but recorded nowhere (its CloudTrail records only calls that reached "
    "their service), and a function may log the refusal by its code alone: the emulator is started "
    "through rehearsal/ministack_server.py, which logs each denial it answers, in AWS's words",
)
# A gap nothing here gets past without weakening what the path would prove: its path is SKIPPED.
CALLBACK_TASK_IAM = Workaround(
    "callback-task-iam",
    "1.5.33",
    "Step Functions runs the sample workflow (a Map of sqs:sendMessage.waitForTaskToken tasks, answered "
    "by SendTaskSuccess) but authorizes states:SendTaskSuccess/Failure/Heartbeat on resource '*', not on "
    "the state machine the task token belongs to: the publisher's AnswerCallerTasks statement, scoped to "
    "CallerStateMachineArns as AWS authorizes it, is denied (ImplicitDeny), and widening it to '*' would "
    "prove nothing about the template's scope",
)
ALL = (SPLIT_IN_CONDITIONS, SCALING_CONFIG_NUMBER, HTTP_API_ROUTES, SECRET_REF_ARN, SQS_BATCH_ACTIONS, DENIALS_LOGGED)
_BATCH_TWINS = {
    f"sqs:{action}": f"sqs:{action}Batch" for action in ("SendMessage", "DeleteMessage", "ChangeMessageVisibility")
}


def parameter_values(template: Template, overrides: Mapping[str, str]) -> dict[str, str]:
    """Every parameter's value as deployed: the override, else the template's default."""
    declared = template.get("Parameters", {})
    return {name: str(overrides.get(name, spec.get("Default", ""))) for name, spec in declared.items()}


def patch_template(template: Template, overrides: Mapping[str, str]) -> Template:
    """A copy of the built template with the template-side workarounds applied."""
    patched = copy.deepcopy(template)
    values = parameter_values(template, overrides)
    patched["Conditions"] = _evaluate_splits(patched.get("Conditions", {}), values)
    resources = patched.get("Resources", {})
    secrets = {name for name, r in resources.items() if r.get("Type") == "AWS::SecretsManager::Secret"}
    patched = _secret_refs_as_arns(patched, secrets)
    _add_batch_twins(patched.get("Resources", {}))
    for resource in patched.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource.get("Properties", {}).get("Events", {}).values():
            scaling = event.get("Properties", {}).get("ScalingConfig", {})
            reference = scaling.get("MaximumConcurrency")
            if isinstance(reference, dict) and set(reference) == {"Ref"} and reference["Ref"] in values:
                scaling["MaximumConcurrency"] = int(values[reference["Ref"]])
    return patched


def _evaluate_splits(node: Any, values: Mapping[str, str]) -> Any:
    """Fn::Split of a parameter, and Fn::Select over the list it makes, replaced by their results."""
    if isinstance(node, list):
        return [_evaluate_splits(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _evaluate_splits(value, values) for key, value in node.items()}
    if set(node) == {"Fn::Split"}:
        delimiter, source = node["Fn::Split"]
        if isinstance(source, dict) and set(source) == {"Ref"} and source["Ref"] in values:
            return values[source["Ref"]].split(delimiter)
    if set(node) == {"Fn::Select"}:
        index, items = node["Fn::Select"]
        if isinstance(items, list) and isinstance(index, int | str):
            return items[int(index)]
    return node


def _add_batch_twins(node: Any) -> None:
    """Every IAM statement (function policies, managed policies, roles) that allows an SQS action with a
    batch twin gets the twin too, as AWS grants it."""
    if isinstance(node, list):
        for item in node:
            _add_batch_twins(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("Effect") == "Allow" and "Action" in node:
        actions = node["Action"] if isinstance(node["Action"], list) else [node["Action"]]
        twins = [_BATCH_TWINS[a] for a in actions if isinstance(a, str) and a in _BATCH_TWINS]
        if twins:
            node["Action"] = [*actions, *(t for t in twins if t not in actions)]
    for value in node.values():
        _add_batch_twins(value)


def _secret_refs_as_arns(node: Any, secrets: set[str]) -> Any:
    if isinstance(node, list):
        return [_secret_refs_as_arns(item, secrets) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and node["Ref"] in secrets:
        return {"Fn::GetAtt": [node["Ref"], "Id"]}
    return {key: _secret_refs_as_arns(value, secrets) for key, value in node.items()}


_FUNCTION_ARN = re.compile(r"\$\{(?P<logical>[A-Za-z0-9]+)\.Arn\}")


def create_http_api_routes(
    processed: Template, physical_id: Callable[[str], str], function_arn: Callable[[str], str], apigateway: Any
) -> list[str]:
    """Create each route the HTTP APIs' OpenAPI Bodies declare, with its Lambda proxy integration,
    where the emulator left it out. Returns the route keys created."""
    created = []
    for logical, resource in processed.get("Resources", {}).items():
        if resource.get("Type") != "AWS::ApiGatewayV2::Api" or "Body" not in resource.get("Properties", {}):
            continue
        api_id = physical_id(logical)
        existing = {route["RouteKey"] for route in apigateway.get_routes(ApiId=api_id)["Items"]}
        for path, methods in resource["Properties"]["Body"].get("paths", {}).items():
            for method, operation in methods.items():
                route_key = f"{method.upper()} {path}"
                if route_key in existing:
                    continue
                integration = operation["x-amazon-apigateway-integration"]
                uri = integration["uri"]
                uri = uri.get("Fn::Sub", uri) if isinstance(uri, dict) else uri
                target = _FUNCTION_ARN.search(str(uri))
                if target is None:
                    raise ValueError(f"{logical} {route_key}: no function in its integration URI {uri!r}")
                made = apigateway.create_integration(
                    ApiId=api_id,
                    IntegrationType="AWS_PROXY",
                    IntegrationMethod=integration.get("httpMethod", "POST"),
                    IntegrationUri=function_arn(target["logical"]),
                    PayloadFormatVersion=integration.get("payloadFormatVersion", "2.0"),
                )
                apigateway.create_route(
                    ApiId=api_id, RouteKey=route_key, Target=f"integrations/{made['IntegrationId']}"
                )
                created.append(route_key)
    return created
