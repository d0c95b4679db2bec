// PostgreSQL Flexible Server (VNet-injected), Azure Cache for Redis (TLS only, private endpoint),
// the storage account (function host, deployment packages, large payloads), and the connection
// strings and the stream-signing keys in Key Vault. Same choices as infra/terraform/modules/data.

param name string
param flatName string
param location string
param tags object
param postgresSubnetId string
param endpointSubnetId string
param privateDnsZoneIds object
param keyVaultName string
param logAnalyticsWorkspaceId string

@secure()
param postgresAdminPassword string

@secure()
param streamSigningKey string

@description('JSON list; empty = none.')
@secure()
param streamSigningPreviousKeys string

@description('TASKLIFT_WEBHOOK_SECRETS of the reaper: whsec_<base64>, comma-separated.')
@secure()
param webhookSecrets string

param postgresSku object
param postgresStorageGB int
param postgresBackupRetentionDays int
param postgresZoneRedundantHa bool
param postgresGeoRedundantBackup bool
param redisSku string
param redisCapacity int

var postgresAdminLogin = 'tasklift_admin'

// Zone-redundant HA: a hot standby in zone 2 for the primary in zone 1.
var zoneRedundantHa = {
  mode: 'ZoneRedundant'
  standbyAvailabilityZone: '2'
}

var noHa = {
  mode: 'Disabled'
}

// --- PostgreSQL --------------------------------------------------------------------------------

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: 'psql-${flatName}'
  location: location
  tags: tags
  sku: postgresSku
  properties: {
    version: '16'
    administratorLogin: postgresAdminLogin
    administratorLoginPassword: postgresAdminPassword
    authConfig: {
      passwordAuth: 'Enabled'
      activeDirectoryAuth: 'Disabled'
    }
    availabilityZone: '1'
    storage: {
      storageSizeGB: postgresStorageGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: postgresBackupRetentionDays
      geoRedundantBackup: postgresGeoRedundantBackup ? 'Enabled' : 'Disabled'
    }
    highAvailability: postgresZoneRedundantHa ? zoneRedundantHa : noHa
    network: {
      delegatedSubnetResourceId: postgresSubnetId
      privateDnsZoneArmResourceId: privateDnsZoneIds.postgres
      publicNetworkAccess: 'Disabled'
    }
    maintenanceWindow: {
      customWindow: 'Enabled'
      dayOfWeek: 0
      startHour: 2
      startMinute: 0
    }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: postgres
  name: 'tasklift'
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

var postgresSettings = [
  {
    name: 'require_secure_transport'
    value: 'on'
  }
  {
    name: 'log_connections'
    value: 'on'
  }
  {
    name: 'log_disconnections'
    value: 'on'
  }
  {
    name: 'log_checkpoints'
    value: 'on'
  }
  {
    name: 'connection_throttle.enable'
    value: 'on'
  }
]

// One at a time: the server rejects concurrent configuration updates (ServerIsBusy).
@batchSize(1)
resource postgresConfig 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = [
  for setting in postgresSettings: {
    parent: postgres
    name: setting.name
    properties: {
      value: setting.value
      source: 'user-override'
    }
    dependsOn: [
      database
    ]
  }
]

resource postgresDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: postgres
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

// --- Redis -------------------------------------------------------------------------------------

resource redis 'Microsoft.Cache/redis@2024-11-01' = {
  name: 'redis-${flatName}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: redisSku
      family: redisSku == 'Premium' ? 'P' : 'C'
      capacity: redisCapacity
    }
    redisVersion: '6'
    // TLS only (6380), TLS 1.2+, private endpoint only.
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Disabled'
    redisConfiguration: {
      // A broker must refuse writes when full, never evict queued tasks.
      'maxmemory-policy': 'noeviction'
    }
  }
}

module redisEndpoint 'privateEndpoint.bicep' = {
  name: 'pe-redis-${name}'
  params: {
    name: 'pe-redis-${name}'
    location: location
    tags: tags
    subnetId: endpointSubnetId
    serviceId: redis.id
    groupId: 'redisCache'
    privateDnsZoneId: privateDnsZoneIds.redis
  }
}

// --- Storage -----------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take('st${flatName}', 24)
  location: location
  tags: tags
  kind: 'StorageV2'
  // GZRS: task results in `payloads` are not reproducible; zone- and geo-redundant. A literal on
  // purpose (not a parameter): the policy scan evaluates it as written.
  sku: {
    name: 'Standard_GZRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Entra ID only: the function host, deployments and tasklift use managed identities.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Resource logs of the blob, queue and table services (Azure Monitor).
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

// `payloads`: large task inputs/results (claim check). `deployments`: the function app package.
var containerNames = [
  'payloads'
  'deployments'
]

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in containerNames: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

// The Functions host uses blobs (keys, leases), queues and tables; tasklift uses blobs.
var storageServices = [
  'blob'
  'queue'
  'table'
]

module storageEndpoints 'privateEndpoint.bicep' = [
  for service in storageServices: {
    name: 'pe-st-${service}-${name}'
    params: {
      name: 'pe-st-${service}-${name}'
      location: location
      tags: tags
      subnetId: endpointSubnetId
      serviceId: storage.id
      groupId: service
      privateDnsZoneId: privateDnsZoneIds[service]
    }
  }
]

// --- secrets -----------------------------------------------------------------------------------

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// sslmode=require: Flexible Server enforces TLS. rediss:// on the TLS port; Celery refuses a rediss://
// broker URL without ssl_cert_reqs, and "required" verifies the Azure certificate.
resource databaseUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-database-url'
  tags: tags
  properties: {
    contentType: 'text/plain'
    value: 'postgresql://${postgresAdminLogin}:${uriComponent(postgresAdminPassword)}@${postgres.properties.fullyQualifiedDomainName}:5432/${database.name}?sslmode=require'
  }
}

resource redisUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-redis-url'
  tags: tags
  properties: {
    contentType: 'text/plain'
    value: 'rediss://:${uriComponent(redis.listKeys().primaryKey)}@${redis.properties.hostName}:${redis.properties.sslPort}/0?ssl_cert_reqs=required'
  }
}

// The bare Redis password, for clients that take it apart from the URL (KEDA scales on PostgreSQL).
resource redisPassword 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-redis-password'
  tags: tags
  properties: {
    contentType: 'text/plain'
    value: redis.listKeys().primaryKey
  }
}

// The API's stream-link keys: the signing key, and the keys still accepted while rotating.
resource streamSigningKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-stream-signing-key'
  tags: tags
  properties: {
    contentType: 'text/plain'
    value: streamSigningKey
  }
}

resource streamSigningPreviousKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-stream-signing-previous-keys'
  tags: tags
  properties: {
    contentType: 'application/json'
    value: empty(streamSigningPreviousKeys) ? '[]' : streamSigningPreviousKeys
  }
}

// The reaper's completion-webhook signing secrets (comma-separated; rotation: docs/webhooks.md).
resource webhookSecretsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tasklift-webhook-secrets'
  tags: tags
  properties: {
    contentType: 'text/plain'
    value: webhookSecrets
  }
}

output redisHostName string = redis.properties.hostName
output redisSslPort int = redis.properties.sslPort
output postgresFqdn string = postgres.properties.fullyQualifiedDomainName
output storageAccountName string = storage.name
output storageAccountId string = storage.id

// Versionless secret URIs (properties.secretUri), so a rotated secret is picked up without redeploy.
output secretUris object = {
  databaseUrl: databaseUrl.properties.secretUri
  redisUrl: redisUrl.properties.secretUri
  redisPassword: redisPassword.properties.secretUri
  streamSigningKey: streamSigningKeySecret.properties.secretUri
  streamSigningPreviousKeys: streamSigningPreviousKeysSecret.properties.secretUri
  webhookSecrets: webhookSecretsSecret.properties.secretUri
}
