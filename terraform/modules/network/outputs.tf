output "network_id" {
  description = "Id of the VPC network."
  value       = google_compute_network.this.id
}

output "subnet_id" {
  description = "Id of the subnet for Direct VPC egress."
  value       = google_compute_subnetwork.run.id
}

output "psa_connection" {
  description = "The private services access peering (Memorystore and Cloud SQL depend on it)."
  value       = google_service_networking_connection.psa.id
}
