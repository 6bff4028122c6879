output "database_url_secret_id" {
  description = "Secret Manager secret (projects/P/secrets/S) holding DATABASE_URL; null with Spanner."
  # Through the version: whoever reads the secret waits until it has a value.
  value = local.postgres ? google_secret_manager_secret_version.database_url[0].secret : null
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
