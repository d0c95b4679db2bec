# tasklift on Azure: the HTTP endpoints on Azure Functions (Flex Consumption), the Celery workers and
# the reaper on Container Apps (KEDA scaling on the Redis queue lists), PostgreSQL Flexible Server,
# Azure Cache for Redis, Storage, Key Vault, Log Analytics + Application Insights; everything data
# behind private endpoints in one VNet. docs/deploy.md walks through it; README.md here explains
# the choices.

provider "azurerm" {
  subscription_id = var.subscription_id
  # The storage account has shared-key access disabled, so the provider must use Entra ID for
  # any data-plane call (containers are created through ARM anyway, see modules/data).
  storage_use_azuread = true

  features {
    key_vault {
      # Purge protection is on: a destroyed vault stays soft-deleted; never try to purge it.
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

data "azurerm_client_config" "current" {}

# Globally unique names (storage, vault, redis, postgres, function app) get a stable suffix.
resource "random_string" "suffix" {
  length  = 5
  special = false
  upper   = false
}

locals {
  base   = "${var.name}-${var.environment}"
  flat   = "${var.name}${var.environment}${random_string.suffix.result}"
  suffix = random_string.suffix.result
  tags = merge(var.tags, {
    workload    = "tasklift"
    environment = var.environment
    managed-by  = "terraform"
  })

  # The Celery queues are Redis lists with these exact names. They are a contract between the code
  # (Settings.cpu_queue / io_queue) and the KEDA scale rules, not a per-environment knob:
  # tests/infra checks they equal the Settings defaults and feed both the env and the scalers.
  cpu_queue = "tasklift.cpu"
  io_queue  = "tasklift.io"

  # Every process gets these (non-secret) settings. Names are Settings fields, upper-cased.
  tasklift_env = {
    TASKLIFT_CPU_QUEUE         = local.cpu_queue
    TASKLIFT_IO_QUEUE          = local.io_queue
    TASKLIFT_DATA_DIR          = "/tmp/tasklift"
    TASKLIFT_DB_POOL_SIZE      = tostring(var.db_pool_size)
    TASKLIFT_LEASE_SECONDS     = tostring(var.lease_seconds)
    TASKLIFT_HEARTBEAT_SECONDS = tostring(var.heartbeat_seconds)
    TASKLIFT_LOG_LEVEL         = var.log_level
    TASKLIFT_LOG_FORMAT        = "json"
  }

  # The HTTP side only.
  api_env = {
    TASKLIFT_PUBLIC_URL = coalesce(var.public_url, "https://${local.base}-func-${local.suffix}.azurewebsites.net")
    TASKLIFT_ANONYMOUS  = tostring(var.anonymous)
    # OIDC bearer tokens besides API keys: both set = on, empty = off (docs/security.md).
    TASKLIFT_OIDC_ISSUER   = var.oidc_issuer
    TASKLIFT_OIDC_AUDIENCE = var.oidc_audience
  }

  # The worker side only (TASKLIFT_WORKER_CONCURRENCY is per pool, set in modules/workers).
  worker_env = {
    TASKLIFT_SOFT_SHUTDOWN_SECONDS     = tostring(var.soft_shutdown_seconds)
    TASKLIFT_BROKER_VISIBILITY_TIMEOUT = tostring(var.broker_visibility_timeout)
  }

  # The platform must wait longer than the soft shutdown before it kills a worker.
  termination_grace_seconds = var.soft_shutdown_seconds + var.shutdown_margin_seconds
}

resource "azurerm_resource_group" "this" {
  name     = "rg-${local.base}"
  location = var.location
  tags     = local.tags
}

module "network" {
  source              = "./modules/network"
  name                = local.base
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = var.address_space
  subnet_prefixes     = var.subnet_prefixes
  tags                = local.tags
}

module "observability" {
  source              = "./modules/observability"
  name                = local.base
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  retention_days      = var.log_retention_days
  tags                = local.tags
}

module "keyvault" {
  source                     = "./modules/keyvault"
  name                       = "kv-${local.flat}"
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  deployer_object_id         = data.azurerm_client_config.current.object_id
  deployer_ip_ranges         = var.deployer_ip_ranges
  endpoint_subnet_id         = module.network.subnet_ids["endpoints"]
  private_dns_zone_id        = module.network.private_dns_zone_ids["vault"]
  log_analytics_workspace_id = module.observability.log_analytics_workspace_id
  tags                       = local.tags
}

module "data" {
  source                     = "./modules/data"
  name                       = local.base
  flat_name                  = local.flat
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  postgres_subnet_id         = module.network.subnet_ids["postgres"]
  endpoint_subnet_id         = module.network.subnet_ids["endpoints"]
  private_dns_zone_ids       = module.network.private_dns_zone_ids
  key_vault_id               = module.keyvault.secrets_key_vault_id
  log_analytics_workspace_id = module.observability.log_analytics_workspace_id
  postgres_sku               = var.postgres_sku
  postgres_storage_mb        = var.postgres_storage_mb
  postgres_backup_retention  = var.postgres_backup_retention_days
  postgres_geo_backup        = var.postgres_geo_redundant_backup
  postgres_zone_redundant_ha = var.postgres_zone_redundant_ha
  redis_sku                  = var.redis_sku
  redis_capacity             = var.redis_capacity
  storage_replication        = var.storage_replication
  tags                       = local.tags

  # Kept in Key Vault next to the generated signing key (rotation: docs/deploy.md).
  stream_signing_previous_keys = var.stream_signing_previous_keys
  # Same for the reaper's webhook secrets (rotation: docs/webhooks.md).
  webhook_previous_secrets = var.webhook_previous_secrets
}

module "functions" {
  source                                 = "./modules/functions"
  name                                   = "${local.base}-func-${local.suffix}"
  location                               = azurerm_resource_group.this.location
  resource_group_name                    = azurerm_resource_group.this.name
  subnet_id                              = module.network.subnet_ids["functions"]
  storage_account_id                     = module.data.storage_account_id
  storage_account_name                   = module.data.storage_account_name
  storage_blob_endpoint                  = module.data.storage_blob_endpoint
  payloads_container_id                  = module.data.payloads_container_id
  key_vault_id                           = module.keyvault.id
  application_insights_connection_string = module.observability.application_insights_connection_string
  maximum_instance_count                 = var.functions_maximum_instance_count
  always_ready                           = var.functions_always_ready
  instance_memory_mb                     = var.functions_instance_memory_mb
  zone_redundant                         = var.functions_zone_redundant
  # App settings: shared + HTTP settings in clear, secrets as Key Vault references.
  tasklift_env = merge(local.tasklift_env, local.api_env)
  secret_ids   = module.data.secret_ids
  tags         = local.tags
}

module "workers" {
  source                                 = "./modules/workers"
  name                                   = local.base
  location                               = azurerm_resource_group.this.location
  resource_group_name                    = azurerm_resource_group.this.name
  subnet_id                              = module.network.subnet_ids["apps"]
  zone_redundant                         = var.workers_zone_redundant
  log_analytics_workspace_id             = module.observability.log_analytics_workspace_id
  key_vault_id                           = module.keyvault.id
  payloads_container_id                  = module.data.payloads_container_id
  image                                  = var.image
  container_registry_id                  = var.container_registry_id
  container_registry_server              = var.container_registry_server
  secret_ids                             = module.data.secret_ids
  tasklift_env                           = merge(local.tasklift_env, local.worker_env)
  termination_grace_seconds              = local.termination_grace_seconds
  application_insights_connection_string = module.observability.application_insights_connection_string

  # One pool per queue; `queue` feeds both the worker's --queues and the KEDA load query.
  pools = {
    cpu = merge(var.worker_pools.cpu, { queue = local.cpu_queue })
    io  = merge(var.worker_pools.io, { queue = local.io_queue })
  }

  tags = local.tags
}
