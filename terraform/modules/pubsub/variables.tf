variable "project_id" {
  description = "Project of the topics and subscriptions."
  type        = string
}

variable "region" {
  description = "Region of the push target service."
  type        = string
}

variable "push_service" {
  description = "The Cloud Run service paid orders are pushed to: its name and run.app URL."
  type = object({
    name = string
    uri  = string
  })
}

variable "publishers" {
  description = "Service accounts (name => email) allowed to publish to the orders topic."
  type        = map(string)
}

variable "dead_letter_readers" {
  description = "Service accounts (name => email) allowed to pull and acknowledge dead letters (the ops job's replay)."
  type        = map(string)
  default     = {}
}

variable "ack_deadline_seconds" {
  description = "How long Pub/Sub waits for consume-order's answer before it redelivers (above its request timeout)."
  type        = number
  default     = 60

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be 10-600."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries before a message moves to the dead-letter topic (see the arithmetic at retry_policy in main.tf)."
  type        = number
  default     = 15

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5-100 (Pub/Sub's range)."
  }
}

variable "minimum_backoff_seconds" {
  description = "Shortest wait before a failed message is delivered again (Pub/Sub allows 0-600)."
  type        = number
  default     = 10

  validation {
    # (attempts - 1) x minimum_backoff is the least time the deliveries of one message span.
    condition     = var.minimum_backoff_seconds >= 1 && var.minimum_backoff_seconds <= 60
    error_message = "minimum_backoff_seconds must be 1-60 (maximum_backoff is 60)."
  }
}
