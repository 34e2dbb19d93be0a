"""The physics of a call: device, link and infrastructure models with sourced constants.

Pure code (numpy, and torch only for counting FLOPs): nothing here knows Flower, so every model
tests in isolation against hand computations from its constants.
"""
