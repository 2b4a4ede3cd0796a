"""Tagging any audio with trained models: one checkpoint, one experiment, or the ensemble.

One module per job, each usable without the others' inputs:

* `trained`: finding trained models in `<data>/experiments` (the best experiment, a
  checkpoint's classes);
* `clips`: audio files (or decoded audio) read into clips as the pipeline reads them, and
  where each tile of a clip starts in its file;
* `sources`: the model sources (a checkpoint, an experiment, the stacking ensemble) that
  predict spectrograms, built from paths and names alone;
* `files`: clips in memory tagged by a source, and files read and tagged a chunk at a time;
* `output`: what tags look like outside: the top classes printed, the CSV tables, the rows
  written as files are tagged.
"""
