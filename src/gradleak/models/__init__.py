"""Models, registered by name; factories take (num_classes, input_shape, **options)."""

from gradleak.models.build import MODELS, build_model, load_checkpoint, model_options
from gradleak.models.convnet import convnet
from gradleak.models.lenet import lenet
from gradleak.models.mlp import mlp
from gradleak.models.resnet import resnet18, resnet34
from gradleak.models.rgap import cnn6, cnn6_d, fcn3

MODELS.add("lenet", lenet, "DLG's LeNet: 3 sigmoid 5x5 convs + linear, U(-0.5, 0.5) init (Zhu et al. 2019)")
MODELS.add("convnet", convnet, "Geiping's 8-layer ConvNet with the SoK's micro-design switches")
MODELS.add("mlp", mlp, "Multilayer perceptron on flattened inputs (hidden=(256, 256))")
MODELS.add("resnet18", resnet18, "ResNet-18, CIFAR variant (He et al. 2016)")
MODELS.add("resnet34", resnet34, "ResNet-34, CIFAR variant (He et al. 2016)")
MODELS.add("cnn6", cnn6, "R-GAP's CNN6: 6 bias-free convs, LeakyReLU 0.2; one logit in the paper")
MODELS.add("cnn6-d", cnn6_d, "R-GAP's rank-deficient CNN6-d (second conv 12->20)")
MODELS.add("fcn3", fcn3, "R-GAP's FCN3: 784-1000-100-classes, bias-free, LeakyReLU 0.2")

__all__ = ["MODELS", "build_model", "load_checkpoint", "model_options"]
