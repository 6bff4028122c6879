# `ops` (migrate, seed, audit) as a Cloud Run Job on the consume-order image, inside the VPC so it
# reaches Memorystore and the database. scripts/deploy runs it:
#   gcloud run jobs execute ops --args=migrate --wait
#   gcloud run jobs execute ops --args=seed,--capacity,2000 --wait

resource "google_service_account" "ops" {
  account_id   = "ops-job"
  display_name = "ops job (migrate, seed, audit)"
  description  = "Runs ops migrate/seed/audit: reads the Redis and database secrets."
}

resource "google_secret_manager_secret_iam_member" "ops" {
  for_each = merge(local.redis_secret, local.database_secret, local.signing_secret)

  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.ops.email}"
}

resource "google_cloud_run_v2_job" "ops" {
  name                = "ops"
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count = 1

    template {
      service_account = google_service_account.ops.email
      timeout         = "1800s"
      # A half-done seed is safe to run again; a second automatic try is not needed.
      max_retries = 0

      vpc_access {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = local.vpc.network
          subnetwork = local.vpc.subnetwork
        }
      }

      containers {
        image   = local.images["consume-order"]
        command = ["/ops"]
        args    = ["migrate"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        env {
          name  = "EVENT_ID"
          value = var.event_id
        }
        env {
          name  = "RUST_LOG"
          value = "info"
        }
        dynamic "env" {
          for_each = merge(local.redis_env, local.database_env)
          content {
            name  = env.key
            value = env.value
          }
        }
        dynamic "env" {
          for_each = merge(local.redis_secret, local.database_secret, local.signing_secret)
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    # `gcloud run jobs execute` records its client; that is not drift.
    ignore_changes = [client, client_version]
  }

  depends_on = [google_secret_manager_secret_iam_member.ops, google_project_service.apis]
}
