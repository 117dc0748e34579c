"""Models attacked by gradient inversion, registered by name.

Every factory has the signature `factory(num_classes, input_shape, *, option=default)`;
use `build_model` to construct one deterministically (seeded, global RNG untouched,
eval mode, optional checkpoint) and `model_options` to list a model's options.

Registered: lenet (DLG), convnet (Inverting Gradients, with the SoK's micro-design
switches), mlp, precode (a base model with PRECODE's variational bottleneck), resnet18 / resnet34 (CIFAR variant),
cnn6 / cnn6-d / fcn3 (R-GAP), vit (a small Vision Transformer).
"""

# imported for their registrations in MODELS
from gradleak.models import convnet as _convnet  # noqa: E402,F401
from gradleak.models import lenet as _lenet  # noqa: E402,F401
from gradleak.models import mlp as _mlp  # noqa: E402,F401
from gradleak.models import precode as _precode  # noqa: E402,F401
from gradleak.models import resnet as _resnet  # noqa: E402,F401
from gradleak.models import rgap as _rgap  # noqa: E402,F401
from gradleak.models import vit as _vit  # noqa: E402,F401
from gradleak.models.build import (
    MODELS,
    build_model,
    load_checkpoint,
    model_options,
    output_classes,
)

__all__ = ["MODELS", "build_model", "load_checkpoint", "model_options", "output_classes"]
