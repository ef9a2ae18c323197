"""LSTM Text Classification Studio engine: data, tokens, model, training, metrics, runs.

Works without the browser app: ``python -m core --help``.
"""

__version__ = "0.1.0"
