"""Local stack of vary-region: the APIFRAME simulator and the local runner (never deployed)."""
