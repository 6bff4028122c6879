output "database_url_secret" {
  description = "DATABASE_URL in Secret Manager: { secret = projects/P/secrets/S, version = the pinned version number }; null with Spanner."
  # Through the version: whoever reads the secret waits until it has a value.
  value = local.postgres ? {
    secret  = google_secret_manager_secret_version.database_url[0].secret
    version = google_secret_manager_secret_version.database_url[0].version
  } : null
}

output "server_ca_cert" {
  description = "PEM bundle of the Cloud SQL instance's own server CAs (DATABASE_CA_CERT: the current one, and the upcoming one during a rotation): clients verify the server's chain against them; null with Spanner."
  value       = local.postgres ? join("\n", [for c in data.google_sql_ca_certs.postgres[0].certs : trimspace(c.cert)]) : null
}

output "instance_name" {
  description = "Cloud SQL instance name; null with Spanner."
  value       = local.postgres ? google_sql_database_instance.postgres[0].name : null
}

output "spanner_instance" {
  description = "Spanner instance id; null with Postgres."
  value       = local.spanner ? google_spanner_instance.this[0].name : null
}

output "instance_connection_name" {
  description = "Cloud SQL connection name (project:region:instance); null with Spanner."
  value       = local.postgres ? google_sql_database_instance.postgres[0].connection_name : null
}

output "private_ip" {
  description = "Private address of Cloud SQL; null with Spanner."
  value       = local.postgres ? google_sql_database_instance.postgres[0].private_ip_address : null
}

output "spanner_database" {
  description = "projects/P/instances/I/databases/D (the SPANNER_DATABASE value); null with Postgres."
  value       = local.spanner ? "projects/${var.project_id}/instances/${google_spanner_instance.this[0].name}/databases/${google_spanner_database.tickets[0].name}" : null
}
