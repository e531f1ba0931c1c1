"""Node agents and per-site health gateways."""
