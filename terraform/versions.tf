terraform {
  # 1.5: `check` blocks; optional() object attributes need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    # Only for google_project_service_identity (the Pub/Sub service agent), which the GA
    # provider does not have in 6.x.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    # time_sleep: a log-based metric takes minutes before an alert policy may name it.
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }

  # State lives in a versioned GCS bucket: it holds the database password, the Redis AUTH
  # string and the signing keys, which must not sit in a file on a laptop. Partial
  # configuration: scripts/deploy creates the bucket and runs
  #   terraform init -backend-config=bucket=PROJECT-PREFIX-tfstate -backend-config=prefix=PREFIX
  backend "gcs" {}
}
