"""How each model is trained and evaluated: data -> shared preprocessing -> net -> metrics.

One module per model. Every input passes through service.features, the package the service itself
uses, so what a model saw in training is exactly what it sees in serving.
"""

from training.recipes.digit import quantise_digit, train_digit
from training.recipes.spam import train_spam
from training.recipes.wine import train_wine

__all__ = ["quantise_digit", "train_digit", "train_spam", "train_wine"]
