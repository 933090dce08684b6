"""tunegate's trainer: `python -m tunegate_trainer {audit,train,prepare-smollm2}`."""

__version__ = "0.1.0"
