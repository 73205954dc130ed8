"""Model zoo: ``list_models()``, ``get_model_info(name)``, ``load_model(name, ...)``, ``build_model(name)``."""

from soae_core.models.registry import (
    DEFAULT_MODEL,
    ModelInfo,
    build_model,
    bundled_models_dir,
    get_model_info,
    list_models,
    load_model,
    model_names,
)
from soae_core.models.weights import read_state_dict, save_state_dict

__all__ = ["DEFAULT_MODEL", "ModelInfo", "build_model", "bundled_models_dir", "get_model_info", "list_models",
           "load_model", "model_names", "read_state_dict", "save_state_dict"]
