"""Streamlit-side helpers shared by the pages: session-state keys, cached read-only resources,
the hyperparameter form specification, data preparation and plotly figures.

Pages import from here and from ``core``; they never import torch themselves.
"""
