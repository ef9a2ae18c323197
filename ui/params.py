"""The hyperparameter form, built from the config dataclasses and the CLI's flag table.

Defaults come from ``RunConfig()``; help texts come from ``core.cli.TRAIN_FLAGS`` so the app and
the command line describe each option the same way. Dataclass fields without a CLI flag still
get a form field (in the Advanced group), so options added to the dataclasses later show up here.
The pretraining form is built the same way from ``EncoderRunConfig()`` and ``PRETRAIN_FLAGS``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields

from core.cli import PRETRAIN_FLAGS, TRAIN_FLAGS
from core.models import POOLINGS
from core.pipeline import DataConfig, RunConfig
from core.pretrain import EncoderRunConfig
from core.text import TOKENIZERS, TRUNCATIONS
from core.training import AMP_MODES, DEVICES, NGRAM_FITS, OPTIMIZERS, SELECT_METRICS

PRETRAINED_CHOICES = ("", "glove-6b-50d")  # "" = random initialisation
CHOICES = {"tokenizer": TOKENIZERS, "pooling": POOLINGS, "optimizer": OPTIMIZERS,
           "select_metric": SELECT_METRICS, "amp": AMP_MODES, "device": DEVICES,
           "pretrained_vectors": PRETRAINED_CHOICES, "truncation": TRUNCATIONS, "ngram_fit": NGRAM_FITS}
BASIC = ("epochs", "batch_size", "lr", "embedding_dim", "hidden_dim", "num_layers", "bidirectional",
         "dropout", "pooling", "max_length", "tokenizer", "pretrained_vectors")
# set by the pipeline (from the data, or the current n-gram hash), never by hand
DERIVED = {("model", "vocab_size"), ("model", "num_classes"), ("model", "padding_idx"), ("model", "ngram_hash")}
PRETRAIN_BASIC = ("epochs", "max_steps", "batch_size", "lr", "hidden_dim", "pretrained_vectors", "output_vocab",
                  "tokenizer")
# chosen with the texts (text_col) or with the encoder picker (init_from), not as plain fields
PRETRAIN_OWN_WIDGETS = ("text_col", "init_from")
PRETRAIN_PREFIX = "pt"
# data-split fields live on the Data page; they share these widget keys
DATA_KEYS = {"valid_fraction": "hp.data.valid_fraction", "test_fraction": "hp.data.test_fraction"}


@dataclass(frozen=True)
class Param:
    section: str | None  # text | model | train, or None for RunConfig itself
    name: str
    default: object
    help: str
    flag: str | None  # the CLI flag, None when the CLI has none
    choices: tuple | None = None
    prefix: str = "hp"  # hp: the training form; pt: the pretraining form

    @property
    def key(self) -> str:
        return f"{self.prefix}.{self.section or 'run'}.{self.name}"

    @property
    def basic(self) -> bool:
        return self.name in (PRETRAIN_BASIC if self.prefix == PRETRAIN_PREFIX else BASIC)

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()


def params() -> list[Param]:
    """Every tunable option, in CLI-table order, then dataclass fields the CLI has no flag for."""
    defaults = RunConfig()
    out: list[Param] = []
    seen = set()
    for flag, section, name, help_text in TRAIN_FLAGS:
        holder = defaults if section is None else getattr(defaults, section)
        out.append(Param(section, name, getattr(holder, name), help_text, flag, CHOICES.get(name)))
        seen.add((section, name))
    for section in ("text", "model", "train"):
        for f in fields(getattr(defaults, section)):
            if (section, f.name) in seen or (section, f.name) in DERIVED:
                continue
            default = getattr(getattr(defaults, section), f.name)
            if isinstance(default, (bool, int, float, str)):
                out.append(Param(section, f.name, default, f"{section}.{f.name} (no command-line flag; "
                                 f"set it with --config FILE.json)", None, CHOICES.get(f.name)))
    return out


def pretrain_params() -> list[Param]:
    """The options of ``python -m core pretrain``, in its flag-table order, but the texts' column and
    the encoder to go on from (the pretraining section has widgets of its own for those)."""
    defaults = EncoderRunConfig()
    out = []
    for flag, section, name, help_text in PRETRAIN_FLAGS:
        if name in PRETRAIN_OWN_WIDGETS:
            continue
        holder = defaults if section is None else getattr(defaults, section)
        out.append(Param(section, name, getattr(holder, name), help_text, flag, CHOICES.get(name),
                         prefix=PRETRAIN_PREFIX))
    return out


def _apply(cfg, all_params: list[Param], values: dict[str, object]):
    for p in all_params:
        if p.key not in values:
            continue
        value = values[p.key]
        if isinstance(p.default, int) and not isinstance(p.default, bool) and isinstance(value, float) \
                and value.is_integer():
            value = int(value)
        setattr(cfg if p.section is None else getattr(cfg, p.section), p.name, value)
    return cfg


def build_config(values: dict[str, object], data: DataConfig) -> RunConfig:
    """A RunConfig from form values keyed by ``Param.key``; missing keys keep their defaults."""
    return _apply(RunConfig(data=data), params(), values)


def build_pretrain_config(values: dict[str, object]) -> EncoderRunConfig:
    """An EncoderRunConfig from pretraining-form values keyed by ``Param.key``; missing keys keep their defaults."""
    return _apply(EncoderRunConfig(), pretrain_params(), values)


def validate(cfg: RunConfig) -> None:
    """Raise ValueError naming the parameter, as the CLI does."""
    cfg.validate()


def _flag_value(value) -> str:
    return shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))


def cli_args(cfg: RunConfig, train_file: str = "") -> tuple[list[str], list[str]]:
    """Arguments for ``python -m core train`` that repeat ``cfg``; second list: options the CLI has no
    flag for (these need ``--config``). Hyperparameters equal to their defaults are left out."""
    defaults = RunConfig()
    d, dd = cfg.data, defaults.data
    args: list[str] = []
    if d.dataset:
        args += ["--dataset", shlex.quote(d.dataset)]
    else:
        args += ["--train", shlex.quote(train_file or d.train or "YOUR_FILE.csv")]
    for flag, value, default in (("--text-col", d.text_col, dd.text_col), ("--label-col", d.label_col, dd.label_col),
                                 ("--valid-fraction", d.valid_fraction, dd.valid_fraction),
                                 ("--test-fraction", d.test_fraction, dd.test_fraction)):
        if value != default:
            args += [flag, _flag_value(value)]
    missing = []
    for p in params():
        holder = cfg if p.section is None else getattr(cfg, p.section)
        base = defaults if p.section is None else getattr(defaults, p.section)
        value, default = getattr(holder, p.name), getattr(base, p.name)
        if value == default:
            continue
        if p.flag is None:
            missing.append(f"{p.section}.{p.name}={value!r}")
        elif isinstance(default, bool):
            args.append(p.flag if value else "--no-" + p.flag[2:])
        else:
            args += [p.flag, _flag_value(value)]
    return args, missing


def cli_command(cfg: RunConfig, train_file: str = "", runs_dir: str = "") -> str:
    args, _ = cli_args(cfg, train_file)
    if runs_dir:
        args += ["--out", shlex.quote(runs_dir)]
    return "python -m core train " + " ".join(args)


def torchrun_command(cfg: RunConfig, train_file: str = "", runs_dir: str = "", nproc: int = 2) -> str:
    return f"torchrun --nproc_per_node={nproc} -m " + cli_command(cfg, train_file, runs_dir)[len("python -m "):]
