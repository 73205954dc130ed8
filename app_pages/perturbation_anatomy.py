"""Perturbation Anatomy: where each attack's δ sits, which features it disturbs, what the model
attends to before and after, and the spectrum of δ — for the sidebar's image and attacks."""

import streamlit as st

from soae_app import cache
from soae_app.figures.common import display_png
from soae_app.figures.perturbation_anatomy import (
    attribution_figure,
    delta_spectrum_figure,
    distortion_figure,
    edges_figure,
    feature_maps_figure,
)
from soae_app.sidebar import ready_selection
from soae_core.analysis.perturbation_anatomy import distortion_table, location_table, verdict_table
from soae_core.eight_bit import EIGHT_BIT_COLUMN

st.title("Perturbation Anatomy")
st.markdown("The paper claims second-order perturbations sit on edges and disturb the features less visibly. "
            "Here every attack of the sidebar runs on the same image, and its perturbation δ = x_adv − x is "
            "taken apart: where it sits, which features it moves, and what the model looks at afterwards.")

selection = ready_selection()
info, settings, image, label = selection.info, selection.settings, selection.image, selection.label
names = info.class_names

try:
    with st.spinner(f"Running {', '.join(settings.attack_names)}…"):
        run = cache.lab_run(info, image, label, settings)
    layers = cache.spatial_layers(info, info.input_shape)
except ValueError as error:
    st.error(f"The attacks could not run: {error}")
    st.stop()

left, middle, right = st.columns(3)
map_layers = left.multiselect("Layers for feature maps", layers, default=layers[:2], key="anatomy::layers",
                              help="Convolution layers, input side first. The distortion chart covers every layer.")
top_channels = middle.slider("Channels per layer", 1, 8, 4, key="anatomy::channels",
                             help="The channels whose maps the attacks change most.")
target = right.radio("Attribute", ["prediction", "label"], key="anatomy::target", horizontal=True,
                     format_func={"prediction": "each image's predicted class", "label": "the true class"}.get,
                     help="Which class's logit the saliency and Integrated Gradients maps explain.")

try:
    with st.spinner("Measuring edges, features and attributions…"):
        anatomy = cache.anatomy(info, image, label, {o.name: o.adv for o in run.outcomes}, map_layers,
                                top_channels, target, run.target)
except ValueError as error:
    st.error(f"The anatomy could not be computed: {error}")
    st.stop()

columns = st.columns(6)
columns[0].image(display_png(image, min_size=112), caption=f"Original: {names[anatomy.clean_prediction]}",
                 width="stretch", output_format="PNG")
for column, attack in zip(columns[1:], anatomy.attacks, strict=False):
    column.image(display_png(image + attack.perturbation, min_size=112), width="stretch", output_format="PNG",
                 caption=f"{attack.name}: {names[attack.prediction]}")
st.dataframe(verdict_table(anatomy, names), column_config={
    "Success": st.column_config.CheckboxColumn(
        help="The model predicts the target class." if anatomy.target is not None
        else "The model predicts a class other than the true one."),
    EIGHT_BIT_COLUMN: st.column_config.TextColumn(
        help="Rounded to 8 bits per pixel, as a saved PNG holds it, is the example still adversarial?"),
})
if anatomy.target is not None:
    st.caption(f"Targeted at **{names[anatomy.target]}** (sidebar): success means the model predicts it.")
for name, reason in run.skipped.items():
    st.info(f"**{name}** is left out: {reason}.")

st.header("Where δ sits: edges", divider="gray")
st.plotly_chart(edges_figure(anatomy, settings.eps), key="anatomy::edges")
st.dataframe(location_table(anatomy), column_config={
    "Edge alignment (Canny)": st.column_config.NumberColumn(
        format="%.2f", help="Share of δ's energy on Canny edge pixels ÷ share of edge pixels. "
                            "1: no preference; above 1: δ hugs the edges."),
    "Edge alignment (Sobel)": st.column_config.NumberColumn(format="%.2f", help="The same with Sobel edges "
                                                                                "(magnitude above Otsu's threshold)."),
    "High-frequency share": st.column_config.NumberColumn(format="percent", help="Share of δ's spectral energy "
                                                                                 "above 0.25 cycles per pixel."),
    "Saliency similarity": st.column_config.NumberColumn(format="%.2f", help="Cosine between the saliency maps "
                                                                             "before and after the attack."),
    "IG similarity": st.column_config.NumberColumn(format="%.2f", help="Cosine between the Integrated Gradients "
                                                                       "maps before and after the attack."),
})
st.caption("Edge alignment divides the share of the perturbation's energy (Σ δ² over channels) that lands on edge "
           "pixels by the share of pixels that are edges. Sign-step attacks move every pixel by about ε, so they "
           "score near 1 unless the box [0, 1] clips them off the (black) background.")

st.header("What happens to the features", divider="gray")
distortion = distortion_table(anatomy)
st.plotly_chart(distortion_figure(distortion), key="anatomy::distortion")
st.dataframe(distortion, column_config={layer: st.column_config.NumberColumn(format="percent")
                                        for layer in distortion.columns})
for column, layer in zip(st.columns(2) * len(anatomy.map_layers), anatomy.map_layers, strict=False):
    column.plotly_chart(feature_maps_figure(anatomy, layer), key=f"anatomy::maps::{layer}")

st.header("What the model attends to", divider="gray")
left, right = st.columns([3, 2])
left.plotly_chart(attribution_figure(anatomy), key="anatomy::attributions")
attributed = "its own predicted class" if target == "prediction" else f"the true class ({names[label]})"
right.markdown(f"Each row explains, for that image, the logit of **{attributed}** (captum).\n\n"
               "**Saliency**: |∂ logit / ∂x| — which pixels the logit is most sensitive to.\n\n"
               "**Integrated Gradients**: the path integral of the gradient from a black image; red pixels "
               "push the class up, blue pixels push it down. The similarity columns above compare the maps "
               "before and after each attack.")

st.header("Spectrum of δ", divider="gray")
st.plotly_chart(delta_spectrum_figure(anatomy), key="anatomy::spectrum")
st.caption("Magnitude of the 2-D Fourier transform of δ (mean over channels). Energy near the centre means smooth, "
           "blotchy perturbations; energy towards the corners means pixel-to-pixel patterns.")
