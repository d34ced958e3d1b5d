"""Write the TensorFlow fixture of ``test_convert_stacked_hourglass.py`` (needs TensorFlow; not run by CI).

It builds the release's network (sungheonpark/music_source_sepearation_SH_net, ``model.py``: the
``infer`` graph with its variable scopes ``cnv1`` ... ``cnv4``, ``{stack}_{level}_up1/low1/low2/low3``,
``cnv5_i``, ``cnv6_i``, ``out_i``, ``tmp_i``, ``tmp_out_i``) at a tiny size in TF1 graph mode, gives
every variable random values (biases included), adds the release's Adam optimizer (so the file also
holds ``.../Adam`` slots, ``beta1_power`` and ``global_step``), saves it with ``tf.train.Saver`` (the
V2 tensor bundle format of the released checkpoints) and stores a random input with every stack's
predictions::

    cd tests/modeling/stacked_hourglass && python make_tf_fixture.py fixtures/tf_release_tiny

The fixture was made with tensorflow-cpu 2.17.0 (``tf.compat.v1``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow.compat.v1 as tf

FEATURES, STEM, DEPTH, STACKS, SOURCES = 8, (4, 8), 2, 2, 2
HEIGHT, WIDTH = 32, 24  # bins x frames, as the release's (batch, 512, 64, 1) images


def conv(inputs, shape, scope, relu=True):
    with tf.variable_scope(scope):
        weights = tf.get_variable("weights", shape, initializer=tf.random_normal_initializer(stddev=0.3))
        biases = tf.get_variable("biases", [shape[-1]], initializer=tf.random_normal_initializer(stddev=0.1))
        output = tf.nn.conv2d(inputs, weights, strides=[1, 1, 1, 1], padding="SAME") + biases
        return tf.nn.relu(output) if relu else output


def hourglass(inputs, level, features, stack):
    upper = conv(inputs, [3, 3, features, features], f"{stack}_{level}_up1")
    pooled = tf.nn.max_pool(inputs, [1, 2, 2, 1], [1, 2, 2, 1], "SAME")
    lower = conv(pooled, [3, 3, features, features], f"{stack}_{level}_low1")
    if level > 1:
        lower = hourglass(lower, level - 1, features, stack)
    else:
        lower = conv(lower, [3, 3, features, features], f"{stack}_{level}_low2")
    lower = conv(lower, [3, 3, features, features], f"{stack}_{level}_low3")
    return upper + tf.image.resize_nearest_neighbor(lower, tf.shape(upper)[1:3])


def network(image):
    first, second = STEM
    hidden = conv(image, [7, 7, 1, first], "cnv1")
    hidden = conv(hidden, [3, 3, first, second], "cnv2")
    hidden = conv(hidden, [3, 3, second, second], "cnv2b")
    hidden = conv(hidden, [3, 3, second, second], "cnv3")
    hidden = conv(hidden, [3, 3, second, FEATURES], "cnv4")
    predictions = []
    for stack in range(STACKS):
        features = hourglass(hidden, DEPTH, FEATURES, stack)
        features = conv(features, [3, 3, FEATURES, FEATURES], f"cnv5_{stack}")
        features = conv(features, [1, 1, FEATURES, FEATURES], f"cnv6_{stack}")
        predictions.append(conv(features, [1, 1, FEATURES, SOURCES], f"out_{stack}", relu=False))
        if stack < STACKS - 1:
            hidden = (
                hidden
                + conv(features, [1, 1, FEATURES, FEATURES], f"tmp_{stack}", relu=False)
                + conv(predictions[-1], [1, 1, SOURCES, FEATURES], f"tmp_out_{stack}", relu=False)
            )
    return predictions


def main(output: str) -> None:
    tf.disable_eager_execution()
    tf.set_random_seed(0)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    image = tf.placeholder(tf.float32, shape=(2, HEIGHT, WIDTH, 1))
    target = tf.placeholder(tf.float32, shape=(2, HEIGHT, WIDTH, SOURCES))
    predictions = network(image)
    loss = tf.add_n([tf.reduce_mean(tf.abs(target - image * p)) for p in predictions])
    global_step = tf.Variable(0, dtype=tf.int32, trainable=False, name="global_step")
    train = tf.train.AdamOptimizer(1e-4).minimize(loss, global_step=global_step)
    rng = np.random.default_rng(0)
    inputs = rng.random((2, HEIGHT, WIDTH, 1), dtype=np.float32)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        session.run(train, {image: inputs, target: rng.random((2, HEIGHT, WIDTH, SOURCES), dtype=np.float32)})
        outputs = session.run(predictions, {image: inputs})
        tf.train.Saver().save(session, str(folder / "checkpoint"), global_step=1)
    np.save(folder / "inputs.npy", inputs)
    np.save(folder / "expected_masks.npy", np.stack(outputs))
    for meta in folder.glob("*.meta"):  # the graph is not needed (and not read)
        meta.unlink()


if __name__ == "__main__":
    main(sys.argv[1])
