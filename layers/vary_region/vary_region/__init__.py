"""vary-region: the domain package shared by the pipeline's Lambda functions (deployed as a layer)."""
