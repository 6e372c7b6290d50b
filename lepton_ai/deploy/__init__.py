"""Serving and jobs beyond one machine: Ray Serve deployments and Kubernetes manifests."""
