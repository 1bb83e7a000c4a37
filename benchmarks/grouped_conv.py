"""Keras grouped convolutions on TensorFlow's CPU: which path to take (docs/grouped_conv.md).

    PYTHONPATH=. python benchmarks/grouped_conv.py layer 9
    PYTHONPATH=. python benchmarks/grouped_conv.py model resnext50_32x4d 2 64 5

``layer``: one grouped 3x3 conv at ResNeXt-50's second stage (batch 2, 28x28, 256 channels in 32 groups),
forward and loss gradient, float32 and float64, in each way TensorFlow offers it: ``tf.nn.conv2d`` on
TensorFlow's own kernels (oneDNN, where on), Keras 3's ``ops.conv`` (which compiles a grouped conv with XLA
op by op), one conv per group concatenated (``tensorflow_impl.resnet.Conv2d``'s way), and the whole step
under ``tf.function(jit_compile=True)``. ``model``: our Keras model of a grouped preset, eval forward and
training step (``tensorflow_impl.train``), its grouped convs one conv per group or Keras's stock op, each
under ``tf.function`` and under XLA.

Every timing is interleaved with the others in one process, ``rounds`` rounds after one warm-up call
(its time is the first-call column, tracing and compiling included); printed: the median, and the
fastest and slowest round. A path that fails says why.
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np

from shared.recipe import SGD, Recipe
from shared.spec import get_spec
from tensorflow_impl import build_model, train  # before TensorFlow: its C++ notices stay quiet
from tensorflow_impl.resnet import Conv2d
from tensorflow_impl.weights import inputs

import tensorflow as tf  # noqa: E402
from keras import layers, ops  # noqa: E402


def interleaved(steps: dict, rounds: int) -> None:
    first, times, failed = {}, {name: [] for name in steps}, {}
    for name, step in steps.items():
        start = time.perf_counter()
        try:
            step()
        except Exception as exc:  # a path TensorFlow lacks: say which, keep measuring the others
            # a graph's error: the op's own message, after the lines that say where it was detected
            lines = [line.strip() for line in str(exc).strip().splitlines()]
            said = [line for line in lines if line and not line.startswith(("Graph execution", "Detected at", "File", "[["))]
            failed[name] = (said or lines)[0][:150]
            continue
        first[name] = time.perf_counter() - start
    for _ in range(rounds):
        for name, step in steps.items():
            if name not in failed:
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    width = max(map(len, steps))
    print(f"{'path':<{width}} | first call | median (fastest-slowest) of {rounds} rounds")
    for name in steps:
        if name in failed:
            print(f"{name:<{width}} | fails: {failed[name]}")
            continue
        t = np.array(times[name]) * 1e3
        print(f"{name:<{width}} | {first[name]:8.2f} s | {np.median(t):9.1f} ms ({t.min():.1f}-{t.max():.1f})")


def one_per_group(x, kernel, groups: int):
    pairs = zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))
    return tf.concat([tf.nn.conv2d(a, k, 1, "SAME") for a, k in pairs], axis=-1)


def layer(rounds: int) -> None:
    groups = 32
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal((2, 28, 28, 256)), dtype)
        kernel = tf.Variable(rng.standard_normal((3, 3, 256 // groups, 256)) / np.sqrt(9 * 8), dtype=dtype)
        convs = {
            "tf.nn.conv2d (TensorFlow's kernel)": lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"),
            "keras.ops.conv (XLA per op)": lambda x: ops.conv(x, kernel, 1, "same"),
            "one conv per group": lambda x: one_per_group(x, kernel, groups),
        }

        def gradient(conv):
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(conv(x) ** 2)
                return tape.gradient(loss, kernel)
            return step

        steps = {}
        for name, conv in convs.items():
            steps[f"{dtype} forward, {name}, tf.function"] = tf.function(conv)
            steps[f"{dtype} gradient, {name}, tf.function"] = tf.function(gradient(conv))
        steps[f"{dtype} forward, jit_compile=True"] = tf.function(convs["tf.nn.conv2d (TensorFlow's kernel)"], jit_compile=True)
        steps[f"{dtype} gradient, jit_compile=True"] = tf.function(gradient(convs["tf.nn.conv2d (TensorFlow's kernel)"]),
                                                                   jit_compile=True)
        interleaved({name: (lambda f=f: f(x)) for name, f in steps.items()}, rounds)


def stock(model) -> None:
    """Keras's own grouped conv (``ops.conv``, XLA op by op) in place of one conv per group."""
    for lyr in model._flatten_layers():
        if isinstance(lyr, Conv2d) and lyr.groups > 1:
            lyr.convolution_op = types.MethodType(layers.Conv2D.convolution_op, lyr)


def model(arch: str, batch: int, size: int, rounds: int) -> None:
    spec = get_spec(arch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, spec.in_channels)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, batch)
    models = {"one conv per group": build_model(spec), "Keras's grouped Conv2D": build_model(spec)}
    stock(models["Keras's grouped Conv2D"])
    recipe = Recipe("bench", arch, "random", SGD(lr=1e-3))
    logits, steps = {}, {}
    for label, m in models.items():
        for xla in (False, True):
            forward = tf.function(lambda batch, m=m: m(batch, training=False), jit_compile=xla)
            step = tf.function(train._train_step.python_function, jit_compile=xla)
            optimizer = train.make_optimizer(m, recipe, 10**6)
            optimizer.build(m.trainable_variables)
            mode = "jit_compile=True" if xla else "tf.function"
            steps[f"eval, {label}, {mode}"] = lambda f=forward, m=m: f(inputs(m, x))
            steps[f"train, {label}, {mode}"] = (
                lambda s=step, m=m, o=optimizer: s(m, o, inputs(m, x), tf.constant(y, tf.int64), recipe))
            logits[label, mode] = forward(inputs(m, x)).numpy()
    base = logits["one conv per group", "tf.function"]
    for key, value in logits.items():
        print(f"eval logits {key}: max|diff| against one conv per group under tf.function "
              f"{np.max(np.abs(value - base)) / np.max(np.abs(base)):.1e} (relative)")
    interleaved(steps, rounds)


if __name__ == "__main__":
    if sys.argv[1] == "layer":
        layer(int(sys.argv[2]))
    else:
        model(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
