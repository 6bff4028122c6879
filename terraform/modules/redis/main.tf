# Memorystore for Redis: the admission gate (stock, holds, idempotency, limits, read model).
# The functions get REDIS_URL, with the AUTH string in it, from Secret Manager.

resource "google_redis_instance" "gate" {
  #checkov:skip=CKV_GCP_97:transit_encryption_mode comes from var.redis (default SERVER_AUTHENTICATION, validated); checkov cannot evaluate optional() defaults.
  #checkov:skip=CKV_GCP_137:Google-managed encryption at rest; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  project            = var.project_id
  name               = "${var.name_prefix}-gate"
  display_name       = "Ticket gate (admission, holds, read model)"
  region             = var.region
  tier               = var.tier
  memory_size_gb     = var.memory_size_gb
  redis_version      = var.redis_version
  authorized_network = var.network_id
  connect_mode       = "PRIVATE_SERVICE_ACCESS"

  auth_enabled            = true
  transit_encryption_mode = var.transit_encryption_mode

  redis_configs = {
    # Stock counters, holds and confirmed orders must never be evicted: when memory runs out,
    # writes fail (buy answers 503) instead of silently losing state. What grows with attempts
    # (ended holds, emptied customers) expires by itself, and an alert watches the rest (ADR 41).
    maxmemory-policy = "noeviction"
  }

  # Snapshots shorten recovery after losing both nodes; the database stays the authority.
  # Memorystore for Redis offers only RDB (no append-only file), and one hour is its shortest
  # period: Redis can come back older than the books, which consume-order's watcher detects
  # and rebuilds from them (docs/DECISIONS.md, ADR 37).
  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  # Tuesday 03:00 UTC: far from an evening on-sale. Move it if a sale is planned then.
  maintenance_policy {
    weekly_maintenance_window {
      day = "TUESDAY"
      start_time {
        hours   = 3
        minutes = 0
        seconds = 0
        nanos   = 0
      }
    }
  }
}

locals {
  tls    = var.transit_encryption_mode != "DISABLED"
  scheme = local.tls ? "rediss" : "redis"
  # gate::RedisArgs documents this shape: rediss://:AUTH@10.0.0.3:6378
  redis_url = "${local.scheme}://:${urlencode(google_redis_instance.gate.auth_string)}@${google_redis_instance.gate.host}:${google_redis_instance.gate.port}"
}

resource "google_secret_manager_secret" "redis_url" {
  #checkov:skip=CKV_GCP_125:Google-managed encryption; a CMEK key ring can never be deleted, so terraform destroy could not remove it.
  project   = var.project_id
  secret_id = "${var.name_prefix}-redis-url"

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "redis_url" {
  secret      = google_secret_manager_secret.redis_url.id
  secret_data = local.redis_url
}
