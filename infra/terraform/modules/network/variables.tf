variable "name" {
  description = "Name stem, e.g. tasklift-prod."
  type        = string
}

variable "location" {
  type = string
}

variable "resource_group_name" {
  type = string
}

variable "address_space" {
  type = list(string)
}

variable "subnet_prefixes" {
  description = "CIDR per subnet role."
  type = object({
    functions = string
    apps      = string
    postgres  = string
    endpoints = string
  })
}

variable "tags" {
  type = map(string)
}
