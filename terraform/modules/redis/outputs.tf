output "host" {
  description = "Private address of the instance."
  value       = google_redis_instance.gate.host
}

output "port" {
  description = "6378 with TLS, 6379 without."
  value       = google_redis_instance.gate.port
}

output "redis_url_secret_id" {
  description = "Secret Manager secret (projects/P/secrets/S) holding REDIS_URL with the AUTH string."
  # Through the version: whoever reads the secret waits until it has a value.
  value = google_secret_manager_secret_version.redis_url.secret
}

output "server_ca_certs" {
  description = "PEM CA certificates the client must trust when in-transit encryption is on."
  value       = [for c in google_redis_instance.gate.server_ca_certs : c.cert]
}
