"""Write docs/idioms.md: the three implementations side by side, read from their source with ``ast``.

    python docs/generate_idioms.py           rewrite docs/idioms.md
    python docs/generate_idioms.py --check   exit 1 if docs/idioms.md is out of date with the code

Either exits 2, saying what to fix, when the files cannot be laid side by side.

Stdlib only: no framework is imported, the source files are only parsed. Units (module docstring,
imports, constants, functions, classes and their methods) are matched by name across the three files
and laid out in their common order; a unit missing from a framework needs a note in ``NOTES`` saying
why, and every test linked from ``CONVENTIONS`` must exist, or generation fails.
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "idioms.md"
COMMAND = "python docs/generate_idioms.py"

FRAMEWORKS = {"pytorch_impl": "PyTorch", "tensorflow_impl": "Keras 3", "jax_impl": "Flax NNX"}
SECTIONS = {"resnet.py": "The model", "weights.py": "The weights adapter", "train.py": "The training step"}

# methods that play one role under each framework's name
METHOD_ROLES = {"forward": "call", "__call__": "call", "forward_preact": "call_preact"}

# why a unit is absent from a framework: file -> unit -> package -> one line (the framework's idiom)
NOTES: dict[str, dict[str, dict[str, str]]] = {
    "resnet.py": {
        "he_normal_std": {
            "pytorch_impl": "`nn.init.kaiming_normal_(mode='fan_out')` in `reset_parameters` computes the scale itself.",
            "tensorflow_impl": "`VarianceScaling(2.0, 'fan_out')` in `conv` computes the scale itself.",
        },
        "linear_bound": {
            "pytorch_impl": "`reset_parameters` computes the bound where it draws: Flax draws in two places.",
            "tensorflow_impl": "`ResNet.__init__` computes the bound where it draws: Flax draws in two places.",
        },
        "Conv2d": {
            "jax_impl": "`nnx.Conv` takes per-side padding (`[(k//2, k//2)] * 2`) and `'SAME'` itself: `conv` uses the stock layer.",
        },
        "Conv2d.convolution_op": {
            "pytorch_impl": "`nn.Conv2d(groups=g)` is one grouped kernel, forward and backward, in every dtype on the CPU: "
                            "nothing to override.",
        },
        "he_normal": {
            "pytorch_impl": "`reset_parameters` applies `kaiming_normal_` to every conv once the model is built, ECA's "
                            "`nn.Conv1d` too.",
            "jax_impl": "`he_normal_std` gives every `nnx.Conv`, ECA's 1-D one too, its standard deviation, for `conv`'s "
                        "draw and `reset_parameters`'.",
        },
        "Conv2d.compute_output_shape": {
            "pytorch_impl": "PyTorch runs eagerly: there is no symbolic shape inference for a layer to declare.",
        },
        "Conv2d.get_config": {
            "pytorch_impl": "PyTorch saves tensors (a `state_dict`), not a layer's constructor arguments.",
        },
        "Identity": {
            "pytorch_impl": "`nn.Identity` is built in.",
            "tensorflow_impl": "`layers.Identity` is built in.",
        },
        "ReLU": {
            "pytorch_impl": "`nn.ReLU` is built in.",
            "tensorflow_impl": "`layers.ReLU` is built in.",
        },
        "AvgPool": {
            "pytorch_impl": "`nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False)` is timm's pool itself: `avg_pool` uses it.",
            "tensorflow_impl": "`layers.AveragePooling2D(2, s, 'same')` leaves the padding out of the average: `avg_pool` uses it.",
        },
        "tf_same_pad": {
            "tensorflow_impl": "Keras's own `'same'` pads TensorFlow's way: `Conv2d` and `MaxPool` ask for it.",
            "jax_impl": "`nnx.Conv` and `nnx.max_pool` take `'SAME'` themselves.",
        },
        "Sequential": {
            "pytorch_impl": "`nn.Sequential` already calls its children in order and names them `0`, `1`, as torchvision's keys need.",
        },
        "Sequential.__getitem__": {
            "jax_impl": "`nnx.List` is indexable already.",
        },
        "Sequential.__init__": {
            "jax_impl": "`nnx.List(layers)` takes the list itself.",
        },
        "Policy": {
            "pytorch_impl": "`torch.autocast` takes the compute dtype alone: `ResNet(compute_dtype=)`; parameters keep the dtype `.to()` gives them.",
            "tensorflow_impl": "Keras has its own dtype policy (`mixed_bfloat16`): see `policy`.",
        },
        "BatchNorm": {
            "pytorch_impl": "Under `torch.autocast` BN's statistics and affine parameters stay float32 and only its output is low "
                            "precision; `nn.BatchNorm2d` already normalises as `(x - mean) * invstd * weight + bias`.",
        },
        "BatchNorm.__init__": {
            "tensorflow_impl": "`BatchNormalization`'s constructor serves: only `call` changes, to the normalisation PyTorch and "
                               "Flax compute.",
        },
        "policy": {
            "pytorch_impl": "No policy object: `build_model` passes `compute_dtype` to `ResNet`.",
        },
        "empty_model": {
            "pytorch_impl": "`checkpoint.empty_model` builds on the meta device, where `reset_parameters` draws nothing.",
            "tensorflow_impl": "`checkpoint.model_from_weights` creates each variable with its value: no empty model.",
        },
        "ResNet.reset_parameters": {
            "tensorflow_impl": "Initialisers are arguments of each layer (`kernel_initializer=`), applied when Keras creates the variables.",
        },
        "ResNet.get_config": {
            "pytorch_impl": "PyTorch saves tensors (a `state_dict`); the model is rebuilt from the spec.",
            "jax_impl": "`nnx.state` holds arrays only; the model is rebuilt from the spec.",
        },
        "ResNet.from_config": {
            "pytorch_impl": "Nothing to rebuild from: see `get_config`.",
            "jax_impl": "Nothing to rebuild from: see `get_config`.",
        },
        "ResNet.build_all": {
            "pytorch_impl": "Parameters exist after `__init__`: layers are given their input channels.",
            "jax_impl": "Parameters exist after `__init__`: modules are given their input channels.",
        },
    },
    "weights.py": {
        "_forward_features": {
            "pytorch_impl": "PyTorch runs the forward eagerly; `features` calls `model.forward_features` directly.",
            "tensorflow_impl": "Keras runs `forward_features` eagerly here; a compiled forward is `tf.function`'s business.",
        },
        "as_numpy": {
            "tensorflow_impl": "`tensor.numpy()`, then `shared.weights.widened` (numpy holds TF's bfloat16 via ml_dtypes).",
            "jax_impl": "`np.asarray(array)`, then `shared.weights.widened` (numpy holds JAX's bfloat16 via ml_dtypes).",
        },
        "PARAMS": {
            "pytorch_impl": "The model's `state_dict` already has the canonical names and layouts: nothing to map.",
        },
    },
    "train.py": {
        "Optimizer": {
            "tensorflow_impl": "A Keras optimizer takes the schedule as its `learning_rate`: one object.",
            "jax_impl": "An optax transformation takes the schedule as a function of the step: one object.",
        },
        "LearningRateTable": {
            "pytorch_impl": "`LambdaLR` multiplies the optimizer's float lr by `lr_factor` each step.",
            "jax_impl": "optax takes any function of the step count: `schedule` in `make_optimizer`.",
        },
        "_constant": {
            "pytorch_impl": "No Keras update rule to rewrite (a helper of `TorchSGD`/`TorchAdam`).",
            "jax_impl": "No Keras update rule to rewrite (a helper of `TorchSGD`/`TorchAdam`).",
        },
        "TorchSGD": {
            "pytorch_impl": "`torch.optim.SGD` is the recipe's definition.",
            "jax_impl": "`optax.sgd` keeps torch's buffer `v = m * v + g` already.",
        },
        "TorchAdam": {
            "pytorch_impl": "`torch.optim.Adam` is the recipe's definition.",
            "jax_impl": "`optax.adam` adds eps after the bias correction already, as torch does.",
        },
        "_train_step": {
            "pytorch_impl": "Eager: `train_step` runs the step itself; nothing is traced or compiled (`tf.function`, `nnx.jit`).",
        },
        "_forward": {
            "pytorch_impl": "Eager: `predict` calls the model under `torch.no_grad()`.",
        },
        "with_l2": {
            "pytorch_impl": "`torch.optim.SGD(weight_decay=...)` adds torch's L2 itself.",
            "jax_impl": "`optax.add_decayed_weights` chained before the optimizer adds it.",
        },
        "_slots": {
            "jax_impl": "optax names its states' fields (`_OPTAX_SLOTS`): the chain says which slots exist.",
        },
        "_OPTAX_SLOTS": {
            "pytorch_impl": "torch's slot names are the canonical ones (`OPTIMIZER_SLOTS`).",
            "tensorflow_impl": "Keras keeps each slot as a list of variables (`_slots`), not named fields.",
        },
        "_optax_states": {
            "pytorch_impl": "`optimizer.state[p]` holds each parameter's slots: nothing to search.",
            "tensorflow_impl": "The optimizer's `momentums`/`_velocities` lists hold the slots: nothing to search.",
        },
        "_slot_variables": {
            "pytorch_impl": "`model.named_parameters()` gives the state_dict keys and `optimizer.state[p]` the slots.",
        },
        "_update": {
            "pytorch_impl": "Eager: `apply_gradients` sets `.grad` and calls `optimizer.step()`.",
            "tensorflow_impl": "`optimizer.apply_gradients` takes the gradients directly.",
        },
        "_save": {
            "pytorch_impl": "`torch.save` of the `state_dict`s.",
            "tensorflow_impl": "`model.save_weights` and the optimizer's `save_own_variables`.",
        },
        "_load": {
            "pytorch_impl": "`torch.load` and `load_state_dict`.",
            "tensorflow_impl": "`model.load_weights` and the optimizer's `load_own_variables`.",
        },
    },
}


@dataclass(frozen=True)
class Link:
    """A test that fails when the convention is ignored, as ``path#function``."""

    path: str
    function: str


@dataclass(frozen=True)
class Convention:
    name: str
    torch: str
    keras: str
    flax: str
    tests: tuple[Link, ...]
    without_test: str = ""  # why no test is linked, when none is


NEGATIVE, TRAINING, VARIANTS, KERAS_APPS, PRECISION, FAMILY = (
    "tests/test_negative.py", "tests/test_training_parity.py", "tests/test_variants.py", "tests/test_keras_applications.py",
    "tests/test_precision.py", "tests/test_family.py",
)

CONVENTIONS = (
    Convention(
        "layout", "NCHW; conv kernel OIHW, dense `(out, in)`", "NHWC; conv kernel HWIO, dense `(in, out)`",
        "NHWC; conv kernel HWIO, dense `(in, out)`",
        (Link(NEGATIVE, "test_missing_kernel_transpose_is_caught"),),
    ),
    Convention(
        "conv padding at stride 2", "`padding=k//2`: symmetric",
        "`'same'` pads the bottom/right more: pad by hand, then `'valid'`",
        "`'SAME'` pads the bottom/right more: explicit `[(k//2, k//2)] * 2`",
        (Link(NEGATIVE, "test_tf_same_padding_at_stride_2_is_caught"), Link(VARIANTS, "test_seed_tf_cifar_semantics_are_noticed")),
    ),
    Convention(
        "max-pool padding value", "`F.max_pool2d(padding=1)` pads with -inf; V2's zeros by `F.pad` first",
        "`ops.pad` pads with 0 unless told: `constant_values=-inf` by hand, then `'valid'` (`'same'` pads the bottom/right more)",
        "`nnx.max_pool` with explicit padding pads with -inf; V2's zeros by `jnp.pad` first",
        (Link(NEGATIVE, "test_max_pool_padding_value_is_caught"),),
    ),
    Convention(
        "grouped conv (ResNeXt)", "`nn.Conv2d(groups=g)`: one kernel, weight `(out, in / g, k, k)`",
        "`Conv2D(groups=g)` compiles each grouped conv with XLA, whose CPU gradient is hundreds of times slower, and "
        "TensorFlow's own kernel has no float64 gradient there: one conv per group, concatenated "
        "(`Conv2d.convolution_op`, [grouped_conv.md](grouped_conv.md)); kernel `(k, k, in / g, out)`",
        "`nnx.Conv(feature_group_count=g)`; kernel `(k, k, in / g, out)`",
        (Link(FAMILY, "test_keras_grouped_conv_in_eager_tf_function_and_xla"),
         Link(FAMILY, "test_grouped_and_gated_mistakes_are_caught")),
    ),
    Convention(
        "ECA's 1-D conv over channels", "`nn.Conv1d(1, 1, k, padding=k//2)` on `(N, 1, C)`; weight `(1, 1, k)`",
        "`Conv1D(1, k, padding='same')` on `(N, C, 1)`; kernel `(k, 1, 1)`",
        "`nnx.Conv(1, 1, (k,), padding=[(k//2, k//2)])` on `(N, C, 1)`; kernel `(k, 1, 1)`",
        (Link(FAMILY, "test_grouped_and_gated_mistakes_are_caught"),),
    ),
    Convention(
        "BN momentum", "0.1, the weight of the *new* batch", "0.99 default, the weight of the *old* value: `1 - 0.1`",
        "0.99 default, as Keras: `1 - 0.1`",
        (Link(TRAINING, "test_bn_momentum_not_inverted_is_caught"),),
    ),
    Convention(
        "BN running variance", "unbiased (n - 1)", "biased (n)", "biased (n)",
        (Link(TRAINING, "test_unconverted_running_var_is_caught"), Link(TRAINING, "test_torch_running_var_is_unbiased")),
    ),
    Convention(
        "BN epsilon default", "1e-5", "**1e-3** (Keras applications: 1.001e-5)", "1e-5",
        (Link(NEGATIVE, "test_keras_default_bn_epsilon_is_caught"),),
    ),
    Convention(
        "initialisers", "conv and linear default U(±1/√fan_in); here convs He normal over fan-out (`kaiming_normal_`)",
        "Glorot uniform kernels, zero biases by default; here `VarianceScaling(2, 'fan_out', 'untruncated_normal')` "
        "(Keras's `'normal'` is truncated) and fc `RandomUniform(±1/√fan_in)`",
        "LeCun normal kernels, zero biases by default; here `variance_scaling(2, 'fan_out', 'normal')` (JAX's `'normal'` "
        "is not truncated) and fc U(±1/√fan_in) shifted from `uniform(2b)`",
        (),
        "none: weights are copied before every parity check, so initial values never reach one",
    ),
    Convention(
        "SGD with momentum", "`v = m * v + g; p -= lr * v`", "`v = m * v - lr * g; p += v`: equal only at constant lr",
        "`optax.sgd`: torch's",
        (Link(TRAINING, "test_stock_keras_sgd_matches_only_at_constant_lr"),),
    ),
    Convention(
        "Adam epsilon", "after the bias correction", "before the bias correction", "`optax.adam`: after, as torch",
        (Link(TRAINING, "test_stock_keras_adam_epsilon_is_caught"),),
    ),
    Convention(
        "weight decay", "coupled: L2 added to the gradient", "`weight_decay=` is decoupled (`p -= lr * wd * p`)",
        "coupled with `add_decayed_weights` chained *before* the optimizer; decoupled after it",
        (Link(TRAINING, "test_keras_decoupled_weight_decay_is_caught"),),
    ),
    Convention(
        "mixed precision", "`torch.autocast(dtype=bfloat16)` around the forward, float32 parameters",
        "the `mixed_bfloat16` policy: float32 variables, bfloat16 compute, BN in float32",
        "`dtype=bfloat16` over `param_dtype=float32`; stock `nnx.BatchNorm` then uses its statistics in bfloat16",
        (Link(PRECISION, "test_mixed_precision_is_each_frameworks_idiom"),
         Link(PRECISION, "test_flax_stock_batchnorm_rounds_its_statistics_in_bfloat16"),
         Link(PRECISION, "test_a_statistic_kept_in_bfloat16_fails_the_floor_rule_and_passes_the_tempting_one")),
    ),
)


@dataclass(frozen=True)
class Unit:
    key: str  # the alignment key: "Block.call" for forward, call and __call__
    name: str  # as written: "Block.forward"
    code: str
    first: int  # 1-based line range in the file
    last: int
    methods: tuple[Unit, ...] = ()  # a class's methods; its own code is then the header


class AlignmentError(Exception):
    """The three files cannot be laid side by side as they are (a note missing, an order that differs)."""


def _start(node: ast.stmt, lines: list[str]) -> int:
    """The node's first line, decorators and the comment lines right above it included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    while first > 1 and lines[first - 2].strip().startswith("#"):
        first -= 1
    return first


def _code(lines: list[str], first: int, last: int) -> str:
    return textwrap.dedent("\n".join(lines[first - 1 : last])).rstrip()


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _unit(node: ast.stmt, lines: list[str], where: str, prefix: str = "") -> Unit:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = node.name
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name = node.targets[0].id
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        name = node.target.id
    else:
        raise AlignmentError(f"{where}:{node.lineno}: a {type(node).__name__} statement is not a unit {COMMAND} can align")
    key = METHOD_ROLES.get(name, name) if prefix else name
    first = _start(node, lines)
    return Unit(prefix + key, prefix + name, _code(lines, first, node.end_lineno), first, node.end_lineno)


def _split(cls: ast.ClassDef, lines: list[str], where: str) -> Unit:
    """A class as a header (decorators, ``class`` line, docstring, class attributes) and one unit per method."""
    defs = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    methods = tuple(_unit(n, lines, where, prefix=f"{cls.name}.") for n in defs)
    first = _start(cls, lines)
    last = (_start(defs[0], lines) - 1) if defs else cls.end_lineno
    while not lines[last - 1].strip():
        last -= 1
    return Unit(cls.name, cls.name, _code(lines, first, last), first, last, methods)


def read_units(path: Path) -> list[ast.stmt | Unit]:
    """A module's units in order: its docstring, its imports (as one), then each top-level statement."""
    text = path.read_text()
    lines = text.splitlines()
    where = path.relative_to(ROOT).as_posix()
    units: list = []
    body = ast.parse(text).body
    if body and _is_docstring(body[0]):
        units.append(Unit("module docstring", "module docstring", _code(lines, 1, body[0].end_lineno), 1, body[0].end_lineno))
        body = body[1:]
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if imports:
        first, last = imports[0].lineno, imports[-1].end_lineno
        if any(not isinstance(n, (ast.Import, ast.ImportFrom)) and first <= n.lineno <= last for n in body):
            raise AlignmentError(f"{where}:{first}-{last}: the imports are not in one group")
        units.append(Unit("imports", "imports", _code(lines, first, last), first, last))
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        units.append(node if isinstance(node, ast.ClassDef) else _unit(node, lines, where))
    return units


def common_order(sequences: list[list[str]], where: str) -> list[str]:
    """Every key once, each sequence's order kept; ties go to the earlier framework's order."""
    rank = {}
    for i, seq in enumerate(sequences):
        for j, key in enumerate(seq):
            rank.setdefault(key, (i, j))
    before = {key: set() for key in rank}
    for seq in sequences:
        for a, b in zip(seq, seq[1:]):
            before[b].add(a)
    order: list[str] = []
    while len(order) < len(rank):
        ready = [k for k in rank if k not in order and before[k] <= set(order)]
        if not ready:
            left = [k for k in rank if k not in order]
            raise AlignmentError(f"{where}: {', '.join(left)} come in a different order in different frameworks")
        order.append(min(ready, key=rank.__getitem__))
    return order


@dataclass(frozen=True)
class Row:
    key: str
    cells: dict[str, Unit | str]  # package -> the unit, or the note on why it is absent
    level: int = 0  # 1 for a method


def align(filename: str) -> list[Row]:
    """The rows of one file's section: each unit with its three versions or the note on each absence."""
    where = f"*/{filename}"
    notes = NOTES.get(filename, {})
    raw = {pkg: read_units(ROOT / pkg / filename) for pkg in FRAMEWORKS}
    lines = {pkg: (ROOT / pkg / filename).read_text().splitlines() for pkg in FRAMEWORKS}
    class_count: dict[str, int] = {}
    for units in raw.values():
        for u in units:
            if isinstance(u, ast.ClassDef):
                class_count[u.name] = class_count.get(u.name, 0) + 1
    # a class found in two or three frameworks is compared method by method; a class of one, whole
    units = {
        pkg: [
            (_split(u, lines[pkg], f"{pkg}/{filename}") if class_count[u.name] > 1 else _unit(u, lines[pkg], f"{pkg}/{filename}"))
            if isinstance(u, ast.ClassDef) else u
            for u in us
        ]
        for pkg, us in raw.items()
    }
    by_key: dict[str, dict[str, Unit]] = {}
    for pkg, us in units.items():
        for u in us:
            for v in (u, *u.methods):
                if v.key in by_key.get(pkg, {}):
                    raise AlignmentError(f"{pkg}/{filename}:{v.first}: a second unit named {v.key}")
                by_key.setdefault(pkg, {})[v.key] = v
    top = common_order([[u.key for u in us] for us in units.values()], where)
    problems, used = [], set()
    rows = []
    for key in top:
        method_order = common_order(
            [[m.key for m in by_key[pkg][key].methods] for pkg in FRAMEWORKS if key in by_key[pkg]], f"{where} {key}")
        for k in (key, *method_order):
            cells: dict[str, Unit | str] = {}
            for pkg, label in FRAMEWORKS.items():
                if k in by_key[pkg]:
                    cells[pkg] = by_key[pkg][k]
                elif k != key and key not in by_key[pkg]:
                    cells[pkg] = f"No `{key}` class."
                elif pkg in notes.get(k, {}):
                    cells[pkg] = notes[k][pkg]
                    used.add((k, pkg))
                else:
                    problems.append(f"{k} is absent from {pkg}/{filename}: say why in NOTES[{filename!r}][{k!r}][{pkg!r}]")
            rows.append(Row(k, cells, level=int(k != key)))
    for k, by_pkg in notes.items():
        for pkg in by_pkg:
            if (k, pkg) not in used:
                problems.append(f"NOTES[{filename!r}][{k!r}][{pkg!r}] explains an absence that no longer exists: remove it")
    if problems:
        raise AlignmentError("\n".join(problems))
    return rows


def defined_tests(path: str) -> dict[str, int]:
    """The test functions defined at the top level of a test file, with the line of their ``def`` (empty if the
    file is gone): GitHub anchors a line, not a function."""
    file = ROOT / path
    if not file.exists():
        return {}
    tree = ast.parse(file.read_text())
    return {n.name: n.lineno for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")}


def check_links(conventions=CONVENTIONS) -> list[str]:
    """The linked tests that do not exist, as ``path#function``."""
    found: dict[str, dict[str, int]] = {}
    return [
        f"{link.path}#{link.function}"
        for c in conventions for link in c.tests
        if link.function not in found.setdefault(link.path, defined_tests(link.path))
    ]


def _cell(pkg: str, filename: str, cell: Unit | str) -> str:
    if isinstance(cell, str):
        return f"<td><em>{_inline(cell)}</em></td>"
    href = f"../{pkg}/{filename}#L{cell.first}" + (f"-L{cell.last}" if cell.last > cell.first else "")
    lines = f"L{cell.first}" + (f"–{cell.last}" if cell.last > cell.first else "")
    # no blank line inside the HTML block: Markdown would end the block there
    code = "\n".join(line if line.strip() else "&#32;" for line in html.escape(cell.code, quote=False).split("\n"))
    return f'<td><a href="{href}">{lines}</a>\n<pre>{code}</pre></td>'


def _inline(text: str) -> str:
    """`code` spans of a note as <code>, the rest escaped."""
    parts = html.escape(text, quote=False).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _title(row: Row) -> str:
    names = []
    for cell in row.cells.values():
        if isinstance(cell, Unit) and cell.name not in names:
            names.append(cell.name)
    shown = " · ".join(f"<code>{html.escape(n)}</code>" for n in names)
    return shown if row.level == 0 else "&nbsp;&nbsp;&nbsp;&nbsp;" + shown


def section(filename: str, title: str) -> str:
    heads = "".join(f"<th>{label}</th>" for label in FRAMEWORKS.values())
    out = [f"## {title}: `{filename}`", "", "<table>", f"<tr>{heads}</tr>"]
    for row in align(filename):
        out.append(f'<tr><th colspan="{len(FRAMEWORKS)}" align="left">{_title(row)}</th></tr>')
        out.append("<tr valign=\"top\">")
        out.extend(_cell(pkg, filename, row.cells[pkg]) for pkg in FRAMEWORKS)
        out.append("</tr>")
    out += ["</table>", ""]
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def conventions_table() -> str:
    missing = check_links()
    if missing:
        raise AlignmentError("linked tests that do not exist (update CONVENTIONS): " + ", ".join(missing))
    out = [
        "## The conventions that differ",
        "",
        "What a port must respect: each row links to the test that fails when the convention is ignored.",
        "",
        f"| | {' | '.join(FRAMEWORKS.values())} | the test that fails without it |",
        "|---|---|---|---|---|",
    ]
    for c in CONVENTIONS:
        tests = "<br>".join(f"[`{Path(t.path).name}::{t.function}`](../{t.path}#L{defined_tests(t.path)[t.function]})"
                            for t in c.tests)
        out.append(f"| {c.name} | {_md(c.torch)} | {_md(c.keras)} | {_md(c.flax)} | {tests or _md(c.without_test)} |")
    return "\n".join(out) + "\n"


def render() -> str:
    """The whole guide, from the source files as they are now."""
    intro = (
        "# Idioms: one ResNet in PyTorch, Keras 3 and Flax NNX\n\n"
        "First the conventions that differ between the frameworks, then the three implementations side by side: "
        + ", ".join(f"[{title.lower()}](#{_anchor(f'{title}: {f}')})" for f, title in SECTIONS.items()) + ".\n\n"
        f"Generated by `{COMMAND}` from `*/resnet.py`, `*/weights.py` and `*/train.py` (parsed with `ast`, "
        "nothing imported); do not edit by hand. Units are matched by name (`forward`, `call` and `__call__` "
        "side by side) in the files' common order; an empty cell says why that framework needs no such unit. "
        "Each cell links to its lines in the file. "
        f"`tests/test_docs.py` fails when this file is out of date: rerun `{COMMAND}`.\n"
    )
    return "\n".join([intro, conventions_table(), *(section(f, t) for f, t in SECTIONS.items())]).rstrip() + "\n"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_").replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/idioms.md is out of date, write nothing")
    args = parser.parse_args(argv)
    try:
        text = render()
    except AlignmentError as err:
        print(f"{COMMAND}: {err}", file=sys.stderr)
        return 2
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date with the code: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
