"""Publish a finished IMDB run as the demo model in artifacts/demo/.

    python bench/make_demo.py --run bench/out/runs/<imdb run>

Copies the files a Predictor needs (config, vocabulary, labels, weights, metrics, history,
status) but not the run's test split (that is the dataset's text), checks the size budget and
writes artifacts/demo/README.md with the test accuracy and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402
from core.predict import Predictor  # noqa: E402

FILES = ("config.json", "vocab.json", "labels.json", "model.safetensors", "metrics.json", "history.jsonl",
         "status.json")
BUDGET_BYTES = 15 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a completed run directory")
    parser.add_argument("--command", required=True, action="append",
                        help="the python -m core command(s) that made it (repeat for several)")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "demo"))
    args = parser.parse_args()
    run, out = Path(args.run), Path(args.out)
    Predictor.load(run)  # refuses unfinished runs
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(run / name, out / name)
    config = json.loads((out / "config.json").read_text())
    for key in ("train", "valid", "test"):  # local paths of the machine that trained it
        value = config["run"]["data"].get(key)
        if value:
            config["run"]["data"][key] = "../shared/data/imdb/" + Path(value).name
    if "fitted_from" in config:  # a path on the machine that made it; the README gives the commands instead
        config["fitted_from"] = "the run of the first command in README.md"
        metrics_file = out / "metrics.json"
        metrics_file.write_text(json.dumps({**json.loads(metrics_file.read_text()),
                                            "fitted_from": config["fitted_from"]}, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    size = sum((out / name).stat().st_size for name in FILES)
    assert size <= BUDGET_BYTES, f"demo model is {size / 1e6:.1f} MB, over the 15 MB budget"
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]["primary"]
    predictor = Predictor.load(out)
    sample = predictor.predict(["One of the best films I have seen this year.", "A dull, lifeless waste of time."])
    model = config["model"]
    wide = ""
    if model.get("ngrams"):
        fit = metrics.get("ngram_fit", {}).get("tasks", [{}])[0]
        wide = (f"- Beside the LSTM, a linear model of the review's words and hashed n-grams up to {model['ngrams']} "
                f"words\n  ({model['ngram_buckets']:,} rows), fitted after the LSTM as a logistic regression and added "
                f"to its logit\n  with weight {fit.get('weight', 0):g} (chosen on validation: accuracy "
                f"{fit.get('valid_lstm', 0):.2%} for the LSTM alone, {fit.get('valid_fused', 0):.2%} with it); "
                f"the sum is divided\n  by {fit.get('temperature', 1):.2f} so that its probabilities stay calibrated "
                f"(validation log loss {fit.get('valid_loss_lstm', 0):.3f}\n  alone, "
                f"{fit.get('valid_loss_fused', 0):.3f} with it).\n")
    (out / "README.md").write_text(f"""# Demo model: English movie-review sentiment

A bidirectional LSTM trained on the IMDB Large Movie Review Dataset (Maas et al., 2011): 22,500
training reviews, 2,500 held out for validation, evaluated on the standard 25,000-review test set.
It is here so that prediction, explanation and export work right after install.

- Test accuracy: **{test['accuracy']:.2%}** (macro F1 {test['macro_f1']:.4f}, ROC AUC {test['auc']:.4f}), best
  validation epoch {metrics['best_epoch']} of {metrics['epochs_run']}, {metrics['train_seconds'] / 60:.0f} minutes of
  training on a 2-core CPU (one thread).
{wide}- Labels: `neg`, `pos`. Size: {size / 1e6:.1f} MB in all.
- Example: "{sample[0].text}" -> {sample[0].label} ({max(sample[0].probs.values()):.2f});
  "{sample[1].text}" -> {sample[1].label} ({max(sample[1].probs.values()):.2f}).

Reproduce it (the full recipe is also in `config.json`):

```bash
{chr(10).join(args.command)}
python bench/make_demo.py --run <the printed run directory> --command "<that command>"
```

Intended use: a demonstration of the studio on English movie reviews. Limitations: trained on
one domain (movie reviews, 2011 and earlier) and on English only; reviews longer than
{config['run']['text']['max_length']} tokens are read up to that length; it has not been checked for bias.
""")
    print(f"demo model written to {out} ({size / 1e6:.1f} MB, test accuracy {test['accuracy']:.4f})")


if __name__ == "__main__":
    main()
