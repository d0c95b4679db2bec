variable "name" {
  description = "Vault name (3-24 chars, globally unique)."
  type        = string
}

variable "location" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "tenant_id" {
  type = string
}

variable "deployer_object_id" {
  description = "Object ID of the principal running Terraform; gets Key Vault Secrets Officer."
  type        = string
}

variable "deployer_ip_ranges" {
  type = list(string)
}

variable "endpoint_subnet_id" {
  type = string
}

variable "private_dns_zone_id" {
  type = string
}

variable "log_analytics_workspace_id" {
  type = string
}

variable "tags" {
  type = map(string)
}
