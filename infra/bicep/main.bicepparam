// Parameters for main.bicep. Nothing secret is written here: the PostgreSQL password, the
// stream-signing key and the webhook secrets are read from the environment of whoever deploys (pipeline secrets), e.g.
//   export POSTGRES_ADMIN_PASSWORD="$(openssl rand -hex 24)"   # keep it in your secret store
//   export STREAM_SIGNING_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
//   export STREAM_SIGNING_PREVIOUS_KEYS='["<old key>"]'      # only while rotating
//   export WEBHOOK_SECRETS="$(python -c 'import base64,os;print("whsec_"+base64.b64encode(os.urandom(32)).decode())')"
//   # rotating webhooks: WEBHOOK_SECRETS='whsec_<new>,whsec_<old>' until receivers switch (docs/webhooks.md)
//   export APP_IMAGE=myregistry.azurecr.io/tasklift@sha256:<digest>
//   az deployment group create -g rg-tasklift-prod -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
using './main.bicep'

param location = 'westeurope'
param name = 'tasklift'
param environmentName = 'prod'

param image = readEnvironmentVariable('APP_IMAGE')
param containerRegistryServer = readEnvironmentVariable('APP_REGISTRY_SERVER', '')

param postgresAdminPassword = readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD')
param streamSigningKey = readEnvironmentVariable('STREAM_SIGNING_KEY')
param streamSigningPreviousKeys = readEnvironmentVariable('STREAM_SIGNING_PREVIOUS_KEYS', '')
param webhookSecrets = readEnvironmentVariable('WEBHOOK_SECRETS')

// docs/sizing.md derives these from arrival rate and task duration.
param workerPools = {
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
param softShutdownSeconds = 300
param shutdownMarginSeconds = 30
param dbPoolSize = 5

param postgresZoneRedundantHa = true
param redisSku = 'Standard'
param redisCapacity = 1
param functionsAlwaysReady = 1

param tags = {
  owner: 'platform-team'
}
