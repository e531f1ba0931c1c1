"""gigafab: control plane of a sovereign multi-site AI facility."""
