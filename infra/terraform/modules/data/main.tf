# The state: PostgreSQL (source of truth for tasks, events, logs), Redis (Celery broker + pub/sub
# wake-ups), and a storage account (function host state, deployment packages, large payloads).
# All three are reachable only from the VNet. The connection strings are written to Key Vault; no
# process sees a password except through a Key Vault reference.

# --- PostgreSQL Flexible Server (VNet-injected) ------------------------------------------------

# URL-safe alphabet: the password is embedded in TASKLIFT_DATABASE_URL (and urlencoded anyway).
resource "random_password" "postgres" {
  length           = 40
  special          = true
  override_special = "-_"
  min_lower        = 4
  min_upper        = 4
  min_numeric      = 4
}

resource "azurerm_postgresql_flexible_server" "this" {
  name                = "psql-${var.flat_name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  version             = "16"
  sku_name            = var.postgres_sku
  storage_mb          = var.postgres_storage_mb
  auto_grow_enabled   = true
  zone                = "1"

  # VNet injection: the server gets an address in the delegated subnet and a record in our zone.
  delegated_subnet_id           = var.postgres_subnet_id
  private_dns_zone_id           = var.private_dns_zone_ids["postgres"]
  public_network_access_enabled = false

  administrator_login    = "tasklift_admin"
  administrator_password = random_password.postgres.result

  authentication {
    password_auth_enabled         = true
    active_directory_auth_enabled = false
  }

  backup_retention_days        = var.postgres_backup_retention
  geo_redundant_backup_enabled = var.postgres_geo_backup

  dynamic "high_availability" {
    for_each = var.postgres_zone_redundant_ha ? [1] : []
    content {
      mode                      = "ZoneRedundant"
      standby_availability_zone = "2"
    }
  }

  # Sunday 02:00 UTC; planned maintenance restarts the server (tasks survive: leases + reaper).
  maintenance_window {
    day_of_week  = 0
    start_hour   = 2
    start_minute = 0
  }

  tags = var.tags

  lifecycle {
    # After a failover the primary lives in the other zone; do not fail back on the next apply.
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }
}

resource "azurerm_postgresql_flexible_server_database" "tasklift" {
  name      = "tasklift"
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"

  lifecycle {
    prevent_destroy = true
  }
}

# Connection logging feeds incident analysis; TLS is already required by default (kept explicit).
resource "azurerm_postgresql_flexible_server_configuration" "settings" {
  for_each = {
    require_secure_transport     = "on"
    log_connections              = "on"
    log_disconnections           = "on"
    log_checkpoints              = "on"
    "connection_throttle.enable" = "on"
  }

  name      = each.key
  server_id = azurerm_postgresql_flexible_server.this.id
  value     = each.value
}

resource "azurerm_monitor_diagnostic_setting" "postgres" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_postgresql_flexible_server.this.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category_group = "allLogs"
  }

  enabled_metric {
    category = "AllMetrics"
  }
}

# --- Azure Cache for Redis ---------------------------------------------------------------------

resource "azurerm_redis_cache" "this" {
  name                = "redis-${var.flat_name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  sku_name            = var.redis_sku
  family              = var.redis_sku == "Premium" ? "P" : "C"
  capacity            = var.redis_capacity
  redis_version       = "6"

  # TLS only (port 6380), TLS 1.2+, private endpoint only.
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false

  redis_configuration {
    # A broker must refuse writes when full, never evict queued tasks (Celery's own advice).
    maxmemory_policy = "noeviction"
  }

  patch_schedule {
    day_of_week    = "Sunday"
    start_hour_utc = 3
  }

  tags = var.tags
}

resource "azurerm_private_endpoint" "redis" {
  name                = "pe-redis-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "redis"
    private_connection_resource_id = azurerm_redis_cache.this.id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [var.private_dns_zone_ids["redis"]]
  }
}

# --- Storage account ---------------------------------------------------------------------------

resource "azurerm_storage_account" "this" {
  name                     = substr("st${var.flat_name}", 0, 24)
  location                 = var.location
  resource_group_name      = var.resource_group_name
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication

  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  # Entra ID only: the function host, deployments and tasklift use managed identities.
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  public_network_access_enabled   = false
  local_user_enabled              = false

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = 7
    }

    container_delete_retention_policy {
      days = 7
    }
  }

  tags = var.tags
}

# Resource logs of the blob, queue and table services (Azure Monitor; the successor of classic
# Storage Analytics logging, which needs data-plane access and shared keys).
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = toset(["blobServices", "queueServices", "tableServices"])

  name                       = "to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.this.id}/${each.key}/default"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category_group = "audit"
  }

  enabled_metric {
    category = "Transaction"
  }
}

# Created through ARM (storage_account_id), so it works while the data plane is private.
resource "azurerm_storage_container" "payloads" {
  name                  = "payloads"
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

resource "azurerm_private_endpoint" "storage" {
  # The Functions host uses blobs (keys, leases), queues and tables; tasklift uses blobs.
  for_each = toset(["blob", "queue", "table"])

  name                = "pe-st-${each.key}-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = each.key
    private_connection_resource_id = azurerm_storage_account.this.id
    subresource_names              = [each.key]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = each.key
    private_dns_zone_ids = [var.private_dns_zone_ids[each.key]]
  }
}

# --- secrets -----------------------------------------------------------------------------------

locals {
  # sslmode=require: Flexible Server enforces TLS. Redis: rediss:// on 6380; Celery refuses a
  # rediss:// broker URL without ssl_cert_reqs, and "required" verifies the Azure certificate.
  secrets = {
    database-url = "postgresql://${azurerm_postgresql_flexible_server.this.administrator_login}:${urlencode(random_password.postgres.result)}@${azurerm_postgresql_flexible_server.this.fqdn}:5432/${azurerm_postgresql_flexible_server_database.tasklift.name}?sslmode=require"
    redis-url    = "rediss://:${urlencode(azurerm_redis_cache.this.primary_access_key)}@${azurerm_redis_cache.this.hostname}:${azurerm_redis_cache.this.ssl_port}/0?ssl_cert_reqs=required"
    # The bare password (the AKS route's Key Vault mirror carries it; KEDA scales on PostgreSQL).
    redis-password = azurerm_redis_cache.this.primary_access_key
    # Stream links: the signing key, and the keys still accepted while rotating (a JSON list).
    stream-signing-key           = random_password.stream_signing_key.result
    stream-signing-previous-keys = jsonencode(var.stream_signing_previous_keys)
    # Completion webhooks (the reaper's TASKLIFT_WEBHOOK_SECRETS): the generated secret first, then
    # the ones still signed with while receivers switch (rotation: docs/webhooks.md).
    webhook-secrets = join(",", concat(["whsec_${random_bytes.webhook_secret.base64}"], var.webhook_previous_secrets))
  }
}

# HMAC key of the API's stream links (TASKLIFT_STREAM_SIGNING_KEY): one value shared by every
# function instance. Rotate with -replace (docs/deploy.md, "Security settings").
resource "random_password" "stream_signing_key" {
  length  = 64
  special = false
}

# Standard Webhooks signing key: whsec_ + base64 of 32 random bytes. Rotate with -replace.
resource "random_bytes" "webhook_secret" {
  length = 32
}

resource "azurerm_key_vault_secret" "this" {
  for_each = local.secrets

  name         = "tasklift-${each.key}"
  key_vault_id = var.key_vault_id
  value        = each.value
  content_type = "text/plain"
  tags         = var.tags
}
