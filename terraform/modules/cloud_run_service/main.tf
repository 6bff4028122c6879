# One function as a Cloud Run service with its own service account. The account starts with no
# roles: it can read the secrets in secret_env, and the caller grants anything else (publish, DB).

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = "fn-${var.name}"
  display_name = "Cloud Run: ${var.name}"
  description  = "Runtime identity of the ${var.name} function."
}

resource "google_secret_manager_secret_iam_member" "this" {
  for_each = var.secret_env

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.this.email
    max_instance_request_concurrency = var.scaling.concurrency
    timeout                          = "${var.scaling.timeout_seconds}s"
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.scaling.min_instances
      max_instance_count = var.scaling.max_instances
    }

    # Direct VPC egress: private ranges (Memorystore, Cloud SQL) through the VPC, Google APIs
    # (Pub/Sub, Secret Manager) directly.
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.vpc.network
        subnetwork = var.vpc.subnetwork
      }
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.scaling.cpu
          memory = var.scaling.memory
        }
        cpu_idle          = var.cpu_idle
        startup_cpu_boost = true
      }

      env {
        name  = "RUST_LOG"
        value = "info"
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_env
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

      # Ready only once Redis (and the database) answered: main() connects before serving.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 1
        failure_threshold     = 15
        http_get {
          path = "/healthz"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 15
        timeout_seconds   = 2
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }
  }

  lifecycle {
    # gcloud stamps these on manual changes; they are not drift.
    ignore_changes = [client, client_version]
  }

  # A revision whose account cannot read its secrets fails to deploy.
  depends_on = [google_secret_manager_secret_iam_member.this]
}
