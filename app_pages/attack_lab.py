"""Attack Lab: SOAE and the chosen baselines on one image, side by side."""

import streamlit as st

from soae_app import cache
from soae_app.figures.attack_lab import loss_figure, perturbation_figure, top5_figure
from soae_app.figures.common import display_image
from soae_app.sidebar import Selection, ready_selection
from soae_core.analysis.attack_lab import LabRun, metrics_table, npy_bytes, png_bytes, run_bundle
from soae_core.metrics import PAPER_PSNR_NOTE

st.title("Attack Lab")
st.markdown("SOAE steps along **δ̃ ≈ H⁻¹g**, the Newton direction of the loss, found by GMRES from "
            "Hessian-vector products only. Here it runs beside first-order attacks on the same image and budget.")

selection = ready_selection()


def compute_run(selection: Selection) -> LabRun:
    """``run_lab`` on the image (every attack cached on its own), shown with a status box while
    something actually runs."""
    box = st.empty()
    with box.status(f"Running {', '.join(selection.settings.attack_names)} on {selection.info.name}…") as status:
        run = cache.lab_run(selection.info, selection.image, selection.label, selection.settings,
                            on_attack=lambda name: status.write(f"{name}…"))
    box.empty()
    return run


try:
    run = compute_run(selection)
except ValueError as error:
    st.error(f"The attack could not run: {error}")
    st.stop()

names = run.class_names
clean_confidence = run.clean_probabilities[run.clean_prediction]
st.markdown(f"True class **{names[run.label]}** · the model predicts **{names[run.clean_prediction]}** "
            f"({clean_confidence:.0%}) on the original"
            + ("" if run.clean_prediction == run.label else " — already wrong before any attack") + ".")

columns = st.columns(1 + len(run.outcomes))
columns[0].image(display_image(run.image), caption=f"Original: {names[run.clean_prediction]} "
                 f"({clean_confidence:.0%})", width="stretch")
for column, outcome in zip(columns[1:], run.outcomes):
    verdict = "fooled ✓" if outcome.success else "not fooled"
    column.image(display_image(outcome.adv), width="stretch",
                 caption=f"{outcome.name}: {names[outcome.prediction]} "
                         f"({outcome.probabilities[outcome.prediction]:.0%}) — {verdict}")

st.plotly_chart(perturbation_figure(run, selection.settings.eps), key="lab::perturbations")
st.plotly_chart(top5_figure(run), key="lab::top5")

st.subheader("Metrics")
st.dataframe(metrics_table(run), column_config={
    "Confidence": st.column_config.NumberColumn(format="percent"),
    "Success": st.column_config.CheckboxColumn(help="The prediction differs from the true class."),
    "PSNR (dB)": st.column_config.NumberColumn(format="%.1f", help="data_range = 1 on [0, 1] images. " + PAPER_PSNR_NOTE),
    "SSIM": st.column_config.NumberColumn(format="%.3f"),
    "L2": st.column_config.NumberColumn(format="%.3f", help="‖δ‖₂ in [0, 1] pixel units."),
    "L∞ (×1/255)": st.column_config.NumberColumn(format="%.2f"),
    "Time (ms)": st.column_config.NumberColumn(format="%.0f", help="Wall time of the attack when it last ran."),
})


@st.fragment
def iteration_scrubber(run: LabRun) -> None:
    """Step through the SOAE iterates; moving the slider reruns only this fragment."""
    st.subheader("SOAE, iteration by iteration")
    last = len(run.iterations) - 1
    index = st.slider("Outer iteration n (0 = original)", 0, last, last, key=f"lab::scrub::{last}")
    view = run.iterations[index]
    left, right = st.columns([1, 2])
    left.image(display_image(view.image), width="stretch",
               caption=f"n = {index}: {names[view.prediction]} ({view.confidence:.0%})")
    with right:
        st.plotly_chart(loss_figure(run.iterations, index), key="lab::loss")
        if index > 0:
            st.caption(f"Step {index}: GMRES used m = {view.m} Krylov vectors ({view.stop_reason}); "
                       f"cos(δ̃, g) = {view.cosine_to_gradient:.3f} — 1 would be the plain gradient direction.")


iteration_scrubber(run)

st.subheader("Downloads")
chosen = st.selectbox("Attack to download", [o.name for o in run.outcomes], key="lab::download")
outcome = run.outcome(chosen)
stem = f"{selection.info.name}_{chosen}".replace("/", "-")
left, middle, right = st.columns(3)
left.download_button("Adversarial image (PNG)", png_bytes(outcome.adv), f"{stem}_adversarial.png", "image/png",
                     on_click="ignore", help="8-bit PNG: rounding can undo a borderline attack; the .npy is exact.")
middle.download_button("Perturbation δ (.npy)", npy_bytes(outcome.perturbation), f"{stem}_perturbation.npy",
                       "application/octet-stream", on_click="ignore")
right.download_button("Parameters & versions (JSON)",
                      run_bundle(run, selection.settings, selection.info.name, selection.image_source),
                      f"{selection.info.name}_run.json", "application/json", on_click="ignore")
