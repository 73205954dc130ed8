"""Compare & Sweeps: every attack on n bundled images — accuracy, image quality, accuracy at equal
gradient budget — and SOAE's η, τ and N sweeps (the paper's Figures 1–3, Table IV)."""

import pandas as pd
import streamlit as st
import torch

from soae_app import batch_runner, cache
from soae_app.figures.common import NOT_APPLICABLE
from soae_app.figures.compare_sweeps import budget_figure, eta_figure, steps_figure, tau_figure
from soae_app.sidebar import Selection, comparable_models, current_selection
from soae_core.analysis import compare_sweeps as compare
from soae_core.analysis.jobs import Job
from soae_core.attacks import ATTACKS
from soae_core.data import SAMPLE_DATASETS
from soae_core.eight_bit import EIGHT_BIT_COLUMN
from soae_core.metrics import PAPER_PSNR_NOTE
from soae_core.targets import targeted_attack_names
from soae_core.transfer import transfer_matrix

st.title("Compare & Sweeps")
st.markdown("One image can mislead. Here the attacks run on many bundled test images with the sidebar's ε and "
            "SOAE settings (PGD: 20 steps of ε/4, as in the paper), batch by batch: watch the progress, stop "
            "whenever you like, and download the tables.")

selection: Selection = current_selection()
info, settings = selection.info, selection.settings
if not info.available:
    st.info(selection.problem or f"{info.name} is unavailable: {info.reason}")
    st.stop()
if info.dataset not in SAMPLE_DATASETS:
    st.info(f"Bundled test images exist for {', '.join(SAMPLE_DATASETS)} only; {info.name} is a {info.dataset} model. "
            "Pick a Fashion-MNIST model in the sidebar.")
    st.stop()

available = len(cache.samples(info.dataset))
left, right = st.columns([1, 2])
n = left.select_slider("Images n", compare.image_counts(available),
                       value=20 if available >= 20 else available, key="compare::n",
                       help="The first n bundled test images, taken class by class in turn (balanced classes).")
attacks = right.multiselect("Attacks", list(ATTACKS), default=["FGSM", "PGD", "SOAE", "SOAE-g"], key="compare::attacks",
                            help="SOAE-g is SOAE without curvature: the same start, steps, α and projection, with "
                                 "the GMRES direction δ̃ replaced by the gradient g. It isolates what the "
                                 "second-order correction adds.")
st.caption(f"{info.name} · ε = {settings.eps * 255:g}/255 · SOAE: N = {settings.steps}, {settings.hvp.replace('_', ' ')} "
           f"products, τ = {settings.tau:g}, η = {settings.eta:g}, Krylov cap {settings.max_krylov}, "
           f"{settings.step_rule} step. Change them in the sidebar. Computed in float32, like the model cards and "
           f"the command-line evaluation (the sidebar's precision applies to the Attack Lab and Perturbation "
           f"Anatomy).")


def kwargs(name: str) -> dict:
    """The attack's keyword arguments from the sidebar's settings, untargeted (accuracy over many images)."""
    return settings.untargeted().attack_kwargs(name, info.dataset)


SHARE_COLUMNS = {
    "Fooled": st.column_config.NumberColumn(
        format="percent", help="Share of the images classified correctly before the attack that the attack makes "
                               "the model get wrong."),
    EIGHT_BIT_COLUMN: st.column_config.NumberColumn(
        format="percent", help="Share of those images whose adversarial example is still misclassified after "
                               "rounding it to 8 bits per pixel, as a saved PNG holds it (at most Fooled)."),
}


def csv_button(column, table: pd.DataFrame, name: str, key: str) -> None:
    """A download button for ``table`` as CSV."""
    column.download_button(f"{name} (CSV)", table.to_csv().encode("utf-8"), f"{info.name}_{key}.csv", "text/csv",
                           on_click="ignore", key=f"download::{key}")


def json_bytes(tables: dict[str, pd.DataFrame], run: batch_runner.RunProgress) -> bytes:
    """Every table of a run with its settings, as JSON."""
    return compare.tables_json(tables, info.name, n, run.complete, settings)


tab_attacks, tab_transfer, tab_eta, tab_tau, tab_steps = st.tabs(["Attacks", "Transfer", "η sweep", "τ sweep",
                                                                  "N sweep"])

with tab_attacks:
    if not attacks:
        st.info("Choose at least one attack.")
    else:
        jobs = [Job.of(name, name, kwargs(name)) for name in attacks]
        try:
            run = batch_runner.run_jobs([(info, job) for job in jobs], n, area="compare", autostart=True)
        except ValueError as error:
            st.error(f"The comparison could not run: {error}")
            st.stop()
        if settings.targeted:
            st.caption("These tables measure accuracy over many images, so the attacks here aim at any wrong "
                       "class; the Transfer tab follows the sidebar's target.")
        results = run.results()
        if results:
            accuracy, quality, budget = (compare.accuracy_table(results), compare.quality_table(results),
                                         compare.budget_table(results))
            st.subheader("Accuracy under attack")
            st.dataframe(accuracy, column_config={
                "Accuracy": st.column_config.NumberColumn(format="percent"),
                **SHARE_COLUMNS,
                "Gradient evals / image": st.column_config.NumberColumn(format="%.1f"),
                "Time (s)": st.column_config.NumberColumn(format="%.1f", help="Attack wall time on this machine."),
                compare.ACCURACY_8BIT: st.column_config.NumberColumn(
                    format="percent", help="Accuracy on the same adversarial images rounded to 8 bits per pixel, as a "
                                           "saved PNG holds them; rounding can undo borderline attacks."),
            }, placeholder=NOT_APPLICABLE)
            st.plotly_chart(budget_figure(budget, accuracy.loc[compare.CLEAN_ROW, "Accuracy"]), key="compare::budget")
            st.caption("Each point is the accuracy after one step of an attack, placed at the gradient evaluations it "
                       "has spent per image (SOAE: one gradient plus one per Hessian-vector product). A curve lower "
                       "and further left is a stronger attack for its cost.")
            st.subheader("Image quality")
            st.dataframe(quality, column_config={
                "PSNR (dB)": st.column_config.NumberColumn(format="%.1f", help="data_range = 1 on [0, 1] images."),
                "PSNR, paper's convention (dB)": st.column_config.NumberColumn(
                    format="%.1f", help=PAPER_PSNR_NOTE),
                "SSIM": st.column_config.NumberColumn(format="%.3f"),
                "L∞ (×1/255)": st.column_config.NumberColumn(format="%.2f"),
                **SHARE_COLUMNS,
            }, placeholder=NOT_APPLICABLE)
            tables = {"accuracy": accuracy, "quality": quality, "budget": budget}
            columns = st.columns(4)
            csv_button(columns[0], accuracy, "Accuracy", "accuracy")
            csv_button(columns[1], quality, "Quality", "quality")
            csv_button(columns[2], budget, "Budget curve", "budget")
            columns[3].download_button("Everything (JSON)", json_bytes(tables, run), f"{info.name}_compare.json",
                                       "application/json", on_click="ignore", key="download::compare_json")


with tab_transfer:
    st.subheader("Transfer between models")
    models_here = comparable_models(info)
    st.caption(f"The attack is computed on each source model (rows) for the same {n} images and shown to every "
               "model (columns). The diagonal is the white-box attack; off the diagonal the model never saw the "
               "attack.")
    if len(models_here) < 2:
        st.info("Transfer needs at least two available models of this dataset.")
    else:
        images, labels = cache.compare_images(info.dataset, n)
        try:
            setup = compare.transfer_setup(cache.model(info), images, labels, settings, info.class_names)
        except ValueError as error:
            st.error(f"The transfer matrix cannot aim at the sidebar's target: {error}")
            st.stop()
        offered = list(targeted_attack_names() if setup.targeted else ATTACKS)
        left, right = st.columns(2)
        transfer_attack = left.selectbox("Attack", offered, index=offered.index("PGD"), key="transfer::attack",
                                         help="Targeted settings offer only the attacks with a targeted mode."
                                         if setup.targeted else None)
        rounding = right.toggle("After 8-bit rounding", key="transfer::rounded",
                                help="Cells for the adversarial images rounded to 8 bits per pixel (saved PNGs).")
        st.caption(setup.note + " Change the target in the sidebar.")
        kept = tuple(int(i) for i in setup.kept)
        goals = None if setup.targets is None else tuple(int(t) for t in setup.targets)
        config = (tuple(i.name for i in models_here), n, transfer_attack, str(kwargs(transfer_attack)), kept, goals)
        if st.button(f"Run {transfer_attack} on {len(models_here)} models", key="transfer::run", type="primary"):
            st.session_state["transfer::config"] = config
        if st.session_state.get("transfer::config") == config:
            nets = {i.name: cache.model(i) for i in models_here}
            by_name = {i.name: i for i in models_here}
            bar = st.progress(0.0, text=f"{transfer_attack} on {models_here[0].name}…")

            def craft(source: str):
                adv = cache.transfer_examples(by_name[source], info.dataset, n, transfer_attack,
                                              kwargs(transfer_attack), kept, goals)
                return torch.from_numpy(adv)

            try:
                matrix = transfer_matrix(nets, images[setup.kept], labels[setup.kept], transfer_attack,
                                         kwargs(transfer_attack), craft=craft,
                                         targets=None if goals is None else torch.tensor(goals),
                                         progress=lambda done, total, name: bar.progress(
                                             done / total, text=f"{transfer_attack}: {done} of {total} source models"))
            except ValueError as error:
                bar.empty()
                st.error(f"The transfer matrix could not be computed: {error}")
            else:
                bar.empty()
                st.dataframe(matrix.table(after_rounding=rounding), column_config={
                    name: st.column_config.NumberColumn(format="%.0f %%") for name in matrix.targets})
                measure = "share classified as the target" if setup.targeted else "accuracy"
                st.caption(f"Rows: the model {transfer_attack} was computed on. Columns: the model classifying the "
                           f"examples; cells: its {measure}. "
                           + ("After 8-bit rounding." if rounding else "Exact (float) examples."))
                st.download_button("Transfer matrix (CSV)", matrix.csv_bytes(),
                                   f"transfer_{transfer_attack}_{n}_images.csv", "text/csv", on_click="ignore",
                                   key="download::transfer")
        else:
            st.caption("Press the button to run it (one attack per model; cached per model).")


SWEEP_TEXT = {
    "eta": ("η — finite-difference step", "SOAE with finite-difference products at each η. The paper (Fig. 1) finds "
            "accuracy rises (the attack weakens) once η > 1e-4."),
    "tau": ("τ — GMRES tolerance", "SOAE at each τ with a Krylov cap of 100: accuracy, time relative to the "
            "largest τ (Fig. 2) and the Krylov dimension m per GMRES solve (Table IV)."),
    "steps": ("N — iterations", "PGD and SOAE for 20 iterations each, accuracy read after every iteration (Fig. 3). "
              "SOAE keeps the sidebar's per-iteration step α/N."),
}
FIGURES = {"eta": eta_figure, "tau": tau_figure, "steps": steps_figure}

for sweep, tab in (("eta", tab_eta), ("tau", tab_tau), ("steps", tab_steps)):
    with tab:
        title, text = SWEEP_TEXT[sweep]
        st.subheader(title)
        st.caption(f"{text} On the same {n} images; each sweep runs only when you press its button.")
        jobs = compare.sweep_jobs(sweep, settings.soae_kwargs(), kwargs("PGD"))
        try:
            run = batch_runner.run_jobs([(info, job) for job in jobs], n, area=f"sweep::{sweep}",
                                        run_label=f"Run the {title.split(' — ')[0]} sweep")
        except ValueError as error:
            st.error(f"The sweep could not run: {error}")
            continue
        results = run.results()
        if results:
            table = compare.sweep_table(sweep, jobs, results)
            st.plotly_chart(FIGURES[sweep](table), key=f"sweep::{sweep}::figure")
            st.dataframe(table, hide_index=True, column_config={
                "Accuracy": st.column_config.NumberColumn(format="percent"),
                **SHARE_COLUMNS,
                "At the cap": st.column_config.NumberColumn(format="percent"),
                "Time (s)": st.column_config.NumberColumn(format="%.1f"),
                "m mean": st.column_config.NumberColumn(format="%.1f"),
                "Time ÷ time at the largest τ": st.column_config.NumberColumn(format="%.2f"),
                "Gradient evals ÷ at the largest τ": st.column_config.NumberColumn(format="%.2f"),
                "η": st.column_config.NumberColumn(format="%.0e"),
                "τ": st.column_config.NumberColumn(format="%.0e"),
                "Gradient evals / image": st.column_config.NumberColumn(format="%.1f"),
            }, placeholder=NOT_APPLICABLE)  # e.g. the 8-bit share of a sweep step no image was kept for
            left, right = st.columns(2)
            csv_button(left, table, f"{title.split(' ')[0]} sweep", f"sweep_{sweep}")
            right.download_button("Sweep (JSON)", json_bytes({sweep: table}, run), f"{info.name}_sweep_{sweep}.json",
                                  "application/json", on_click="ignore", key=f"download::sweep_{sweep}_json")
