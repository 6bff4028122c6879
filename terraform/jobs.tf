# `ops` (migrate, seed, audit, dead-letters, gate-restore) as a Cloud Run Job on the
# consume-order image, inside the VPC so it reaches Memorystore and the database.
# scripts/deploy runs it; operators too (docs/DEPLOY.md, "Operator commands"):
#   gcloud run jobs execute ops --args=migrate --wait
#   gcloud run jobs execute ops --args=seed,--capacity,2000 --wait
#   gcloud run jobs execute ops --args=dead-letters,--replay,all --wait
# Cloud Scheduler runs `ops audit` on var.ops_audit_schedule; a failed execution alerts.

resource "google_service_account" "ops" {
  account_id   = "ops-job"
  display_name = "ops job (migrate, seed, audit, dead letters)"
  description  = "Runs ops: reads the Redis, database and signing secrets; replays dead letters."

  depends_on = [google_project_service.apis]
}

locals {
  # The ops job signs what it republishes with buy's key, which consume-order always accepts,
  # and replays only what buy signed: with that key or, once a rotation is no longer staged,
  # the one before it (while it is staged, buy still signs with the older key, and the one
  # before that is neither enabled nor accepted by consume-order).
  ops_secrets = merge(
    local.redis_secret, local.database_secret, local.buy_signing_secret,
    !var.order_signing_key.staged && local.signing_generation > 1 ? { ORDER_SIGNING_KEY_PREVIOUS = local.signing_key[tostring(local.signing_generation - 1)] } : {},
  )
  ops_env = merge(local.redis_env, local.database_env, {
    EVENT_ID             = var.event_id
    RUST_LOG             = "info"
    GOOGLE_CLOUD_PROJECT = var.project_id
    # `ops dead-letters`: republish to the orders topic, pull from the dead-letter subscription.
    ORDERS_TOPIC             = module.pubsub.orders_topic_name
    DEAD_LETTER_SUBSCRIPTION = module.pubsub.dead_letter_subscription_name
  })
}

resource "google_secret_manager_secret_iam_member" "ops" {
  # A _PREVIOUS key is another version of its twin's secret: one grant for both (as in the
  # services' module), so removing it never revokes the grant the current key needs.
  for_each = { for k, v in local.ops_secrets : k => v if !endswith(k, "_PREVIOUS") }

  secret_id = each.value.secret
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
      # Per attempt. gate-restore waits up to 10 minutes for the books to settle and
      # dead-letters stops after 10; the job retries its own connections for about 2 minutes.
      timeout = "1800s"
      # Every command is safe to run again: migrate and seed are idempotent, a half-done replay
      # left the rest on the dead-letter subscription (consume-order is idempotent), audit and
      # gate-restore only read or converge. So a task that failed (a dependency still
      # unreachable after its 2 minutes, an instance lost) is tried again, twice.
      max_retries = 2

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

        dynamic "env" {
          for_each = local.ops_env
          content {
            name  = env.key
            value = env.value
          }
        }
        # Pinned versions, as the services'.
        dynamic "env" {
          for_each = local.ops_secrets
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
      }
    }
  }

  lifecycle {
    # `gcloud run jobs execute` records its client; that is not drift.
    ignore_changes = [client, client_version]
  }

  depends_on = [google_secret_manager_secret_iam_member.ops, google_project_service.apis]
}

# --- ops audit on a schedule ---------------------------------------------------------------------
# Cloud Scheduler calls the Run Admin API (jobs.run) with an OAuth token of its own account,
# overriding the job's arguments with `audit`. audit exits 1 when the invariant is broken, so
# the execution fails and the "ops job failed" alert (modules/monitoring) pages.

resource "google_service_account" "scheduler" {
  account_id   = "ops-scheduler"
  display_name = "Cloud Scheduler: runs ops audit"
  description  = "Identity of the scheduled ops audit: may execute the ops job with overrides, nothing else."

  depends_on = [google_project_service.apis]
}

# jobsExecutorWithOverrides: run the job with other arguments (`audit` instead of `migrate`).
resource "google_cloud_run_v2_job_iam_member" "scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.ops.name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "ops_audit" {
  name        = "ops-audit"
  description = "Runs `ops audit` (the stock invariant in Redis and against the database) as the ops Cloud Run Job."
  region      = var.region
  schedule    = var.ops_audit_schedule
  time_zone   = "Etc/UTC"
  # jobs.run answers as soon as the execution has started; the execution's result is the
  # job's own (and alerted on).
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 2
    min_backoff_duration = "30s"
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.ops.name}:run"
    headers     = { "Content-Type" = "application/json" }
    body = base64encode(jsonencode({
      overrides = { containerOverrides = [{ args = ["audit"] }] }
    }))

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler, google_project_service.apis]
}
