output "name" {
  description = "Service name."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "run.app URL (also the audience of Pub/Sub's OIDC token)."
  value       = google_cloud_run_v2_service.this.uri
}

output "service_account_email" {
  description = "Runtime service account of the service."
  value       = google_service_account.this.email
}
