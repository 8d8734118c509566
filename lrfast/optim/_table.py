"""The optimizer table: one declarative entry per optimizer, the single source of truth.

Every optimizer lrfast ships is one :class:`Spec` row below (scikit-learn's
``_loss.pyx.tp`` ``class_list``, torch's ``optim_db``). A row holds the name, the
kernel kind, the state arrays (torch's names), the named per-step scalar fields
the kernel reads, the hyperparameters with their defaults and ranges, the
reference equivalents, the numpy twin, support flags and benchmark settings.

From it lrfast derives:

- the kernels' C enum, one named struct of doubles per kind (``AdamRow``: the
  loop reads ``r.step_size``, never a slot number) and the dispatch
  (:func:`cython_source`, run by ``setup.py`` into ``src/_table.pxi``);
- each optimizer class's signature and defaults (:mod:`lrfast.optim`);
- every list of optimizers: the benchmark runner's, the distributed wrapper's,
  the vectorization check's and the tests' parametrizations.

This module imports nothing outside the standard library: the build runs it
before lrfast exists.

Adding an optimizer: its row here, its loop body in ``src/_kernels.pxi``, its
row plan in :mod:`lrfast.optim._rules`, its twin in :mod:`lrfast._reference`,
and its entry in the parity test's option sets.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

__all__ = ["HP", "Kind", "Spec", "KINDS", "TABLE", "MAX_STATES", "MAX_SUMS", "REQUIRED",
           "optimizers", "cython_source"]

MAX_STATES = 4       # state arrays per param: the engine's TensorRec.s (src/_kernels.pxi)
MAX_SUMS = 3         # per-tensor sums of a per-tensor kind (Data.bred in src/_kernels.pxi)
MAX_TENSOR_STATE = 3  # engine-held scalars per tensor (TensorRec.ts)
MAX_GLOBAL_STATE = 6  # engine-held scalars per group of a global kind (Data.gstate), scratch too


class _Required:
    """The default of a hyperparameter that has none (LARS's lr, as optax): as
    torch's ``required``, each group must then give a value."""

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"            # pickles as the module's one instance


REQUIRED: Any = _Required()


class HP(NamedTuple):
    """One hyperparameter: name, default, range check and whether it is keyword-only.

    ``check`` names a range: ``"ge0"`` (>= 0), ``"gt0"`` (> 0), ``"unit"``
    ([0, 1]), ``"unit_open"`` ([0, 1)), ``"real"`` (any finite number),
    ``"bool"``, ``"betas"`` (a pair in [0, 1)), ``"betas3"`` (a triple in [0, 1)),
    ``"etas"`` (a pair ``0 < etaminus < 1 < etaplus``), ``"step_sizes"`` (a pair
    ``0 <= min <= max``), ``"le0"`` (<= 0), ``"ge1"`` (>= 1), ``"eps_pair"``
    (Adafactor's ``(eps1 or None, eps2)``, both >= 0), ``"real3"`` (three finite
    numbers), ``"ns_steps"`` (an int in [0, 100)), ``"adjust_lr_fn"`` (None,
    ``"original"`` or ``"match_rms_adamw"``). Numbers may be schedules unless
    ``schedulable`` is False (values used only when state is allocated).
    """
    name: str
    default: Any
    check: str
    kwonly: bool = False
    schedulable: bool = True


class Kind(NamedTuple):
    """A kernel: its loop function, state slots, and the named fields of its
    scalar row. ``fields`` are fixed for a compiled group; ``step_fields``
    change every step (step counts, the learning rate). Every row starts with
    ``gs``, the grad scale (sign of maximize times the clipping factor)."""
    name: str
    n_states: int
    fields: Tuple[str, ...]
    step_fields: Tuple[str, ...]
    aux: bool = False            # reads a second input per param (DiagonalNewton)
    # Per-tensor kinds (LAMB, LARS, NovoGrad): a read-only pass sums ``sums``
    # per tensor (fixed blocks and lanes: the same on every thread count), then
    # ``_<name>_tensor`` fills ``tensor_fields`` of that tensor's row from them
    # and from the engine-held per-tensor scalars ``tensor_state``.
    sums: Tuple[str, ...] = ()
    tensor_fields: Tuple[str, ...] = ()
    tensor_state: Tuple[str, ...] = ()
    # Global kinds (Prodigy): the sums of every tensor of the step (each pairwise
    # over its blocks, as above) go to ``_<name>_global(trows, n, tsums, gs,
    # phase)``, which combines them in tensor order and updates the engine-held
    # ``global_state`` (MAX_GLOBAL_STATE doubles per group from ``gs``; Prodigy
    # uses group 0's as one set per optimizer). Phase 0 runs
    # before the read-only pass (fills every tensor's row from the state),
    # phase 1 after it (the new state, then the rows of the update).
    global_state: Tuple[str, ...] = ()
    # Low precision: which 8-bit map each state slot takes ("s" signed: first
    # moments, momentum; "u" unsigned: second moments, sums of squares). A kind
    # with ``qmaps`` takes 16-bit params and bfloat16/int8 state (staged
    # through float32 buffers in its one elementwise pass); () takes neither.
    qmaps: Tuple[str, ...] = ()

    @property
    def is_global(self) -> bool:
        return bool(self.global_state)

    @property
    def row_fields(self) -> Tuple[str, ...]:
        """The fields a row plan fills (the C struct then has ``tensor_fields``)."""
        return self.fields + self.step_fields

    @property
    def struct_fields(self) -> Tuple[str, ...]:
        return self.fields + self.step_fields + self.tensor_fields

    def pack(self, **values: float) -> Tuple[float, ...]:
        """A complete row from its fields by name (exactly the kind's fields)."""
        if set(values) != set(self.row_fields):
            raise ValueError(f"row of kind {self.name!r} needs exactly the fields "
                             f"{self.row_fields}, got {tuple(values)}")
        return tuple(float(values[f]) for f in self.row_fields)


class Spec(NamedTuple):
    """One optimizer."""
    name: str
    kind: str
    states: Tuple[str, ...]
    hparams: Tuple[HP, ...]
    doc: str
    refs: Dict[str, str]
    twin: Optional[str]
    has_step: bool = True
    optional_states: Tuple[str, ...] = ()
    distributed: bool = True
    isa: bool = True
    bench: Optional[Dict[str, Any]] = None
    public: bool = True
    # True: the optimizer has its own step (state that is not the param's
    # shape: Adafactor's row/column factors, Muon's matrix iteration), not a
    # loop of the fused engine; ``kind`` then names that step, not a KINDS entry
    own_step: bool = False
    sparse: Optional[str] = None   # "rows": also takes RowSparse grads; "only": takes only those

    @property
    def defaults(self) -> Dict[str, Any]:
        return {h.name: h.default for h in self.hparams}


_GD = ("gs", "wd", "l2")       # grad scale, L2 weight decay and its flag: every optimizer's head

_DOG = ("gs", "wd", "decay", "reps", "eps", "has_init", "init_eta")

KINDS: Dict[str, Kind] = {k.name: k for k in (
    Kind("sgd", 1, _GD + ("mu", "d1", "mom", "nesterov"), ("lr", "first"), qmaps=("s",)),
    Kind("adagrad", 1, _GD + ("eps",), ("clr",), qmaps=("u",)),
    Kind("adadelta", 2, _GD + ("rho", "c", "eps"), ("lr",), qmaps=("u", "u")),
    Kind("rmsprop", 3, _GD + ("alpha", "c", "eps", "mu", "mom", "centered"), ("lr",),
         qmaps=("u", "s", "s")),
    Kind("adam", 3, _GD + ("c1", "b2", "c2", "eps", "decoupled", "amsgrad"),
         ("step_size", "bc2_sqrt", "dm"), qmaps=("s", "u", "u")),
    Kind("adamax", 2, _GD + ("c1", "b2", "eps"), ("clr",), qmaps=("s", "u")),
    Kind("nadam", 2, _GD + ("c1", "b2", "c2", "eps", "decoupled"), ("bc2", "cg", "cm", "dm"),
         qmaps=("s", "u")),
    Kind("radam", 2, _GD + ("c1", "b2", "c2", "eps", "decoupled"),
         ("bc1", "lr", "bc2_sqrt", "rect", "rectify", "dm"), qmaps=("s", "u")),
    Kind("rprop", 2, ("gs", "etaminus", "etaplus", "smin", "smax"), ("lr", "first")),
    Kind("asgd", 1, _GD, ("dm", "eta", "mu", "avg")),
    Kind("lion", 1, ("gs", "wd", "b1", "c1", "b2", "c2"), ("lr",), qmaps=("s",)),
    Kind("adabelief", 2, ("gs", "b1", "c1", "b2", "c2", "eps", "eps_root"), ("bc1", "bc2", "lr"),
         qmaps=("s", "u")),
    Kind("yogi", 2, ("gs", "b1", "c1", "c2", "eps"), ("bc1", "bc2", "lr"), qmaps=("s", "u")),
    Kind("adopt", 2, ("gs", "b1", "c1", "b2", "c2", "eps"), ("first", "clip", "lr"),
         qmaps=("s", "u")),
    Kind("adan", 4, ("gs", "b1", "c1", "b2", "c2", "b3", "c3", "eps", "eps_root", "wd", "decay"),
         ("first", "bc1", "bc2", "bc3", "lr")),
    Kind("lamb", 2, ("gs", "b1", "c1", "b2", "c2", "eps", "eps_root", "wd", "decay"),
         ("bc1", "bc2", "lr"), sums=("pp", "uu"), tensor_fields=("step",)),
    Kind("lars", 1, ("gs", "wd", "decay", "tc", "eps", "mom", "nesterov"), ("lr",),
         sums=("pp", "uu"), tensor_fields=("nstep",)),
    Kind("novograd", 1, ("gs", "b1", "b2", "c2", "eps", "eps_root", "wd", "decay"),
         ("first", "lr"), sums=("gg",), tensor_fields=("den",), tensor_state=("nu",)),
    # Prodigy (prodigyopt 1.1.2): s0 = s, s1 = p0, s2 = exp_avg (None when b1 = 0),
    # s3 = exp_avg_sq; the row's betas, bias correction, d_coef, growth_rate and
    # decouple are read from the first tensor's row (the reference reads group 0's)
    Kind("prodigy", 4, ("gs", "wd", "decouple", "eps", "d0", "safeguard", "b1", "b2", "b3",
                        "bias", "d_coef", "growth"), ("lr", "first"), sums=("num", "den"),
         tensor_fields=("mom", "b1r", "cm", "b2r", "cv", "b3r", "cs", "wn", "l2", "dec", "dwd",
                        "deps", "stepc", "apply", "on"),
         global_state=("d", "d_max", "d_numerator", "k")),
    # DoG / LDoG (dog-optimizer 1.0.3): s0 = x0; the same fields and loops, DoG's
    # rbar, G, eta per group (global), LDoG's per tensor
    Kind("dog", 1, _DOG, ("lr", "first"), sums=("dd", "gg"), tensor_fields=("neta",),
         global_state=("rbar", "G", "eta")),
    Kind("ldog", 1, _DOG, ("lr", "first"), sums=("dd", "gg"), tensor_fields=("neta",),
         tensor_state=("rbar", "G", "eta")),
    # D-Adaptation (dadaptation 3.2): global kinds as Prodigy, one set of d and its
    # sums per optimizer (group 0's). DAdaptAdam: s0 = s, s1 = exp_avg_sq, s2 = exp_avg
    Kind("dadapt_adam", 3, ("gs", "wd", "decouple", "eps", "b1", "b2", "bias", "growth", "ls"),
         ("lr",), sums=("num", "l1"),
         tensor_fields=("b1r", "cm", "b2r", "c2", "sb2", "cs", "l2", "dec", "dwd", "on",
                        "apply"),
         global_state=("d", "numerator_weighted", "k")),
    # DAdaptSGD: s0 = s, s1 = z, s2 = x0; the first step's sums are ||g||^2 (g0_norm)
    # and ||g + wd*p||^2 (s = 0 then, so <g, s> = 0)
    Kind("dadapt_sgd", 3, ("gs", "wd", "mom", "growth"), ("lr", "first"), sums=("gg", "ss"),
         tensor_fields=("w", "l2", "k0", "dlr", "a", "ck", "on", "apply"),
         global_state=("d", "numerator_weighted", "g0_norm", "k")),
    # DAdaptAdaGrad: s0 = alphak, s1 = sk, s2 = x0
    Kind("dadapt_adagrad", 3, ("gs", "wd", "decay", "eps", "momentum", "growth"), ("lr", "first"),
         sums=("dsksq", "gsq", "dskl1"), tensor_fields=("dlr", "a", "ck", "mom", "apply"),
         global_state=("d", "gsq_weighted", "sksq_weighted", "skl1", "k")),
    Kind("diag_newton", 0, _GD + ("damping",), ("lr",), aux=True),
    Kind("scale", 0, ("gs",), ()),          # g *= gs: clip_grad_norm's in-place scaling
    # schedule-free (Defazio et al. 2024): y (the param) and z; x is implied
    Kind("sf_sgd", 1, ("gs", "wd", "decay"), ("first", "ckp1", "hi", "cy", "lr")),
    Kind("sf_adam", 2, ("gs", "wd", "decay", "b2", "c2", "eps"),
         ("first", "ckp1", "hi", "cy", "lr", "bc2", "adapt")),
)}

_LR = lambda d: HP("lr", d, "ge0")                              # noqa: E731
_WD = lambda d=0.0: HP("weight_decay", d, "ge0")                # noqa: E731
_BETAS = HP("betas", (0.9, 0.999), "betas")
_MAX = HP("maximize", False, "bool", kwonly=True)
_DWD = HP("decoupled_weight_decay", False, "bool")

_ROWS = (
    Spec("SGD", "sgd", ("momentum_buffer",),
         (_LR(1e-3), HP("momentum", 0.0, "ge0"), HP("dampening", 0.0, "real"), _WD(),
          HP("nesterov", False, "bool"), _MAX),
         "Stochastic gradient descent with momentum",
         {"torch": "torch.optim.SGD", "keras": "keras.optimizers.SGD", "optax": "optax.sgd"},
         "sgd", has_step=False, optional_states=("momentum_buffer",),
         bench={"lr": 1e-3, "momentum": 0.9}, sparse="rows"),
    Spec("Adagrad", "adagrad", ("sum",),
         (_LR(1e-2), HP("lr_decay", 0.0, "ge0"), _WD(),
          HP("initial_accumulator_value", 0.0, "ge0", schedulable=False),
          HP("eps", 1e-10, "gt0"), _MAX),
         "Adagrad: per-parameter rates from the running sum of squared gradients",
         {"torch": "torch.optim.Adagrad", "keras": "keras.optimizers.Adagrad",
          "optax": "optax.adagrad"}, "adagrad", bench={"lr": 1e-2}, sparse="rows"),
    Spec("Adadelta", "adadelta", ("square_avg", "acc_delta"),
         (_LR(1.0), HP("rho", 0.9, "unit"), HP("eps", 1e-6, "gt0"), _WD(), _MAX),
         "Adadelta", {"torch": "torch.optim.Adadelta", "keras": "keras.optimizers.Adadelta",
                      "optax": "optax.adadelta"}, "adadelta", bench={"lr": 1.0}),
    Spec("RMSprop", "rmsprop", ("square_avg", "momentum_buffer", "grad_avg"),
         (_LR(1e-2), HP("alpha", 0.99, "unit"), HP("eps", 1e-8, "gt0"), _WD(),
          HP("momentum", 0.0, "ge0"), HP("centered", False, "bool"), _MAX),
         "RMSprop, optionally centered and with momentum",
         {"torch": "torch.optim.RMSprop", "keras": "keras.optimizers.RMSprop",
          "optax": "optax.rmsprop"}, "rmsprop", bench={"lr": 1e-2}),
    Spec("Adam", "adam", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-8, "gt0"), _WD(), HP("amsgrad", False, "bool"),
          _MAX, HP("decoupled_weight_decay", False, "bool", kwonly=True)),
         "Adam (Kingma & Ba 2015), with amsgrad and optionally decoupled weight decay",
         {"torch": "torch.optim.Adam", "keras": "keras.optimizers.Adam", "optax": "optax.adam"},
         "adam", bench={"lr": 1e-3}),
    Spec("AdamW", "adam", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-8, "gt0"), _WD(1e-2), HP("amsgrad", False, "bool"),
          _MAX),
         "AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019)",
         {"torch": "torch.optim.AdamW", "keras": "keras.optimizers.AdamW",
          "optax": "optax.adamw"}, "adamw", bench={"lr": 1e-3}),
    Spec("Adamax", "adamax", ("exp_avg", "exp_inf"),
         (_LR(2e-3), _BETAS, HP("eps", 1e-8, "gt0"), _WD(), _MAX),
         "Adamax: Adam with an infinity norm",
         {"torch": "torch.optim.Adamax", "keras": "keras.optimizers.Adamax",
          "optax": "optax.adamax"}, "adamax", bench={"lr": 2e-3}),
    Spec("NAdam", "nadam", ("exp_avg", "exp_avg_sq"),
         (_LR(2e-3), _BETAS, HP("eps", 1e-8, "gt0"), _WD(), HP("momentum_decay", 4e-3, "ge0"),
          _DWD, _MAX),
         "NAdam: Adam with Nesterov momentum and momentum decay (Dozat 2016)",
         {"torch": "torch.optim.NAdam", "keras": "keras.optimizers.Nadam",
          "optax": "optax.nadam"}, "nadam", bench={"lr": 2e-3}),
    Spec("RAdam", "radam", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-8, "gt0"), _WD(), _DWD, _MAX),
         "RAdam: Adam with variance rectification (Liu et al. 2020)",
         {"torch": "torch.optim.RAdam", "optax": "optax.radam"}, "radam",
         bench={"lr": 1e-3}),
    Spec("Rprop", "rprop", ("prev", "step_size"),
         (_LR(1e-2), HP("etas", (0.5, 1.2), "etas", schedulable=False),
          HP("step_sizes", (1e-6, 50.0), "step_sizes", schedulable=False), _MAX),
         "Rprop: resilient backpropagation, per-element step sizes from grad signs",
         {"torch": "torch.optim.Rprop"}, "rprop", bench={"lr": 1e-2}),
    Spec("ASGD", "asgd", ("ax",),
         (_LR(1e-2), HP("lambd", 1e-4, "ge0"), HP("alpha", 0.75, "ge0"), HP("t0", 1e6, "ge0"),
          _WD(), _MAX),
         "ASGD: averaged stochastic gradient descent (Polyak & Juditsky 1992)",
         {"torch": "torch.optim.ASGD"}, "asgd", bench={"lr": 1e-2}),
    Spec("Lion", "lion", ("exp_avg",),
         (_LR(1e-4), HP("betas", (0.9, 0.99), "betas"), _WD()),
         "Lion: the sign of an interpolated momentum (Chen et al. 2023)",
         {"optax": "optax.lion"}, "lion", bench={"lr": 1e-4}),
    Spec("AdaBelief", "adabelief", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-16, "gt0"), HP("eps_root", 1e-16, "ge0")),
         "AdaBelief: Adam whose second moment tracks the grad's deviation from its mean "
         "(Zhuang et al. 2020)",
         {"optax": "optax.adabelief (state mu = exp_avg, nu = exp_avg_sq)"}, "adabelief",
         bench={"lr": 1e-3}),
    Spec("Yogi", "yogi", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-2), _BETAS, HP("eps", 1e-3, "gt0")),
         "Yogi: Adam with an additive, sign-controlled second moment (Zaheer et al. 2018)",
         {"optax": "optax.yogi (state mu = exp_avg, nu = exp_avg_sq; both start at 1e-6)"},
         "yogi", bench={"lr": 1e-2}),
    Spec("ADOPT", "adopt", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-3), HP("betas", (0.9, 0.9999), "betas"), HP("eps", 1e-6, "gt0")),
         "ADOPT: Adam normalized by the previous second moment, clipped (Taniguchi et al. 2024)",
         {"optax": "optax.contrib.adopt (state mu = exp_avg, nu = exp_avg_sq; "
                   "use_clipping=True, clip (t-1)**0.25, nesterov=False)"},
         "adopt", bench={"lr": 1e-3}),
    Spec("Adan", "adan", ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad"),
         (_LR(1e-3), HP("betas", (0.98, 0.92, 0.99), "betas3"), HP("eps", 1e-8, "gt0"),
          HP("eps_root", 1e-8, "ge0"), _WD()),
         "Adan: adaptive Nesterov momentum from the grad and its difference (Xie et al. 2022)",
         {"optax": "optax.adan (state m = exp_avg, v = exp_avg_diff, n = exp_avg_sq, "
                   "g = prev_grad)"}, "adan", bench={"lr": 1e-3}),
    Spec("Lamb", "lamb", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-6, "gt0"), _WD(), HP("eps_root", 0.0, "ge0")),
         "LAMB: Adam scaled per tensor by the trust ratio ||p|| / ||u|| (You et al. 2020)",
         {"optax": "optax.lamb (state mu = exp_avg, nu = exp_avg_sq)"}, "lamb",
         distributed=False, bench={"lr": 1e-3}),
    Spec("LARS", "lars", ("trace",),
         (HP("lr", REQUIRED, "ge0"), HP("momentum", 0.9, "ge0"), _WD(),
          HP("trust_coefficient", 1e-3, "gt0"), HP("eps", 0.0, "ge0"),
          HP("nesterov", False, "bool")),
         "LARS: SGD with momentum scaled per tensor by the trust ratio "
         "trust_coefficient * ||p|| / (||g + wd*p|| + eps) (You et al. 2017)",
         {"optax": "optax.lars (state trace = optax's trace: the momentum of the "
                   "lr-scaled update, with its sign)"}, "lars",
         distributed=False, bench={"lr": 1e-2}),
    Spec("NovoGrad", "novograd", ("exp_avg",),
         (_LR(1e-3), HP("betas", (0.9, 0.25), "betas"), HP("eps", 1e-6, "gt0"),
          HP("eps_root", 0.0, "ge0"), _WD()),
         "NovoGrad: a per-tensor second moment of the grad norm, layer-wise normalized "
         "momentum (Ginsburg et al. 2019)",
         {"optax": "optax.novograd (state mu = exp_avg; nu, one number per tensor, = nu)"},
         "novograd", distributed=False, bench={"lr": 1e-3}),
    # Learning-rate free, with a step size from global (all-params) sums: a
    # read-only pass, then the update (src/_kernels.pxi, "global kinds")
    Spec("Prodigy", "prodigy", ("s", "p0", "exp_avg", "exp_avg_sq"),
         (_LR(1.0), HP("betas", (0.9, 0.999), "betas", schedulable=False),
          HP("beta3", None, "beta_or_none", schedulable=False), HP("eps", 1e-8, "gt0"), _WD(),
          HP("decouple", True, "bool"), HP("use_bias_correction", False, "bool"),
          HP("safeguard_warmup", False, "bool"), HP("d0", 1e-6, "gt0", schedulable=False),
          HP("d_coef", 1.0, "gt0"), HP("growth_rate", float("inf"), "growth",
                                       schedulable=False),
          HP("slice_p", 1, "slice_p", schedulable=False)),
         "Prodigy: Adam whose step size d is estimated from the run (Mishchenko & Defazio "
         "2024); lr multiplies it (default 1)",
         {"prodigyopt": "prodigyopt.Prodigy 1.1.2 (slice_p=1; state s and p0 kept in the "
                        "param's shape, not flattened; d, d_max, d_numerator and k in "
                        "every state entry)"},
         None, optional_states=("exp_avg",)),
    Spec("DoG", "dog", ("x0",),
         (HP("reps_rel", 1e-6, "gt0", schedulable=False), _LR(1.0), _WD(),
          HP("eps", 1e-8, "gt0"), HP("init_eta", None, "gt0_or_none", schedulable=False)),
         "DoG (distance over gradients): SGD with the step size "
         "lr * max ||x - x0|| / sqrt(sum ||g||^2 + eps) over each group (Ivgi et al. 2023)",
         {"dog": "dog.DoG 1.0.3 (x0 = its group's init_buffer, per param; rbar, G, eta of "
                 "the param's group in every state entry)"},
         None),
    Spec("LDoG", "ldog", ("x0",),
         (HP("reps_rel", 1e-6, "gt0", schedulable=False), _LR(1.0), _WD(),
          HP("eps", 1e-8, "gt0"), HP("init_eta", None, "gt0_or_none", schedulable=False)),
         "LDoG: DoG with its step size per tensor (layer-wise; Ivgi et al. 2023)",
         {"dog": "dog.LDoG 1.0.3 (x0 = its group's init_buffer, per param; rbar, G, eta "
                 "per param)"},
         None),
    Spec("DAdaptAdam", "dadapt_adam", ("s", "exp_avg_sq", "exp_avg"),
         (_LR(1.0), HP("betas", (0.9, 0.999), "betas", schedulable=False),
          HP("eps", 1e-8, "gt0"), _WD(), HP("log_every", 0, "log_every", schedulable=False),
          HP("decouple", False, "bool"), HP("use_bias_correction", False, "bool"),
          HP("d0", 1e-6, "gt0", schedulable=False),
          HP("growth_rate", float("inf"), "growth", schedulable=False),
          HP("fsdp_in_use", False, "fsdp", schedulable=False),
          HP("layer_scale", 1.0, "ge0", kwonly=True)),
         "D-Adaptation Adam: Adam whose step size d is estimated from the run (Defazio & "
         "Mishchenko 2023); lr multiplies it (default 1)",
         {"dadaptation": "dadaptation.DAdaptAdam 3.2 (log_every=0, fsdp_in_use=False; d, "
                         "numerator_weighted and k in every state entry)"},
         None),
    Spec("DAdaptSGD", "dadapt_sgd", ("s", "z", "x0"),
         (_LR(1.0), HP("momentum", 0.0, "unit_open"), _WD(),
          HP("log_every", 0, "log_every", schedulable=False),
          HP("d0", 1e-6, "gt0", schedulable=False),
          HP("growth_rate", float("inf"), "growth", schedulable=False),
          HP("fsdp_in_use", False, "fsdp", schedulable=False)),
         "D-Adaptation SGD: dual averaging with a step size d estimated from the run "
         "(Defazio & Mishchenko 2023)",
         {"dadaptation": "dadaptation.DAdaptSGD 3.2 (log_every=0, fsdp_in_use=False; d, "
                         "numerator_weighted, g0_norm and k in every state entry)"},
         None),
    Spec("DAdaptAdaGrad", "dadapt_adagrad", ("alphak", "sk", "x0"),
         (_LR(1.0), HP("momentum", 0.0, "ge0"), HP("log_every", 0, "log_every",
                                                  schedulable=False),
          _WD(), HP("eps", 1e-6, "gt0"), HP("d0", 1e-6, "gt0", schedulable=False),
          HP("growth_rate", float("inf"), "growth", schedulable=False)),
         "D-Adaptation AdaGrad: AdaGrad dual averaging with a step size d estimated from "
         "the run (Defazio & Mishchenko 2023)",
         {"dadaptation": "dadaptation.DAdaptAdaGrad 3.2 (dense grads, log_every=0; d, "
                         "gsq_weighted, sksq_weighted, skl1 and k in every state entry)"},
         None),
    # Own steps (lrfast/optim/_own.py): factored state, or a matrix iteration
    Spec("Adafactor", "adafactor", ("row_var", "col_var", "variance"),
         (_LR(1e-2), HP("beta2_decay", -0.8, "le0"),
          HP("eps", (None, 1e-3), "eps_pair", schedulable=False), HP("d", 1.0, "ge1"), _WD(),
          _MAX),
         "Adafactor: factored second moments, relative step sizes and update clipping "
         "(Shazeer & Stern 2018)",
         {"torch": "torch.optim.Adafactor"}, None, optional_states=("row_var", "col_var",
                                                                    "variance"),
         distributed=False, own_step=True),
    Spec("Muon", "muon", ("momentum_buffer",),
         (_LR(1e-3), _WD(0.1), HP("momentum", 0.95, "ge0"), HP("nesterov", True, "bool"),
          HP("ns_coefficients", (3.4445, -4.775, 2.0315), "real3", schedulable=False),
          HP("eps", 1e-7, "ge0"), HP("ns_steps", 5, "ns_steps", schedulable=False),
          HP("adjust_lr_fn", None, "adjust_lr_fn", schedulable=False)),
         "Muon: momentum orthogonalized by a Newton-Schulz iteration, for 2-D params",
         {"torch": "torch.optim.Muon (Newton-Schulz in the param's dtype, not bfloat16)"},
         None, has_step=False, distributed=False, own_step=True),
    # Row-sparse grads only (lrfast.RowSparse); the kernel is src/_sparse.pxi's, its
    # row the adam kind's with step_size = torch's lr*sqrt(1-b2^t)/(1-b1^t).
    Spec("SparseAdam", "adam", ("exp_avg", "exp_avg_sq"),
         (_LR(1e-3), _BETAS, HP("eps", 1e-8, "gt0"), _MAX),
         "SparseAdam: lazy Adam for row-sparse grads (only the touched rows of the param and "
         "its moments change)",
         {"torch": "torch.optim.SparseAdam"}, None, distributed=False, sparse="only"),
    # Schedule-free: train()/eval() move the params between the y and x sequences
    Spec("ScheduleFreeSGD", "sf_sgd", ("z",),
         (_LR(1.0), HP("momentum", 0.9, "unit_open"), _WD(),
          HP("warmup_steps", 0, "ge0", schedulable=False), HP("r", 0.0, "ge0"),
          HP("weight_lr_power", 2.0, "ge0")),
         "Schedule-free SGD (Defazio et al. 2024)",
         {"schedulefree": "schedulefree.SGDScheduleFree"}, "sf_sgd", distributed=False,
         bench={"lr": 1.0}),
    Spec("ScheduleFreeAdamW", "sf_adam", ("z", "exp_avg_sq"),
         (_LR(0.0025), _BETAS, HP("eps", 1e-8, "gt0"), _WD(),
          HP("warmup_steps", 0, "ge0", schedulable=False), HP("r", 0.0, "ge0"),
          HP("weight_lr_power", 2.0, "ge0")),
         "Schedule-free AdamW (Defazio et al. 2024)",
         {"schedulefree": "schedulefree.AdamWScheduleFree"}, "sf_adamw", distributed=False,
         bench={"lr": 0.0025}),
    Spec("ScheduleFreeRAdam", "sf_adam", ("z", "exp_avg_sq"),
         (_LR(0.0025), _BETAS, HP("eps", 1e-8, "gt0"), _WD(), HP("r", 0.0, "ge0"),
          HP("weight_lr_power", 2.0, "ge0"), HP("silent_sgd_phase", True, "bool")),
         "Schedule-free RAdam (Defazio et al. 2024)",
         {"schedulefree": "schedulefree.RAdamScheduleFree"}, "sf_radam", distributed=False,
         bench={"lr": 0.0025}),
    Spec("DiagonalNewton", "diag_newton", (),
         (_LR(1.0), HP("damping", 1e-4, "gt0"), _WD(), _MAX),
         "Diagonal Newton: per-parameter rates lr/(|h| + damping) from a Hessian diagonal",
         {}, None, distributed=False),
)

TABLE: Dict[str, Spec] = {s.name: s for s in _ROWS}


def optimizers(*, distributed: Optional[bool] = None, twin: Optional[bool] = None,
               aux: Optional[bool] = None):
    """Names of the public optimizers, filtered by support flags."""
    out = []
    for s in _ROWS:
        if not s.public:
            continue
        if distributed is not None and s.distributed != distributed:
            continue
        if twin is not None and (s.twin is not None) != twin:
            continue
        if aux is not None and (not s.own_step and KINDS[s.kind].aux) != aux:
            continue
        out.append(s.name)
    return out


def cython_source() -> Dict[str, str]:
    """Cython for the kernels, by file name: ``_table.pxi`` (the kind enum and
    one named row struct per kind, included before the loops) and
    ``_table_dispatch.pxi`` (the dispatch, included after them). ``setup.py``
    writes both into ``src/``."""
    kinds = list(KINDS.values())
    out = ["# Generated from lrfast/optim/_table.py by setup.py: do not edit.", "",
           "cdef enum:"]
    out += [f"    K_{k.name.upper()} = {i}" for i, k in enumerate(kinds)]
    out += [f"    N_KINDS = {len(kinds)}",
            f"    NS = {max(len(k.struct_fields) for k in kinds)}   # doubles in the longest row",
            f"    MAX_SUMS = {MAX_SUMS}", f"    MAX_TSTATE = {MAX_TENSOR_STATE}",
            f"    MAX_GSTATE = {MAX_GLOBAL_STATE}",
            "    TSTRIDE = MAX_SUMS + 2   # a global kind's per-tensor sums, has-grad, group", ""]
    for k in kinds:
        out.append(f"ctypedef struct {_struct(k)}:")
        out += [f"    double {f}" for f in k.struct_fields]
        out.append("")
    out.append(f"KINDS = {{{', '.join(f'{k.name!r}: K_{k.name.upper()}' for k in kinds)}}}")
    out.append("ROW_FIELDS = {" + ", ".join(f"{k.name!r}: {k.row_fields!r}" for k in kinds) + "}")
    out.append("ROW_SIZES = {" + ", ".join(
        f"{k.name!r}: sizeof({_struct(k)}) // sizeof(double)" for k in kinds) + "}")
    out.append("AUX_KINDS = frozenset({" + ", ".join(
        f"K_{k.name.upper()}" for k in kinds if k.aux) + "})")
    out.append("TENSOR_STATE = {" + ", ".join(
        f"{k.name!r}: {k.tensor_state!r}" for k in kinds if k.tensor_state) + "}")
    out.append("GLOBAL_STATE = {" + ", ".join(
        f"{k.name!r}: {k.global_state!r}" for k in kinds if k.global_state) + "}")
    out += ["cdef int _ROW_LEN[N_KINDS]", "cdef int _NSUMS[N_KINDS]", "cdef int _GLOBAL[N_KINDS]"]
    out += [f"_ROW_LEN[K_{k.name.upper()}] = {len(k.row_fields)}" for k in kinds]
    out += [f"_NSUMS[K_{k.name.upper()}] = {len(k.sums)}" for k in kinds]
    out += [f"_GLOBAL[K_{k.name.upper()}] = {int(k.is_global)}" for k in kinds]
    head = "\n".join(out) + "\n"
    # Each kind's loop is called through a pointer, never inlined into the engine's
    # task runner: inlined into that large function, gcc (12 and 13) left some
    # loops scalar ("no vectype"); as functions of their own they vectorize.
    sig = "(real* p, const real* g, const real* h, real* s0, real* s1,"
    out = ["# Generated from lrfast/optim/_table.py by setup.py: do not edit.", ""]
    for t, c in (("32", "float"), ("64", "double")):
        out += [f"ctypedef void (*_kern{t}_t)({c}*, const {c}*, const {c}*, {c}*, {c}*, {c}*,",
                f"                          {c}*, Py_ssize_t, const double*) noexcept nogil",
                f"cdef _kern{t}_t _KERN{t}[N_KINDS]"]
    for k in kinds:
        s3 = " s3," if k.n_states > 3 else ""     # only the kinds with a 4th state take s3
        out += ["", "",
                f"cdef void _call_{k.name}{sig}",
                " " * (len(k.name) + 17)
                + "real* s2, real* s3, Py_ssize_t n, const double* r) noexcept nogil:",
                f"    _{k.name}(p, g, h, s0, s1, s2,{s3} n, <const {_struct(k)}*>r)"]
    out += ["", ""]
    for k in kinds:
        out += [f"_KERN32[K_{k.name.upper()}] = _call_{k.name}[float]",
                f"_KERN64[K_{k.name.upper()}] = _call_{k.name}[double]"]
    out += ["", "",
            "cdef inline void _apply(int kind, real* p, const real* g, const real* h, real* s0,",
            "                        real* s1, real* s2, real* s3, Py_ssize_t n,",
            "                        const double* r) noexcept nogil:",
            "    if real is float:",
            "        _KERN32[kind](p, g, h, s0, s1, s2, s3, n, r)",
            "    else:",
            "        _KERN64[kind](p, g, h, s0, s1, s2, s3, n, r)"]
    red = [k for k in kinds if k.sums and not k.is_global]
    glob = [k for k in kinds if k.is_global]
    red_all = [k for k in kinds if k.sums]
    out += ["", "",
            "cdef inline void _apply_sums(int kind, const real* p, const real* g, const real* s0,",
            "                             const real* s1, Py_ssize_t n, const double* r,",
            "                             double* acc) noexcept nogil:",
            "    # the read-only pass of a per-tensor kind: MAX_SUMS x 8 lane sums"]
    for i, k in enumerate(red_all):
        out.append(f"    {'if' if i == 0 else 'elif'} kind == K_{k.name.upper()}:")
        out.append(f"        _{k.name}_sums(p, g, s0, s1, n, <const {_struct(k)}*>r, acc)")
    out += ["", "",
            "cdef inline void _apply_tensor(int kind, double* r, const double* sums,",
            "                               double* ts) noexcept nogil:",
            "    # a per-tensor kind's tensor fields of row r, from its sums and state"]
    for i, k in enumerate(red):
        out.append(f"    {'if' if i == 0 else 'elif'} kind == K_{k.name.upper()}:")
        out.append(f"        _{k.name}_tensor(<{_struct(k)}*>r, sums, ts)")
    out += ["", "",
            "cdef inline void _apply_global(int kind, double* trows, int n, const double* tsums,",
            "                               double* gs, int phase) noexcept nogil:",
            "    # a global kind: its rows (stride NS) from all tensors' sums and its state"]
    for i, k in enumerate(glob):
        out.append(f"    {'if' if i == 0 else 'elif'} kind == K_{k.name.upper()}:")
        out.append(f"        _{k.name}_global(trows, n, tsums, gs, phase)")
    if not glob:
        out.append("    pass")
    return {"_table.pxi": head, "_table_dispatch.pxi": "\n".join(out) + "\n"}


def _struct(k: Kind) -> str:
    return "".join(part.capitalize() for part in k.name.split("_")) + "Row"


if __name__ == "__main__":      # python lrfast/optim/_table.py DIR: write the .pxi files
    import os
    import sys
    for fname, text in cython_source().items():
        with open(os.path.join(sys.argv[1] if len(sys.argv) > 1 else "src", fname), "w") as f:
            f.write(text)
