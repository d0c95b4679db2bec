# The Celery worker pool and the reaper on Azure Container Apps, in a VNet-integrated environment
# with an internal load balancer (nothing here takes inbound traffic). One container app per queue,
# each scaled by KEDA's `postgresql` scaler on its pool's load (running + due tasks); the reaper is
# a single always-on replica; migrations are a manually triggered Container Apps job.

resource "azurerm_user_assigned_identity" "this" {
  name                = "id-${var.name}-workers"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

# Container Apps resolve Key Vault secret references when a revision is created, with this identity;
# the roles must exist before the apps do.
resource "azurerm_role_assignment" "key_vault" {
  scope                = var.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  principal_type       = "ServicePrincipal"
}

# Workers write large results (claim check) and read large inputs.
resource "azurerm_role_assignment" "payloads" {
  scope                = var.payloads_container_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "acr_pull" {
  count = var.container_registry_id == null ? 0 : 1

  scope                = var.container_registry_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  principal_type       = "ServicePrincipal"
}

resource "time_sleep" "rbac_propagation" {
  create_duration = "60s"
  depends_on      = [azurerm_role_assignment.key_vault, azurerm_role_assignment.payloads, azurerm_role_assignment.acr_pull]
}

resource "azurerm_container_app_environment" "this" {
  name                               = "cae-${var.name}"
  location                           = var.location
  resource_group_name                = var.resource_group_name
  logs_destination                   = "log-analytics"
  log_analytics_workspace_id         = var.log_analytics_workspace_id
  infrastructure_subnet_id           = var.subnet_id
  infrastructure_resource_group_name = "rg-${var.name}-cae-infra"
  internal_load_balancer_enabled     = true
  zone_redundancy_enabled            = var.zone_redundant

  # Workload-profile environment (required for a /27+ subnet and UDR support); Consumption profile.
  workload_profile {
    name                  = "Consumption"
    workload_profile_type = "Consumption"
  }

  tags = var.tags
}

locals {
  # Secrets are Key Vault references resolved by the platform with the user-assigned identity.
  secret_names = ["database-url", "redis-url"]
  # The reaper alone sends webhooks, so it alone gets their signing secrets.
  reaper_secret_names = concat(local.secret_names, ["webhook-secrets"])

  # tasklift.store.scaling.POOL_LOAD_QUERY, byte for byte (tests/infra/test_queues.py): the pool's
  # RUNNING tasks + its PENDING tasks that are due. {queue} is replaced by the pool's queue.
  pool_load_query = "SELECT (SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND queue = '{queue}') + (SELECT count(*) FROM task_outbox WHERE queue = '{queue}' AND (intent_seq = 1 OR published_at IS NOT NULL OR available_at <= now()))"

  plain_env = merge(var.tasklift_env, {
    APPLICATIONINSIGHTS_CONNECTION_STRING = var.application_insights_connection_string
  })
}

resource "azurerm_container_app" "worker" {
  for_each = var.pools

  name                         = "${var.name}-worker-${each.key}"
  container_app_environment_id = azurerm_container_app_environment.this.id
  resource_group_name          = var.resource_group_name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  dynamic "registry" {
    for_each = var.container_registry_server == null ? [] : [var.container_registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.this.id
    }
  }

  dynamic "secret" {
    for_each = toset(local.secret_names)
    content {
      name                = secret.value
      key_vault_secret_id = var.secret_ids[secret.value]
      identity            = azurerm_user_assigned_identity.this.id
    }
  }

  template {
    min_replicas = each.value.min_replicas
    max_replicas = each.value.max_replicas

    # SIGTERM (scale-in, new revision) starts the worker's soft shutdown: no new tasks, running ones
    # get TASKLIFT_SOFT_SHUTDOWN_SECONDS, then each is handed back to the queue (PENDING, not
    # failed). The platform waits this long (soft shutdown + margin) before SIGKILL.
    termination_grace_period_seconds = var.termination_grace_seconds

    # KEDA: poll every 15 s; back to zero only after five minutes in which nothing ran or waited.
    polling_interval_in_seconds = 15
    cooldown_period_in_seconds  = 300

    # Desired replicas = ceil(load / concurrency), load = the pool's RUNNING + due PENDING tasks
    # from PostgreSQL: a pool never reads idle while one of its tasks runs. docs/sizing.md.
    custom_scale_rule {
      name             = "postgresql-${each.key}"
      custom_rule_type = "postgresql"
      metadata = {
        query                      = replace(local.pool_load_query, "{queue}", each.value.queue)
        targetQueryValue           = tostring(each.value.concurrency)
        activationTargetQueryValue = "0"
      }
      authentication {
        secret_name       = "database-url"
        trigger_parameter = "connection"
      }
    }

    container {
      name    = "worker"
      image   = var.image
      cpu     = each.value.cpu
      memory  = each.value.memory
      command = ["tasklift", "worker", "--queues", each.value.queue, "--concurrency", tostring(each.value.concurrency)]

      dynamic "env" {
        for_each = local.plain_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Same number as --concurrency above: the CLI flag wins, the setting documents it.
      env {
        name  = "TASKLIFT_WORKER_CONCURRENCY"
        value = tostring(each.value.concurrency)
      }

      env {
        name  = "OTEL_SERVICE_NAME"
        value = "tasklift-worker-${each.key}"
      }

      env {
        name        = "TASKLIFT_DATABASE_URL"
        secret_name = "database-url"
      }

      env {
        name        = "TASKLIFT_REDIS_URL"
        secret_name = "redis-url"
      }
    }
  }

  tags = var.tags

  depends_on = [time_sleep.rbac_propagation]

  lifecycle {
    # The provider docs: with key_vault_secret_id, ignore the `value` Azure reports beside the
    # reference, or every plan shows a diff. `secret` is a set, so the whole block is ignored; the
    # secret names and IDs are fixed by this module (change them with -replace).
    ignore_changes = [secret]
  }
}

# Outbox dispatcher + lease reaper + cleanup: exactly one replica, never scaled to zero (tasks
# submitted while it is down are only delayed, but nobody would notice).
resource "azurerm_container_app" "reaper" {
  name                         = "${var.name}-reaper"
  container_app_environment_id = azurerm_container_app_environment.this.id
  resource_group_name          = var.resource_group_name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  dynamic "registry" {
    for_each = var.container_registry_server == null ? [] : [var.container_registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.this.id
    }
  }

  dynamic "secret" {
    for_each = toset(local.reaper_secret_names)
    content {
      name                = secret.value
      key_vault_secret_id = var.secret_ids[secret.value]
      identity            = azurerm_user_assigned_identity.this.id
    }
  }

  template {
    min_replicas                     = 1
    max_replicas                     = 1
    termination_grace_period_seconds = var.termination_grace_seconds

    container {
      name    = "reaper"
      image   = var.image
      cpu     = 0.5
      memory  = "1Gi"
      command = ["tasklift", "reaper"]

      dynamic "env" {
        for_each = merge(local.plain_env, { OTEL_SERVICE_NAME = "tasklift-reaper" })
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name        = "TASKLIFT_DATABASE_URL"
        secret_name = "database-url"
      }

      env {
        name        = "TASKLIFT_REDIS_URL"
        secret_name = "redis-url"
      }

      env {
        name        = "TASKLIFT_WEBHOOK_SECRETS"
        secret_name = "webhook-secrets"
      }
    }
  }

  tags = var.tags

  depends_on = [time_sleep.rbac_propagation]

  lifecycle {
    # As the workers'. A reaper created before webhook-secrets existed: -replace it once
    # (docs/webhooks.md, "Deploying").
    ignore_changes = [secret]
  }
}

# `tasklift migrate` as a one-shot job: start it after each image rollout, before the new workers
# take traffic (docs/deploy.md): az containerapp job start -g <rg> -n <name>-migrate
resource "azurerm_container_app_job" "migrate" {
  name                         = "${var.name}-migrate"
  location                     = var.location
  resource_group_name          = var.resource_group_name
  container_app_environment_id = azurerm_container_app_environment.this.id
  workload_profile_name        = "Consumption"
  replica_timeout_in_seconds   = 1800
  replica_retry_limit          = 1

  manual_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  dynamic "registry" {
    for_each = var.container_registry_server == null ? [] : [var.container_registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.this.id
    }
  }

  secret {
    name                = "database-url"
    key_vault_secret_id = var.secret_ids["database-url"]
    identity            = azurerm_user_assigned_identity.this.id
  }

  template {
    container {
      name    = "migrate"
      image   = var.image
      cpu     = 0.5
      memory  = "1Gi"
      command = ["tasklift", "migrate"]

      env {
        name        = "TASKLIFT_DATABASE_URL"
        secret_name = "database-url"
      }

      env {
        name  = "TASKLIFT_LOG_FORMAT"
        value = var.tasklift_env["TASKLIFT_LOG_FORMAT"]
      }
    }
  }

  tags = var.tags

  depends_on = [time_sleep.rbac_propagation]
}
