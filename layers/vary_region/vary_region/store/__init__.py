"""The DynamoDB job table: the only code that knows its attribute names and condition expressions."""
