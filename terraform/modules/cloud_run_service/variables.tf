variable "project_id" {
  description = "Project of the service."
  type        = string
}

variable "region" {
  description = "Region of the service."
  type        = string
}

variable "name" {
  description = "Service name (the function's crate name); its service account is fn-NAME."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,26}$", var.name))
    error_message = "name must be 3-27 lowercase letters, digits or hyphens (the account id fn-NAME is at most 30)."
  }
}

variable "image" {
  description = "Container image, REGION-docker.pkg.dev/PROJECT/REPO/NAME:TAG."
  type        = string
}

variable "ingress" {
  description = "Who may reach the service at the network level."
  type        = string

  validation {
    condition     = contains(["INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER: no service is open to the internet directly."
  }
}

variable "scaling" {
  description = "min_instances, max_instances, concurrency, cpu, memory, timeout_seconds."
  type = object({
    min_instances   = number
    max_instances   = number
    concurrency     = number
    cpu             = string
    memory          = string
    timeout_seconds = number
  })

  validation {
    condition     = var.scaling.min_instances <= var.scaling.max_instances && var.scaling.max_instances <= 100
    error_message = "min_instances <= max_instances <= 100 (the Direct VPC egress limit)."
  }
}

variable "cpu_idle" {
  description = "true: CPU only during requests (request-based billing); false: always allocated, for background tasks."
  type        = bool
}

variable "env" {
  description = "Plain environment variables."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables from Secret Manager: NAME => { secret = projects/P/secrets/S, version = a version number (never latest) }. The service account gets accessor on exactly these secrets (a NAME ending in _PREVIOUS shares its current twin's secret and grant)."
  type = map(object({
    secret  = string
    version = string
  }))
  default = {}

  validation {
    condition     = alltrue([for v in values(var.secret_env) : v.version != "latest"])
    error_message = "secret_env versions must be pinned, not latest."
  }
}

variable "invoker_iam_disabled" {
  description = "Skip Cloud Run's invoker IAM check (a public API behind the load balancer, instead of an allUsers grant the domain-restricted-sharing policy refuses). Only with ingress INTERNAL_LOAD_BALANCER."
  type        = bool
  default     = false
}

variable "metrics_sidecar" {
  description = "The Managed Service for Prometheus collector running beside the function: image, cpu, memory."
  type = object({
    image  = string
    cpu    = string
    memory = string
  })
}

variable "vpc" {
  description = "Network and subnet for Direct VPC egress (Memorystore, Cloud SQL)."
  type = object({
    network    = string
    subnetwork = string
  })
}

variable "deletion_protection" {
  description = "Refuse to delete the service."
  type        = bool
}
