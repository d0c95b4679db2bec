# The HTTP endpoints (submit, status, stream, cancel...) as Python function handlers on a Flex
# Consumption plan. Why Flex Consumption over Premium (README.md): VNet integration and private
# backends without a per-instance monthly floor, per-function scale to 1000 instances, always-ready
# instances to keep the submit path warm, and it is the plan Azure now recommends for new serverless
# Linux apps (Linux Consumption is being retired). Premium would only buy deployment slots and a
# larger minimum footprint; the long-running work never runs here anyway (it is on the workers).
#
# Identities: a user-assigned identity for the host storage and the deployment package (it can be
# granted its roles before the app exists), and the system-assigned identity for Key Vault
# references (the azurerm Flex Consumption resource cannot select a user-assigned identity for
# them yet; the first start resolves them once the code is deployed, docs/deploy.md).

resource "azurerm_user_assigned_identity" "this" {
  name                = "id-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

# Identity-based AzureWebJobsStorage needs blob (keys, leases), queue and table data roles; blob
# owner also covers the deployment package container and the large-payload container.
resource "azurerm_role_assignment" "storage" {
  for_each = toset([
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    "Storage Table Data Contributor",
  ])

  scope                = var.storage_account_id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_storage_container" "deployments" {
  name                  = "deployments"
  storage_account_id    = var.storage_account_id
  container_access_type = "private"
}

resource "azurerm_service_plan" "this" {
  name                = "asp-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  os_type             = "Linux"
  sku_name            = "FC1"
  # Flex Consumption zone redundancy is a plan property (zoneRedundant); instance counts are
  # managed by the platform, so there is no worker_count to set.
  zone_balancing_enabled = var.zone_redundant
  tags                   = var.tags
}

locals {
  # Secret settings are Key Vault references: the platform resolves them; the value never appears
  # in the app configuration, in Terraform's plan output or in the portal.
  secret_settings = {
    TASKLIFT_DATABASE_URL = "@Microsoft.KeyVault(SecretUri=${var.secret_ids["database-url"]})"
    TASKLIFT_REDIS_URL    = "@Microsoft.KeyVault(SecretUri=${var.secret_ids["redis-url"]})"
    # The API alone signs and checks stream links; the workers never see these two.
    TASKLIFT_STREAM_SIGNING_KEY           = "@Microsoft.KeyVault(SecretUri=${var.secret_ids["stream-signing-key"]})"
    TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS = "@Microsoft.KeyVault(SecretUri=${var.secret_ids["stream-signing-previous-keys"]})"
  }

  host_settings = {
    # Identity-based host storage (no account key exists: shared keys are disabled).
    AzureWebJobsStorage__accountName = var.storage_account_name
    AzureWebJobsStorage__credential  = "managedidentity"
    AzureWebJobsStorage__clientId    = azurerm_user_assigned_identity.this.client_id
    # Required by the HTTP streams extension (azurefunctions-extensions-http-fastapi) for SSE.
    PYTHON_ENABLE_INIT_INDEXING = "1"
    OTEL_SERVICE_NAME           = "tasklift-api"
  }
}

resource "azurerm_function_app_flex_consumption" "this" {
  name                = var.name
  location            = var.location
  resource_group_name = var.resource_group_name
  service_plan_id     = azurerm_service_plan.this.id

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_mb

  # The deployment package lives in our (private) storage account, read with the user identity.
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${var.storage_blob_endpoint}${azurerm_storage_container.deployments.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.this.id

  dynamic "always_ready" {
    for_each = var.always_ready > 0 ? [var.always_ready] : []
    content {
      name           = "http"
      instance_count = always_ready.value
    }
  }

  # Outbound through the VNet: PostgreSQL, Redis, Key Vault and Storage are private endpoints.
  virtual_network_subnet_id = var.subnet_id

  # Inbound stays public: this is the API clients call (front it with APIM/Front Door as needed).
  public_network_access_enabled                  = true
  https_only                                     = true
  webdeploy_publish_basic_authentication_enabled = false
  client_certificate_mode                        = "Optional"

  identity {
    type         = "SystemAssigned, UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  site_config {
    application_insights_connection_string = var.application_insights_connection_string
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
  }

  app_settings = merge(var.tasklift_env, local.secret_settings, local.host_settings)

  tags = var.tags

  depends_on = [azurerm_role_assignment.storage]
}

# Key Vault references resolve with the system-assigned identity.
resource "azurerm_role_assignment" "key_vault" {
  scope                = var.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_function_app_flex_consumption.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}
