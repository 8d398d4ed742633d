"""From an upload under inbox/ to the job's one paid submission: keys, files, job spec, mask, claim."""
