# The authority on tickets: Cloud SQL for PostgreSQL on a private address, or Spanner.

locals {
  postgres = var.engine == "postgres"
  spanner  = var.engine == "spanner"
}

# Cloud SQL keeps a deleted instance's name reserved for a week: a suffix lets a fresh apply
# follow a destroy.
resource "random_id" "instance" {
  byte_length = 3
}

resource "google_sql_database_instance" "postgres" {
  #checkov:skip=CKV_GCP_6:TLS is required (ssl_mode ENCRYPTED_ONLY, checked by terraform/tests); checkov passes only client certificates, which a password over TLS to a private address does not need.
  count = local.postgres ? 1 : 0

  project             = var.project_id
  name                = "${var.name_prefix}-pg-${random_id.instance.hex}"
  region              = var.region
  database_version    = var.postgres.version
  deletion_protection = var.deletion_protection

  settings {
    # Postgres 16+ would default to Enterprise Plus, whose tiers are the db-perf-optimized ones.
    edition                     = "ENTERPRISE"
    tier                        = var.postgres.tier
    availability_type           = var.postgres.availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.postgres.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection

    # TLS only. The instance's own CA signs its server certificate (per-instance CA): clients
    # get that CA as DATABASE_CA_CERT and verify the chain against it (verify-ca; the
    # certificate names no private IP, so not verify-full). No client certificates.
    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      ssl_mode        = "ENCRYPTED_ONLY"
      server_ca_mode  = "GOOGLE_MANAGED_INTERNAL_CA"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 14
      }
    }

    maintenance_window {
      day          = 2
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.postgres.max_connections)
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    # Statements carry e-mail addresses: never log them by duration.
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }
}

# Every CA the instance's server certificate may chain to: the current one and, during a CA
# rotation, the upcoming one, so clients trust both before the switch (DATABASE_CA_CERT).
data "google_sql_ca_certs" "postgres" {
  count = local.postgres ? 1 : 0

  project  = var.project_id
  instance = google_sql_database_instance.postgres[0].name
}

resource "google_sql_database" "tickets" {
  count = local.postgres ? 1 : 0

  project  = var.project_id
  instance = google_sql_database_instance.postgres[0].name
  name     = "tickets"
}

# Letters and digits only: the password goes into a URL unescaped by every client.
resource "random_password" "tickets" {
  length  = 32
  special = false
}

resource "google_sql_user" "tickets" {
  count = local.postgres ? 1 : 0

  project  = var.project_id
  instance = google_sql_database_instance.postgres[0].name
  name     = "tickets"
  password = random_password.tickets.result
  # The user owns the tables; dropping it fails. The instance's deletion removes it anyway.
  deletion_policy = "ABANDON"
}

resource "google_secret_manager_secret" "database_url" {
  #checkov:skip=CKV_GCP_125:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  count = local.postgres ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}-database-url"

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "database_url" {
  count = local.postgres ? 1 : 0

  secret = google_secret_manager_secret.database_url[0].id
  # The instance refuses plain connections (ENCRYPTED_ONLY); the client checks the server's chain
  # against DATABASE_CA_CERT.
  secret_data = "postgres://${google_sql_user.tickets[0].name}:${random_password.tickets.result}@${google_sql_database_instance.postgres[0].private_ip_address}:5432/${google_sql_database.tickets[0].name}?sslmode=require"
}

# Private IP with a password needs no Cloud SQL IAM. This role is for the Cloud SQL Auth Proxy /
# connectors or IAM database authentication, and is limited to this one instance.
resource "google_project_iam_member" "sql_client" {
  for_each = local.postgres ? var.database_users : {}

  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${each.value}"

  condition {
    title      = "only-${google_sql_database_instance.postgres[0].name}"
    expression = "resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.postgres[0].name}'"
  }
}

resource "google_spanner_instance" "this" {
  count = local.spanner ? 1 : 0

  project          = var.project_id
  name             = "${var.name_prefix}-spanner"
  config           = "regional-${var.region}"
  display_name     = "Ticket orders"
  processing_units = var.spanner_processing_units
  # Backups go with the instance on destroy unless it is protected.
  force_destroy = !var.deletion_protection
}

resource "google_spanner_database" "tickets" {
  #checkov:skip=CKV_GCP_93:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  #checkov:skip=CKV_GCP_120:Drop protection follows var.deletion_protection: off by default so terraform destroy works, on for the real sale.
  count = local.spanner ? 1 : 0

  project                  = var.project_id
  instance                 = google_spanner_instance.this[0].name
  name                     = "tickets"
  database_dialect         = "GOOGLE_STANDARD_SQL"
  version_retention_period = "1d"
  deletion_protection      = var.deletion_protection
  enable_drop_protection   = var.deletion_protection
}

resource "google_spanner_database_iam_member" "users" {
  for_each = local.spanner ? var.database_users : {}

  project  = var.project_id
  instance = google_spanner_instance.this[0].name
  database = google_spanner_database.tickets[0].name
  role     = "roles/spanner.databaseUser"
  member   = "serviceAccount:${each.value}"
}

# `ops migrate` applies the Spanner DDL (shared/store/migrations/spanner): only the job may change the
# schema.
resource "google_spanner_database_iam_member" "schema_admins" {
  for_each = local.spanner ? var.schema_admins : {}

  project  = var.project_id
  instance = google_spanner_instance.this[0].name
  database = google_spanner_database.tickets[0].name
  role     = "roles/spanner.databaseAdmin"
  member   = "serviceAccount:${each.value}"
}
