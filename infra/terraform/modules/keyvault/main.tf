# The vault holds the two connection strings every tasklift process needs (TASKLIFT_DATABASE_URL,
# TASKLIFT_REDIS_URL), the Redis password the KEDA scaler authenticates with, and the API's
# stream-signing keys (TASKLIFT_STREAM_SIGNING_KEY, TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS). Access is Azure RBAC
# only (no access policies), purge protection is on, and the data plane is reachable through the
# private endpoint, plus the deployer's IPs while Terraform writes the secrets.

resource "azurerm_key_vault" "this" {
  name                       = var.name
  location                   = var.location
  resource_group_name        = var.resource_group_name
  tenant_id                  = var.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 90

  # Private endpoint only, unless deployer IPs are given (Terraform writes secrets through the data
  # plane; ARM-only tools like Bicep do not need this).
  public_network_access_enabled = length(var.deployer_ip_ranges) > 0

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    ip_rules       = var.deployer_ip_ranges
  }

  tags = var.tags
}

resource "azurerm_private_endpoint" "vault" {
  name                = "pe-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "vault"
    private_connection_resource_id = azurerm_key_vault.this.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "vault"
    private_dns_zone_ids = [var.private_dns_zone_id]
  }
}

# Whoever runs Terraform writes the secrets (modules/data).
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = var.deployer_object_id
}

# Azure RBAC assignments take up to a few minutes to reach the Key Vault data plane; writing a
# secret right after the assignment fails with 403 otherwise.
resource "time_sleep" "rbac_propagation" {
  create_duration = "90s"
  depends_on      = [azurerm_role_assignment.deployer_secrets_officer, azurerm_private_endpoint.vault]
}

resource "azurerm_monitor_diagnostic_setting" "vault" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_key_vault.this.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category_group = "audit"
  }

  enabled_metric {
    category = "AllMetrics"
  }
}
