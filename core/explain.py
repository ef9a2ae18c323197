"""Per-token explanations of one prediction: attention weights, Integrated Gradients, occlusion.

An explanation is a plain record (``Explanation``); turning it into HTML or JSON is
``core.render``'s job. Three methods:

- ``attention``: the attention-pooling weights the model used (only for ``pooling="attention"``).
  They say where the model looked, not which class a token argues for, so they are never negative.
- ``ig``: Captum ``LayerIntegratedGradients`` on the embedding layer, from an all-``<pad>`` baseline
  (a zero embedding) to the text, with the same lengths at every step. The attributed function is
  the **log-odds of the target class**, ``log(p / (1 - p))``: for a binary model (one logit) that is
  the logit for the positive class and ``-logit`` for the negative class; for a multi-class model it
  is ``z_c - logsumexp(z_j, j != c)``. Completeness is measured on every call:
  ``|sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)|``.
- ``occlusion``: Captum ``FeatureAblation``; each token in turn is replaced by ``<pad>`` (or
  ``<unk>``) and the drop in the same log-odds is its score. Model-agnostic, a check on the others.

Every explanation also carries its own deletion test (``deletion_test``): remove the top-k tokens
and k random ones, and compare how much the target class's probability falls.

Explanations run on a private CPU copy of the model in eval mode, so a model that is training,
or lives on a GPU (cuDNN has no LSTM backward pass in eval mode), is never touched.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from core.models import EnsembleClassifier, LSTMClassifier, logits_to_probs
from core.text import PAD_ID, UNK_ID

METHODS = ("ig", "attention", "occlusion")
IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
OCCLUSION_TOKENS = {"pad": PAD_ID, "unk": UNK_ID}
SCORE_UNITS = {
    "ig": "contribution to the target class's log-odds",
    "occlusion": "drop in the target class's log-odds when the token is replaced",
    "attention": "attention weight (where the model looked; sums to 1, says nothing about the class)",
}


@dataclass
class Explanation:
    text: str
    tokens: list[str]  # exactly the tokens the model read, after truncation
    scores: list[float]  # one per token
    method: str  # ig | attention | occlusion
    label: str  # the predicted class
    target: str  # the class the scores are about
    probs: dict[str, float]  # class -> probability, in the model's label order
    delta: float | None = None  # IG convergence delta: sum(attributions) - (f(x) - f(baseline))
    truncated: int = 0  # tokens cut off beyond max_length (not shown, not explained)
    unknown: list[bool] = field(default_factory=list)  # the token is not in the vocabulary: read as <unk>
    diagnostics: dict = field(default_factory=dict)  # completeness error, deletion test, timings...

    def to_dict(self) -> dict:
        out = asdict(self)
        scores = out.pop("scores")
        return {"text": out.pop("text"), "tokens": out.pop("tokens"), "attributions": scores, **out}

    def top(self, k: int) -> list[int]:
        """Positions of the k highest scores, highest first (ties: earlier position first)."""
        order = sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], i))
        return order[:k]


def _private_copy(model: LSTMClassifier) -> LSTMClassifier:
    """A CPU, eval-mode, no-grad copy: the caller's model keeps its device, mode and grads."""
    clone = type(model)(model.config)
    clone.load_state_dict({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def _log_odds(logits: torch.Tensor, target: int) -> torch.Tensor:
    """(B, 1 or C) logits -> (B,) log-odds of class ``target``."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return logits[:, 0] if target == 1 else -logits[:, 0]
    others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=-1)
    return logits[:, target] - torch.logsumexp(others, dim=-1)


def _collate(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


class Explainer:
    """Explains a ``Predictor``'s decisions token by token.

    ``Explainer(predictor).explain("a gripping film", method="ig")`` -> ``Explanation``. The
    explainer holds its own CPU copy of the model (taken when it is built) and a lock, so one
    explainer can be shared by threads.
    """

    def __init__(self, predictor, task: int = 0):
        if not hasattr(predictor, "model") or not isinstance(predictor.model, (LSTMClassifier, EnsembleClassifier)):
            raise ValueError("Explanations need the PyTorch model of a run (Predictor.load(run_dir)); "
                             "exported ONNX models and bundles cannot be explained.")
        if not 0 <= task < len(predictor.labels):
            raise ValueError(f"The 'task' parameter must be in [0, {len(predictor.labels)}). Got {task} instead.")
        self.predictor = predictor
        self.task = task
        self.labels = list(predictor.labels[task])
        self.model = _private_copy(predictor.model)
        self._lock = threading.Lock()

    @property
    def has_attention(self) -> bool:
        return self.model.config.pooling == "attention"

    # -- small pieces -------------------------------------------------------------------------
    def _target_index(self, target: str | None, predicted: int) -> int:
        if target is None or target == "":
            return predicted
        if target not in self.labels:
            raise ValueError(f"Unknown target label {target!r}: this model's labels are "
                             f"{', '.join(map(repr, self.labels))}.")
        return self.labels.index(target)

    def _logits(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids, lengths = _collate(sequences)
        with torch.no_grad():
            logits, weights = self.model(ids, lengths)
        return logits[self.task], weights

    def probabilities(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """(N, C) class probabilities for id sequences (any lengths >= 1)."""
        return logits_to_probs(self._logits(sequences)[0]).numpy()

    def _forward_log_odds(self, target: int):
        model, task = self.model, self.task

        def forward(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            logits, _ = model(ids, lengths)
            return _log_odds(logits[task], target)  # (B,)
        return forward

    # -- the three methods --------------------------------------------------------------------
    def _attention(self, ids: list[int]) -> tuple[list[float], dict]:
        if not self.has_attention:
            raise ValueError(f"This model pools with {self.model.config.pooling!r}, so it has no attention "
                             f"weights to show. Use --method ig or occlusion, or train a model with "
                             f"--pooling attention.")
        _, weights = self._logits([ids])
        return weights[0].tolist(), {}

    def _integrated_gradients(self, ids: list[int], target: int, n_steps: int, ig_method: str,
                              internal_batch_size: int | None) -> tuple[list[float], float, dict]:
        from captum.attr import LayerIntegratedGradients

        if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 2:
            raise ValueError(f"The 'n_steps' parameter must be an int >= 2. Got {n_steps!r} instead.")
        if ig_method not in IG_METHODS:
            raise ValueError(f"The 'ig_method' parameter must be one of {', '.join(IG_METHODS)}. "
                             f"Got {ig_method!r} instead.")
        forward = self._forward_log_odds(target)
        inputs, lengths = _collate([ids])
        baseline = torch.full_like(inputs, PAD_ID)
        with torch.no_grad():
            f_x, f_baseline = forward(torch.cat([inputs, baseline]), lengths.repeat(2)).tolist()
        # an n-gram model beside the LSTM is a second path from the ids: attribute to both layers
        ngrams = getattr(self.model, "ngrams", None)
        layers = [self.model.embedding] if ngrams is None else [self.model.embedding, ngrams]
        with warnings.catch_warnings():
            # the n-gram scores do not depend on the word vectors: the case Captum's warning is about is not this one
            warnings.filterwarnings("ignore", message="Multiple layers provided")
            lig = LayerIntegratedGradients(forward, layers if len(layers) > 1 else layers[0])
        attributions = lig.attribute(
            inputs, baselines=baseline, additional_forward_args=(lengths,), n_steps=n_steps,
            method=ig_method, internal_batch_size=internal_batch_size or n_steps)
        if not isinstance(attributions, (list, tuple)):
            attributions = [attributions]
        scores = sum(a.sum(dim=-1) for a in attributions)[0]  # (T,)
        total = float(scores.sum())
        gap = f_x - f_baseline
        delta = total - gap  # Captum's convergence delta, from the two end points computed above
        error = abs(total - gap) / abs(gap) if abs(gap) > 1e-8 else (0.0 if abs(total) < 1e-6 else math.inf)
        return scores.tolist(), delta, {
            "f_x": f_x, "f_baseline": f_baseline, "sum_attributions": total,
            "completeness_error": error, "n_steps": n_steps, "ig_method": ig_method,
            "baseline": "<pad> (zero embedding), same length"}

    def _occlusion(self, ids: list[int], target: int, replace_with: str) -> tuple[list[float], dict]:
        from captum.attr import FeatureAblation

        if replace_with not in OCCLUSION_TOKENS:
            raise ValueError(f"The 'replace_with' parameter must be one of {', '.join(OCCLUSION_TOKENS)}. "
                             f"Got {replace_with!r} instead.")
        forward = self._forward_log_odds(target)
        inputs, lengths = _collate([ids])
        ablation = FeatureAblation(forward)
        with torch.no_grad():
            scores = ablation.attribute(inputs, baselines=OCCLUSION_TOKENS[replace_with],
                                        additional_forward_args=(lengths,),
                                        perturbations_per_eval=min(len(ids), 64))
        return scores[0].float().tolist(), {"replaced_with": f"<{replace_with}>"}

    # -- public -------------------------------------------------------------------------------
    def explain(self, text: str, method: str = "ig", target: str | None = None, *, n_steps: int = 50,
                ig_method: str = "gausslegendre", internal_batch_size: int | None = None,
                replace_with: str = "pad", deletion_k: int = 3, seed: int = 0) -> Explanation:
        """Explain the model's decision on ``text``; ``target`` defaults to the predicted class."""
        if method not in METHODS:
            raise ValueError(f"The 'method' parameter must be one of {', '.join(METHODS)}. Got {method!r} instead.")
        encoded = self.predictor.encoder.encode(str(text))
        if encoded.empty:
            raise ValueError("The text has no tokens the model can read: type a few words to explain.")
        ids = list(encoded.ids)
        probs = self.probabilities([ids])[0]
        predicted = int(np.argmax(probs))
        target_index = self._target_index(target, predicted)
        started = time.perf_counter()
        delta = None
        with self._lock:  # Captum hooks the shared embedding layer while it runs
            if method == "attention":
                scores, diagnostics = self._attention(ids)
            elif method == "ig":
                scores, delta, diagnostics = self._integrated_gradients(
                    ids, target_index, n_steps, ig_method, internal_batch_size)
            else:
                scores, diagnostics = self._occlusion(ids, target_index, replace_with)
        diagnostics["seconds"] = time.perf_counter() - started
        diagnostics["score_units"] = SCORE_UNITS[method]
        vocab = self.predictor.encoder.vocab
        explanation = Explanation(
            text=str(text), tokens=list(encoded.tokens), scores=[float(s) for s in scores], method=method,
            label=self.labels[predicted], target=self.labels[target_index],
            probs={label: float(p) for label, p in zip(self.labels, probs)}, delta=delta,
            truncated=encoded.truncated, unknown=[t not in vocab for t in encoded.tokens],
            diagnostics=diagnostics)
        explanation.diagnostics["deletion"] = self.deletion_test(explanation, k=deletion_k, seed=seed, ids=ids)
        return explanation

    def deletion_test(self, explanation: Explanation, k: int = 3, seed: int = 0, n_random: int = 20,
                      ids: list[int] | None = None) -> dict:
        """Remove the k top-scored tokens, and (``n_random`` times, seeded) k random tokens.

        Reports the fall in the target class's probability for each, whether the predicted label
        flips, and ``score`` = top-k fall minus the mean random fall (above 0: the explanation found
        tokens that matter more than chance). With target == predicted class (the default), the
        target's probability is the predicted class's probability.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
        if ids is None:
            encoded = self.predictor.encoder.encode(explanation.text)
            if list(encoded.tokens) != list(explanation.tokens):
                raise ValueError("This explanation was made for other tokens than this model reads: "
                                 "explain the text again with this model.")
            ids = list(encoded.ids)
        n = len(ids)
        k = min(k, n)
        target = self.labels.index(explanation.target)
        rng = np.random.default_rng(seed)
        top = explanation.top(k)
        random_sets = [sorted(rng.choice(n, size=k, replace=False).tolist()) for _ in range(n_random)]

        def without(positions) -> list[int]:
            drop = set(positions)
            kept = [t for i, t in enumerate(ids) if i not in drop]
            return kept or [UNK_ID]  # an empty text is read as one <unk>, as the encoder does

        probs = self.probabilities([ids, without(top)] + [without(s) for s in random_sets])
        base, after_top, after_random = probs[0], probs[1], probs[2:]
        predicted = int(np.argmax(base))
        top_drop = float(base[target] - after_top[target])
        random_drops = base[target] - after_random[:, target]
        random_flips = np.argmax(after_random, axis=1) != predicted
        return {
            "k": k, "removed": [explanation.tokens[i] for i in top],
            "top_drop": top_drop, "random_drop": float(random_drops.mean()),
            "top_flip": bool(int(np.argmax(after_top)) != predicted),
            "random_flip_rate": float(random_flips.mean()),
            "score": top_drop - float(random_drops.mean()), "n_random": n_random, "seed": seed}


def explain(predictor, text: str, method: str = "ig", target: str | None = None, **options) -> Explanation:
    """One-off explanation: ``explain(Predictor.load(run_dir), "a gripping film", "ig")``."""
    return Explainer(predictor).explain(text, method, target, **options)


def deletion_test(predictor, text: str, explanation: Explanation, k: int = 3, seed: int = 0) -> dict:
    """The deletion test of ``explanation`` (see ``Explainer.deletion_test``) for ``text``."""
    if text != explanation.text:
        explanation = Explanation(**{**explanation.__dict__, "text": text})
    return Explainer(predictor).deletion_test(explanation, k=k, seed=seed)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant."""
    if len(a) != len(b):
        raise ValueError(f"Score lists differ in length: {len(a)} and {len(b)}.")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks
