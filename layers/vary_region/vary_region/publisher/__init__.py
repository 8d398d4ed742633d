"""The publisher function's use case: a state-change event for every job transition, and the answer a
waiting Step Functions task is owed, from the table's stream."""
