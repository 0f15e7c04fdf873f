"""A healthy run: a small MLP on teacher-labelled data at a sensible learning rate. No fixed twin needed."""

from torch import nn


def model(fixed: bool = True):
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


if __name__ == "__main__":
    from scenario_trainer import main

    main(model)
