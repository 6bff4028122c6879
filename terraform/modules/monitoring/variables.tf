variable "project_id" {
  description = "Project of the alert policies."
  type        = string
}

variable "services" {
  description = "Cloud Run services: key => service name (check-availability and buy have latency SLOs; consume-order's log counts failed refunds)."
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

variable "thresholds" {
  description = "buy_5xx_ratio, check_availability_p95_ms, buy_p95_ms, oldest_unacked_age_seconds, redis_memory_ratio."
  type = object({
    buy_5xx_ratio              = number
    check_availability_p95_ms  = number
    buy_p95_ms                 = number
    oldest_unacked_age_seconds = number
    redis_memory_ratio         = number
  })
}

variable "notification_channels" {
  description = "Existing notification channel ids."
  type        = list(string)
  default     = []
}

variable "alert_email" {
  description = "E-mail address for a new notification channel; empty for none."
  type        = string
  default     = ""
}
