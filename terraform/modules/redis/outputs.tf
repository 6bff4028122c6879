output "host" {
  description = "Private address of the instance."
  value       = google_redis_instance.gate.host
}

output "port" {
  description = "6378 with TLS, 6379 without."
  value       = google_redis_instance.gate.port
}

output "redis_url_secret" {
  description = "REDIS_URL (with the AUTH string) in Secret Manager: { secret = projects/P/secrets/S, version = the pinned version number }."
  # Through the version: whoever reads the secret waits until it has a value.
  value = {
    secret  = google_secret_manager_secret_version.redis_url.secret
    version = google_secret_manager_secret_version.redis_url.version
  }
}

output "server_ca_certs" {
  description = "PEM CA certificates the client must trust when in-transit encryption is on."
  value       = [for c in google_redis_instance.gate.server_ca_certs : c.cert]
}
