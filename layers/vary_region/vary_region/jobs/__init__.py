"""A job's state and how it moves: the job table, webhook reports, the reconciler, the completion queue."""
