// One VNet (Azure Verified Module), an NSG per subnet, a NAT gateway for the compute subnets'
// internet egress, and the private DNS zones (Azure Verified Module) linked to the VNet. Same
// layout as infra/terraform/modules/network.

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

// Subnets have no default outbound access and the function app routes all outbound traffic into
// the VNet: the NAT gateway is the way out (Application Insights, the tasks' own calls), one IP.
resource egressIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-${name}-egress'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
  }
}

resource natGateway 'Microsoft.Network/natGateways@2024-05-01' = {
  name: 'ng-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 10
    publicIpAddresses: [
      {
        id: egressIp.id
      }
    ]
  }
}

// Keys appear only where they apply (AVM sets whatever key is present). Flex Consumption VNet
// integration and the Container Apps environment both need a subnet delegated to
// Microsoft.App/environments, each its own; both egress through the NAT gateway. Order = roles.
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
      {
        name: 'snet-functions'
        addressPrefix: subnetPrefixes.functions
        networkSecurityGroupResourceId: nsgs[0].id
        delegation: 'Microsoft.App/environments'
        natGatewayResourceId: natGateway.id
      }
      {
        name: 'snet-apps'
        addressPrefix: subnetPrefixes.apps
        networkSecurityGroupResourceId: nsgs[1].id
        delegation: 'Microsoft.App/environments'
        natGatewayResourceId: natGateway.id
      }
      {
        name: 'snet-postgres'
        addressPrefix: subnetPrefixes.postgres
        networkSecurityGroupResourceId: nsgs[2].id
        delegation: 'Microsoft.DBforPostgreSQL/flexibleServers'
      }
      {
        name: 'snet-endpoints'
        addressPrefix: subnetPrefixes.endpoints
        networkSecurityGroupResourceId: nsgs[3].id
        // Policies on, so NSG rules also apply to private endpoints.
        privateEndpointNetworkPolicies: 'Enabled'
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
output egressIp string = egressIp.properties.ipAddress

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
