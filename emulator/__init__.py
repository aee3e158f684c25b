"""mixacc.emulator — number formats, correct rounding, accumulation models, the exact
reference, networks and their forward pass. Never imports ``analysis``."""

from .accumulation import ORDERS, Accumulation, parse_accumulation
from .activations import ACTIVATIONS, Activation, get_activation
from .errors import DataError, FormatSpecError, MixaccError, ModelFileError, ShapeError, UnknownNameError
from .formats import FORMATS, Format, format_names, get_format
from .rounding import ROUNDING_MODES, RoundingMode, get_rounding, round_to

__all__ = [
    "ACTIVATIONS", "Accumulation", "Activation", "DataError", "FORMATS", "Format", "FormatSpecError",
    "MixaccError", "ModelFileError", "ORDERS", "ROUNDING_MODES", "RoundingMode", "ShapeError",
    "UnknownNameError", "format_names", "get_activation", "get_format", "get_rounding",
    "parse_accumulation", "round_to",
]

from .data import Dataset, load_data
from .modelio import bundled_models, from_onnx, from_sklearn, from_torch, load_model, save_model
from .network import ForwardResult, Layer, Network

__all__ += [
    "Dataset", "ForwardResult", "Layer", "Network", "bundled_models", "from_onnx", "from_sklearn", "from_torch",
    "load_data", "load_model", "save_model",
]

from .reference import ExactForward, exact_forward, exact_layer, exact_linear

__all__ += ["ExactForward", "exact_forward", "exact_layer", "exact_linear"]

from .linear import linear
from .metrics import accuracy, flip_rate, predicted_class, relative_error

__all__ += ["linear", "accuracy", "flip_rate", "predicted_class", "relative_error"]
