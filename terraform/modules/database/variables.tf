variable "project_id" {
  description = "Project of the database."
  type        = string
}

variable "region" {
  description = "Region of the database."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the resource names."
  type        = string
}

variable "engine" {
  description = "\"postgres\" (Cloud SQL, private IP) or \"spanner\"."
  type        = string

  validation {
    condition     = contains(["postgres", "spanner"], var.engine)
    error_message = "engine must be postgres or spanner."
  }
}

variable "network_id" {
  description = "VPC network Cloud SQL gets its private address in (private services access)."
  type        = string
}

variable "postgres" {
  description = "Cloud SQL sizing: version, tier, availability_type, disk_size_gb, max_connections."
  type = object({
    version           = string
    tier              = string
    availability_type = string
    disk_size_gb      = number
    max_connections   = number
  })
}

variable "spanner_processing_units" {
  description = "Spanner compute capacity."
  type        = number
}

variable "deletion_protection" {
  description = "Protect the instance and database from deletion."
  type        = bool
}

variable "database_users" {
  description = "Service accounts (name => email) that read and write orders."
  type        = map(string)
}

variable "schema_admins" {
  description = "Service accounts (name => email) that apply the Spanner DDL (ops migrate)."
  type        = map(string)
  default     = {}
}
