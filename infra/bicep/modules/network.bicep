// One VNet (Azure Verified Module), an NSG per subnet, and the private DNS zones (Azure Verified
// Module) linked to the VNet. Same layout as infra/terraform/modules/network.

param name string
param location string
param tags object
param addressSpace string
param subnetPrefixes object

var roles = [
  'functions'
  'apps'
  'postgres'
  'endpoints'
]

// Flex Consumption VNet integration and the Container Apps environment both need a subnet
// delegated to Microsoft.App/environments, each its own.
var delegations = {
  functions: 'Microsoft.App/environments'
  apps: 'Microsoft.App/environments'
  postgres: 'Microsoft.DBforPostgreSQL/flexibleServers'
  endpoints: ''
}

resource nsgs 'Microsoft.Network/networkSecurityGroups@2024-05-01' = [
  for role in roles: {
    name: 'nsg-${name}-${role}'
    location: location
    tags: tags
    properties: {
      securityRules: []
    }
  }
]

module vnet 'br/public:avm/res/network/virtual-network:0.7.1' = {
  name: 'vnet-${name}'
  params: {
    name: 'vnet-${name}'
    location: location
    tags: tags
    addressPrefixes: [
      addressSpace
    ]
    subnets: [
      for (role, i) in roles: {
        name: 'snet-${role}'
        addressPrefix: subnetPrefixes[role]
        networkSecurityGroupResourceId: nsgs[i].id
        delegation: empty(delegations[role]) ? null : delegations[role]
        // Policies on for the endpoints subnet so NSG rules also apply to private endpoints.
        privateEndpointNetworkPolicies: role == 'endpoints' ? 'Enabled' : 'Disabled'
      }
    ]
  }
}

// Fixed order: outputs below index into it.
var zones = [
  {
    key: 'vault'
    zone: 'privatelink.vaultcore.azure.net'
  }
  {
    key: 'redis'
    zone: 'privatelink.redis.cache.windows.net'
  }
  {
    key: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    key: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    key: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    // VNet-injected PostgreSQL flexible servers need a zone ending in .postgres.database.azure.com.
    key: 'postgres'
    zone: '${name}.private.postgres.database.azure.com'
  }
]

module dnsZones 'br/public:avm/res/network/private-dns-zone:0.8.0' = [
  for z in zones: {
    name: 'dns-${z.key}-${name}'
    params: {
      name: z.zone
      location: 'global'
      tags: tags
      virtualNetworkLinks: [
        {
          virtualNetworkResourceId: vnet.outputs.resourceId
          registrationEnabled: false
        }
      ]
    }
  }
]

output vnetId string = vnet.outputs.resourceId

output subnetIds object = {
  functions: vnet.outputs.subnetResourceIds[0]
  apps: vnet.outputs.subnetResourceIds[1]
  postgres: vnet.outputs.subnetResourceIds[2]
  endpoints: vnet.outputs.subnetResourceIds[3]
}

output privateDnsZoneIds object = {
  vault: dnsZones[0].outputs.resourceId
  redis: dnsZones[1].outputs.resourceId
  blob: dnsZones[2].outputs.resourceId
  queue: dnsZones[3].outputs.resourceId
  table: dnsZones[4].outputs.resourceId
  postgres: dnsZones[5].outputs.resourceId
}
