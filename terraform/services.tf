# The three functions. Each gets its own service account (modules/cloud_run_service), reads
# only the secrets it needs, and reaches Memorystore and the database by Direct VPC egress.

# buy signs every message on the orders topic with this secret, consume-order refuses any
# message without its signature: being allowed to publish to the topic is not enough to confirm
# tickets or have them refunded (ADR 40).
resource "random_password" "order_signing_key" {
  length  = 64
  special = false
}

resource "google_secret_manager_secret" "order_signing_key" {
  #checkov:skip=CKV_GCP_125:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  project   = var.project_id
  secret_id = "${var.name_prefix}-order-signing-key"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "order_signing_key" {
  secret      = google_secret_manager_secret.order_signing_key.id
  secret_data = random_password.order_signing_key.result
}

locals {
  redis_secret = { REDIS_URL = module.redis.redis_url_secret_id }
  # Through the version: whoever reads the secret waits until it has a value.
  signing_secret = { ORDER_SIGNING_KEY = google_secret_manager_secret_version.order_signing_key.secret }
  # With in-transit encryption the gate must trust Memorystore's own CA (a public certificate,
  # so a plain variable).
  redis_env = var.redis.transit_encryption_mode == "SERVER_AUTHENTICATION" ? {
    REDIS_CA_CERT = join("\n", module.redis.server_ca_certs)
  } : {}

  # DATABASE_URL carries the password: Secret Manager. Spanner needs no secret, only IAM.
  database_secret = var.database == "postgres" ? { DATABASE_URL = module.database.database_url_secret_id } : {}
  database_env = var.database == "postgres" ? {
    DATABASE_POOL_SIZE = tostring(var.database_pool_size)
    } : {
    SPANNER_DATABASE = module.database.spanner_database
  }

  vpc = {
    network    = module.network.network_id
    subnetwork = module.network.subnet_id
  }
}

module "check_availability" {
  source = "./modules/cloud_run_service"

  project_id          = var.project_id
  region              = var.region
  name                = "check-availability"
  image               = local.images["check-availability"]
  scaling             = var.services["check-availability"]
  vpc                 = local.vpc
  deletion_protection = var.deletion_protection
  # Only the load balancer (and so Cloud Armor) reaches it.
  ingress = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  # The snapshot refresher runs between requests: CPU must stay allocated.
  cpu_idle = false
  env = merge(local.redis_env, {
    REFRESH_MS = "250"
  })
  secret_env = local.redis_secret

  depends_on = [google_project_service.apis]
}

module "buy" {
  source = "./modules/cloud_run_service"

  project_id          = var.project_id
  region              = var.region
  name                = "buy"
  image               = local.images["buy"]
  scaling             = var.services["buy"]
  vpc                 = local.vpc
  deletion_protection = var.deletion_protection
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  # The outbox relay publishes paid orders between requests: CPU must stay allocated.
  cpu_idle = false
  env = merge(local.redis_env, {
    GOOGLE_CLOUD_PROJECT = var.project_id
    ORDERS_TOPIC         = module.pubsub.orders_topic_name
    PUBLISH_TIMEOUT_MS   = "3000"
    RELAY_INTERVAL_MS    = "2000"
    RELAY_GRACE_MS       = "10000"
    # Paid orders coalesced into one message (ADR 34) and relay leases across instances.
    PUBLISH_BATCH_MAX_ORDERS = "500"
    PUBLISH_LINGER_MS        = "20"
    RELAY_LEASE_MS           = "30000"
    # A payment's answer waits this long for the order's outcome (ADR 35).
    PAY_CONFIRM_WAIT_MS = "1000"
    # Behind the HTTPS load balancer X-Forwarded-For ends "<client>, <load balancer>".
    TRUSTED_PROXY_HOPS = "2"
    # Holds one client IP may take within a hold time, whatever addresses it gives (ADR 38).
    HOLDS_PER_CLIENT = "20"
  })
  secret_env = merge(local.redis_secret, local.signing_secret)

  depends_on = [google_project_service.apis]
}

module "consume_order" {
  source = "./modules/cloud_run_service"

  project_id          = var.project_id
  region              = var.region
  name                = "consume-order"
  image               = local.images["consume-order"]
  scaling             = var.services["consume-order"]
  vpc                 = local.vpc
  deletion_protection = var.deletion_protection
  # Not public: Pub/Sub push (same project) counts as internal traffic, and only the push
  # service account holds run.invoker (modules/pubsub). Cloud Run verifies its OIDC token.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  # The gate watcher runs between pushes: it rebuilds an event Redis lost (the recovery crate),
  # and must not stall when the queue is quiet (which it is, right after Redis lost the sale).
  cpu_idle = false
  env = merge(local.redis_env, {
    PUSH_AUTH           = "iam"
    DATABASE_TIMEOUT_MS = "3000"
  }, local.database_env)
  secret_env = merge(local.redis_secret, local.database_secret, local.signing_secret)

  depends_on = [google_project_service.apis]
}

# The fans' two services are invocable without a Google identity, as a public API must be; their
# ingress setting admits only the load balancer, so every request passes Cloud Armor first.
resource "google_cloud_run_v2_service_iam_member" "public" {
  #checkov:skip=CKV_GCP_102:Public API by design; ingress INTERNAL_LOAD_BALANCER keeps the run.app URL closed, so all traffic passes the LB and Cloud Armor.
  for_each = {
    check-availability = module.check_availability.name
    buy                = module.buy.name
  }

  project  = var.project_id
  location = var.region
  name     = each.value
  role     = "roles/run.invoker"
  member   = "allUsers"
}
