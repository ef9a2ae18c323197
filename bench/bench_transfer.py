"""Starting SST-2 and SST-5 from the demo model (``--init-from artifacts/demo``): how much of the
gain is the seed, and what five seeds averaged give.

    python bench/bench_transfer.py --threads 1 --datasets sst2-transfer,sst5-transfer --size 5

Each member is the ``<name>-transfer`` recipe of bench_accuracy.py (the sentence recipe with 128
hidden units, the demo model's size, started from the demo model) with seeds 13, 14, ...; all on
one split. Members are kept in bench/out/ens/ and reused; results go to bench/out/transfer.json and
the BENCHMARKS.md section is rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_accuracy import TARGETS, base_name, cli_command, recipe  # noqa: E402
from bench.bench_ensemble import measure_and_record  # noqa: E402
from bench.common import ROOT, update_section  # noqa: E402

RESULTS = ROOT / "bench" / "out" / "transfer.json"


def render(results: dict) -> str:
    rows = []
    for name, r in results.items():
        member = np.array(r["member_test"]) * 100
        valid = np.array(r["member_valid"]) * 100
        target = TARGETS.get(base_name(name))
        met_single = sum(a >= target for a in r["member_test"]) if target else 0
        rows.append(f"| {name} | {r['size']} | {valid.mean():.2f} ± {valid.std(ddof=1):.2f} "
                    f"| {member.mean():.2f} ± {member.std(ddof=1):.2f} ({member.min():.2f} to {member.max():.2f}) "
                    f"| {met_single} of {r['size']} | {r['valid_by_size'][-1]:.2%} | **{r['ensemble_test']:.2%}** "
                    f"| >= {target:.0%} ({'met' if r['ensemble_test'] >= target else 'not met'}) "
                    f"| {sum(s or 0 for s in r['member_train_seconds']) / 60:.0f} min |")
    chosen = []
    for base in dict.fromkeys(base_name(n) for n in results):
        for separate in (False, True):
            options = [n for n in results if base_name(n) == base and n.endswith("-separate") == separate]
            if not options:
                continue
            best = max(options, key=lambda n: np.mean(results[n]["member_valid"]))
            r, target = results[best], TARGETS.get(base)
            chosen.append(f"{base}{', with fitted n-grams' if separate else ''}: `{best}` (mean member validation "
                          f"{np.mean(r['member_valid']):.2%}): member test mean {np.mean(r['member_test']):.2%}, "
                          f"ensemble {r['ensemble_test']:.2%}, target {target:.0%} "
                          f"{'met' if np.mean(r['member_test']) >= target else 'not met'} on the mean")
    commands = "\n".join(f"- {name}: `{cli_command(recipe(name, None)[0])}` (seeds {r['seeds'][0]}.."
                         f"{r['seeds'][-1]}, `--split-seed 13`)" for name, r in results.items())
    return f"""## Starting from the IMDB model (issue: core engine)

Command: `python bench/bench_transfer.py --threads 1 --datasets {','.join(results)} --size 5` (members in
`bench/out/ens/`, results in `bench/out/transfer.json`).

`--init-from artifacts/demo` (`-transfer`) starts the sentence models from the demo model's LSTM,
attention and word vectors (trained on IMDB's 22,500 labelled training reviews); `-rtransfer`
starts from `imdb-ratings`, the same IMDB recipe trained 4 epochs with a second head for the 1-10
star rating. They then train on SST's training split and are selected on its dev split exactly
like the other recipes; the test split is never seen. This uses more data than the SST training
split (IMDB's reviews and their labels, as the pretrained vectors use Wikipedia and Gigaword),
which each name says. `-separate` adds the fitted n-gram part (`python -m core fit-ngrams` on each
member). The rating source was tried after the plain transfer missed SST-5's target on the
five-seed mean (47.59%). Five seeds of each, and the five averaged:

| recipe | members | member validation, % (mean ± sd) | member test, % (mean ± sd, range) | members at the target | ensemble validation | ensemble test | target | training time (CPU) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

The rating source is the `imdb-ratings` run of the accuracy section, saved where these commands
read it: its command there plus `--out bench/out/runs --run-id imdb-rating-source` (17 minutes on
one thread here; on its own it scores 90.52% on IMDB's test set, the 8-class star rating 44.9%).

Chosen by the members' mean validation accuracy (test never chooses):
{chr(10).join(f"- {line}" for line in chosen)}

{commands}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="sst2-transfer,sst5-transfer")
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in [] if args.render_only else args.datasets.split(","):
        measure_and_record(name, args.size, RESULTS)
    results = json.loads(RESULTS.read_text())
    markdown = render({n: results[n] for n in sorted(results, key=lambda n: (base_name(n), n.count("-"), n))})
    print(markdown)
    if not args.no_write:
        update_section("bench_transfer", markdown)


if __name__ == "__main__":
    main()
