terraform {
  # 1.5: `check` blocks; optional() object attributes need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State stays local by default (one operator, one project). For a team, add a GCS backend:
  #   backend "gcs" { bucket = "PROJECT-tfstate", prefix = "tickets" }
}
