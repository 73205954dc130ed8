"""Krylov Inspector: what GMRES does inside SOAE, on the current model, image and settings."""

import streamlit as st

from soae_app import cache
from soae_app.figures.krylov_inspector import (
    fd_accuracy_figure,
    m_figure,
    margin_gains_figure,
    residual_figure,
    spectrum_figure,
)
from soae_app.sidebar import ready_selection
from soae_core.analysis.krylov_inspector import (
    INACCURATE_FD_ERROR,
    best_error,
    comparison_models,
    describe_margin_gains,
    error_at,
)
from soae_core.analysis.settings import HVP_LABELS, MAX_KRYLOV

st.title("Krylov Inspector")
st.markdown("Each SOAE iteration solves **H δ = g** by GMRES in the Krylov space "
            "span{r₀, Hr₀, H²r₀, …}, with Hessian-vector products only. This page shows how that goes.")

selection = ready_selection()
info, settings, image, label = selection.info, selection.settings, selection.image, selection.label
hvp_name = HVP_LABELS[settings.hvp]

try:
    goal = cache.target(info, image, label, settings)
    if goal is not None:
        st.info(f"Targeted at **{info.class_names[goal]}** (sidebar): every view below works on the loss targeted "
                f"SOAE uses, the cross-entropy of {info.class_names[goal]} — its gradient g, Hessian H and δ̃ — and "
                "the attack steps along −δ̃ to lower it.")
    st.header("GMRES residuals", divider="gray")
    with st.spinner("Running SOAE with true residuals…"):
        records = cache.krylov_history(info, image, label, settings, goal)
    left, right = st.columns([2, 1])
    left.plotly_chart(residual_figure(records, settings.tau), key="krylov::residuals")
    right.plotly_chart(m_figure(records), key="krylov::m")
    st.caption(f"Solid: the residual GMRES estimates from its Givens rotations (what it uses to stop). Dotted: the "
               f"residual recomputed with the {hvp_name} product. With exact products the two agree; with finite "
               "differences the operator is not quite linear and they drift apart. "
               "'breakdown' means the Krylov space stopped growing: normal for a ReLU network, whose input "
               "Hessian has rank ≤ C − 1.")

    st.header("Where the step goes: δ̃ against g", divider="gray")
    with st.spinner("Comparing one step along δ̃ and along g…"):
        gains = cache.margin_gains(info, image, label, settings, goal)
    st.plotly_chart(margin_gains_figure(gains), key="krylov::margins")
    st.markdown(describe_margin_gains(gains))
    step_text = "δ = −(α/N)·sign(·) (targeted: it lowers the target's loss)" if goal is not None else "δ = (α/N)·sign(·)"
    st.caption("Bars: the first-order change (J_k − J_y)·δ of each wrong class's logit z_k relative to the true "
               f"class's, for SOAE's first step {step_text} with the sidebar's settings, along the GMRES "
               "solution δ̃ ≈ H⁻¹g and along g ('SOAE without curvature'). A bar reaching its black tick would "
               "flip the prediction to that class. On these models δ̃ tends to raise every class alike, g to push "
               "the nearest one — over 1 000 test images g gains more on the nearest class in every model "
               "(REPRODUCTION.md, 'Why').")

    st.header("Ritz values: the Hessian's spectrum", divider="gray")
    twins = comparison_models(info, cache.zoo())
    compare = st.selectbox("Compare with", ["(none)"] + [m.name for m in twins], index=1 if twins else 0,
                           key="krylov::compare", help="A smooth network (SiLU) has a full-rank, indefinite Hessian.")
    spectrum_dim = st.slider("Largest Krylov dimension", 10, MAX_KRYLOV, 40, step=10, key="krylov::spectrum_dim")
    with st.spinner("Running Arnoldi with exact products…"):
        spectra = {info.name: cache.hessian_spectrum(info, image, label, spectrum_dim, goal)}
        if compare != "(none)":
            other = next(m for m in twins if m.name == compare)
            spectra[compare] = cache.hessian_spectrum(other, image, label, spectrum_dim, goal)
    st.plotly_chart(spectrum_figure(spectra), key="krylov::spectrum")
    st.caption("Arnoldi from the gradient g with exact products in float64; the Ritz values are the eigenvalues of "
               "the Hessenberg matrix. A ReLU network's input Hessian Jᵀ(diag p − ppᵀ)J is positive semidefinite "
               "with rank ≤ C − 1: the process ends by breakdown after at most C − 1 steps."
               + (" With a target, g is the target loss's gradient; a ReLU network's H is the same for every "
                  "class (diag p − ppᵀ does not depend on it), so only Arnoldi's starting vector changes."
                  if goal is not None else ""))

    st.header("Finite differences vs the exact product", divider="gray")
    with st.spinner("Comparing products over η…"):
        accuracy = cache.fd_accuracy(info, image, label, goal)
    st.plotly_chart(fd_accuracy_figure(accuracy, settings.eta), key="krylov::fd_accuracy")
    used, best64 = error_at(accuracy, settings.eta), best_error(accuracy, "float64")
    if used is not None:
        st.markdown(f"At the chosen η = {settings.eta:g}, the product SOAE's finite-difference mode computes "
                    f"(forward, float32) is off by **{used:.2g}** relative to the exact one.")
    if best64 > INACCURATE_FD_ERROR:
        st.info(f"On this image no η gives an accurate finite difference, even in float64 (best relative error "
                f"{best64:.2g}). Typical cause: pixels that are exactly 0 (the Fashion-MNIST background) leave "
                "ties in max-pooling windows, so the gradient jumps under any perturbation and the difference "
                "quotient grows like 1/η instead of converging. GMRES then solves with a noisy operator.")
    st.caption("Relative error of (∇L(x+ηv) − ∇L(x))/η (forward) and (∇L(x+ηv) − ∇L(x−ηv))/2η (central) "
               "against the exact Hv, v = g. Right: truncation (large steps cross ReLU/max-pool kinks). "
               "Left: round-off (the two gradients cancel); it sets in far earlier in float32. "
               "Images with exactly-zero backgrounds have max-pool ties, where no η works well.")

    st.header("τ → m", divider="gray")
    cap = st.slider("Krylov cap for this table", 10, MAX_KRYLOV, 60, step=10, key="krylov::tau_cap")
    with st.spinner("Running GMRES at the smallest τ…"):
        table = cache.tau_table(info, image, label, settings.eta, cap, goal)
    st.dataframe(table.rename(index=lambda tau: f"{tau:g}"), width="content")
    st.caption(f"First outer iteration at the original image, η = {settings.eta:g}. One GMRES run at the smallest τ "
               "gives every row: τ only decides when to stop, not what GMRES computes.")
except ValueError as error:
    st.error(f"The Krylov analysis could not run: {error}")
