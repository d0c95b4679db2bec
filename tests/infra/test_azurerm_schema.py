"""Every azurerm_* resource and data source in infra/terraform sets only what azurerm 4.x's schema has.

`terraform validate` needs the provider plugin, which cannot be downloaded here. The schema comes
instead from @cdktf/provider-azurerm (npm, pinned in .ci/tools/validators/package.json and its lock):
its jsii assembly (``.jsii``) describes every resource's configuration, each property with a link to
the registry docs whose anchor is the attribute's Terraform name (``...#content_type``), nested blocks
as their own struct types. python-hcl2 (the test venv; checkov's fork of ``hcl2`` stays in its own
venv) parses the sources; every attribute and block, at every depth, must be one the schema knows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra import tools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first run installs the npm package

#: Terraform's meta-arguments, valid in every resource / data block.
META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
REPRESENTS = re.compile(r"Represents a \{@link \S+/docs/(resources|data-sources)/\w+ (azurerm_\w+)\}")
ANCHOR = re.compile(r"\{@link \S+#(\w+) [^}]*\}")

#: A schema node: {attribute or block name: its nested schema, or None for a plain attribute}.
Schema = dict[str, Any]


def _structs_in(type_ref: dict[str, Any]) -> list[str]:
    """Every type a property's type names: directly, as a list/map element, or in a union."""
    if "fqn" in type_ref:
        return [type_ref["fqn"]]
    if "collection" in type_ref:
        return _structs_in(type_ref["collection"]["elementtype"])
    return [fqn for member in type_ref.get("union", {}).get("types", []) for fqn in _structs_in(member)]


def _schema_of(fqn: str, types: dict[str, Any], seen: frozenset[str] = frozenset()) -> Schema:
    schema: Schema = {}
    for prop in types[fqn].get("properties", []):
        anchor = ANCHOR.search(prop.get("docs", {}).get("summary", ""))
        name = anchor.group(1) if anchor else re.sub(r"(?<!^)(?=[A-Z])", "_", prop["name"]).lower()
        # A block is a struct of this assembly (the union's other member is cdktf's IResolvable).
        struct = next((t for t in _structs_in(prop["type"]) if types.get(t, {}).get("datatype")), None)
        schema[name] = _schema_of(struct, types, seen | {fqn}) if struct and struct not in seen else None
    return schema


def provider_schema(jsii: Path) -> dict[str, dict[str, Schema]]:
    """{"resource" | "data": {azurerm type: schema}} from the provider package's jsii assembly."""
    types = json.loads(jsii.read_text())["types"]
    out: dict[str, dict[str, Schema]] = {"resource": {}, "data": {}}
    for fqn, spec in types.items():
        match = REPRESENTS.search(spec.get("docs", {}).get("summary", ""))
        if spec.get("kind") == "class" and match and f"{fqn}Config" in types:
            kind = "resource" if match.group(1) == "resources" else "data"
            out[kind][match.group(2)] = _schema_of(f"{fqn}Config", types)
    return out


def unknown_attributes(body: dict[str, Any], schema: Schema, where: str) -> list[str]:
    """Each attribute or block of a parsed HCL body that the schema node does not define."""
    problems: list[str] = []
    for key, value in body.items():
        if key == "dynamic":  # dynamic "name" { for_each, iterator, content { ... } }
            for block in value:
                for label, spec in block.items():
                    if label not in schema or schema[label] is None:
                        problems.append(f"{where}: dynamic block {label!r} is not a block of this schema")
                        continue
                    for content in spec.get("content", []):
                        problems += unknown_attributes(content, schema[label], f"{where}.{label}")
        elif key not in schema:
            problems.append(f"{where}: {key!r} is not in azurerm's schema")
        elif schema[key] is not None:  # a block: one body, or a list of repeated bodies
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    problems += unknown_attributes(item, schema[key], f"{where}.{key}")
    return problems


def check_file(path: Path, schema: dict[str, dict[str, Schema]]) -> tuple[int, list[str]]:
    """(azurerm blocks checked, problems) for one .tf file."""
    checked, problems = 0, []
    parsed = tools.load_hcl(path)
    for kind in ("resource", "data"):
        for block in parsed.get(kind, []):
            for type_name, named in block.items():
                if not type_name.startswith("azurerm_"):
                    continue
                for name, body in named.items():
                    where = f"{path.name}: {kind} {type_name}.{name}"
                    checked += 1
                    if type_name not in schema[kind]:
                        problems.append(f"{where}: azurerm has no {kind} {type_name!r}")
                        continue
                    top = {**schema[kind][type_name], **dict.fromkeys(META_ARGUMENTS)}
                    problems += unknown_attributes(body, top, where)
    return checked, problems


@pytest.fixture(scope="module")
def azurerm() -> dict[str, dict[str, Schema]]:
    package = tools.node_validators() / "@cdktf" / "provider-azurerm"
    schema = provider_schema(package / ".jsii")
    assert len(schema["resource"]) > 1000 and "azurerm_key_vault_secret" in schema["resource"]
    return schema


def test_the_schema_is_azurerm_4(azurerm: dict[str, dict[str, Schema]]) -> None:
    """The package's provider is the 4.x line versions.tf pins (azurerm >= 4.42, < 5)."""
    package = json.loads((tools.node_validators() / "@cdktf" / "provider-azurerm" / "package.json").read_text())
    version = package["cdktf"]["provider"]["version"]
    major, minor = (int(part) for part in version.split(".")[:2])
    assert major == 4 and minor >= 42, version


def test_every_azurerm_attribute_is_in_the_provider_schema(azurerm: dict[str, dict[str, Schema]]) -> None:
    checked, problems = 0, []
    for path in sorted(tools.TERRAFORM.rglob("*.tf")):
        count, found = check_file(path, azurerm)
        checked, problems = checked + count, problems + found
    assert not problems, "\n".join(problems)
    assert checked >= 30, f"only {checked} azurerm blocks found"


BAD = """
resource "azurerm_key_vault_secret" "a" {
  name         = "x"
  key_vault_id = "y"
  contnet_type = "text/plain"
}
resource "azurerm_container_app" "b" {
  name = "x"
  template {
    min_replicas = 0
    container {
      name   = "c"
      imgae  = "i"
    }
    dynamic "volumee" {
      for_each = []
      content {}
    }
  }
}
resource "azurerm_key_vault_secrett" "c" {}
data "azurerm_client_config" "current" {}
resource "random_password" "ignored" { lenght = 1 }
"""


def test_a_misspelt_attribute_block_or_type_fails_the_check(azurerm, tmp_path: Path) -> None:
    """The check can fail: a top-level typo, one inside nested blocks, a dynamic block, a resource type."""
    (tmp_path / "bad.tf").write_text(BAD)
    checked, problems = check_file(tmp_path / "bad.tf", azurerm)
    assert checked == 4
    assert sorted(problems) == sorted([
        "bad.tf: resource azurerm_key_vault_secret.a: 'contnet_type' is not in azurerm's schema",
        "bad.tf: resource azurerm_container_app.b.template.container: 'imgae' is not in azurerm's schema",
        "bad.tf: resource azurerm_container_app.b.template: dynamic block 'volumee' is not a block of this schema",
        "bad.tf: resource azurerm_key_vault_secrett.c: azurerm has no resource 'azurerm_key_vault_secrett'",
    ])  # fmt: skip
