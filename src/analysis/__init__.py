"""Analyses: pure functions (arrays in, arrays/figures out) and the Lightning callbacks that run them.

pure, no Lightning: attention.py clip.py embedding.py latent.py lesion.py figures.py
contracts.py        what callbacks need from a module and a data module (protocols)
evidence.py         figures/numbers/tables to the run folder and the loggers
evaluation.py       reading splits again after the test pass, accuracy
*_callbacks.py      the callbacks, one file per task (common_callbacks.py: any task)
"""
