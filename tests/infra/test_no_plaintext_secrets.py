"""No secret is written in a deployment source.

Secrets reach processes only through `${VAR:?}` interpolation (compose; an optional secret may
default to a value that is none, e.g. an empty JSON list), Key Vault references
(Functions app settings, Container Apps secrets), or secretKeyRef / secretTargetRef (Kubernetes).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra import tools

#: Env/attribute names whose values are credentials or carry credentials.
SECRET_NAME = re.compile(
    r"PASSWORD|SECRET|TOKEN|AUTH|ACCESS_KEY|CONNECTION_STRING|DATABASE_URL|REDIS_URL|BROKER_URL"
    r"|SIGNING[_-]?KEY|PREVIOUS[_-]?KEYS",
    re.I,
)
#: Names that match SECRET_NAME but hold no secret: identifiers, references, names, switches, and
#: built-in role names (whose values are role definition GUIDs).
NOT_A_SECRET = re.compile(
    r"(?:_(?:id|ids|name|names|type|enabled|uri|uris)|(?:Id|Ids|Name|Names|Type|Enabled|Uri|Uris|Ref))$"
    r"|(?:User|Reader|Owner|Contributor|Officer)$"
    r"|^(?:secret|secrets|secretRef)$"
)
#: Values that are switches, not credentials.
SWITCHES = {"Enabled", "Disabled", "true", "false"}
#: Compose variables that must be supplied, never defaulted.
COMPOSE_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "FLOWER_PASSWORD",
    "TASKLIFT_STREAM_SIGNING_KEY",
    "TASKLIFT_WEBHOOK_SECRETS",
)
#: Compose variables that hold secrets only sometimes: optional, and their default is no secret.
COMPOSE_OPTIONAL_SECRETS = {"TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS": "[]"}
#: The API's stream-link keys: only the API (function app) gets them, always from a secret store.
STREAM_KEYS = ("TASKLIFT_STREAM_SIGNING_KEY", "TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS")
#: The signing secrets of completion webhooks: only the reaper (which sends them) gets them.
WEBHOOK_SECRETS = "TASKLIFT_WEBHOOK_SECRETS"
#: A URL with a password part: scheme://user:password@host
URL_CREDENTIALS = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


# --- compose ------------------------------------------------------------------------------------


def test_compose_secret_variables_are_required_never_defaulted() -> None:
    """Each secret variable is interpolated as ${VAR:?message}: compose refuses to start without it."""
    text = tools.COMPOSE.read_text()
    for var in COMPOSE_SECRETS:
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses, var
        assert all(use.startswith(":?") for use in uses), f"{var}: {uses}"


def _compose_string_values() -> list[tuple[str, str]]:
    out = []
    for path, value in tools.walk(tools.load_compose()):
        if isinstance(value, str):
            out.append((".".join(map(str, path)), value))
    return out


def test_compose_credentials_only_come_from_required_variables() -> None:
    """Every secret-named env var and every URL password in compose is a ${VAR:?} interpolation."""
    for where, value in _compose_string_values():
        name = where.rsplit(".", 1)[-1]
        if name in COMPOSE_OPTIONAL_SECRETS:
            default = re.escape(COMPOSE_OPTIONAL_SECRETS[name])
            assert re.fullmatch(r"\$\{" + name + ":-" + default + r"\}", value), f"{where} = {value!r}"
        elif SECRET_NAME.search(name) and not NOT_A_SECRET.search(name):
            assert re.search(r"\$\{[A-Z_]+:\?", value), f"{where} = {value!r}"
        for password in URL_CREDENTIALS.findall(value):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), f"{where}: literal password in URL"
    command = tools.load_compose()["services"]["redis"]["command"]
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]*\}", command[command.index("--requirepass") + 1])


def test_compose_gives_only_the_api_the_stream_signing_keys() -> None:
    """The API's signing key is a required ${VAR:?} interpolation; no other service gets either key."""
    services = tools.load_compose()["services"]
    api = services["api"]["environment"]
    assert re.fullmatch(r"\$\{TASKLIFT_STREAM_SIGNING_KEY:\?[^}]+\}", api["TASKLIFT_STREAM_SIGNING_KEY"])
    assert api["TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS"] == "${TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS:-[]}"
    for name, service in services.items():
        if name != "api":
            assert not set(STREAM_KEYS) & set(service.get("environment") or {}), name


def test_env_example_explains_how_to_generate_the_stream_signing_key() -> None:
    text = (tools.REPO / ".env.example").read_text()
    assert 'python -c "import secrets; print(secrets.token_urlsafe(48))"' in text


def test_compose_gives_only_the_reaper_the_webhook_secrets() -> None:
    """The reaper's webhook secrets are a required ${VAR:?} interpolation; no other service gets them."""
    services = tools.load_compose()["services"]
    reaper = services["reaper"]["environment"]
    assert re.fullmatch(r"\$\{TASKLIFT_WEBHOOK_SECRETS:\?[^}]+\}", reaper[WEBHOOK_SECRETS])
    assert [name for name, service in services.items() if WEBHOOK_SECRETS in (service.get("environment") or {})] == [
        "reaper"
    ]


def test_env_example_explains_how_to_generate_a_webhook_secret() -> None:
    text = (tools.REPO / ".env.example").read_text()
    assert """python -c "import base64,os;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\"""" in text


def test_env_example_leaves_every_secret_blank() -> None:
    """.env.example documents the secrets without shipping a value for any of them."""
    lines = dict(
        line.split("=", 1)
        for line in (tools.REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    for var in COMPOSE_SECRETS:
        assert lines.get(var) == "", var


# --- terraform ------------------------------------------------------------------------------------


def _tf_literal_secrets(data: Any, where: str) -> list[str]:
    found = []
    for path, value in tools.walk(data):
        name = str(path[-1]) if path else ""
        secret_named = SECRET_NAME.search(name) and not NOT_A_SECRET.search(name)
        if secret_named and isinstance(value, str) and not value.startswith(("${", "@Microsoft.KeyVault(")):
            found.append(f"{where}:{'.'.join(map(str, path))} = {value!r}")
    return found


def test_terraform_has_no_literal_secret_values() -> None:
    """No secret-named Terraform argument, local or tfvars entry holds a literal string."""
    found = []
    for path in sorted(tools.TERRAFORM.rglob("*.tf")):
        found += _tf_literal_secrets(tools.load_hcl(path), path.name)
    found += _tf_literal_secrets(tools.terraform_tfvars(tools.TERRAFORM / "terraform.tfvars.example"), "tfvars.example")
    assert not found


def test_terraform_function_app_reads_secrets_as_key_vault_references() -> None:
    """Function app settings for the connection strings are @Microsoft.KeyVault(SecretUri=...)."""
    module = tools.TERRAFORM / "modules" / "functions" / "main.tf"
    settings = tools.terraform_locals(module)["secret_settings"]
    assert set(settings) == {"TASKLIFT_DATABASE_URL", "TASKLIFT_REDIS_URL", *STREAM_KEYS}
    for value in settings.values():
        assert re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=\$\{var\.secret_ids\[\"[a-z-]+\"\]\}\)", value)
    app = tools.terraform_blocks("resource", module)["azurerm_function_app_flex_consumption"]["this"]
    assert "local.secret_settings" in app["app_settings"]


def test_terraform_stream_signing_keys_are_generated_or_sensitive_and_kept_in_key_vault() -> None:
    """The signing key is a random_password, the previous keys a sensitive variable (no file default)."""
    data = tools.TERRAFORM / "modules" / "data" / "main.tf"
    secrets = tools.terraform_locals(data)["secrets"]
    assert tools.unwrap(secrets["stream-signing-key"]) == "random_password.stream_signing_key.result"
    assert tools.unwrap(secrets["stream-signing-previous-keys"]) == "jsonencode(var.stream_signing_previous_keys)"
    assert "stream_signing_key" in tools.terraform_blocks("resource", data)["random_password"]
    for variables in (tools.TERRAFORM / "variables.tf", tools.TERRAFORM / "modules" / "data" / "variables.tf"):
        variable = tools.terraform_blocks("variable", variables)["stream_signing_previous_keys"]
        assert variable["sensitive"] is True and variable["default"] == []
    tfvars = tools.terraform_tfvars(tools.TERRAFORM / "terraform.tfvars.example")
    assert not {"stream_signing_key", "stream_signing_previous_keys"} & set(tfvars)


def test_terraform_container_apps_use_key_vault_secrets_and_secret_refs() -> None:
    """Container Apps secrets point at Key Vault (no value) and the env takes them by secret_name."""
    resources = tools.terraform_blocks("resource", tools.TERRAFORM / "modules" / "workers" / "main.tf")
    apps = [*resources["azurerm_container_app"].values(), *resources["azurerm_container_app_job"].values()]
    for app in apps:
        dynamic = [d["secret"]["content"][0] for d in app.get("dynamic", []) if "secret" in d]
        secrets = app.get("secret", []) + dynamic
        assert secrets
        for secret in secrets:
            assert "value" not in secret and "key_vault_secret_id" in secret and "identity" in secret
        template = app["template"][0]
        for container in template["container"]:
            for env in container.get("env", []):
                if env["name"] in ("TASKLIFT_DATABASE_URL", "TASKLIFT_REDIS_URL"):
                    assert "secret_name" in env and "value" not in env


def test_terraform_webhook_secrets_are_generated_kept_in_key_vault_and_given_to_the_reaper_alone() -> None:
    """whsec_ + base64 of random_bytes (then the sensitive previous ones), a Key Vault secret, and a
    secret reference of the reaper's container app only."""
    data = tools.TERRAFORM / "modules" / "data" / "main.tf"
    secrets = tools.terraform_locals(data)["secrets"]
    assert (
        tools.unwrap(secrets["webhook-secrets"])
        == 'join(",", concat(["whsec_${random_bytes.webhook_secret.base64}"], var.webhook_previous_secrets))'
    )
    webhook_secret = tools.terraform_blocks("resource", data)["random_bytes"]["webhook_secret"]
    assert 24 <= webhook_secret["length"] <= 64
    for variables in (tools.TERRAFORM / "variables.tf", tools.TERRAFORM / "modules" / "data" / "variables.tf"):
        variable = tools.terraform_blocks("variable", variables)["webhook_previous_secrets"]
        assert variable["sensitive"] is True and variable["default"] == []
    assert "webhook_previous_secrets" not in tools.terraform_tfvars(tools.TERRAFORM / "terraform.tfvars.example")

    workers = tools.TERRAFORM / "modules" / "workers" / "main.tf"
    names = tools.terraform_locals(workers)
    assert "webhook-secrets" not in names["secret_names"]
    assert tools.unwrap(names["reaper_secret_names"]) == 'concat(local.secret_names, ["webhook-secrets"])'
    apps = tools.terraform_blocks("resource", workers)["azurerm_container_app"]
    for name, app in apps.items():
        secret_sets = [d["secret"]["for_each"] for d in app.get("dynamic", []) if "secret" in d]
        envs = {e["name"]: e for c in app["template"][0]["container"] for e in c.get("env", [])}
        if name == "reaper":
            assert secret_sets == ["${toset(local.reaper_secret_names)}"]
            assert envs[WEBHOOK_SECRETS] == {"name": WEBHOOK_SECRETS, "secret_name": "webhook-secrets"}
        else:
            assert secret_sets == ["${toset(local.secret_names)}"], name
            assert WEBHOOK_SECRETS not in envs, name


def test_terraform_key_vault_is_rbac_only_purge_protected_and_default_deny() -> None:
    """The vault uses Azure RBAC, purge protection, and a default-deny network ACL."""
    vault = tools.terraform_blocks("resource", tools.TERRAFORM / "modules" / "keyvault" / "main.tf")[
        "azurerm_key_vault"
    ]["this"]
    assert vault["rbac_authorization_enabled"] is True
    assert vault["purge_protection_enabled"] is True
    assert vault["network_acls"][0]["default_action"] == "Deny"


# --- bicep ----------------------------------------------------------------------------------------


def test_bicep_password_parameter_is_secure_without_default() -> None:
    """postgresAdminPassword is @secure(), has no default, and the .bicepparam reads it from the environment."""
    main = tools.bicep_source(tools.BICEP / "main.bicep")
    assert re.search(r"@secure\(\)\s*\n(?:@\w+\([^)]*\)\s*\n)*param postgresAdminPassword string\s*$", main, re.M)
    params = tools.strip_bicep_comments((tools.BICEP / "main.bicepparam").read_text())
    assert re.search(r"^param postgresAdminPassword = readEnvironmentVariable\('[A-Z_]+'\)\s*$", params, re.M)


@pytest.mark.parametrize("path", sorted(tools.BICEP.rglob("*.bicep*")), ids=lambda p: p.name)
def test_bicep_secret_parameters_are_secure_and_never_literal(path: Any) -> None:
    """Every secret-named parameter is @secure(); no secret-named property has a literal value."""
    source = tools.strip_bicep_comments(path.read_text())
    for match in re.finditer(r"^param (\w+) (\w+)", source, re.M):
        if SECRET_NAME.search(match.group(1)) and not NOT_A_SECRET.search(match.group(1)):
            assert "@secure()" in source[max(0, match.start() - 300) : match.start()], match.group(1)
    for name, literal in re.findall(r"^\s*(\w+)\s*[:=]\s*'([^'$]*)'\s*$", source, re.M):
        if SECRET_NAME.search(name) and not NOT_A_SECRET.search(name) and literal not in SWITCHES:
            pytest.fail(f"{path.name}: {name} = {literal!r}")


def test_bicep_stream_signing_keys_are_secure_parameters_from_the_environment() -> None:
    """streamSigningKey is @secure() without default; both keys come from the deployer's environment."""
    main = tools.bicep_source(tools.BICEP / "main.bicep")
    assert re.search(r"@secure\(\)\s*\n(?:@\w+\([^)]*\)\s*\n)*param streamSigningKey string\s*$", main, re.M)
    assert re.search(r"@secure\(\)\s*\nparam streamSigningPreviousKeys string = ''\s*$", main, re.M)
    params = tools.strip_bicep_comments((tools.BICEP / "main.bicepparam").read_text())
    assert re.search(r"^param streamSigningKey = readEnvironmentVariable\('[A-Z_]+'\)\s*$", params, re.M)
    assert re.search(r"^param streamSigningPreviousKeys = readEnvironmentVariable\('[A-Z_]+', ''\)\s*$", params, re.M)
    data = tools.bicep_source(tools.BICEP / "modules" / "data.bicep")
    assert "value: streamSigningKey\n" in data
    assert "value: empty(streamSigningPreviousKeys) ? '[]' : streamSigningPreviousKeys\n" in data


def test_bicep_webhook_secrets_are_a_secure_parameter_kept_in_key_vault_and_given_to_the_reaper_alone() -> None:
    """webhookSecrets is @secure() without default, from the deployer's environment, written to Key
    Vault; only the reaper's container app references it."""
    main = tools.bicep_source(tools.BICEP / "main.bicep")
    assert re.search(r"@secure\(\)\s*\n(?:@\w+\([^)]*\)\s*\n)*param webhookSecrets string\s*$", main, re.M)
    assert "    webhookSecrets: webhookSecrets\n" in main
    params = tools.strip_bicep_comments((tools.BICEP / "main.bicepparam").read_text())
    assert re.search(r"^param webhookSecrets = readEnvironmentVariable\('[A-Z_]+'\)\s*$", params, re.M)
    data = tools.bicep_source(tools.BICEP / "modules" / "data.bicep")
    assert "name: 'tasklift-webhook-secrets'\n" in data and "value: webhookSecrets\n" in data
    assert "webhookSecrets: webhookSecretsSecret.properties.secretUri\n" in data
    workers = tools.bicep_source(tools.BICEP / "modules" / "workers.bicep")
    assert workers.count("keyVaultUrl: secretUris.webhookSecrets") == 1
    reaper = workers[workers.index("resource reaper ") :]
    reaper = reaper[: reaper.index("\n}\n")]
    assert "secrets: reaperSecrets\n" in reaper and "reaperSecretEnv" in reaper
    assert workers.count("reaperSecrets") == 2 and workers.count("reaperSecretEnv") == 2  # defined, used once
    refs = [(n, kind) for n, kind, _ in tools.bicep_env_entries(tools.BICEP / "modules" / "workers.bicep")]
    assert (WEBHOOK_SECRETS, "secretRef") in refs
    functions = {n for n, _, _ in tools.bicep_env_entries(tools.BICEP / "modules" / "functions.bicep")}
    assert WEBHOOK_SECRETS not in functions


def test_bicep_function_app_reads_secrets_as_key_vault_references() -> None:
    """Function app settings for the connection strings and stream keys are Key Vault references."""
    entries = {
        n: e for n, kind, e in tools.bicep_env_entries(tools.BICEP / "modules" / "functions.bicep") if kind == "value"
    }
    for name in ("TASKLIFT_DATABASE_URL", "TASKLIFT_REDIS_URL", *STREAM_KEYS):
        assert entries[name].startswith("'@Microsoft.KeyVault(SecretUri=${secretUris."), name


def test_bicep_container_apps_use_key_vault_secrets_and_secret_refs() -> None:
    """Container Apps secrets are keyVaultUrl + identity (no value); env uses secretRef."""
    workers = tools.bicep_source(tools.BICEP / "modules" / "workers.bicep")
    secrets_block = re.search(r"^var secrets = \[(.*?)^\]", workers, re.M | re.S)
    assert secrets_block
    assert "value:" not in secrets_block.group(1)
    # database-url and redis-url (KEDA scales on PostgreSQL now: no redis-password here).
    assert len(re.findall(r"keyVaultUrl:", secrets_block.group(1))) == 2
    assert len(re.findall(r"identity: identity\.id", secrets_block.group(1))) == 2
    refs = {n: kind for n, kind, _ in tools.bicep_env_entries(tools.BICEP / "modules" / "workers.bicep")}
    assert refs["TASKLIFT_DATABASE_URL"] == refs["TASKLIFT_REDIS_URL"] == "secretRef"


def test_bicep_key_vault_is_private_rbac_only_and_purge_protected() -> None:
    """The Bicep vault has no public network access at all (secrets are written through ARM)."""
    vault = tools.bicep_source(tools.BICEP / "modules" / "keyvault.bicep")
    for setting in ("publicNetworkAccess: 'Disabled'", "enableRbacAuthorization: true", "enablePurgeProtection: true"):
        assert setting in vault


# --- kubernetes -----------------------------------------------------------------------------------


def test_k8s_manifests_contain_no_secret_objects() -> None:
    """No Secret with data is committed; the Key Vault CSI driver creates tasklift-secrets."""
    for doc in tools.load_k8s_documents():
        assert doc["kind"] != "Secret"
        assert "stringData" not in doc and "data" not in doc or doc["kind"] == "ConfigMap"


def test_k8s_runs_no_api_so_sets_no_stream_signing_key() -> None:
    """The API runs on Azure Functions in the AKS route too: no pod gets the stream keys."""
    for doc in tools.load_k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert not set(STREAM_KEYS) & {e["name"] for e in container.get("env", [])}


def test_k8s_gives_only_the_reaper_the_webhook_secrets_from_the_key_vault_mirror() -> None:
    """The reaper alone takes TASKLIFT_WEBHOOK_SECRETS, from the Secret key the CSI class mirrors."""
    takers = {}
    for doc in tools.load_k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env", []):
                    if env["name"] == WEBHOOK_SECRETS:
                        takers[doc["metadata"]["name"]] = env["valueFrom"]["secretKeyRef"]
    assert takers == {"tasklift-reaper": {"name": "tasklift-secrets", "key": "webhook-secrets"}}
    (spc,) = [d for d in tools.load_k8s_documents() if d["kind"] == "SecretProviderClass"]
    assert "objectName: tasklift-webhook-secrets" in spc["spec"]["parameters"]["objects"]
    (mirror,) = spc["spec"]["secretObjects"]
    assert {"objectName": "tasklift-webhook-secrets", "key": "webhook-secrets"} in mirror["data"]


def test_k8s_secret_env_vars_come_from_secret_key_refs() -> None:
    """Every secret-named env var in a pod is a secretKeyRef, never a literal value."""
    seen = 0
    for doc in tools.load_k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and env["valueFrom"]["secretKeyRef"]["name"] == "tasklift-secrets"
                    seen += 1
    assert seen >= 8  # two URLs in each worker pool and the reaper, its webhook secrets, the job's database URL
