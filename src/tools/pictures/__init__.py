"""Pictures of what the model sees (show.py, tag_audio.py --plot), one module per picture.

* `spectrograms`: a grid of clips' log-mel spectrograms, as the pipeline computes them, with
  their labels or a model's top tags;
* `augmentations`: one clip through each training transform of an experiment alone and through
  its whole training pipeline with fixed seeds;
* `architecture`: an experiment's network drawn from the network itself (blocks in order,
  output shapes, skips, auxiliary heads, parameters);
* `worst_clips`: the spectrograms of the worst-scored files of `tag_audio.py --score --plot`;
* `axes`: what they share (seconds, Hz on the mel scale, dB colour bars, saving).

matplotlib is imported only inside the drawing functions.
"""
