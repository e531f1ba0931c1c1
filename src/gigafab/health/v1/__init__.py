"""gigafab.health.v1: stubs generated from proto/gigafab/health/v1 by `gigafab proto generate`."""
