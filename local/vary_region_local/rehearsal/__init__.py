"""`make rehearse`: template.yaml deployed by the SAM CLI into an AWS emulator, then run.

The local stack (`make local`, the tests) proves the code against moto and the project's own runner;
it never runs `template.yaml` as CloudFormation creates it. The rehearsal does: it starts MiniStack
(pinned, IAM enforcement on) and the APIFRAME simulator, builds the layer for this machine, deploys
the template with the pinned SAM CLI as docs/deploy.md tells users, and drives the deployed stack's
paths end to end. Where MiniStack differs from AWS, `workarounds.py` says how and why, in this
tooling only (never in the template or the functions).

It lives beside the local stack (local/vary_region_local) because it is the same kind of thing,
developer tooling that stands in for AWS and APIFRAME, and reuses the simulator in-process.
"""
