"""The documents that cross between the operator and its pods, defined once.

Pure: pydantic models, one digest, one S3 layout and one timestamp format; no I/O
here beyond reading an env var, and no torch. The operator renders configs and parses
what pods write through these models; the trainer and eval command do the reverse.
"""
