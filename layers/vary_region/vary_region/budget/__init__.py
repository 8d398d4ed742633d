"""The budget guard: credits reserved per UTC day and month against the owner's limits, and the
provider account's balance."""
