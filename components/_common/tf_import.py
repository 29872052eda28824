"""Importing TensorFlow (and Keras) in a process that may also use torch.

TensorFlow 2.21 and triton 3.8 (torch 2.14's compiler backend, which torch
imports the first time an optimizer is built) each carry their own LLVM;
importing triton after TensorFlow kills the process with SIGSEGV (seen here
in a test worker: `import tensorflow; import triton` exits 139), while the
other order works. So Keel imports TensorFlow only through these functions,
which load triton first wherever it is installed (keel-tensorflow has no
torch, hence no triton, and skips it).
"""

from __future__ import annotations


def load_triton_first() -> None:
    try:
        import triton  # noqa: F401 (imported for its side effect: its LLVM loads before TensorFlow's)
    except ImportError:
        pass


def tensorflow():
    """The `tensorflow` module, imported after triton (see the module docstring)."""
    load_triton_first()
    import tensorflow as tf

    return tf


def keras():
    """The `keras` module (TensorFlow backend), imported after triton."""
    load_triton_first()
    import keras as keras_module

    return keras_module
