# Alerts on the platform under the functions: the load balancer, consume-order's 503s, forged
# messages, the database (Cloud SQL or Spanner) and failed ops job executions.

locals {
  postgres = var.database == "postgres"
  spanner  = var.database == "spanner"
  # The message consume-order logs (at error) for a message without buy's valid signature.
  forged_log_line = "message without a valid signature refused; acked and dropped"
}

# The load balancer's own view: every 5xx a fan saw, whichever backend (or Cloud Armor, or the
# bucket) answered it.
resource "google_monitoring_alert_policy" "lb_5xx" {
  project               = var.project_id
  display_name          = "Load balancer: 5xx ratio above ${var.thresholds.lb_5xx_ratio * 100}%"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "5xx / all requests on ${var.url_map} over 5 minutes"
    condition_threshold {
      filter          = "resource.type = \"https_lb_rule\" AND resource.labels.url_map_name = \"${var.url_map}\" AND metric.type = \"loadbalancing.googleapis.com/https/request_count\" AND metric.labels.response_code_class = 500"
      comparison      = "COMPARISON_GT"
      threshold_value = var.thresholds.lb_5xx_ratio
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.url_map_name"]
      }
      denominator_filter = "resource.type = \"https_lb_rule\" AND resource.labels.url_map_name = \"${var.url_map}\" AND metric.type = \"loadbalancing.googleapis.com/https/request_count\""
      denominator_aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.url_map_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Fans get server errors. The `backend_target_name` and `statusDetails` in the load balancer's logs say who answered: a Cloud Run service (see its own alert and logs), the site bucket, or the load balancer itself (`failed_to_connect_to_backend`: the service has no ready instance, see its /readyz)."
  }
}

# consume-order answers 503 while the database is away, and Pub/Sub redelivers: a one-minute
# failover is expected and must not page. 503s minute after minute are not a failover.
resource "google_monitoring_alert_policy" "consume_order_503" {
  project               = var.project_id
  display_name          = "consume-order: 503s for ${var.thresholds.consume_503_minutes} minutes"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.channels

  conditions {
    display_name = "503 answers in every minute"
    condition_threshold {
      filter          = "${local.run_filter}\"${var.services["consume-order"]}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code = \"503\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.thresholds.consume_503_minutes * 60}s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "consume-order cannot reach the database (or Redis) for ${var.thresholds.consume_503_minutes} minutes: paid orders wait in Pub/Sub (nothing is dead-lettered before ${var.max_delivery_attempts} failed deliveries, about 12 minutes). Check the database's state and consume-order's logs (`dependency`)."
  }
}

# Messages without buy's valid signature: someone with publish rights on `orders` (or a key
# mismatch after a botched rotation) tries to confirm or refund orders. consume-order drops them.
resource "google_logging_metric" "orders_forged" {
  project = var.project_id
  name    = "orders_forged"
  filter  = "${local.run_filter}\"${var.services["consume-order"]}\" AND jsonPayload.message = \"${local.forged_log_line}\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_monitoring_alert_policy" "orders_forged" {
  project               = var.project_id
  display_name          = "Forged order messages refused"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "messages without a valid signature"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.orders_forged.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "consume-order refused messages on `orders` without buy's valid signature (ADR 40) and dropped them. Either someone else publishes to the topic (check who holds `roles/pubsub.publisher` on it and the audit logs), or buy and consume-order disagree on the key (a rotation applied out of order: docs/DEPLOY.md, Rotating the signing key; buy's outbox republishes its own paid orders after 5 minutes)."
  }

  depends_on = [time_sleep.log_metrics]
}

# --- The database -----------------------------------------------------------------------------

locals {
  cloudsql_filter = "resource.type = \"cloudsql_database\" AND resource.labels.database_id = \"${var.cloudsql_database_id}\" AND metric.type = "
  cloudsql_usage = {
    cpu = {
      metric    = "cloudsql.googleapis.com/database/cpu/utilization"
      threshold = var.thresholds.database_cpu_ratio
      doc       = "Cloud SQL's CPU is saturated: persisting orders slows down and consume-order answers 503 (Pub/Sub redelivers). Look at Query Insights; scale `postgres.tier` between sales."
    }
    memory = {
      metric    = "cloudsql.googleapis.com/database/memory/utilization"
      threshold = var.thresholds.database_memory
      doc       = "Cloud SQL's memory is nearly full; an out-of-memory restart is a failover. Check connections (`max_connections`, consume-order's pool) and scale `postgres.tier`."
    }
    disk = {
      metric    = "cloudsql.googleapis.com/database/disk/utilization"
      threshold = var.thresholds.database_disk_ratio
      doc       = "Cloud SQL's disk is filling up. Autoresize grows it, but only so fast: check what grows (WAL with PITR, temp files) and raise `postgres.disk_size_gb`."
    }
  }
}

resource "google_monitoring_alert_policy" "cloudsql_usage" {
  for_each = local.postgres ? local.cloudsql_usage : {}

  project               = var.project_id
  display_name          = "Cloud SQL ${each.key} above ${each.value.threshold * 100}%"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.channels

  conditions {
    display_name = "${each.key} utilization over 5 minutes"
    condition_threshold {
      filter          = "${local.cloudsql_filter}\"${each.value.metric}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.threshold
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.doc
  }
}

resource "google_monitoring_alert_policy" "cloudsql_down" {
  count = local.postgres ? 1 : 0

  project               = var.project_id
  display_name          = "Cloud SQL is down"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  # A regional instance's failover takes about a minute: only longer is an outage.
  conditions {
    display_name = "database/up below 1 for 3 minutes"
    condition_threshold {
      filter          = "${local.cloudsql_filter}\"cloudsql.googleapis.com/database/up\""
      comparison      = "COMPARISON_LT"
      threshold_value = 1
      duration        = "180s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MIN"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The Cloud SQL instance has not been up for 3 minutes (longer than a failover). Paid orders wait in Pub/Sub; consume-order answers 503. Check the instance's operations and the Cloud SQL status page."
  }
}

resource "google_monitoring_alert_policy" "spanner_cpu" {
  count = local.spanner ? 1 : 0

  project               = var.project_id
  display_name          = "Spanner high-priority CPU above ${var.thresholds.spanner_high_cpu * 100}%"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.channels

  conditions {
    display_name = "high-priority CPU utilization over 5 minutes"
    condition_threshold {
      filter          = "resource.type = \"spanner_instance\" AND resource.labels.instance_id = \"${var.spanner_instance}\" AND metric.type = \"spanner.googleapis.com/instance/cpu/utilization_by_priority\" AND metric.labels.priority = \"high\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.thresholds.spanner_high_cpu
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.instance_id"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Spanner is above Google's recommended high-priority CPU for a regional instance (65 %): transactions slow down and abort. Raise `spanner_processing_units`."
  }
}

# --- ops job executions ------------------------------------------------------------------------

# A failed execution: the scheduled audit found the invariant broken (exit 1), or a migrate, seed
# or replay failed after its retries.
resource "google_monitoring_alert_policy" "ops_job_failed" {
  project               = var.project_id
  display_name          = "ops job execution failed"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.channels

  conditions {
    display_name = "failed executions of ${var.ops_job}"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_job\" AND resource.labels.job_name = \"${var.ops_job}\" AND metric.type = \"run.googleapis.com/job/completed_execution_count\" AND metric.labels.result = \"failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "An execution of the `${var.ops_job}` job failed. `gcloud run jobs executions list --job=${var.ops_job}` shows which; its logs say why. A failed scheduled `audit` means the stock invariant is broken (available + held + confirming + sold != capacity, or Redis disagrees with the database): read its table, then `ops gate-restore` if Redis lost state (docs/ARCHITECTURE.md)."
  }
}
