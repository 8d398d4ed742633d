"""The pure domain every function shares: jobs, stages, errors, keys, the credit arithmetic. Standard library only."""
