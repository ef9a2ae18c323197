"""LSTM Text Classification Studio: page config, navigation and the home page.

Run with ``streamlit run streamlit_app.py``.
"""

from pathlib import Path

import streamlit as st

from ui.resources import device_name, runs_dir
from ui.state import owner_id

HERE = Path(__file__).parent
PAGES = [  # (file, title, icon); pages whose file is missing are left out of the menu
    ("pages/1_Data.py", "Data", ":material/table:"),
    ("pages/2_Train.py", "Train", ":material/model_training:"),
    ("pages/3_Evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/4_Predict.py", "Predict", ":material/keyboard:"),
    ("pages/5_Explain.py", "Explain", ":material/lightbulb:"),
    ("pages/6_Export.py", "Export", ":material/download:"),
    ("pages/7_Runs.py", "Runs", ":material/folder_open:"),
]


def home() -> None:
    st.title("LSTM Text Classification Studio")
    st.write("Train a text classifier on your own data in the browser: upload a table of texts and labels, "
             "train an LSTM in the background while the loss and accuracy curves update, inspect the "
             "metrics and mistakes, and classify new text with the model.")
    st.metric("Training device", device_name(), help="Training uses a CUDA GPU when one is available, "
              "else the CPU.")
    st.subheader("Start in three steps")
    st.markdown(
        "1. **Data** – upload a CSV, TSV or JSONL file (or pick a built-in dataset) and choose the text "
        "and label columns.\n"
        "2. **Train** – keep the defaults or adjust the hyperparameters, press *Start training* and watch "
        "the curves. Set *Ensemble* (under Advanced) to 3 or 5 to train that many models and average their "
        "predictions: steadier accuracy, at that many times the cost.\n"
        "3. **Evaluate** and **Predict** – look at the confusion matrix and misclassified examples, then "
        "type a text to classify it.")
    st.caption(f"Runs are saved under `{runs_dir()}`; each can also be trained from the command line "
               "with `python -m core train`.")


st.set_page_config(page_title="LSTM Text Classification Studio", page_icon=":material/text_fields:",
                   layout="wide")
owner_id()
pages = [st.Page(home, title="Home", icon=":material/home:", default=True)]
pages += [st.Page(path, title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).is_file()]
st.navigation(pages).run()
