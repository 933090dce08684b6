"""The tunegate operator. Each reconciler reads observe (I/O) -> decide (pure) -> apply
(I/O): `reconcile` for FineTuneJobs, `reconcile_evalgate` for EvalGates; `handlers` wires
them to kopf. Only `k8s_io` talks to the Kubernetes API, only `s3_io` to S3."""
