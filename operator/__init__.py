"""The gigafab operator: kopf handlers and the pure decisions they apply."""
