output "environment_id" {
  value = azurerm_container_app_environment.this.id
}

output "worker_app_names" {
  value = { for k, a in azurerm_container_app.worker : k => a.name }
}

output "reaper_app_name" {
  value = azurerm_container_app.reaper.name
}

output "migrate_job_name" {
  value = azurerm_container_app_job.migrate.name
}

output "identity_principal_id" {
  value = azurerm_user_assigned_identity.this.principal_id
}
