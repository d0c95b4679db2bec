output "name" {
  value = azurerm_function_app_flex_consumption.this.name
}

output "default_hostname" {
  value = azurerm_function_app_flex_consumption.this.default_hostname
}

output "principal_ids" {
  description = "Principals that act for the function app (system- and user-assigned)."
  value = {
    system = azurerm_function_app_flex_consumption.this.identity[0].principal_id
    user   = azurerm_user_assigned_identity.this.principal_id
  }
}
