# One VNet: two subnets delegated to Microsoft.App/environments (the Flex Consumption function app's
# VNet integration, and the Container Apps environment; neither may share its subnet), one delegated
# to PostgreSQL Flexible Server (VNet injection), one for private endpoints. Each subnet has an NSG.
# Private DNS zones resolve the data services to their private addresses inside the VNet. A NAT
# gateway gives the two compute subnets their internet egress (Application Insights ingestion, the
# tasks' own calls) through one stable public IP.

locals {
  delegations = {
    functions = "Microsoft.App/environments"
    apps      = "Microsoft.App/environments"
    postgres  = "Microsoft.DBforPostgreSQL/flexibleServers"
  }

  # Zone names are fixed by the platform (privatelink.* per service). The PostgreSQL zone is ours:
  # VNet-injected flexible servers need a zone ending in .postgres.database.azure.com.
  private_dns_zones = {
    vault    = "privatelink.vaultcore.azure.net"
    redis    = "privatelink.redis.cache.windows.net"
    blob     = "privatelink.blob.core.windows.net"
    queue    = "privatelink.queue.core.windows.net"
    table    = "privatelink.table.core.windows.net"
    postgres = "${var.name}.private.postgres.database.azure.com"
  }
}

resource "azurerm_virtual_network" "this" {
  name                = "vnet-${var.name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  address_space       = var.address_space
  tags                = var.tags
}

resource "azurerm_subnet" "this" {
  for_each = var.subnet_prefixes

  name                 = "snet-${each.key}"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [each.value]

  # Outbound goes through the platforms' own egress (VNet integration / Container Apps); no
  # implicit default outbound IPs on a subnet (retired for new VNets by Azure).
  default_outbound_access_enabled = false

  # Network policies on the endpoints subnet so NSG rules also apply to private endpoints.
  private_endpoint_network_policies = each.key == "endpoints" ? "Enabled" : "Disabled"

  dynamic "delegation" {
    for_each = contains(keys(local.delegations), each.key) ? [local.delegations[each.key]] : []
    content {
      name = "delegation"
      service_delegation {
        name    = delegation.value
        actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
      }
    }
  }
}

# Default NSG rules already allow VNet-to-VNet and deny inbound from the internet; the explicit
# NSG is there so rules can be added per subnet without re-creating anything.
resource "azurerm_network_security_group" "this" {
  for_each = var.subnet_prefixes

  name                = "nsg-${var.name}-${each.key}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_subnet_network_security_group_association" "this" {
  for_each = var.subnet_prefixes

  subnet_id                 = azurerm_subnet.this[each.key].id
  network_security_group_id = azurerm_network_security_group.this[each.key].id
}

# Subnets have no default outbound access, and the function app routes all outbound traffic into
# the VNet: without this, nothing could reach the internet. One static IP to allowlist elsewhere.
resource "azurerm_public_ip" "egress" {
  name                = "pip-${var.name}-egress"
  location            = var.location
  resource_group_name = var.resource_group_name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

resource "azurerm_nat_gateway" "egress" {
  name                    = "ng-${var.name}"
  location                = var.location
  resource_group_name     = var.resource_group_name
  sku_name                = "Standard"
  idle_timeout_in_minutes = 10
  tags                    = var.tags
}

resource "azurerm_nat_gateway_public_ip_association" "egress" {
  nat_gateway_id       = azurerm_nat_gateway.egress.id
  public_ip_address_id = azurerm_public_ip.egress.id
}

resource "azurerm_subnet_nat_gateway_association" "egress" {
  for_each = toset(["functions", "apps"])

  subnet_id      = azurerm_subnet.this[each.key].id
  nat_gateway_id = azurerm_nat_gateway.egress.id
}

resource "azurerm_private_dns_zone" "this" {
  for_each = local.private_dns_zones

  name                = each.value
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  for_each = local.private_dns_zones

  name                  = "link-${each.key}"
  resource_group_name   = var.resource_group_name
  private_dns_zone_name = azurerm_private_dns_zone.this[each.key].name
  virtual_network_id    = azurerm_virtual_network.this.id
  registration_enabled  = false
  tags                  = var.tags
}
