"""The tunegate.dev/v1alpha1 API as pydantic models: the single source of the CRDs
(`python -m tunegate_operator.api.crds`). Pure: no I/O here."""
