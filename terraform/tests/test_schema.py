"""terraform/schema_check.py: the configuration against the providers' schemas (what `terraform
validate` would check, offline), and proof on small snippets that the checker can fail.

The schemas are cached once by terraform/check.sh (`schema_check.py --fetch`); run alone, the first
test downloads them (npm, about 65 MB, seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TF

sys.path.insert(0, str(TF))
import schema_check  # noqa: E402  (terraform/schema_check.py)


@pytest.fixture(scope="module")
def pinned() -> dict[str, str]:
    for spec in schema_check.PROVIDERS.values():
        schema_check.ensure_schema(spec)
    return dict(schema_check.PROVIDERS)


def check(tmp_path: Path, pinned: dict[str, str], hcl: str) -> list[str]:
    (tmp_path / "main.tf").write_text(hcl, encoding="utf-8")
    findings, _checked, _schemas = schema_check.run([tmp_path], pinned)
    return [str(f) for f in findings]


# --- The real tree ------------------------------------------------------------------------------


def test_the_configuration_matches_the_provider_schemas(pinned):
    findings, checked, schemas = schema_check.run([TF], pinned)
    assert not findings, "schema_check findings:\n" + "\n".join(map(str, findings))
    # It did look: every module's resources, against the pinned google provider.
    assert checked >= 60
    assert schemas["hashicorp/google"].version.startswith("6.")


def test_the_pinned_google_schema_is_the_newest_one_versions_tf_admits(pinned, root):
    """versions.tf says ~> 6.20; 6.50.0 is the last 6.x release, so a fresh `terraform init`
    installs exactly the version whose schema is checked."""
    google = schema_check.load_schema(pinned["hashicorp/google"])
    assert google.version == "6.50.0"
    constraints = [
        providers["google"]["version"]
        for block in root.terraform
        for providers in block.get("required_providers", [])
        if "google" in providers
    ]
    assert constraints, "versions.tf pins no google provider"
    assert all(schema_check.admits(c, google.version) for c in constraints), constraints


# --- The checker can fail -----------------------------------------------------------------------

TOPIC_OK = """
resource "google_pubsub_topic" "t" {
  name = "orders"
}
"""

CASES = {
    "unknown argument": (
        """
resource "google_pubsub_topic" "t" {
  name   = "orders"
  labell = { a = "b" }
}
""",
        'main.tf:4: google_pubsub_topic.t: unknown argument "labell" (did you mean "labels"?)',
    ),
    "missing required argument": (
        """
resource "google_pubsub_subscription" "s" {
  name = "s"
}
""",
        'main.tf:2: google_pubsub_subscription.s: missing required argument "topic"',
    ),
    "wrong literal type": (
        """
resource "google_pubsub_subscription" "s" {
  name                 = "s"
  topic                = "t"
  ack_deadline_seconds = "thirty"
}
""",
        'main.tf:5: google_pubsub_subscription.s: "ack_deadline_seconds": number required, got string "thirty"',
    ),
    "unknown block": (
        """
resource "google_pubsub_subscription" "s" {
  name  = "s"
  topic = "t"
  push_configs {
    push_endpoint = "https://example.com"
  }
}
""",
        'main.tf:5: google_pubsub_subscription.s: unknown block type "push_configs" (did you mean "push_config"?)',
    ),
    "unknown argument in a nested block": (
        """
resource "google_pubsub_subscription" "s" {
  name  = "s"
  topic = "t"
  push_config {
    push_endpoint = "https://example.com"
    oidc_token {
      service_account_email = "a@b.iam.gserviceaccount.com"
      audiences              = "x"
    }
  }
}
""",
        'main.tf:9: google_pubsub_subscription.s: push_config.oidc_token: unknown argument "audiences"',
    ),
    "missing required block": (
        """
resource "google_cloud_run_v2_service" "svc" {
  name     = "svc"
  location = "europe-west3"
}
""",
        'main.tf:2: google_cloud_run_v2_service.svc: missing required block "template"',
    ),
    "block written as an argument": (
        """
resource "google_cloud_run_v2_service" "svc" {
  name     = "svc"
  location = "europe-west3"
  template = { containers = [{ image = "x" }] }
}
""",
        'main.tf:5: google_cloud_run_v2_service.svc: "template" is a block, not an argument',
    ),
    "argument written as a block": (
        """
resource "google_pubsub_topic" "t" {
  name = "orders"
  labels {
    a = "b"
  }
}
""",
        'main.tf:4: google_pubsub_topic.t: "labels" is an argument, not a block',
    ),
    "two of a block that allows one": (
        """
resource "google_cloud_run_v2_service" "svc" {
  name     = "svc"
  location = "europe-west3"
  template {
    containers {
      image = "x"
    }
    scaling {
      max_instance_count = 2
    }
    scaling {
      min_instance_count = 1
    }
  }
}
""",
        'main.tf:12: google_cloud_run_v2_service.svc: template: at most one "scaling" block is allowed',
    ),
    "dynamic block content": (
        """
resource "google_cloud_run_v2_service" "svc" {
  name     = "svc"
  location = "europe-west3"
  template {
    containers {
      image = "x"
      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          values = env.value
        }
      }
    }
  }
}
""",
        'main.tf:12: google_cloud_run_v2_service.svc: template.containers.env: unknown argument "values"',
    ),
    "read-only attribute": (
        """
resource "google_pubsub_topic" "t" {
  name             = "orders"
  effective_labels = {}
}
""",
        'main.tf:4: google_pubsub_topic.t: "effective_labels" is a read-only attribute and cannot be set',
    ),
    "unknown resource type": (
        """
resource "google_pubsub_topik" "t" {
  name = "orders"
}
""",
        'main.tf:2: google_pubsub_topik.t: hashicorp/google 6.50.0 has no resource type "google_pubsub_topik"',
    ),
    "unknown data source": (
        """
data "google_projekt" "p" {}
""",
        'main.tf:2: data.google_projekt.p: hashicorp/google 6.50.0 has no data source "google_projekt"',
    ),
    "ignore_changes path": (
        """
resource "google_pubsub_topic" "t" {
  name = "orders"
  lifecycle {
    ignore_changes = [labels, label_set]
  }
}
""",
        'main.tf:5: google_pubsub_topic.t: lifecycle.ignore_changes: no argument or block "label_set"',
    ),
    "wrong type in another provider": (
        """
resource "random_password" "p" {
  length  = 32
  special = "no"
}
""",
        'main.tf:4: random_password.p: "special": bool required, got string "no"',
    ),
    "provider without a pinned schema": (
        """
resource "aws_s3_bucket" "b" {}
""",
        'main.tf:2: aws_s3_bucket.b: no pinned schema for provider "hashicorp/aws"',
    ),
    "constraint that does not admit the pinned version": (
        """
terraform {
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
  }
}
""",
        'main.tf:4: required_providers.google: version "~> 7.0" does not admit 6.50.0',
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_checker_reports(tmp_path, pinned, case):
    hcl, expected = CASES[case]
    findings = check(tmp_path, pinned, hcl)
    assert any(f.endswith(expected) or expected in f for f in findings), f"{case}: {expected!r} not in {findings}"


def test_expressions_meta_arguments_and_dynamic_blocks_pass(tmp_path, pinned):
    """No false alarms on what the real tree does: references of unknown type, count and
    for_each, depends_on, lifecycle, provider aliases, dynamic blocks, literals that Terraform
    converts (a number for a string), a max_items=1 block given once."""
    findings = check(tmp_path, pinned, """
provider "google" {
  project = var.project
  region  = "europe-west3"
}

resource "google_pubsub_topic" "t" {
  for_each                   = toset(["a", "b"])
  name                       = "orders-${each.key}"
  message_retention_duration = 600
  labels                     = merge(var.labels, { app = "tickets" })
  depends_on                 = [google_pubsub_topic.dl]
  lifecycle {
    ignore_changes = [labels, message_storage_policy[0].allowed_persistence_regions]
  }
}

resource "google_pubsub_topic" "dl" {
  count    = var.enabled ? 1 : 0
  provider = google.eu
  name     = var.name
}

resource "google_cloud_run_v2_service" "svc" {
  name                 = "svc"
  location             = "europe-west3"
  deletion_protection  = false
  invoker_iam_disabled = var.public
  template {
    containers {
      image = "x"
      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
    scaling {
      max_instance_count = "10"
    }
  }
}

data "google_project" "this" {}
""")
    assert findings == []


def test_the_command_line_exits_non_zero_and_prints_file_line_address(tmp_path, pinned):
    (tmp_path / "main.tf").write_text(CASES["unknown argument"][0], encoding="utf-8")
    (tmp_path / "ok.tf").write_text(TOPIC_OK.replace('"t"', '"u"'), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(TF / "schema_check.py"), str(tmp_path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].endswith('main.tf:4: google_pubsub_topic.t: unknown argument "labell" (did you mean "labels"?)'), lines
    assert "1 finding" in result.stderr


@pytest.mark.parametrize(
    ("constraint", "version", "ok"),
    [
        ("~> 6.20", "6.50.0", True),
        ("~> 6.20", "7.0.0", False),
        ("~> 6.20", "6.19.0", False),
        (">= 6.20, < 7.0", "6.50.0", True),
        (">= 6.20, < 7.0", "7.1.0", False),
        ("~> 6.20.1", "6.21.0", False),
        ("~> 0.12", "0.13.1", True),
        ("3.7.2", "3.7.2", True),
        ("!= 3.7.2", "3.7.2", False),
    ],
)
def test_version_constraints(constraint, version, ok):
    assert schema_check.admits(constraint, version) is ok
