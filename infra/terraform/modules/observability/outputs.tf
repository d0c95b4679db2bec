output "log_analytics_workspace_id" {
  value = azurerm_log_analytics_workspace.this.id
}

output "application_insights_connection_string" {
  description = "Ingestion connection string (not a credential for reading data, but kept out of logs)."
  value       = azurerm_application_insights.this.connection_string
  sensitive   = true
}
