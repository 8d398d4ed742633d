"""The webhook function's use case: verify a provider report, record progress, hand final reports to completion."""
