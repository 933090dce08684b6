"""Command line of the trainer image."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tunegate_contract.base import ConfigError
from tunegate_contract.trainer_config import load_trainer_config
from tunegate_trainer.data import DataError
from tunegate_trainer.storage import StorageError, store_from_env

log = logging.getLogger("tunegate")


def _audit() -> int:
    """Stream the training (and validation) data through the audit on every CPU the pod
    may use; replay data is general data, not audited here."""
    import itertools

    from tunegate_trainer.audit import audit_chunks
    from tunegate_trainer.audit.contamination import eval_items
    from tunegate_trainer.audit.engine import available_cpus, chunked
    from tunegate_trainer.audit.local import shape_inputs

    config = load_trainer_config()
    store = store_from_env(config.storage.endpoint, config.storage.region)
    sources = [config.data.train] + ([config.data.validation] if config.data.validation else [])
    eval_sets = {uri: eval_items(store.iter_lines(uri)) for uri in config.audit.contamination_sets}
    result = audit_chunks(
        lambda: chunked(itertools.chain.from_iterable(store.iter_lines(s) for s in sources)),
        settings=config.audit,
        row_format=config.data,
        eval_sets=eval_sets,
        workers=available_cpus(),
        shape=shape_inputs(
            store,
            model_uri=config.model.uri,
            max_seq_length=config.training.max_seq_length,
            replay=config.data.replay,
            row_format=config.data,
        ),
    )
    store.write_json(config.artifacts.audit_report, result.report().to_json())
    print(json.dumps({"verdict": result.verdict, "findings": result.findings}, indent=2))
    return 0


def _train() -> int:
    from tunegate_trainer.train import run

    config = load_trainer_config()
    return run(config, store_from_env(config.storage.endpoint, config.storage.region))


def _eval() -> int:
    import tempfile
    from pathlib import Path

    from tunegate_contract.eval_config import load_eval_config
    from tunegate_trainer.evaluate import run, summary

    config = load_eval_config()
    store = store_from_env(config.storage.endpoint, config.storage.region)
    results = run(config, store, workdir=Path(tempfile.mkdtemp(prefix="tunegate-eval-")))
    print(summary(results))
    return 0


def _prepare_smollm2() -> int:
    from tunegate_trainer.smollm2 import prepare

    print(prepare())
    return 0


COMMANDS = {
    "audit": _audit,
    "train": _train,
    "eval": _eval,
    "prepare-smollm2": _prepare_smollm2,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunegate_trainer")
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return COMMANDS[args.command]()
    except (ConfigError, DataError, StorageError) as exc:
        # A clear one-line reason (it becomes the pod's termination message), no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
