// The HTTP endpoints on Azure Functions, Flex Consumption plan (why: infra/terraform/README.md).
// One user-assigned identity (Azure Verified Module) does everything: host storage, the deployment
// package, and Key Vault references (keyVaultReferenceIdentity); its roles exist before the app.

param name string
param location string
param tags object
param subnetId string
param storageAccountName string
param keyVaultName string
param appInsightsConnectionString string
param maximumInstanceCount int
param alwaysReady int
param instanceMemoryMB int

@description('Non-secret TASKLIFT_* settings as [{name, value}].')
param taskliftEnv array

@description('Versionless Key Vault secret URIs: databaseUrl, redisUrl, streamSigningKey, streamSigningPreviousKeys.')
param secretUris object

var identityName = 'id-${name}'
// Known at deployment start (unlike the module output), so it can key userAssignedIdentities.
var identityResourceId = resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', identityName)

// Built-in role definition IDs.
var roles = {
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

var storageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: identityName
  params: {
    name: identityName
    location: location
    tags: tags
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Identity-based AzureWebJobsStorage needs blob, queue and table data roles; blob owner also covers
// the deployment package and the large-payload container.
resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoles: {
    name: guid(storage.id, identityName, roleId)
    scope: storage
    properties: {
      principalId: identity.outputs.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource keyVaultRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityName, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'asp-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    // Flex Consumption zone redundancy is a plan property; instance counts are platform-managed.
    // Always on: deploy to a region with availability zones (Terraform: functions_zone_redundant).
    zoneRedundant: true
  }
}

// Secret settings are Key Vault references, resolved by the platform with the user identity.
var secretSettings = [
  {
    name: 'TASKLIFT_DATABASE_URL'
    value: '@Microsoft.KeyVault(SecretUri=${secretUris.databaseUrl})'
  }
  {
    name: 'TASKLIFT_REDIS_URL'
    value: '@Microsoft.KeyVault(SecretUri=${secretUris.redisUrl})'
  }
  {
    // The API alone signs and checks stream links; the workers never see these two.
    name: 'TASKLIFT_STREAM_SIGNING_KEY'
    value: '@Microsoft.KeyVault(SecretUri=${secretUris.streamSigningKey})'
  }
  {
    name: 'TASKLIFT_STREAM_SIGNING_PREVIOUS_KEYS'
    value: '@Microsoft.KeyVault(SecretUri=${secretUris.streamSigningPreviousKeys})'
  }
]

var hostSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.outputs.clientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    // Required by the HTTP streams extension (azurefunctions-extensions-http-fastapi) for SSE.
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
  {
    name: 'OTEL_SERVICE_NAME'
    value: 'tasklift-api'
  }
]

// Always-ready instances of the HTTP trigger group keep the submit/status path warm.
var alwaysReadyGroups = [
  {
    name: 'http'
    instanceCount: alwaysReady
  }
]

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Inbound stays public (this is the API); outbound goes through the VNet to private endpoints.
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: subnetId
    keyVaultReferenceIdentity: identityResourceId
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      ftpsState: 'Disabled'
      appSettings: concat(taskliftEnv, secretSettings, hostSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}deployments'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady > 0 ? alwaysReadyGroups : []
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    identity
    storageRoleAssignments
    keyVaultRoleAssignment
  ]
}

// No publishing with basic credentials (deploy with Entra ID: az functionapp deployment / func publish).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output identityPrincipalId string = identity.outputs.principalId
