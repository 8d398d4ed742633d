"""The event bus contract: the source and detail types of the events the pipeline puts and takes."""

SOURCE = "vary-region"
STATE_CHANGE = "Vary Region Job State Change"
JOB_REQUESTED = "Vary Region Job Requested"
