output "resource_group_name" {
  value = azurerm_resource_group.this.name
}

output "api_url" {
  description = "Base URL of the HTTP API (the function app)."
  value       = "https://${module.functions.default_hostname}"
}

output "function_app_name" {
  description = "Deploy the function code here (docs/deploy.md)."
  value       = module.functions.name
}

output "worker_app_names" {
  description = "Container Apps running the workers, by queue (empty with worker_platform = aks)."
  value       = one(module.workers[*].worker_app_names)
}

output "reaper_app_name" {
  value = one(module.workers[*].reaper_app_name)
}

output "migrate_job_name" {
  description = "Run after every image rollout: az containerapp job start -g <rg> -n <this>."
  value       = one(module.workers[*].migrate_job_name)
}

output "key_vault_name" {
  description = "For the AKS SecretProviderClass (keyvaultName)."
  value       = module.keyvault.name
}

output "tenant_id" {
  value = data.azurerm_client_config.current.tenant_id
}

output "vnet_id" {
  description = "Peer your AKS VNet with it (or place the cluster in it) and link the private DNS zones."
  value       = module.network.vnet_id
}

output "redis_address" {
  description = "host:port of the TLS endpoint of Azure Cache for Redis."
  value       = "${module.data.redis_hostname}:${module.data.redis_ssl_port}"
}

output "key_vault_uri" {
  value = module.keyvault.uri
}

output "postgres_fqdn" {
  value = module.data.postgres_fqdn
}

output "redis_hostname" {
  value = module.data.redis_hostname
}

output "storage_account_name" {
  description = "Holds the function host state, the deployment package and the `payloads` container (large inputs/results)."
  value       = module.data.storage_account_name
}

output "egress_ip" {
  description = "Outbound IP of the function app and the workers (NAT gateway): allowlist it where tasks call."
  value       = module.network.egress_ip
}

output "queues" {
  description = "Celery queue names = Redis list names the KEDA rules watch."
  value       = { cpu = local.cpu_queue, io = local.io_queue }
}
