# --- where -------------------------------------------------------------------------------------

variable "subscription_id" {
  description = "Azure subscription to deploy into. null = take it from ARM_SUBSCRIPTION_ID (azurerm 4.x requires one of the two)."
  type        = string
  default     = null
}

variable "location" {
  description = "Azure region. It must offer Flex Consumption, Container Apps workload profiles and PostgreSQL Flexible Server zone redundancy if you enable it."
  type        = string
  default     = "westeurope"
}

variable "name" {
  description = "Short workload name, used as the first part of every resource name."
  type        = string
  default     = "tasklift"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.name))
    error_message = "name: 2-12 lower-case letters/digits, starting with a letter (it ends up in storage and Key Vault names)."
  }
}

variable "environment" {
  description = "Environment name (dev, test, prod...)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z0-9]{1,8}$", var.environment))
    error_message = "environment: 1-8 lower-case letters/digits."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- network -----------------------------------------------------------------------------------

variable "address_space" {
  description = "VNet address space."
  type        = list(string)
  default     = ["10.40.0.0/16"]
}

variable "subnet_prefixes" {
  description = "Subnet ranges. functions and apps are delegated to Microsoft.App/environments (Flex Consumption and Container Apps workload profiles both need that delegation, each on its own subnet); postgres is delegated to PostgreSQL Flexible Server; endpoints holds the private endpoints."
  type = object({
    functions = string
    apps      = string
    postgres  = string
    endpoints = string
  })
  default = {
    functions = "10.40.1.0/24"
    apps      = "10.40.2.0/23"
    postgres  = "10.40.4.0/24"
    endpoints = "10.40.5.0/24"
  }
}

variable "deployer_ip_ranges" {
  description = "Public CIDRs allowed to reach the Key Vault data plane, so the machine running `terraform apply` can write the secrets. Empty = the vault is private-only and Terraform must run inside the VNet (self-hosted runner)."
  type        = list(string)
  default     = []
}

# --- image -------------------------------------------------------------------------------------

variable "image" {
  description = "The tasklift image (the repository's Dockerfile), ideally pinned by digest: registry/tasklift@sha256:..."
  type        = string
}

variable "container_registry_id" {
  description = "Resource ID of an Azure Container Registry holding the image. Set it to pull with the workers' managed identity (AcrPull is granted). null = a public registry."
  type        = string
  default     = null
}

variable "container_registry_server" {
  description = "Login server of that registry, e.g. myacr.azurecr.io. Required with container_registry_id."
  type        = string
  default     = null
}

# --- tasklift settings (env TASKLIFT_*) --------------------------------------------------------

variable "log_level" {
  description = "TASKLIFT_LOG_LEVEL."
  type        = string
  default     = "INFO"
}

variable "db_pool_size" {
  description = "TASKLIFT_DB_POOL_SIZE: SQLAlchemy pool per process. PostgreSQL connections = processes x this (docs/sizing.md)."
  type        = number
  default     = 5
}

variable "lease_seconds" {
  description = "TASKLIFT_LEASE_SECONDS: a running task's lease, renewed by heartbeats."
  type        = number
  default     = 30
}

variable "heartbeat_seconds" {
  description = "TASKLIFT_HEARTBEAT_SECONDS: heartbeat + cancel-check period of a running task."
  type        = number
  default     = 1

  validation {
    condition     = var.heartbeat_seconds * 3 <= var.lease_seconds
    error_message = "heartbeat_seconds must be at most a third of lease_seconds, or a single slow heartbeat loses the lease."
  }
}

variable "soft_shutdown_seconds" {
  description = "TASKLIFT_SOFT_SHUTDOWN_SECONDS: on SIGTERM (scale-in, new revision) a worker lets running tasks finish this long."
  type        = number
  default     = 300
}

variable "shutdown_margin_seconds" {
  description = "Seconds the platform waits beyond the soft shutdown before SIGKILL (acks, pool teardown, telemetry flush)."
  type        = number
  default     = 30

  validation {
    # Container Apps caps terminationGracePeriodSeconds at 600 s (10 minutes).
    condition     = var.shutdown_margin_seconds >= 10 && var.soft_shutdown_seconds + var.shutdown_margin_seconds <= 600
    error_message = "shutdown_margin_seconds >= 10 and soft_shutdown_seconds + shutdown_margin_seconds <= 600 (the Container Apps maximum)."
  }
}

variable "broker_visibility_timeout" {
  description = "TASKLIFT_BROKER_VISIBILITY_TIMEOUT: seconds before Redis re-delivers an unacked message. Longer than your longest task; leases recover crashed tasks sooner."
  type        = number
  default     = 43200
}

variable "anonymous" {
  description = "TASKLIFT_ANONYMOUS: accept unauthenticated requests. Keep false outside a sandbox."
  type        = bool
  default     = false
}

variable "oidc_issuer" {
  description = "TASKLIFT_OIDC_ISSUER: accept OIDC bearer tokens from this issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0. Empty = API keys only."
  type        = string
  default     = ""
}

variable "oidc_audience" {
  description = "TASKLIFT_OIDC_AUDIENCE: the aud claim tokens must carry (the API's application ID URI). Empty = API keys only."
  type        = string
  default     = ""

  validation {
    condition     = (var.oidc_issuer == "") == (var.oidc_audience == "")
    error_message = "Set oidc_issuer and oidc_audience together (or neither)."
  }
}

variable "stream_signing_previous_keys" {
  description = "TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS: stream-signing keys still accepted while rotating (the key itself is generated and kept in Key Vault). Pass it as TF_VAR_stream_signing_previous_keys, never in a file; back to [] after one token lifetime."
  type        = list(string)
  default     = []
  sensitive   = true
}

variable "webhook_previous_secrets" {
  description = "TASKLIFT_WEBHOOK_SECRETS: webhook secrets (whsec_...) the reaper still signs with, after the generated one kept in Key Vault, while receivers switch to it. Pass it as TF_VAR_webhook_previous_secrets, never in a file; back to [] once receivers use the new one."
  type        = list(string)
  default     = []
  sensitive   = true
}

variable "public_url" {
  description = "TASKLIFT_PUBLIC_URL: base URL clients use (custom domain, Front Door, APIM). null = https://<function app>.azurewebsites.net."
  type        = string
  default     = null
}

# --- workers -----------------------------------------------------------------------------------

variable "worker_platform" {
  description = "Where the workers and the reaper run: container-apps (modules/workers), or aks (infra/k8s on your cluster; this stack then only builds the network, data, vault and functions)."
  type        = string
  default     = "container-apps"

  validation {
    condition     = contains(["container-apps", "aks"], var.worker_platform)
    error_message = "worker_platform must be container-apps or aks."
  }
}

variable "worker_pools" {
  description = "One Container App per Celery queue. concurrency is prefork processes per replica (TASKLIFT_WORKER_CONCURRENCY) and the KEDA target load (running + due tasks) per replica. docs/sizing.md derives them."
  type = object({
    cpu = object({
      cpu          = number
      memory       = string
      concurrency  = number
      min_replicas = number
      max_replicas = number
    })
    io = object({
      cpu          = number
      memory       = string
      concurrency  = number
      min_replicas = number
      max_replicas = number
    })
  })
  default = {
    cpu = { cpu = 2, memory = "4Gi", concurrency = 2, min_replicas = 0, max_replicas = 10 }
    io  = { cpu = 1, memory = "2Gi", concurrency = 8, min_replicas = 1, max_replicas = 10 }
  }
}

variable "workers_zone_redundant" {
  description = "Spread the Container Apps environment over availability zones."
  type        = bool
  default     = false
}

# --- functions ---------------------------------------------------------------------------------

variable "functions_maximum_instance_count" {
  description = "Flex Consumption scale-out ceiling (40-1000)."
  type        = number
  default     = 100
}

variable "functions_always_ready" {
  description = "Always-ready instances for the HTTP trigger group: removes cold starts on the submit/status path. 0 = scale to zero."
  type        = number
  default     = 1
}

variable "functions_zone_redundant" {
  description = "Zone-redundant Flex Consumption plan (instances spread over availability zones). Set false in a region without zones."
  type        = bool
  default     = true
}

variable "functions_instance_memory_mb" {
  description = "Flex Consumption instance size: 2048 or 4096."
  type        = number
  default     = 2048
}

# --- data --------------------------------------------------------------------------------------

variable "postgres_sku" {
  description = "PostgreSQL Flexible Server SKU (tier_family_size)."
  type        = string
  default     = "GP_Standard_D2ds_v5"
}

variable "postgres_storage_mb" {
  description = "PostgreSQL storage in MB."
  type        = number
  default     = 65536
}

variable "postgres_backup_retention_days" {
  description = "Point-in-time-restore window, 7-35 days."
  type        = number
  default     = 14
}

variable "postgres_geo_redundant_backup" {
  description = "Geo-redundant backups (set at creation only): PostgreSQL is the system of record, so a regional outage must not take the backups with it."
  type        = bool
  default     = true
}

variable "postgres_zone_redundant_ha" {
  description = "Zone-redundant high availability: a hot standby in another zone (doubles the compute cost)."
  type        = bool
  default     = false
}

variable "redis_sku" {
  description = "Azure Cache for Redis SKU: Standard (replicated, SLA) or Premium."
  type        = string
  default     = "Standard"
}

variable "redis_capacity" {
  description = "Azure Cache for Redis size (C0-C6 for Standard, P1-P5 for Premium)."
  type        = number
  default     = 1
}

variable "storage_replication" {
  description = "Replication of the storage account (function state, deployment packages, large payloads). GZRS: task results in `payloads` are not reproducible."
  type        = string
  default     = "GZRS"
}

variable "log_retention_days" {
  description = "Log Analytics retention."
  type        = number
  default     = 30
}
