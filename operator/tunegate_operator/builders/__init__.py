"""Manifests and configs the operator creates (Jobs, Services, trainer and eval
configs), as pure functions of a spec, an identity and the settings. No I/O here."""
