variable "project_id" {
  description = "Google Cloud project that holds the whole environment (one environment per project)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 lowercase letters, digits or hyphens."
  }
}

variable "region" {
  description = "Region of Cloud Run, Memorystore, the database, the registry and the serverless NEGs. Default: Frankfurt, close to St. Pölten."
  type        = string
  default     = "europe-west3"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like europe-west3."
  }
}

variable "name_prefix" {
  description = "Prefix of the infrastructure names (network, Redis, SQL, buckets, registry). Services, topics and subscriptions keep the names the code and docs use."
  type        = string
  default     = "tickets"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,7}$", var.name_prefix))
    error_message = "name_prefix must be 3-8 lowercase letters or digits, starting with a letter (bucket and account ids derive from it)."
  }
}

variable "labels" {
  description = "Labels on every resource that takes them (billing breakdown)."
  type        = map(string)
  default     = { app = "frequency-tickets" }
}

variable "domain" {
  description = "Domain of the shop (site and API share it), e.g. vip.frequency.at. The managed certificate goes active once its A record points at the site_ip output."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as vip.frequency.at."
  }
}

variable "dns_managed_zone" {
  description = "Cloud DNS managed zone (in this project) to create the domain's A record in; empty when DNS is managed elsewhere."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "Tag of the three images in Artifact Registry (scripts/deploy passes the git commit)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag."
  }
}

variable "database" {
  description = "The order store: \"postgres\" (Cloud SQL, private IP) or \"spanner\"."
  type        = string
  default     = "postgres"

  validation {
    condition     = contains(["postgres", "spanner"], var.database)
    error_message = "database must be \"postgres\" or \"spanner\"."
  }
}

variable "postgres" {
  description = "Cloud SQL for PostgreSQL sizing (used when database = \"postgres\")."
  type = object({
    version           = optional(string, "POSTGRES_16")
    tier              = optional(string, "db-custom-2-7680")
    availability_type = optional(string, "REGIONAL")
    disk_size_gb      = optional(number, 20)
    max_connections   = optional(number, 250)
  })
  default = {}

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.postgres.availability_type)
    error_message = "postgres.availability_type must be REGIONAL (HA, failover) or ZONAL."
  }
  validation {
    condition     = can(regex("^POSTGRES_1[4-7]$", var.postgres.version))
    error_message = "postgres.version must be POSTGRES_14 to POSTGRES_17."
  }
  validation {
    condition     = var.postgres.disk_size_gb >= 10 && var.postgres.max_connections >= 50
    error_message = "postgres.disk_size_gb must be >= 10 and max_connections >= 50."
  }
}

variable "spanner_processing_units" {
  description = "Spanner compute capacity (used when database = \"spanner\"): 100-900 in steps of 100, or multiples of 1000."
  type        = number
  default     = 100

  validation {
    condition     = (var.spanner_processing_units >= 100 && var.spanner_processing_units < 1000 && var.spanner_processing_units % 100 == 0) || (var.spanner_processing_units >= 1000 && var.spanner_processing_units % 1000 == 0)
    error_message = "spanner_processing_units must be 100-900 in steps of 100, or a multiple of 1000."
  }
}

variable "database_pool_size" {
  description = "Postgres connections per consume-order instance (DATABASE_POOL_SIZE); the ops job uses the same."
  type        = number
  default     = 16

  validation {
    condition     = var.database_pool_size >= 1 && var.database_pool_size <= 100
    error_message = "database_pool_size must be 1-100."
  }
}

variable "redis" {
  description = "Memorystore for Redis (the admission gate). STANDARD_HA keeps a replica in another zone with automatic failover."
  type = object({
    tier                    = optional(string, "STANDARD_HA")
    memory_size_gb          = optional(number, 5)
    version                 = optional(string, "REDIS_7_2")
    transit_encryption_mode = optional(string, "SERVER_AUTHENTICATION")
  })
  default = {}

  validation {
    condition     = contains(["STANDARD_HA", "BASIC"], var.redis.tier)
    error_message = "redis.tier must be STANDARD_HA or BASIC."
  }
  validation {
    condition     = contains(["SERVER_AUTHENTICATION", "DISABLED"], var.redis.transit_encryption_mode)
    error_message = "redis.transit_encryption_mode must be SERVER_AUTHENTICATION or DISABLED."
  }
  validation {
    condition     = var.redis.memory_size_gb >= 1 && var.redis.memory_size_gb <= 300
    error_message = "redis.memory_size_gb must be 1-300."
  }
}

variable "services" {
  description = "Scaling per function. cpu/memory are Cloud Run limits; timeout_seconds is the request timeout."
  type = map(object({
    min_instances   = number
    max_instances   = number
    concurrency     = number
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    timeout_seconds = optional(number, 15)
  }))
  default = {
    # Raise the min instances of the two public services an hour before the sale opens.
    check-availability = { min_instances = 1, max_instances = 50, concurrency = 250 }
    buy                = { min_instances = 1, max_instances = 50, concurrency = 80 }
    # Concurrency = pool size: each push holds one connection for its transaction.
    # One always warm: the gate watcher, and no cold start for the first paid orders.
    consume-order = { min_instances = 1, max_instances = 10, concurrency = 16, timeout_seconds = 30 }
  }

  validation {
    condition     = length(setsubtract(["check-availability", "buy", "consume-order"], keys(var.services))) == 0 && length(var.services) == 3
    error_message = "services must have exactly the keys check-availability, buy and consume-order."
  }
  validation {
    # Direct VPC egress caps a service at 100 instances.
    condition     = alltrue([for s in values(var.services) : s.min_instances >= 0 && s.min_instances <= s.max_instances && s.max_instances <= 100])
    error_message = "Each service needs 0 <= min_instances <= max_instances <= 100 (the Direct VPC egress limit)."
  }
  validation {
    condition     = alltrue([for s in values(var.services) : s.concurrency >= 1 && s.concurrency <= 1000 && s.timeout_seconds >= 1 && s.timeout_seconds <= 3600])
    error_message = "concurrency must be 1-1000 and timeout_seconds 1-3600."
  }
  validation {
    # consume-order's gate watcher (rebuilds an event Redis lost) and refunder (retries refunds
    # owed) run only while an instance is up: without one they stop.
    condition     = var.services["consume-order"].min_instances >= 1
    error_message = "services[\"consume-order\"].min_instances must be >= 1: its gate watcher and refunder need a running instance."
  }
}

variable "event_id" {
  description = "Event slug the ops job seeds and audits (EVENT_ID)."
  type        = string
  default     = "frequency-2027"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,62}$", var.event_id))
    error_message = "event_id must be a lowercase slug."
  }
}

variable "network" {
  description = "Address plan: the subnet Cloud Run's Direct VPC egress takes addresses from, and the private services access range (Memorystore, Cloud SQL)."
  type = object({
    subnet_cidr       = optional(string, "10.10.0.0/22")
    psa_prefix_length = optional(number, 20)
  })
  default = {}

  validation {
    # Direct VPC egress needs about two addresses per instance: /22 covers 3 x 100 instances with room.
    condition     = can(cidrhost(var.network.subnet_cidr, 0)) && tonumber(split("/", var.network.subnet_cidr)[1]) <= 23
    error_message = "network.subnet_cidr must be a CIDR of /23 or larger."
  }
  validation {
    condition     = var.network.psa_prefix_length >= 16 && var.network.psa_prefix_length <= 24
    error_message = "network.psa_prefix_length must be 16-24."
  }
}

variable "armor" {
  description = "Cloud Armor in front of the API: per-IP limits (requests per interval_sec), the ban on the buy routes, and the WAF rules' preview switch."
  type = object({
    api_limit_count        = optional(number, 600)
    api_limit_interval_sec = optional(number, 60)
    buy_limit_count        = optional(number, 30)
    buy_limit_interval_sec = optional(number, 10)
    ban_count              = optional(number, 300)
    ban_interval_sec       = optional(number, 60)
    ban_duration_sec       = optional(number, 600)
    waf_preview            = optional(bool, false)
    adaptive_protection    = optional(bool, true)
  })
  default = {}

  validation {
    condition     = alltrue([for i in [var.armor.api_limit_interval_sec, var.armor.buy_limit_interval_sec, var.armor.ban_interval_sec] : contains([10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600], i)])
    error_message = "Cloud Armor intervals must be one of 10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600 seconds."
  }
  validation {
    # Fans behind one carrier NAT share an address: keep the limits generous.
    condition     = var.armor.buy_limit_count >= 5 && var.armor.api_limit_count >= 60 && var.armor.ban_count > var.armor.buy_limit_count
    error_message = "buy_limit_count must be >= 5, api_limit_count >= 60, and ban_count above buy_limit_count."
  }
  validation {
    condition     = var.armor.ban_duration_sec >= 60 && var.armor.ban_duration_sec <= 86400
    error_message = "ban_duration_sec must be 60-86400."
  }
}

variable "availability_cdn" {
  description = "Cache GET availability at Google's edge for its 1 s max-age (order status is no-store and never cached)."
  type        = bool
  default     = true
}

variable "request_log_sampling" {
  description = "Share of per-request logs kept (load balancer and Cloud Run request logs; 5xx are always kept). At 50k requests/s every log line costs: 0.1 keeps one in ten."
  type        = number
  default     = 0.1

  validation {
    condition     = var.request_log_sampling > 0 && var.request_log_sampling <= 1
    error_message = "request_log_sampling must be in (0, 1]."
  }
}

variable "alerts" {
  description = "Alert thresholds (modules/monitoring)."
  type = object({
    buy_5xx_ratio              = optional(number, 0.01)
    lb_5xx_ratio               = optional(number, 0.01)
    check_availability_p95_ms  = optional(number, 200)
    buy_p95_ms                 = optional(number, 1500)
    oldest_unacked_age_seconds = optional(number, 120)
    redis_memory_ratio         = optional(number, 0.8)
    # consume-order answers 503 while the database is away; a failover lasts about a minute.
    consume_503_minutes  = optional(number, 10)
    database_cpu_ratio   = optional(number, 0.8)
    database_memory      = optional(number, 0.9)
    database_disk_ratio  = optional(number, 0.85)
    spanner_high_cpu     = optional(number, 0.65)
    snapshot_stale_after = optional(number, 10)
  })
  default = {}

  validation {
    condition     = alltrue([for r in [var.alerts.buy_5xx_ratio, var.alerts.lb_5xx_ratio, var.alerts.redis_memory_ratio, var.alerts.database_cpu_ratio, var.alerts.database_memory, var.alerts.database_disk_ratio, var.alerts.spanner_high_cpu] : r > 0 && r < 1])
    error_message = "The ratio thresholds must be in (0, 1)."
  }
  validation {
    condition     = var.alerts.check_availability_p95_ms > 0 && var.alerts.buy_p95_ms > 0 && var.alerts.oldest_unacked_age_seconds >= 10 && var.alerts.consume_503_minutes >= 3 && var.alerts.snapshot_stale_after >= 1
    error_message = "Latencies must be > 0, oldest_unacked_age_seconds >= 10, consume_503_minutes >= 3 (a failover must not page) and snapshot_stale_after >= 1."
  }
}

variable "alert_notifications" {
  description = "Where alerts go. Required, so no alert is ever silent: an e-mail address (a channel is created for it), existing notification channel ids (projects/P/notificationChannels/N: PagerDuty, Slack, …), or both."
  type = object({
    email    = optional(string, "")
    channels = optional(list(string), [])
  })

  validation {
    condition     = var.alert_notifications.email != "" || length(var.alert_notifications.channels) > 0
    error_message = "alert_notifications needs an email or at least one channel: alerts nobody receives are no alerts."
  }
  validation {
    condition     = var.alert_notifications.email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_notifications.email))
    error_message = "alert_notifications.email must be an e-mail address."
  }
  validation {
    condition     = alltrue([for c in var.alert_notifications.channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "alert_notifications.channels entries must be projects/PROJECT/notificationChannels/ID."
  }
}

variable "order_signing_key" {
  description = "Generation of the message signing key (ADR 40) and whether it is only staged. Rotation, between sales: raise generation by one with staged = true and apply (consume-order accepts the new key, buy still signs with the old one); then staged = false and apply (buy signs with the new key). consume-order keeps accepting the one before (ORDER_SIGNING_KEY_PREVIOUS)."
  type = object({
    generation = optional(number, 1)
    staged     = optional(bool, false)
  })
  default = {}

  validation {
    condition     = var.order_signing_key.generation >= 1 && floor(var.order_signing_key.generation) == var.order_signing_key.generation
    error_message = "order_signing_key.generation must be a whole number >= 1."
  }
  validation {
    condition     = !var.order_signing_key.staged || var.order_signing_key.generation >= 2
    error_message = "order_signing_key.staged needs a generation before it to sign with (generation >= 2)."
  }
}

variable "metrics_sidecar" {
  description = "The Managed Service for Prometheus collector beside each service (scrapes /metrics on port 8080). Pin the image tag; check newer ones in us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar."
  type = object({
    image  = optional(string, "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0")
    cpu    = optional(string, "1")
    memory = optional(string, "256Mi")
  })
  default = {}

  validation {
    condition     = can(regex("^[a-z0-9.-]+/[^:@]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.metrics_sidecar.image)) && !endswith(var.metrics_sidecar.image, ":latest")
    error_message = "metrics_sidecar.image must be a pinned image (a tag other than latest, or a digest)."
  }
}

variable "ops_audit_schedule" {
  description = "When Cloud Scheduler runs `ops audit` (cron, UTC). Every 10 minutes by default; a failed audit alerts."
  type        = string
  default     = "*/10 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.ops_audit_schedule))) == 5
    error_message = "ops_audit_schedule must be a five-field cron expression."
  }
}

variable "deletion_protection" {
  description = "Protect the database and Cloud Run services from deletion. Off by default so `terraform destroy` removes everything; turn it on for the real sale."
  type        = bool
  default     = false
}

variable "force_destroy_site_bucket" {
  description = "Let `terraform destroy` delete the site bucket with its objects (the site is rebuilt from site/dist anyway)."
  type        = bool
  default     = false
}
