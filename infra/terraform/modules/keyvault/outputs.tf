output "id" {
  value = azurerm_key_vault.this.id
}

output "name" {
  value = azurerm_key_vault.this.name
}

output "uri" {
  value = azurerm_key_vault.this.vault_uri
}

output "secrets_key_vault_id" {
  description = "The vault ID, released only after the deployer's role has propagated: use it where secrets are written."
  value       = azurerm_key_vault.this.id
  depends_on  = [time_sleep.rbac_propagation]
}
