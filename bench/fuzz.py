"""Fuzz the sans-IO core for a million inputs or more (not part of the test suite).

Runs the targets of ``tests/fuzz.py`` (the session, the grammar, the DATA
decoder) under Hypothesis with a large example budget, counts every input
each target saw, and prints the counts, the rate and any failure (with the
input Hypothesis shrank it to).  Exit status 1 on any failure.

    python bench/fuzz.py                    # 1,000,000 inputs in all
    python bench/fuzz.py --inputs 3000000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import fuzz  # noqa: E402

TARGETS = {
    # name: (target, strategies, share of the inputs)
    "session": (fuzz.session_target, {"config": fuzz.configs, "stream": fuzz.streams}, 0.3),
    "grammar": (fuzz.grammar_target, {"text": fuzz.texts, "strict": fuzz.strictness}, 0.35),
    "decoder": (fuzz.decoder_target, {"body": fuzz.decoder_bodies, "sizes": fuzz.chunk_sizes}, 0.35),
}


def run(name: str, inputs: int, seed: int, batch: int, round_inputs: int) -> dict:
    """``inputs`` calls of one target, ``batch`` inputs per Hypothesis example.

    Hypothesis' own cost per example is a few milliseconds; a batch of
    independent inputs per example spreads it, and a failing batch still
    shrinks to the one input that fails.  Hypothesis remembers every
    example of a run (gigabytes after a few thousand large ones), so the
    inputs go in rounds of ``round_inputs``, each a fresh run with its own seed.
    """
    from hypothesis import seed as hypothesis_seed

    target, strategies, _ = TARGETS[name]
    keys = list(strategies)
    count = 0

    def counted(cases) -> None:
        nonlocal count
        for case in cases:
            count += 1
            target(**dict(zip(keys, case, strict=True)))

    cases = st.lists(st.tuples(*strategies.values()), min_size=batch, max_size=batch)
    started = time.monotonic()
    failure = ""
    round_no = 0
    while count < inputs and not failure:
        examples = max(1, -(-min(round_inputs, inputs - count) // batch))
        test = settings(max_examples=examples, deadline=None, database=None,
                        phases=[Phase.generate, Phase.shrink], print_blob=True,
                        suppress_health_check=list(HealthCheck))(given(cases)(counted))
        try:
            hypothesis_seed(seed + round_no)(test)()
        except Exception:  # the failure, shrunk by Hypothesis: report it, go on with the others
            failure = traceback.format_exc(limit=8)
        round_no += 1
    seconds = time.monotonic() - started
    return {"target": name, "inputs": count, "rounds": round_no, "seconds": round(seconds, 1),
            "per_second": round(count / seconds) if seconds else 0, "failure": failure}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--batch", type=int, default=40, help="inputs per Hypothesis example")
    ap.add_argument("--round", type=int, default=10000, dest="round_inputs",
                    help="inputs per Hypothesis run (it keeps every example of a run in memory)")
    ap.add_argument("--only", choices=sorted(TARGETS), action="append")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    names = args.only or list(TARGETS)
    share = sum(TARGETS[n][2] for n in names)
    results = []
    for name in names:
        inputs = max(1, round(args.inputs * TARGETS[name][2] / share))
        print(f"fuzz {name}: about {inputs} inputs (seed {args.seed}) ...", file=sys.stderr, flush=True)
        result = run(name, inputs, args.seed, args.batch, args.round_inputs)
        results.append(result)
        print(f"  {result['inputs']} inputs in {result['seconds']} s ({result['per_second']}/s), "
              f"{'FAILED' if result['failure'] else '0 failures'}", file=sys.stderr, flush=True)
        if result["failure"]:
            print(result["failure"], file=sys.stderr)
    total = sum(r["inputs"] for r in results)
    failed = [r["target"] for r in results if r["failure"]]
    print(f"fuzz: {total} inputs, {len(failed)} failing target(s) {failed or ''}", file=sys.stderr)
    if args.json:
        print(json.dumps({"seed": args.seed, "inputs": total, "results": results}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
