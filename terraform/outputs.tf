output "site_url" {
  description = "The shop: site and API on one origin."
  value       = "https://${var.domain}"
}

output "site_ip" {
  description = "Global address of the load balancer: point the domain's A record here."
  value       = module.edge.ip_address
}

output "service_urls" {
  description = "run.app URLs of the services (closed to the internet by their ingress settings; for diagnostics)."
  value = {
    check-availability = module.check_availability.uri
    buy                = module.buy.uri
    consume-order      = module.consume_order.uri
  }
}

output "orders_topic" {
  description = "Topic buy publishes paid orders to."
  value       = module.pubsub.orders_topic_name
}

output "dead_letter_topic" {
  description = "Where Pub/Sub moves an order message after max_delivery_attempts (15) failed deliveries."
  value       = module.pubsub.dead_letter_topic_name
}

output "push_subscription" {
  description = "Push subscription that delivers orders to consume-order."
  value       = module.pubsub.push_subscription_name
}

output "dead_letter_subscription" {
  description = "Pull subscription on the dead-letter topic, for inspection and replay."
  value       = module.pubsub.dead_letter_subscription_name
}

output "artifact_registry" {
  description = "Docker repository the images are pushed to."
  value       = local.registry
}

output "images" {
  description = "Image of each function at this deploy."
  value       = local.images
}

output "site_bucket" {
  description = "Bucket scripts/deploy uploads site/dist to."
  value       = module.edge.site_bucket
}

output "url_map" {
  description = "URL map of the HTTPS load balancer (for CDN cache invalidation)."
  value       = module.edge.url_map
}

output "ops_job" {
  description = "Cloud Run Job running ops (migrate, seed, audit, dead-letters, gate-restore)."
  value       = google_cloud_run_v2_job.ops.name
}

output "ops_audit_schedule" {
  description = "Cloud Scheduler job that runs `ops audit` as the ops job, and its cron schedule (UTC)."
  value       = "${google_cloud_scheduler_job.ops_audit.name}: ${google_cloud_scheduler_job.ops_audit.schedule}"
}

output "order_signing_key" {
  description = "Signing key generations in use: what buy signs with and what consume-order accepts (docs/DEPLOY.md, Rotating the signing key)."
  value = {
    buy_signs_with       = local.signing_buy_generation
    consume_order_trusts = compact([tostring(local.signing_generation), local.signing_generation > 1 ? tostring(local.signing_generation - 1) : ""])
  }
}

output "build_service_account" {
  description = "Service account Cloud Build runs as."
  value       = google_service_account.build.email
}

output "build_staging_bucket" {
  description = "Bucket Cloud Build stages sources in."
  value       = google_storage_bucket.build_staging.name
}

output "redis_host" {
  description = "Private address of Memorystore."
  value       = module.redis.host
}

output "redis_ca_certs" {
  description = "CA certificate(s) of Memorystore's in-transit encryption: the Redis client must trust these."
  value       = module.redis.server_ca_certs
}

output "database" {
  description = "The order store: Cloud SQL instance connection name, or the Spanner database path."
  value       = var.database == "postgres" ? module.database.instance_connection_name : module.database.spanner_database
}

output "database_ca_cert" {
  description = "Cloud SQL's server CA (DATABASE_CA_CERT): clients verify the server's chain against it; null with Spanner."
  value       = module.database.server_ca_cert
}
