# The three functions. Each gets its own service account (modules/cloud_run_service), reads
# only the secrets it needs, and reaches Memorystore and the database by Direct VPC egress.

# buy signs every message on the orders topic with this secret, consume-order refuses any
# message without its signature: being allowed to publish to the topic is not enough to confirm
# tickets or have them refunded (ADR 40). Every generation of the key is a version of one
# secret; var.order_signing_key says which one signs (docs/DEPLOY.md, "Rotating the signing key").
locals {
  signing_generation = var.order_signing_key.generation
  # Staged: consume-order already accepts the new key, buy still signs with the one before.
  signing_buy_generation = var.order_signing_key.staged ? local.signing_generation - 1 : local.signing_generation
}

resource "random_password" "order_signing_key" {
  for_each = toset([for g in range(1, local.signing_generation + 1) : tostring(g)])

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
  for_each = random_password.order_signing_key

  secret      = google_secret_manager_secret.order_signing_key.id
  secret_data = each.value.result
  # Only the current key and the one before it are readable; older ones sign and verify nothing.
  enabled = tonumber(each.key) >= local.signing_generation - 1
}

# The key of the first rounds (one unnamed resource) is generation 1.
moved {
  from = random_password.order_signing_key
  to   = random_password.order_signing_key["1"]
}

moved {
  from = google_secret_manager_secret_version.order_signing_key
  to   = google_secret_manager_secret_version.order_signing_key["1"]
}

locals {
  # Secrets by pinned version (modules/cloud_run_service): { secret, version }.
  redis_secret = { REDIS_URL = module.redis.redis_url_secret }
  signing_key = {
    for g, v in google_secret_manager_secret_version.order_signing_key : g => { secret = v.secret, version = v.version }
  }
  # buy signs with this one; the ops job republishes dead letters with it too.
  buy_signing_secret = { ORDER_SIGNING_KEY = local.signing_key[tostring(local.signing_buy_generation)] }
  # buy also checks the waiting room's admission tokens it signed (ADR 59): during a rotation,
  # a token an instance signed with the key before is still good.
  buy_room_secret = local.signing_buy_generation > 1 ? { ORDER_SIGNING_KEY_PREVIOUS = local.signing_key[tostring(local.signing_buy_generation - 1)] } : {}
  # consume-order accepts the current key and the one before it, so a rotation rolls out
  # without refusing messages in flight (ORDER_SIGNING_KEY_PREVIOUS, ADR 40).
  consumer_signing_secret = merge(
    { ORDER_SIGNING_KEY = local.signing_key[tostring(local.signing_generation)] },
    local.signing_generation > 1 ? { ORDER_SIGNING_KEY_PREVIOUS = local.signing_key[tostring(local.signing_generation - 1)] } : {},
  )

  # With in-transit encryption the gate must trust Memorystore's own CA (a public certificate,
  # so a plain variable).
  redis_env = var.redis.transit_encryption_mode == "SERVER_AUTHENTICATION" ? {
    REDIS_CA_CERT = join("\n", module.redis.server_ca_certs)
  } : {}

  # DATABASE_URL carries the password: Secret Manager. Spanner needs no secret, only IAM.
  database_secret = var.database == "postgres" ? { DATABASE_URL = module.database.database_url_secret } : {}
  database_env = var.database == "postgres" ? {
    DATABASE_POOL_SIZE = tostring(var.database_pool_size)
    # Cloud SQL requires TLS (ENCRYPTED_ONLY); the client verifies the server's chain against
    # the instance's own CA (a public certificate, so a plain variable).
    DATABASE_CA_CERT = module.database.server_ca_cert
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
  metrics_sidecar     = var.metrics_sidecar
  # Only the load balancer (and so Cloud Armor) reaches it, and anyone who does may call it: a
  # public API has anonymous callers. No allUsers grant (the domain-restricted-sharing policy
  # refuses those): Cloud Run's invoker check is off instead.
  ingress              = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  invoker_iam_disabled = true
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

  project_id           = var.project_id
  region               = var.region
  name                 = "buy"
  image                = local.images["buy"]
  scaling              = var.services["buy"]
  vpc                  = local.vpc
  deletion_protection  = var.deletion_protection
  metrics_sidecar      = var.metrics_sidecar
  ingress              = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  invoker_iam_disabled = true
  # The outbox relay publishes paid orders between requests: CPU must stay allocated.
  cpu_idle = false
  env = merge(local.redis_env, {
    ORDERS_TOPIC       = module.pubsub.orders_topic_name
    PUBLISH_TIMEOUT_MS = "3000"
    RELAY_INTERVAL_MS  = "2000"
    RELAY_GRACE_MS     = "10000"
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
  secret_env = merge(local.redis_secret, local.buy_signing_secret, local.buy_room_secret)

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
  metrics_sidecar     = var.metrics_sidecar
  # Not public: Pub/Sub push (same project) counts as internal traffic, and only the push
  # service account holds run.invoker (modules/pubsub). Cloud Run verifies its OIDC token.
  ingress              = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invoker_iam_disabled = false
  # The gate watcher and the refunder run between pushes: the watcher rebuilds an event Redis
  # lost (the recovery crate) and must not stall when the queue is quiet (which it is, right
  # after Redis lost the sale); the refunder asks the provider again for refunds owed; the sweep
  # looks at each charge three times, a minute apart, 15 minutes after it was made (ADR 54). So
  # CPU stays allocated and min_instances stays >= 1 (variables.tf).
  cpu_idle = false
  env = merge(local.redis_env, {
    PUSH_AUTH           = "iam"
    DATABASE_TIMEOUT_MS = "3000"
  }, local.database_env)
  secret_env = merge(local.redis_secret, local.database_secret, local.consumer_signing_secret)

  depends_on = [google_project_service.apis]
}
