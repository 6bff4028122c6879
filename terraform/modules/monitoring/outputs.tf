output "alert_policies" {
  description = "Names of the alert policies."
  value = concat(
    [google_monitoring_alert_policy.buy_5xx.name],
    [for p in google_monitoring_alert_policy.latency_p95 : p.name],
    [google_monitoring_alert_policy.dead_letters.name, google_monitoring_alert_policy.push_backlog_age.name],
  )
}

output "notification_channels" {
  description = "Channels the alerts go to."
  value       = local.channels
}
