# One origin for the fans: a global external Application Load Balancer serves the static site
# from Cloud Storage (Cloud CDN) and routes the API paths to the Cloud Run services through
# serverless NEGs, behind Cloud Armor (armor.tf). HTTP redirects to HTTPS.

locals {
  # Every API route of the functions (their axum routers) and the backend that serves it.
  # Lower priority numbers are matched first: the longer /v1/orders/{id}/… paths come before
  # /v1/orders/{id}. terraform/tests/test_structure.py checks this list against the code.
  api_routes = [
    { priority = 10, method = "POST", path = "/v1/orders/{id=*}/payment", backend = "buy" },
    { priority = 11, method = "POST", path = "/v1/orders/{id=*}/cancel", backend = "buy" },
    { priority = 12, method = "POST", path = "/v1/events/{event=*}/orders", backend = "buy" },
    { priority = 13, method = "POST", path = "/v1/events/{event=*}/room", backend = "buy" },
    { priority = 20, method = "GET", path = "/v1/events/{event=*}/availability", backend = "check-availability" },
    { priority = 21, method = "GET", path = "/v1/orders/{id=*}", backend = "check-availability" },
  ]
}

resource "google_storage_bucket" "site" {
  #checkov:skip=CKV_GCP_62:Requests are logged by the load balancer in front of the bucket.
  #checkov:skip=CKV_GCP_114:The static shop site is public content; public access prevention would block the CDN's anonymous reads.
  project                     = var.project_id
  name                        = var.site_bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  # The site is public by design (allUsers objectViewer below).
  public_access_prevention = "inherited"
  force_destroy            = var.force_destroy

  # The load balancer's backend bucket serves index.html for "/" and 404.html (with status 404)
  # for any missing object: both are uploaded by scripts/deploy from site/dist.
  website {
    main_page_suffix = "index.html"
    not_found_page   = "404.html"
  }

  # Old versions allow a quick rollback of a bad upload; a month is plenty.
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "site_public" {
  #checkov:skip=CKV_GCP_28:The static shop site is public content, served to everyone through the CDN.
  bucket = google_storage_bucket.site.name
  role   = "roles/storage.objectViewer"
  member = "allUsers"
}

resource "google_compute_backend_bucket" "site" {
  project          = var.project_id
  name             = "${var.name_prefix}-site"
  bucket_name      = google_storage_bucket.site.name
  enable_cdn       = true
  compression_mode = "AUTOMATIC"

  # The upload decides every object's lifetime (scripts/deploy): hashed assets carry
  # `public, max-age=31536000, immutable`, the HTML pages `no-cache`. USE_ORIGIN_HEADERS honours
  # exactly that; CACHE_ALL_STATIC's max_ttl/client_ttl would cap the assets (they were 1 h and
  # 5 min), so every fan's browser fetched the wasm bundle again after five minutes.
  cdn_policy {
    cache_mode        = "USE_ORIGIN_HEADERS"
    serve_while_stale = 86400
    # A missing path's 404 is cached briefly at the edge (Cloud CDN's default negative TTL).
    negative_caching = true
  }
}

resource "google_compute_region_network_endpoint_group" "api" {
  for_each = var.api_services

  project               = var.project_id
  name                  = "${var.name_prefix}-${each.key}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = each.value
  }
}

resource "google_compute_backend_service" "api" {
  for_each = var.api_services

  project               = var.project_id
  name                  = "${var.name_prefix}-${each.key}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = google_compute_security_policy.api.id

  # Availability answers carry `public, max-age=1`: one origin request per edge per second,
  # however many fans refresh. Order status is `no-store`, so it is never cached.
  enable_cdn = each.key == "check-availability" && var.availability_cdn
  dynamic "cdn_policy" {
    for_each = each.key == "check-availability" && var.availability_cdn ? [1] : []
    content {
      cache_mode = "USE_ORIGIN_HEADERS"
      cache_key_policy {
        include_host         = true
        include_protocol     = true
        include_query_string = false
      }
    }
  }

  backend {
    group = google_compute_region_network_endpoint_group.api[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = var.lb_log_sample_rate
  }
}

resource "google_compute_url_map" "https" {
  project         = var.project_id
  name            = "${var.name_prefix}-https"
  default_service = google_compute_backend_bucket.site.id

  host_rule {
    hosts        = ["*"]
    path_matcher = "shop"
  }

  path_matcher {
    name            = "shop"
    default_service = google_compute_backend_bucket.site.id

    dynamic "route_rules" {
      for_each = local.api_routes
      content {
        priority = route_rules.value.priority
        service  = google_compute_backend_service.api[route_rules.value.backend].id
        match_rules {
          path_template_match = route_rules.value.path
          header_matches {
            header_name = ":method"
            exact_match = route_rules.value.method
          }
        }
      }
    }

    # Anything else under /v1/ (a wrong method, an unknown path) gets the API's problem+json
    # 404/405 instead of the site's HTML 404 page.
    route_rules {
      priority = 100
      service  = google_compute_backend_service.api["check-availability"].id
      match_rules {
        prefix_match = "/v1/"
      }
    }
  }
}

resource "google_compute_global_address" "site" {
  project = var.project_id
  name    = "${var.name_prefix}-site"
}

# The name carries a hash of the domain: a new domain needs a new certificate, created before
# the old one is released.
resource "google_compute_managed_ssl_certificate" "site" {
  project = var.project_id
  name    = "${var.name_prefix}-site-${substr(sha1(var.domain), 0, 8)}"

  managed {
    domains = [var.domain]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_ssl_policy" "modern" {
  project         = var.project_id
  name            = "${var.name_prefix}-modern"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "site" {
  project          = var.project_id
  name             = "${var.name_prefix}-https"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.site.id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${var.name_prefix}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  port_range            = "443"
  ip_address            = google_compute_global_address.site.id
  target                = google_compute_target_https_proxy.site.id
}

# Port 80 only redirects to HTTPS.
resource "google_compute_url_map" "http_redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-http-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-http-redirect"
  url_map = google_compute_url_map.http_redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  project               = var.project_id
  name                  = "${var.name_prefix}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  port_range            = "80"
  ip_address            = google_compute_global_address.site.id
  target                = google_compute_target_http_proxy.redirect.id
}

resource "google_dns_record_set" "site" {
  count = var.dns_managed_zone == "" ? 0 : 1

  project      = var.project_id
  managed_zone = var.dns_managed_zone
  name         = "${var.domain}."
  type         = "A"
  ttl          = 300
  rrdatas      = [google_compute_global_address.site.address]
}
