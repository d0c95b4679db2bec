output "id" {
  value = azurerm_key_vault.this.id
}

output "uri" {
  value = azurerm_key_vault.this.vault_uri
}

output "secrets_writable" {
  description = "Becomes known once the deployer's role has propagated; modules that write secrets depend on it."
  value       = time_sleep.rbac_propagation.id
}
