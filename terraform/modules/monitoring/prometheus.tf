# Twins of the local Prometheus alerts (emulators/prometheus/rules.yml) in Cloud Monitoring, as
# PromQL over what the Managed Service for Prometheus sidecars write (modules/cloud_run_service;
# label namespace = the Cloud Run service). Recording rules do not exist here: each query
# inlines its rule's expression. terraform/tests checks every local alert has a twin here or a
# named equivalent.
#
# Two differ on purpose:
# - AvailabilitySnapshotStale: the sidecar scrapes every 30 s, so a sample is up to 30 s old
#   (plus ingestion) when evaluated: the threshold is the local one plus 60 s.
# - OrdersGoingToDeadLetter: locally "more than 20 retries in 10 minutes" (a ticket). A one-minute
#   database failover makes hundreds of retries and dead-letters nothing (modules/pubsub), so
#   here it fires on retries in every 5-minute window for 10 minutes; dead letters themselves
#   page through `dead_letters` (main.tf).

locals {
  prometheus_rules = {
    InventoryInvariantBroken = {
      severity = "CRITICAL"
      duration = "60s"
      query    = "max(abs(inventory_invariant_delta)) != 0"
      doc      = "available + held + confirming + sold != capacity in Redis (check-availability's snapshot): the gate lost or invented tickets. Run `gcloud run jobs execute ops --args=audit --wait` and read its table; `ops gate-restore` rebuilds an event from the database."
    }
    AvailabilitySnapshotStale = {
      severity = "CRITICAL"
      duration = "60s"
      query    = "time() - max(snapshot_last_success_timestamp_seconds) > ${var.thresholds.snapshot_stale_after + 60}"
      doc      = "check-availability has not refreshed its snapshot from Redis: fans see old availability. Check Redis (Memorystore) and check-availability's logs (snapshot refresh failures)."
    }
    OrderQueueNotDraining = {
      severity = "CRITICAL"
      duration = "300s"
      query    = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",subscription_id=\"${var.push_subscription}\"}) > 0 and sum(rate(consumer_messages_total{outcome=~\"persisted|rejected|duplicate\"}[5m])) == 0"
      doc      = "Paid orders wait in `${var.push_subscription}` and consume-order persists none: fans see `confirming`. Check consume-order's instances, its /readyz and logs, and the database."
    }
    OrdersGoingToDeadLetter = {
      severity = "WARNING"
      duration = "600s"
      query    = "sum(rate(consumer_messages_total{outcome=\"retryable\"}[5m])) > 0"
      doc      = "consume-order has been failing deliveries for 10 minutes (answering 503, Pub/Sub retries). After ${var.max_delivery_attempts} failed deliveries an order is dead-lettered: fix the cause before that (consume-order logs: `dependency`)."
    }
    RefundsOwedTooLong = {
      severity = "CRITICAL"
      duration = "300s"
      query    = "max(refunds_oldest_seconds) > 900"
      doc      = "A refund has been owed for more than 15 minutes: the payment provider keeps refusing it. consume-order keeps retrying; check the provider's status and consume-order's log (`refund failed`)."
    }
    HighServerErrorRate = {
      severity = "CRITICAL"
      duration = "120s"
      # consume-order's 503s during a failover are expected: consume_order_503 watches them.
      query = "sum by (namespace) (rate(http_requests_total{status=~\"5..\",namespace!=\"${var.services["consume-order"]}\"}[2m])) / sum by (namespace) (rate(http_requests_total{namespace!=\"${var.services["consume-order"]}\"}[2m])) > 0.01"
      doc   = "More than 1 % of a public service's requests fail with 5xx (the function's own count). 503 means Redis, the payment provider or Pub/Sub is unavailable (the `dependency` field in its logs)."
    }
  }
}

resource "google_monitoring_alert_policy" "prometheus" {
  for_each = local.prometheus_rules

  project               = var.project_id
  display_name          = "${each.key} (PromQL)"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = local.channels

  conditions {
    display_name = each.key
    condition_prometheus_query_language {
      query               = each.value.query
      duration            = each.value.duration
      evaluation_interval = "30s"
      alert_rule          = each.key
      rule_group          = "tickets.alerts"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.doc
  }
}
