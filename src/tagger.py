"""The Python API of this project's taggers (`src.tools.tagging.api`), under a short name:

from src.tagger import Tagger

tagger = Tagger.load("corr_noisy_007")        # or a .pth, a .onnx, "ensemble", None
tags = tagger.tag(["dog.wav", "clips/"])      # DataFrame: a row per file, a column per class
vectors = tagger.embed(["dog.wav"])           # DataFrame: a row per file, one per feature
"""

from src.tools.tagging.api import Tagger
from src.tools.tagging.clips import Samples

__all__ = ["Samples", "Tagger"]
