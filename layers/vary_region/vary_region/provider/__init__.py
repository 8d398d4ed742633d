"""APIFRAME as the pipeline meets it: the HTTP client, its task reports, webhook secrets and URLs."""
