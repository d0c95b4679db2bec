output "postgres_fqdn" {
  value = azurerm_postgresql_flexible_server.this.fqdn
}

output "redis_hostname" {
  value = azurerm_redis_cache.this.hostname
}

output "redis_ssl_port" {
  value = azurerm_redis_cache.this.ssl_port
}

output "storage_account_id" {
  value = azurerm_storage_account.this.id
}

output "storage_account_name" {
  value = azurerm_storage_account.this.name
}

output "storage_blob_endpoint" {
  value = azurerm_storage_account.this.primary_blob_endpoint
}

output "payloads_container_id" {
  description = "Resource-manager ID of the large-payload container (role assignment scope)."
  value       = azurerm_storage_container.payloads.id
}

output "secret_ids" {
  description = "Versionless Key Vault secret IDs: database-url, redis-url, redis-password, stream-signing-key, stream-signing-previous-keys, webhook-secrets. Versionless so a rotated secret is picked up without a redeploy."
  value       = { for k, s in azurerm_key_vault_secret.this : k => s.versionless_id }
}
