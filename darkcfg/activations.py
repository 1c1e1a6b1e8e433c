"""Activation names Darknet accepts (cfg-format.md §8). The kernels are in kernels/act.py."""

# name -> lineage note; the order is darkcfg's activation code used by the kernels
ACTIVATIONS = (
    "logistic", "relu", "relie", "linear", "ramp", "tanh", "plse", "leaky", "elu", "loggy",
    "stair", "hardtan", "lhtan", "selu",            # Darknet P's enum order (codes 0..13)
    "relu6", "revleaky", "gelu", "swish", "mish", "hard_mish",
    "normalize_channels", "normalize_channels_softmax", "normalize_channels_softmax_maxval",
)
CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
