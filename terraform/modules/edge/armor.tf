# Cloud Armor in front of the two API backends: a first filter for bots and floods before a
# request costs a Cloud Run instance or a Redis call. Rules run in priority order and stop at
# the first match, so the WAF denials come before the rate limits (whose "allow when under the
# limit" would otherwise end the evaluation).

resource "google_compute_security_policy" "api" {
  project     = var.project_id
  name        = "${var.name_prefix}-api"
  description = "Bot and flood filter in front of check-availability and buy."
  type        = "CLOUD_ARMOR"

  # Parse JSON bodies so the WAF looks at values, not at JSON syntax (fewer false positives).
  advanced_options_config {
    json_parsing = "STANDARD"
    log_level    = "NORMAL"
  }

  adaptive_protection_config {
    layer_7_ddos_defense_config {
      enable = var.armor.adaptive_protection
    }
  }

  # Log4Shell and other critical CVE probes: always enforced; no fan's request looks like one.
  rule {
    action      = "deny(403)"
    priority    = 900
    description = "Log4j and other critical CVEs"
    match {
      expr {
        expression = "evaluatePreconfiguredExpr('cve-canary')"
      }
    }
  }

  # Preconfigured WAF rules at sensitivity 1, the level with the fewest false positives (names
  # and e-mail addresses in bodies). armor.waf_preview logs their matches without blocking:
  # use it for a rehearsal, and read the logs, before the real sale.
  rule {
    action      = "deny(403)"
    priority    = 1000
    description = "SQL injection"
    preview     = var.armor.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('sqli-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    action      = "deny(403)"
    priority    = 1001
    description = "Cross-site scripting"
    preview     = var.armor.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('xss-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    action      = "deny(403)"
    priority    = 1002
    description = "Local file inclusion"
    preview     = var.armor.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('lfi-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    action      = "deny(403)"
    priority    = 1003
    description = "Remote code execution"
    preview     = var.armor.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('rce-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  rule {
    action      = "deny(403)"
    priority    = 1004
    description = "Vulnerability scanners"
    preview     = var.armor.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('scannerdetection-v33-stable', {'sensitivity': 1})"
      }
    }
  }

  # The buy routes (every POST under /v1/): a client IP over buy_limit_count per interval gets
  # 429; one that keeps going past ban_count is banned for ban_duration_sec. A fan's purchase is
  # three or four POSTs, so only scripts reach this.
  rule {
    action      = "rate_based_ban"
    priority    = 2000
    description = "Per-IP limit and ban on the buy routes"
    match {
      expr {
        expression = "request.method == 'POST' && request.path.startsWith('/v1/')"
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor.buy_limit_count
        interval_sec = var.armor.buy_limit_interval_sec
      }
      ban_threshold {
        count        = var.armor.ban_count
        interval_sec = var.armor.ban_interval_sec
      }
      ban_duration_sec = var.armor.ban_duration_sec
    }
  }

  # Everything else (availability polling, order status): a generous per-IP ceiling.
  rule {
    action      = "throttle"
    priority    = 2100
    description = "Per-IP ceiling on every other API request"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor.api_limit_count
        interval_sec = var.armor.api_limit_interval_sec
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default: allow"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}
