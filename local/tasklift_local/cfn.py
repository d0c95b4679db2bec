"""Read the HTTP routes of a SAM template.

CloudFormation templates use short-form intrinsic functions (``!Ref``, ``!GetAtt``, ``!Sub``…)
that a plain YAML loader rejects; :class:`CfnLoader` turns each into the long form
(``{"Ref": …}``, ``{"Fn::GetAtt": …}``) so the template parses as CloudFormation itself reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Short-form tags and their long-form keys (CloudFormation "Intrinsic function reference").
_INTRINSICS = (
    "And", "Base64", "Cidr", "Condition", "Equals", "FindInMap", "GetAtt", "GetAZs", "If", "ImportValue",
    "Join", "Not", "Or", "Ref", "Select", "Split", "Sub", "Transform",
)  # fmt: skip


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """A safe YAML loader that understands CloudFormation's short-form tags."""


def _intrinsic(name: str) -> Any:
    key = name if name in ("Ref", "Condition") else f"Fn::{name}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "GetAtt":  # !GetAtt Resource.Attribute is short for [Resource, Attribute]
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _name in _INTRINSICS:
    CfnLoader.add_constructor(f"!{_name}", _intrinsic(_name))


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (YAML or JSON)."""
    with open(path, encoding="utf-8") as fh:
        template: dict[str, Any] = yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    return template


@dataclass(frozen=True)
class LambdaRoute:
    """One ``HttpApi`` event of one ``AWS::Serverless::Function``."""

    function: str  #: the logical id, used as the function name
    method: str  #: an HTTP method or ``ANY``
    path: str  #: API Gateway route path, e.g. ``/tasks/{task_id}`` or ``/{proxy+}``
    handler: str  #: ``module.attribute`` inside ``code_dir``
    code_dir: Path
    timeout: float  #: seconds (the function's ``Timeout``; Lambda's default is 3)
    memory_mb: int  #: ``MemorySize`` (Lambda's default is 128)
    integration_timeout: float | None  #: the event's ``TimeoutInMillis`` / 1000, if set
    environment: dict[str, str] = field(default_factory=dict)  #: plain-string variables only


def _merged(globals_: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    merged = {**globals_, **props}
    env_vars = {
        **(globals_.get("Environment") or {}).get("Variables", {}),
        **(props.get("Environment") or {}).get("Variables", {}),
    }
    merged["Environment"] = {"Variables": env_vars}
    return merged


def http_api_routes(template_path: Path) -> list[LambdaRoute]:
    """Every HttpApi route the template declares, with its function's settings."""
    template = load_template(template_path)
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    routes: list[LambdaRoute] = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = _merged(globals_, resource.get("Properties") or {})
        # Intrinsic values (e.g. !Ref DatabaseUrl) only resolve at deploy time: the local environment supplies them.
        env = {k: str(v) for k, v in props["Environment"]["Variables"].items() if isinstance(v, str | int | float)}
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "HttpApi":
                continue
            ev = event.get("Properties") or {}
            millis = ev.get("TimeoutInMillis")
            routes.append(
                LambdaRoute(
                    function=logical_id,
                    method=str(ev.get("Method", "ANY")).upper(),
                    path=str(ev.get("Path", "/{proxy+}")),
                    handler=str(props["Handler"]),
                    code_dir=(template_path.parent / str(props.get("CodeUri", "."))).resolve(),
                    timeout=float(props.get("Timeout", 3)),
                    memory_mb=int(props.get("MemorySize", 128)),
                    integration_timeout=float(millis) / 1000 if millis else None,
                    environment=env,
                )
            )
    return routes
