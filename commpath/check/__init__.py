"""Check layer: each path is judged against a policy; findings carry their evidence."""
