terraform {
  # 1.9+: validation blocks may reference other variables (heartbeat vs lease, grace vs cap).
  required_version = ">= 1.9.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.42 is the first release with `rbac_authorization_enabled` on azurerm_key_vault (the old
      # `enable_rbac_authorization` is deprecated and goes away in 5.0).
      version = ">= 4.42.0, < 5.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }
}
