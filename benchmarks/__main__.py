"""`python -m benchmarks [name]`: run the benchmarks; each prints ratios against a
baseline measured in the same run."""

from __future__ import annotations

import sys

from benchmarks import (
    eval_speed,
    finished_gates,
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
}


def main() -> None:
    wanted = sys.argv[1:] or list(BENCHMARKS)
    for name in wanted:
        print(f"== {name}")
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
