# Paid orders travel buy → topic `orders` → push → consume-order. After max_delivery_attempts
# failed deliveries a message moves to `orders-dead-letter`, kept on a pull subscription.

# Pub/Sub's own service agent forwards dead letters and mints the push OIDC tokens. Google
# creates it lazily, some time after the API is enabled: on a fresh project a grant to
# service-NUMBER@gcp-sa-pubsub… fails with "Service account … does not exist". This asks
# Service Usage to create it now and returns its address once it exists. (Beta-only resource;
# destroying it is a no-op.)
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"
}

locals {
  pubsub_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

resource "google_pubsub_topic" "orders" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  project = var.project_id
  name    = "orders"
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  project = var.project_id
  name    = "orders-dead-letter"
}

resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = var.publishers

  project = var.project_id
  topic   = google_pubsub_topic.orders.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${each.value}"
}

# Dead letters wait here for an operator: inspect, fix, republish (`ops dead-letters`, run as the
# ops job: docs/DEPLOY.md).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "orders-dead-letter-sub"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  # Never expire for inactivity: quiet is the normal state of a dead-letter queue.
  expiration_policy {
    ttl = ""
  }
}

# The identity Pub/Sub signs push requests as; the only invoker of the push service.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "pubsub-push"
  display_name = "Pub/Sub push to ${var.push_service.name}"
  description  = "Identity in the OIDC token of the orders push subscription."
}

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = var.region
  name     = var.push_service.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# Lets the service agent mint OIDC tokens for the push account (needed for projects made before
# April 2021, harmless after).
resource "google_service_account_iam_member" "agent_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_pubsub_topic_iam_member" "agent_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription" "push" {
  project                    = var.project_id
  name                       = "orders-push"
  topic                      = google_pubsub_topic.orders.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${var.push_service.uri}/pubsub/orders"

    # Cloud Run checks this token (audience = the service URL) before the request arrives:
    # consume-order runs with PUSH_AUTH=iam.
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.push_service.uri
    }
  }

  # A 503 from consume-order (database busy or failing over) is retried with backoff, and a
  # message is dead-lettered only after max_delivery_attempts failed deliveries. Sized so that a
  # one-minute database failover dead-letters nothing:
  #   Pub/Sub waits at least minimum_backoff (10 s) before every redelivery of a message and
  #   grows the wait exponentially up to maximum_backoff. Even if it never grew, the deliveries
  #   of one message would span at least (attempts - 1) x 10 s = 14 x 10 s = 140 s, more than
  #   twice a 60 s failover, plus each attempt's own time (consume-order answers 503 after
  #   DATABASE_TIMEOUT_MS, 3 s). With the growth (10, 20, 40, then 60 s each) a message fails
  #   for about 10 + 20 + 40 + 11 x 60 = 730 s, some 12 minutes, before it is dead-lettered: a
  #   dead letter means a lasting fault (an order the database refuses for good), and its alert
  #   pages only then. maximum_backoff caps how late an order is confirmed once the database is
  #   back (1 min).
  retry_policy {
    minimum_backoff = "${var.minimum_backoff_seconds}s"
    maximum_backoff = "60s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_service_account_iam_member.agent_token_creator,
    google_pubsub_topic_iam_member.agent_dead_letter_publisher,
  ]
}

# The ops job lists and replays dead letters (pull, acknowledge, modifyAckDeadline).
resource "google_pubsub_subscription_iam_member" "dead_letter_readers" {
  for_each = var.dead_letter_readers

  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${each.value}"
}

# The service agent acks a message on the source subscription when it dead-letters it.
resource "google_pubsub_subscription_iam_member" "agent_push_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
