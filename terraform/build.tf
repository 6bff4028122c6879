# Cloud Build runs as its own service account that can only push to our repository and write
# its logs; sources are staged in a bucket of ours. scripts/deploy applies this part first
# (-target) because the images must exist before the services can.

resource "google_service_account" "build" {
  account_id   = "image-build"
  display_name = "Cloud Build: builds and pushes the function images"

  # The bootstrap apply enables iam.googleapis.com in the same run: wait for it.
  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}

resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket" "build_staging" {
  #checkov:skip=CKV_GCP_62:Holds throw-away source tarballs for a week; access logs add nothing.
  #checkov:skip=CKV_GCP_78:Throw-away source tarballs; versioning would only keep deleted ones.
  name                        = "${var.project_id}-${var.name_prefix}-build"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Only build inputs: safe to delete with its contents.
  force_destroy = true

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "build_staging_reader" {
  bucket = google_storage_bucket.build_staging.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}
