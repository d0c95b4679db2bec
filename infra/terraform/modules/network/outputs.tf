output "vnet_id" {
  value = azurerm_virtual_network.this.id
}

output "subnet_ids" {
  description = "Subnet IDs by role: functions, apps, postgres, endpoints."
  value       = { for k, s in azurerm_subnet.this : k => s.id }
  # The NSG and NAT associations must exist before anything is placed in a subnet.
  depends_on = [azurerm_subnet_network_security_group_association.this, azurerm_subnet_nat_gateway_association.egress]
}

output "private_dns_zone_ids" {
  description = "Private DNS zone IDs by service: vault, redis, blob, queue, table, postgres."
  value       = { for k, z in azurerm_private_dns_zone.this : k => z.id }
  # Links first: a zone nobody resolves through is useless to the resources that need it.
  depends_on = [azurerm_private_dns_zone_virtual_network_link.this]
}

output "egress_ip" {
  description = "Public IP of all outbound traffic from the function app and the workers."
  value       = azurerm_public_ip.egress.ip_address
}
