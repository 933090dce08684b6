"""GPU memory planning from a model's config.json (pure: no I/O here)."""
