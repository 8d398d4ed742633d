"""template.yaml read once, for everything on this machine that must match the deployed stack: the
local stack (its table, its event rule, each function's timeout, memory and environment) and the
benchmarks (each function's handler and environment). One reader, so nothing here copies a value
the template owns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from vary_region_local.lambda_runtime import REPO_ROOT

TEMPLATE = REPO_ROOT / "template.yaml"
_FUNCTION_TYPE = "AWS::Serverless::Function"


@dataclass(frozen=True)
class Tag:
    """A CloudFormation intrinsic (!Ref, !Sub, !GetAtt, !If, ...): resolved at deploy time, not here."""

    name: str
    value: Any


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that keeps CloudFormation's tags as Tag values instead of refusing them."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tag:
    if isinstance(node, yaml.ScalarNode):
        return Tag(suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Tag(suffix, loader.construct_sequence(node, deep=True))
    return Tag(suffix, loader.construct_mapping(node, deep=True))


_CfnLoader.add_multi_constructor("!", _construct_tag)


@cache
def document(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    return loaded


def resource_properties(logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = document()["Resources"][logical_id]["Properties"]
    return properties


@dataclass(frozen=True)
class Variable:
    """One environment variable the template gives a function."""

    name: str
    literal: str | None = None  # the template's own value, when it writes one
    parameter: str | None = None  # the template parameter it is (!Ref), if any
    parameter_default: str | None = None  # that parameter's Default, if it has one

    @property
    def default(self) -> str | None:
        """What the deployed function gets when nobody chooses: None when CloudFormation resolves it
        (a resource, !Sub, !If, a parameter without a Default)."""
        return self.literal if self.literal is not None else self.parameter_default


@dataclass(frozen=True)
class Function:
    """An AWS::Serverless::Function as deployed: Globals.Function merged with its own properties."""

    logical_id: str
    folder: str  # functions/<folder>
    handler: str
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, Variable]


def _variable(name: str, value: Any, parameters: dict[str, Any]) -> Variable:
    if isinstance(value, Tag):
        if value.name == "Ref" and value.value in parameters:
            default = parameters[value.value].get("Default")
            return Variable(name, parameter=value.value, parameter_default=None if default is None else str(default))
        return Variable(name)
    return Variable(name, literal=None if value is None else str(value))


@cache
def functions() -> dict[str, Function]:
    """Every function of the template, by its folder under functions/ (submit, webhook, ...)."""
    whole = document()
    parameters = whole.get("Parameters", {})
    defaults = whole.get("Globals", {}).get("Function", {})
    global_env = (defaults.get("Environment") or {}).get("Variables") or {}
    found: dict[str, Function] = {}
    for logical_id, resource in whole["Resources"].items():
        if resource.get("Type") != _FUNCTION_TYPE:
            continue
        props = resource["Properties"]
        variables = global_env | ((props.get("Environment") or {}).get("Variables") or {})
        folder = Path(str(props["CodeUri"])).name
        found[folder] = Function(
            logical_id=logical_id,
            folder=folder,
            handler=str(props.get("Handler", defaults.get("Handler", "app.lambda_handler"))),
            timeout_seconds=int(props.get("Timeout", defaults.get("Timeout", 3))),
            memory_mb=int(props.get("MemorySize", defaults.get("MemorySize", 128))),
            environment={name: _variable(name, value, parameters) for name, value in variables.items()},
        )
    return dict(sorted(found.items()))


def function(folder: str) -> Function:
    return functions()[folder]


def sqs_batch_size(folder: str) -> int:
    """BatchSize of the function's SQS event source (10, SQS's default, when the template gives none)."""
    props = document()["Resources"][function(folder).logical_id]["Properties"]
    for event in (props.get("Events") or {}).values():
        if event.get("Type") == "SQS":
            return int(event["Properties"].get("BatchSize", 10))
    raise KeyError(f"{folder} has no SQS event source in template.yaml")


def variables() -> dict[str, Variable]:
    """Every variable the template gives any function (the local functions share one environment)."""
    return {name: variable for deployed in functions().values() for name, variable in deployed.environment.items()}


def environment(resolved: dict[str, str], present: Mapping[str, str]) -> dict[str, str]:
    """The functions' environment from template.yaml's variables: `resolved` gives what CloudFormation
    resolves at deploy time (and what a local stack chooses otherwise), the template its own values,
    and a parameter's Default whatever `present` (the process environment) does not already set.

    A name in `resolved` the template does not have, or one of the template's that nobody resolves,
    is an error: the template was changed and the caller was not.
    """
    template_variables = variables()
    unknown = sorted(set(resolved) - set(template_variables))
    if unknown:
        raise ValueError(f"not variables of any function in template.yaml: {', '.join(unknown)}")
    unresolved = sorted(
        name for name, variable in template_variables.items() if variable.default is None and name not in resolved
    )
    if unresolved:
        raise ValueError(f"template.yaml's variables with no local value: {', '.join(unresolved)}")
    env: dict[str, str] = {}
    for name, variable in template_variables.items():
        if name in resolved:
            env[name] = resolved[name]
        elif variable.literal is not None:
            env[name] = variable.literal
        elif name not in present and variable.parameter_default is not None:
            env[name] = variable.parameter_default
    return env
