// Log Analytics + workspace-based Application Insights (Azure Verified Modules).

param name string
param location string
param tags object
param retentionDays int

module workspace 'br/public:avm/res/operational-insights/workspace:0.12.0' = {
  name: 'log-${name}'
  params: {
    name: 'log-${name}'
    location: location
    tags: tags
    skuName: 'PerGB2018'
    dataRetention: retentionDays
  }
}

module appInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'appi-${name}'
  params: {
    name: 'appi-${name}'
    location: location
    tags: tags
    workspaceResourceId: workspace.outputs.resourceId
    applicationType: 'web'
    retentionInDays: retentionDays
  }
}

output workspaceId string = workspace.outputs.resourceId
output workspaceName string = workspace.outputs.name
output appInsightsConnectionString string = appInsights.outputs.connectionString
