"""Training TAP: prompt sampling, losses, configs and the training engine."""
