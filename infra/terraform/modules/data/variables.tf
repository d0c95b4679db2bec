variable "name" {
  description = "Name stem, e.g. tasklift-prod."
  type        = string
}

variable "flat_name" {
  description = "Globally unique alphanumeric stem for names that need it."
  type        = string
}

variable "location" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "postgres_subnet_id" {
  type = string
}

variable "endpoint_subnet_id" {
  type = string
}

variable "private_dns_zone_ids" {
  type = map(string)
}

variable "key_vault_id" {
  description = "Vault to write the connection strings to; pass the keyvault module's secrets_key_vault_id so writes wait for RBAC propagation."
  type        = string
}

variable "log_analytics_workspace_id" {
  type = string
}

variable "postgres_sku" {
  type = string
}

variable "postgres_storage_mb" {
  type = number
}

variable "postgres_backup_retention" {
  type = number

  validation {
    condition     = var.postgres_backup_retention >= 7 && var.postgres_backup_retention <= 35
    error_message = "PostgreSQL Flexible Server keeps 7 to 35 days of backups."
  }
}

variable "postgres_geo_backup" {
  type = bool
}

variable "postgres_zone_redundant_ha" {
  type = bool
}

variable "redis_sku" {
  type = string

  validation {
    # Basic has no replica and no SLA: a broker restart would stall every worker.
    condition     = contains(["Standard", "Premium"], var.redis_sku)
    error_message = "redis_sku must be Standard or Premium."
  }
}

variable "redis_capacity" {
  type = number
}

variable "storage_replication" {
  type = string
}

variable "tags" {
  type = map(string)
}

variable "stream_signing_previous_keys" {
  description = "Stream-signing keys still accepted (not used to sign) while rotating; stored as a JSON list in Key Vault."
  type        = list(string)
  default     = []
  sensitive   = true
}

variable "webhook_previous_secrets" {
  description = "Webhook secrets (whsec_...) still signed with, after the generated one, while receivers switch; stored comma-joined in Key Vault."
  type        = list(string)
  default     = []
  sensitive   = true
}
