"""Metrics on generated videos of the synthetic world, and the reports built from them."""
