"""How SOAE works (for class): one second-order step on a 2-D toy classifier a student can click,
then the loss around the sidebar's real image along the gradient and along SOAE's direction."""

import math

import pandas as pd
import streamlit as st

from soae_app import cache
from soae_app.figures.how_soae_works import line_figure, plane_figure, toy_figure
from soae_app.sidebar import current_selection, ready_selection
from soae_core.analysis.common import image_batch
from soae_core.analysis.how_soae_works import ACTIVATIONS, LANDSCAPE_SCALES, TOY_CLASSES, default_radius

st.title("How SOAE works")
st.markdown(
    "A first-order attack steps along the gradient **g = ∇L(x)**. SOAE asks the loss's curvature too: it "
    "builds the quadratic model **Q(δ) = L(x) + gᵀδ + ½ δᵀHδ** (H: the Hessian with respect to the input) "
    "and steps along **H⁻¹g**, which GMRES finds from Hessian-vector products alone. Below, first in two "
    "dimensions, where everything can be drawn, then on the real model.")

st.header("1 · A classifier on the plane", divider="gray")
if current_selection().settings.targeted:
    st.info("The sidebar's target is a class of the real model; this toy has three classes of its own, so it shows "
            "the untargeted step, which raises the loss of the class you pick below. Section 2 follows the target.")
POINT_KEYS = ("toy::x", "toy::y")
for key, start in zip(POINT_KEYS, (0.42, 0.42), strict=False):
    st.session_state.setdefault(key, start)


def move_point() -> None:
    """Chart click → move p to the clicked spot (the sliders follow)."""
    points = st.session_state["toy::figure"].selection.points
    if points:
        st.session_state["toy::x"] = round(float(points[0]["x"]), 3)
        st.session_state["toy::y"] = round(float(points[0]["y"]), 3)


controls, picture = st.columns([1, 2.4])
with controls:
    activation = st.radio("Network", ACTIVATIONS, key="toy::activation", horizontal=True,
                          format_func={"tanh": "tanh (smooth)", "relu": "ReLU"}.get,
                          help="ReLU: the Hessian is positive semidefinite everywhere. tanh: it can be indefinite.")
    x1 = st.slider("p: x₁", 0.0, 1.0, step=0.01, key="toy::x")
    x2 = st.slider("p: x₂", 0.0, 1.0, step=0.01, key="toy::y")
    toy = cache.toy_classifier(activation)
    predicted = cache.toy_step(activation, (x1, x2), 0, 0.1).probabilities.argmax()
    choice = st.selectbox("Loss of class", ["predicted"] + list(range(len(TOY_CLASSES))), key="toy::class",
                          format_func=lambda c: f"the predicted one ({TOY_CLASSES[predicted]})" if c == "predicted"
                          else TOY_CLASSES[c],
                          help="The attack raises the loss of this class: it pushes p out of its region.")
    label = int(predicted) if choice == "predicted" else int(choice)
    eps = st.slider("ε — half-width of the box", 0.02, 0.25, 0.1, step=0.01, key="toy::eps")
    show_quadratic = st.checkbox("Show the quadratic model Q (dashed)", value=True, key="toy::quadratic")
    st.caption(f"Toy: 2 → 16 → 16 → 3 MLP trained in {toy.train_seconds:.2f} s, "
               f"{toy.train_accuracy:.0%} training accuracy.")

step = cache.toy_step(activation, (x1, x2), label, eps)
grid = cache.toy_grid(activation, label, 81)
with picture:
    st.plotly_chart(toy_figure(grid, step, show_quadratic), key="toy::figure", on_select=move_point,
                    selection_mode="points")
    st.caption("Click anywhere to move p. Coloured regions: where the network predicts each class. Grey lines: the "
               "loss of the chosen class. Arrows: the directions of g and of H⁻¹g (unit length, scaled). Green "
               "dots: the directions of GMRES's iterates δ₀ = g → δ₁ → δ₂ = H⁻¹g. Dotted square: the ε-box.")

ascent = step.ascent
left, middle, right = st.columns([1, 1, 1.3])
with left:
    st.markdown(f"**At p = ({x1:.2f}, {x2:.2f})**, loss of {TOY_CLASSES[label]}: L = {step.loss:.3f}")
    st.dataframe(pd.DataFrame({"g": step.gradient, "H⁻¹g": step.direction}, index=["x₁", "x₂"]),
                 key="toy::vectors")
with middle:
    st.markdown(f"**Hessian H** — eigenvalues {step.eigenvalues[0]:.3g}, {step.eigenvalues[1]:.3g}: "
                f"**{step.curvature}**")
    st.dataframe(pd.DataFrame(step.hessian, index=["x₁", "x₂"], columns=["x₁", "x₂"]), key="toy::hessian")
with right:
    st.markdown(f"gᵀH⁻¹g = {ascent:.3g}: H⁻¹g is an **{'ascent' if ascent > 0 else 'descent'}** direction"
                + ("." if ascent > 0 else " — stepping along it *lowers* the loss!"))
    iterates = pd.DataFrame({"j": range(len(step.gmres_iterates)), "δ_j: x₁": step.gmres_iterates[:, 0],
                             "δ_j: x₂": step.gmres_iterates[:, 1],
                             "residual": step.gmres_residuals[:len(step.gmres_iterates)]})
    st.dataframe(iterates, hide_index=True, key="toy::gmres", column_config={
        "residual": st.column_config.NumberColumn(format="%.1e", help="‖g − Hδ_j‖ / ‖g − Hg‖")})
    st.caption(f"GMRES from δ₀ = g, as SOAE starts it; it ended by {step.gmres_stop_reason}. In two dimensions "
               "two steps reach H⁻¹g exactly.")

candidates = pd.DataFrame([{"Step": c.name, "lands at": f"({c.point[0]:.3f}, {c.point[1]:.3f})",
                            "true loss L": c.loss, "Q predicts": c.quadratic, "L gained": c.loss - step.loss}
                           for c in step.candidates]).set_index("Step")
st.dataframe(candidates, key="toy::candidates", column_config={
    column: st.column_config.NumberColumn(format="%.3f") for column in ("true loss L", "Q predicts", "L gained")})
st.caption("Every step is projected onto the ε-box (and the unit square). With a positive definite H, p − H⁻¹g is the "
           "*minimum* of Q: SOAE goes the other way, along +H⁻¹g. Compare 'L gained' of the gradient step and of "
           "SOAE's step, and how well Q predicts the true loss.")

st.header("2 · The real model around the sidebar's image", divider="gray")
selection = ready_selection()
info, settings, image, label = selection.info, selection.settings, selection.image, selection.label
corner = default_radius(image_batch(image), settings.eps)
scale = st.select_slider("Range of t, in units of ε·√(pixels)", LANDSCAPE_SCALES, value=1.0, key="landscape::range",
                         help=f"ε·√(pixels) = {corner:.3f} is how far a sign step of size ε moves the image (Euclidean).")
try:
    goal = cache.target(info, image, label, settings)
    with st.spinner("Evaluating the loss on the line and on the plane…"):
        landscape = cache.loss_landscape(info, image, label, settings, scale, goal)
except ValueError as error:
    st.error(f"The loss landscape could not be computed: {error}")
    st.stop()
along_gradient, along_soae, plane = landscape.along_gradient, landscape.along_soae, landscape.plane
if goal is not None:
    st.info(f"Targeted at **{info.class_names[goal]}** (sidebar): the loss drawn is the cross-entropy of "
            f"{info.class_names[goal]}, with its own g and H⁻¹g. Targeted SOAE *lowers* it, stepping along −H⁻¹g "
            "(the negative offsets t below).")
st.plotly_chart(line_figure(along_gradient, along_soae, landscape.corner), key="landscape::lines")
left, right = st.columns([3, 2])
left.plotly_chart(plane_figure(plane), key="landscape::plane")
with right:
    summary = pd.DataFrame([{"Direction": "gradient g", "slope gᵀu": along_gradient.slope,
                             "curvature uᵀHu": along_gradient.curvature},
                            {"Direction": "SOAE H⁻¹g", "slope gᵀu": along_soae.slope,
                             "curvature uᵀHu": along_soae.curvature}]).set_index("Direction")
    st.dataframe(summary, key="landscape::summary")
    st.markdown(f"cos(g, H⁻¹g) = **{plane.cosine:.3f}** with the sidebar's {settings.hvp.replace('_', ' ')} "
                f"products (τ = {settings.tau:g}).")
    st.caption("u is the unit vector of each direction; t is the Euclidean distance from the image, not clipped to "
               "[0, 1]. The quadratic model uses the exact Hessian. Along g the loss rises fastest at first; H⁻¹g "
               "favours directions of low curvature, where Q promises the most over a long step. Dotted lines in "
               "the top chart: ±ε·√(pixels).")
    if plane.note:
        st.warning(plane.note)
    if not math.isfinite(plane.cosine):
        st.warning("The gradient is zero here: there is no direction to show.")
