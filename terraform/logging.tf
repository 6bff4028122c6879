# Cloud Run logs every request by itself. During the spike that is 50k lines a second, billed by
# the GiB: keep a sample of the successful ones and every server error. The functions' own logs
# (orders, failures) are not affected; refusals are not logged at info anyway.
resource "google_logging_project_exclusion" "run_request_sample" {
  count = var.request_log_sampling < 1 ? 1 : 0

  name        = "${var.name_prefix}-run-request-sample"
  description = "Keeps ${var.request_log_sampling * 100}% of Cloud Run request logs below 500."
  filter      = "resource.type = \"cloud_run_revision\" AND log_id(\"run.googleapis.com/requests\") AND httpRequest.status < 500 AND sample(insertId, ${1 - var.request_log_sampling})"
}
