output "orders_topic_name" {
  description = "Topic of paid orders (ORDERS_TOPIC)."
  value       = google_pubsub_topic.orders.name
}

output "dead_letter_topic_name" {
  description = "Dead-letter topic."
  value       = google_pubsub_topic.dead_letter.name
}

output "push_subscription_name" {
  description = "Push subscription to consume-order."
  value       = google_pubsub_subscription.push.name
}

output "dead_letter_subscription_name" {
  description = "Pull subscription on the dead-letter topic."
  value       = google_pubsub_subscription.dead_letter.name
}

output "push_service_account_email" {
  description = "Identity of the push requests."
  value       = google_service_account.push.email
}

output "max_delivery_attempts" {
  description = "Failed deliveries after which a message is dead-lettered."
  value       = var.max_delivery_attempts
}

output "service_agent" {
  description = "The Pub/Sub service agent (serviceAccount:service-NUMBER@gcp-sa-pubsub…)."
  value       = local.pubsub_agent
}
