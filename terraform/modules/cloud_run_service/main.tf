# One function as a Cloud Run service with its own service account. The account starts with no
# roles but writing its metrics: it can read the secrets in secret_env, and the caller grants
# anything else (publish, DB). A Managed Service for Prometheus sidecar scrapes /metrics.

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = "fn-${var.name}"
  display_name = "Cloud Run: ${var.name}"
  description  = "Runtime identity of the ${var.name} function."
}

# A key's _PREVIOUS twin (ORDER_SIGNING_KEY_PREVIOUS) is another version of the same secret: one
# grant covers both, and two grants of one binding would fight on destroy.
resource "google_secret_manager_secret_iam_member" "this" {
  for_each = { for k, v in var.secret_env : k => v if !endswith(k, "_PREVIOUS") }

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

# The metrics sidecar writes to Managed Service for Prometheus as the service's identity.
resource "google_project_iam_member" "metric_writer" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = var.deletion_protection
  # true: anyone who reaches the service may call it, without IAM (and without an `allUsers`
  # grant, which the domain-restricted-sharing organisation policy refuses). Only for services
  # whose ingress admits the load balancer alone; the caller decides.
  invoker_iam_disabled = var.invoker_iam_disabled

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

    # The function: the ingress container (the only one with a port).
    containers {
      name  = "app"
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
      # Names the project in the logs' trace field (telemetry) and the Pub/Sub topic's path.
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Pinned versions, never `latest`: a new secret version reaches the service only through
      # an apply, as a new revision (and a rollback brings the old value back with it).
      dynamic "env" {
        for_each = var.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value.secret
              version = env.value.version
            }
          }
        }
      }

      # Readiness: /readyz answers 503 until Redis and the database are connected (the process
      # retries them in the background forever), then 200. Direct VPC egress can take a minute
      # or more on a fresh instance, so the budget is Cloud Run's largest: period x threshold
      # may not exceed 240 s. No request reaches an instance before it passes.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = local.startup_period_seconds
        timeout_seconds       = 2
        failure_threshold     = local.startup_failure_threshold
        http_get {
          path = "/readyz"
          port = 8080
        }
      }

      # Liveness: /healthz answers 200 whenever the process serves, whatever its dependencies
      # do; a Redis or database outage must not restart every instance at once.
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

    # Managed Service for Prometheus: the collector scrapes the function's /metrics on port
    # 8080 every 30 s (its default RunMonitoring configuration) and writes the series with the
    # label namespace = the service name. It starts once the function is ready.
    containers {
      name       = "collector"
      image      = var.metrics_sidecar.image
      depends_on = ["app"]

      resources {
        limits = {
          cpu    = var.metrics_sidecar.cpu
          memory = var.metrics_sidecar.memory
        }
        cpu_idle = var.cpu_idle
      }

      liveness_probe {
        period_seconds  = 30
        timeout_seconds = 30
        http_get {
          path = "/liveness"
          port = 13133
        }
      }
    }
  }

  lifecycle {
    # gcloud stamps these on manual changes; they are not drift.
    ignore_changes = [client, client_version]

    precondition {
      condition     = !var.invoker_iam_disabled || var.ingress == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      error_message = "invoker_iam_disabled only behind the load balancer (ingress INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER): anything else would be open to every caller that reaches it."
    }
  }

  # A revision whose account cannot read its secrets fails to deploy; one that cannot write its
  # metrics loses them.
  depends_on = [google_secret_manager_secret_iam_member.this, google_project_iam_member.metric_writer]
}

locals {
  # 3 s x 80 = 240 s, Cloud Run's largest startup window; a ready instance waits at most 3 s.
  startup_period_seconds    = 3
  startup_failure_threshold = 80
}
