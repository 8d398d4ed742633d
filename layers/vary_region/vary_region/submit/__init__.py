"""The submit function's use case: from an upload (or a requested job) to the job's one paid submission per stage."""
