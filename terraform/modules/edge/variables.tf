variable "project_id" {
  description = "Project of the load balancer."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services behind the serverless NEGs."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the resource names."
  type        = string
}

variable "domain" {
  description = "Domain of the managed certificate; site and API share it."
  type        = string
}

variable "dns_managed_zone" {
  description = "Cloud DNS zone to create the A record in; empty to skip."
  type        = string
  default     = ""
}

variable "site_bucket_name" {
  description = "Name of the static site's bucket (scripts/deploy derives the same name)."
  type        = string
}

variable "force_destroy" {
  description = "Let destroy delete the site bucket with its objects."
  type        = bool
  default     = false
}

variable "availability_cdn" {
  description = "Enable Cloud CDN on check-availability's backend (honours the origin's Cache-Control)."
  type        = bool
  default     = true
}

variable "api_services" {
  description = "Cloud Run services behind the load balancer: backend key => service name. Keys: check-availability, buy."
  type        = map(string)

  validation {
    condition     = length(setsubtract(["check-availability", "buy"], keys(var.api_services))) == 0
    error_message = "api_services needs check-availability and buy."
  }
}

variable "armor" {
  description = "Cloud Armor thresholds (see the root variable armor)."
  type = object({
    api_limit_count        = number
    api_limit_interval_sec = number
    buy_limit_count        = number
    buy_limit_interval_sec = number
    ban_count              = number
    ban_interval_sec       = number
    ban_duration_sec       = number
    waf_preview            = bool
    adaptive_protection    = bool
  })
}

variable "lb_log_sample_rate" {
  description = "Share of API requests the load balancer logs (1.0 = all)."
  type        = number
  default     = 1.0

  validation {
    condition     = var.lb_log_sample_rate >= 0 && var.lb_log_sample_rate <= 1
    error_message = "lb_log_sample_rate must be 0-1."
  }
}
