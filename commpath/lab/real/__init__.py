"""The real lab: upstream Kubernetes components in network namespaces, judged by the audit log."""
