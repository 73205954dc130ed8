"""The sidebar every page shares: model, image and attack settings.

Widget keys double as URL query parameters (``bind="query-params"``): the URL always holds the
non-default choices, so a teacher can share a link that reproduces a view (uploads excepted).
The entrypoint calls :func:`render_sidebar` on every run and stores the result; pages read it
with :func:`current_selection`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from soae_app import cache, compute, uploads
from soae_app.figures.common import display_png
from soae_core import __version__
from soae_core.analysis.common import class_probabilities
from soae_core.analysis.settings import (
    ALPHA_FACTOR_CHOICES,
    ALPHA_RAW_CHOICES,
    BASELINES,
    DEFAULT_SETTINGS,
    EPS_255_CHOICES,
    ETA_CHOICES,
    HVP_LABELS,
    MAX_KRYLOV,
    MAX_STEPS,
    PRECISIONS,
    PRESETS,
    STEP_RULE_LABELS,
    TAU_CHOICES,
    AttackSettings,
    format_eps_255,
    format_factor,
    format_power,
    preset_matching,
    preset_values,
    settings_from_widgets,
    widget_values,
)
from soae_core.data import SAMPLE_DATASETS, SampleSet, list_photos, load_user_image
from soae_core.models import DEFAULT_MODEL, MAX_UPLOAD_BYTES, ModelInfo, upload_architectures
from soae_core.targets import TARGET_MODE_LABELS, TARGET_MODES

SELECTION_KEY = "soae_lab_selection"
UPLOAD_ERROR_KEY = "soae_lab_weights_error"
BIND = "query-params"
DEFAULTS = widget_values(DEFAULT_SETTINGS)


@dataclass
class Selection:
    """What the sidebar selected.

    image: (C, H, W) float32 in [0, 1] at the model's input shape, or None; label: the true class
    index (for photos and uploads: chosen by the user, the model's prediction by default);
    image_source: a human-readable description (goes into the download bundle); problem: why
    nothing can be computed (shown by the pages), None when ready.
    """

    info: ModelInfo
    settings: AttackSettings
    image: np.ndarray | None = None
    label: int | None = None
    image_source: str = ""
    problem: str | None = None

    @property
    def ready(self) -> bool:
        """True when a model, an image and a label are there to attack."""
        return self.problem is None and self.image is not None and self.label is not None


def current_selection() -> Selection:
    """The selection the entrypoint stored on this run (pages call this)."""
    return st.session_state[SELECTION_KEY]


def ready_selection() -> Selection:
    """The current selection if it is ready to attack; otherwise says what is missing and stops the page."""
    selection = current_selection()
    if not selection.ready:
        st.info(selection.problem or "Pick a model and an image in the sidebar.")
        st.stop()
    return selection


def session_models() -> list[ModelInfo]:
    """The zoo's models, then this session's uploads (your own weights)."""
    return cache.zoo() + [upload.info for upload in uploads.session_uploads().values()]


def comparable_models(info: ModelInfo) -> list[ModelInfo]:
    """Every available model of ``info``'s dataset and input shape — bundled ones and this session's
    uploads — ``info`` first (for transfer)."""
    others = [c for c in session_models() if c.available and c.name != info.name and c.dataset == info.dataset
              and c.input_shape == info.input_shape and c.num_classes == info.num_classes]
    return [info] + others


def _add_weights() -> None:
    """Callback of the weights uploader and its architecture: check the file, keep it for this
    session and select it; on a refused file keep the message and change nothing else."""
    upload = st.session_state.get("weights_upload")
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
    if upload is None:
        return
    try:
        info = uploads.add(st.session_state["weights_arch"], upload.name, upload.getvalue())
    except ValueError as error:
        st.session_state[UPLOAD_ERROR_KEY] = f"Cannot use **{upload.name}**: {error}"
        return
    st.session_state["model"] = info.name


def _upload_weights() -> None:
    with st.expander("Your own weights (.safetensors)"):
        architectures = upload_architectures()
        st.selectbox("Architecture", list(architectures), key="weights_arch", on_change=_add_weights,
                     help="The zoo architecture your checkpoint was trained for: "
                          + "; ".join(f"{a} as in {name}" for a, name in architectures.items()) + ".")
        size = uploads.weights_megabytes(st.session_state.get("weights_arch", next(iter(architectures))))
        if size > MAX_UPLOAD_BYTES / 2**20:
            st.warning(f"Float32 weights of this architecture take {size:.0f} MB, more than the "
                       f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB an upload may have here.")
        st.file_uploader("Checkpoint, at most 50 MB", key="weights_upload", on_change=_add_weights,
                         help="A .safetensors file, e.g. what python -m soae_core.train writes. Pickles (.pt, .pth) "
                              "are refused: loading them can run code. Kept in memory for this session only.")
        if UPLOAD_ERROR_KEY in st.session_state:
            st.error(st.session_state[UPLOAD_ERROR_KEY])


def _pick_model() -> ModelInfo:
    infos = {info.name: info for info in session_models()}
    names = list(infos)
    available = [name for name in names if infos[name].available]
    default = DEFAULT_MODEL if DEFAULT_MODEL in available or not available else available[0]
    name = st.selectbox("Model", names, index=names.index(default), key="model", bind=BIND,
                        format_func=lambda n: n if infos[n].available else f"⊘ {n} (unavailable)",
                        help="Models marked ⊘ have no weights here; the note below says why.")
    info = infos[name]
    if info.available:
        st.caption(info.description)
    else:
        st.warning(f"**{name}** is unavailable: {info.reason}")
    _upload_weights()
    return info


def _pick_true_label(info: ModelInfo, image: np.ndarray, source_id: str) -> int:
    """For photos and uploads: the true label, the model's prediction by default."""
    net = cache.model(info)
    predicted = int(np.argmax(class_probabilities(net, compute.batch(image, net))))
    return st.selectbox("True label", range(info.num_classes), index=predicted, key=f"label::{source_id}",
                        format_func=lambda i: info.class_names[i],
                        help="The attack pushes the image away from this class. Default: the model's prediction.")


@st.cache_data(show_spinner=False, max_entries=64)
def _gallery(dataset: str, example: int) -> list[bytes]:
    """Example ``example`` (from 1) of every class of ``dataset``'s bundled samples, as PNG
    thumbnails in class order. Cached on the two names: every rerun of every session draws the
    gallery, and ten cached :func:`display_png` calls hashed ten image arrays each time."""
    sample_set = cache.samples(dataset)
    return [display_png(sample_set.images[int(members[example - 1])].numpy(), min_size=28)
            for members in _by_class(sample_set)]


def _by_class(sample_set: SampleSet) -> list[np.ndarray]:
    """The positions of each class's samples, in class order."""
    labels = sample_set.labels.numpy()
    return [np.flatnonzero(labels == c) for c in range(len(sample_set.class_names))]


def _pick_sample(info: ModelInfo) -> tuple[np.ndarray, int, str]:
    sample_set = cache.samples(info.dataset)
    labels = sample_set.labels.numpy()
    by_class = _by_class(sample_set)
    per_class = min(len(indices) for indices in by_class)
    class_name = st.pills("Class", sample_set.class_names, default=sample_set.class_names[0], key="cls",
                          bind=BIND, required=True)
    example = st.slider("Example of this class", 1, per_class, 1, key="ex", bind=BIND)
    chosen = sample_set.class_names.index(class_name)
    st.image(_gallery(info.dataset, example), caption=list(sample_set.class_names), width=70, output_format="PNG")
    st.caption(f"Example {example} of every class. Pick a class and an example above.")
    index = int(by_class[chosen][example - 1])
    return (sample_set.images[index].numpy(), int(labels[index]),
            f"bundled {info.dataset} sample #{index} ({class_name}, example {example})")


def _pick_photo(info: ModelInfo) -> tuple[np.ndarray, int, str]:
    name = st.selectbox("Photograph (scikit-image)", list_photos(), key="photo", bind=BIND)
    image = cache.photo(name, info.input_shape)
    return image, _pick_true_label(info, image, f"photo:{name}"), f"scikit-image photograph '{name}'"


def _pick_upload(info: ModelInfo) -> tuple[np.ndarray | None, int | None, str, str | None]:
    upload = st.file_uploader("PNG or JPEG image", type=["png", "jpg", "jpeg"], key="upload",
                              help="Resized (short side) and centre-cropped to the model's input size.")
    if upload is None:
        return None, None, "", "Upload an image in the sidebar (PNG or JPEG)."
    try:
        image = load_user_image(upload.getvalue(), info.input_shape)[0].numpy()
    except ValueError as error:
        st.error(f"Cannot use **{upload.name}**: {error}")
        return None, None, "", f"The uploaded file {upload.name} is not a usable image; see the sidebar."
    label = _pick_true_label(info, image, f"upload:{upload.file_id}")
    return image, label, f"upload '{upload.name}'", None


def _pick_image(info: ModelInfo) -> tuple[np.ndarray | None, int | None, str, str | None]:
    sources = (["Samples"] if info.dataset in SAMPLE_DATASETS else []) + \
              (["Photos"] if info.dataset == "imagenet" else []) + ["Upload"]
    source = st.segmented_control("Source", sources, default=sources[0], key="src", bind=BIND, required=True)
    if source not in sources:  # e.g. "Photos" kept from an ImageNet model
        source = sources[0]
    if source == "Upload":
        return _pick_upload(info)
    image, label, description = _pick_sample(info) if source == "Samples" else _pick_photo(info)
    return image, label, description, None


def _apply_preset() -> None:
    """Pills used as buttons: set every attack widget to the clicked preset, then clear the pill."""
    name = st.session_state["preset"]
    if name in PRESETS:
        for key, value in preset_values(name).items():
            st.session_state[key] = value
    st.session_state["preset"] = None


def _pick_target(info: ModelInfo, label: int | None) -> dict[str, object]:
    mode = st.segmented_control("Target", TARGET_MODES, format_func=TARGET_MODE_LABELS.get, default=DEFAULTS["target"],
                                key="target", bind=BIND, required=True,
                                help="Untargeted: any wrong class. Chosen / least likely / random (seeded by the "
                                     "random seed): the attacks aim at that class, and succeed only when the model "
                                     "predicts it. AutoAttack has no targeted mode.")
    values: dict[str, object] = {"target": mode}
    if mode == "chosen":
        first_other = 0 if label is None else (label + 1) % info.num_classes
        true_class = "" if label is None else f" ({info.class_names[label]} for this image)"
        values["tcls"] = st.selectbox("Target class", range(info.num_classes), index=first_other, key="tcls",
                                      bind=BIND, format_func=lambda i: info.class_names[i],
                                      help=f"Must differ from the image's true class{true_class}.")
    return values


def _pick_settings(info: ModelInfo, label: int | None) -> AttackSettings:
    st.pills("Presets", list(PRESETS), key="preset", on_change=_apply_preset,
             help="paper: the paper's ε, η, τ, N with finite differences. exact Hessian: exact products, τ = 1e-6. "
                  "fast classroom: exact products, N = 2, m ≤ 10, FGSM only.")
    values = {
        "eps": st.select_slider("ε — L∞ budget", EPS_255_CHOICES, value=DEFAULTS["eps"], format_func=format_eps_255,
                                key="eps", bind=BIND, help="Largest change allowed per pixel (paper: 8/255)."),
        "N": st.slider("N — outer iterations", 1, MAX_STEPS, DEFAULTS["N"], key="N", bind=BIND,
                       help="Each iteration solves H δ = g with GMRES and takes one step (paper: 4)."),
        "hvp": st.radio("Hessian-vector product", list(HVP_LABELS), index=list(HVP_LABELS).index(DEFAULTS["hvp"]),
                        format_func=HVP_LABELS.get, key="hvp", bind=BIND,
                        help="Finite difference (the paper's eq. 22): (∇L(x+ηv) − ∇L(x))/η. Central: "
                             "(∇L(x+ηv) − ∇L(x−ηv))/2η. Exact: automatic differentiation."),
        "eta": st.select_slider("η — finite-difference step", ETA_CHOICES, value=DEFAULTS["eta"],
                                format_func=format_power, key="eta", bind=BIND,
                                help="Used by the finite-difference products only (paper: ≤ 1e-5)."),
        "tau": st.select_slider("τ — GMRES tolerance", TAU_CHOICES, value=DEFAULTS["tau"], format_func=format_power,
                                key="tau", bind=BIND, help="GMRES stops when ‖r‖/β < τ (paper: 1e-3)."),
        "cmp": st.multiselect("Compare with", BASELINES, default=DEFAULTS["cmp"], key="cmp", bind=BIND,
                              help="First-order baselines run on the same image and budget."),
        **_pick_target(info, label),
    }
    with st.expander("More settings"):
        values["step"] = st.radio("Step rule", list(STEP_RULE_LABELS),
                                  index=list(STEP_RULE_LABELS).index(DEFAULTS["step"]),
                                  format_func=STEP_RULE_LABELS.get, key="step", bind=BIND,
                                  help="How δ̃ ≈ H⁻¹g becomes a step: sign(δ̃), δ̃/‖δ̃‖∞, or the paper's raw "
                                       "(α/N)·δ̃, which has no fixed scale.")
        if values["step"] == "raw":
            values["alpha_raw"] = st.select_slider("α — multiplier of δ̃", ALPHA_RAW_CHOICES,
                                                   value=DEFAULTS["alpha_raw"], format_func=format_power,
                                                   key="alpha_raw", bind=BIND)
        else:
            values["alpha"] = st.select_slider("α — total step over the N iterations", ALPHA_FACTOR_CHOICES,
                                               value=DEFAULTS["alpha"], format_func=format_factor, key="alpha",
                                               bind=BIND, help="Each iteration moves α/N per pixel.")
        values["m"] = st.slider("Krylov dimension cap", 1, MAX_KRYLOV, DEFAULTS["m"], key="m", bind=BIND)
        values["rs"] = st.checkbox("Random start in the ε-ball", value=DEFAULTS["rs"], key="rs", bind=BIND)
        values["seed"] = st.number_input("Random seed", min_value=0, max_value=2**31 - 1, value=DEFAULTS["seed"],
                                         step=1, key="seed", bind=BIND,
                                         help="Seeds the random start, the randomised baselines and random targets.")
        values["prec"] = st.radio("Precision", PRECISIONS, index=PRECISIONS.index(DEFAULTS["prec"]), key="prec",
                                  bind=BIND, horizontal=True,
                                  help="The dtype of the model copy the attacks run on. float64 (default): a class "
                                       "asking for the same settings at once is computed as one batch, each "
                                       "student getting exactly their own result. float32: the paper's precision; "
                                       "each image runs alone (2–3× faster per gradient for ResNet-18 on "
                                       "the project's CPU: bench/bench_precision.py).")
    for key in ("alpha", "alpha_raw"):  # the step rule shows only one of the two
        values.setdefault(key, st.session_state.get(key, DEFAULTS[key]))
    settings = settings_from_widgets(values)
    preset = preset_matching(settings)
    st.caption(f"Settings match the **{preset}** preset." if preset else "Custom settings.")
    return settings


def render_sidebar() -> Selection:
    """Draw the sidebar (call inside ``with st.sidebar``) and return what it selects."""
    st.header("Model", divider="gray")
    info = _pick_model()
    image = label = problem = None
    try:
        st.caption(f"Computing on **{cache.device_label()}**",
                   help="Chosen when the app starts, by the environment variable SOAE_DEVICE: auto (the default: "
                        "CUDA when there is a GPU, else the CPU), cpu, cuda or cuda:N.")
    except ValueError as error:  # a bad SOAE_DEVICE: say which values exist, compute nothing
        st.error(str(error))
        problem = str(error)
    st.header("Image", divider="gray")
    source = ""
    if problem is not None:
        st.caption("Fix the device first.")
    elif not info.available:
        problem = f"**{info.name}** is unavailable: {info.reason}. Pick another model in the sidebar."
        st.caption("Pick an available model first.")
    else:
        try:
            image, label, source, problem = _pick_image(info)
        except ValueError as error:  # missing samples, unreadable weights, …
            st.error(str(error))
            problem = str(error)
    st.header("Attack", divider="gray")
    settings = _pick_settings(info, label)
    st.caption(f"SOAE Lab {__version__}")
    return Selection(info=info, settings=settings, image=image, label=label, image_source=source, problem=problem)
