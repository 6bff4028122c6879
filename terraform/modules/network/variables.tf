variable "project_id" {
  description = "Project of the network."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run subnet."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the resource names."
  type        = string
}

variable "subnet_cidr" {
  description = "Range of the subnet Cloud Run's Direct VPC egress takes instance addresses from."
  type        = string

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR range."
  }
}

variable "psa_prefix_length" {
  description = "Size of the range reserved for private services access (Memorystore, Cloud SQL)."
  type        = number

  validation {
    condition     = var.psa_prefix_length >= 16 && var.psa_prefix_length <= 24
    error_message = "psa_prefix_length must be 16-24."
  }
}
