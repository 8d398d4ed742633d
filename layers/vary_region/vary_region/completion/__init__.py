"""The completion function's use case: confirm a finished task through Fetch, copy its images, complete the job."""
