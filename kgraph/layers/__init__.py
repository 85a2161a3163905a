"""kgraph.layers: Keras 3 layers."""

from kgraph._serialization import register_public
from kgraph.layers import operation  # noqa: F401  (installs the hook that records raw ops in functional models)
from kgraph.layers.activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from kgraph.layers.attention import (  # noqa: F401
    AdditiveAttention,
    Attention,
    Dot,
    GroupedQueryAttention,
    GroupQueryAttention,
    MultiHeadAttention,
)
from kgraph.layers.conv_lstm import ConvLSTM1D, ConvLSTM2D, ConvLSTM3D
from kgraph.layers.convolutional import (  # noqa: F401
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    Convolution1D,
    Convolution1DTranspose,
    Convolution2D,
    Convolution2DTranspose,
    Convolution3D,
    Convolution3DTranspose,
    DepthwiseConv1D,
    DepthwiseConv2D,
    SeparableConv1D,
    SeparableConv2D,
    SeparableConvolution1D,
    SeparableConvolution2D,
)
from kgraph.layers.core import Activation, Dense, Dropout, Flatten, Identity, Input, InputLayer, Reshape  # noqa: F401
from kgraph.layers.einsum_dense import EinsumDense
from kgraph.layers.embedding import Embedding, ReversibleEmbedding
from kgraph.layers.lambda_layer import Lambda
from kgraph.layers.layer import InputSpec, Layer  # noqa: F401
from kgraph.layers.merging import (  # noqa: F401
    Add,
    Average,
    Concatenate,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    maximum,
    minimum,
    multiply,
    subtract,
)
from kgraph.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    LayerNormalization,
    RMSNormalization,
    UnitNormalization,
)
from kgraph.layers.pooling import (  # noqa: F401
    AdaptiveAveragePooling1D,
    AdaptiveAveragePooling2D,
    AdaptiveAveragePooling3D,
    AdaptiveMaxPooling1D,
    AdaptiveMaxPooling2D,
    AdaptiveMaxPooling3D,
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalAvgPool3D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPool3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
)
from kgraph.layers.preprocessing import (
    CenterCrop,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomRotation,
    RandomTranslation,
    RandomZoom,
    Rescaling,
    Resizing,
)
from kgraph.layers.recurrent import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    Masking,
    SimpleRNN,
    SimpleRNNCell,
    StackedRNNCells,
)
from kgraph.layers.regularization import (
    ActivityRegularization,
    AlphaDropout,
    GaussianDropout,
    GaussianNoise,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from kgraph.layers.reshaping import (  # noqa: F401
    Cropping1D,
    Cropping2D,
    Cropping3D,
    Permute,
    RepeatVector,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from kgraph.layers.wrappers import Bidirectional, SpectralNormalization, TimeDistributed, Wrapper

ALL_OBJECTS = [Layer, InputLayer, Dense, Activation, Identity, Flatten, Reshape, Dropout, Add, Subtract, Multiply,
               Average, Maximum, Minimum, Concatenate]
ALL_OBJECTS += [ReLU, LeakyReLU, PReLU, ELU, Softmax, Embedding, BatchNormalization, LayerNormalization,
                GroupNormalization, UnitNormalization, RMSNormalization, SpatialDropout1D, SpatialDropout2D,
                SpatialDropout3D, GaussianNoise, GaussianDropout, AlphaDropout, ActivityRegularization,
                Attention, AdditiveAttention, MultiHeadAttention, Dot]
ALL_OBJECTS += [Conv1D, Conv2D, Conv3D, Conv1DTranspose, Conv2DTranspose, Conv3DTranspose, DepthwiseConv1D,
                DepthwiseConv2D, SeparableConv1D, SeparableConv2D, MaxPooling1D, MaxPooling2D, MaxPooling3D,
                AveragePooling1D, AveragePooling2D, AveragePooling3D, GlobalMaxPooling1D, GlobalMaxPooling2D,
                GlobalMaxPooling3D, GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAveragePooling3D,
                UpSampling1D, UpSampling2D, UpSampling3D, ZeroPadding1D, ZeroPadding2D, ZeroPadding3D, Cropping1D,
                Cropping2D, Cropping3D, Permute, RepeatVector]
ALL_OBJECTS += [SimpleRNN, LSTM, GRU, SimpleRNNCell, LSTMCell, GRUCell, RNN, StackedRNNCells, Masking,
                TimeDistributed, Bidirectional, Lambda]
ALL_OBJECTS += [Rescaling, Resizing, CenterCrop, RandomFlip, RandomTranslation, RandomRotation, RandomZoom,
                RandomCrop, RandomContrast, RandomBrightness]
ALL_OBJECTS += [EinsumDense, GroupedQueryAttention, ReversibleEmbedding]
ALL_OBJECTS += [AdaptiveAveragePooling1D, AdaptiveAveragePooling2D, AdaptiveAveragePooling3D,
                AdaptiveMaxPooling1D, AdaptiveMaxPooling2D, AdaptiveMaxPooling3D]
ALL_OBJECTS += [Wrapper, SpectralNormalization, ConvLSTM1D, ConvLSTM2D, ConvLSTM3D]
ALL_OBJECTS_DICT = {cls.__name__: cls for cls in ALL_OBJECTS}

# Configs name these classes by their public Keras module ("keras.layers"), as Keras 3 writes them.
register_public(ALL_OBJECTS, "keras.layers")


def serialize(layer):
    """The layer's config in Keras 3's format (module, class_name, config, registered_name, build_config)."""
    from kgraph.saving import serialize_keras_object

    return serialize_keras_object(layer)


def deserialize(config, custom_objects=None):
    """The layer (or model) a `serialize()` config describes."""
    from kgraph.saving import deserialize_keras_object

    return deserialize_keras_object(config, custom_objects=custom_objects, module_objects=ALL_OBJECTS_DICT)
