"""Source × target grid: one bundled image per class, attacked towards every other class."""

import streamlit as st

from soae_app import cache
from soae_app.figures.target_grid import grid_picture
from soae_app.sidebar import current_selection
from soae_core.analysis.target_grid import assemble_grid, one_image_per_class
from soae_core.data import SAMPLE_DATASETS
from soae_core.targets import targeted_attack_names

st.title("Source × target grid")
st.markdown("Can every image be turned into every class? Row *i* starts from a bundled image of class *i*; "
            "column *j* is the class the attack aims at. The diagonal shows the originals.")

selection = current_selection()
info, settings = selection.info, selection.settings
if not info.available:
    st.info(f"**{info.name}** is unavailable: {info.reason}. Pick another model in the sidebar.")
    st.stop()
if info.dataset not in SAMPLE_DATASETS:
    st.info(f"The grid uses the bundled sample images, and there are none for {info.dataset}; "
            "pick a Fashion-MNIST model in the sidebar.")
    st.stop()

attacks = list(targeted_attack_names())
attack = st.segmented_control("Attack", attacks, default="PGD", key="grid::attack", required=True,
                              help="Attacks with a targeted mode (AutoAttack has none). Budget and SOAE settings "
                                   "come from the sidebar.")
st.caption(f"{info.name} · {attack} at ε = {settings.eps * 255:g}/255 · "
           + ("sidebar's SOAE settings." if attack == "SOAE" else "paper's settings for the baseline.")
           + " Targeted attacks need more budget than untargeted ones: try ε = 25.5/255 (0.1).")

samples = cache.samples(info.dataset)
picked = one_image_per_class(samples.labels, info.num_classes)
kwargs = settings.untargeted().attack_kwargs(attack, info.dataset)
progress = st.progress(0.0, text=f"Attacking the image of {info.class_names[0]}…")
rows = []
try:
    for position, index in enumerate(picked):
        progress.progress(position / len(picked), text=f"{attack}: {info.class_names[position]} → every other "
                                                       f"class ({position + 1} of {len(picked)})")
        rows.append(cache.grid_row(info, samples.images[index].numpy(), position, attack, kwargs))
    grid = assemble_grid(cache.model(info), rows, attack)
except ValueError as error:
    progress.empty()
    st.error(f"The grid could not be computed: {error}")
    st.stop()
progress.empty()

reached, kept = int(grid.success.sum()), int(grid.success_8bit.sum())
left, middle, right = st.columns(3)
left.metric("Target reached", f"{reached} of {grid.pairs}", help="Pairs whose adversarial image is classified as "
            "the target class.")
middle.metric("Reached after 8-bit rounding", f"{kept} of {grid.pairs}",
              help="The same images saved as 8-bit PNGs (each pixel rounded to k/255).")
right.metric("Gradient evaluations per image", grid.grad_evals)
st.caption("Frames: **green** — target reached (also after 8-bit rounding); **yellow** — reached, but rounding to "
           "8 bits undoes it; **red** — not reached; grey — the original image.")
st.image(grid_picture(grid, info.class_names), width="stretch", output_format="PNG")
table = grid.table(info.class_names)
with st.expander("The grid as a table"):
    st.dataframe(table)
st.download_button("Grid as CSV", table.to_csv().encode("utf-8"), f"{info.name}_{attack}_target_grid.csv",
                   "text/csv", on_click="ignore")
