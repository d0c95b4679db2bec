variable "name" {
  description = "Name stem (<= 21 chars so that <name>-worker-cpu fits the 32-char app name limit)."
  type        = string

  validation {
    condition     = length(var.name) <= 21
    error_message = "Container app names are limited to 32 characters."
  }
}

variable "location" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "subnet_id" {
  description = "Subnet delegated to Microsoft.App/environments (/27 or larger), used only by this environment."
  type        = string
}

variable "zone_redundant" {
  type = bool
}

variable "log_analytics_workspace_id" {
  type = string
}

variable "key_vault_id" {
  type = string
}

variable "payloads_container_id" {
  type = string
}

variable "image" {
  type = string
}

variable "container_registry_id" {
  type     = string
  nullable = true
}

variable "container_registry_server" {
  type     = string
  nullable = true
}

variable "secret_ids" {
  description = "Versionless Key Vault secret IDs: database-url, redis-url, webhook-secrets (the reaper's)."
  type        = map(string)
}

variable "tasklift_env" {
  description = "Non-secret TASKLIFT_* settings for every worker and the reaper."
  type        = map(string)
}

variable "termination_grace_seconds" {
  description = "terminationGracePeriodSeconds of every app: TASKLIFT_SOFT_SHUTDOWN_SECONDS + a margin."
  type        = number

  validation {
    condition     = var.termination_grace_seconds <= 600
    error_message = "Container Apps allows at most 600 seconds."
  }
}

variable "application_insights_connection_string" {
  type      = string
  sensitive = true
}

variable "pools" {
  description = "Worker pool per queue: cpu/memory per replica, Celery concurrency (also the KEDA target load per replica), replica bounds, and the queue name."
  type = map(object({
    queue        = string
    cpu          = number
    memory       = string
    concurrency  = number
    min_replicas = number
    max_replicas = number
  }))

  validation {
    condition     = alltrue([for p in values(var.pools) : p.min_replicas <= p.max_replicas && p.max_replicas >= 1 && p.concurrency >= 1])
    error_message = "Each pool needs min_replicas <= max_replicas, max_replicas >= 1 and concurrency >= 1."
  }
}

variable "tags" {
  type = map(string)
}
