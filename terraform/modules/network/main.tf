# A private network for Cloud Run's Direct VPC egress and the managed services it talks to.
# Memorystore and Cloud SQL live in Google's producer network, peered by private services access.

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "${var.name_prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "run" {
  project       = var.project_id
  name          = "${var.name_prefix}-run-${var.region}"
  region        = var.region
  network       = google_compute_network.this.id
  ip_cidr_range = var.subnet_cidr
  # Google APIs (Pub/Sub, Secret Manager) without public addresses.
  private_ip_google_access = true

  # Sampled flow logs: enough to debug connectivity, cheap at this volume.
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.1
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Nothing in this network accepts connections from outside it: say so explicitly instead of
# relying on the implied rule. (Cloud Run instances receive no traffic through the VPC.)
resource "google_compute_firewall" "deny_ingress" {
  project   = var.project_id
  name      = "${var.name_prefix}-deny-ingress"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]
}

resource "google_compute_global_address" "psa" {
  project       = var.project_id
  name          = "${var.name_prefix}-psa"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.psa_prefix_length
  network       = google_compute_network.this.id
}

resource "google_service_networking_connection" "psa" {
  network                 = google_compute_network.this.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.psa.name]
  # Deleting the connection fails while Google still holds a deleted Cloud SQL instance (for
  # days). ABANDON drops it from state instead; the peering it made stays on the network, so
  # teardown deletes that peering by hand before the network goes (docs/DEPLOY.md, Teardown).
  deletion_policy = "ABANDON"
}
