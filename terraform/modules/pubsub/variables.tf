variable "project_id" {
  description = "Project of the topics and subscriptions."
  type        = string
}

variable "project_number" {
  description = "Project number: names the Pub/Sub service agent (service-NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com)."
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
  description = "Deliveries before a message moves to the dead-letter topic."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5-100 (Pub/Sub's range)."
  }
}
