output "alert_policies" {
  description = "Names of the alert policies."
  value = concat(
    [google_monitoring_alert_policy.buy_5xx.name, google_monitoring_alert_policy.lb_5xx.name],
    [for p in google_monitoring_alert_policy.latency_p95 : p.name],
    [google_monitoring_alert_policy.dead_letters.name, google_monitoring_alert_policy.push_backlog_age.name],
    [google_monitoring_alert_policy.refunds_owed.name, google_monitoring_alert_policy.redis_memory.name],
    [google_monitoring_alert_policy.consume_order_503.name, google_monitoring_alert_policy.orders_forged.name],
    [for p in google_monitoring_alert_policy.cloudsql_usage : p.name],
    google_monitoring_alert_policy.cloudsql_down[*].name,
    google_monitoring_alert_policy.spanner_cpu[*].name,
    [google_monitoring_alert_policy.ops_job_failed.name],
    [for p in google_monitoring_alert_policy.prometheus : p.name],
  )
}

output "notification_channels" {
  description = "Channels the alerts go to."
  value       = local.channels
}
