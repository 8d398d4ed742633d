"""The publisher function's use case: a state-change event for every job transition, from the table's stream."""
