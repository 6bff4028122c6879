# The whole environment of the VIP on-sale: three Cloud Run services behind one HTTPS load
# balancer with the static site, Pub/Sub push with dead letters, Memorystore, and Cloud SQL or
# Spanner. `terraform apply` builds it, `terraform destroy` removes it (see docs/DEPLOY.md).

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = var.labels
}

# Only google_project_service_identity (modules/pubsub) uses it.
provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = var.labels
}

locals {
  functions = ["check-availability", "buy", "consume-order"]

  apis = toset(concat([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "dns.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "serviceusage.googleapis.com",
    ], var.database == "postgres" ? ["sqladmin.googleapis.com"] : ["spanner.googleapis.com"]
  ))

  # scripts/deploy builds these names too (tested in terraform/tests).
  registry = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  images   = { for f in local.functions : f => "${local.registry}/${f}:${var.image_tag}" }
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = var.project_id
  service = each.value
  # Other things in the project may use these APIs; disabling them on destroy breaks them.
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  location      = var.region
  repository_id = var.name_prefix
  description   = "Images of check-availability, buy and consume-order (+ ops)."
  format        = "DOCKER"

  # Every deploy pushes three images: keep the recent ones for rollbacks, drop the rest.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

module "network" {
  source = "./modules/network"

  project_id        = var.project_id
  region            = var.region
  name_prefix       = var.name_prefix
  subnet_cidr       = var.network.subnet_cidr
  psa_prefix_length = var.network.psa_prefix_length

  depends_on = [google_project_service.apis]
}

module "redis" {
  source = "./modules/redis"

  project_id              = var.project_id
  region                  = var.region
  name_prefix             = var.name_prefix
  network_id              = module.network.network_id
  tier                    = var.redis.tier
  memory_size_gb          = var.redis.memory_size_gb
  redis_version           = var.redis.version
  transit_encryption_mode = var.redis.transit_encryption_mode

  # Memorystore peers through the private services access connection.
  depends_on = [module.network]
}

module "database" {
  source = "./modules/database"

  project_id               = var.project_id
  region                   = var.region
  name_prefix              = var.name_prefix
  engine                   = var.database
  network_id               = module.network.network_id
  postgres                 = var.postgres
  spanner_processing_units = var.spanner_processing_units
  deletion_protection      = var.deletion_protection
  # Who reads and writes orders: the consumer and the migrate/seed/audit job.
  database_users = {
    consume-order = module.consume_order.service_account_email
    ops           = google_service_account.ops.email
  }
  schema_admins = { ops = google_service_account.ops.email }

  depends_on = [module.network]
}

module "pubsub" {
  source = "./modules/pubsub"
  providers = {
    google      = google
    google-beta = google-beta
  }

  project_id = var.project_id
  region     = var.region
  push_service = {
    name = module.consume_order.name
    uri  = module.consume_order.uri
  }
  # buy publishes paid orders; the ops job republishes dead letters (`ops dead-letters --replay`).
  publishers = {
    buy = module.buy.service_account_email
    ops = google_service_account.ops.email
  }
  # ... and pulls them from the dead-letter subscription.
  dead_letter_readers = {
    ops = google_service_account.ops.email
  }

  # The service identity and every account in the module wait for the APIs (iam, pubsub).
  depends_on = [google_project_service.apis]
}

module "edge" {
  source = "./modules/edge"

  project_id       = var.project_id
  region           = var.region
  name_prefix      = var.name_prefix
  domain           = var.domain
  dns_managed_zone = var.dns_managed_zone
  site_bucket_name = "${var.project_id}-${var.name_prefix}-site"
  force_destroy    = var.force_destroy_site_bucket
  availability_cdn = var.availability_cdn
  armor            = var.armor
  # Cloud Armor's decisions are in these logs: keep the same share as Cloud Run's.
  lb_log_sample_rate = var.request_log_sampling
  api_services = {
    check-availability = module.check_availability.name
    buy                = module.buy.name
  }

  depends_on = [google_project_service.apis]
}

module "monitoring" {
  source = "./modules/monitoring"

  project_id = var.project_id
  services = {
    check-availability = module.check_availability.name
    buy                = module.buy.name
    consume-order      = module.consume_order.name
  }
  push_subscription        = module.pubsub.push_subscription_name
  dead_letter_subscription = module.pubsub.dead_letter_subscription_name
  max_delivery_attempts    = module.pubsub.max_delivery_attempts
  database                 = var.database
  # Cloud SQL's metrics name the instance "project:instance"; Spanner's by its instance id.
  cloudsql_database_id = var.database == "postgres" ? "${var.project_id}:${module.database.instance_name}" : ""
  spanner_instance     = var.database == "spanner" ? module.database.spanner_instance : ""
  url_map              = module.edge.url_map
  ops_job              = google_cloud_run_v2_job.ops.name
  thresholds           = var.alerts
  notifications        = var.alert_notifications

  depends_on = [google_project_service.apis]
}

# Every consume-order instance holds up to database_pool_size connections, plus the ops job.
check "postgres_connection_budget" {
  assert {
    condition     = var.database != "postgres" || (var.services["consume-order"].max_instances + 1) * var.database_pool_size + 20 <= var.postgres.max_connections
    error_message = "consume-order max_instances x database_pool_size (+ the ops job + 20 spare) exceeds postgres.max_connections: raise it or lower the others."
  }
}
