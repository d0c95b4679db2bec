// tasklift on Azure, the Bicep route: the same topology as infra/terraform (read its README.md for
// the reasoning). Deploy into an existing resource group:
//   az deployment group create -g rg-tasklift-prod -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
// Differences from Terraform, on purpose: the Key Vault secrets are written through ARM (control
// plane), so the vault never needs a public data-plane endpoint; the function app resolves Key Vault
// references with its user-assigned identity (keyVaultReferenceIdentity).

targetScope = 'resourceGroup'

// --- where -------------------------------------------------------------------------------------

@description('Azure region (must offer Flex Consumption and Container Apps workload profiles).')
param location string = resourceGroup().location

@description('Short workload name: the first part of every resource name.')
@minLength(2)
@maxLength(12)
param name string = 'tasklift'

@description('Environment name (dev, test, prod...).')
@minLength(1)
@maxLength(8)
param environmentName string = 'prod'

@description('Extra tags for every resource.')
param tags object = {}

@description('VNet address space.')
param addressSpace string = '10.40.0.0/16'

@description('Subnet ranges: functions and apps are delegated to Microsoft.App/environments, postgres to PostgreSQL Flexible Server; endpoints holds the private endpoints.')
param subnetPrefixes object = {
  functions: '10.40.1.0/24'
  apps: '10.40.2.0/23'
  postgres: '10.40.4.0/24'
  endpoints: '10.40.5.0/24'
}

// --- image -------------------------------------------------------------------------------------

@description('The tasklift image (repository Dockerfile), pinned by digest.')
param image string

@description('Login server of a private registry (e.g. myacr.azurecr.io), pulled with the workers\' identity; grant it AcrPull (docs/deploy.md). Empty = public registry.')
param containerRegistryServer string = ''

// --- secrets -----------------------------------------------------------------------------------

@description('Password of the PostgreSQL administrator; URL-safe characters. Comes from the environment (main.bicepparam), never from a file.')
@secure()
@minLength(24)
param postgresAdminPassword string

@description('TASKLIFT_STREAM_SIGNING_KEY: HMAC key of the API\'s stream links, at least 32 random characters. Comes from the environment (main.bicepparam); stored in Key Vault.')
@secure()
@minLength(32)
param streamSigningKey string

@description('TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS: keys still accepted while rotating, as a JSON list (e.g. ["<old key>"]). Empty = none. Comes from the environment; stored in Key Vault.')
@secure()
param streamSigningPreviousKeys string = ''

@description('TASKLIFT_WEBHOOK_SECRETS: signing secrets of completion webhooks, sent by the reaper alone: whsec_<base64>, comma-separated (rotation: the new one first, then the old one until receivers switch). Comes from the environment (main.bicepparam); stored in Key Vault.')
@secure()
@minLength(38)
param webhookSecrets string

// --- tasklift settings (env TASKLIFT_*) --------------------------------------------------------

@description('TASKLIFT_LOG_LEVEL.')
param logLevel string = 'INFO'

@description('TASKLIFT_DB_POOL_SIZE: SQLAlchemy pool per process (docs/sizing.md).')
param dbPoolSize int = 5

@description('TASKLIFT_LEASE_SECONDS.')
param leaseSeconds int = 30

@description('TASKLIFT_HEARTBEAT_SECONDS.')
param heartbeatSeconds int = 1

@description('TASKLIFT_SOFT_SHUTDOWN_SECONDS: on SIGTERM a worker lets running tasks finish this long.')
@maxValue(570)
param softShutdownSeconds int = 300

@description('Seconds the platform waits beyond the soft shutdown before SIGKILL.')
@minValue(10)
@maxValue(300)
param shutdownMarginSeconds int = 30

@description('TASKLIFT_BROKER_VISIBILITY_TIMEOUT: longer than the longest task.')
param brokerVisibilityTimeout int = 43200

@description('TASKLIFT_ANONYMOUS: accept unauthenticated requests. Keep false outside a sandbox.')
param anonymous bool = false

@description('TASKLIFT_OIDC_ISSUER: accept OIDC bearer tokens from this issuer. Empty = API keys only.')
param oidcIssuer string = ''

@description('TASKLIFT_OIDC_AUDIENCE: the aud claim tokens must carry. Empty = API keys only.')
param oidcAudience string = ''

@description('TASKLIFT_PUBLIC_URL. Empty = https://<function app>.azurewebsites.net.')
param publicUrl string = ''

// --- sizing ------------------------------------------------------------------------------------

@description('Worker pool per queue (docs/sizing.md). cpu is a string because Bicep has no float literals.')
param workerPools object = {
  cpu: {
    cpu: '2.0'
    memory: '4Gi'
    concurrency: 2
    minReplicas: 0
    maxReplicas: 10
  }
  io: {
    cpu: '1.0'
    memory: '2Gi'
    concurrency: 8
    minReplicas: 1
    maxReplicas: 10
  }
}

@description('Spread the Container Apps environment over availability zones.')
param workersZoneRedundant bool = false

@description('Flex Consumption scale-out ceiling (40-1000).')
@minValue(40)
@maxValue(1000)
param functionsMaximumInstanceCount int = 100

@description('Always-ready instances of the HTTP trigger group (0 = scale to zero).')
param functionsAlwaysReady int = 1

@description('Flex Consumption instance memory.')
@allowed([
  2048
  4096
])
param functionsInstanceMemoryMB int = 2048

@description('PostgreSQL SKU name and tier.')
param postgresSku object = {
  name: 'Standard_D2ds_v5'
  tier: 'GeneralPurpose'
}

@description('PostgreSQL storage (GiB).')
param postgresStorageGB int = 64

@description('Point-in-time-restore window.')
@minValue(7)
@maxValue(35)
param postgresBackupRetentionDays int = 14

@description('Zone-redundant high availability (hot standby in another zone).')
param postgresZoneRedundantHa bool = false

@description('Geo-redundant backups (creation only): PostgreSQL is the system of record.')
param postgresGeoRedundantBackup bool = true

@description('Azure Cache for Redis SKU.')
@allowed([
  'Standard'
  'Premium'
])
param redisSku string = 'Standard'

@description('Azure Cache for Redis size.')
param redisCapacity int = 1

@description('Log Analytics retention.')
param logRetentionDays int = 30

// --- derived -----------------------------------------------------------------------------------

var base = '${name}-${environmentName}'
var suffix = substring(uniqueString(resourceGroup().id, name, environmentName), 0, 5)
var flat = '${name}${environmentName}${suffix}'
var allTags = union(tags, {
  workload: 'tasklift'
  environment: environmentName
  'managed-by': 'bicep'
})
var functionAppName = '${base}-func-${suffix}'

// The Celery queues are Redis lists with these exact names: a contract between the code
// (Settings.cpu_queue / io_queue) and the KEDA scale rules. tests/infra checks both ends.
var cpuQueue = 'tasklift.cpu'
var ioQueue = 'tasklift.io'

// The platform waits longer than the soft shutdown before SIGKILL (Container Apps caps it at 600).
var terminationGraceSeconds = softShutdownSeconds + shutdownMarginSeconds

// Every process: non-secret settings. Names are Settings fields, upper-cased.
var taskliftEnv = [
  {
    name: 'TASKLIFT_CPU_QUEUE'
    value: cpuQueue
  }
  {
    name: 'TASKLIFT_IO_QUEUE'
    value: ioQueue
  }
  {
    name: 'TASKLIFT_DATA_DIR'
    value: '/tmp/tasklift'
  }
  {
    name: 'TASKLIFT_DB_POOL_SIZE'
    value: string(dbPoolSize)
  }
  {
    name: 'TASKLIFT_LEASE_SECONDS'
    value: string(leaseSeconds)
  }
  {
    name: 'TASKLIFT_HEARTBEAT_SECONDS'
    value: string(heartbeatSeconds)
  }
  {
    name: 'TASKLIFT_LOG_LEVEL'
    value: logLevel
  }
  {
    name: 'TASKLIFT_LOG_FORMAT'
    value: 'json'
  }
]

// The HTTP side only.
var apiEnv = [
  {
    name: 'TASKLIFT_PUBLIC_URL'
    value: empty(publicUrl) ? 'https://${functionAppName}.azurewebsites.net' : publicUrl
  }
  {
    name: 'TASKLIFT_ANONYMOUS'
    value: anonymous ? 'true' : 'false'
  }
  {
    // OIDC bearer tokens besides API keys: both set = on, empty = off (docs/security.md).
    name: 'TASKLIFT_OIDC_ISSUER'
    value: oidcIssuer
  }
  {
    name: 'TASKLIFT_OIDC_AUDIENCE'
    value: oidcAudience
  }
]

// The worker side only (TASKLIFT_WORKER_CONCURRENCY is per pool, in modules/workers.bicep).
var workerEnv = [
  {
    name: 'TASKLIFT_SOFT_SHUTDOWN_SECONDS'
    value: string(softShutdownSeconds)
  }
  {
    name: 'TASKLIFT_BROKER_VISIBILITY_TIMEOUT'
    value: string(brokerVisibilityTimeout)
  }
]

// --- modules -----------------------------------------------------------------------------------

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    name: base
    location: location
    tags: allTags
    addressSpace: addressSpace
    subnetPrefixes: subnetPrefixes
  }
}

module observability 'modules/observability.bicep' = {
  name: 'observability'
  params: {
    name: base
    location: location
    tags: allTags
    retentionDays: logRetentionDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${flat}'
    location: location
    tags: allTags
    endpointSubnetId: network.outputs.subnetIds.endpoints
    privateDnsZoneId: network.outputs.privateDnsZoneIds.vault
    logAnalyticsWorkspaceId: observability.outputs.workspaceId
  }
}

module data 'modules/data.bicep' = {
  name: 'data'
  params: {
    name: base
    flatName: flat
    location: location
    tags: allTags
    postgresSubnetId: network.outputs.subnetIds.postgres
    endpointSubnetId: network.outputs.subnetIds.endpoints
    privateDnsZoneIds: network.outputs.privateDnsZoneIds
    keyVaultName: keyVault.outputs.name
    logAnalyticsWorkspaceId: observability.outputs.workspaceId
    postgresAdminPassword: postgresAdminPassword
    streamSigningKey: streamSigningKey
    streamSigningPreviousKeys: streamSigningPreviousKeys
    webhookSecrets: webhookSecrets
    postgresSku: postgresSku
    postgresStorageGB: postgresStorageGB
    postgresBackupRetentionDays: postgresBackupRetentionDays
    postgresZoneRedundantHa: postgresZoneRedundantHa
    postgresGeoRedundantBackup: postgresGeoRedundantBackup
    redisSku: redisSku
    redisCapacity: redisCapacity
  }
}

module functions 'modules/functions.bicep' = {
  name: 'functions'
  params: {
    name: functionAppName
    location: location
    tags: allTags
    subnetId: network.outputs.subnetIds.functions
    storageAccountName: data.outputs.storageAccountName
    keyVaultName: keyVault.outputs.name
    appInsightsConnectionString: observability.outputs.appInsightsConnectionString
    maximumInstanceCount: functionsMaximumInstanceCount
    alwaysReady: functionsAlwaysReady
    instanceMemoryMB: functionsInstanceMemoryMB
    taskliftEnv: concat(taskliftEnv, apiEnv)
    secretUris: data.outputs.secretUris
  }
}

module workers 'modules/workers.bicep' = {
  name: 'workers'
  params: {
    name: base
    location: location
    tags: allTags
    subnetId: network.outputs.subnetIds.apps
    zoneRedundant: workersZoneRedundant
    logAnalyticsWorkspaceName: observability.outputs.workspaceName
    appInsightsConnectionString: observability.outputs.appInsightsConnectionString
    keyVaultName: keyVault.outputs.name
    storageAccountName: data.outputs.storageAccountName
    image: image
    containerRegistryServer: containerRegistryServer
    secretUris: data.outputs.secretUris
    taskliftEnv: concat(taskliftEnv, workerEnv)
    terminationGraceSeconds: terminationGraceSeconds
    // One pool per queue; `queue` feeds both the worker's --queues and the KEDA load query.
    pools: {
      cpu: union(workerPools.cpu, {
        queue: cpuQueue
      })
      io: union(workerPools.io, {
        queue: ioQueue
      })
    }
  }
}

// --- outputs -----------------------------------------------------------------------------------

output apiUrl string = 'https://${functions.outputs.defaultHostName}'
output functionAppName string = functions.outputs.name
output workerAppNames array = workers.outputs.workerAppNames
output reaperAppName string = workers.outputs.reaperAppName
output migrateJobName string = workers.outputs.migrateJobName
output workersIdentityPrincipalId string = workers.outputs.identityPrincipalId
output keyVaultName string = keyVault.outputs.name
output storageAccountName string = data.outputs.storageAccountName
output egressIp string = network.outputs.egressIp
output queues object = {
  cpu: cpuQueue
  io: ioQueue
}
