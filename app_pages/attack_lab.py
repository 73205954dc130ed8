"""Attack Lab: SOAE and the chosen baselines on one image, side by side."""

from functools import partial

import streamlit as st

from soae_app import cache
from soae_app.figures.attack_lab import loss_figure, perturbation_figure, top5_figure
from soae_app.figures.common import display_png
from soae_app.sidebar import Selection, comparable_models, ready_selection
from soae_core.analysis.attack_lab import (
    LabRun,
    metrics_table,
    npy_bytes,
    png_bytes,
    run_bundle,
)
from soae_core.eight_bit import EIGHT_BIT_COLUMN
from soae_core.metrics import PAPER_PSNR_NOTE
from soae_core.models import ModelInfo

st.title("Attack Lab")
st.markdown("SOAE steps along **δ̃ ≈ H⁻¹g**, the Newton direction of the loss, found by GMRES from "
            "Hessian-vector products only. Here it runs beside first-order attacks on the same image and budget.")

selection = ready_selection()


def compute_run(selection: Selection) -> LabRun:
    """``run_lab`` on the image (every attack cached on its own), with a progress line while
    something actually runs; it says when the attacks wait in the queue."""
    line = st.empty()
    run = cache.lab_run(selection.info, selection.image, selection.label, selection.settings,
                        progress=lambda text: line.info(text, icon=":material/hourglass_top:"))
    line.empty()
    return run


try:
    run = compute_run(selection)
except ValueError as error:
    st.error(f"The attack could not run: {error}")
    st.stop()

names = run.class_names
others = comparable_models(selection.info)  # the transfer table's models: its job starts now, beside the drawing
if len(others) > 1:
    cache.start_transfer_table(others, run, run.first_success(), selection.info.name)
clean_confidence = run.clean_probabilities[run.clean_prediction]
aim = "" if run.target is None else f" · target **{names[run.target]}**: an attack succeeds only when the model " \
    f"predicts it"
st.markdown(f"True class **{names[run.label]}** · the model predicts **{names[run.clean_prediction]}** "
            f"({clean_confidence:.0%}) on the original"
            + ("" if run.clean_prediction == run.label else " — already wrong before any attack") + aim + ".")
for name, reason in run.skipped.items():
    st.info(f"**{name}** is left out: {reason}.")

columns = st.columns(1 + len(run.outcomes))
columns[0].image(display_png(run.image), caption=f"Original: {names[run.clean_prediction]} "
                 f"({clean_confidence:.0%})", width="stretch", output_format="PNG")
for column, outcome in zip(columns[1:], run.outcomes, strict=False):
    if run.target is None:
        verdict = "fooled ✓" if outcome.success else "not fooled"
    else:
        verdict = "target reached ✓" if outcome.success else "target not reached"
    column.image(display_png(outcome.adv), width="stretch", output_format="PNG",
                 caption=f"{outcome.name}: {names[outcome.prediction]} "
                         f"({outcome.probabilities[outcome.prediction]:.0%}) — {verdict}")

st.plotly_chart(perturbation_figure(run, selection.settings.eps), key="lab::perturbations")
st.plotly_chart(top5_figure(run), key="lab::top5")

st.subheader("Metrics")
st.dataframe(metrics_table(run), column_config={
    "Confidence": st.column_config.NumberColumn(format="percent"),
    "Success": st.column_config.CheckboxColumn(
        help="Untargeted: the prediction differs from the true class. Targeted: the prediction is the target."),
    EIGHT_BIT_COLUMN: st.column_config.TextColumn(
        help="Is the example still adversarial once saved as an 8-bit image (PNG)? Rounding moves each pixel by "
             "up to 0.5/255 and can undo a borderline attack."),
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
    left.image(display_png(view.image), width="stretch", output_format="PNG",
               caption=f"n = {index}: {names[view.prediction]} ({view.confidence:.0%})")
    with right:
        st.plotly_chart(loss_figure(run.iterations, index), key="lab::loss")
        if index > 0:
            st.caption(f"Step {index}: GMRES used m = {view.m} Krylov vectors ({view.stop_reason}); "
                       f"cos(δ̃, g) = {view.cosine_to_gradient:.3f} — 1 would be the plain gradient direction."
                       + ("" if run.target is None else f" Targeted: the loss is the cross-entropy of the target "
                                                        f"{names[run.target]}, which SOAE lowers."))


iteration_scrubber(run)


@st.fragment
def transfer_section(run: LabRun, selection: Selection, others: list[ModelInfo]) -> None:
    """Does the chosen example fool the other models? Choosing another attack reruns only this part."""
    st.subheader("Does it fool the other models? (transfer)")
    attack_names = [o.name for o in run.outcomes]
    transfer_source = st.selectbox("Adversarial image of", attack_names, key="lab::transfer",
                                   index=attack_names.index(run.first_success().name))
    if len(others) == 1:
        st.caption("No other model of this dataset is available to test transfer on.")
    else:
        st.dataframe(cache.transfer_table(others, run, run.outcome(transfer_source), selection.info.name),
                     column_config={"Fooled": st.column_config.CheckboxColumn(),
                                    "Fooled after rounding": st.column_config.CheckboxColumn()})
        st.caption(f"The {transfer_source} example was computed on {selection.info.name} only; the other rows show "
                   "whether it fools models it never saw" + ("" if run.target is None else " (reaching the target)") + ".")


@st.fragment
def downloads_section(run: LabRun, selection: Selection) -> None:
    """The chosen attack's files; choosing another attack reruns only this part."""
    st.subheader("Downloads")
    chosen = st.selectbox("Attack to download", [o.name for o in run.outcomes], key="lab::download")
    outcome = run.outcome(chosen)
    stem = f"{selection.info.name}_{chosen}".replace("/", "-")
    if not outcome.success:
        st.caption(f"The {chosen} example is not adversarial, so neither is its PNG.")
    elif outcome.success_8bit:
        st.success(f"The PNG of {chosen} is still adversarial after 8-bit rounding "
                   f"(the model predicts {run.class_names[outcome.prediction_8bit]}).", icon=":material/check_circle:")
    else:
        st.warning(f"Saving {chosen} as an 8-bit PNG undoes the attack: the rounded image is classified "
                   f"{run.class_names[outcome.prediction_8bit]}. Use the 8-bit-safe PNG.", icon=":material/warning:")
    # Files are made when a button is clicked (callables), not on every view of the page.
    left, middle, right, last = st.columns(4)
    left.download_button("Adversarial image (PNG)", partial(png_bytes, outcome.adv), f"{stem}_adversarial.png", "image/png",
                         on_click="ignore", help="Rounded to 8 bits per pixel (see above); the .npy is exact.")
    middle.download_button("8-bit-safe PNG", partial(png_bytes, outcome.grid_adv), f"{stem}_adversarial_8bit_safe.png",
                           "image/png", on_click="ignore", disabled=not outcome.success,
                           help="Projected onto the 8-bit grid inside the ε-ball so that it stays adversarial where "
                                "possible: " + outcome.grid_note)
    right.download_button("Perturbation δ (.npy)", partial(npy_bytes, outcome.perturbation), f"{stem}_perturbation.npy",
                          "application/octet-stream", on_click="ignore")
    last.download_button("Parameters & versions (JSON)",
                         partial(run_bundle, run, selection.settings, selection.info.name, selection.image_source),
                         f"{selection.info.name}_run.json", "application/json", on_click="ignore")
    if outcome.success:
        st.caption(f"8-bit-safe PNG: {outcome.grid_note}")


transfer_section(run, selection, others)
downloads_section(run, selection)
