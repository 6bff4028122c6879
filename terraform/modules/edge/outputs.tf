output "ip_address" {
  description = "Global IPv4 address of the load balancer."
  value       = google_compute_global_address.site.address
}

output "site_bucket" {
  description = "Bucket of the static site."
  value       = google_storage_bucket.site.name
}

output "url_map" {
  description = "Name of the HTTPS URL map (for `gcloud compute url-maps invalidate-cdn-cache`)."
  value       = google_compute_url_map.https.name
}

output "security_policy" {
  description = "Cloud Armor policy of the API backends."
  value       = google_compute_security_policy.api.name
}
