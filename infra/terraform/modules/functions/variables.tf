variable "name" {
  description = "Function app name (globally unique, it is the *.azurewebsites.net host)."
  type        = string
}

variable "location" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "subnet_id" {
  description = "Subnet delegated to Microsoft.App/environments, used only by this app."
  type        = string
}

variable "storage_account_id" {
  type = string
}

variable "storage_account_name" {
  type = string
}

variable "storage_blob_endpoint" {
  type = string
}

variable "payloads_container_id" {
  description = "Large-payload container (covered by the account-scope Storage Blob Data Owner role)."
  type        = string
}

variable "key_vault_id" {
  type = string
}

variable "application_insights_connection_string" {
  type      = string
  sensitive = true
}

variable "maximum_instance_count" {
  type = number

  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "Flex Consumption accepts 40 to 1000 instances."
  }
}

variable "always_ready" {
  type = number
}

variable "instance_memory_mb" {
  type = number

  validation {
    condition     = contains([2048, 4096], var.instance_memory_mb)
    error_message = "Flex Consumption instances have 2048 or 4096 MB."
  }
}

variable "zone_redundant" {
  type = bool
}

variable "tasklift_env" {
  description = "Non-secret TASKLIFT_* settings."
  type        = map(string)
}

variable "secret_ids" {
  description = "Versionless Key Vault secret IDs by name (database-url, redis-url, stream-signing-key, ...)."
  type        = map(string)
}

variable "tags" {
  type = map(string)
}
