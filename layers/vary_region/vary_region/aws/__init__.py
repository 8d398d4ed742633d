"""The other AWS resources the functions use: the jobs bucket (S3) and the submit and completion queues (SQS)."""
