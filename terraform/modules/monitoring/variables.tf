variable "project_id" {
  description = "Project of the alert policies."
  type        = string
}

variable "services" {
  description = "Cloud Run services: key => service name (check-availability and buy have latency SLOs; consume-order's log counts failed refunds and forged messages)."
  type        = map(string)

  validation {
    condition     = length(setsubtract(["check-availability", "buy", "consume-order"], keys(var.services))) == 0
    error_message = "services needs check-availability, buy and consume-order."
  }
}

variable "push_subscription" {
  description = "Push subscription whose oldest unacked message is watched."
  type        = string
}

variable "dead_letter_subscription" {
  description = "Dead-letter subscription that must stay empty."
  type        = string
}

variable "max_delivery_attempts" {
  description = "Failed deliveries before a message is dead-lettered (for the alerts' documentation)."
  type        = number
}

variable "database" {
  description = "\"postgres\" (Cloud SQL alerts) or \"spanner\" (Spanner CPU)."
  type        = string

  validation {
    condition     = contains(["postgres", "spanner"], var.database)
    error_message = "database must be postgres or spanner."
  }
}

variable "cloudsql_database_id" {
  description = "Cloud SQL instance as its metrics name it (project:instance); empty with Spanner."
  type        = string
  default     = ""
}

variable "spanner_instance" {
  description = "Spanner instance id; empty with Postgres."
  type        = string
  default     = ""
}

variable "url_map" {
  description = "Name of the HTTPS URL map (the load balancer's 5xx)."
  type        = string
}

variable "ops_job" {
  description = "Name of the ops Cloud Run Job (failed executions alert)."
  type        = string
}

variable "thresholds" {
  description = "Alert thresholds (see the root variable alerts)."
  type = object({
    buy_5xx_ratio              = number
    lb_5xx_ratio               = number
    check_availability_p95_ms  = number
    buy_p95_ms                 = number
    oldest_unacked_age_seconds = number
    redis_memory_ratio         = number
    consume_503_minutes        = number
    database_cpu_ratio         = number
    database_memory            = number
    database_disk_ratio        = number
    spanner_high_cpu           = number
    snapshot_stale_after       = number
  })
}

variable "notifications" {
  description = "Where every alert goes: an e-mail address (a channel is created) and/or existing channel ids. At least one."
  type = object({
    email    = string
    channels = list(string)
  })

  validation {
    condition     = var.notifications.email != "" || length(var.notifications.channels) > 0
    error_message = "notifications needs an email or a channel: no alert may be silent."
  }
}
