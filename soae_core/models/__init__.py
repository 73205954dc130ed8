"""Model zoo: ``list_models()``, ``get_model_info(name)``, ``load_model(name, ...)``, ``build_model(name)``."""

from soae_core.models.registry import (
    DEFAULT_MODEL,
    ModelInfo,
    UploadedModel,
    build_model,
    bundled_models_dir,
    get_model_info,
    list_models,
    load_model,
    load_uploaded_model,
    model_names,
    upload_architectures,
)
from soae_core.models.weights import MAX_UPLOAD_BYTES, read_state_dict, read_uploaded_state_dict, save_state_dict

__all__ = ["DEFAULT_MODEL", "MAX_UPLOAD_BYTES", "ModelInfo", "UploadedModel", "build_model", "bundled_models_dir",
           "get_model_info", "list_models", "load_model", "load_uploaded_model", "model_names", "read_state_dict",
           "read_uploaded_state_dict", "save_state_dict", "upload_architectures"]
