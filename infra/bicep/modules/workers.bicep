// Celery workers (one Container App per queue, KEDA `postgresql` scale rule on the pool's load), the
// reaper (exactly one replica) and the migration job, in a VNet-integrated, internal-only Container
// Apps environment. Same design as infra/terraform/modules/workers.

param name string
param location string
param tags object
param subnetId string
param zoneRedundant bool
param logAnalyticsWorkspaceName string
param appInsightsConnectionString string
param keyVaultName string
param storageAccountName string
param image string
param containerRegistryServer string

@description('Versionless Key Vault secret URIs: databaseUrl, redisUrl, webhookSecrets (the reaper\'s; redisPassword is not used here).')
param secretUris object

@description('Non-secret TASKLIFT_* settings as [{name, value}].')
param taskliftEnv array

@description('terminationGracePeriodSeconds: TASKLIFT_SOFT_SHUTDOWN_SECONDS + margin.')
@maxValue(600)
param terminationGraceSeconds int

@description('Pool per queue: {queue, cpu (string), memory, concurrency, minReplicas, maxReplicas}.')
param pools object

var roles = {
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}-workers'
  location: location
  tags: tags
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource payloads 'containers' existing = {
      name: 'payloads'
    }
  }
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsWorkspaceName
}

// Container Apps resolve Key Vault references when a revision is created: the role must exist first.
resource keyVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// Workers read large inputs and write large results (claim check).
resource payloadsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobService::payloads.id, identity.id, roles.storageBlobDataContributor)
  scope: storage::blobService::payloads
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: 'cae-${name}'
  location: location
  tags: tags
  properties: {
    infrastructureResourceGroup: 'rg-${name}-cae-infra'
    zoneRedundant: zoneRedundant
    vnetConfiguration: {
      infrastructureSubnetId: subnetId
      // Nothing here takes inbound traffic.
      internal: true
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

var secrets = [
  {
    name: 'database-url'
    keyVaultUrl: secretUris.databaseUrl
    identity: identity.id
  }
  {
    name: 'redis-url'
    keyVaultUrl: secretUris.redisUrl
    identity: identity.id
  }
]

// tasklift.store.scaling.POOL_LOAD_QUERY, byte for byte (tests/infra/test_queues.py): the pool's
// RUNNING tasks + its PENDING tasks that are due. {queue} is replaced by the pool's queue.
var poolLoadQuery = '''SELECT (SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND queue = '{queue}') + (SELECT count(*) FROM task_outbox WHERE queue = '{queue}' AND (intent_seq = 1 OR published_at IS NOT NULL OR available_at <= now()))'''

var secretEnv = [
  {
    name: 'TASKLIFT_DATABASE_URL'
    secretRef: 'database-url'
  }
  {
    name: 'TASKLIFT_REDIS_URL'
    secretRef: 'redis-url'
  }
]

// The reaper alone sends completion webhooks, so it alone gets their signing secrets.
var reaperSecrets = concat(secrets, [
  {
    name: 'webhook-secrets'
    keyVaultUrl: secretUris.webhookSecrets
    identity: identity.id
  }
])

var reaperSecretEnv = concat(secretEnv, [
  {
    name: 'TASKLIFT_WEBHOOK_SECRETS'
    secretRef: 'webhook-secrets'
  }
])

var privateRegistry = [
  {
    server: containerRegistryServer
    identity: identity.id
  }
]

var registries = empty(containerRegistryServer) ? [] : privateRegistry

var telemetryEnv = [
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
]

resource workerApps 'Microsoft.App/containerApps@2025-01-01' = [
  for pool in items(pools): {
    name: '${name}-worker-${pool.key}'
    location: location
    tags: tags
    identity: {
      type: 'UserAssigned'
      userAssignedIdentities: {
        '${identity.id}': {}
      }
    }
    properties: {
      environmentId: environment.id
      workloadProfileName: 'Consumption'
      configuration: {
        activeRevisionsMode: 'Single'
        secrets: secrets
        registries: registries
      }
      template: {
        // SIGTERM (scale-in, new revision) starts the worker's soft shutdown: running tasks get
        // TASKLIFT_SOFT_SHUTDOWN_SECONDS, then are handed back to the queue (PENDING, not failed);
        // the platform waits this long before SIGKILL.
        terminationGracePeriodSeconds: terminationGraceSeconds
        containers: [
          {
            name: 'worker'
            image: image
            command: [
              'tasklift'
              'worker'
              '--queues'
              pool.value.queue
              '--concurrency'
              string(pool.value.concurrency)
            ]
            env: concat(taskliftEnv, secretEnv, telemetryEnv, [
              {
                name: 'TASKLIFT_WORKER_CONCURRENCY'
                value: string(pool.value.concurrency)
              }
              {
                name: 'OTEL_SERVICE_NAME'
                value: 'tasklift-worker-${pool.key}'
              }
            ])
            resources: {
              cpu: json(pool.value.cpu)
              memory: pool.value.memory
            }
          }
        ]
        scale: {
          minReplicas: pool.value.minReplicas
          maxReplicas: pool.value.maxReplicas
          // Poll every 15 s; back to zero only after five minutes in which nothing ran or waited.
          pollingInterval: 15
          cooldownPeriod: 300
          rules: [
            {
              // Desired replicas = ceil(load / concurrency), load = the pool's RUNNING + due PENDING
              // tasks from PostgreSQL: a pool never reads idle while one of its tasks runs.
              name: 'postgresql-${pool.key}'
              custom: {
                type: 'postgresql'
                metadata: {
                  query: replace(poolLoadQuery, '{queue}', pool.value.queue)
                  targetQueryValue: string(pool.value.concurrency)
                  activationTargetQueryValue: '0'
                }
                auth: [
                  {
                    secretRef: 'database-url'
                    triggerParameter: 'connection'
                  }
                ]
              }
            }
          ]
        }
      }
    }
    dependsOn: [
      keyVaultRole
      payloadsRole
    ]
  }
]

// Outbox dispatcher + lease reaper + cleanup: exactly one replica.
resource reaper 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${name}-reaper'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      secrets: reaperSecrets
      registries: registries
    }
    template: {
      terminationGracePeriodSeconds: terminationGraceSeconds
      containers: [
        {
          name: 'reaper'
          image: image
          command: [
            'tasklift'
            'reaper'
          ]
          env: concat(taskliftEnv, reaperSecretEnv, telemetryEnv, [
            {
              name: 'OTEL_SERVICE_NAME'
              value: 'tasklift-reaper'
            }
          ])
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
  dependsOn: [
    keyVaultRole
  ]
}

// `tasklift migrate`, started by hand (or by the pipeline) after each image rollout:
//   az containerapp job start -g <rg> -n <name>-migrate
resource migrate 'Microsoft.App/jobs@2025-01-01' = {
  name: '${name}-migrate'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Manual'
      replicaTimeout: 1800
      replicaRetryLimit: 1
      manualTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
      }
      secrets: [
        secrets[0]
      ]
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'migrate'
          image: image
          command: [
            'tasklift'
            'migrate'
          ]
          env: [
            secretEnv[0]
            {
              name: 'TASKLIFT_LOG_FORMAT'
              value: 'json'
            }
          ]
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
        }
      ]
    }
  }
  dependsOn: [
    keyVaultRole
  ]
}

output environmentId string = environment.id
output workerAppNames array = [for pool in items(pools): '${name}-worker-${pool.key}']
output reaperAppName string = reaper.name
output migrateJobName string = migrate.name
output identityPrincipalId string = identity.properties.principalId
