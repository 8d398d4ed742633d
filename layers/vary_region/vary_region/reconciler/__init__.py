"""The reconciler function's use case: move quiet jobs on (lost webhooks, lost hand-ons, age limits)."""
