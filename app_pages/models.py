"""Models: the zoo as a table from the model cards, and the paper's Table I for the bundled
Fashion-MNIST models, measured here on bundled test images."""

import streamlit as st

from soae_app import batch_runner, cache
from soae_app.figures.common import NOT_APPLICABLE
from soae_app.sidebar import Selection, current_selection, session_models
from soae_core.analysis.models import bundled_models, card_column, table_one, table_one_tasks, zoo_table
from soae_core.attacks import ATTACKS
from soae_core.defaults import PAPER_EPS

st.title("Models")
st.markdown("Every model the lab knows, with what its model card says: how it was trained and how robust it was "
            "when it was trained. Bundled models carry a card; the others need weights you bring.")

infos = session_models()  # your own uploaded weights are rows too
zoo = zoo_table(infos)
pgd_column, soae_column = card_column("PGD-20", PAPER_EPS), card_column("SOAE", PAPER_EPS)
numbers = ["Dataset", "Architecture", "Method", "Available", "Clean accuracy", pgd_column, soae_column, "Test images"]
st.dataframe(zoo[numbers], column_config={
    "Available": st.column_config.CheckboxColumn(help="Weights are present on this machine."),
    "Clean accuracy": st.column_config.NumberColumn(format="percent", help="On the first 'Test images' test images."),
    pgd_column: st.column_config.NumberColumn(format="percent", help="From the model card."),
    soae_column: st.column_config.NumberColumn(format="percent", help="From the model card (exact products, "
                                                                      "N = 4, sign step)."),
}, placeholder=NOT_APPLICABLE)
# A static table: these are sentences, and a data grid cut them at its column width.
st.caption("Training: from the model card — epochs, optimiser, objective, training time and machine. "
           "Note: what the model is, or why it is unavailable.")
st.table(zoo[["Training", "Note"]])
with st.expander("Model cards (JSON)"):
    carded = [info for info in infos if info.card]
    if carded:
        chosen = st.selectbox("Card", [info.name for info in carded], key="models::card")
        st.json(next(info.card for info in carded if info.name == chosen), expanded=1)
    else:
        st.caption("No model card found: train the bundled models (python -m soae_core.train).")

st.header("Table I, on this machine", divider="gray")
bundled = bundled_models(infos)
if not bundled:
    st.info("No bundled Fashion-MNIST model is available yet.")
    st.stop()
selection: Selection = current_selection()
settings = selection.settings
st.markdown(f"The layout of the paper's Table I: accuracy of each bundled model on clean images and under each attack, "
            f"at the sidebar's ε = {settings.eps * 255:g}/255 with its SOAE settings, on the first n bundled test "
            "images (balanced over classes). Computed when you press the button.")
left, right = st.columns([1, 2])
n = left.select_slider("Images n", [10, 20, 50, 100, 200], value=20, key="models::n")
attacks = right.multiselect("Attacks", list(ATTACKS), default=list(ATTACKS), key="models::attacks")
if not attacks:
    st.info("Choose at least one attack.")
    st.stop()
tasks = table_one_tasks(bundled, attacks, settings)
n = min(n, len(cache.samples(bundled[0].dataset)))
try:
    run = batch_runner.run_jobs(tasks, n, area="models::table1", run_label="Compute Table I")
except ValueError as error:
    st.error(f"Table I could not be computed: {error}")
    st.stop()
results = run.results()
if results:
    table = table_one(tasks, results, bundled, attacks)
    st.dataframe(table, column_config={column: st.column_config.NumberColumn(format="percent")
                                       for column in ["Clean", *attacks]})
    st.download_button("Table I (CSV)", table.to_csv().encode("utf-8"), "table_one.csv", "text/csv",
                       on_click="ignore", key="download::table_one")
    st.caption("Lower is a stronger attack (or a weaker model). The paper's Table I reports MNIST with ResNet-18 and "
               "WideResNet; these are small CNNs on Fashion-MNIST, so compare the pattern, not the numbers.")
