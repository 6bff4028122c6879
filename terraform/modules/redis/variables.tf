variable "project_id" {
  description = "Project of the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the same as Cloud Run's: the gate is on every request's path)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the resource names."
  type        = string
}

variable "network_id" {
  description = "VPC network peered by private services access."
  type        = string
}

variable "tier" {
  description = "STANDARD_HA (replica in another zone, automatic failover) or BASIC."
  type        = string

  validation {
    condition     = contains(["STANDARD_HA", "BASIC"], var.tier)
    error_message = "tier must be STANDARD_HA or BASIC."
  }
}

variable "memory_size_gb" {
  description = "Capacity in GB; larger instances also get more network throughput."
  type        = number

  validation {
    condition     = var.memory_size_gb >= 1 && var.memory_size_gb <= 300
    error_message = "memory_size_gb must be 1-300."
  }
}

variable "redis_version" {
  description = "Memorystore Redis version, e.g. REDIS_7_2."
  type        = string

  validation {
    condition     = can(regex("^REDIS_[0-9]+(_[0-9]+)?$", var.redis_version))
    error_message = "redis_version must look like REDIS_7_2."
  }
}

variable "transit_encryption_mode" {
  description = "SERVER_AUTHENTICATION (TLS on port 6378, rediss:// URL) or DISABLED (plain redis:// on 6379)."
  type        = string

  validation {
    condition     = contains(["SERVER_AUTHENTICATION", "DISABLED"], var.transit_encryption_mode)
    error_message = "transit_encryption_mode must be SERVER_AUTHENTICATION or DISABLED."
  }
}
