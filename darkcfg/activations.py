"""The activation names a cfg may use, defined here once: Darknet's `get_activation`
(src/activations.c) of both lineages, pjreddie's enum (include/darknet.h: ACTIVATION)
first, then AlexeyAB's additions. The kernels are in kernels/activations.py."""

# the position of a name is darkcfg's activation code, used by the kernels
ACTIVATIONS = (
    "logistic", "relu", "relie", "linear", "ramp", "tanh", "plse", "leaky", "elu", "loggy",
    "stair", "hardtan", "lhtan", "selu",            # pjreddie's enum order (codes 0..13)
    "relu6", "revleaky", "gelu", "swish", "mish", "hard_mish",      # AlexeyAB's
    "normalize_channels", "normalize_channels_softmax", "normalize_channels_softmax_maxval",
)
CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
