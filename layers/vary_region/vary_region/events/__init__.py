"""Events in and out: a state-change event per job transition, published from the table's stream, and
jobs requested by an event."""
