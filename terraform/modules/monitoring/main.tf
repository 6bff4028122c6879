# Alerts on the on-sale: buy's error ratio, p95 latency of both public services, Pub/Sub
# delivery (a growing backlog, anything at all in the dead-letter queue), refunds owed, Redis
# memory (this file); the load balancer, consume-order's 503s, forged messages, the database and
# failed ops jobs (platform.tf); the local Prometheus rules' twins in PromQL (prometheus.tf).
# Every policy notifies var.notifications, which may not be empty: no alert is silent.

resource "google_monitoring_notification_channel" "email" {
  count = var.notifications.email == "" ? 0 : 1

  project      = var.project_id
  display_name = "Ticket shop on-call (${var.notifications.email})"
  type         = "email"
  labels = {
    email_address = var.notifications.email
  }
}

locals {
  channels = concat(var.notifications.channels, google_monitoring_notification_channel.email[*].id)

  run_filter = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = "
  latency_slos = {
    check-availability = var.thresholds.check_availability_p95_ms
    buy                = var.thresholds.buy_p95_ms
  }
}

resource "google_monitoring_alert_policy" "buy_5xx" {
  project               = var.project_id
  display_name          = "buy: 5xx ratio above ${var.thresholds.buy_5xx_ratio * 100}%"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "5xx / all requests over 5 minutes"
    condition_threshold {
      filter          = "${local.run_filter}\"${var.services["buy"]}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.thresholds.buy_5xx_ratio
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      denominator_filter = "${local.run_filter}\"${var.services["buy"]}\" AND metric.type = \"run.googleapis.com/request_count\""
      denominator_aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "buy answers 5xx: 503 means Redis, the payment provider or Pub/Sub is unavailable (see the `dependency` field in buy's logs). Paid orders stay in the outbox and the relay publishes them. See docs/ARCHITECTURE.md, Failure handling."
  }
}

resource "google_monitoring_alert_policy" "latency_p95" {
  for_each = local.latency_slos

  project               = var.project_id
  display_name          = "${each.key}: p95 latency above ${each.value} ms"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.channels

  conditions {
    display_name = "p95 of request latency over 5 minutes"
    condition_threshold {
      filter          = "${local.run_filter}\"${var.services[each.key]}\" AND metric.type = \"run.googleapis.com/request_latencies\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "${each.key} is slow. Check instance count against max_instances, Memorystore CPU, and the Redis timeout answers (503) in the logs."
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "Orders in the dead-letter queue"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "${var.dead_letter_subscription} has undelivered messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${var.dead_letter_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A paid order failed ${var.max_delivery_attempts} deliveries to consume-order (about 12 minutes of retries: a database failover alone never gets here) and was dead-lettered: the fan paid but the order is not confirmed. Fix the cause (consume-order logs), then list and replay it with the ops job: `gcloud run jobs execute ops --args=dead-letters --wait`, then `--args=dead-letters,--replay,all` (docs/DEPLOY.md; the consumer is idempotent)."
  }
}

resource "google_monitoring_alert_policy" "push_backlog_age" {
  project               = var.project_id
  display_name          = "Paid orders waiting longer than ${var.thresholds.oldest_unacked_age_seconds} s"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.channels

  conditions {
    display_name = "Oldest unacked message on ${var.push_subscription}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${var.push_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.thresholds.oldest_unacked_age_seconds
      duration        = "120s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "consume-order is not keeping up or keeps failing (503: database busy or down). Fans see `confirming` until it catches up. Check consume-order's logs, its max_instances, and Cloud SQL."
  }
}

# A refund the provider keeps refusing: consume-order logs each failed attempt, and the refunder
# asks again at growing intervals (up to 10 minutes), so failures in every window for 20 minutes
# mean a fan is still owed money (ADR 39).
resource "google_logging_metric" "refunds_failed" {
  project = var.project_id
  name    = "refunds_failed"
  filter  = "${local.run_filter}\"${var.services["consume-order"]}\" AND jsonPayload.message = \"refund failed; it stays owed and is retried\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

# A log-based metric is not usable in an alert policy the moment it is created: for up to ten
# minutes the Monitoring API answers "Cannot find metric(s) that match type = logging.googleapis.com/user/…"
# (hashicorp/terraform-provider-google#11102), which failed every first apply. The policies on
# these metrics wait ten minutes after the metrics are (re)created; on a first apply that runs
# alongside Cloud SQL's own creation. Later applies do not wait (nothing is replaced).
resource "time_sleep" "log_metrics" {
  create_duration = "600s"

  triggers = {
    refunds_failed = google_logging_metric.refunds_failed.id
    orders_forged  = google_logging_metric.orders_forged.id
  }
}

resource "google_monitoring_alert_policy" "refunds_owed" {
  project               = var.project_id
  display_name          = "Refunds the payment provider keeps refusing"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "refund attempts failing for 20 minutes"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.refunds_failed.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "1200s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Fans are owed refunds the provider keeps refusing. They are recorded in the database (`refunds`, `refunded_at IS NULL`) and retried by consume-order until the provider confirms; check the provider's status and consume-order's log (`refund failed`)."
  }

  depends_on = [time_sleep.log_metrics]
}

# Redis runs with noeviction: when its memory is full every write fails and the sale stops.
# What grows with attempts expires (ADR 41); this catches whatever was not foreseen, early.
resource "google_monitoring_alert_policy" "redis_memory" {
  project               = var.project_id
  display_name          = "Redis memory above ${var.thresholds.redis_memory_ratio * 100}%"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.channels

  conditions {
    display_name = "Memorystore memory usage ratio"
    condition_threshold {
      filter          = "resource.type = \"redis_instance\" AND metric.type = \"redis.googleapis.com/stats/memory/usage_ratio\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.thresholds.redis_memory_ratio
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Memorystore is filling up; at 100 % every write fails (noeviction) and reservations answer 503. Find what grows (`redis-cli --bigkeys`, `INFO keyspace`: order and customer keys of ended holds expire within a day) and scale `var.redis.memory_size_gb` before it is full."
  }
}
