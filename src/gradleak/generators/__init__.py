"""Generators for attacks in a generator's latent space (the SoK's GIA-L): a DCGAN for
8 to 64 pixel images, its training, checkpoints and offline quality numbers.

This floor sits above the metrics (quality uses `metrics.identify`) and below the
attacks, which take a generator (an `nn.Module` or a checkpoint path) as an argument.
"""

from gradleak.generators.checkpoint import checkpoint_data, load_generator, save_generator
from gradleak.generators.dcgan import SIZES, DCGANDiscriminator, DCGANGenerator
from gradleak.generators.quality import GeneratorQuality, LatentEvidence, generator_quality, latent_evidence
from gradleak.generators.train import EpochLosses, GeneratorTraining, TrainedGenerator, sample, train_generator
from gradleak.registry import Registry

GENERATORS: Registry[type] = Registry("generator")
GENERATORS.add("dcgan", DCGANGenerator, "DCGAN-style generator, latent -> 8 to 64 pixel images in [0, 1] "
                                        "(Radford et al. 2016)")

__all__ = ["GENERATORS", "SIZES", "DCGANDiscriminator", "DCGANGenerator", "EpochLosses", "GeneratorQuality",
           "GeneratorTraining", "LatentEvidence", "TrainedGenerator", "checkpoint_data", "generator_quality",
           "latent_evidence", "load_generator", "sample", "save_generator", "train_generator"]
