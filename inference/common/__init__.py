"""The torch-free half of inference/: what the bot and the worker must agree on.

Both sides import these modules: the job protocol (the typed messages between the bot and the
worker), A1111's sampler names, infotext, the prompt parser and CLIP token counting, and the
lookup of model, LoRA, embedding and upscaler files. Nothing here may import torch, diffusers
or discord; an import-linter contract in pyproject.toml checks it on every test run.
"""
