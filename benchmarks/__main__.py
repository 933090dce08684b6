"""`python -m benchmarks [name]` (`audit` also takes row counts, `load` the numbers of
FineTuneJobs and EvalGates): run the benchmarks; each prints ratios against a baseline
measured in the same run."""

from __future__ import annotations

import sys

from benchmarks import (
    audit_speed,
    eval_speed,
    faults,
    finished_gates,
    load,
    operator_latency,
    promotion,
    trainer_throughput,
)

BENCHMARKS = {
    "operator": operator_latency.main,
    "trainer": trainer_throughput.main,
    "eval": eval_speed.main,
    "promotion": promotion.main,
    "gates": finished_gates.main,
    "audit": audit_speed.main,
    "faults": faults.main,
    "load": load.main,
}


def main() -> None:
    # `audit` takes row counts: python -m benchmarks audit 100000
    sized = {"audit": audit_speed.main, "load": load.main}
    if sys.argv[1:2] and sys.argv[1] in sized and sys.argv[2:]:
        print(f"== {sys.argv[1]}")
        sized[sys.argv[1]]([int(size) for size in sys.argv[2:]])
        return
    wanted = sys.argv[1:] or list(BENCHMARKS)
    for name in wanted:
        print(f"== {name}")
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
